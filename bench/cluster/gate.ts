/** The gate phase: gate.lua driven directly by redis-benchmark, so that Redis, not the client, runs out. */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { binary } from '../../scripts/local-servers/processes.ts';
import { eventKeys } from '../../src/redis/keys.ts';
import { isCluster, nodeName, primaryOf } from '../../src/redis/topology.ts';
import { cpuPerCall, nodeWindows, placeRedis, sampleAll } from './nodes.ts';
import { type ClusterBenchSettings, type GateRun, type GateVariant, type NodeWindow, REDIS_TARGETS, type RedisTargetName } from './report.ts';
import { type ClusterBenchContext, type Target, rotate } from './targets.ts';

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
export async function measureGate(ctx: ClusterBenchContext, targets: Map<RedisTargetName, Target>, settings: ClusterBenchSettings): Promise<GateRun[]> {
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
const GATE_LUA = readFileSync(new URL('../../src/redis/gate.lua', import.meta.url), 'utf8');

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
  // As the api calls it: on a Cluster with the ids of the primaries it checked (the script runs on no other).
  const checkedNodes = isCluster(target.client)
    ? (await Promise.all(target.nodes.map((node) => node.client.call('CLUSTER', 'MYID') as Promise<string>))).join(',')
    : '';
  const generators = await Promise.all(target.events.map((id) => {
    const keys = eventKeys(id);
    const port = target.nodes.find((node) => node.name === nodeName(primaryOf(target.client, keys.meta)!))!.port;
    const args = [
      '-h', '127.0.0.1', '-p', String(port), '-c', String(connections), '-P', String(variant.pipeline), '-l', '-q', '-r', '2000000000',
      'EVALSHA', sha, '4', keys.meta, keys.issued, keys.users, keys.outbox, id, `${run}.__rand_int__`, `${run}.__rand_int__`, checkedNodes,
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

