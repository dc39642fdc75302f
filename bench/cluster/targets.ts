/**
 * The three Redis targets and what runs on them: a client per target and per node, the api processes of each
 * target (and hello-world) at a process count, and the open events the load is sent to.
 */
import { once } from 'node:events';
import { join } from 'node:path';
import type { LocalServer } from '../../scripts/local-servers/index.ts';
import { freePort } from '../../scripts/local-servers/index.ts';
import { type ServiceProcess, startApi, startService } from '../../scripts/services.ts';
import { type CouponRedis, createRedis, serverIdentity } from '../../src/redis/client.ts';
import { eventKeys } from '../../src/redis/keys.ts';
import { markerKeyOf, nodeName, primaries, primaryOf } from '../../src/redis/topology.ts';
import { pidFromFile } from '../layout.ts';
import type { Running } from '../processes.ts';
import type { Node } from './nodes.ts';
import { CLUSTER_CASES, type ClusterBenchSettings, type ClusterCase, REDIS_TARGETS, type RedisTargetName } from './report.ts';

/** One Redis target: the service's environment on it (REDIS_URL, REDIS_CLUSTER_NODES) and its servers. */
export interface RedisTargetSetup {
  env: Record<string, string>;
  servers: LocalServer[];
}

export interface ClusterBenchContext {
  /** MYSQL_URL, POSTGRES_URL, ADMIN_TOKEN and the rest of the api's and worker's environment, Redis aside */
  env: Record<string, string>;
  targets: Record<RedisTargetName, RedisTargetSetup>;
  workDir: string;
  running: Running;
  log(message: string): void;
}

/** A target as the phases use it: its clients, its nodes, and its open events (set by createEvents). */
export interface Target {
  name: RedisTargetName;
  env: Record<string, string>;
  /** a client of the target as the service builds it (a Cluster client on a Cluster), auto-pipelined */
  client: CouponRedis;
  nodes: Node[];
  events: string[];
}

/**
 * A client per target and per node, and every shard's state marker written: the one MariaDB serves all three
 * targets, and an api finding a shard unmarked would restore every event of MySQL (the other targets' too) into it.
 */
export async function connectTargets(ctx: ClusterBenchContext): Promise<Map<RedisTargetName, Target>> {
  const targets = new Map<RedisTargetName, Target>();
  for (const name of REDIS_TARGETS) {
    const { env, servers } = ctx.targets[name];
    const client = env.REDIS_CLUSTER_NODES
      ? createRedis({ kind: 'cluster', url: env.REDIS_URL!, nodes: env.REDIS_CLUSTER_NODES.split(',').map(hostPort) }, { autoPipelining: true })
      : createRedis(env.REDIS_URL!, { autoPipelining: true });
    if (client.status !== 'ready') await once(client, 'ready');
    for (const node of primaries(client)) await node.set(markerKeyOf(client, node)!, await serverIdentity(node));
    const nodes = servers.map((server) => ({
      target: name, name: `127.0.0.1:${server.port}`, port: server.port, pid: pidFromFile(join(server.dir, 'redis.pid')), client: createRedis(server.url),
    }));
    targets.set(name, { name, env, client, nodes, events: [] });
  }
  return targets;
}

const hostPort = (node: string) => ({ host: node.split(':')[0]!, port: Number(node.split(':')[1]) });

/** api processes per target, and hello-world, `count` of each; the first api of each target serves the admin calls. */
export async function startServers(ctx: ClusterBenchContext, targets: Map<RedisTargetName, Target>, count: number): Promise<Map<ClusterCase, ServiceProcess[]>> {
  const servers = new Map<ClusterCase, ServiceProcess[]>();
  const env = { ...ctx.env, LOG_LEVEL: 'warn' };
  for (const kase of CLUSTER_CASES) {
    const processes: ServiceProcess[] = [];
    servers.set(kase, processes);
    for (let i = 0; i < count; i += 1) {
      const port = await freePort();
      processes.push(await ctx.running.track(kase === 'hello'
        ? startService('hello', 'bench/servers/hello.ts', { port, env })
        : startApi({ port, env: { ...env, ...targets.get(kase)!.env } })));
    }
  }
  return servers;
}

/** A POST with a JSON body; with an admin token, any answer but 2xx throws. */
export async function post(url: string, path: string, body: unknown, adminToken?: string): Promise<Response> {
  const response = await fetch(`${url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(adminToken && { authorization: `Bearer ${adminToken}` }) },
    body: JSON.stringify(body),
  });
  if (response.status >= 300 && adminToken) throw new Error(`POST ${path}: ${response.status} ${await response.text()}`);
  return response;
}

/** New event ids, `perNode` owned by each primary of the target (any id on a single server). */
function eventIdsPerNode(target: Target, prefix: string, perNode: number): string[] {
  const byNode = new Map<string, string[]>(primaries(target.client).map((node) => [nodeName(node), []]));
  for (let i = 0; [...byNode.values()].some((ids) => ids.length < perNode); i += 1) {
    const id = `${prefix}-${i}`;
    const ids = byNode.get(nodeName(primaryOf(target.client, eventKeys(id).meta)!));
    if (ids && ids.length < perNode) ids.push(id);
  }
  return [...byNode.values()].flat();
}

/** Open events of 10,000,000 coupons: `eventsPerTarget` on each target, spread evenly over its shards. */
export async function createEvents(
  ctx: ClusterBenchContext, targets: Map<RedisTargetName, Target>, servers: Map<ClusterCase, ServiceProcess[]>,
  settings: ClusterBenchSettings, runId: string,
): Promise<void> {
  for (const target of targets.values()) {
    const shards = primaries(target.client).length;
    target.events = eventIdsPerNode(target, `cap-${target.name}-${runId}`, Math.ceil(settings.eventsPerTarget / shards));
    const api = servers.get(target.name)![0]!.url;
    for (const id of target.events) await post(api, '/v1/events', { id, name: `capacity ${target.name}`, totalQuantity: 10_000_000 }, ctx.env.ADMIN_TOKEN);
    ctx.log(`${target.name}: events ${target.events.join(', ')}`);
  }
}

/** The cases in the order of round r: each round starts one further along, so no case always follows another. */
export function rotate<T>(items: readonly T[], r: number): T[] {
  const k = (r - 1) % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}
