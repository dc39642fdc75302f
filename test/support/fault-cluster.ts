/**
 * A Redis Cluster with a replica per primary (3 + 3 servers) for a fault test file, beside its fault stack's own
 * MySQL and PostgreSQL: started before the file's tests, each test starting its own 2 apis and 2 workers on it,
 * their output and the servers' logs kept after each test under .stack/faults/logs/<folder>-<test>.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LocalServer } from '../../scripts/local-servers/index.ts';
import { type LocalRedisCluster, startRedisCluster } from '../../scripts/local-servers/redis-cluster.ts';
import { redisCommand } from '../../scripts/local-servers/redis.ts';
import type { ServiceProcess } from '../../scripts/services.ts';
import type { CouponRedis } from '../../src/redis/client.ts';
import type { FaultStack } from './fault-stack.ts';
import { keepLogs } from './observe.ts';
import { clusterClient, ready } from './redis-cluster.ts';

export interface FaultCluster {
  readonly cluster: LocalRedisCluster;
  /** a Cluster client of the test's own, as the service builds it */
  readonly client: CouponRedis & { slots: string[][] };
  readonly apis: ServiceProcess[];
  readonly workers: ServiceProcess[];
  /** Starts this test's 2 apis and 2 workers with the file's environment and `extra` (describeFault kills them after it). */
  startServices(extra?: Record<string, string>): Promise<void>;
  /** The server of a node named host:port. */
  serverOf(node: string): LocalServer;
  /** The server that replicates `primary`. */
  replicaOf(primary: LocalServer): Promise<LocalServer>;
}

/**
 * Call inside describeFault's body. `env`: what every api and worker of the file runs with, beside the Cluster's
 * REDIS_URL and REDIS_CLUSTER_NODES. `logName` names each test's log folder from its full name.
 */
export function useFaultCluster(
  stack: FaultStack, folder: string, env: Record<string, string>, logName: (testName: string) => string,
): FaultCluster {
  let dir: string | undefined;
  const self = { apis: [] as ServiceProcess[], workers: [] as ServiceProcess[] } as FaultCluster & {
    cluster: LocalRedisCluster; client: FaultCluster['client']; apis: ServiceProcess[]; workers: ServiceProcess[]; env: Record<string, string>;
  };
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), `coupon-${folder}-`));
    self.cluster = await startRedisCluster({ dir, replicas: 1 });
    const clusterEnv = { REDIS_URL: `redis://${self.cluster.nodes[0]}`, REDIS_CLUSTER_NODES: self.cluster.nodes.join(',') };
    self.client = clusterClient(clusterEnv) as FaultCluster['client'];
    await ready(self.client);
    self.env = { ...clusterEnv, ...env };
  }, 120_000);
  afterEach(async () => {
    await keepLogs(`${folder}-${logName(expect.getState().currentTestName ?? '')}`, [
      ...self.apis.map((api, i): [string, ServiceProcess] => [`api-${i}`, api]),
      ...self.workers.map((worker, i): [string, ServiceProcess] => [`worker-${i}`, worker]),
      ...self.cluster.servers.map((server): [string, LocalServer] => [`redis-${server.port}`, server]),
    ]);
  });
  // Before describeFault stops the stack's servers.
  afterAll(async () => {
    await stack.stopProcesses();
    self.client?.disconnect();
    await self.cluster?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  self.startServices = async (extra = {}) => {
    const processEnv = { ...self.env, ...extra };
    self.apis = [await stack.spawnApi(processEnv), await stack.spawnApi(processEnv)];
    self.workers = [await stack.spawnWorker(processEnv), await stack.spawnWorker(processEnv)];
  };
  self.serverOf = (node) => self.cluster.servers.find((server) => `127.0.0.1:${server.port}` === node)!;
  self.replicaOf = async (primary) => {
    for (const server of self.cluster.servers) {
      if (new RegExp(`master_port:${primary.port}\\b`).test(await redisCommand(server.port, 'INFO', 'replication'))) return server;
    }
    throw new Error(`no replica of ${primary.port}`);
  };
  return self;
}
