/**
 * The Cluster capacity bench's report: its settings, what each phase measured (runs), their medians (summaries)
 * and ratios, as report.json holds them. The phases fill it (memory.ts, nodes.ts, gate.ts, api.ts), summary.ts
 * reduces the runs, markdown.ts renders it.
 */
import type { WrkTotals } from '../wrk.ts';
import type { MachineFacts } from '../machine.ts';
import type { CapacityModel } from './model.ts';

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

export interface ApiRun extends WrkTotals {
  case: ClusterCase;
  processes: number;
  round: number;
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
