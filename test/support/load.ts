/** Bounded apply load against api processes, with each answer's latency, and the figures taken from it. */
import { setTimeout as sleep } from 'node:timers/promises';

export interface ApplyResult {
  userId: string;
  /** HTTP status, or 0 when every attempt failed at the network level */
  status: number;
  body: { status?: string; sequence?: number; error?: string; message?: string };
  /** when the (last) attempt started, ms since the load began */
  startedMs: number;
  /** latency of the last attempt in ms */
  latencyMs: number;
  attempts: number;
  /** network errors met on the way (code or message), for the attempts that failed without an answer */
  networkErrors: string[];
}

/**
 * Applies once for each user against the given api URLs, `concurrency` requests at a time (optionally paced
 * to `ratePerSec`). A request that fails without an HTTP answer is retried on the next URL, as a client behind
 * a load balancer would, up to `maxAttempts`. `urls` is read on each attempt, so a test can change it.
 */
export async function applyLoad(options: {
  urls: () => string[];
  eventId: string;
  users: string[];
  concurrency: number;
  ratePerSec?: number;
  maxAttempts?: number;
  timeoutMs?: number;
  /** called after each answer, for tests that act when the load reaches a point */
  onResult?: (result: ApplyResult, done: number) => void;
}): Promise<ApplyResult[]> {
  const started = performance.now();
  const results: ApplyResult[] = new Array(options.users.length);
  let next = 0;
  let done = 0;
  const maxAttempts = options.maxAttempts ?? 5;
  const one = async (index: number) => {
    const userId = options.users[index]!;
    if (options.ratePerSec) {
      const due = (index / options.ratePerSec) * 1000;
      const wait = due - (performance.now() - started);
      if (wait > 0) await sleep(wait);
    }
    const networkErrors: string[] = [];
    let result: ApplyResult | undefined;
    for (let attempt = 1; attempt <= maxAttempts && !result; attempt++) {
      const urls = options.urls();
      const url = urls[(index + attempt - 1) % urls.length]!;
      const attemptStarted = performance.now();
      try {
        const response = await fetch(`${url}/v1/events/${options.eventId}/apply`, {
          method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ userId }),
          signal: AbortSignal.timeout(options.timeoutMs ?? 10_000),
        });
        const body = (await response.json()) as ApplyResult['body'];
        result = {
          userId, status: response.status, body, startedMs: attemptStarted - started,
          latencyMs: performance.now() - attemptStarted, attempts: attempt, networkErrors,
        };
      } catch (error) {
        networkErrors.push(describeNetworkError(error));
        if (attempt === maxAttempts) {
          result = {
            userId, status: 0, body: {}, startedMs: attemptStarted - started,
            latencyMs: performance.now() - attemptStarted, attempts: attempt, networkErrors,
          };
        }
      }
    }
    results[index] = result!;
    done += 1;
    options.onResult?.(result!, done);
  };
  const lanes = Array.from({ length: Math.min(options.concurrency, options.users.length) }, async () => {
    while (next < options.users.length) await one(next++);
  });
  await Promise.all(lanes);
  return results;
}

/** What a request that got no HTTP answer met: the error code (ECONNREFUSED, ...) or message. */
export function describeNetworkError(error: unknown): string {
  const cause = (error as { cause?: { code?: string; message?: string } }).cause;
  return cause?.code ?? cause?.message ?? (error as Error).name ?? String(error);
}

export const users = (prefix: string, count: number, from = 0): string[] =>
  Array.from({ length: count }, (_, i) => `${prefix}-${from + i}`);

/** Latency percentile (nearest rank) in ms, rounded to 0.1 ms; NaN for no samples. */
export function percentile(latencies: number[], p: number): number {
  if (latencies.length === 0) return Number.NaN;
  const sorted = [...latencies].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return Math.round(sorted[rank]! * 10) / 10;
}

export function countBy<T>(items: T[], key: (item: T) => string | number): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const item of items) counts[String(key(item))] = (counts[String(key(item))] ?? 0) + 1;
  return counts;
}

/** How many answers of each HTTP status, e.g. { 202: 40, 410: 40 }. */
export const statusesOf = (results: ApplyResult[]): Record<string, number> => countBy(results, (result) => result.status);
