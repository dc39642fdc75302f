/** Shared helpers for tests that talk to the real servers started by global-setup.ts. */
import { randomBytes } from 'node:crypto';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import mysql from 'mysql2/promise';
import { PgBoss } from 'pg-boss';
import { type LocalServer, ensurePostgresDatabase, freePort, startRedis } from '../../scripts/local-servers/index.ts';
import { startApi, startWorker, type ServiceProcess } from '../../scripts/services.ts';
import { createRedis, serverIdentity } from '../../src/redis/client.ts';
import { STATE_SENTINEL_KEY } from '../../src/redis/keys.ts';

export { freePort };
export type { ServiceProcess };

export const ADMIN_TOKEN = 'test-admin-token-0123456789';

/** The servers of this test run, as global-setup.ts put them into the environment. */
export function serverUrls(): { REDIS_URL: string; MYSQL_URL: string; POSTGRES_URL: string } {
  const { REDIS_URL, MYSQL_URL, POSTGRES_URL } = process.env;
  if (!REDIS_URL || !MYSQL_URL || !POSTGRES_URL) throw new Error('global setup did not provide the server URLs');
  return { REDIS_URL, MYSQL_URL, POSTGRES_URL };
}

/** An event id no other test uses: tests isolate their data by it. */
export const uniqueEventId = (prefix = 'e'): string => `${prefix}-${randomBytes(5).toString('hex')}`;

export function baseEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { ...serverUrls(), ADMIN_TOKEN, LOG_LEVEL: 'warn', SHUTDOWN_DRAIN_MS: '0', ...extra };
}

/**
 * A Redis of the test's own, in a fresh folder under the OS temp dir: the workers a test spawns on it see only
 * that test's events, so what they count is that test's work, whatever other files run meanwhile.
 */
export async function startOwnRedis(name: string): Promise<LocalServer> {
  const server = await startRedis({ dir: join(await mkdtemp(join(tmpdir(), `coupon-${name}-`)), 'redis') });
  // Marked as compared with MySQL: a test on a Redis of its own uses only the events it creates there, and its
  // processes must not restore (and fence, raising their epochs) every event of the suite's shared MySQL.
  const client = createRedis(server.url);
  try {
    await client.set(STATE_SENTINEL_KEY, await serverIdentity(client));
  } finally {
    client.disconnect();
  }
  return server;
}

/**
 * The pg-boss database of the workers that run against `redisUrl`: the suite's own for the shared Redis, a database
 * of its own on the suite's PostgreSQL for any other. Workers of different Redis servers must not share queues: one
 * would take another's retry or reconcile job and look for its coupons in the wrong Redis.
 */
export async function jobsUrlFor(redisUrl: string): Promise<string> {
  const shared = serverUrls();
  if (redisUrl === shared.REDIS_URL) return shared.POSTGRES_URL;
  const url = new URL(shared.POSTGRES_URL);
  url.pathname = `/coupon_jobs_${new URL(redisUrl).port}`;
  let created = jobsDatabases.get(url.toString());
  if (!created) jobsDatabases.set(url.toString(), (created = ensurePostgresDatabase(url.toString())));
  await created;
  return url.toString();
}
const jobsDatabases = new Map<string, Promise<void>>();

/** A pg-boss client on the suite's PostgreSQL (or another jobs database), to read the failure path's queues as an operator would. */
export async function startBoss(url = serverUrls().POSTGRES_URL): Promise<PgBoss> {
  const boss = new PgBoss(url);
  boss.on('error', () => undefined);
  await boss.start();
  return boss;
}

export async function spawnApi(extra: Record<string, string> = {}): Promise<ServiceProcess> {
  return startApi({ port: await freePort(), env: baseEnv(extra) });
}

export async function spawnWorker(extra: Record<string, string> = {}): Promise<ServiceProcess> {
  const jobs: Record<string, string> = extra.REDIS_URL && !extra.POSTGRES_URL ? { POSTGRES_URL: await jobsUrlFor(extra.REDIS_URL) } : {};
  return startWorker({ port: await freePort(), env: baseEnv({ ...jobs, ...extra }) });
}

export interface JsonResponse<T = Record<string, unknown>> {
  status: number;
  body: T;
  headers: Headers;
}

export async function request<T = Record<string, unknown>>(
  url: string, init: { method?: string; body?: unknown; token?: string; headers?: Record<string, string> } = {},
): Promise<JsonResponse<T>> {
  const headers: Record<string, string> = { ...init.headers };
  if (init.body !== undefined) headers['content-type'] ??= 'application/json';
  if (init.token) headers.authorization = `Bearer ${init.token}`;
  const response = await fetch(url, {
    method: init.method ?? (init.body === undefined ? 'GET' : 'POST'),
    headers,
    body: init.body === undefined ? undefined : typeof init.body === 'string' ? init.body : JSON.stringify(init.body),
  });
  const text = await response.text();
  let body: unknown = text;
  try {
    body = JSON.parse(text);
  } catch {
    // not JSON: the raw text is the body
  }
  return { status: response.status, body: body as T, headers: response.headers };
}

export async function createEvent(
  apiUrl: string, event: { id: string; totalQuantity: number; name?: string; startsAt?: string; endsAt?: string },
): Promise<JsonResponse> {
  const response = await request(`${apiUrl}/v1/events`, { body: { name: `event ${event.id}`, ...event }, token: ADMIN_TOKEN });
  if (response.status !== 201) throw new Error(`creating ${event.id} answered ${response.status}: ${JSON.stringify(response.body)}`);
  return response;
}

export const apply = (apiUrl: string, eventId: string, userId: string) =>
  request<{ status?: string; sequence?: number; error?: string; message?: string }>(`${apiUrl}/v1/events/${eventId}/apply`, { body: { userId } });

let pool: mysql.Pool | undefined;

/** Reads MySQL directly, as an operator would, to check what the service wrote. */
export async function query<T = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T[]> {
  pool ??= mysql.createPool({ uri: serverUrls().MYSQL_URL, connectionLimit: 4, timezone: 'Z', dateStrings: false });
  const [rows] = await pool.query(sql, params);
  return rows as T[];
}

export async function closePool(): Promise<void> {
  await pool?.end();
  pool = undefined;
}

export async function couponRows(eventId: string): Promise<Array<{ user_id: string; sequence: number; created_at: Date; issued_at: Date }>> {
  return query('select user_id, sequence, issued_at, created_at from coupon where event_id = ? order by sequence', [eventId]);
}

/** Polls until `check` returns a value other than undefined/false; never a fixed sleep. */
export async function waitFor<T>(check: () => Promise<T | undefined | false> | T | undefined | false, options: { timeoutMs?: number; intervalMs?: number; what?: string } = {}): Promise<T> {
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  let lastError: unknown;
  while (Date.now() < deadline) {
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (error) {
      lastError = error;
    }
    await sleep(options.intervalMs ?? 100);
  }
  throw new Error(`timed out waiting for ${options.what ?? 'a condition'}${lastError ? `: ${String(lastError)}` : ''}`);
}

/** Waits until MySQL holds `count` coupons of the event. */
export const waitForPersisted = (eventId: string, count: number, timeoutMs = 60_000) =>
  waitFor(async () => {
    const [row] = await query<{ n: number }>('select count(*) as n from coupon where event_id = ?', [eventId]);
    return Number(row?.n) >= count ? Number(row?.n) : undefined;
  }, { timeoutMs, what: `${count} coupons of ${eventId} in MySQL` });
