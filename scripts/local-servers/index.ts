/**
 * Throwaway Redis, MariaDB (the local MySQL stand-in) and PostgreSQL servers built from the machine's Debian
 * packages, for `npm run stack`, the test suite, the benchmark and CI. One file per server (redis.ts with its
 * replicas, sentinel.ts, mariadb.ts, postgres.ts) over one managed-server core (managed-server.ts, leftovers.ts,
 * processes.ts, addresses.ts); local-stack.ts puts the three the app needs together.
 *
 * What must hold:
 * - Every server binds 127.0.0.1 only and keeps its data, log and pid files under one folder; a folder that
 *   was initialised before is reused as it is.
 * - Each server runs as a detached child (its own process group): a jest worker exiting or a Ctrl-C in the
 *   terminal does not take it down; whoever started it stops it. If that process exits without stopping it,
 *   an exit hook asks the server to shut down, and the next start() on the same folder ends a server left
 *   behind by a process that died harder than that.
 * - start() resolves only once a real client round trip succeeds; every wait is time-boxed and fails with
 *   the server's name and the tail of its log.
 *
 * Importing this module has no side effects.
 */
export { freePort, isReachable } from './addresses.ts';
export { type LocalStack, DEFAULT_STACK_PORTS, startLocalStack, stopLeftoverServer } from './local-stack.ts';
export type { LocalServer, ServerKind } from './managed-server.ts';
export { startMariadb } from './mariadb.ts';
export { ensurePostgresDatabase, startPostgres } from './postgres.ts';
export { isAlive } from './processes.ts';
export { startRedis } from './redis.ts';
export { startRedisSentinel } from './sentinel.ts';
