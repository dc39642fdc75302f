/**
 * `npm run soak`: does an api and a worker keep their memory level over many events? On throwaway Redis, MariaDB
 * and PostgreSQL (under .bench/soak-servers) one api and one worker run with EVENT_RETENTION=1s. Each round
 * creates 50 events that end a few seconds later, gives each a few coupons, sends one 2,000-request burst at
 * a 1,000-coupon event of its own, waits until every event of the round is archived, and samples both
 * processes: V8 heap used after a full garbage collection (over the inspector protocol) and resident set (kernel). The table shows each round; the summary
 * compares the growth per round over the first and the second half.
 *
 *   node bench/soak.ts [--rounds 20] [--out DIR]
 */
import { readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import mysql from 'mysql2/promise';
import { type LocalServer, freePort, startMariadb, startPostgres, startRedis } from '../scripts/local-servers/index.ts';
import { type ServiceProcess, startApi, startWorker } from '../scripts/services.ts';
import { ensureOrExit } from '../scripts/setup/prerequisites.ts';
import { migrateUp } from '../src/db/migrate.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { values: args } = parseArgs({ options: { rounds: { type: 'string', default: '20' }, out: { type: 'string' } } });
const ROUNDS = Number(args.rounds);
const OUT = args.out ?? join(ROOT, '.bench', 'results', 'soak');
const EVENTS_PER_ROUND = 50;
const COUPONS_PER_EVENT = 3;
const BURST = { requests: 2_000, quantity: 1_000, concurrency: 32 };
const WINDOW_MS = 5_000;
const ADMIN_TOKEN = 'soak-admin-token-0123456789';

const log = (message: string) => console.error(`[soak ${new Date().toISOString().slice(11, 19)}] ${message}`);

interface Sample {
  round: number;
  events: number;
  coupons: number;
  apiRssMb: number;
  apiHeapMb: number;
  workerRssMb: number;
  workerHeapMb: number;
  archivedSec: number;
}

const rssMb = (pid: number) => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024;

/**
 * V8 heap used right after a full garbage collection, in MB: what the process really keeps. Asked over the
 * inspector protocol (the process runs with --inspect on a loopback port): HeapProfiler.collectGarbage, then
 * Runtime.getHeapUsage.
 */
async function heapAfterGcMb(inspectPort: number): Promise<number> {
  const [target] = (await (await fetch(`http://127.0.0.1:${inspectPort}/json/list`)).json()) as Array<{ webSocketDebuggerUrl: string }>;
  const socket = new WebSocket(target!.webSocketDebuggerUrl);
  await new Promise((resolve, reject) => { socket.onopen = resolve; socket.onerror = reject; });
  const replies = new Map<number, (result: Record<string, number>) => void>();
  socket.onmessage = (message) => {
    const reply = JSON.parse(String(message.data)) as { id?: number; result?: Record<string, number> };
    if (reply.id !== undefined) replies.get(reply.id)?.(reply.result ?? {});
  };
  let id = 0;
  const send = (method: string) => new Promise<Record<string, number>>((resolve) => {
    replies.set(++id, resolve);
    socket.send(JSON.stringify({ id, method }));
  });
  try {
    await send('HeapProfiler.collectGarbage');
    return (await send('Runtime.getHeapUsage')).usedSize! / 1024 / 1024;
  } finally {
    socket.close();
  }
}

async function post(url: string, body: unknown, token?: string): Promise<number> {
  const response = await fetch(url, {
    method: 'POST', body: JSON.stringify(body),
    headers: { 'content-type': 'application/json', ...(token && { authorization: `Bearer ${token}` }) },
  });
  await response.arrayBuffer();
  return response.status;
}

/** Runs `work` for 0..count-1, `concurrency` at a time. */
async function pool(count: number, concurrency: number, work: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (next < count) await work(next++);
  }));
}

async function round(api: ServiceProcess, db: mysql.Pool, r: number): Promise<{ ids: string[]; coupons: number }> {
  const endsAt = new Date(Date.now() + WINDOW_MS).toISOString();
  const ids = Array.from({ length: EVENTS_PER_ROUND }, (_, i) => `soak-${r}-${i}`);
  const burstId = `soak-${r}-burst`;
  for (const id of [...ids, burstId]) {
    const total = id === burstId ? BURST.quantity : COUPONS_PER_EVENT;
    const status = await post(`${api.url}/v1/events`, { id, name: id, totalQuantity: total, endsAt }, ADMIN_TOKEN);
    if (status !== 201) throw new Error(`creating ${id}: ${status}`);
  }
  let coupons = 0;
  await pool(ids.length * COUPONS_PER_EVENT, 16, async (i) => {
    if ((await post(`${api.url}/v1/events/${ids[i % ids.length]}/apply`, { userId: `user-${Math.floor(i / ids.length)}` })) === 202) coupons += 1;
  });
  await pool(BURST.requests, BURST.concurrency, async (i) => {
    if ((await post(`${api.url}/v1/events/${burstId}/apply`, { userId: `burst-${i}` })) === 202) coupons += 1;
  });
  const all = [...ids, burstId];
  const deadline = Date.now() + WINDOW_MS + 60_000;
  while (Date.now() < deadline) {
    const [rows] = await db.query(`select count(*) as n from coupon_event where archived_at is not null and id in (?)`, [all]);
    if (Number((rows as Array<{ n: number }>)[0]!.n) === all.length) return { ids: all, coupons };
    await sleep(250);
  }
  throw new Error(`round ${r}: not every event was archived within a minute of its end`);
}

const servers: LocalServer[] = [];
const processes: ServiceProcess[] = [];
let exitCode = 0;
try {
  await ensureOrExit({ redis: true, mysql: true, postgres: true }, { root: ROOT, command: 'npm run soak' });
  const dir = join(ROOT, '.bench', 'soak-servers');
  const [redis, mariadb, postgres] = await Promise.all([
    startRedis({ dir: join(dir, 'redis') }),
    startMariadb({ dir: join(dir, 'mariadb'), database: `coupon_soak_${Date.now().toString(36)}` }),
    startPostgres({ dir: join(dir, 'postgres'), database: `coupon_soak_jobs_${Date.now().toString(36)}` }),
  ]);
  servers.push(redis, mariadb, postgres);
  await migrateUp(mariadb.url);
  const env = {
    REDIS_URL: redis.url, MYSQL_URL: mariadb.url, POSTGRES_URL: postgres.url, ADMIN_TOKEN, LOG_LEVEL: 'warn',
    EVENT_RETENTION: '1s', PERSIST_RATE_PER_SEC: '5000', SHUTDOWN_DRAIN_MS: '0',
  };
  const inspect = { api: await freePort(), worker: await freePort() };
  const api = await startApi({ port: await freePort(), env: { ...env, NODE_OPTIONS: `--inspect=127.0.0.1:${inspect.api}` } });
  const worker = await startWorker({ port: await freePort(), env: { ...env, NODE_OPTIONS: `--inspect=127.0.0.1:${inspect.worker}` } });
  processes.push(api, worker);
  const db = mysql.createPool({ uri: mariadb.url, connectionLimit: 2 });
  const samples: Sample[] = [];
  const sample = async (r: number, events: number, coupons: number, archivedSec: number) => {
    const s: Sample = {
      round: r, events, coupons, archivedSec,
      apiHeapMb: await heapAfterGcMb(inspect.api), apiRssMb: rssMb(api.child.pid!),
      workerHeapMb: await heapAfterGcMb(inspect.worker), workerRssMb: rssMb(worker.child.pid!),
    };
    samples.push(s);
    log(`round ${r}: ${events} events, ${coupons} coupons; api RSS ${s.apiRssMb.toFixed(1)} MB heap ${s.apiHeapMb.toFixed(1)} MB; worker RSS ${s.workerRssMb.toFixed(1)} MB heap ${s.workerHeapMb.toFixed(1)} MB`);
  };
  await sample(0, 0, 0, 0);
  let events = 0;
  let coupons = 0;
  for (let r = 1; r <= ROUNDS; r += 1) {
    const started = Date.now();
    const done = await round(api, db, r);
    events += done.ids.length;
    coupons += done.coupons;
    await sample(r, events, coupons, (Date.now() - started) / 1000);
  }
  await db.end();
  const markdown = soakMarkdown(samples);
  await mkdir(OUT, { recursive: true });
  await writeFile(join(OUT, 'report.json'), `${JSON.stringify(samples, null, 2)}\n`);
  await writeFile(join(OUT, 'report.md'), markdown);
  console.log(markdown);
} catch (error) {
  console.error(error instanceof Error ? error.stack : error);
  exitCode = 1;
} finally {
  await Promise.allSettled(processes.map((p) => p.stop()));
  await Promise.allSettled(servers.map((s) => s.stop()));
}
process.exit(exitCode);

function soakMarkdown(samples: Sample[]): string {
  const last = samples.at(-1)!;
  const mid = samples[Math.floor((samples.length - 1) / 2)]!;
  const first = samples[1] ?? samples[0]!;
  const perRound = (from: Sample, to: Sample, field: keyof Sample) => ((to[field] - from[field]) / Math.max(to.round - from.round, 1)).toFixed(2);
  const fields = ['apiRssMb', 'apiHeapMb', 'workerRssMb', 'workerHeapMb'] as const;
  return [
    `Soak: ${samples.length - 1} rounds, each ${EVENTS_PER_ROUND} events of ${COUPONS_PER_EVENT} coupons and a ${BURST.requests}-request burst at a ${BURST.quantity}-coupon event, all archived (EVENT_RETENTION=1s) before the next round.`,
    '',
    '| round | events | coupons | api RSS MB | api heap after GC MB | worker RSS MB | worker heap after GC MB | round s |',
    '| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...samples.map((s) => `| ${s.round} | ${s.events} | ${s.coupons} | ${s.apiRssMb.toFixed(1)} | ${s.apiHeapMb.toFixed(1)} | ${s.workerRssMb.toFixed(1)} | ${s.workerHeapMb.toFixed(1)} | ${s.archivedSec.toFixed(1)} |`),
    '',
    '| MB per round | ' + fields.join(' | ') + ' |',
    '| --- | ' + fields.map(() => '---:').join(' | ') + ' |',
    `| rounds ${first.round}-${mid.round} | ${fields.map((f) => perRound(first, mid, f)).join(' | ')} |`,
    `| rounds ${mid.round}-${last.round} | ${fields.map((f) => perRound(mid, last, f)).join(' | ')} |`,
    '',
  ].join('\n');
}
