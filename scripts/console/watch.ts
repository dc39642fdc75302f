/**
 * `console watch EVENT`: a sale as it runs, refreshed every --interval until the event is sold out and every coupon
 * is persisted (exit 0), or --timeout passes (exit 1). Reads the event through the api (GET /v1/events/:id), the
 * api's /metrics (answers of the apply route by status) and the worker's /metrics (outbox lag and pending of the
 * event); the write rate is the persisted count's rise per second, against the cap (PERSIST_RATE_PER_SEC).
 * On a terminal the block is redrawn in place; otherwise (a pipe, a CI log, a test) one line per refresh.
 * --record FILE keeps every sample as a JSON line for `console report --samples FILE`.
 *
 * The api's figures are those of the one api process at --api-metrics, and of all its events: behind a load
 * balancer they are that pod's share (the dashboard sums every pod).
 */
import { appendFileSync, writeFileSync } from 'node:fs';
import type { Command } from 'commander';
import { type Sample, scrape } from './metrics.ts';
import { ConsoleError } from './output.ts';

export interface WatchTarget { apiUrl: string; apiMetricsUrl: string; workerUrl: string; persistRatePerSec: number }

interface EventView { id: string; totalQuantity: number; issued: number; persisted: number; status: string }

/** One refresh: the event's counts and the cumulative counters the rates come from. */
export interface WatchSample {
  at: string;
  status: string;
  total: number;
  issued: number;
  persisted: number;
  outboxLag: number | null;
  outboxPending: number | null;
  /** apply answers since the api started, by HTTP status */
  answers: Record<string, number> | null;
  /** per second since the previous sample */
  answersPerSec: Record<string, number> | null;
  writesPerSec: number | null;
  cap: number;
  /** the apply route's latency histogram (cumulative bucket counts by upper bound, seconds), for a p99 */
  applyLatencyBuckets: Record<string, number> | null;
}

const APPLY_ROUTE = /\/apply$/;
/** how the apply route's answers are named on screen */
export const ANSWER_NAMES: Record<string, string> = { 202: 'issued', 409: 'conflict', 410: 'sold_out', 503: 'unavailable' };

async function readEvent(apiUrl: string, eventId: string): Promise<EventView> {
  let response: Response;
  try {
    response = await fetch(new URL(`/v1/events/${encodeURIComponent(eventId)}`, apiUrl), { signal: AbortSignal.timeout(5_000) });
  } catch (error) {
    throw new ConsoleError(`cannot reach the api at ${apiUrl}: ${(error as Error).message}`);
  }
  const body = await response.json().catch(() => ({})) as EventView & { error?: string };
  if (!response.ok) throw new ConsoleError(`GET /v1/events/${eventId} answered ${response.status} ${body.error ?? ''}`.trim());
  return body;
}

function applyAnswers(api: Sample[]): Record<string, number> {
  const answers: Record<string, number> = {};
  for (const s of api) {
    if (s.name !== 'coupon_http_requests_total' || !APPLY_ROUTE.test(s.labels.route ?? '')) continue;
    const name = ANSWER_NAMES[s.labels.status ?? ''] ?? 'other';
    answers[name] = (answers[name] ?? 0) + s.value;
  }
  return answers;
}

function applyBuckets(api: Sample[]): Record<string, number> {
  const buckets: Record<string, number> = {};
  for (const s of api) {
    if (s.name === 'coupon_http_request_duration_seconds_bucket' && APPLY_ROUTE.test(s.labels.route ?? '')) buckets[s.labels.le!] = (buckets[s.labels.le!] ?? 0) + s.value;
  }
  return buckets;
}

export async function takeSample(target: WatchTarget, eventId: string, previous: WatchSample | undefined): Promise<WatchSample> {
  const [event, api, worker] = await Promise.all([readEvent(target.apiUrl, eventId), scrape(target.apiMetricsUrl), scrape(target.workerUrl)]);
  const at = new Date();
  const seconds = previous ? (at.getTime() - Date.parse(previous.at)) / 1000 : 0;
  const gauge = (name: string) => {
    const found = worker?.find((s) => s.name === name && s.labels.event === eventId);
    return worker ? (found?.value ?? 0) : null;
  };
  const answers = api ? applyAnswers(api) : null;
  let answersPerSec: Record<string, number> | null = null;
  if (answers && previous?.answers && seconds > 0) {
    answersPerSec = {};
    for (const [name, count] of Object.entries(answers)) answersPerSec[name] = Math.max(0, (count - (previous.answers[name] ?? 0)) / seconds);
  }
  return {
    at: at.toISOString(), status: event.status, total: event.totalQuantity, issued: event.issued, persisted: event.persisted,
    outboxLag: gauge('coupon_outbox_lag'), outboxPending: gauge('coupon_outbox_pending'),
    answers, answersPerSec,
    writesPerSec: previous && seconds > 0 ? Math.max(0, (event.persisted - previous.persisted) / seconds) : null,
    cap: target.persistRatePerSec,
    applyLatencyBuckets: api ? applyBuckets(api) : null,
  };
}

/** Sold out (or ended) and every issued coupon in MySQL. */
export const saleDone = (s: WatchSample) => (s.issued >= s.total || s.status === 'closed') && s.persisted >= s.issued;

const bar = (part: number, whole: number, width = 24) => {
  const filled = whole > 0 ? Math.min(width, Math.round((part / whole) * width)) : 0;
  return `[${'#'.repeat(filled)}${'.'.repeat(width - filled)}]`;
};
const num = (value: number | null | undefined, digits = 0) => (value === null || value === undefined ? '-' : value.toFixed(digits));
const perSec = (s: WatchSample) =>
  s.answersPerSec ? Object.entries(s.answersPerSec).sort(([a], [b]) => a.localeCompare(b)).map(([name, rate]) => `${name} ${num(rate)}`).join('  ') || 'none' : '-';

/** The block a terminal shows, redrawn in place. */
export function renderBlock(eventId: string, s: WatchSample, elapsedMs: number): string[] {
  const pct = s.total > 0 ? (100 * s.issued) / s.total : 0;
  return [
    `${eventId}  ${s.status}  ${(elapsedMs / 1000).toFixed(1)} s`,
    `issued     ${bar(s.issued, s.total)} ${s.issued}/${s.total} (${pct.toFixed(1)}%)`,
    `persisted  ${bar(s.persisted, s.total)} ${s.persisted}/${s.total} (${s.issued - s.persisted} issued not yet in MySQL)`,
    `outbox     lag ${num(s.outboxLag)}  pending ${num(s.outboxPending)}`,
    `applies/s  ${perSec(s)}`,
    `writes/s   ${bar(s.writesPerSec ?? 0, s.cap)} ${num(s.writesPerSec)} of cap ${s.cap}`,
  ];
}

/** The line a pipe gets per refresh: key=value pairs a script (or a test) can parse. */
export function renderLine(s: WatchSample, elapsedMs: number): string {
  const answers = s.answersPerSec ? Object.entries(s.answersPerSec).sort(([a], [b]) => a.localeCompare(b)).map(([name, rate]) => `${name}:${num(rate)}`).join(',') : '-';
  return [
    `t=${(elapsedMs / 1000).toFixed(1)}s`, `status=${s.status}`, `issued=${s.issued}/${s.total}`, `persisted=${s.persisted}`,
    `lag=${num(s.outboxLag)}`, `pending=${num(s.outboxPending)}`, `applies/s=${answers || 'none'}`, `writes/s=${num(s.writesPerSec)}`, `cap=${s.cap}`,
  ].join(' ');
}

export interface WatchOptions { intervalMs: number; timeoutMs?: number; record?: string; plain: boolean }

export async function watchSale(target: WatchTarget, eventId: string, options: WatchOptions): Promise<WatchSample> {
  const started = Date.now();
  const tty = !options.plain && process.stdout.isTTY === true;
  if (options.record) writeFileSync(options.record, '');
  let previous: WatchSample | undefined;
  let drawn = 0;
  for (;;) {
    const sample = await takeSample(target, eventId, previous);
    if (options.record) appendFileSync(options.record, `${JSON.stringify(sample)}\n`);
    const elapsed = Date.now() - started;
    if (tty) {
      const lines = renderBlock(eventId, sample, elapsed);
      // back to the block's first line, each line rewritten and cleared to its end
      process.stdout.write(`${drawn ? `\x1b[${drawn}A` : ''}${lines.map((line) => `\r${line}\x1b[K`).join('\n')}\n`);
      drawn = lines.length;
    } else {
      process.stdout.write(`${renderLine(sample, elapsed)}\n`);
    }
    if (saleDone(sample)) {
      process.stdout.write(`${eventId}: ${sample.issued >= sample.total ? 'sold out' : 'closed'} and persisted: ${sample.persisted}/${sample.total} in MySQL\n`);
      return sample;
    }
    if (options.timeoutMs !== undefined && elapsed >= options.timeoutMs) {
      throw new ConsoleError(`${eventId}: not sold out and persisted after ${Math.round(options.timeoutMs / 1000)} s (issued ${sample.issued}/${sample.total}, persisted ${sample.persisted})`);
    }
    previous = sample;
    await new Promise((resolve) => setTimeout(resolve, options.intervalMs));
  }
}

const positive = (name: string) => (value: string) => {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new ConsoleError(`${name} must be a positive number, not ${value}`);
  return n;
};

export function watchCommand(program: Command, target: () => WatchTarget): void {
  program.command('watch <eventId>')
    .description('a sale live: issued/total, persisted, outbox lag, applies/s by answer, writes/s against the cap; exits 0 once sold out and persisted')
    .option('--interval <seconds>', 'seconds between refreshes', positive('--interval'), 1)
    .option('--timeout <seconds>', 'give up (exit 1) after this long', positive('--timeout'))
    .option('--record <file>', 'keep every sample as a JSON line (for report --samples)')
    .option('--plain', 'one line per refresh even on a terminal (the default on a pipe)', false)
    .action(async (eventId: string, options: { interval: number; timeout?: number; record?: string; plain: boolean }) => {
      await watchSale(target(), eventId, {
        intervalMs: options.interval * 1000, plain: options.plain,
        ...(options.timeout !== undefined && { timeoutMs: options.timeout * 1000 }), ...(options.record && { record: options.record }),
      });
    });
}
