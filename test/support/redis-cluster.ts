/** A Redis Cluster of a test's own, and the service's environment to run on it. */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import calculateSlot from 'cluster-key-slot';
import type { Redis } from 'ioredis';
import { type LocalRedisCluster, assignSlotOn, migrateSlotKeys, startRedisCluster } from '../../scripts/local-servers/redis-cluster.ts';
import { type CouponRedis, createRedis, serverIdentity } from '../../src/redis/client.ts';
import { eventKeys } from '../../src/redis/keys.ts';
import { markerKeyOf, primaries } from '../../src/redis/topology.ts';
import { type ServiceProcess, closePool, spawnApi, spawnWorker, uniqueEventId } from './harness.ts';

export interface OwnRedisCluster {
  readonly cluster: LocalRedisCluster;
  /** REDIS_URL (credentials only) and REDIS_CLUSTER_NODES, for spawnApi/spawnWorker */
  readonly env: { REDIS_URL: string; REDIS_CLUSTER_NODES: string };
  /** a Cluster client, as the service builds it */
  readonly client: CouponRedis;
  stop(): Promise<void>;
}

/**
 * A 3-primary Cluster in a fresh folder. Every shard is marked as compared with MySQL, as startOwnRedis does for a
 * single server: its processes must not restore (and fence) every event of the suite's shared MySQL.
 */
export async function startOwnRedisCluster(name: string, options: { replicas?: number } = {}): Promise<OwnRedisCluster> {
  const dir = await mkdtemp(join(tmpdir(), `coupon-${name}-`));
  const cluster = await startRedisCluster({ dir, ...options });
  const env = { REDIS_URL: `redis://${cluster.nodes[0]}`, REDIS_CLUSTER_NODES: cluster.nodes.join(',') };
  const client = clusterClient(env);
  await ready(client);
  for (const node of primaries(client)) await node.set(markerKeyOf(client, node)!, await serverIdentity(node));
  return {
    cluster, env, client,
    stop: async () => {
      client.disconnect();
      await cluster.stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** What useClusterServices gives a test file: its Cluster, and 2 apis and 2 workers on it. */
export interface ClusterServices {
  own: OwnRedisCluster;
  apis: ServiceProcess[];
  workers: ServiceProcess[];
}

/**
 * A Cluster of the test file's own (startOwnRedisCluster) with 2 apis and 2 workers on it, started before the
 * file's tests and stopped after them; the fields are set once beforeAll has run.
 */
export function useClusterServices(name: string): ClusterServices {
  const services = {} as ClusterServices;
  beforeAll(async () => {
    services.own = await startOwnRedisCluster(name);
    services.apis = await Promise.all([spawnApi(services.own.env), spawnApi(services.own.env)]);
    services.workers = await Promise.all([spawnWorker(services.own.env), spawnWorker(services.own.env)]);
  }, 90_000);
  afterAll(async () => {
    await Promise.all([...(services.apis ?? []), ...(services.workers ?? [])].map((process) => process.stop()));
    await services.own?.stop();
    await closePool();
  });
  return services;
}

export function clusterClient(env: { REDIS_URL: string; REDIS_CLUSTER_NODES: string }): CouponRedis {
  const nodes = env.REDIS_CLUSTER_NODES.split(',').map((node) => ({ host: node.split(':')[0]!, port: Number(node.split(':')[1]) }));
  return createRedis({ kind: 'cluster', url: env.REDIS_URL, nodes });
}

export async function ready(client: CouponRedis): Promise<void> {
  if (client.status !== 'ready') await new Promise((resolve) => client.once('ready', resolve));
}

/** The primary (host:port) that owns the slot of an event's keys. */
export function ownerOf(client: CouponRedis & { slots?: string[][] }, eventId: string): string {
  return String(client.slots?.[calculateSlot(eventKeys(eventId).meta)]?.[0]);
}

/** New event ids, `perShard` on each primary of the Cluster. */
export function eventIdsOnEveryShard(client: CouponRedis & { slots?: string[][] }, prefix: string, perShard: number): string[] {
  const byOwner = new Map<string, string[]>(primaries(client).map((node) => [`${node.options.host}:${node.options.port}`, []]));
  while ([...byOwner.values()].some((ids) => ids.length < perShard)) {
    const eventId = uniqueEventId(prefix);
    const ids = byOwner.get(ownerOf(client, eventId));
    if (ids && ids.length < perShard) ids.push(eventId);
  }
  return [...byOwner.values()].flat();
}

export { migrateSlotKeys };

/** What moving one slot took. */
export interface SlotMove {
  keys: number;
  startedAt: number;
  endedAt: number;
}

/**
 * Moves one slot from one primary to another as `redis-cli --cluster reshard` does: the target IMPORTING, the
 * source MIGRATING, its keys MIGRATEd one at a time (`pauseMs` apart, so that traffic meets the slot half moved),
 * then the slot assigned to the target on both and on every other primary.
 */
export async function moveSlot(client: CouponRedis, slot: number, from: Redis, to: Redis, pauseMs: number): Promise<SlotMove> {
  const startedAt = Date.now();
  const keys = await migrateSlotKeys(slot, from, to, pauseMs);
  await assignSlot(client, slot, from, to);
  return { keys, startedAt, endedAt: Date.now() };
}

/** The last part of a move (see assignSlotOn), on every primary of the client's slot map. */
export const assignSlot = (client: CouponRedis, slot: number, from: Redis, to: Redis): Promise<void> => assignSlotOn(primaries(client), slot, from, to);
