/** Small, allocation-light statistics over the raw samples. */

/** The p-th percentile (0..100) by nearest rank; NaN for no samples. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = Float64Array.from(values).sort();
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}

export interface LatencySummary {
  count: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
}

export function summarise(values: readonly number[]): LatencySummary {
  return {
    count: values.length,
    p50Ms: round(percentile(values, 50), 2),
    p99Ms: round(percentile(values, 99), 2),
    maxMs: round(values.reduce((max, v) => Math.max(max, v), Number.NaN), 2),
  };
}

/** Counts of `times` (epoch ms) per bucket of `bucketMs` from `fromMs`, as a rate per second. */
export function ratePerSecond(times: readonly number[], fromMs: number, toMs: number, bucketMs: number): Array<{ t: number; perSec: number }> {
  const buckets = Math.max(1, Math.ceil((toMs - fromMs) / bucketMs));
  const counts = new Array<number>(buckets).fill(0);
  for (const time of times) {
    const i = Math.floor((time - fromMs) / bucketMs);
    if (i >= 0 && i < buckets) counts[i]! += 1;
  }
  return counts.map((count, i) => ({ t: round((i * bucketMs) / 1000, 3), perSec: round((count * 1000) / bucketMs, 1) }));
}

/** The p-th percentile of values per bucket of their times; buckets without samples are left out. */
export function percentileOverTime(
  times: readonly number[], values: readonly number[], fromMs: number, toMs: number, bucketMs: number, p: number,
): Array<{ t: number; value: number }> {
  const buckets = new Map<number, number[]>();
  for (let i = 0; i < times.length; i += 1) {
    const time = times[i]!;
    if (time < fromMs || time >= toMs) continue;
    const bucket = Math.floor((time - fromMs) / bucketMs);
    let list = buckets.get(bucket);
    if (!list) buckets.set(bucket, (list = []));
    list.push(values[i]!);
  }
  return [...buckets.entries()].sort(([a], [b]) => a - b)
    .map(([bucket, list]) => ({ t: round((bucket * bucketMs) / 1000, 3), value: round(percentile(list, p), 2) }));
}

export function round(value: number, digits = 0): number {
  if (!Number.isFinite(value)) return value;
  const factor = 10 ** digits;
  return Math.round(value * factor) / factor;
}

export const maxOf = (values: readonly number[]): number => values.reduce((a, b) => Math.max(a, b), -Infinity);
export const minOf = (values: readonly number[]): number => values.reduce((a, b) => Math.min(a, b), Infinity);
