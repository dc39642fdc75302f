/**
 * The benchmark's command line and its two sizes:
 *
 *   node bench/run.ts [--quick] [--api-only [--rounds N] [--processes 1,2] [--connections 64[,256,1000]]] [--profile] [--out DIR]
 *                     [--dir SERVERS_DIR]
 *                     [--designs naive,incr-direct,outbox]
 *   node bench/run.ts --cluster [--quick] [--rounds N] [--processes 1,2] [--out DIR] [--dir SERVERS_DIR]
 *   node bench/run.ts --overload [--quick] [--steps 64,1000,4000,10000] [--seconds 8] [--rates 0.5,1,2]
 *                     [--out DIR] [--dir SERVERS_DIR]
 *
 * --quick runs a few seconds per design with small events (the test suite runs it); the default is the full run.
 * --api-only runs only the hot-path comparison (bench/hot-path.ts: hello, minimal, open and sold-out apply), the
 * fast loop while optimizing the apply route (--connections: wrk's keep-alive connections per case, 64 by default;
 * several, comma-separated, run it once per count and plot req/s and p99 against connections);
 * --profile adds CPU profiles of the api under an open and a sold-out
 * burst (bench/profile.ts).
 * --cluster runs only the Redis Cluster capacity bench (bench/cluster.ts, docs/bench/cluster.md): the gate's Redis
 * cost per call and apply throughput on a standalone Redis, a 1-shard and a 3-shard Cluster, the memory of an
 * event, and the capacity model; about 4 minutes (--quick: a smoke run of under a minute).
 * --overload runs only the overload bench (bench/overload.ts, docs/bench/overload.md): one api process in a
 * 512 MiB memory cgroup under a closed loop of 64 to 10,000 connections and an open loop of 0.5x to 50x its
 * measured capacity, each step with and without admission control; about 5 minutes (--quick: under a minute).
 * --steps sets its closed loop's connections per step (the first is the uncongested point that defines capacity),
 * --seconds each closed step's seconds of load, --rates the open loop's multiples of capacity (`none` skips it).
 */
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { ClusterBenchSettings } from './cluster/report.ts';
import type { HotPathSettings } from './hot-path.ts';
import type { OverloadSettings } from './overload.ts';
import type { DesignName, Settings } from './report.ts';

export const DESIGNS: DesignName[] = ['naive', 'incr-direct', 'outbox'];

const QUICK: Settings = {
  mode: 'quick', apiProcesses: 2, connections: 16, repeatFraction: 0.1, persistRatePerSec: 1000, persistBatchSize: 100,
  bystanderOpsPerSec: 100, bystanderTimeoutMs: 2000, idleBaselineSec: 1.5, warmupRequests: 200, ceilingRequests: 1500,
  maxBurstSec: 20, drainRows: 2000, drainRatePerSec: 1_000_000, drainBatchSizes: [100], durableCommits: true, layouts: ['shared'],
  scenarios: [{ name: 'small', totalQuantity: 20, requests: 600 }, { name: 'large', totalQuantity: 300, requests: 1500 }],
};

const FULL: Settings = {
  mode: 'full', apiProcesses: 2, connections: 64, repeatFraction: 0.1, persistRatePerSec: 1000, persistBatchSize: 100,
  bystanderOpsPerSec: 200, bystanderTimeoutMs: 2000, idleBaselineSec: 10, warmupRequests: 5000, ceilingRequests: 40_000,
  maxBurstSec: 90, drainRows: 50_000, drainRatePerSec: 1_000_000, drainBatchSizes: [100, 500], durableCommits: true, layouts: ['shared', 'pinned'],
  scenarios: [{ name: 'N=100', totalQuantity: 100, requests: 40_000 }, { name: 'N=10,000', totalQuantity: 10_000, requests: 40_000 }],
};

/** The hot-path comparison: its own fast loop (--api-only), and a shorter one inside every full or quick run. */
const HOT_PATH: Record<'api-only' | 'full' | 'quick', HotPathSettings> = {
  'api-only': { rounds: 9, seconds: 3, connections: 64, processCounts: [1, 2] },
  full: { rounds: 5, seconds: 3, connections: 64, processCounts: [1, 2] },
  quick: { rounds: 1, seconds: 1, connections: 16, processCounts: [1] },
};

/** The Cluster capacity bench (--cluster): its own rounds, about 4 minutes in all; --quick a smoke run. */
const CLUSTER: Record<'full' | 'quick', ClusterBenchSettings> = {
  full: {
    rounds: 5, seconds: 3, connections: 64, processCounts: [1, 2], eventsPerTarget: 3,
    gateRounds: 5, gateSeconds: 1, gateConnections: 48, gatePipelines: [16, 1], memoryCoupons: 1000, memoryEvents: 3,
  },
  quick: {
    rounds: 1, seconds: 1, connections: 16, processCounts: [1], eventsPerTarget: 3,
    gateRounds: 1, gateSeconds: 0.5, gateConnections: 12, gatePipelines: [16, 1], memoryCoupons: 100, memoryEvents: 1,
  },
};

/** The overload bench (--overload): about 5 minutes in all; --quick a smoke run. */
const OVERLOAD: Record<'full' | 'quick', OverloadSettings> = {
  full: {
    mode: 'full', seconds: 3, openSeconds: 2, warmupSeconds: 1, connections: [64, 256, 1000, 2500, 5000, 10_000], honorFrom: 2500,
    rateFactors: [0.5, 1, 2, 10, 50], maxConnections: 10_000, memoryLimitMiB: 512,
  },
  quick: {
    mode: 'quick', seconds: 1, openSeconds: 1, warmupSeconds: 0.5, connections: [64, 2000], honorFrom: 2000,
    rateFactors: [0.5, 5], maxConnections: 5000, memoryLimitMiB: 512,
  },
};

export interface BenchOptions {
  settings: Settings;
  hotPath: HotPathSettings;
  /** only the hot-path comparison */
  apiOnly: boolean;
  /** --api-only: wrk's connections, one hot-path run per count */
  hotPathConnections: number[];
  /** only the Redis Cluster capacity bench */
  cluster: boolean;
  clusterBench: ClusterBenchSettings;
  /** only the overload bench */
  overload: boolean;
  overloadBench: OverloadSettings;
  /** CPU profiles of the api under an open and a sold-out burst */
  profile: boolean;
  designs: DesignName[];
  /** where report.json, report.md and the plots go */
  outDir: string;
  /** where the throwaway servers keep their data */
  serversDir: string;
}

/** Reads the command line; throws on an unknown design. Paths default to .bench/ under `root`. */
export function parseBenchArgs(argv: string[], root: string): BenchOptions {
  const { values: args } = parseArgs({
    args: argv,
    options: {
      quick: { type: 'boolean', default: false },
      'api-only': { type: 'boolean', default: false },
      cluster: { type: 'boolean', default: false },
      overload: { type: 'boolean', default: false },
      profile: { type: 'boolean', default: false },
      rounds: { type: 'string' },
      processes: { type: 'string' },
      connections: { type: 'string' },
      out: { type: 'string' },
      dir: { type: 'string' },
      designs: { type: 'string' },
      steps: { type: 'string' },
      seconds: { type: 'string' },
      rates: { type: 'string' },
    },
  });
  const settings = args.quick ? QUICK : FULL;
  const designs = args.designs ? (args.designs.split(',') as DesignName[]) : DESIGNS;
  for (const design of designs) if (!DESIGNS.includes(design)) throw new Error(`unknown design ${design}; choose from ${DESIGNS.join(', ')}`);
  const apiOnly = args['api-only'];
  const hotPath = { ...HOT_PATH[apiOnly && !args.quick ? 'api-only' : settings.mode] };
  if (args.rounds) hotPath.rounds = Number(args.rounds);
  if (args.processes) hotPath.processCounts = args.processes.split(',').map(Number);
  const hotPathConnections = args.connections ? args.connections.split(',').map(Number) : [hotPath.connections];
  hotPath.connections = hotPathConnections[0]!;
  const cluster = args.cluster;
  if (cluster && apiOnly) throw new Error('--cluster and --api-only are separate runs: choose one');
  const clusterBench = { ...CLUSTER[settings.mode] };
  if (args.rounds) clusterBench.rounds = Number(args.rounds);
  if (args.processes) clusterBench.processCounts = args.processes.split(',').map(Number);
  const overload = args.overload;
  if (overload && (cluster || apiOnly)) throw new Error('--overload, --cluster and --api-only are separate runs: choose one');
  const overloadBench = { ...OVERLOAD[settings.mode] };
  if (args.steps) overloadBench.connections = args.steps.split(',').map(Number);
  if (args.seconds) overloadBench.seconds = Number(args.seconds);
  if (args.rates) overloadBench.rateFactors = args.rates === 'none' ? [] : args.rates.split(',').map(Number);
  const results = overload ? `overload-${settings.mode}` : cluster ? `cluster-${settings.mode}` : apiOnly ? `api-only-${settings.mode}` : settings.mode;
  return {
    settings,
    hotPath,
    apiOnly,
    hotPathConnections,
    cluster,
    clusterBench,
    overload,
    overloadBench,
    profile: args.profile,
    designs,
    outDir: resolve(args.out ?? join(root, '.bench', 'results', results)),
    serversDir: resolve(args.dir ?? join(root, '.bench', 'servers')),
  };
}
