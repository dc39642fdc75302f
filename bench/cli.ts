/**
 * The benchmark's command line and its two sizes:
 *
 *   node bench/run.ts [--quick] [--api-only [--rounds N] [--processes 1,2]] [--profile] [--out DIR] [--dir SERVERS_DIR]
 *                     [--designs naive,incr-direct,outbox]
 *
 * --quick runs a few seconds per design with small events (the test suite runs it); the default is the full run.
 * --api-only runs only the hot-path comparison (bench/hot-path.ts: hello, minimal, open and sold-out apply), the
 * fast loop while optimizing the apply route; --profile adds CPU profiles of the api under an open and a sold-out
 * burst (bench/profile.ts).
 */
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import type { HotPathSettings } from './hot-path.ts';
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

export interface BenchOptions {
  settings: Settings;
  hotPath: HotPathSettings;
  /** only the hot-path comparison */
  apiOnly: boolean;
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
      profile: { type: 'boolean', default: false },
      rounds: { type: 'string' },
      processes: { type: 'string' },
      out: { type: 'string' },
      dir: { type: 'string' },
      designs: { type: 'string' },
    },
  });
  const settings = args.quick ? QUICK : FULL;
  const designs = args.designs ? (args.designs.split(',') as DesignName[]) : DESIGNS;
  for (const design of designs) if (!DESIGNS.includes(design)) throw new Error(`unknown design ${design}; choose from ${DESIGNS.join(', ')}`);
  const apiOnly = args['api-only'];
  const hotPath = { ...HOT_PATH[apiOnly && !args.quick ? 'api-only' : settings.mode] };
  if (args.rounds) hotPath.rounds = Number(args.rounds);
  if (args.processes) hotPath.processCounts = args.processes.split(',').map(Number);
  return {
    settings,
    hotPath,
    apiOnly,
    profile: args.profile,
    designs,
    outDir: resolve(args.out ?? join(root, '.bench', 'results', apiOnly ? `api-only-${settings.mode}` : settings.mode)),
    serversDir: resolve(args.dir ?? join(root, '.bench', 'servers')),
  };
}
