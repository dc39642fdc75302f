/**
 * Each Redis node as the bench watches it: its CPU (INFO cpu, the server's own account, user + system) and its
 * gate calls and their in-script time (INFO commandstats, EVALSHA + EVAL), sampled before and after a window;
 * where the nodes run (pinned to core 0, or anywhere); and what they do idle.
 */
import { cpus } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import type { CouponRedis } from '../../src/redis/client.ts';
import { pinTo } from '../layout.ts';
import { round } from '../stats.ts';
import type { ClusterReport, NodeWindow, RedisTargetName } from './report.ts';
import type { Target } from './targets.ts';

/** A Redis node of a target, and a client of its own (not the Cluster client). */
export interface Node {
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

/** The targets' Redis nodes on core 0 (pinned: with wrk, or apart from redis-benchmark), or anywhere. */
export function placeRedis(targets: Iterable<Target>, pinned: boolean): void {
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

export const sampleAll = (nodes: Node[]) => Promise.all(nodes.map(sample));

/** What each node did between two samples taken `wallMs` apart. */
export function nodeWindows(nodes: Node[], before: NodeSample[], after: NodeSample[], wallMs: number): NodeWindow[] {
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
export const cpuPerCall = (windows: NodeWindow[]) => {
  const calls = windows.reduce((sum, w) => sum + w.gateCalls, 0);
  return round(windows.reduce((sum, w) => sum + w.cpuUsPerCall * w.gateCalls, 0) / Math.max(calls, 1), 2);
};

/** Each node's CPU over 2 s with nothing sent to it. */
export async function measureIdle(targets: Map<RedisTargetName, Target>): Promise<ClusterReport['idleCpuMsPerSec']> {
  const nodes = [...targets.values()].flatMap((t) => t.nodes);
  const before = await sampleAll(nodes);
  const from = performance.now();
  await sleep(2_000);
  const after = await sampleAll(nodes);
  const seconds = (performance.now() - from) / 1000;
  return nodes.map((node, i) => ({ target: node.target, node: node.name, msPerSec: round((after[i]!.cpuUs - before[i]!.cpuUs) / 1000 / seconds, 2) }));
}

