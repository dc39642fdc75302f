/**
 * A process held to a pod's memory limit on this machine, and what it used: a v1 memory cgroup of our own
 * (startService's `cgroup` option runs a process in it from its first instruction), the OOM kills the kernel
 * counted in a cgroup, and a process's resident set. Used by the overload fault test, the overload bench and the
 * cluster's overload check (which reads the kubelet's cgroup of a container).
 */
import { mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';

export const MEMORY_CGROUP_ROOT = '/sys/fs/cgroup/memory';

export interface MemoryCgroup {
  readonly path: string;
  oomKills(): number;
  /** Removes the folder; false while a process is still in it (it is being stopped): it stays behind, empty once it exits. */
  remove(): boolean;
}

/**
 * The heap flag the chart renders into NODE_OPTIONS for a container with this memory limit
 * (charts/coupon/values.yaml heapPercentOfMemoryLimit), so that a process held to a pod's limit here runs with
 * the heap it has in the pod; empty when the chart renders none.
 */
export function chartHeapFlag(limitBytes: number): string {
  const values = parse(readFileSync(new URL('../charts/coupon/values.yaml', import.meta.url), 'utf8')) as { heapPercentOfMemoryLimit: number };
  const percent = values.heapPercentOfMemoryLimit;
  return percent > 0 ? `--max-old-space-size=${Math.floor((limitBytes / 2 ** 20) * percent / 100)}` : '';
}

/** Makes <root>/<name> with memory.limit_in_bytes = limitBytes (no swap on this machine); throws where it cannot. */
export function createMemoryCgroup(name: string, limitBytes: number): MemoryCgroup {
  const path = join(MEMORY_CGROUP_ROOT, name);
  mkdirSync(path);
  writeFileSync(join(path, 'memory.limit_in_bytes'), String(limitBytes));
  return {
    path,
    oomKills: () => oomKillsIn(path),
    remove: () => {
      try {
        rmdirSync(path);
        return true;
      } catch {
        return false;
      }
    },
  };
}

/** The OOM kills the kernel counted in a v1 memory cgroup folder (memory.oom_control's oom_kill). */
export function oomKillsIn(path: string): number {
  return Number(/oom_kill (\d+)/.exec(readFileSync(join(path, 'memory.oom_control'), 'utf8'))?.[1] ?? 0);
}

/** A process's resident set now and at its peak (VmRSS, VmHWM), in bytes; undefined once it is gone. */
export function residentBytes(pid: number): { now: number; peak: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1] ?? 0) * 1024;
    return { now: kb('VmRSS'), peak: kb('VmHWM') };
  } catch {
    return undefined;
  }
}
