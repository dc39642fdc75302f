/** From raw samples to the report's numbers: one burst's phases and MySQL figures, and the bystander over a window. */
import type { BystanderSamples } from './bystander.ts';
import type { LoadResult } from './load.ts';
import type { CounterSampler } from './mysql.ts';
import type { BurstResult, DesignName, Settings } from './report.ts';
import { maxOf, minOf, percentileOverTime, ratePerSecond, round, summarise } from './stats.ts';
import type { Layout } from './layout.ts';

/** Responses are recorded in completion order: the last one is the latest. */
export const lastDone = (load: LoadResult): number => load.doneAtMs.at(-1) ?? load.finishedAtMs;

/**
 * One burst as the report shows it: answers by status, the open and sold-out phases, and what MySQL received.
 * The bystander and the ratios to the ceiling are filled in by finishResult once the run is over.
 */
export function summariseBurst(
  design: DesignName, layout: Layout, scenario: Settings['scenarios'][number], load: LoadResult, rows: number, writeTimes: number[], sampler: CounterSampler,
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
    layout,
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

/** Adds what is known only at the end of the run: the bystander during the burst and the ratios to the ceiling. */
export function finishResult(result: BurstResult, samples: BystanderSamples, idleP99Ms: number): void {
  const ceilingRps = result.ceilingRps;
  const { fromMs, toMs } = result.window;
  result.bystander = bystanderAgainstIdle(samples, fromMs, toMs, idleP99Ms);
  result.series.bystanderP99Ms = percentileOverTime(samples.dueAtMs, samples.latencyMs, fromMs, toMs, 500, 99);
  for (const phase of [result.overall, result.open, result.soldOut]) if (phase) phase.ratioToCeiling = round(phase.rps / ceilingRps, 3);
}

/** The bystander's operations that were due in [fromMs, toMs). */
export function bystanderWindow(samples: BystanderSamples, fromMs: number, toMs: number) {
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

/** The bystander in [fromMs, toMs), with its p99 over the idle baseline's. */
export function bystanderAgainstIdle(samples: BystanderSamples, fromMs: number, toMs: number, idleP99Ms: number) {
  const during = bystanderWindow(samples, fromMs, toMs);
  return { ...during, p99VsIdle: round(during.p99Ms / idleP99Ms, 2) };
}
