/**
 * A throwaway Redis Cluster on loopback: `primaries` cluster-enabled servers (each with its cluster bus on
 * port + 10000), and `replicas` more per primary, joined and given every slot by `redis-cli --cluster create`,
 * ready once every node reports cluster_state:ok and every replica is in sync. `redis-cli --cluster create` wants
 * 3 primaries or more: 1 or 2 primaries (without replicas) are given the slots here instead. The service reaches
 * it through REDIS_CLUSTER_NODES (`npm run stack -- --cluster`, the Cluster tests, the Cluster capacity bench).
 */
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { Redis } from 'ioredis';
import { HOST, freePort } from './addresses.ts';
import type { LocalServer } from './managed-server.ts';
import { binary } from './processes.ts';
import { redisCommand, startRedis } from './redis.ts';

export interface LocalRedisCluster {
  /** the seed nodes, host:port, as REDIS_CLUSTER_NODES takes them */
  readonly nodes: string[];
  readonly servers: LocalServer[];
  stop(): Promise<void>;
}

/** A free port whose cluster bus port (port + 10000) is free too. */
async function clusterPort(): Promise<number> {
  for (;;) {
    const port = await freePort();
    if (port + 10_000 <= 65_535 && (await isFree(port + 10_000))) return port;
  }
}

/** A primary, or a replica whose link to its primary is up. */
export async function inSync(port: number): Promise<boolean> {
  const replication = await redisCommand(port, 'INFO', 'replication');
  return /role:master/.test(replication) || /master_link_status:up/.test(replication);
}

async function isFree(port: number): Promise<boolean> {
  const { createServer } = await import('node:net');
  return new Promise((resolve) => {
    const server = createServer();
    server.once('error', () => resolve(false));
    server.listen(port, HOST, () => server.close(() => resolve(true)));
  });
}

/**
 * What `redis-cli --cluster create` does for fewer than 3 primaries: each node its own config epoch (no collision
 * to settle), an even share of the 16384 slots in one range, and the first node meeting the others.
 */
async function assignSlots(ports: number[]): Promise<void> {
  for (const [i, port] of ports.entries()) {
    const first = Math.floor((i * 16_384) / ports.length);
    const last = Math.floor(((i + 1) * 16_384) / ports.length) - 1;
    await redisCommand(port, 'CLUSTER', 'SET-CONFIG-EPOCH', String(i + 1));
    await redisCommand(port, 'CLUSTER', 'ADDSLOTSRANGE', String(first), String(last));
  }
  for (const port of ports.slice(1)) await redisCommand(ports[0]!, 'CLUSTER', 'MEET', HOST, String(port));
}

export async function startRedisCluster(opts: { dir: string; primaries?: number; replicas?: number; appendonly?: boolean }): Promise<LocalRedisCluster> {
  const replicas = opts.replicas ?? 0;
  const primaries = opts.primaries ?? 3;
  if (!Number.isInteger(primaries) || primaries < 1) throw new Error(`redis cluster: primaries must be a whole number of 1 or more, not ${primaries}`);
  if (primaries < 3 && replicas > 0) {
    throw new Error(`redis cluster: replicas need 3 primaries or more (redis-cli --cluster create); asked for ${primaries} primaries with ${replicas} replicas each`);
  }
  const count = primaries * (1 + replicas);
  const servers: LocalServer[] = [];
  try {
    for (let i = 0; i < count; i += 1) {
      servers.push(await startRedis({ dir: join(opts.dir, `node-${i}`), port: await clusterPort(), cluster: true, appendonly: opts.appendonly }));
    }
    const nodes = servers.map((server) => `${HOST}:${server.port}`);
    const info = await redisCommand(servers[0]!.port, 'CLUSTER', 'INFO');
    // A data dir used before keeps its node table: the cluster is formed already.
    if (!/cluster_slots_assigned:16384/.test(info)) {
      if (primaries >= 3) {
        await promisify(execFile)(binary('redis-cli'), ['--cluster', 'create', ...nodes, '--cluster-replicas', String(replicas), '--cluster-yes'], { timeout: 30_000 });
      } else {
        await assignSlots(servers.map((server) => server.port));
      }
    }
    const deadline = Date.now() + 30_000;
    for (const server of servers) {
      while (!/cluster_state:ok/.test(await redisCommand(server.port, 'CLUSTER', 'INFO')) || !(await inSync(server.port))) {
        if (Date.now() > deadline) throw new Error(`redis cluster: node ${server.port} not ok within 30 s`);
        await sleep(100);
      }
    }
    return { nodes, servers, stop: async () => { await Promise.all(servers.map((server) => server.stop())); } };
  } catch (error) {
    await Promise.allSettled(servers.map((server) => server.stop()));
    throw error;
  }
}

/**
 * The first part of a move: the target IMPORTING, the source MIGRATING, every key MIGRATEd (`pauseMs` apart). The
 * slot is still the source's: it answers ASK for the moved keys, and clients follow to the target. Returns how many
 * keys moved.
 */
export async function migrateSlotKeys(slot: number, from: Redis, to: Redis, pauseMs: number): Promise<number> {
  const [fromId, toId] = await Promise.all([from.call('CLUSTER', 'MYID'), to.call('CLUSTER', 'MYID')]) as [string, string];
  await to.call('CLUSTER', 'SETSLOT', slot, 'IMPORTING', fromId);
  await from.call('CLUSTER', 'SETSLOT', slot, 'MIGRATING', toId);
  let keys = 0;
  for (;;) {
    const batch = (await from.call('CLUSTER', 'GETKEYSINSLOT', slot, 1)) as string[];
    if (batch.length === 0) break;
    await from.call('MIGRATE', String(to.options.host), String(to.options.port), '', 0, 5_000, 'KEYS', ...batch);
    keys += batch.length;
    await sleep(pauseMs);
  }
  return keys;
}

/** The last part of a move: the slot assigned to the target, on it, on the source and on every other primary. */
export async function assignSlotOn(primaries: Redis[], slot: number, from: Redis, to: Redis): Promise<void> {
  const toId = (await to.call('CLUSTER', 'MYID')) as string;
  await to.call('CLUSTER', 'SETSLOT', slot, 'NODE', toId);
  await from.call('CLUSTER', 'SETSLOT', slot, 'NODE', toId);
  for (const node of primaries) if (node !== from && node !== to) await node.call('CLUSTER', 'SETSLOT', slot, 'NODE', toId);
}
