/**
 * The Redis Cluster capacity bench (`npm run bench -- --cluster`, docs/bench/cluster.md): what one shard carries,
 * what a Cluster of K shards carries, and what this machine can show of it. Three Redis targets in one run, each
 * with its own api processes on the same MariaDB: a standalone server (REDIS_URL only), a 1-primary Cluster and
 * a 3-primary Cluster (REDIS_CLUSTER_NODES), every target with `eventsPerTarget` open events (on the 3-shard
 * Cluster spread evenly over the shards), and Koa hello-world as the in-run baseline. The phases:
 *   memory  MEMORY USAGE of an event's keys on a Cluster shard: just created, after N coupons (the outbox full),
 *           and after a worker persisted them (the outbox trimmed): bytes per event and per coupon
 *   idle    each Redis node's CPU while nothing is sent (a Cluster node gossips on its bus)
 *   gate    the gate script driven by redis-benchmark, so that Redis, not the client, runs out: its Redis CPU
 *           per call at two pipeline depths, and the calls/s one core of Redis takes; the 3 shards once on one
 *           core and once on both
 *   api     wrk through the api (1 and 2 processes), one wrk per api process and event path, rounds interleaving
 *           the cases (their order rotated per round); req/s, p99, the api's CPU per request, each Redis node's
 *           CPU per gate call and how busy it was. One process is pinned as in the hot-path bench (the api on the
 *           last core; wrk and every Redis node on core 0); two run unpinned.
 * Redis CPU is the server's own account (INFO cpu, user + system, µs); gate calls and their in-script time come
 * from INFO commandstats (EVALSHA + EVAL). Each ratio is taken within a round and the median over rounds reported.
 * The capacity model (capacityModel) turns the measured costs into shards, events and requests per second.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { LocalServer } from '../scripts/local-servers/index.ts';
import { freePort, startRedis } from '../scripts/local-servers/index.ts';
import { binary } from '../scripts/local-servers/processes.ts';
import { redisCommand } from '../scripts/local-servers/redis.ts';
import { type ServiceProcess, cpuTimeMs, startApi, startService, startWorker } from '../scripts/services.ts';
import { type CouponRedis, createRedis, serverIdentity } from '../src/redis/client.ts';
import { eventKeys } from '../src/redis/keys.ts';
import { markerKeyOf, nodeName, primaries, primaryOf } from '../src/redis/topology.ts';
import { type HotPathContext, pinServer, wrkBurst } from './hot-path.ts';
import { pidFromFile, pinTo } from './layout.ts';
import type { MachineFacts } from './machine.ts';
import type { Running } from './processes.ts';
import { percentile, round } from './stats.ts';

export const REDIS_TARGETS = ['standalone', 'cluster-1', 'cluster-3'] as const;
export type RedisTargetName = (typeof REDIS_TARGETS)[number];
export const CLUSTER_CASES = ['hello', ...REDIS_TARGETS] as const;
export type ClusterCase = (typeof CLUSTER_CASES)[number];

export interface ClusterBenchSettings {
  /** interleaved rounds of the api phase, and its seconds of load per case and round */
  rounds: number;
  seconds: number;
  /** wrk connections in all, split over the api processes and event paths */
  connections: number;
  processCounts: number[];
  /** open events per target, spread over the shards of the 3-shard Cluster */
  eventsPerTarget: number;
  /**
   * The direct gate phase: interleaved rounds, seconds per variant and round, redis-benchmark connections per
   * target (split over its events), and the pipeline depths (the first one also runs the 3 shards on both cores)
   */
  gateRounds: number;
  gateSeconds: number;
  gateConnections: number;
  gatePipelines: number[];
  /** coupons issued per event of the memory phase, and how many such events */
  memoryCoupons: number;
  memoryEvents: number;
}

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

/** What one Redis node did during a measured window. */
export interface NodeWindow {
  node: string;
  gateCalls: number;
  /** the server's CPU time (user + system) per gate call, µs: everything, I/O and the Cluster's slot checks included */
  cpuUsPerCall: number;
  /**
   * the time inside the script per call (commandstats usec / calls): the script alone, but wall time, so it grows
   * when the node shares its core and is preempted mid-script
   */
  scriptUsPerCall: number;
  /** the node's CPU time over the window's wall time, 0..1 of a core */
  busy: number;
}

/** One way of driving the gate directly: a target, a pipeline depth, and where its Redis nodes run. */
export interface GateVariant {
  label: string;
  target: RedisTargetName;
  pipeline: number;
  /** the target's Redis nodes and the load generators anywhere, instead of the nodes on core 0 and the generators on the other */
  bothCores: boolean;
}

export interface GateRun extends GateVariant {
  round: number;
  calls: number;
  callsPerSec: number;
  /** gate calls that issued no coupon (a user id drawn twice), or failed */
  unexpected: number;
  /** CPU time of all the target's nodes per gate call, µs */
  redisCpuUsPerCall: number;
  nodes: NodeWindow[];
}

export interface ApiRun {
  case: ClusterCase;
  processes: number;
  round: number;
  requests: number;
  rps: number;
  p50Us: number;
  p99Us: number;
  unexpected: number;
  apiCpuUsPerRequest: number;
  /** the api processes' CPU over the window's wall time, in cores */
  apiCoresBusy: number;
  /** null for hello */
  redisCpuUsPerCall: number | null;
  nodes: NodeWindow[];
}

export interface MemoryState {
  /** MEMORY USAGE (SAMPLES 0) of each key, summed over the events and divided by their number */
  bytesPerEvent: number;
  byKey: Record<string, number>;
  /** entries left in the outbox stream */
  outboxEntries: number;
}

export interface MemoryReport {
  target: RedisTargetName;
  events: number;
  couponsPerEvent: number;
  userIdChars: number;
  created: MemoryState;
  issued: MemoryState;
  persisted: MemoryState;
  /** what a persisted coupon keeps (its users hash entry and persisted bit) */
  bytesPerCouponPersisted: number;
  /** the rest of a persisted event: meta, issued, and the trimmed outbox stream */
  eventFixedBytesPersisted: number;
  /** what a coupon adds to the outbox stream until it is persisted and trimmed */
  bytesPerCouponInOutbox: number;
}

export interface ClusterReport {
  schemaVersion: 1;
  kind: 'cluster-capacity';
  startedAt: string;
  finishedAt: string;
  machine: MachineFacts;
  settings: ClusterBenchSettings;
  /** each node's CPU while idle, ms per second */
  idleCpuMsPerSec: Array<{ target: RedisTargetName; node: string; msPerSec: number }>;
  memory: MemoryReport;
  gate: { runs: GateRun[]; summary: GateSummary[]; ratios: GateRatios[] };
  api: { runs: ApiRun[]; summary: ApiSummary[]; ratios: ApiRatios[] };
  model: CapacityModel;
}

export interface GateSummary extends GateVariant {
  callsPerSec: number;
  redisCpuUsPerCall: number;
  /** the target's nodes together, in cores */
  redisCoresBusy: number;
  unexpected: number;
  nodes: NodeSummary[];
}

export interface NodeSummary {
  node: string;
  callsShare: number;
  cpuUsPerCall: number;
  scriptUsPerCall: number;
  busy: number;
}

export interface GateRatios {
  pipeline: number;
  /** Redis CPU µs per gate call */
  cpuCluster1VsStandalone: number;
  cpuCluster3VsCluster1: number;
  /** gate calls per second, every node on core 0 */
  rateCluster1VsStandalone: number;
  rateCluster3VsCluster1: number;
  /** gate calls per second, the 3 shards on both cores, against 1 shard on core 0 (null where not measured) */
  rateCluster3BothCoresVsCluster1: number | null;
}

export interface ApiSummary {
  case: ClusterCase;
  processes: number;
  pinned: boolean;
  rps: number;
  p50Us: number;
  p99Us: number;
  apiCpuUsPerRequest: number;
  apiCoresBusy: number;
  redisCpuUsPerCall: number | null;
  unexpected: number;
  nodes: NodeSummary[];
}

export interface ApiRatios {
  processes: number;
  /** req/s */
  cluster1VsStandalone: number;
  cluster3VsCluster1: number;
  standaloneVsHello: number;
  cluster1VsHello: number;
  cluster3VsHello: number;
  /** p99 */
  p99Cluster3VsCluster1: number;
  /** api CPU µs per request */
  apiCpuCluster1VsStandalone: number;
  apiCpuCluster3VsCluster1: number;
  /** Redis CPU µs per gate call */
  redisCpuCluster1VsStandalone: number;
  redisCpuCluster3VsCluster1: number;
}

/** What the model is fed: costs measured on one shard, and the memory of an event. */
export interface CapacityInputs {
  /**
   * Redis CPU per gate call on one shard, µs, with the calls arriving in pipelined batches (a busy shard fed by
   * auto-pipelining api processes) and one call per read (the most each call can cost)
   */
  gateUsPerCallBatched: number;
  gateUsPerCallUnbatched: number;
  /** the api's CPU per apply request, µs */
  apiUsPerRequest: number;
  /** an event's keys just created, and what each coupon adds once persisted and while in the outbox, bytes */
  eventFixedBytes: number;
  bytesPerCoupon: number;
  bytesPerCouponInOutbox: number;
}

/** A figure at both ends of the gate's cost per call. */
export interface Bounds {
  unbatched: number;
  batched: number;
}

export interface CapacityModel {
  inputs: CapacityInputs;
  formula: string;
  /** one shard's ceiling: 1e6 / gate µs per call, one core of Redis per shard; one event's is the same */
  shardCallsPerSec: Bounds;
  /** what one core of api carries */
  apiRequestsPerCore: number;
  /** api cores it takes to keep one shard busy */
  apiCoresPerShard: Bounds;
  /** per GiB of a shard's memory used by events (MEMORY USAGE: leave headroom for fragmentation and buffers) */
  couponsPerGiB: number;
  eventsPerGiB: Array<{ couponsPerEvent: number; events: number }>;
  byShards: Array<{ shards: number; callsPerSec: Bounds; apiCores: Bounds }>;
}

const GIB = 2 ** 30;

export const CAPACITY_FORMULA = 'calls/s of one shard = 1e6 / gate µs per call (one core); of K shards = K × that, '
  + 'for load spread over events on every shard; of one event = one shard\'s, whatever K (its keys share the hash tag {eventId}); '
  + 'api cores = calls/s × api µs per request / 1e6; bytes of an event of C coupons = fixed + C × per coupon '
  + '(+ outbox bytes per coupon not yet persisted); events per shard = its memory / bytes per event';

/**
 * The model: a shard runs the gate on one core, so it carries 1e6 / (its Redis µs per call) calls a second; a
 * Cluster of K shards carries K times that when the load is spread over events on every shard, while one event
 * never gets more than one shard's (all its keys share the hash tag {eventId}). An event with C coupons holds
 * fixed + C × perCoupon bytes once persisted, so a shard's memory, not its CPU, bounds how many events it keeps.
 * The api tier scales on its own: 1e6 / (api µs per request) requests per core.
 */
export function capacityModel(inputs: CapacityInputs, shards: number[] = [1, 3, 6, 12], couponsPerEvent: number[] = [1_000, 10_000, 100_000]): CapacityModel {
  const shard = { unbatched: 1e6 / inputs.gateUsPerCallUnbatched, batched: 1e6 / inputs.gateUsPerCallBatched };
  const apiRequestsPerCore = 1e6 / inputs.apiUsPerRequest;
  const bounds = (f: (callsPerSec: number) => number): Bounds => ({ unbatched: f(shard.unbatched), batched: f(shard.batched) });
  return {
    inputs,
    formula: CAPACITY_FORMULA,
    shardCallsPerSec: bounds((calls) => Math.round(calls)),
    apiRequestsPerCore: Math.round(apiRequestsPerCore),
    apiCoresPerShard: bounds((calls) => round(calls / apiRequestsPerCore, 1)),
    couponsPerGiB: Math.round(GIB / inputs.bytesPerCoupon),
    eventsPerGiB: couponsPerEvent.map((c) => ({ couponsPerEvent: c, events: Math.floor(GIB / (inputs.eventFixedBytes + c * inputs.bytesPerCoupon)) })),
    byShards: shards.map((k) => ({
      shards: k,
      callsPerSec: bounds((calls) => Math.round(k * calls)),
      apiCores: bounds((calls) => round((k * calls) / apiRequestsPerCore, 1)),
    })),
  };
}

interface Node {
  target: RedisTargetName;
  name: string;
  port: number;
  pid: number;
  client: CouponRedis;
}

interface NodeSample {
  cpuUs: number;
  gateCalls: number;
  scriptUs: number;
}

interface Target {
  name: RedisTargetName;
  env: Record<string, string>;
  /** a client of the target as the service builds it (a Cluster client on a Cluster), auto-pipelined */
  client: CouponRedis;
  nodes: Node[];
  events: string[];
}

/**
 * A Cluster of one primary owning every slot. `redis-cli --cluster create` (startRedisCluster) wants at least 3
 * primaries, so this one node is given the slots with CLUSTER ADDSLOTSRANGE. Its cluster bus listens on
 * port + 10000, which must be a port too and free: a start that fails on it is tried again on another port.
 */
export async function startOneShardCluster(dir: string): Promise<{ nodes: string[]; servers: LocalServer[] }> {
  for (let attempt = 1; ; attempt += 1) {
    let port = await freePort();
    while (port + 10_000 > 65_535) port = await freePort();
    let server: LocalServer;
    try {
      server = await startRedis({ dir: join(dir, `node-${attempt}`), port, cluster: true });
    } catch (error) {
      if (attempt >= 5) throw error;
      continue;
    }
    try {
      await redisCommand(port, 'CLUSTER', 'ADDSLOTSRANGE', '0', '16383');
      const deadline = Date.now() + 10_000;
      while (!/cluster_state:ok/.test(await redisCommand(port, 'CLUSTER', 'INFO'))) {
        if (Date.now() > deadline) throw new Error(`redis cluster of one: node ${port} not ok within 10 s`);
        await sleep(50);
      }
    } catch (error) {
      await server.stop();
      throw error;
    }
    return { nodes: [`127.0.0.1:${port}`], servers: [server] };
  }
}

/** Runs the four phases; returns everything but the machine and the times, which the caller adds. */
export async function measureClusterCapacity(
  ctx: ClusterBenchContext, settings: ClusterBenchSettings,
): Promise<Omit<ClusterReport, 'startedAt' | 'finishedAt' | 'machine'>> {
  const runId = Date.now().toString(36);
  const targets = await connectTargets(ctx);
  try {
    const memory = await measureMemory(ctx, targets.get('cluster-1')!, settings, runId);
    const gateRuns: GateRun[] = [];
    const apiRuns: ApiRun[] = [];
    let idleCpuMsPerSec: ClusterReport['idleCpuMsPerSec'] = [];
    for (const processes of settings.processCounts) {
      const pinned = processes === 1 && cpus().length >= 2;
      const servers = await startServers(ctx, targets, processes);
      try {
        if (processes === settings.processCounts[0]) {
          await createEvents(ctx, targets, servers, settings, runId);
          idleCpuMsPerSec = await measureIdle(targets);
          ctx.log(`idle Redis CPU, ms/s per node: ${idleCpuMsPerSec.map((x) => `${x.target} ${x.node} ${x.msPerSec}`).join(', ')}`);
          gateRuns.push(...await measureGate(ctx, targets, settings));
        }
        placeRedis(targets.values(), pinned);
        if (pinned) for (const group of servers.values()) for (const p of group) pinServer(p.child.pid!);
        apiRuns.push(...await measureApi(ctx, targets, servers, settings, processes, pinned));
      } finally {
        await Promise.all([...servers.values()].flat().map((p) => ctx.running.stop(p)));
      }
    }
    placeRedis(targets.values(), false);
    const apiSummary = summariseApi(apiRuns, settings);
    const gateSummary = summariseGate(gateRuns, settings);
    // The model's costs: the 1-shard Cluster's Redis CPU per gate call driven directly, at the deepest pipeline
    // and at one call per read (the two ends of what a busy shard pays), and the api's CPU per request on the
    // 3-shard Cluster (one process, pinned: the spread case, which costs the api a little more than one shard).
    const gateOf = (pipeline: number) => gateSummary.find((g) => g.target === 'cluster-1' && g.pipeline === pipeline && !g.bothCores)!;
    const spread = apiSummary.find((s) => s.case === 'cluster-3' && s.processes === settings.processCounts[0])!;
    const model = capacityModel({
      gateUsPerCallBatched: gateOf(Math.max(...settings.gatePipelines)).redisCpuUsPerCall,
      gateUsPerCallUnbatched: gateOf(Math.min(...settings.gatePipelines)).redisCpuUsPerCall,
      apiUsPerRequest: spread.apiCpuUsPerRequest,
      eventFixedBytes: memory.eventFixedBytesPersisted,
      bytesPerCoupon: memory.bytesPerCouponPersisted,
      bytesPerCouponInOutbox: memory.bytesPerCouponInOutbox,
    });
    return {
      schemaVersion: 1, kind: 'cluster-capacity', settings, idleCpuMsPerSec, memory,
      gate: { runs: gateRuns, summary: gateSummary, ratios: ratiosOfGate(gateRuns, settings) },
      api: { runs: apiRuns, summary: apiSummary, ratios: ratiosOfApi(apiRuns, settings) },
      model,
    };
  } finally {
    for (const target of targets.values()) {
      target.client.disconnect();
      for (const node of target.nodes) node.client.disconnect();
    }
  }
}

/**
 * A client per target and per node, and every shard's state marker written: the one MariaDB serves all three
 * targets, and an api finding a shard unmarked would restore every event of MySQL (the other targets' too) into it.
 */
async function connectTargets(ctx: ClusterBenchContext): Promise<Map<RedisTargetName, Target>> {
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

/** The targets' Redis nodes on core 0 (pinned: with wrk, or apart from redis-benchmark), or anywhere. */
function placeRedis(targets: Iterable<Target>, pinned: boolean): void {
  const cores = cpus().length;
  if (cores < 2) return;
  for (const target of targets) for (const node of target.nodes) pinTo(node.pid, pinned ? '0' : `0-${cores - 1}`);
}

async function sample(node: Node): Promise<NodeSample> {
  const info = (await node.client.call('INFO', 'cpu', 'commandstats')) as string;
  const field = (name: string) => Number(new RegExp(`^${name}:([\\d.]+)`, 'm').exec(info)?.[1] ?? 0);
  let gateCalls = 0;
  let scriptUs = 0;
  for (const command of ['evalsha', 'eval']) {
    const stats = new RegExp(`^cmdstat_${command}:calls=(\\d+),usec=(\\d+)`, 'm').exec(info);
    gateCalls += Number(stats?.[1] ?? 0);
    scriptUs += Number(stats?.[2] ?? 0);
  }
  return { cpuUs: Math.round((field('used_cpu_user') + field('used_cpu_sys')) * 1e6), gateCalls, scriptUs };
}

const sampleAll = (nodes: Node[]) => Promise.all(nodes.map(sample));

function nodeWindows(nodes: Node[], before: NodeSample[], after: NodeSample[], wallMs: number): NodeWindow[] {
  return nodes.map((node, i) => {
    const calls = after[i]!.gateCalls - before[i]!.gateCalls;
    const cpuUs = after[i]!.cpuUs - before[i]!.cpuUs;
    return {
      node: node.name,
      gateCalls: calls,
      cpuUsPerCall: round(cpuUs / Math.max(calls, 1), 2),
      scriptUsPerCall: round((after[i]!.scriptUs - before[i]!.scriptUs) / Math.max(calls, 1), 2),
      busy: round(cpuUs / 1000 / wallMs, 3),
    };
  });
}

/** All the targets' CPU per call: their nodes' CPU summed over their gate calls summed. */
const cpuPerCall = (windows: NodeWindow[]) => {
  const calls = windows.reduce((sum, w) => sum + w.gateCalls, 0);
  return round(windows.reduce((sum, w) => sum + w.cpuUsPerCall * w.gateCalls, 0) / Math.max(calls, 1), 2);
};

/** api processes per target, and hello-world, `count` of each; the first api of each target serves the admin calls. */
async function startServers(ctx: ClusterBenchContext, targets: Map<RedisTargetName, Target>, count: number): Promise<Map<ClusterCase, ServiceProcess[]>> {
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
async function post(url: string, path: string, body: unknown, adminToken?: string): Promise<Response> {
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
async function createEvents(
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

/**
 * Memory of an event on a Cluster shard: `memoryEvents` events of `memoryCoupons` coupons, issued through the api
 * to users with UUID ids, measured just created, once issued (every coupon in the outbox) and once a worker has
 * persisted them (the persisted bitmap set, the outbox trimmed by the worker's maintenance).
 */
async function measureMemory(ctx: ClusterBenchContext, target: Target, settings: ClusterBenchSettings, runId: string): Promise<MemoryReport> {
  const env = { ...ctx.env, ...target.env, LOG_LEVEL: 'warn' };
  const api = await ctx.running.track(startApi({ port: await freePort(), env }));
  let worker: ServiceProcess | undefined;
  try {
    const events = Array.from({ length: settings.memoryEvents }, (_, i) => `mem-${runId}-${i}`);
    for (const id of events) await post(api.url, '/v1/events', { id, name: 'memory', totalQuantity: settings.memoryCoupons }, ctx.env.ADMIN_TOKEN);
    const created = await eventMemory(target, events);
    const userIdChars = randomUUID().length;
    const calls = events.flatMap((id) => Array.from({ length: settings.memoryCoupons }, () => id));
    const statuses: Record<number, number> = {};
    await Promise.all(Array.from({ length: 32 }, async () => {
      for (let id = calls.pop(); id !== undefined; id = calls.pop()) {
        const response = await post(api.url, `/v1/events/${id}/apply`, { userId: randomUUID() });
        statuses[response.status] = (statuses[response.status] ?? 0) + 1;
        await response.arrayBuffer();
      }
    }));
    if (statuses[202] !== settings.memoryEvents * settings.memoryCoupons) throw new Error(`memory phase: answers ${JSON.stringify(statuses)}`);
    const issued = await eventMemory(target, events);
    worker = await ctx.running.track(startWorker({ port: await freePort(), env: { ...env, PERSIST_RATE_PER_SEC: '1000000', PERSIST_BATCH_SIZE: '500' } }));
    // Persisted, and trimmed by the worker's maintenance (every 5 s) down to the last entry handed out.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const states = await Promise.all(events.map(async (id) => {
        const keys = eventKeys(id);
        const [bits, length] = await Promise.all([target.client.bitcount(keys.persisted), target.client.xlen(keys.outbox)]);
        return bits >= settings.memoryCoupons && length <= 1;
      }));
      if (states.every(Boolean)) break;
      if (Date.now() > deadline) throw new Error('memory phase: the worker did not persist and trim the events within 30 s');
      await sleep(250);
    }
    const persisted = await eventMemory(target, events);
    // What stays per coupon: its user's entry and its bit. What stays per event once persisted: the rest, the
    // trimmed outbox among it (entries deleted from a stream node are only marked until the whole node goes).
    const lasting = (state: MemoryState) => (state.byKey.users ?? 0) + (state.byKey.persisted ?? 0);
    const bytesPerCouponPersisted = round((lasting(persisted) - lasting(created)) / settings.memoryCoupons, 1);
    const report: MemoryReport = {
      target: target.name, events: events.length, couponsPerEvent: settings.memoryCoupons, userIdChars, created, issued, persisted,
      bytesPerCouponPersisted,
      eventFixedBytesPersisted: Math.round(persisted.bytesPerEvent - bytesPerCouponPersisted * settings.memoryCoupons),
      bytesPerCouponInOutbox: round(((issued.byKey.outbox ?? 0) - (created.byKey.outbox ?? 0)) / settings.memoryCoupons, 1),
    };
    ctx.log(`memory: ${created.bytesPerEvent} B per event created, ${issued.bytesPerEvent} B with ${settings.memoryCoupons} coupons in the outbox, ${persisted.bytesPerEvent} B persisted: ${report.eventFixedBytesPersisted} B + ${report.bytesPerCouponPersisted} B per coupon (+${report.bytesPerCouponInOutbox} B per coupon in the outbox)`);
    return report;
  } finally {
    if (worker) await ctx.running.stop(worker);
    await ctx.running.stop(api);
  }
}

async function eventMemory(target: Target, events: string[]): Promise<MemoryState> {
  const byKey: Record<string, number> = {};
  let outboxEntries = 0;
  for (const id of events) {
    const keys = eventKeys(id);
    for (const [part, key] of Object.entries(keys)) {
      const node = primaryOf(target.client, key)!;
      const bytes = Number((await node.call('MEMORY', 'USAGE', key, 'SAMPLES', '0')) ?? 0);
      byKey[part] = (byKey[part] ?? 0) + bytes;
    }
    outboxEntries += await target.client.xlen(keys.outbox);
  }
  for (const part of Object.keys(byKey)) byKey[part] = Math.round(byKey[part]! / events.length);
  return { bytesPerEvent: Object.values(byKey).reduce((a, b) => a + b, 0), byKey, outboxEntries: Math.round(outboxEntries / events.length) };
}

/** Each node's CPU over 2 s with nothing sent to it. */
async function measureIdle(targets: Map<RedisTargetName, Target>): Promise<ClusterReport['idleCpuMsPerSec']> {
  const nodes = [...targets.values()].flatMap((t) => t.nodes);
  const before = await sampleAll(nodes);
  const from = performance.now();
  await sleep(2_000);
  const after = await sampleAll(nodes);
  const seconds = (performance.now() - from) / 1000;
  return nodes.map((node, i) => ({ target: node.target, node: node.name, msPerSec: round((after[i]!.cpuUs - before[i]!.cpuUs) / 1000 / seconds, 2) }));
}

/** The gate variants: every target at every pipeline depth, and at the first depth the 3 shards on both cores. */
export function gateVariants(settings: Pick<ClusterBenchSettings, 'gatePipelines'>): GateVariant[] {
  return settings.gatePipelines.flatMap((pipeline, i) => [
    ...REDIS_TARGETS.map((target) => ({ label: `${target} P${pipeline}`, target, pipeline, bothCores: false })),
    ...(i === 0 ? [{ label: `cluster-3 P${pipeline} both cores`, target: 'cluster-3' as const, pipeline, bothCores: true }] : []),
  ]);
}

/**
 * The gate driven by redis-benchmark (C, far cheaper per call than any Node client, so Redis is what runs out):
 * one process per event of the target, EVALSHA of gate.lua with a new user each call, `gateConnections` in all,
 * `pipeline` calls per connection in flight. The Redis nodes on core 0 and redis-benchmark on the last core, or
 * (bothCores) all of them anywhere. Interleaved rounds; the variants' order rotates per round.
 */
async function measureGate(ctx: ClusterBenchContext, targets: Map<RedisTargetName, Target>, settings: ClusterBenchSettings): Promise<GateRun[]> {
  const [sha] = await Promise.all([...targets.values()].flatMap((t) => t.nodes.map((node) => node.client.script('LOAD', GATE_LUA) as Promise<string>)));
  const variants = gateVariants(settings);
  const runs: GateRun[] = [];
  placeRedis(targets.values(), true);
  for (const variant of variants) await driveGate(ctx, targets.get(variant.target)!, variant, sha!, settings, 0.5, 'warm');
  for (let r = 1; r <= settings.gateRounds; r += 1) {
    for (const variant of rotate(variants, r)) {
      const run = { ...(await driveGate(ctx, targets.get(variant.target)!, variant, sha!, settings, settings.gateSeconds, `g${r}`)), round: r };
      runs.push(run);
      ctx.log(`gate: round ${r}, ${variant.label}: ${run.callsPerSec.toLocaleString('en-US')} calls/s, Redis ${run.redisCpuUsPerCall} µs CPU/call (${run.nodes.map((x) => `${x.cpuUsPerCall} µs, ${Math.round(x.busy * 100)}%`).join('; ')})${run.unexpected ? `, ${run.unexpected} unexpected` : ''}`);
    }
  }
  return runs;
}

let gateRunCount = 0;
const GATE_LUA = readFileSync(new URL('../src/redis/gate.lua', import.meta.url), 'utf8');

async function driveGate(
  ctx: ClusterBenchContext, target: Target, variant: GateVariant, sha: string, settings: ClusterBenchSettings, seconds: number, label: string,
): Promise<Omit<GateRun, 'round'>> {
  const cores = cpus().length;
  const pinned = !variant.bothCores && cores >= 2;
  if (variant.bothCores) placeRedis([target], false);
  const issued = () => Promise.all(target.events.map(async (id) => Number((await target.client.get(eventKeys(id).issued)) ?? 0)));
  const issuedBefore = await issued();
  const first = await sampleAll(target.nodes);
  const connections = Math.max(1, Math.floor(settings.gateConnections / target.events.length));
  // redis-benchmark draws the same random numbers in every run: the user ids of each run need a prefix of their own.
  const run = `${label}.${(gateRunCount += 1)}`;
  const generators = await Promise.all(target.events.map((id) => {
    const keys = eventKeys(id);
    const port = target.nodes.find((node) => node.name === nodeName(primaryOf(target.client, keys.meta)!))!.port;
    const args = [
      '-h', '127.0.0.1', '-p', String(port), '-c', String(connections), '-P', String(variant.pipeline), '-l', '-q', '-r', '2000000000',
      'EVALSHA', sha, '4', keys.meta, keys.issued, keys.users, keys.outbox, id, `${run}.__rand_int__`, `${run}.__rand_int__`,
    ];
    const child = spawn(pinned ? 'taskset' : binary('redis-benchmark'), pinned ? ['-c', String(cores - 1), binary('redis-benchmark'), ...args] : args, { stdio: 'ignore' });
    const exited = once(child, 'exit');
    return ctx.running.track({ stop: async () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM'); await exited; } });
  }));
  let windows: NodeWindow[];
  let calls: number;
  let wallMs: number;
  try {
    // Measured once every connection is up and busy; the first and last moments are left out.
    await sleep(300);
    const before = await sampleAll(target.nodes);
    const from = performance.now();
    await sleep(seconds * 1000);
    const after = await sampleAll(target.nodes);
    wallMs = performance.now() - from;
    windows = nodeWindows(target.nodes, before, after, wallMs);
    calls = windows.reduce((sum, w) => sum + w.gateCalls, 0);
  } finally {
    await Promise.all(generators.map((g) => ctx.running.stop(g)));
    if (variant.bothCores) placeRedis([target], true);
  }
  // What the generators had sent before they ended is still being answered for a moment.
  await sleep(200);
  const last = await sampleAll(target.nodes);
  const allCalls = last.reduce((sum, x, i) => sum + x.gateCalls - first[i]!.gateCalls, 0);
  const issuedAfter = await issued();
  const newlyIssued = issuedAfter.reduce((sum, x, i) => sum + x - issuedBefore[i]!, 0);
  return {
    ...variant, calls, callsPerSec: Math.round((calls * 1000) / wallMs), unexpected: allCalls - newlyIssued,
    redisCpuUsPerCall: cpuPerCall(windows), nodes: windows,
  };
}

/** The cases in the order of round r: each round starts one further along, so no case always follows another. */
function rotate<T>(items: readonly T[], r: number): T[] {
  const k = (r - 1) % items.length;
  return [...items.slice(k), ...items.slice(0, k)];
}

/** The api phase at one process count: a warm-up of every case, then interleaved rounds. */
async function measureApi(
  ctx: ClusterBenchContext, targets: Map<RedisTargetName, Target>, servers: Map<ClusterCase, ServiceProcess[]>,
  settings: ClusterBenchSettings, processes: number, pinned: boolean,
): Promise<ApiRun[]> {
  const runs: ApiRun[] = [];
  for (const kase of CLUSTER_CASES) await loadCase(ctx, kase, targets, servers, settings, 2, `warm${processes}`, pinned);
  for (let r = 1; r <= settings.rounds; r += 1) {
    for (const kase of rotate(CLUSTER_CASES, r)) {
      const run = { ...(await loadCase(ctx, kase, targets, servers, settings, settings.seconds, `r${r}p${processes}`, pinned)), round: r };
      runs.push(run);
      ctx.log(`api: ${processes} process(es), round ${r}, ${kase}: ${run.rps.toLocaleString('en-US')} req/s, p99 ${run.p99Us} µs, api ${run.apiCpuUsPerRequest} µs CPU/req (${run.apiCoresBusy} cores)${run.redisCpuUsPerCall === null ? '' : `, Redis ${run.redisCpuUsPerCall} µs CPU/call (${run.nodes.map((n) => `${Math.round(n.busy * 100)}%`).join(' ')} busy)`}${run.unexpected ? `, ${run.unexpected} unexpected` : ''}`);
    }
  }
  return runs;
}

/**
 * loadCase, run again whole (every wrk of the case) when a wrk's output came back empty: wrkBurst reads wrk's
 * stdout until the process's 'exit', which Node may emit before the last of its output is read.
 */
async function loadCase(...args: Parameters<typeof loadCaseOnce>): Promise<Omit<ApiRun, 'round'>> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await loadCaseOnce(...args);
    } catch (error) {
      if (attempt >= 3 || !(error instanceof Error && error.message.startsWith('wrk failed (exit 0)'))) throw error;
      args[0].log(`api: ${args[1]}: a wrk's output was lost; the case runs again`);
    }
  }
}

/** One wrk per api process and event path, all at once; the case's figures together. */
async function loadCaseOnce(
  ctx: ClusterBenchContext, kase: ClusterCase, targets: Map<RedisTargetName, Target>, servers: Map<ClusterCase, ServiceProcess[]>,
  settings: ClusterBenchSettings, seconds: number, label: string, pinned: boolean,
): Promise<Omit<ApiRun, 'round'>> {
  const group = servers.get(kase)!;
  // hello answers any event id: the same number of paths, so the same number of wrk processes, as the others.
  const target = kase === 'hello' ? undefined : targets.get(kase)!;
  const events = target?.events ?? Array.from({ length: settings.eventsPerTarget }, (_, i) => `hello-${i}`);
  const nodes = target?.nodes ?? [];
  const connections = Math.max(1, Math.floor(settings.connections / (group.length * events.length)));
  const wrkContext: HotPathContext = { env: ctx.env, redisDir: '', workDir: ctx.workDir, running: ctx.running, log: ctx.log };
  const cpuBefore = group.map((p) => cpuTimeMs(p.child.pid!));
  const before = await sampleAll(nodes);
  const from = performance.now();
  const results = await Promise.all(group.flatMap((p, i) => events.map((id, e) => wrkBurst(wrkContext, {
    url: p.url, path: `/v1/events/${encodeURIComponent(id)}/apply`, seconds, connections, label: `${label}-${kase}-${i}-${e}`, expectedStatus: 202, pinned,
  }))));
  const wallMs = performance.now() - from;
  const after = await sampleAll(nodes);
  const cpuMs = group.reduce((sum, p, i) => sum + cpuTimeMs(p.child.pid!) - cpuBefore[i]!, 0);
  const requests = results.reduce((sum, r) => sum + r.requests, 0);
  const windows = nodeWindows(nodes, before, after, wallMs);
  return {
    case: kase, processes: group.length, requests,
    rps: Math.round(results.reduce((sum, r) => sum + r.requests / r.seconds, 0)),
    p50Us: Math.max(...results.map((r) => r.p50Us)),
    p99Us: Math.max(...results.map((r) => r.p99Us)),
    unexpected: results.reduce((sum, r) => sum + r.unexpected, 0),
    apiCpuUsPerRequest: round((cpuMs * 1000) / Math.max(requests, 1), 1),
    apiCoresBusy: round(cpuMs / wallMs, 2),
    redisCpuUsPerCall: target ? cpuPerCall(windows) : null,
    nodes: windows,
  };
}

const median = (values: number[]) => percentile(values, 50);

/** Per node over runs: its share of the calls, and the medians of its costs. */
function nodeSummary(runs: Array<{ nodes: NodeWindow[] }>): NodeSummary[] {
  if (runs.length === 0) return [];
  return runs[0]!.nodes.map((first, i) => ({
    node: first.node,
    callsShare: round(median(runs.map((run) => run.nodes[i]!.gateCalls / Math.max(run.nodes.reduce((s, n) => s + n.gateCalls, 0), 1))), 3),
    cpuUsPerCall: round(median(runs.map((run) => run.nodes[i]!.cpuUsPerCall)), 2),
    scriptUsPerCall: round(median(runs.map((run) => run.nodes[i]!.scriptUsPerCall)), 2),
    busy: round(median(runs.map((run) => run.nodes[i]!.busy)), 3),
  }));
}

function summariseGate(runs: GateRun[], settings: ClusterBenchSettings): GateSummary[] {
  return gateVariants(settings).map((variant) => {
    const mine = runs.filter((run) => run.label === variant.label);
    return {
      ...variant,
      callsPerSec: Math.round(median(mine.map((r) => r.callsPerSec))),
      redisCpuUsPerCall: round(median(mine.map((r) => r.redisCpuUsPerCall)), 2),
      redisCoresBusy: round(median(mine.map((r) => r.nodes.reduce((sum, x) => sum + x.busy, 0))), 2),
      unexpected: mine.reduce((sum, r) => sum + r.unexpected, 0),
      nodes: nodeSummary(mine),
    };
  });
}

function summariseApi(runs: ApiRun[], settings: ClusterBenchSettings): ApiSummary[] {
  return settings.processCounts.flatMap((processes) => CLUSTER_CASES.map((kase) => {
    const mine = runs.filter((r) => r.case === kase && r.processes === processes);
    return {
      case: kase, processes, pinned: processes === 1 && cpus().length >= 2,
      rps: Math.round(median(mine.map((r) => r.rps))),
      p50Us: Math.round(median(mine.map((r) => r.p50Us))),
      p99Us: Math.round(median(mine.map((r) => r.p99Us))),
      apiCpuUsPerRequest: round(median(mine.map((r) => r.apiCpuUsPerRequest)), 1),
      apiCoresBusy: round(median(mine.map((r) => r.apiCoresBusy)), 2),
      redisCpuUsPerCall: kase === 'hello' ? null : round(median(mine.map((r) => r.redisCpuUsPerCall!)), 2),
      unexpected: mine.reduce((sum, r) => sum + r.unexpected, 0),
      nodes: nodeSummary(mine),
    };
  }));
}

/** The median over rounds of a ratio taken within each round. */
function perRound<R extends { round: number }>(runs: R[], rounds: number, f: (round: R[]) => number): number {
  return round(median(Array.from({ length: rounds }, (_, i) => f(runs.filter((run) => run.round === i + 1)))), 2);
}

function ratiosOfGate(runs: GateRun[], settings: ClusterBenchSettings): GateRatios[] {
  return settings.gatePipelines.map((pipeline) => {
    const of = (round: GateRun[], target: RedisTargetName, bothCores = false) =>
      round.find((run) => run.target === target && run.pipeline === pipeline && run.bothCores === bothCores);
    const ratio = (f: (run: GateRun) => number, a: RedisTargetName, b: RedisTargetName, aBothCores = false) =>
      perRound(runs, settings.gateRounds, (r) => f(of(r, a, aBothCores)!) / f(of(r, b)!));
    const cpu = (run: GateRun) => run.redisCpuUsPerCall;
    const rate = (run: GateRun) => run.callsPerSec;
    return {
      pipeline,
      cpuCluster1VsStandalone: ratio(cpu, 'cluster-1', 'standalone'),
      cpuCluster3VsCluster1: ratio(cpu, 'cluster-3', 'cluster-1'),
      rateCluster1VsStandalone: ratio(rate, 'cluster-1', 'standalone'),
      rateCluster3VsCluster1: ratio(rate, 'cluster-3', 'cluster-1'),
      rateCluster3BothCoresVsCluster1: runs.some((run) => run.pipeline === pipeline && run.bothCores) ? ratio(rate, 'cluster-3', 'cluster-1', true) : null,
    };
  });
}

function ratiosOfApi(runs: ApiRun[], settings: ClusterBenchSettings): ApiRatios[] {
  return settings.processCounts.map((processes) => {
    const mine = runs.filter((run) => run.processes === processes);
    const of = (round: ApiRun[], kase: ClusterCase) => round.find((run) => run.case === kase)!;
    const ratio = (f: (run: ApiRun) => number, a: ClusterCase, b: ClusterCase) => perRound(mine, settings.rounds, (r) => f(of(r, a)) / f(of(r, b)));
    const rps = (run: ApiRun) => run.rps;
    return {
      processes,
      cluster1VsStandalone: ratio(rps, 'cluster-1', 'standalone'),
      cluster3VsCluster1: ratio(rps, 'cluster-3', 'cluster-1'),
      standaloneVsHello: ratio(rps, 'standalone', 'hello'),
      cluster1VsHello: ratio(rps, 'cluster-1', 'hello'),
      cluster3VsHello: ratio(rps, 'cluster-3', 'hello'),
      p99Cluster3VsCluster1: ratio((run) => run.p99Us, 'cluster-3', 'cluster-1'),
      apiCpuCluster1VsStandalone: ratio((run) => run.apiCpuUsPerRequest, 'cluster-1', 'standalone'),
      apiCpuCluster3VsCluster1: ratio((run) => run.apiCpuUsPerRequest, 'cluster-3', 'cluster-1'),
      redisCpuCluster1VsStandalone: ratio((run) => run.redisCpuUsPerCall!, 'cluster-1', 'standalone'),
      redisCpuCluster3VsCluster1: ratio((run) => run.redisCpuUsPerCall!, 'cluster-3', 'cluster-1'),
    };
  });
}

const n = (value: number) => value.toLocaleString('en-US');
const pct = (value: number) => `${Math.round(value * 100)}%`;
const perNode = (nodes: NodeSummary[], f: (node: NodeSummary) => string) => nodes.map(f).join(' / ') || '-';
const range = (b: Bounds, f: (value: number) => string = n) => `${f(b.unbatched)} - ${f(b.batched)}`;

/** The report as Markdown: the phases' medians, the ratios, and the model. */
export function clusterMarkdown(report: ClusterReport): string {
  const { settings, memory, model, machine } = report;
  const last = Math.max(machine.cpus - 1, 0);
  const lines = [
    `# Redis Cluster capacity (${report.startedAt.slice(0, 16).replace('T', ' ')} UTC)`,
    '',
    `Machine: ${machine.cpus} cores (${machine.cpuModel}), ${machine.memoryGiB} GiB, ${machine.os}, Node ${machine.node}, Redis ${machine.redis}, MariaDB ${machine.mariadb}; load average ${machine.loadAverage1mAtStart} at the start.${machine.note ? ` ${machine.note}` : ''}`,
    '',
    '## The gate driven directly (redis-benchmark)',
    '',
    `${settings.gateRounds} interleaved rounds of ${settings.gateSeconds} s per variant; EVALSHA of gate.lua, a new user each call, ${settings.gateConnections} connections per target over its ${settings.eventsPerTarget} events, P calls in flight per connection; every Redis node on core 0 and redis-benchmark on core ${last}, except "both cores"; medians.`,
    '',
    '| variant | gate calls/s | Redis CPU µs/call | Redis cores busy | calls/s per busy Redis core | per node: share of calls | per node: CPU µs/call | per node: in-script wall µs/call | per node: busy | no coupon |',
    '| --- | ---: | ---: | ---: | ---: | --- | --- | --- | --- | ---: |',
    ...report.gate.summary.map((g) => `| ${g.label} | ${n(g.callsPerSec)} | ${g.redisCpuUsPerCall} | ${g.redisCoresBusy} | ${n(Math.round(g.callsPerSec / g.redisCoresBusy))} | ${perNode(g.nodes, (x) => pct(x.callsShare))} | ${perNode(g.nodes, (x) => String(x.cpuUsPerCall))} | ${perNode(g.nodes, (x) => String(x.scriptUsPerCall))} | ${perNode(g.nodes, (x) => pct(x.busy))} | ${g.unexpected} |`),
    '',
    'Ratios within each round, median over the rounds:',
    '',
    '| pipeline | Redis CPU/call cluster-1 / standalone | Redis CPU/call cluster-3 / cluster-1 | calls/s cluster-1 / standalone | calls/s cluster-3 / cluster-1 | calls/s cluster-3 on both cores / cluster-1 |',
    '| ---: | ---: | ---: | ---: | ---: | ---: |',
    ...report.gate.ratios.map((r) => `| ${r.pipeline} | ${r.cpuCluster1VsStandalone} | ${r.cpuCluster3VsCluster1} | ${r.rateCluster1VsStandalone} | ${r.rateCluster3VsCluster1} | ${r.rateCluster3BothCoresVsCluster1 ?? '-'} |`),
    '',
    `Idle Redis CPU, ms per second: ${report.idleCpuMsPerSec.map((x) => `${x.target} ${x.msPerSec}`).join(', ')}.`,
    '',
    '## Apply through the api (wrk)',
    '',
    `${settings.rounds} interleaved rounds of ${settings.seconds} s per case, wrk with ${settings.connections} connections: one wrk per api process and event path (${settings.eventsPerTarget} events per target; hello gets as many paths); one api process pinned (the api on core ${last}, wrk and every Redis node on core 0), two unpinned; medians.`,
    '',
    '| api processes | case | req/s | p50 µs | p99 µs | api CPU µs/req | api cores busy | Redis CPU µs/call | per node: share of calls | per node: CPU µs/call | per node: in-script wall µs/call | per node: busy | unexpected |',
    '| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | --- | --- | ---: |',
    ...report.api.summary.map((s) => `| ${s.processes}${s.pinned ? ' (pinned)' : ''} | ${s.case} | ${n(s.rps)} | ${s.p50Us} | ${s.p99Us} | ${s.apiCpuUsPerRequest} | ${s.apiCoresBusy} | ${s.redisCpuUsPerCall ?? '-'} | ${perNode(s.nodes, (x) => pct(x.callsShare))} | ${perNode(s.nodes, (x) => String(x.cpuUsPerCall))} | ${perNode(s.nodes, (x) => String(x.scriptUsPerCall))} | ${perNode(s.nodes, (x) => pct(x.busy))} | ${s.unexpected} |`),
    '',
    'Ratios within each round, median over the rounds:',
    '',
    '| api processes | req/s cluster-1 / standalone | req/s cluster-3 / cluster-1 | req/s standalone / hello | req/s cluster-1 / hello | req/s cluster-3 / hello | p99 cluster-3 / cluster-1 | api CPU/req cluster-1 / standalone | api CPU/req cluster-3 / cluster-1 | Redis CPU/call cluster-1 / standalone | Redis CPU/call cluster-3 / cluster-1 |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
    ...report.api.ratios.map((r) => `| ${r.processes} | ${r.cluster1VsStandalone} | ${r.cluster3VsCluster1} | ${r.standaloneVsHello} | ${r.cluster1VsHello} | ${r.cluster3VsHello} | ${r.p99Cluster3VsCluster1} | ${r.apiCpuCluster1VsStandalone} | ${r.apiCpuCluster3VsCluster1} | ${r.redisCpuCluster1VsStandalone} | ${r.redisCpuCluster3VsCluster1} |`),
    '',
    '## Memory of an event',
    '',
    `On ${memory.target}: ${memory.events} event(s) of ${n(memory.couponsPerEvent)} coupons issued through the api to users with ${memory.userIdChars}-character ids, then persisted by a worker; MEMORY USAGE (SAMPLES 0) per key, bytes per event.`,
    '',
    `| state | ${Object.keys(memory.persisted.byKey).join(' | ')} | all | outbox entries |`,
    `| --- | ${Object.keys(memory.persisted.byKey).map(() => '---:').join(' | ')} | ---: | ---: |`,
    ...(['created', 'issued', 'persisted'] as const).map((state) => `| ${state} | ${Object.keys(memory.persisted.byKey).map((k) => n(memory[state].byKey[k] ?? 0)).join(' | ')} | ${n(memory[state].bytesPerEvent)} | ${n(memory[state].outboxEntries)} |`),
    '',
    `A persisted event: ${n(memory.eventFixedBytesPersisted)} B (meta, counter, the trimmed outbox) + ${memory.bytesPerCouponPersisted} B per coupon (its users hash entry and persisted bit); a coupon adds ${memory.bytesPerCouponInOutbox} B to the outbox until it is persisted and trimmed.`,
    '',
    '## Capacity model',
    '',
    `${model.formula}.`,
    '',
    `Inputs, measured above: the gate costs one shard (cluster-1) ${model.inputs.gateUsPerCallUnbatched} µs of Redis CPU per call at P${Math.min(...settings.gatePipelines)} and ${model.inputs.gateUsPerCallBatched} µs at P${Math.max(...settings.gatePipelines)}; the api ${model.inputs.apiUsPerRequest} µs of CPU per request (cluster-3, ${settings.processCounts[0]} process); a persisted event ${n(model.inputs.eventFixedBytes)} B + ${model.inputs.bytesPerCoupon} B per coupon (+${model.inputs.bytesPerCouponInOutbox} B per coupon in the outbox).`,
    '',
    `- One shard: ${range(model.shardCallsPerSec)} gate calls/s (one core); one event, on any number of shards: the same.`,
    `- The api: ${n(model.apiRequestsPerCore)} requests/s per core, so ${range(model.apiCoresPerShard, String)} api cores keep one shard busy.`,
    `- Memory: ${n(model.couponsPerGiB)} persisted coupons per GiB; per GiB ${model.eventsPerGiB.map((e) => `${n(e.events)} events of ${n(e.couponsPerEvent)} coupons`).join(', ')}.`,
    '',
    `| shards | gate calls/s, events spread (P${Math.min(...settings.gatePipelines)} - P${Math.max(...settings.gatePipelines)}) | api cores to feed them |`,
    '| ---: | ---: | ---: |',
    ...model.byShards.map((s) => `| ${s.shards} | ${range(s.callsPerSec)} | ${range(s.apiCores, String)} |`),
  ];
  return `${lines.join('\n')}\n`;
}
