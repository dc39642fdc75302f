/**
 * The fault tests' own servers: a Redis, MariaDB and PostgreSQL per test file (under .stack/faults/<folder>-…)
 * that a test may stop, kill or flush without touching the servers the rest of the suite shares, and
 * `describeFault`, which gives a file its stack and tears it down in one place.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import mysql from 'mysql2/promise';
import { type LocalServer, freePort, startMariadb, startPostgres, startRedis } from '../../scripts/local-servers/index.ts';
import { type ServiceProcess, startApi, startWorker } from '../../scripts/services.ts';
import { migrateUp } from '../../src/db/migrate.ts';
import { ADMIN_TOKEN } from './harness.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
/** starting or stopping three servers on a busy 2-core machine */
const SERVERS_TIMEOUT_MS = 120_000;

export interface FaultStackOptions {
  /** Redis with its append-only file on (appendfsync everysec), as the chart deploys it */
  redisAppendonly?: boolean;
}

/**
 * A describe block `fault: <name>` with a migrated stack of its own under .stack/faults/<folder>-…: started
 * before the first test, every api and worker spawned through it SIGKILLed after each test (before the file's
 * own afterEach hooks, which may tear down what those processes talk through), and the servers stopped after
 * the file's own afterAll hooks, so whatever the file built on them goes first.
 */
export function describeFault(
  name: string, options: FaultStackOptions & { folder: string }, body: (stack: FaultStack) => void,
): void {
  describe(`fault: ${name}`, () => {
    const stack = new FaultStack(options.folder, options);
    beforeAll(() => stack.start(), SERVERS_TIMEOUT_MS);
    afterEach(() => stack.stopProcesses());
    body(stack);
    afterAll(() => stack.stop(), SERVERS_TIMEOUT_MS);
  });
}

interface FaultServers {
  redis: LocalServer;
  mysql: LocalServer;
  postgres: LocalServer;
}

export class FaultStack {
  readonly #dir: string;
  readonly #options: FaultStackOptions;
  #servers: FaultServers | undefined;
  readonly #processes: ServiceProcess[] = [];
  readonly #clients: Redis[] = [];

  constructor(folder: string, options: FaultStackOptions = {}) {
    this.#dir = join(ROOT, '.stack', 'faults', `${folder}-${process.pid}-${randomBytes(3).toString('hex')}`);
    this.#options = options;
  }

  /** Starts the three servers and migrates MySQL; on a failure stops those that did start. */
  async start(): Promise<void> {
    await mkdir(this.#dir, { recursive: true });
    const started = await Promise.allSettled([
      startRedis({ dir: join(this.#dir, 'redis'), appendonly: this.#options.redisAppendonly ?? false }),
      startMariadb({ dir: join(this.#dir, 'mariadb') }),
      startPostgres({ dir: join(this.#dir, 'postgres') }),
    ]);
    const servers = started.flatMap((outcome) => (outcome.status === 'fulfilled' ? [outcome.value] : []));
    const failed = started.find((outcome) => outcome.status === 'rejected');
    if (failed) {
      await Promise.allSettled(servers.map((server) => server.stop()));
      throw failed.reason;
    }
    const [redis, mariadb, postgres] = servers as [LocalServer, LocalServer, LocalServer];
    await migrateUp(mariadb.url);
    this.#servers = { redis, mysql: mariadb, postgres };
  }

  get redis(): LocalServer {
    return this.#started().redis;
  }

  get mysql(): LocalServer {
    return this.#started().mysql;
  }

  get postgres(): LocalServer {
    return this.#started().postgres;
  }

  /** REDIS_URL, MYSQL_URL, POSTGRES_URL of this stack plus what every spawned process needs */
  env(extra: Record<string, string> = {}): Record<string, string> {
    const { redis, mysql: mariadb, postgres } = this.#started();
    return {
      REDIS_URL: redis.url, MYSQL_URL: mariadb.url, POSTGRES_URL: postgres.url,
      ADMIN_TOKEN, LOG_LEVEL: 'warn', SHUTDOWN_DRAIN_MS: '0', ...extra,
    };
  }

  /** an api process; `cgroup` runs it inside that cgroup folder, as a container with a memory limit */
  async spawnApi(extra?: Record<string, string>, options: { cgroup?: string } = {}): Promise<ServiceProcess> {
    return this.#track(await startApi({ port: await freePort(), env: this.env(extra), ...options }));
  }

  async spawnWorker(extra?: Record<string, string>): Promise<ServiceProcess> {
    return this.#track(await startWorker({ port: await freePort(), env: this.env(extra) }));
  }

  /** Reads this stack's MySQL directly (a fresh connection each time, so it works across restarts). */
  readonly query = async <T = Record<string, unknown>>(sql: string, params: unknown[] = []): Promise<T[]> => {
    const connection = await mysql.createConnection({ uri: this.mysql.url, timezone: 'Z' });
    try {
      const [rows] = await connection.query(sql, params);
      return rows as T[];
    } finally {
      await connection.end();
    }
  };

  /** A plain Redis client on this stack, for inspecting streams and flushing; disconnected by stop(). */
  redisClient(): Redis {
    const client = new Redis(this.redis.url, { lazyConnect: false, maxRetriesPerRequest: 1, retryStrategy: () => 200 });
    client.on('error', () => undefined);
    this.#clients.push(client);
    return client;
  }

  /** SIGKILLs every api and worker spawned through this stack so far (between tests of one file). */
  async stopProcesses(): Promise<void> {
    await Promise.allSettled(this.#processes.splice(0).map((service) => service.stop('SIGKILL')));
  }

  /** Stops every process spawned through this stack, then the servers, and deletes the folder. */
  async stop(): Promise<void> {
    const servers = this.#servers;
    if (!servers) return;
    this.#servers = undefined;
    await this.stopProcesses();
    for (const client of this.#clients.splice(0)) client.disconnect();
    await Promise.allSettled([servers.redis.stop(), servers.mysql.stop(), servers.postgres.stop()]);
    await rm(this.#dir, { recursive: true, force: true });
  }

  #track(service: ServiceProcess): ServiceProcess {
    this.#processes.push(service);
    return service;
  }

  #started(): FaultServers {
    if (!this.#servers) throw new Error('the fault stack is used before start() or after stop()');
    return this.#servers;
  }
}
