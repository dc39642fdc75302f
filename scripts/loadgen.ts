/**
 * The load generator of the overload tests, the overload benchmark and the cluster's burst check
 * (scripts/loadgen/main.go, Go's standard library only): built on first use into .tools/loadgen/ with the
 * machine's Go, and again whenever its source changes (the binary's name carries the source's hash).
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('..', import.meta.url));
const SOURCE = join(ROOT, 'scripts', 'loadgen');

/** What one run saw (the JSON the binary prints). */
export interface LoadgenReport {
  mode: 'closed' | 'open';
  sent: number;
  answered: number;
  byStatus: Record<string, number>;
  retryAfterOn503: number;
  /** requests not answered within the timeout (2 s unless told), and other failures by kind */
  timeouts: number;
  errors: number;
  errorKinds: Record<string, number>;
  /** open loop: requests that found no connection free within their timeout */
  notSent: number;
  over2s: number;
  latencyMs: { p50: number; p99: number; max: number };
  issuedLatencyMs: { p50: number; p99: number; max: number };
  /** per second of the run (by when answered): all answers, decided ones within 2 s, 503s; unanswered by when due */
  perSecond: Array<{ answered: number; goodput: number; shed: number; unanswered: number }>;
  issued: Array<[userId: string, sequence: number]>;
  peakConnections: number;
}

export interface LoadgenOptions {
  url: string;
  eventId: string;
  /** closed loop: this many connections, each sending back to back */
  connections?: number;
  /** open loop: this many requests per second, on at most maxConnections connections */
  rate?: number;
  maxConnections?: number;
  seconds: number;
  /** the Host header of every request (default: the url's host:port), e.g. the host an Ingress routes */
  host?: string;
  /** user ids are `${users}<n>`: give each process its own prefix */
  users?: string;
  timeoutSec?: number;
  /** closed loop: wait Retry-After (doubled per 503 in a row) after a 503, as clients are told to (default true) */
  honorRetryAfter?: boolean;
}

/** The binary, built if this source has not been built yet. Needs Go 1.21 or newer on PATH. */
export async function loadgenBinary(): Promise<string> {
  const hash = createHash('sha256');
  for (const file of ['main.go', 'go.mod']) hash.update(readFileSync(join(SOURCE, file)));
  const binary = join(ROOT, '.tools', 'loadgen', `loadgen-${hash.digest('hex').slice(0, 12)}`);
  if (existsSync(binary)) return binary;
  mkdirSync(join(ROOT, '.tools', 'loadgen'), { recursive: true });
  try {
    await run('go', ['build', '-o', binary, '.'], { cwd: SOURCE, env: { ...process.env, CGO_ENABLED: '0', GOFLAGS: '-mod=mod' } });
  } catch (error) {
    throw new Error(`building the load generator failed (needs Go 1.21+ on PATH; try: cd scripts/loadgen && go build): ${(error as Error).message}`);
  }
  return binary;
}

/** Runs one load-generator process to its end and returns its report. */
export async function runLoadgen(options: LoadgenOptions): Promise<LoadgenReport> {
  const args = ['-url', options.url, '-event', options.eventId, '-duration', `${options.seconds}s`];
  if (options.rate !== undefined) args.push('-rate', String(options.rate), '-max-connections', String(options.maxConnections ?? 10_000));
  else args.push('-connections', String(options.connections ?? 64));
  if (options.users) args.push('-users', options.users);
  if (options.host) args.push('-host', options.host);
  if (options.timeoutSec) args.push('-timeout', `${options.timeoutSec}s`);
  if (options.honorRetryAfter === false) args.push('-honor-retry-after=false');
  const { stdout } = await run(await loadgenBinary(), args, { maxBuffer: 256 * 1024 * 1024 });
  return JSON.parse(stdout) as LoadgenReport;
}
