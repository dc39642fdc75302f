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
 * `--api-only` runs only the hot-path comparison (bench/hot-path.ts), `--cluster` only the Redis Cluster capacity
 * bench (bench/cluster.ts), `--overload` only the overload bench (bench/overload.ts). The command line is in
 * cli.ts, the phases in phases.ts, the numbers in summary.ts; this file runs them in order and stops everything it
 * started when it ends, fails or is interrupted.
 */
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import mysql from 'mysql2/promise';
import { type LocalServer, startMariadb, startPostgres, startRedis } from '../scripts/local-servers/index.ts';
import { startRedisCluster } from '../scripts/local-servers/redis-cluster.ts';
import { migrateUp } from '../src/db/migrate.ts';
import { type CouponRedis, createRedis } from '../src/redis/client.ts';
import { ensureOrExit } from '../scripts/setup/prerequisites.ts';
import { parseBenchArgs } from './cli.ts';
import { measureClusterCapacity } from './cluster.ts';
import { clusterMarkdown } from './cluster/markdown.ts';
import type { ClusterReport } from './cluster/report.ts';
import { type HotPathReport, hotPathMarkdown, measureHotPath } from './hot-path.ts';
import { renderConnectionsPlot } from './hot-path-plots.ts';
import { type OverloadReport, listenQueueLimits, measureOverload } from './overload.ts';
import { overloadMarkdown } from './overload/markdown.ts';
import { renderOverloadPlots } from './overload/plots.ts';
import { profileApi } from './profile.ts';
import { type MachineFacts, machineFacts } from './machine.ts';
import { CounterSampler, prepareTables } from './mysql.ts';
import { ADMIN_TOKEN, type BenchContext, measureCeiling, runDesign } from './phases.ts';
import { renderPlots } from './plots.ts';
import { type Layout, type LayoutPids, applyLayout, pidFromFile } from './layout.ts';
import { Running, startBystander } from './processes.ts';
import { type BenchReport, type BurstResult, type CeilingRun, evaluateTargets, markdownReport } from './report.ts';
import { bystanderAgainstIdle, bystanderWindow, finishResult } from './summary.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const { settings, hotPath, hotPathConnections, apiOnly, cluster, clusterBench, overload, overloadBench, profile, designs, outDir, serversDir } = parseBenchArgs(process.argv.slice(2), ROOT);

const log = (message: string) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}`);
const now = () => performance.timeOrigin + performance.now();

const servers: LocalServer[] = [];
const running = new Running();
let workDir = '';

async function main(): Promise<void> {
  const startedAt = new Date();
  await ensureOrExit({ redis: true, mysql: true, postgres: !apiOnly && !overload, packages: overload ? [] : ['wrk'] }, { root: ROOT, command: 'npm run bench' });
  workDir = await mkdtemp(join(tmpdir(), 'coupon-bench-'));
  if (apiOnly) return apiOnlyRun();
  if (overload) return overloadRun();
  if (cluster) return clusterRun();
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
    const machine = await emptyAndDescribe(pool, gateRedis);

    const sampler = await running.track(CounterSampler.start(mariadb.url, 250));
    const ctx: BenchContext = { settings, env, pool, gateRedis, sampler, running, workDir, runId: Math.random().toString(36).slice(2, 8), log, layout: settings.layouts[0]! };
    const bystander = await startBystander({ mysqlUrl: mariadb.url, opsPerSec: settings.bystanderOpsPerSec, timeoutMs: settings.bystanderTimeoutMs, outFile: join(workDir, 'bystander.json') }, running);
    const pids: LayoutPids = {
      database: [pidFromFile(join(serversDir, 'mariadb', 'mariadbd.pid')), bystander.pid],
      service: [pidFromFile(join(serversDir, 'redis', 'redis.pid')), pidFromFile(join(serversDir, 'postgres', 'data', 'postmaster.pid')), process.pid],
    };

    // The ceiling is measured right before each design and once at the end: on a shared machine the load of
    // others drifts, and each design is compared with the ceiling measured next to it. Then all of it again in
    // the next layout (bench/layout.ts), with its own idle baseline.
    const ceilingRuns: CeilingRun[] = [];
    const results: BurstResult[] = [];
    const idleWindows = new Map<Layout, { fromMs: number; toMs: number }>();
    let worker: BenchReport['worker'];
    for (const layout of settings.layouts) {
      ctx.layout = layout;
      applyLayout(layout, pids);
      log(`layout ${layout}: bystander idle baseline for ${settings.idleBaselineSec} s`);
      const idleFrom = now();
      await sleep(settings.idleBaselineSec * 1000);
      idleWindows.set(layout, { fromMs: idleFrom, toMs: now() });
      for (const design of designs) {
        const ceiling = await measureCeiling(ctx, `before ${design}`);
        ceilingRuns.push(ceiling);
        const outcome = await runDesign(ctx, design, layout === settings.layouts[0]);
        for (const result of outcome.results) result.ceilingRps = ceiling.rps;
        results.push(...outcome.results);
        worker = outcome.worker ?? worker;
      }
      ceilingRuns.push(await measureCeiling(ctx, 'end'));
    }
    applyLayout('shared', pids);

    const samples = await bystander.stop();
    log('hot path: hello, minimal, open and sold-out apply');
    const hot = await measureHotPath({ env, redisDir: join(serversDir, 'redis'), workDir, running, log }, hotPath);
    await running.stop(sampler);
    const idleByLayout = Object.fromEntries([...idleWindows].map(([layout, w]) => [layout, bystanderWindow(samples, w.fromMs, w.toMs)])) as BenchReport['bystanderIdleByLayout'];
    const idle = idleByLayout[settings.layouts[0]!]!;
    for (const result of results) finishResult(result, samples, idleByLayout[result.layout]!.p99Ms);
    for (const run of ceilingRuns) run.bystander = bystanderAgainstIdle(samples, run.window.fromMs, run.window.toMs, idleByLayout[run.layout]!.p99Ms);

    const report: BenchReport = {
      schemaVersion: 1,
      mode: settings.mode,
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      machine,
      settings,
      ceiling: { rps: Math.max(...ceilingRuns.map((run) => run.rps)), runs: ceilingRuns },
      bystanderIdle: idle,
      bystanderIdleByLayout: idleByLayout,
      results,
      worker,
      hotPath: hot,
      targets: [],
    };
    report.targets = evaluateTargets(report);
    await writeReport(report);
  } finally {
    gateRedis.disconnect();
    await pool.end().catch(() => {});
  }
}

/** --api-only: Redis and MariaDB (the api reads its events there), the hot-path comparison, and --profile. */
async function apiOnlyRun(): Promise<void> {
  log(`api only; servers under ${serversDir}; results to ${outDir}`);
  const [redis, mariadb] = await Promise.all([
    startRedis({ dir: join(serversDir, 'redis') }),
    startMariadb({ dir: join(serversDir, 'mariadb'), database: 'coupon' }),
  ]);
  servers.push(redis, mariadb);
  await migrateUp(mariadb.url);
  const env = { REDIS_URL: redis.url, MYSQL_URL: mariadb.url, ADMIN_TOKEN, LOG_LEVEL: 'warn', SHUTDOWN_DRAIN_MS: '0' };
  const context = { env, redisDir: join(serversDir, 'redis'), workDir, running, log };
  await mkdir(outDir, { recursive: true });
  const reports: HotPathReport[] = [];
  const markdown = [`# Hot path (${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC)`, ''];
  for (const connections of hotPathConnections) {
    const report = await measureHotPath(context, { ...hotPath, connections });
    reports.push(report);
    markdown.push(hotPathMarkdown(report));
  }
  if (reports.length > 1) {
    await writeFile(join(outDir, 'hot-path-connections.svg'), await renderConnectionsPlot(reports));
    markdown.push('Plot of req/s and p99 against connections: hot-path-connections.svg', '');
  }
  if (profile) markdown.push(await profileApi(context, join(outDir, 'profiles')));
  await writeFile(join(outDir, 'report.json'), `${JSON.stringify(reports.length > 1 ? reports : reports[0], null, 2)}\n`);
  await writeFile(join(outDir, 'report.md'), markdown.join('\n'));
  console.log(markdown.join('\n'));
  log(`wrote ${join(outDir, 'report.json')} and report.md`);
}

/**
 * --cluster: MariaDB and PostgreSQL (the api reads its events in MySQL; the memory phase's worker needs both), a
 * standalone Redis, a 1-primary and a 3-primary Cluster (fresh, under the run's temporary folder), and the
 * capacity bench on them.
 */
async function clusterRun(): Promise<void> {
  const startedAt = new Date();
  log(`cluster capacity (${settings.mode}); servers under ${serversDir} and ${workDir}; results to ${outDir}`);
  const startCluster = async (primaries: number) => {
    const dir = join(workDir, `redis-cluster-${primaries}`);
    const started = await startRedisCluster({ dir, primaries });
    servers.push(...started.servers);
    return started;
  };
  const [redis, mariadb, postgres, [one, three]] = await Promise.all([
    startRedis({ dir: join(serversDir, 'redis') }),
    startMariadb({ dir: join(serversDir, 'mariadb'), database: 'coupon' }),
    startPostgres({ dir: join(serversDir, 'postgres'), database: 'coupon_jobs' }),
    (async () => [await startCluster(1), await startCluster(3)] as const)(),
  ]);
  servers.push(redis, mariadb, postgres);
  await migrateUp(mariadb.url);
  const pool = mysql.createPool({ uri: mariadb.url, connectionLimit: 2 });
  const redisClient = createRedis(redis.url);
  try {
    const machine = await emptyAndDescribe(pool, redisClient);
    const clusterEnv = (nodes: string[]) => ({ REDIS_URL: `redis://${nodes[0]}`, REDIS_CLUSTER_NODES: nodes.join(',') });
    const measured = await measureClusterCapacity({
      env: { MYSQL_URL: mariadb.url, POSTGRES_URL: postgres.url, ADMIN_TOKEN, LOG_LEVEL: 'warn', SHUTDOWN_DRAIN_MS: '0' },
      targets: {
        standalone: { env: { REDIS_URL: redis.url }, servers: [redis] },
        'cluster-1': { env: clusterEnv(one.nodes), servers: one.servers },
        'cluster-3': { env: clusterEnv(three.nodes), servers: three.servers },
      },
      workDir, running, log,
    }, clusterBench);
    const report: ClusterReport = { ...measured, startedAt: startedAt.toISOString(), finishedAt: new Date().toISOString(), machine };
    const markdown = clusterMarkdown(report);
    await mkdir(outDir, { recursive: true });
    await writeFile(join(outDir, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
    await writeFile(join(outDir, 'report.md'), markdown);
    console.log(markdown);
    log(`wrote ${join(outDir, 'report.json')} and report.md in ${Math.round((Date.now() - startedAt.getTime()) / 1000)} s`);
  } finally {
    redisClient.disconnect();
    await pool.end().catch(() => {});
  }
}

/**
 * --overload: Redis and MariaDB (the api reads its events there), one api process at a time under the overload
 * steps (bench/overload.ts); report.json, report.md and the plots (SVG, and PNG where rsvg-convert is installed).
 */
async function overloadRun(): Promise<void> {
  const startedAt = new Date();
  log(`overload (${settings.mode}); servers under ${serversDir}; results to ${outDir}`);
  const [redis, mariadb] = await Promise.all([
    startRedis({ dir: join(serversDir, 'redis') }),
    startMariadb({ dir: join(serversDir, 'mariadb'), database: 'coupon' }),
  ]);
  servers.push(redis, mariadb);
  await migrateUp(mariadb.url);
  const pool = mysql.createPool({ uri: mariadb.url, connectionLimit: 2 });
  const gateRedis = createRedis(redis.url);
  try {
    const machine = await emptyAndDescribe(pool, gateRedis);
    const measured = await measureOverload({
      env: { REDIS_URL: redis.url, MYSQL_URL: mariadb.url, ADMIN_TOKEN },
      redis: gateRedis, redisDir: join(serversDir, 'redis'), adminToken: ADMIN_TOKEN, running, log,
    }, overloadBench);
    const finishedAt = new Date();
    const report: OverloadReport = {
      ...measured,
      mode: settings.mode,
      startedAt: startedAt.toISOString(),
      finishedAt: finishedAt.toISOString(),
      runSeconds: Math.round((finishedAt.getTime() - startedAt.getTime()) / 1000),
      machine: { ...machine, loadAverage1mAtEnd: Math.round(loadavg()[0]! * 100) / 100, openFilesLimit: openFilesLimit(), ...listenQueueLimits() },
    };
    const markdown = overloadMarkdown(report);
    await mkdir(outDir, { recursive: true });
    await writeFile(join(outDir, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
    await writeFile(join(outDir, 'report.md'), markdown);
    const plots = await renderOverloadPlots(report);
    for (const [name, content] of Object.entries(plots.files)) await writeFile(join(outDir, name), content);
    if (plots.note) log(plots.note);
    console.log(markdown);
    log(`wrote ${join(outDir, 'report.json')}, report.md and ${Object.keys(plots.files).join(', ')} in ${report.runSeconds} s`);
  } finally {
    gateRedis.disconnect();
    await pool.end().catch(() => {});
  }
}

/** The soft limit on open files of this process (and so of the api and load generator it starts). */
function openFilesLimit(): string {
  try {
    return /Max open files\s+(\S+)/.exec(readFileSync('/proc/self/limits', 'utf8'))?.[1] ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

/** The tables and Redis emptied, and the machine described (and logged). */
async function emptyAndDescribe(pool: mysql.Pool, redis: CouponRedis): Promise<MachineFacts> {
  await prepareTables(pool);
  await redis.flushall();
  const machine = await machineFacts(redis, pool);
  log(`machine: ${machine.cpus} cores (${machine.cpuModel}), node ${machine.node}, redis ${machine.redis}, mariadb ${machine.mariadb}`);
  return machine;
}

async function writeReport(report: BenchReport): Promise<void> {
  await mkdir(outDir, { recursive: true });
  await writeFile(join(outDir, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
  const markdown = markdownReport(report);
  await writeFile(join(outDir, 'report.md'), markdown);
  for (const [name, svg] of Object.entries(await renderPlots(report))) await writeFile(join(outDir, name), svg);
  console.log(markdown);
  log(`wrote ${join(outDir, 'report.json')}, report.md and the plots`);
}

async function cleanUp(): Promise<void> {
  await running.stopAll();
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
