/**
 * The phases of a run, each against the same servers and bystander: the hello-world ceiling, one design's warm-up
 * and measured bursts, and the outbox worker draining a pre-filled outbox without its cap.
 */
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type mysql from 'mysql2/promise';
import type { createRedis } from '../src/redis/client.ts';
import { applyForCoupon } from '../src/redis/gate.ts';
import type { LoadResult } from './load.ts';
import { type CounterSampler, type CouponTable, couponWriteTimes, createEventRow, waitForCount } from './mysql.ts';
import { type Running, runLoadGenerator, startDesign, startOutboxWorker } from './processes.ts';
import type { BenchReport, BurstResult, CeilingRun, DesignName, DrainRun, Settings } from './report.ts';
import { maxOf, minOf, round, summarise } from './stats.ts';
import { lastDone, summariseBurst } from './summary.ts';
import type { Layout } from './layout.ts';

export const ADMIN_TOKEN = 'bench-admin-token-0123456789';

/** What every phase works with: the run's settings, servers and clients, and the record of what is running. */
export interface BenchContext {
  settings: Settings;
  /** the environment of every api and worker process (server URLs, admin token, the write cap) */
  env: Record<string, string>;
  pool: mysql.Pool;
  gateRedis: ReturnType<typeof createRedis>;
  sampler: CounterSampler;
  running: Running;
  /** a folder for the load generator's results */
  workDir: string;
  /** makes this run's event ids unique */
  runId: string;
  /** where the processes run now (bench/layout.ts) */
  layout: Layout;
  log(message: string): void;
}

const now = () => performance.timeOrigin + performance.now();

/** The hello-world ceiling: the same burst shape against a bare Koa route on the same number of processes. */
export async function measureCeiling(ctx: BenchContext, label: string): Promise<CeilingRun> {
  const { settings } = ctx;
  ctx.log(`ceiling: hello-world (${label})`);
  const design = await ctx.running.track(startDesign('hello', settings.apiProcesses, ctx.env));
  try {
    await burst(ctx, design.urls, '/v1/events/hello/apply', settings.warmupRequests, 1);
    const cpuBefore = design.cpuMs();
    const load = await burst(ctx, design.urls, '/v1/events/hello/apply', settings.ceilingRequests, 2);
    const cpuUsPerRequest = Math.round(((design.cpuMs() - cpuBefore) * 1000) / Math.max(load.status.length, 1));
    const seconds = (lastDone(load) - load.startedAtMs) / 1000;
    const latency = summarise(load.latencyMs);
    return {
      label, layout: ctx.layout, requests: load.status.length, durationSec: round(seconds, 3), rps: Math.round(load.status.length / seconds), p50Ms: latency.p50Ms,
      p99Ms: latency.p99Ms, errors: load.errors, cpuUsPerRequest, window: { fromMs: round(load.startedAtMs), toMs: round(lastDone(load)) }, bystander: null,
    };
  } finally {
    await ctx.running.stop(design);
  }
}

/** One design: a warm-up burst, then each scenario's burst; for the outbox design also the uncapped worker. */
export async function runDesign(
  ctx: BenchContext, design: DesignName, withDrain = true,
): Promise<{ results: BurstResult[]; worker?: BenchReport['worker'] }> {
  const { settings, pool, running } = ctx;
  ctx.log(`${design}: starting ${settings.apiProcesses} processes${design === 'outbox' ? ' and the worker' : ''}`);
  const api = await running.track(startDesign(design, settings.apiProcesses, ctx.env));
  let worker = design === 'outbox' ? await running.track(startOutboxWorker(ctx.env)) : undefined;
  const table: CouponTable = design === 'naive' ? 'bench_naive_coupon' : 'coupon';
  const createEvent = (id: string, totalQuantity: number) =>
    (design === 'outbox' ? createEventByApi(api.urls[0]!, id, `bench ${id}`, totalQuantity) : createEventRow(pool, id, totalQuantity));
  const results: BurstResult[] = [];
  try {
    // Warm every path the measured bursts take (issue, already applied, sold out) so that no design is
    // measured while its code is still being compiled: most warm-up requests issue a coupon.
    const warmupId = `warmup-${design}-${ctx.layout}-${ctx.runId}`;
    const warmupQuantity = Math.floor(settings.warmupRequests * 0.6);
    await createEvent(warmupId, warmupQuantity);
    await burst(ctx, api.urls, `/v1/events/${warmupId}/apply`, settings.warmupRequests, 1);
    await waitForCount(pool, table, warmupId, warmupQuantity);

    for (const [index, scenario] of settings.scenarios.entries()) {
      const eventId = `bench-${design}-${ctx.layout}-${index}-${ctx.runId}`;
      await createEvent(eventId, scenario.totalQuantity);
      await sleep(500);
      ctx.log(`${design}: ${scenario.name}, ${scenario.requests} requests over ${settings.connections} connections`);
      const cpuBefore = api.cpuMs();
      const load = await burst(ctx, api.urls, `/v1/events/${eventId}/apply`, scenario.requests, 100 + index);
      const cpuUsPerRequest = Math.round(((api.cpuMs() - cpuBefore) * 1000) / Math.max(load.status.length, 1));
      const accepted = load.status.filter((s) => s === 202).length;
      const rows = await waitForCount(pool, table, eventId, accepted);
      const writeTimes = await couponWriteTimes(pool, table, eventId);
      // A naive run can leave rows whose 202 never arrived; count the rows, not the answers.
      results.push({ ...summariseBurst(design, ctx.layout, scenario, load, rows, writeTimes, ctx.sampler), apiCpuUsPerRequest: cpuUsPerRequest });
      ctx.log(`${design}: ${scenario.name}: ${rows} coupons for N=${scenario.totalQuantity}, ${results.at(-1)!.overall.rps} req/s`);
    }

    if (design !== 'outbox' || !worker || !withDrain) return { results };
    await running.stop(worker);
    worker = undefined;
    const runs = [];
    for (const batchSize of settings.drainBatchSizes) runs.push(await measureDrain(ctx, api.urls[0]!, batchSize));
    const best = runs.reduce((a, b) => (b.rowsPerSec > a.rowsPerSec ? b : a));
    return { results, worker: { rowsPerSec: best.rowsPerSec, batchSize: best.batchSize, runs } };
  } finally {
    if (worker) await running.stop(worker);
    await running.stop(api);
  }
}

/**
 * The worker without its cap: an outbox pre-filled with `drainRows` coupons through the gate script itself, then
 * one worker with PERSIST_RATE_PER_SEC very high; rows/s from the first to the last coupon's created_at.
 */
async function measureDrain(ctx: BenchContext, apiUrl: string, batchSize: number): Promise<DrainRun> {
  const { settings, pool, gateRedis } = ctx;
  const eventId = `bench-drain-${batchSize}-${ctx.runId}`;
  const rows = settings.drainRows;
  await createEventByApi(apiUrl, eventId, 'bench drain', rows);
  ctx.log(`worker: pre-filling the outbox with ${rows} coupons`);
  for (let start = 0; start < rows; start += 1000) {
    const batch = Array.from({ length: Math.min(1000, rows - start) }, (_, i) => applyForCoupon(gateRedis, eventId, `d${start + i}`, `bench-drain-${start + i}`));
    for (const outcome of await Promise.all(batch)) if (outcome.kind !== 'issued') throw new Error(`pre-fill: ${outcome.kind}`);
  }
  ctx.log(`worker: draining with PERSIST_RATE_PER_SEC=${settings.drainRatePerSec}, PERSIST_BATCH_SIZE=${batchSize}`);
  const started = now();
  const worker = await ctx.running.track(startOutboxWorker({ ...ctx.env, PERSIST_RATE_PER_SEC: String(settings.drainRatePerSec), PERSIST_BATCH_SIZE: String(batchSize) }));
  try {
    await waitForCount(pool, 'coupon', eventId, rows, 120_000);
  } finally {
    await ctx.running.stop(worker);
  }
  const times = await couponWriteTimes(pool, 'coupon', eventId);
  const spanSec = (maxOf(times) - minOf(times)) / 1000;
  return {
    rows, batchSize, ratePerSec: settings.drainRatePerSec,
    drainSec: round(spanSec, 3), rowsPerSec: Math.round(rows / Math.max(spanSec, 0.001)), wallSecIncludingStartup: round((now() - started) / 1000, 2),
  };
}

/** Creates an event through the product's admin API, as an operator would. */
async function createEventByApi(apiUrl: string, id: string, name: string, totalQuantity: number): Promise<void> {
  const response = await fetch(`${apiUrl}/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${ADMIN_TOKEN}` },
    body: JSON.stringify({ id, name, totalQuantity }),
  });
  if (response.status !== 201) throw new Error(`creating ${id} answered ${response.status}: ${await response.text()}`);
}

/** One bounded burst of the run's shape against these URLs. */
function burst(ctx: BenchContext, urls: string[], path: string, requests: number, seed: number): Promise<LoadResult> {
  const { settings } = ctx;
  return runLoadGenerator({
    urls, path, requests, connections: settings.connections, maxSeconds: settings.maxBurstSec, repeatFraction: settings.repeatFraction, seed,
    outFile: join(ctx.workDir, `load-${seed}-${Date.now()}.json`),
  });
}
