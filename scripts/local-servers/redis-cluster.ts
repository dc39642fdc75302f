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

export async function startRedisCluster(opts: { dir: string; primaries?: number; replicas?: number }): Promise<LocalRedisCluster> {
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
      servers.push(await startRedis({ dir: join(opts.dir, `node-${i}`), port: await clusterPort(), cluster: true }));
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
