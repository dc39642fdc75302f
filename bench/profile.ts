/**
 * `npm run bench -- --api-only --profile`: where a process spends its CPU per request, for each case of the hot-path
 * comparison (hello, minimal, open, sold-out): a fresh process under `node --cpu-prof` per case, pinned to a core
 * of its own as in the comparison, driven by wrk; the .cpuprofile files are kept. Each sample is
 * charged to the nearest frame on its stack that belongs to a part we can name (the route, the gate, Koa, the
 * router, the body parser, ajv, prom-client, ioredis, pino, Node's HTTP), so the time of a builtin like
 * JSON.parse lands on whoever called it; GC and time outside JavaScript have their own rows.
 */
import { readFile, readdir, rm } from 'node:fs/promises';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../scripts/local-servers/index.ts';
import { startApi, startService } from '../scripts/services.ts';
import { API_CASES, EXPECTED_STATUS, HOT_PATH_CASES, type HotPathContext, casePath, pinServer, prepareEvents } from './hot-path.ts';
import { wrkBurst } from './wrk.ts';
import { round } from './stats.ts';

/** Parts of a request, matched in order against a frame's URL (or, for code ajv generated, its function name). */
const PARTS: Array<[string, (url: string, fn: string) => boolean]> = [
  ['apply route and use case (src/api, src/apply.ts, src/domain)', (u) => /\/src\/(api\/|apply\.ts|domain\/)/.test(u)],
  ['the baseline server itself (bench/servers)', (u) => u.includes('/bench/servers/')],
  ['gate call, deadline, settle (src/redis)', (u) => u.includes('/src/redis/')],
  ['metrics (prom-client)', (u) => u.includes('/prom-client/')],
  ['schema validation (ajv)', (u, fn) => u.includes('/ajv/') || (u === '' && fn.startsWith('validate'))],
  ['body parsing (@koa/bodyparser, co-body, raw-body)', (u) => /\/(@koa\/bodyparser|co-body|raw-body|inflation|iconv-lite|bytes)\//.test(u)],
  ['content type (type-is, mime)', (u) => /\/(type-is|media-typer|mime-types|mime-db|content-type|negotiator|accepts)\//.test(u)],
  ['routing (@koa/router, path-to-regexp)', (u) => /\/(@koa\/router|path-to-regexp)\//.test(u)],
  ['Koa (middleware, context, response)', (u) => /\/(koa|koa-compose|on-finished|statuses|vary|encodeurl|escape-html|http-errors|delegates|cookies|only|fresh|destroy|ee-first|depd)\//.test(u)],
  ['Redis client (ioredis)', (u) => /\/(ioredis|@ioredis|redis-parser|redis-errors|denque|cluster-key-slot|standard-as-callback|lodash\.)/.test(u)],
  ['logging (pino)', (u) => u.includes('/pino')],
  ['Node HTTP and sockets', (u) => u.startsWith('node:')],
];
const GC = 'garbage collection';
const OUTSIDE = 'outside JavaScript (syscalls, libuv)';
const OTHER = 'other JavaScript';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string };
  children?: number[];
}
interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
}

/** Microseconds of CPU per part, over the whole profile (idle time left out). */
export function chargeProfile(profile: CpuProfile): Map<string, number> {
  const parent = new Map<number, number>();
  const byId = new Map<number, ProfileNode>();
  for (const node of profile.nodes) {
    byId.set(node.id, node);
    for (const child of node.children ?? []) parent.set(child, node.id);
  }
  const partOf = new Map<number, string | null>();
  const ownPart = (node: ProfileNode): string | null => {
    const { url, functionName } = node.callFrame;
    if (functionName === '(garbage collector)') return GC;
    if (functionName === '(program)') return OUTSIDE;
    if (functionName === '(idle)') return 'idle';
    return PARTS.find(([, match]) => match(url, functionName))?.[0] ?? null;
  };
  // The part of a node: its own, else (builtins, anonymous code) its caller's, up to the root.
  const part = (id: number): string => {
    const known = partOf.get(id);
    if (known) return known;
    const node = byId.get(id)!;
    let found = ownPart(node);
    if (found === null) {
      const up = parent.get(id);
      found = up === undefined ? OTHER : part(up);
    }
    partOf.set(id, found);
    return found;
  };
  const totals = new Map<string, number>();
  profile.samples.forEach((id, i) => {
    const p = part(id);
    if (p !== 'idle' && p !== '(root)') totals.set(p, (totals.get(p) ?? 0) + (profile.timeDeltas[i] ?? 0));
  });
  return totals;
}

/**
 * One profiled burst per case, each in a fresh process under `node --cpu-prof` (the baselines too, so the table
 * shows where the product's request costs more than theirs); the table of µs per request by part.
 */
export async function profileApi(ctx: HotPathContext, dir: string): Promise<string> {
  const rows: ProfileRow[] = [];
  const events = { open: `prof-open-${Date.now().toString(36)}`, soldOut: `prof-sold-${Date.now().toString(36)}` };
  let prepared = false;
  for (const kase of HOT_PATH_CASES) {
    const profileDir = join(dir, kase);
    await rm(profileDir, { recursive: true, force: true });
    const apiEnv = API_CASES[kase];
    const options = { port: await freePort(), env: { ...ctx.env, ...apiEnv, LOG_LEVEL: 'warn', NODE_OPTIONS: `--cpu-prof --cpu-prof-dir=${profileDir}` } };
    const server = await ctx.running.track(apiEnv
      ? startApi(options)
      : startService(kase, `bench/servers/${kase}.ts`, options));
    let requests = 0;
    try {
      if (!prepared && apiEnv) {
        await prepareEvents(server.url, ctx.env.ADMIN_TOKEN!, events);
        prepared = true;
      }
      const pinned = cpus().length >= 2;
      if (pinned) pinServer(server.child.pid!);
      for (const [seconds, label] of [[2, 'warm'], [10, 'measured']] as const) {
        const result = await wrkBurst(ctx, {
          url: server.url, path: casePath(kase, events), seconds, connections: 64, label: `profile-${kase}-${label}`,
          expectedStatus: EXPECTED_STATUS[kase], pinned,
        });
        requests += result.requests;
        ctx.log(`profile ${kase} ${label}: ${result.requests} requests, ${result.unexpected} unexpected`);
      }
    } finally {
      await ctx.running.stop(server);
    }
    const file = (await readdir(profileDir)).find((f) => f.endsWith('.cpuprofile'));
    if (!file) throw new Error(`no CPU profile was written in ${profileDir}`);
    const totals = chargeProfile(JSON.parse(await readFile(join(profileDir, file), 'utf8')) as CpuProfile);
    rows.push({ label: kase, requests, totals });
  }
  return profileMarkdown(rows, dir);
}

interface ProfileRow {
  label: string;
  requests: number;
  totals: Map<string, number>;
}

function profileMarkdown(rows: ProfileRow[], dir: string): string {
  const parts = [...PARTS.map(([name]) => name), GC, OUTSIDE, OTHER];
  const perRequest = (row: (typeof rows)[number], name: string) => round((row.totals.get(name) ?? 0) / Math.max(row.requests, 1), 1);
  const lines = [
    `CPU profile of one api process per case (\`node --cpu-prof\`, ${rows.map((r) => `${r.label}: ${r.requests.toLocaleString('en-US')} requests`).join(', ')}, start-up and warm-up included); profiles in ${dir}.`,
    '',
    `| part | ${rows.map((r) => `${r.label} µs/req`).join(' | ')} |`,
    `| --- | ${rows.map(() => '---:').join(' | ')} |`,
    ...parts.map((name) => `| ${name} | ${rows.map((r) => perRequest(r, name)).join(' | ')} |`),
    `| **all** | ${rows.map((r) => round([...r.totals.values()].reduce((a, b) => a + b, 0) / Math.max(r.requests, 1), 1)).join(' | ')} |`,
  ];
  return `${lines.join('\n')}\n`;
}
