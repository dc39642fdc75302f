/**
 * The hot-path comparison: the product's apply route against two baselines measured in the same run, on the same
 * Redis, with the same load generator. Four cases, each one api process (and then two):
 *   hello     a bare Koa route answering 202 (bench/servers/hello.ts): what Koa itself costs
 *   minimal   the minimal one-round-trip design (bench/servers/minimal.ts): Koa, the JSON body, one EVALSHA of INCR
 *   open      the product's api (src/api/main.ts) with GATE_BATCH=off (one gate call per apply), an open event:
 *             every request a new user, every answer a 202
 *   sold-out  the product's api, a sold-out event: every answer a 410 from the process's local flag
 *   bare      the bare one-round-trip design (bench/servers/bare.ts): Koa without router or body parser, one EVALSHA
 *   open-batched  the product's api with GATE_BATCH=on (src/redis/gate-batcher.ts), the open event
 * The load is wrk (C, one thread, keep-alive connections, a POST with a JSON body per request, each from a new
 * user), run in rounds that interleave the cases, so drift on a shared machine touches all of them alike; each
 * figure is the median over the rounds. CPU µs per request is the api process's CPU time over the requests it
 * answered. With one process on a machine of 2 or more cores the layout is pinned (taskset): the api on its own
 * core, wrk and Redis on another; two processes run unpinned.
 */
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { freePort } from '../scripts/local-servers/index.ts';
import { type ServiceProcess, cpuTimeMs, startApi, startService } from '../scripts/services.ts';
import { pidFromFile, pinTo } from './layout.ts';
import type { Running } from './processes.ts';
import { round } from './stats.ts';
import { type WrkTotals, wrkBurst, wrkTotals } from './wrk.ts';

export const HOT_PATH_CASES = ['hello', 'minimal', 'open', 'sold-out', 'bare', 'open-batched'] as const;
export type HotPathCase = (typeof HOT_PATH_CASES)[number];

export interface HotPathSettings {
  rounds: number;
  /** seconds of load per case and round */
  seconds: number;
  /** wrk connections in all (split over the processes) */
  connections: number;
  processCounts: number[];
}

export interface HotPathRun extends WrkTotals {
  case: HotPathCase;
  processes: number;
  round: number;
  cpuUsPerRequest: number;
  /** Redis's CPU time per request */
  redisCpuUsPerRequest: number;
  /** script calls (EVALSHA and EVAL) Redis ran per request: 1 for a gate call each, less when batched */
  redisScriptsPerRequest: number;
  /** pinned: how busy core 0 (wrk and Redis) was, 0..1; the api's core is the other */
  loadCoreBusy: number | null;
}

export interface HotPathSummary {
  case: HotPathCase;
  processes: number;
  pinned: boolean;
  rps: number;
  p50Us: number;
  p99Us: number;
  cpuUsPerRequest: number;
  redisCpuUsPerRequest: number;
  redisScriptsPerRequest: number;
  loadCoreBusy: number | null;
  unexpected: number;
}

export interface HotPathReport {
  settings: HotPathSettings;
  runs: HotPathRun[];
  summary: HotPathSummary[];
  /** the issue's three targets, per process count */
  ratios: Array<{
    processes: number; openVsMinimal: number; soldOutVsHello: number; openP99VsMinimalP99: number;
    /** api CPU per request, open over minimal and sold-out over hello */
    openCpuVsMinimal: number; soldOutCpuVsHello: number;
    /** issue 21: against the bare one-round-trip design, single gate and batched */
    openVsBare: number; openBatchedVsBare: number; openBatchedP99VsBareP99: number;
    /** Redis CPU µs per issued coupon (every open answer is one), single gate and batched */
    openRedisUsPerCoupon: number; openBatchedRedisUsPerCoupon: number;
  }>;
}

export interface HotPathContext {
  /** REDIS_URL, MYSQL_URL, ADMIN_TOKEN and the rest of the api's environment */
  env: Record<string, string>;
  /** the directory of the Redis server (its redis.pid is pinned with wrk) */
  redisDir: string;
  workDir: string;
  running: Running;
  log(message: string): void;
}

export const EXPECTED_STATUS: Record<HotPathCase, number> = {
  hello: 202, minimal: 202, open: 202, 'sold-out': 410, bare: 202, 'open-batched': 202,
};

/** The cases the product's api serves, and the environment each adds: GATE_BATCH off for open (the single gate), on for open-batched. */
export const API_CASES: Partial<Record<HotPathCase, Record<string, string>>> = {
  open: { GATE_BATCH: 'off' }, 'sold-out': {}, 'open-batched': { GATE_BATCH: 'on' },
};

/** Runs every case at every process count, interleaved in rounds; returns the runs, their medians and the ratios. */
export async function measureHotPath(ctx: HotPathContext, settings: HotPathSettings): Promise<HotPathReport> {
  const runs: HotPathRun[] = [];
  const events = { open: `hot-open-${Date.now().toString(36)}`, soldOut: `hot-sold-${Date.now().toString(36)}` };
  let prepared = false;
  for (const processes of settings.processCounts) {
    const pinned = processes === 1 && cpus().length >= 2;
    const servers = await startServers(ctx, processes);
    try {
      if (!prepared) await prepareEvents(servers.get('open')!.urls[0]!, ctx.env.ADMIN_TOKEN!, events);
      prepared = true;
      if (pinned) pin(ctx, servers);
      // Warm-up: the JIT, the connections, and each api process's sold-out flag.
      for (const kase of HOT_PATH_CASES) await load(ctx, kase, servers.get(kase)!, events, settings, 2, `warm-${processes}`);
      for (let r = 1; r <= settings.rounds; r += 1) {
        for (const kase of HOT_PATH_CASES) {
          const run = await load(ctx, kase, servers.get(kase)!, events, settings, settings.seconds, `r${r}p${processes}`);
          runs.push({ ...run, round: r });
          ctx.log(`hot path: ${processes} process(es), round ${r}, ${kase}: ${run.rps.toLocaleString('en-US')} req/s, p99 ${run.p99Us} µs, ${run.cpuUsPerRequest} µs CPU/req${run.unexpected ? `, ${run.unexpected} unexpected` : ''}`);
        }
      }
    } finally {
      await Promise.all([...new Set(servers.values())].map((s) => ctx.running.stop(s)));
    }
  }
  const summary = summarise(runs, settings);
  return { settings, runs, summary, ratios: ratios(runs, settings) };
}

interface Servers {
  processes: ServiceProcess[];
  urls: string[];
  stop(): Promise<void>;
}

/** The three servers, `count` processes each; the api serves both the open and the sold-out case. */
async function startServers(ctx: HotPathContext, count: number): Promise<Map<HotPathCase, Servers>> {
  const start = async (make: (port: number) => Promise<ServiceProcess>): Promise<Servers> => {
    const processes: ServiceProcess[] = [];
    for (let i = 0; i < count; i += 1) processes.push(await make(await freePort()));
    return { processes, urls: processes.map((p) => p.url), stop: async () => { await Promise.all(processes.map((p) => p.stop())); } };
  };
  const env = { ...ctx.env, LOG_LEVEL: 'warn' };
  const hello = await ctx.running.track(start((port) => startService('hello', 'bench/servers/hello.ts', { port, env })));
  const minimal = await ctx.running.track(start((port) => startService('minimal', 'bench/servers/minimal.ts', { port, env })));
  const api = await ctx.running.track(start((port) => startApi({ port, env: { ...env, ...API_CASES.open } })));
  const bare = await ctx.running.track(start((port) => startService('bare', 'bench/servers/bare.ts', { port, env })));
  const batched = await ctx.running.track(start((port) => startApi({ port, env: { ...env, ...API_CASES['open-batched'] } })));
  return new Map<HotPathCase, Servers>([
    ['hello', hello], ['minimal', minimal], ['open', api], ['sold-out', api], ['bare', bare], ['open-batched', batched],
  ]);
}

/** An open event large enough for every round, and a sold-out one (quantity 1, its coupon taken). */
export async function prepareEvents(apiUrl: string, adminToken: string, events: { open: string; soldOut: string }): Promise<void> {
  const post = async (path: string, body: unknown, headers: Record<string, string> = {}) => {
    const response = await fetch(`${apiUrl}${path}`, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });
    if (response.status >= 300) throw new Error(`POST ${path}: ${response.status} ${await response.text()}`);
  };
  const admin = { authorization: `Bearer ${adminToken}` };
  await post('/v1/events', { id: events.open, name: 'hot path, open', totalQuantity: 10_000_000 }, admin);
  await post('/v1/events', { id: events.soldOut, name: 'hot path, sold out', totalQuantity: 1 }, admin);
  await post(`/v1/events/${events.soldOut}/apply`, { userId: 'first' });
}

/** api processes on the last core; wrk (started pinned) and Redis on the first. */
function pin(ctx: HotPathContext, servers: Map<HotPathCase, Servers>): void {
  for (const group of new Set(servers.values())) for (const p of group.processes) pinServer(p.child.pid!);
  pinTo(pidFromFile(join(ctx.redisDir, 'redis.pid')), '0');
}

/** A server of the pinned layout: alone on the last core. */
export const pinServer = (pid: number) => pinTo(pid, String(cpus().length - 1));

/** The apply path each case is sent to. */
export function casePath(kase: HotPathCase, events: { open: string; soldOut: string }): string {
  return `/v1/events/${kase === 'sold-out' ? events.soldOut : kase === 'open' || kase === 'open-batched' ? events.open : 'bench'}/apply`;
}

/** One wrk run per process (its share of the connections), all at once; the figures of the case together. */
async function load(
  ctx: HotPathContext, kase: HotPathCase, servers: Servers, events: { open: string; soldOut: string },
  settings: HotPathSettings, seconds: number, label: string,
): Promise<Omit<HotPathRun, 'round'>> {
  const pinned = servers.processes.length === 1 && cpus().length >= 2;
  const cpuBefore = servers.processes.map((p) => cpuTimeMs(p.child.pid!));
  const redisPid = pidFromFile(join(ctx.redisDir, 'redis.pid'));
  const redisBefore = cpuTimeMs(redisPid);
  const scriptsBefore = await scriptCalls(ctx.env.REDIS_URL!);
  const coreBefore = coreTicks(0);
  const connections = Math.max(1, Math.floor(settings.connections / servers.urls.length));
  const results = await Promise.all(servers.urls.map((url, i) => wrkBurst(ctx, {
    url, path: casePath(kase, events), seconds, connections, label: `${label}-${kase}-${i}`, expectedStatus: EXPECTED_STATUS[kase], pinned,
  })));
  const cpuMs = servers.processes.reduce((sum, p, i) => sum + cpuTimeMs(p.child.pid!) - cpuBefore[i]!, 0);
  const redisMs = cpuTimeMs(redisPid) - redisBefore;
  const scripts = (await scriptCalls(ctx.env.REDIS_URL!)) - scriptsBefore;
  const coreAfter = coreTicks(0);
  const totals = wrkTotals(results);
  return {
    case: kase,
    processes: servers.processes.length,
    ...totals,
    cpuUsPerRequest: round((cpuMs * 1000) / Math.max(totals.requests, 1), 1),
    redisCpuUsPerRequest: round((redisMs * 1000) / Math.max(totals.requests, 1), 1),
    redisScriptsPerRequest: round(scripts / Math.max(totals.requests, 1), 3),
    loadCoreBusy: pinned ? round(1 - (coreAfter.idle - coreBefore.idle) / Math.max(coreAfter.total - coreBefore.total, 1), 2) : null,
  };
}

/** Script calls Redis has run (INFO commandstats: evalsha and eval), on a connection of its own. */
async function scriptCalls(redisUrl: string): Promise<number> {
  const redis = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    const stats = await redis.info('commandstats');
    return [...stats.matchAll(/^cmdstat_eval(?:sha)?:calls=(\d+)/gm)].reduce((sum, match) => sum + Number(match[1]), 0);
  } finally {
    redis.disconnect();
  }
}

/** Ticks of one core from /proc/stat: all of them, and those spent idle (idle + iowait). */
function coreTicks(core: number): { total: number; idle: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith(`cpu${core} `))!;
  const ticks = line.trim().split(/\s+/).slice(1).map(Number);
  return { total: ticks.reduce((a, b) => a + b, 0), idle: ticks[3]! + ticks[4]! };
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
};

function summarise(runs: HotPathRun[], settings: HotPathSettings): HotPathSummary[] {
  return settings.processCounts.flatMap((processes) => HOT_PATH_CASES.map((kase) => {
    const mine = runs.filter((r) => r.case === kase && r.processes === processes);
    return {
      case: kase, processes, pinned: processes === 1 && cpus().length >= 2,
      rps: Math.round(median(mine.map((r) => r.rps))), p50Us: Math.round(median(mine.map((r) => r.p50Us))),
      p99Us: Math.round(median(mine.map((r) => r.p99Us))), cpuUsPerRequest: round(median(mine.map((r) => r.cpuUsPerRequest)), 1),
      redisCpuUsPerRequest: round(median(mine.map((r) => r.redisCpuUsPerRequest)), 1),
      redisScriptsPerRequest: round(median(mine.map((r) => r.redisScriptsPerRequest)), 3),
      loadCoreBusy: mine[0]?.loadCoreBusy === null ? null : round(median(mine.map((r) => r.loadCoreBusy ?? 0)), 2),
      unexpected: mine.reduce((sum, r) => sum + r.unexpected, 0),
    };
  }));
}

/**
 * Each ratio is taken within a round (the cases of one round ran back to back, under the same conditions) and
 * the median over the rounds is reported: on a shared machine whose speed drifts by half from one minute to the
 * next, that is steadier than a ratio of medians.
 */
function ratios(runs: HotPathRun[], settings: HotPathSettings): HotPathReport['ratios'] {
  return settings.processCounts.map((processes) => {
    const perRound = (f: (of: (kase: HotPathCase) => HotPathRun) => number) => round(median(
      Array.from({ length: settings.rounds }, (_, i) => f((kase) => runs.find((r) => r.case === kase && r.processes === processes && r.round === i + 1)!)),
    ), 2);
    return {
      processes,
      openVsMinimal: perRound((of) => of('open').rps / of('minimal').rps),
      soldOutVsHello: perRound((of) => of('sold-out').rps / of('hello').rps),
      openP99VsMinimalP99: perRound((of) => of('open').p99Us / of('minimal').p99Us),
      openCpuVsMinimal: perRound((of) => of('open').cpuUsPerRequest / of('minimal').cpuUsPerRequest),
      soldOutCpuVsHello: perRound((of) => of('sold-out').cpuUsPerRequest / of('hello').cpuUsPerRequest),
      openVsBare: perRound((of) => of('open').rps / of('bare').rps),
      openBatchedVsBare: perRound((of) => of('open-batched').rps / of('bare').rps),
      openBatchedP99VsBareP99: perRound((of) => of('open-batched').p99Us / of('bare').p99Us),
      openRedisUsPerCoupon: perRound((of) => of('open').redisCpuUsPerRequest),
      openBatchedRedisUsPerCoupon: perRound((of) => of('open-batched').redisCpuUsPerRequest),
    };
  });
}

/** The comparison as a Markdown section: medians per case and process count, then the three ratios. */
export function hotPathMarkdown(report: HotPathReport): string {
  const { settings } = report;
  const lines = [
    `Hot path: ${settings.rounds} interleaved rounds of ${settings.seconds} s per case, wrk with ${settings.connections} connections; medians.`,
    '',
    '| processes | case | req/s | p50 µs | p99 µs | api CPU µs/req | Redis CPU µs/req | Redis scripts/req | core of wrk and Redis busy | unexpected answers |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...report.summary.map((s) => `| ${s.processes}${s.pinned ? ' (pinned)' : ''} | ${s.case} | ${s.rps.toLocaleString('en-US')} | ${s.p50Us} | ${s.p99Us} | ${s.cpuUsPerRequest} | ${s.redisCpuUsPerRequest} | ${s.redisScriptsPerRequest} | ${s.loadCoreBusy === null ? '-' : `${Math.round(s.loadCoreBusy * 100)}%`} | ${s.unexpected} |`),
    '',
    'Ratios within each round, median over the rounds:',
    '',
    '| processes | open / minimal req/s (target >= 0.90) | sold-out / hello req/s (>= 0.95) | open p99 / minimal p99 (<= 1.5) | CPU µs/req open / minimal | CPU µs/req sold-out / hello |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    ...report.ratios.map((r) => `| ${r.processes} | ${r.openVsMinimal} | ${r.soldOutVsHello} | ${r.openP99VsMinimalP99} | ${r.openCpuVsMinimal} | ${r.soldOutCpuVsHello} |`),
    '',
    'Issue 21, single gate against batched (GATE_BATCH=on), both against the bare one-round-trip design:',
    '',
    '| processes | open / bare req/s | open-batched / bare req/s (target >= 1.2) | open-batched p99 / bare p99 (<= 1.0) | Redis CPU µs per coupon, single | batched (<= 8) |',
    '| --- | ---: | ---: | ---: | ---: | ---: |',
    ...report.ratios.map((r) => `| ${r.processes} | ${r.openVsBare} | ${r.openBatchedVsBare} | ${r.openBatchedP99VsBareP99} | ${r.openRedisUsPerCoupon} | ${r.openBatchedRedisUsPerCoupon} |`),
  ];
  return `${lines.join('\n')}\n`;
}
