/**
 * Helpers for the fault tests (test/faults): a dedicated Redis, MariaDB and PostgreSQL per test file that the
 * test may stop, kill or flush without touching the servers the rest of the suite shares; bounded load with
 * per-request latency; Prometheus scraping; process CPU time; and a record of the measured figures that
 * docs/reliability.md is filled from (.stack/faults/figures/<scenario>.json).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import mysql from 'mysql2/promise';
import { type LocalServer, freePort, startMariadb, startPostgres, startRedis } from '../../scripts/local-servers/index.ts';
import { type ServiceProcess, startApi, startWorker } from '../../scripts/services.ts';
import { migrateUp } from '../../src/db/migrate.ts';
import { ADMIN_TOKEN } from './harness.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface FaultStack {
  readonly redis: LocalServer;
  readonly mysql: LocalServer;
  readonly postgres: LocalServer;
  /** REDIS_URL, MYSQL_URL, POSTGRES_URL of this stack plus what every spawned process needs */
  env(extra?: Record<string, string>): Record<string, string>;
  spawnApi(extra?: Record<string, string>): Promise<ServiceProcess>;
  spawnWorker(extra?: Record<string, string>): Promise<ServiceProcess>;
  /** reads this stack's MySQL directly (a fresh connection each time, so it works across restarts) */
  query<T = Record<string, unknown>>(sql: string, params?: unknown[]): Promise<T[]>;
  /** a plain Redis client on this stack, for inspecting streams and flushing */
  redisClient(): Redis;
  /** SIGKILLs every api and worker spawned through this stack so far (between tests of one file) */
  stopProcesses(): Promise<void>;
  /** stops every process spawned through this stack, then the servers, and deletes the folder */
  stop(): Promise<void>;
}

/** Starts a migrated throwaway stack under .stack/faults/<name>-<random>. */
export async function startFaultStack(name: string, options: { redisAppendonly?: boolean } = {}): Promise<FaultStack> {
  const dir = join(ROOT, '.stack', 'faults', `${name}-${process.pid}-${randomBytes(3).toString('hex')}`);
  await mkdir(dir, { recursive: true });
  const started = await Promise.allSettled([
    startRedis({ dir: join(dir, 'redis'), appendonly: options.redisAppendonly ?? false }),
    startMariadb({ dir: join(dir, 'mariadb') }),
    startPostgres({ dir: join(dir, 'postgres') }),
  ]);
  const servers = started.flatMap((outcome) => (outcome.status === 'fulfilled' ? [outcome.value] : []));
  const failed = started.find((outcome) => outcome.status === 'rejected');
  if (failed) {
    await Promise.allSettled(servers.map((server) => server.stop()));
    throw failed.reason;
  }
  const [redis, mariadb, postgres] = servers as [LocalServer, LocalServer, LocalServer];
  await migrateUp(mariadb.url);

  const processes: ServiceProcess[] = [];
  const clients: Redis[] = [];
  const env = (extra: Record<string, string> = {}) => ({
    REDIS_URL: redis.url, MYSQL_URL: mariadb.url, POSTGRES_URL: postgres.url,
    ADMIN_TOKEN, LOG_LEVEL: 'warn', SHUTDOWN_DRAIN_MS: '0', ...extra,
  });
  const track = (service: ServiceProcess) => {
    processes.push(service);
    return service;
  };
  return {
    redis, mysql: mariadb, postgres, env,
    spawnApi: async (extra) => track(await startApi({ port: await freePort(), env: env(extra) })),
    spawnWorker: async (extra) => track(await startWorker({ port: await freePort(), env: env(extra) })),
    async query<T>(sql: string, params: unknown[] = []): Promise<T[]> {
      const connection = await mysql.createConnection({ uri: mariadb.url, timezone: 'Z' });
      try {
        const [rows] = await connection.query(sql, params);
        return rows as T[];
      } finally {
        await connection.end();
      }
    },
    redisClient() {
      const client = new Redis(redis.url, { lazyConnect: false, maxRetriesPerRequest: 1, retryStrategy: () => 200 });
      client.on('error', () => undefined);
      clients.push(client);
      return client;
    },
    async stopProcesses() {
      await Promise.allSettled(processes.splice(0).map((service) => service.stop('SIGKILL')));
    },
    async stop() {
      await Promise.allSettled(processes.splice(0).map((service) => service.stop('SIGKILL')));
      for (const client of clients) client.disconnect();
      await Promise.allSettled([redis.stop(), mariadb.stop(), postgres.stop()]);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Load

export interface ApplyResult {
  userId: string;
  /** HTTP status, or 0 when every attempt failed at the network level */
  status: number;
  body: { status?: string; sequence?: number; error?: string };
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
      if (wait > 0) await new Promise((resolve) => setTimeout(resolve, wait));
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

function describeNetworkError(error: unknown): string {
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

// ---------------------------------------------------------------------------------------------------------------
// Observing processes

/** Sum of every sample of a Prometheus metric (all label sets) on a /metrics endpoint. */
export async function scrapeMetric(serviceUrl: string, name: string): Promise<number> {
  const text = await (await fetch(`${serviceUrl}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (match && match[1] === name) sum += Number(match[3]);
  }
  return sum;
}

/** CPU time (user + system) a process has used so far, in ms, from /proc/<pid>/stat. */
export function cpuTimeMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name, which is in parentheses and may contain spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks * 1000) / clockTicksPerSecond();
}

/** USER_HZ, the unit of /proc/<pid>/stat times: 100 on every Linux this runs on (x86-64 and arm64). */
const clockTicksPerSecond = (): number => 100;

export async function readyz(serviceUrl: string): Promise<{ status: number; body: Record<string, unknown> }> {
  try {
    const response = await fetch(`${serviceUrl}/readyz`, { signal: AbortSignal.timeout(2_000) });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  } catch (error) {
    return { status: 0, body: { error: describeNetworkError(error) } };
  }
}

/** Runs the operator's dead-letter CLI (`npm run dlq -- ...`) against a stack; resolves with its parsed JSON. */
export function runDlq(env: Record<string, string>, ...args: string[]): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['scripts/dlq.ts', ...args, '--json'], { cwd: ROOT, env: { ...process.env, ...env }, timeout: 30_000 },
      (error, stdout, stderr) => {
        if (error) return reject(new Error(`dlq ${args.join(' ')} failed: ${error.message}\n${stderr}`));
        try {
          resolve(JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>);
        } catch {
          reject(new Error(`dlq ${args.join(' ')} printed no JSON:\n${stdout}\n${stderr}`));
        }
      });
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Assertions on what was persisted, and the record of figures

export interface PersistedCheck {
  rows: number;
  distinctUsers: number;
  distinctSequences: number;
  minSequence: number;
  maxSequence: number;
  /** 202 answers whose user has no row, or a row with another sequence */
  issuedButMissing: string[];
}

/** Compares the coupon rows of an event with the 202 answers the clients saw. */
export async function checkPersisted(
  query: FaultStack['query'], eventId: string, issued: Array<{ userId: string; sequence: number }>,
): Promise<PersistedCheck> {
  const rows = await query<{ user_id: string; sequence: number }>('select user_id, sequence from coupon where event_id = ?', [eventId]);
  const byUser = new Map(rows.map((row) => [row.user_id, Number(row.sequence)]));
  const sequences = rows.map((row) => Number(row.sequence));
  return {
    rows: rows.length,
    distinctUsers: byUser.size,
    distinctSequences: new Set(sequences).size,
    minSequence: sequences.length ? Math.min(...sequences) : 0,
    maxSequence: sequences.length ? Math.max(...sequences) : 0,
    issuedButMissing: issued.filter((coupon) => byUser.get(coupon.userId) !== coupon.sequence).map((coupon) => coupon.userId),
  };
}

export async function countRows(query: FaultStack['query'], eventId: string): Promise<number> {
  const [row] = await query<{ n: number }>('select count(*) as n from coupon where event_id = ?', [eventId]);
  return Number(row?.n ?? 0);
}

/** Prints the figures a scenario measured and keeps them under .stack/faults/figures for docs/reliability.md. */
export async function recordFigures(scenario: string, figures: Record<string, unknown>): Promise<void> {
  const record = { scenario, at: new Date().toISOString(), ...figures };
  console.log(`[fault figures] ${JSON.stringify(record)}`);
  const dir = join(ROOT, '.stack', 'faults', 'figures');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, `${scenario}.json`), `${JSON.stringify(record, null, 2)}\n`);
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));
