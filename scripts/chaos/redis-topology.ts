/**
 * The Redis side of a chaos topology, in either profile: a primary and its replica watched by one Sentinel, or a
 * 3-shard Cluster with a replica per shard. Both keep append-only files on, as the chart deploys them. A schedule's
 * Redis targets (`redis-primary`, `redis-replica`) mean the primary that serves its first event now and that
 * primary's replica: on a Cluster, the shard of that event's slot (which a `move` step changes).
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import calculateSlot from 'cluster-key-slot';
import { Redis } from 'ioredis';
import { type LocalServer, startRedis, startRedisSentinel } from '../local-servers/index.ts';
import { binary } from '../local-servers/processes.ts';
import { redisCommand } from '../local-servers/redis.ts';
import { assignSlotOn, inSync, migrateSlotKeys, startRedisCluster } from '../local-servers/redis-cluster.ts';

export const MASTER_NAME = 'coupon-chaos';
export type Profile = 'sentinel' | 'cluster';
const HOST = '127.0.0.1';
/** Sentinel's verdict on a silent primary: failover after this long */
const DOWN_AFTER_MS = 1_000;

export interface Roles {
  primary: LocalServer;
  replica: LocalServer;
}

export interface ChaosRedis {
  /** what the apis and workers are started with to reach it */
  readonly env: Record<string, string>;
  /** every Redis server (not the Sentinel) */
  readonly servers: LocalServer[];
  /** the key whose primary the Redis targets mean (a schedule's first event) */
  focus(key: string): void;
  roles(): Promise<Roles>;
  /** an operator's failover: the replica (of the focused shard) promoted, the old primary its replica */
  failover(): Promise<void>;
  /** what is not healthy yet, or undefined; may repair what only an operator would (a slot left half moved) */
  unhealthy(): Promise<string | undefined>;
  stop(): Promise<void>;
}

/** A primary and its replica (append-only files on), watched by one Sentinel (quorum 1, down after 1 s). */
export async function startSentinelRedis(dir: string): Promise<ChaosRedis> {
  const primary = await startRedis({ dir: join(dir, 'redis-a'), appendonly: true });
  const replica = await startRedis({ dir: join(dir, 'redis-b'), appendonly: true, replicaOf: { host: HOST, port: primary.port } });
  const servers = [primary, replica];
  const sentinel = await startRedisSentinel({
    dir: join(dir, 'sentinel'), masterName: MASTER_NAME, master: { host: HOST, port: primary.port }, downAfterMs: DOWN_AFTER_MS,
  });
  const client = new Redis({ host: HOST, port: sentinel.port, lazyConnect: false, maxRetriesPerRequest: 1 });
  const roles = async (): Promise<Roles> => {
    const address = (await client.call('SENTINEL', 'get-master-addr-by-name', MASTER_NAME)) as [string, string] | null;
    const now = servers.find((server) => server.port === Number(address?.[1])) ?? servers[0]!;
    return { primary: now, replica: servers.find((server) => server !== now)! };
  };
  return {
    env: { REDIS_URL: primary.url, REDIS_SENTINELS: `${HOST}:${sentinel.port}`, REDIS_SENTINEL_MASTER: MASTER_NAME },
    servers,
    focus: () => undefined,
    roles,
    async failover() {
      await client.call('SENTINEL', 'FAILOVER', MASTER_NAME).catch(() => undefined);
    },
    async unhealthy() {
      const { primary: now, replica: other } = await roles();
      const info = await redisCommand(now.port, 'INFO', 'replication');
      if (!info.includes('role:master')) return `Sentinel's primary (${now.port}) is not a primary`;
      if (!new RegExp(`slave0:ip=${HOST},port=${other.port},state=online`).test(info)) return `replica ${other.port} not online: ${info.replace(/\r?\n/g, ' ')}`;
      // And the replica says so too: a node that went on as a primary of its own (two primaries) is not healed.
      const own = await redisCommand(other.port, 'INFO', 'replication');
      if (!/^role:slave\r?$/m.test(own) || !new RegExp(`^master_port:${now.port}\\r?$`, 'm').test(own) || !/^master_link_status:up\r?$/m.test(own)) {
        return `replica ${other.port} does not follow ${now.port}: ${own.replace(/\r?\n/g, ' ')}`;
      }
      return undefined;
    },
    async stop() {
      client.disconnect();
      await sentinel.stop().catch(() => undefined);
      await Promise.allSettled(servers.map((server) => server.stop()));
    },
  };
}

/** One line of CLUSTER NODES. */
interface ClusterNode {
  id: string;
  port: number;
  master: boolean;
  failed: boolean;
  masterId: string;
  slots: Array<[number, number]>;
  /** a slot half moved ([slot->-id] or [slot-<-id]) */
  open: boolean;
}

function parseClusterNodes(text: string): ClusterNode[] {
  return text.trim().split('\n').map((line) => {
    const [id, address, flags, masterId, , , , , ...slots] = line.trim().split(' ');
    return {
      id: id!, port: Number(address!.split('@')[0]!.split(':')[1]), master: flags!.includes('master'), failed: /\bfail\b/.test(flags!),
      masterId: masterId!,
      slots: slots.filter((slot) => !slot.startsWith('[')).map((slot) => {
        const [first, last] = slot.split('-').map(Number);
        return [first!, last ?? first!] as [number, number];
      }),
      open: slots.some((slot) => slot.startsWith('[')),
    };
  });
}

/** A Redis Cluster of 3 primaries with a replica each (append-only files on, cluster-node-timeout 2 s). */
export async function startClusterRedis(dir: string): Promise<ChaosRedis> {
  const cluster = await startRedisCluster({ dir: join(dir, 'redis-cluster'), primaries: 3, replicas: 1, appendonly: true });
  const servers = cluster.servers;
  let slot = 0;
  /** the node table as a node that answers sees it */
  const nodes = async (): Promise<ClusterNode[]> => {
    let lastError: unknown;
    for (const server of servers) {
      try {
        return parseClusterNodes(await redisCommand(server.port, 'CLUSTER', 'NODES'));
      } catch (error) {
        lastError = error; // down or paused: ask the next
      }
    }
    throw lastError;
  };
  const serverOn = (port: number) => servers.find((server) => server.port === port)!;
  const roles = async (): Promise<Roles> => {
    const table = await nodes();
    const owner = table.find((node) => node.master && !node.failed && node.slots.some(([first, last]) => slot >= first && slot <= last))
      ?? table.find((node) => node.master && node.slots.some(([first, last]) => slot >= first && slot <= last));
    if (!owner) throw new Error(`no primary serves slot ${slot}`);
    const replica = table.find((node) => node.masterId === owner.id) ?? table.find((node) => !node.master && node.port !== owner.port)!;
    return { primary: serverOn(owner.port), replica: serverOn(replica.port) };
  };
  return {
    env: { REDIS_URL: `redis://${cluster.nodes[0]}`, REDIS_CLUSTER_NODES: cluster.nodes.join(',') },
    servers,
    focus(key) {
      slot = calculateSlot(key);
    },
    roles,
    async failover() {
      const { replica } = await roles();
      await redisCommand(replica.port, 'CLUSTER', 'FAILOVER').catch(() => undefined);
    },
    async unhealthy() {
      for (const server of servers) {
        if (!/cluster_state:ok/.test(await redisCommand(server.port, 'CLUSTER', 'INFO'))) return `node ${server.port}: cluster_state not ok`;
        if (!(await inSync(server.port))) return `replica ${server.port} not in sync`;
      }
      // Each node shows only its own half-moved slots: ask each. A move cut short (a node killed or cut off under
      // it) leaves its slot half moved, and an importing node takes no news of that slot's owner from its peers, so
      // this comes before the owners must agree: an operator runs the fix.
      const tables = await Promise.all(servers.map(async (server) => parseClusterNodes(await redisCommand(server.port, 'CLUSTER', 'NODES'))));
      const open = servers.filter((_, index) => tables[index]!.some((node) => node.open && node.port === servers[index]!.port));
      if (open.length > 0) {
        const fix = await clusterFix(open[0]!.port);
        return `a slot was left half moved on ${open.map((server) => server.port).join(', ')}; redis-cli --cluster fix said: ${fix.split('\n').slice(-6).join(' | ')}`;
      }
      // Every node must tell the same owner for every slot: a node that missed a move's last SETSLOT answers MOVED
      // to the one that has it, while that one's peers may still name the first.
      const views = tables.map((table, index) => {
        const view = table
          .filter((node) => node.master && node.slots.length > 0)
          .map((node) => `${node.port}:${node.slots.map(([first, last]) => `${first}-${last}`).join(',')}`)
          .sort().join(' ');
        return `${servers[index]!.port} sees ${view}`;
      });
      if (new Set(views.map((view) => view.replace(/^\d+ sees /, ''))).size > 1) return `the nodes disagree on the slots' owners: ${views.join('; ')}`;
      const table = tables[0]!;
      const owners = table.filter((node) => node.master && node.slots.length > 0);
      if (owners.length !== 3 || owners.some((owner) => !table.some((node) => node.masterId === owner.id && !node.failed))) {
        return `shards without a live replica: ${owners.map((owner) => owner.port).join(', ')}`;
      }
      return undefined;
    },
    async stop() {
      await cluster.stop();
    },
  };
}

/**
 * Moves the focused slot to another primary while traffic runs, as `redis-cli --cluster reshard` does: its keys
 * migrated one at a time `pauseMs` apart (requests meet the slot half moved and follow ASK), then the slot assigned.
 */
/**
 * `redis-cli --cluster fix`, answering yes to whatever it asks: --cluster-yes does not answer every question (a slot
 * left with no owner whose keys are on one node still asks whether to give it to that node: a CI trial's heal waited
 * on that prompt for 90 s). Its output, for the heal's report.
 */
export function clusterFix(port: number): Promise<string> {
  return new Promise((resolve) => {
    const child = execFile(binary('redis-cli'), ['--cluster', 'fix', `${HOST}:${port}`, '--cluster-yes'], { timeout: 30_000 },
      (error, stdout) => resolve(stdout || (error?.message ?? '')));
    child.stdin?.end('yes\n'.repeat(16));
  });
}

export async function moveSlot(redis: ChaosRedis, key: string, pauseMs: number): Promise<void> {
  const slot = calculateSlot(key);
  const table = parseClusterNodes(await redisCommand((await redis.roles()).primary.port, 'CLUSTER', 'NODES'));
  const owners = table.filter((node) => node.master && !node.failed && node.slots.length > 0);
  const from = owners.find((node) => node.slots.some(([first, last]) => slot >= first && slot <= last));
  const to = owners.find((node) => node !== from);
  if (!from || !to) return;
  const clients = owners.map((node) => new Redis({ host: HOST, port: node.port, lazyConnect: true, maxRetriesPerRequest: 0 }));
  try {
    await Promise.all(clients.map((client) => client.connect()));
    const clientOf = (node: ClusterNode) => clients[owners.indexOf(node)]!;
    await migrateSlotKeys(slot, clientOf(from), clientOf(to), pauseMs);
    await assignSlotOn(clients, slot, clientOf(from), clientOf(to));
  } finally {
    for (const client of clients) client.disconnect();
  }
}
