/**
 * A throwaway Redis Cluster on loopback: `primaries` cluster-enabled servers (each with its cluster bus on
 * port + 10000), and `replicas` more per primary, joined and given every slot by `redis-cli --cluster create`,
 * ready once every node reports cluster_state:ok and every replica is in sync. The service reaches it through
 * REDIS_CLUSTER_NODES (`npm run stack -- --cluster`, the Cluster tests).
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

export async function startRedisCluster(opts: { dir: string; primaries?: number; replicas?: number }): Promise<LocalRedisCluster> {
  const replicas = opts.replicas ?? 0;
  const count = (opts.primaries ?? 3) * (1 + replicas);
  const servers: LocalServer[] = [];
  try {
    for (let i = 0; i < count; i += 1) {
      servers.push(await startRedis({ dir: join(opts.dir, `node-${i}`), port: await clusterPort(), cluster: true }));
    }
    const nodes = servers.map((server) => `${HOST}:${server.port}`);
    const info = await redisCommand(servers[0]!.port, 'CLUSTER', 'INFO');
    // A data dir used before keeps its node table: the cluster is formed already.
    if (!/cluster_slots_assigned:16384/.test(info)) {
      await promisify(execFile)(binary('redis-cli'), ['--cluster', 'create', ...nodes, '--cluster-replicas', String(replicas), '--cluster-yes'], { timeout: 30_000 });
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
