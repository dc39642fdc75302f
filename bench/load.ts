/**
 * The load generator, run as its own process so that its busy event loop distorts neither the bystander nor the
 * orchestrator's samplers. It fires a bounded burst with autocannon: `requests` apply calls (the count bounds it,
 * `maxSeconds` too), spread over the given URLs (one per api process), each from a distinct user except for a
 * share of repeats, and records every response's completion time, status and latency.
 *
 * Input: one JSON argument (LoadSpec). Output: the LoadResult as JSON, written to spec.outFile.
 */
import { writeFileSync } from 'node:fs';
import autocannon from 'autocannon';

export interface LoadSpec {
  urls: string[];
  path: string;
  requests: number;
  connections: number;
  maxSeconds: number;
  /** share of requests that repeat an earlier user of the same burst (0..1) */
  repeatFraction: number;
  /** seeds the user sequence, so every design sees the same users in the same order */
  seed: number;
  outFile: string;
}

export interface LoadResult {
  startedAtMs: number;
  finishedAtMs: number;
  /** per response, in completion order: epoch ms when it completed */
  doneAtMs: number[];
  status: number[];
  latencyMs: number[];
  /** connection errors and timeouts: requests that got no response */
  errors: number;
  timeouts: number;
  sent: number;
}

/** A small deterministic PRNG (mulberry32): the same seed gives every design the same users. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** userId for the i-th request: mostly a new user, sometimes one seen before. */
export function userSequence(seed: number, repeatFraction: number): () => string {
  const next = random(seed);
  let users = 0;
  return () => {
    if (users > 0 && next() < repeatFraction) return `u${Math.floor(next() * users)}`;
    const id = `u${users}`;
    users += 1;
    return id;
  };
}

export async function runLoad(spec: LoadSpec): Promise<LoadResult> {
  const nextUser = userSequence(spec.seed, spec.repeatFraction);
  const doneAtMs: number[] = [];
  const status: number[] = [];
  const latencyMs: number[] = [];
  const origin = performance.timeOrigin;
  const startedAtMs = origin + performance.now();
  const instance = autocannon({
    url: spec.urls,
    connections: spec.connections,
    amount: spec.requests,
    timeout: 10,
    requests: [{
      method: 'POST',
      path: spec.path,
      headers: { 'content-type': 'application/json' },
      setupRequest: (request: Record<string, unknown>) => ({ ...request, body: `{"userId":"${nextUser()}"}` }),
    }],
  });
  const stopTimer = setTimeout(() => instance.stop(), spec.maxSeconds * 1000);
  instance.on('response', (_client: unknown, statusCode: number, _bytes: number, responseTime: number) => {
    doneAtMs.push(origin + performance.now());
    status.push(statusCode);
    latencyMs.push(responseTime);
  });
  const result = await instance;
  clearTimeout(stopTimer);
  return {
    startedAtMs, finishedAtMs: origin + performance.now(), doneAtMs, status, latencyMs,
    errors: result.errors, timeouts: result.timeouts, sent: result.requests.sent,
  };
}

if (import.meta.main) {
  const spec = JSON.parse(process.argv[2] ?? '{}') as LoadSpec;
  const result = await runLoad(spec);
  writeFileSync(spec.outFile, JSON.stringify(result));
}
