/**
 * Where the benchmark's processes run. `shared`: anywhere (the scheduler decides, as on a machine where all of
 * it shares the cores). `pinned`: MariaDB and the bystander on core 0, everything else (Redis, PostgreSQL, the
 * designs' processes, the worker, the load generator and this orchestrator) on the other cores, so that the
 * bystander's latency measures what the database suffers from a design's writes, not CPU contention with the
 * load. Processes started later inherit the orchestrator's cores.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';

export const LAYOUTS = ['shared', 'pinned'] as const;
export type Layout = (typeof LAYOUTS)[number];

export interface LayoutPids {
  /** MariaDB and the bystander */
  database: number[];
  /** Redis, PostgreSQL, and this process */
  service: number[];
}

/**
 * Puts the running processes (all their threads) where the layout wants them; a no-op on one core. Counts the
 * machine's cores, not this process's (which the pinned layout narrows to the service cores).
 */
export function applyLayout(layout: Layout, pids: LayoutPids): void {
  const cores = cpus().length;
  if (cores < 2) return;
  const all = `0-${cores - 1}`;
  for (const pid of pids.database) pinTo(pid, layout === 'pinned' ? '0' : all);
  for (const pid of pids.service) pinTo(pid, layout === 'pinned' ? `1-${cores - 1}` : all);
}

/** Every thread of a running process onto these cores (a taskset list: "0", "1-3"). */
export function pinTo(pid: number, cores: string): void {
  execFileSync('taskset', ['-a', '-p', '-c', cores, String(pid)], { stdio: 'ignore' });
}

/** The pid a server wrote into its pid file. */
export const pidFromFile = (path: string): number => Number(readFileSync(path, 'utf8').trim().split('\n')[0]);
