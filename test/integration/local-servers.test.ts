/**
 * The throwaway-server starter behind `npm run stack` and this suite: data survives restarts and crashes,
 * stopped servers really stop, and reachable servers are reused instead of duplicated.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import mysql from 'mysql2/promise';
import {
  isReachable,
  startLocalStack,
  startMariadb,
  startPostgres,
  startRedis,
  type LocalServer,
} from '../../scripts/local-servers/index.ts';
import { startRedisCluster } from '../../scripts/local-servers/redis-cluster.ts';

let workDir: string;
const servers: LocalServer[] = [];

beforeAll(async () => {
  workDir = await mkdtemp(join(tmpdir(), 'coupon-local-servers-'));
});

afterAll(async () => {
  await Promise.allSettled(servers.map((s) => s.stop()));
  await rm(workDir, { recursive: true, force: true });
});

async function withRedis<T>(url: string, run: (redis: Redis) => Promise<T>): Promise<T> {
  const redis = new Redis(url, { maxRetriesPerRequest: 1, retryStrategy: () => null });
  try {
    return await run(redis);
  } finally {
    redis.disconnect();
  }
}

async function withMysql<T>(url: string, run: (db: mysql.Connection) => Promise<T>): Promise<T> {
  const db = await mysql.createConnection({ uri: url });
  try {
    return await run(db);
  } finally {
    await db.end();
  }
}

test('When an append-only Redis is SIGKILLed and started again, then a key written before the kill is still there', async () => {
  const redis = await startRedis({ dir: join(workDir, 'redis'), appendonly: true });
  servers.push(redis);
  const key = `survivor:${Date.now()}`;
  await withRedis(redis.url, (r) => r.set(key, 'still here'));

  await redis.kill();
  expect(await isReachable(redis.url)).toBe(false);
  await redis.start();

  expect(await withRedis(redis.url, (r) => r.get(key))).toBe('still here');
  await redis.stop();
});

test('When MariaDB is stopped and started again, then its database and table rows are kept, and it is unreachable while stopped', async () => {
  const mariadb = await startMariadb({ dir: join(workDir, 'mariadb'), database: 'kept_db' });
  servers.push(mariadb);
  expect(mariadb.url).toBe(`mysql://root@127.0.0.1:${mariadb.port}/kept_db`);
  await withMysql(mariadb.url, async (db) => {
    await db.query('CREATE TABLE kept (id INT PRIMARY KEY, note VARCHAR(20))');
    await db.query("INSERT INTO kept VALUES (1, 'one')");
  });

  await mariadb.stop();
  expect(await isReachable(mariadb.url)).toBe(false);
  await mariadb.stop(); // idempotent
  await mariadb.start();

  const [rows] = await withMysql(mariadb.url, (db) => db.query('SELECT id, note FROM kept'));
  expect(rows).toEqual([{ id: 1, note: 'one' }]);
  await mariadb.stop();
});

test('When PostgreSQL is SIGKILLed and started again, then it accepts connections to its database', async () => {
  const postgres = await startPostgres({ dir: join(workDir, 'postgres'), database: 'jobs_db' });
  servers.push(postgres);
  expect(postgres.url).toBe(`postgres://postgres@127.0.0.1:${postgres.port}/jobs_db`);

  await postgres.kill();
  expect(await isReachable(postgres.url)).toBe(false);
  await postgres.start();

  const pgModule: string = 'pg';
  const { default: pg } = await import(pgModule);
  const client = new pg.Client({ connectionString: postgres.url });
  await client.connect();
  const { rows } = await client.query('SELECT current_database() AS name');
  await client.end();
  expect(rows).toEqual([{ name: 'jobs_db' }]);
  await postgres.stop();
  expect(await isReachable(postgres.url)).toBe(false);
});

/** Each range of CLUSTER SLOTS as [first slot, last slot, the owner's host:port]. */
async function slotOwners(url: string): Promise<Array<[number, number, string]>> {
  const ranges = await withRedis(url, (r) => r.call('CLUSTER', 'SLOTS')) as Array<[number, number, [string, number]]>;
  return ranges.map(([first, last, [host, port]]) => [first, last, `${host}:${port}`]);
}

test('When a Redis Cluster of one primary is started, then it reports cluster_state:ok and owns all 16384 slots', async () => {
  const cluster = await startRedisCluster({ dir: join(workDir, 'cluster-1'), primaries: 1 });
  servers.push(...cluster.servers);
  const [node] = cluster.servers;

  expect(cluster.nodes).toEqual([`127.0.0.1:${node!.port}`]);
  const info = await withRedis(node!.url, (r) => r.call('CLUSTER', 'INFO')) as string;
  expect(info).toMatch(/cluster_state:ok/);
  expect(info).toMatch(/cluster_slots_assigned:16384/);
  expect(await slotOwners(node!.url)).toEqual([[0, 16383, cluster.nodes[0]]]);
  await cluster.stop();
});

test('When a Redis Cluster of two primaries is started, then each owns half of the slots and both nodes see it so', async () => {
  const cluster = await startRedisCluster({ dir: join(workDir, 'cluster-2'), primaries: 2 });
  servers.push(...cluster.servers);

  for (const node of cluster.servers) {
    expect(await withRedis(node.url, (r) => r.call('CLUSTER', 'INFO'))).toMatch(/cluster_state:ok/);
    expect(await slotOwners(node.url)).toEqual([[0, 8191, cluster.nodes[0]], [8192, 16383, cluster.nodes[1]]]);
  }
  await cluster.stop();
});

test('When replicas are asked of a Cluster of fewer than 3 primaries, then it is refused with the reason', async () => {
  await expect(startRedisCluster({ dir: join(workDir, 'cluster-refused'), primaries: 2, replicas: 1 })).rejects.toThrow(/replicas need 3 primaries or more/);
});

test('When every URL given is reachable, then the stack starts nothing and creates the databases the URLs name', async () => {
  const suffix = Math.random().toString(36).slice(2, 8);
  const withDatabase = (url: string, name: string) => Object.assign(new URL(url), { pathname: `/${name}` }).toString();
  const mysqlUrl = withDatabase(process.env.MYSQL_URL!, `reuse_${suffix}`);
  const postgresUrl = withDatabase(process.env.POSTGRES_URL!, `reuse_${suffix}`);

  const stack = await startLocalStack({ dir: join(workDir, 'stack'), redisUrl: process.env.REDIS_URL!, mysqlUrl, postgresUrl });

  expect(stack.started).toEqual([]);
  expect([stack.redisUrl, stack.mysqlUrl, stack.postgresUrl]).toEqual([process.env.REDIS_URL, mysqlUrl, postgresUrl]);
  const [rows] = await withMysql(mysqlUrl, (db) => db.query('SELECT DATABASE() AS name'));
  expect(rows).toEqual([{ name: `reuse_${suffix}` }]);
  await stack.stop();
  expect(await isReachable(process.env.MYSQL_URL!)).toBe(true);
});
