/** The report as Markdown (report.md, and the run in docs/bench/cluster.md). */
import type { Bounds } from './model.ts';
import type { ClusterReport, NodeSummary } from './report.ts';

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
