/**
 * `npm run bench`: the burst benchmark that retells the story with numbers. On throwaway Redis, MariaDB and
 * PostgreSQL servers of its own (under .bench/), it sends the same bounded burst of apply requests to three designs,
 * each as the same number of Koa processes:
 *   naive        count the event's coupons in MySQL, insert if below N (bench/servers/naive.ts)
 *   incr-direct  Redis gate, then INSERT into MySQL inside the request (bench/servers/incr-direct.ts)
 *   outbox       the product: src/api + worker/, gate and Redis outbox, the worker's global write cap
 * and to a bare Koa hello-world on the same setup, the ceiling. Meanwhile a bystander runs small order queries
 * against the same MySQL and the global insert counters are sampled. Writes report.json, report.md and SVG plots.
 *
 *   node bench/run.ts [--quick] [--out DIR] [--dir SERVERS_DIR] [--designs naive,incr-direct,outbox]
 *
 * --quick runs a few seconds per design with small events (the test suite runs it); the default is the full run.
 */
import { fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import mysql from 'mysql2/promise';
import { type LocalServer, startMariadb, startPostgres, startRedis } from '../scripts/local-servers/index.ts';
import { migrateUp } from '../src/db/migrate.ts';
import { applyForCoupon, createRedis } from '../src/redis/client.ts';
import type { BystanderSamples, BystanderSpec } from './bystander.ts';
import type { LoadResult, LoadSpec } from './load.ts';
import { machineFacts } from './machine.ts';
import { CounterSampler, type CouponTable, countCoupons, couponWriteTimes, createEventRow, prepareTables } from './mysql.ts';
import { renderPlots } from './plots.ts';
import { type BenchReport, type BurstResult, type CeilingRun, type DesignName, type DrainRun, type Settings, evaluateTargets, markdownReport } from './report.ts';
import { startDesign, startOutboxWorker } from './processes.ts';
import { percentileOverTime, ratePerSecond, round, summarise } from './stats.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const ADMIN_TOKEN = 'bench-admin-token-0123456789';
const DESIGNS: DesignName[] = ['naive', 'incr-direct', 'outbox'];

const { values: args } = parseArgs({
  options: {
    quick: { type: 'boolean', default: false },
    out: { type: 'string' },
    dir: { type: 'string' },
    designs: { type: 'string' },
  },
});

const settings: Settings = args.quick
  ? {
    mode: 'quick', apiProcesses: 2, connections: 16, repeatFraction: 0.1, persistRatePerSec: 1000, persistBatchSize: 100,
    bystanderOpsPerSec: 100, bystanderTimeoutMs: 2000, idleBaselineSec: 1.5, warmupRequests: 200, ceilingRequests: 1500,
    maxBurstSec: 20, drainRows: 2000, drainRatePerSec: 1_000_000, drainBatchSizes: [100], durableCommits: true,
    scenarios: [{ name: 'small', totalQuantity: 20, requests: 600 }, { name: 'large', totalQuantity: 300, requests: 1500 }],
  }
  : {
    mode: 'full', apiProcesses: 2, connections: 64, repeatFraction: 0.1, persistRatePerSec: 1000, persistBatchSize: 100,
    bystanderOpsPerSec: 200, bystanderTimeoutMs: 2000, idleBaselineSec: 10, warmupRequests: 5000, ceilingRequests: 40_000,
    maxBurstSec: 90, drainRows: 50_000, drainRatePerSec: 1_000_000, drainBatchSizes: [100, 500], durableCommits: true,
    scenarios: [{ name: 'N=100', totalQuantity: 100, requests: 40_000 }, { name: 'N=10,000', totalQuantity: 10_000, requests: 40_000 }],
  };
const designs = args.designs ? (args.designs.split(',') as DesignName[]) : DESIGNS;
for (const design of designs) if (!DESIGNS.includes(design)) throw new Error(`unknown design ${design}; choose from ${DESIGNS.join(', ')}`);
const outDir = resolve(args.out ?? join(ROOT, '.bench', 'results', settings.mode));
const serversDir = resolve(args.dir ?? join(ROOT, '.bench', 'servers'));

const log = (message: string) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}`);
const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const runId = Math.random().toString(36).slice(2, 8);

const servers: LocalServer[] = [];
const running = new Set<{ stop(): Promise<unknown> }>();
let workDir = '';

async function main(): Promise<void> {
  const startedAt = new Date();
  workDir = await mkdtemp(join(tmpdir(), 'coupon-bench-'));
  log(`mode ${settings.mode}; servers under ${serversDir}; results to ${outDir}`);
  const [redis, mariadb, postgres] = await Promise.all([
    startRedis({ dir: join(serversDir, 'redis') }),
    startMariadb({ dir: join(serversDir, 'mariadb'), database: 'coupon' }),
    startPostgres({ dir: join(serversDir, 'postgres'), database: 'coupon_jobs' }),
  ]);
  servers.push(redis, mariadb, postgres);
  const env = {
    REDIS_URL: redis.url, MYSQL_URL: mariadb.url, POSTGRES_URL: postgres.url, ADMIN_TOKEN, LOG_LEVEL: 'warn', SHUTDOWN_DRAIN_MS: '0',
    PERSIST_RATE_PER_SEC: String(settings.persistRatePerSec), PERSIST_BATCH_SIZE: String(settings.persistBatchSize),
  };
  await migrateUp(mariadb.url);
  const pool = mysql.createPool({ uri: mariadb.url, connectionLimit: 4 });
  // The throwaway server trades durability for test speed; production MySQL flushes the redo log at every commit,
  // which is what makes one INSERT per request expensive. The benchmark measures that setting.
  if (settings.durableCommits) await pool.query('set global innodb_flush_log_at_trx_commit = 1');
  const gateRedis = createRedis(redis.url);
  try {
    await prepareTables(pool);
    await gateRedis.flushall();
    const machine = await machineFacts(gateRedis, pool);
    log(`machine: ${machine.cpus} cores (${machine.cpuModel}), node ${machine.node}, redis ${machine.redis}, mariadb ${machine.mariadb}`);

    const sampler = await CounterSampler.start(mariadb.url, 250);
    const bystander = await startBystander({ mysqlUrl: mariadb.url, opsPerSec: settings.bystanderOpsPerSec, timeoutMs: settings.bystanderTimeoutMs, outFile: join(workDir, 'bystander.json') });
    log(`bystander idle baseline for ${settings.idleBaselineSec} s`);
    const idleFrom = now();
    await sleep(settings.idleBaselineSec * 1000);
    const idleWindow = { fromMs: idleFrom, toMs: now() };

    // The ceiling is measured right before each design and once at the end: on a shared machine the load of
    // others drifts, and each design is compared with the ceiling measured next to it.
    const ceilingRuns: CeilingRun[] = [];
    const results: BurstResult[] = [];
    let worker: BenchReport['worker'];
    for (const design of designs) {
      const ceiling = await measureCeiling(env, `before ${design}`);
      ceilingRuns.push(ceiling);
      const outcome = await runDesign(design, env, pool, gateRedis, sampler);
      for (const result of outcome.results) result.ceilingRps = ceiling.rps;
      results.push(...outcome.results);
      worker = outcome.worker ?? worker;
    }
    ceilingRuns.push(await measureCeiling(env, 'end'));

    const samples = await bystander.stop();
    await sampler.stop();
    const idle = bystanderWindow(samples, idleWindow.fromMs, idleWindow.toMs);
    const ceilingRps = Math.max(...ceilingRuns.map((run) => run.rps));
    for (const result of results) finishResult(result, samples, idle.p99Ms);
    for (const run of ceilingRuns) {
      const during = bystanderWindow(samples, run.window.fromMs, run.window.toMs);
      run.bystander = { ...during, p99VsIdle: round(during.p99Ms / idle.p99Ms, 2) };
    }

    const report: BenchReport = {
      schemaVersion: 1,
      mode: settings.mode,
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      machine,
      settings,
      ceiling: { rps: ceilingRps, runs: ceilingRuns },
      bystanderIdle: idle,
      results,
      worker,
      targets: [],
    };
    report.targets = evaluateTargets(report);
    await mkdir(outDir, { recursive: true });
    const { writeFile } = await import('node:fs/promises');
    await writeFile(join(outDir, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
    const markdown = markdownReport(report);
    await writeFile(join(outDir, 'report.md'), markdown);
    for (const [name, svg] of Object.entries(await renderPlots(report))) await writeFile(join(outDir, name), svg);
    console.log(markdown);
    log(`wrote ${join(outDir, 'report.json')}, report.md and the plots`);
  } finally {
    gateRedis.disconnect();
    await pool.end().catch(() => {});
  }
}

/** The hello-world ceiling: the same burst shape against a bare Koa route on the same number of processes. */
async function measureCeiling(env: Record<string, string>, label: string): Promise<CeilingRun> {
  log(`ceiling: hello-world (${label})`);
  const design = await track(startDesign('hello', settings.apiProcesses, env));
  try {
    await burst(design.urls, '/v1/events/hello/apply', settings.warmupRequests, 1);
    const cpuBefore = design.cpuMs();
    const load = await burst(design.urls, '/v1/events/hello/apply', settings.ceilingRequests, 2);
    const cpuUsPerRequest = Math.round(((design.cpuMs() - cpuBefore) * 1000) / Math.max(load.status.length, 1));
    const seconds = (lastDone(load) - load.startedAtMs) / 1000;
    const latency = summarise(load.latencyMs);
    return {
      label, requests: load.status.length, durationSec: round(seconds, 3), rps: Math.round(load.status.length / seconds), p50Ms: latency.p50Ms,
      p99Ms: latency.p99Ms, errors: load.errors, cpuUsPerRequest, window: { fromMs: round(load.startedAtMs), toMs: round(lastDone(load)) }, bystander: null,
    };
  } finally {
    await untrack(design);
  }
}

async function runDesign(
  design: DesignName, env: Record<string, string>, pool: mysql.Pool, gateRedis: ReturnType<typeof createRedis>, sampler: CounterSampler,
): Promise<{ results: BurstResult[]; worker?: BenchReport['worker'] }> {
  log(`${design}: starting ${settings.apiProcesses} processes${design === 'outbox' ? ' and the worker' : ''}`);
  const api = await track(startDesign(design, settings.apiProcesses, env));
  let worker = design === 'outbox' ? await track(startOutboxWorker(env)) : undefined;
  const table: CouponTable = design === 'naive' ? 'bench_naive_coupon' : 'coupon';
  const createEvent = async (id: string, totalQuantity: number) => {
    if (design !== 'outbox') return createEventRow(pool, id, totalQuantity);
    const response = await fetch(`${api.urls[0]}/v1/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
      body: JSON.stringify({ id, name: `bench ${id}`, totalQuantity }),
    });
    if (response.status !== 201) throw new Error(`creating ${id} answered ${response.status}: ${await response.text()}`);
  };
  const results: BurstResult[] = [];
  try {
    // Warm every path the measured bursts take (issue, already applied, sold out) so that no design is
    // measured while its code is still being compiled: most warm-up requests issue a coupon.
    const warmupId = `warmup-${design}-${runId}`;
    const warmupQuantity = Math.floor(settings.warmupRequests * 0.6);
    await createEvent(warmupId, warmupQuantity);
    await burst(api.urls, `/v1/events/${warmupId}/apply`, settings.warmupRequests, 1);
    await waitForCount(pool, table, warmupId, warmupQuantity);

    for (const [index, scenario] of settings.scenarios.entries()) {
      const eventId = `bench-${design}-${index}-${runId}`;
      await createEvent(eventId, scenario.totalQuantity);
      await sleep(500);
      log(`${design}: ${scenario.name}, ${scenario.requests} requests over ${settings.connections} connections`);
      const cpuBefore = api.cpuMs();
      const load = await burst(api.urls, `/v1/events/${eventId}/apply`, scenario.requests, 100 + index);
      const cpuUsPerRequest = Math.round(((api.cpuMs() - cpuBefore) * 1000) / Math.max(load.status.length, 1));
      const accepted = load.status.filter((s) => s === 202).length;
      const rows = await waitForCount(pool, table, eventId, accepted);
      const writeTimes = await couponWriteTimes(pool, table, eventId);
      // A naive run can leave rows whose 202 never arrived; count the rows, not the answers.
      results.push({ ...summariseBurst(design, scenario, load, rows, writeTimes, sampler), apiCpuUsPerRequest: cpuUsPerRequest });
      log(`${design}: ${scenario.name}: ${rows} coupons for N=${scenario.totalQuantity}, ${results.at(-1)!.overall.rps} req/s`);
    }

    if (design !== 'outbox' || !worker) return { results };
    await untrack(worker);
    worker = undefined;
    const runs = [];
    for (const batchSize of settings.drainBatchSizes) runs.push(await measureDrain(api.urls[0]!, env, pool, gateRedis, batchSize));
    const best = runs.reduce((a, b) => (b.rowsPerSec > a.rowsPerSec ? b : a));
    return { results, worker: { rowsPerSec: best.rowsPerSec, batchSize: best.batchSize, runs } };
  } finally {
    if (worker) await untrack(worker);
    await untrack(api);
  }
}

/**
 * The worker without its cap: an outbox pre-filled with `drainRows` coupons through the gate script itself, then
 * one worker with PERSIST_RATE_PER_SEC very high; rows/s from the first to the last coupon's created_at.
 */
async function measureDrain(
  apiUrl: string, env: Record<string, string>, pool: mysql.Pool, gateRedis: ReturnType<typeof createRedis>, batchSize: number,
): Promise<DrainRun> {
  const eventId = `bench-drain-${batchSize}-${runId}`;
  const rows = settings.drainRows;
  const response = await fetch(`${apiUrl}/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
    body: JSON.stringify({ id: eventId, name: 'bench drain', totalQuantity: rows }),
  });
  if (response.status !== 201) throw new Error(`creating ${eventId} answered ${response.status}`);
  log(`worker: pre-filling the outbox with ${rows} coupons`);
  for (let start = 0; start < rows; start += 1000) {
    const batch = Array.from({ length: Math.min(1000, rows - start) }, (_, i) => applyForCoupon(gateRedis, eventId, `d${start + i}`, `bench-drain-${start + i}`));
    for (const outcome of await Promise.all(batch)) if (outcome.kind !== 'issued') throw new Error(`pre-fill: ${outcome.kind}`);
  }
  log(`worker: draining with PERSIST_RATE_PER_SEC=${settings.drainRatePerSec}, PERSIST_BATCH_SIZE=${batchSize}`);
  const started = now();
  const worker = await track(startOutboxWorker({ ...env, PERSIST_RATE_PER_SEC: String(settings.drainRatePerSec), PERSIST_BATCH_SIZE: String(batchSize) }));
  try {
    await waitForCount(pool, 'coupon', eventId, rows, 120_000);
  } finally {
    await untrack(worker);
  }
  const times = await couponWriteTimes(pool, 'coupon', eventId);
  const spanSec = (maxOf(times) - minOf(times)) / 1000;
  return {
    rows, batchSize, ratePerSec: settings.drainRatePerSec,
    drainSec: round(spanSec, 3), rowsPerSec: Math.round(rows / Math.max(spanSec, 0.001)), wallSecIncludingStartup: round((now() - started) / 1000, 2),
  };
}

function summariseBurst(
  design: DesignName, scenario: Settings['scenarios'][number], load: LoadResult, rows: number, writeTimes: number[], sampler: CounterSampler,
): BurstResult {
  const from = load.startedAtMs;
  const lastResponse = lastDone(load);
  const firstSoldOut = load.status.indexOf(410);
  const soldOutAt = firstSoldOut === -1 ? undefined : load.doneAtMs[firstSoldOut]!;
  const phase = (select: (doneAt: number) => boolean, fromMs: number, toMs: number) => {
    const latencies = load.latencyMs.filter((_, i) => select(load.doneAtMs[i]!));
    const seconds = Math.max(toMs - fromMs, 1) / 1000;
    const latency = summarise(latencies);
    return { requests: latencies.length, durationSec: round(seconds, 3), rps: Math.round(latencies.length / seconds), p50Ms: latency.p50Ms, p99Ms: latency.p99Ms, ratioToCeiling: null as number | null };
  };
  const statuses: Record<string, number> = {};
  for (const status of load.status) statuses[status] = (statuses[status] ?? 0) + 1;
  const badAnswers = load.status.filter((s) => s !== 202 && s !== 409 && s !== 410).length;
  const persistedAt = writeTimes.length ? maxOf(writeTimes) : from;
  const windowEnd = Math.max(lastResponse, persistedAt) + 250;
  const peak = sampler.peakPerSecond(from, windowEnd);
  const couponPerSecond = ratePerSecond(writeTimes, from, windowEnd, 1000);
  return {
    design,
    scenario: scenario.name,
    totalQuantity: scenario.totalQuantity,
    requests: load.status.length + load.errors,
    issued: { accepted: statuses['202'] ?? 0, rows, overIssue: Math.max(0, rows - scenario.totalQuantity), exact: rows === scenario.totalQuantity },
    statuses,
    errors: { total: load.errors + badAnswers, connection: load.errors - load.timeouts, timeouts: load.timeouts, unexpectedStatus: badAnswers },
    overall: phase(() => true, from, lastResponse),
    open: soldOutAt === undefined ? phase(() => true, from, lastResponse) : phase((t) => t <= soldOutAt, from, soldOutAt),
    soldOut: soldOutAt === undefined ? null : phase((t) => t > soldOutAt, soldOutAt, lastResponse),
    burstSec: round((lastResponse - from) / 1000, 3),
    persistedAfterSec: round((persistedAt - from) / 1000, 3),
    mysql: {
      couponRowsPerSecPeak: maxOf([0, ...couponPerSecond.map((b) => b.perSec)]),
      couponRowsPerSecMean: writeTimes.length > 1 ? Math.round(writeTimes.length / Math.max((maxOf(writeTimes) - minOf(writeTimes)) / 1000, 0.001)) : writeTimes.length,
      rowsInsertedPerSecPeak: peak.rowsPerSec,
      insertStatementsPerSecPeak: peak.statementsPerSec,
    },
    bystander: null,
    ceilingRps: 0,
    apiCpuUsPerRequest: 0,
    window: { fromMs: round(from), toMs: round(windowEnd) },
    series: {
      requestsPerSec: ratePerSecond(load.doneAtMs, from, lastResponse, 250).map(({ t, perSec }) => ({ t, value: perSec })),
      couponRowsPerSec: couponPerSecond.map(({ t, perSec }) => ({ t, value: perSec })),
      mysqlCounters: sampler.rates(from, windowEnd),
      bystanderP99Ms: [],
    },
  };
}

function finishResult(result: BurstResult, samples: BystanderSamples, idleP99Ms: number): void {
  const ceilingRps = result.ceilingRps;
  const { fromMs, toMs } = result.window;
  const during = bystanderWindow(samples, fromMs, toMs);
  result.bystander = { ...during, p99VsIdle: round(during.p99Ms / idleP99Ms, 2) };
  result.series.bystanderP99Ms = percentileOverTime(samples.dueAtMs, samples.latencyMs, fromMs, toMs, 500, 99);
  for (const phase of [result.overall, result.open, result.soldOut]) if (phase) phase.ratioToCeiling = round(phase.rps / ceilingRps, 3);
}

function bystanderWindow(samples: BystanderSamples, fromMs: number, toMs: number) {
  const latencies: number[] = [];
  let errors = 0;
  for (let i = 0; i < samples.dueAtMs.length; i += 1) {
    const due = samples.dueAtMs[i]!;
    if (due < fromMs || due >= toMs) continue;
    latencies.push(samples.latencyMs[i]!);
    errors += samples.failed[i]!;
  }
  const summary = summarise(latencies);
  return { ops: summary.count, p50Ms: summary.p50Ms, p99Ms: summary.p99Ms, maxMs: summary.maxMs, errors };
}

/** One bounded burst from the load generator process. */
async function burst(urls: string[], path: string, requests: number, seed: number): Promise<LoadResult> {
  const outFile = join(workDir, `load-${seed}-${Date.now()}.json`);
  const spec: LoadSpec = { urls, path, requests, connections: settings.connections, maxSeconds: settings.maxBurstSec, repeatFraction: settings.repeatFraction, seed, outFile };
  const child = spawn(process.execPath, [join(ROOT, 'bench', 'load.ts'), JSON.stringify(spec)], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  const [code] = await once(child, 'exit');
  if (code !== 0) throw new Error(`the load generator exited with code ${code}`);
  const result = JSON.parse(await readFile(outFile, 'utf8')) as LoadResult;
  await rm(outFile, { force: true });
  return result;
}

async function startBystander(spec: BystanderSpec): Promise<{ stop(): Promise<BystanderSamples> }> {
  const child = fork(join(ROOT, 'bench', 'bystander.ts'), [JSON.stringify(spec)], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const handle = { stop: async () => { child.kill('SIGKILL'); } };
  running.add(handle);
  await once(child, 'message');
  return {
    async stop() {
      const exited = once(child, 'exit');
      child.send('stop');
      await exited;
      running.delete(handle);
      return JSON.parse(await readFile(spec.outFile, 'utf8')) as BystanderSamples;
    },
  };
}

async function waitForCount(pool: mysql.Pool, table: CouponTable, eventId: string, expected: number, timeoutMs = 120_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const count = await countCoupons(pool, table, eventId);
    if (count >= expected) return count;
    if (Date.now() > deadline) throw new Error(`${eventId}: ${count} of ${expected} coupons in ${table} after ${timeoutMs / 1000} s`);
    await sleep(100);
  }
}

/** Responses are recorded in completion order: the last one is the latest. */
const lastDone = (load: LoadResult) => load.doneAtMs.at(-1) ?? load.finishedAtMs;
const maxOf = (values: number[]) => values.reduce((a, b) => Math.max(a, b), -Infinity);
const minOf = (values: number[]) => values.reduce((a, b) => Math.min(a, b), Infinity);

async function track<T extends { stop(): Promise<unknown> }>(started: Promise<T>): Promise<T> {
  const value = await started;
  running.add(value);
  return value;
}

async function untrack(value: { stop(): Promise<unknown> }): Promise<void> {
  running.delete(value);
  await value.stop();
}

async function cleanUp(): Promise<void> {
  await Promise.allSettled([...running].map((r) => r.stop()));
  running.clear();
  await Promise.allSettled(servers.map((s) => s.stop()));
  if (workDir) await rm(workDir, { recursive: true, force: true });
}

let exitCode = 0;
const interrupted = () => {
  log('interrupted: stopping everything this run started');
  void cleanUp().finally(() => process.exit(130));
};
process.once('SIGINT', interrupted);
process.once('SIGTERM', interrupted);
try {
  await main();
} catch (error) {
  console.error(error instanceof Error ? error.stack : error);
  exitCode = 1;
} finally {
  await cleanUp();
}
process.exit(exitCode);

