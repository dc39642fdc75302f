/**
 * The runs reduced: medians per variant and case, per node, and ratios taken within each round (the cases of a
 * round ran back to back, under the same conditions) with their median over the rounds.
 */
import { cpus } from 'node:os';
import { percentile, round } from '../stats.ts';
import { gateVariants } from './gate.ts';
import {
  type ApiRatios, type ApiRun, type ApiSummary, CLUSTER_CASES, type ClusterBenchSettings, type ClusterCase, type GateRatios, type GateRun,
  type GateSummary, type NodeSummary, type NodeWindow, type RedisTargetName,
} from './report.ts';

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

export function summariseGate(runs: GateRun[], settings: ClusterBenchSettings): GateSummary[] {
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

export function summariseApi(runs: ApiRun[], settings: ClusterBenchSettings): ApiSummary[] {
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

export function ratiosOfGate(runs: GateRun[], settings: ClusterBenchSettings): GateRatios[] {
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

export function ratiosOfApi(runs: ApiRun[], settings: ClusterBenchSettings): ApiRatios[] {
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

