/** The api phase: apply through each target's api processes (and hello-world), driven by wrk. */
import { cpuTimeMs, type ServiceProcess } from '../../scripts/services.ts';
import { wrkBurst, wrkTotals } from '../wrk.ts';
import { round } from '../stats.ts';
import { cpuPerCall, nodeWindows, sampleAll } from './nodes.ts';
import { type ApiRun, CLUSTER_CASES, type ClusterBenchSettings, type ClusterCase, type RedisTargetName } from './report.ts';
import { type ClusterBenchContext, type Target, rotate } from './targets.ts';

/** The api phase at one process count: a warm-up of every case, then interleaved rounds. */
export async function measureApi(
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

/** One wrk per api process and event path, all at once; the case's figures together. */
async function loadCase(
  ctx: ClusterBenchContext, kase: ClusterCase, targets: Map<RedisTargetName, Target>, servers: Map<ClusterCase, ServiceProcess[]>,
  settings: ClusterBenchSettings, seconds: number, label: string, pinned: boolean,
): Promise<Omit<ApiRun, 'round'>> {
  const group = servers.get(kase)!;
  // hello answers any event id: the same number of paths, so the same number of wrk processes, as the others.
  const target = kase === 'hello' ? undefined : targets.get(kase)!;
  const events = target?.events ?? Array.from({ length: settings.eventsPerTarget }, (_, i) => `hello-${i}`);
  const nodes = target?.nodes ?? [];
  const connections = Math.max(1, Math.floor(settings.connections / (group.length * events.length)));
  const cpuBefore = group.map((p) => cpuTimeMs(p.child.pid!));
  const before = await sampleAll(nodes);
  const from = performance.now();
  const results = await Promise.all(group.flatMap((p, i) => events.map((id, e) => wrkBurst(ctx, {
    url: p.url, path: `/v1/events/${encodeURIComponent(id)}/apply`, seconds, connections, label: `${label}-${kase}-${i}-${e}`, expectedStatus: 202, pinned,
  }))));
  const wallMs = performance.now() - from;
  const after = await sampleAll(nodes);
  const cpuMs = group.reduce((sum, p, i) => sum + cpuTimeMs(p.child.pid!) - cpuBefore[i]!, 0);
  const totals = wrkTotals(results);
  const windows = nodeWindows(nodes, before, after, wallMs);
  return {
    case: kase, processes: group.length, ...totals,
    apiCpuUsPerRequest: round((cpuMs * 1000) / Math.max(totals.requests, 1), 1),
    apiCoresBusy: round(cpuMs / wallMs, 2),
    redisCpuUsPerCall: target ? cpuPerCall(windows) : null,
    nodes: windows,
  };
}

