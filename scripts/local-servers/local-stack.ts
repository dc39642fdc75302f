/** Redis, MySQL and PostgreSQL for the app together: reachable servers reused, throwaway ones started for the rest. */
import { join, resolve } from 'node:path';
import { databaseName, isReachable } from './addresses.ts';
import { claimDir, endLeftover, releaseDir } from './leftovers.ts';
import type { LocalServer } from './managed-server.ts';
import { MARIADB_PROCESS, ensureMysqlDatabase, startMariadb } from './mariadb.ts';
import { POSTGRES_PROCESS, ensurePostgresDatabase, startPostgres } from './postgres.ts';
import { REDIS_PROCESS, startRedis } from './redis.ts';
import { SENTINEL_PROCESS } from './sentinel.ts';

export interface LocalStack {
  redisUrl: string;
  mysqlUrl: string;
  postgresUrl: string;
  /** Only the servers this stack started; stop() stops exactly these. */
  started: LocalServer[];
  stop(): Promise<void>;
}

export const DEFAULT_STACK_PORTS: Readonly<{ redis: number; mysql: number; postgres: number }> = Object.freeze({
  redis: 16379,
  mysql: 13306,
  postgres: 15432,
});

/**
 * Redis, MySQL and PostgreSQL for the app: each given URL (or REDIS_URL / MYSQL_URL / POSTGRES_URL) that is
 * reachable is reused, with its database created if missing; for the others a throwaway server is started under
 * opts.dir/<kind> on opts.ports (default 16379, 13306, 15432).
 */
export async function startLocalStack(opts: {
  dir: string;
  redisUrl?: string;
  mysqlUrl?: string;
  postgresUrl?: string;
  ports?: { redis: number; mysql: number; postgres: number };
}): Promise<LocalStack> {
  const dir = resolve(opts.dir);
  const ports = opts.ports ?? DEFAULT_STACK_PORTS;
  const given = {
    redis: opts.redisUrl ?? process.env.REDIS_URL,
    mysql: opts.mysqlUrl ?? process.env.MYSQL_URL,
    postgres: opts.postgresUrl ?? process.env.POSTGRES_URL,
  };
  const outcomes = await Promise.allSettled([
    provide(given.redis, undefined, () => startRedis({ dir: join(dir, 'redis'), port: ports.redis })),
    provide(given.mysql, ensureMysqlDatabase, () =>
      startMariadb({ dir: join(dir, 'mariadb'), port: ports.mysql, database: databaseName(given.mysql) })),
    provide(given.postgres, ensurePostgresDatabase, () =>
      startPostgres({ dir: join(dir, 'postgres'), port: ports.postgres, database: databaseName(given.postgres) })),
  ]);
  const started = outcomes.flatMap((o) => (o.status === 'fulfilled' && o.value.server ? [o.value.server] : []));
  const stopStarted = async () => {
    const results = await Promise.allSettled(started.map((s) => s.stop()));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  };
  const failure = outcomes.find((o) => o.status === 'rejected');
  if (failure) {
    await stopStarted().catch(() => {});
    throw failure.reason;
  }
  const [redis, mysqlResult, postgres] = outcomes.map((o) => (o as PromiseFulfilledResult<Provided>).value.url);
  let stopping: Promise<void> | undefined;
  return {
    redisUrl: redis!,
    mysqlUrl: mysqlResult!,
    postgresUrl: postgres!,
    started,
    stop: () => (stopping ??= stopStarted()),
  };
}

/**
 * Ends a server that an earlier, now dead process started in dir (found through the pid file it left) and
 * releases dir. Throws if the process that started it is still alive.
 */
export async function stopLeftoverServer(dir: string): Promise<void> {
  await claimDir(dir, 'server');
  for (const server of [REDIS_PROCESS, SENTINEL_PROCESS, MARIADB_PROCESS, POSTGRES_PROCESS]) await endLeftover(dir, server);
  await releaseDir(dir);
}

interface Provided {
  url: string;
  server?: LocalServer;
}

async function provide(
  url: string | undefined,
  ensureDatabase: ((url: string) => Promise<void>) | undefined,
  startThrowaway: () => Promise<LocalServer>,
): Promise<Provided> {
  if (url && (await isReachable(url))) {
    await ensureDatabase?.(url);
    return { url };
  }
  const server = await startThrowaway();
  return { url: server.url, server };
}
