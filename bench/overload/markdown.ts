/** The overload report as Markdown (report.md, and the run in docs/bench/overload.md). */
import { type OverloadReport, type OverloadStep, UNBOUNDED, VARIANT_LABELS } from '../overload.ts';

const n = (value: number) => value.toLocaleString('en-US');
const times = (value: number, capacity: number) => (capacity > 0 ? `${(value / capacity).toFixed(2)}` : '-');
const ms = (q: { p50: number; p99: number }, answered: boolean) => (answered ? `${q.p50} / ${q.p99}` : '-');

function common(step: OverloadStep, capacity: number): string[] {
  const answered = step.answeredPerSec > 0 || (step.byStatus['503'] ?? 0) > 0;
  const decided = (step.byStatus['202'] ?? 0) > 0;
  const died = step.api.alive ? '' : ` **(died${step.api.oomKills ? ', OOM-killed' : ''})**`;
  const other = Object.entries(step.otherErrors).map(([kind, count]) => `${n(count)} ${kind}`).join(', ');
  return [
    `**${n(step.goodputPerSec)}** (${times(step.goodputPerSec, capacity)})`,
    n(step.answeredPerSec),
    n(step.shedPerSec),
    `${n(step.timeouts + step.notSent)}${other ? ` (+ ${other})` : ''}`,
    ms(step.latencyMs, answered),
    ms(step.issuedLatencyMs, decided),
    `${n(step.api.peakRssMiB)}${died}`,
    `${step.api.cpuSec} (${step.api.cores})`,
    `${n(step.api.shed.queueFull)} / ${n(step.api.shed.queueTimeout)} / ${n(step.api.shed.refusedConnections)}`,
    step.api.admissionLimitAtEnd === null ? '-' : n(step.api.admissionLimitAtEnd),
  ];
}

const tcp = (step: OverloadStep) => `${n(step.machine.listenOverflows)} / ${n(step.machine.synRetransmits)}`;

const COMMON_HEAD = 'goodput/s (x capacity) | answers within 2 s /s, 503 included | 503/s | no answer within 2 s | all answers p50 / p99 ms | 202 p50 / p99 ms | api peak RSS MiB | api CPU s (cores) | shed: queue full / queue timeout / connections refused | admission limit at the end';
const COMMON_ALIGN = '---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---:';

export function overloadMarkdown(report: OverloadReport): string {
  const { machine, settings, capacity } = report;
  const cap = capacity.goodputPerSec;
  const closed = report.steps.filter((s) => s.loop === 'closed');
  const open = report.steps.filter((s) => s.loop === 'open');
  const lines = [
    `# Overload: one api process (${report.startedAt.slice(0, 16).replace('T', ' ')} UTC)`,
    '',
    `Machine: ${machine.cpus} cores (${machine.cpuModel}), ${machine.memoryGiB} GiB, ${machine.os}, Node ${machine.node}, Redis ${machine.redis}, MariaDB ${machine.mariadb}; `
      + `load average ${machine.loadAverage1mAtStart} at the start and ${machine.loadAverage1mAtEnd} at the end; open files at most ${machine.openFilesLimit} per process; the kernel's accept queue at most ${machine.somaxconn ?? '?'} connections (net.core.somaxconn; the api listens with a backlog of 4096), its SYN queue ${machine.tcpMaxSynBacklog ?? '?'} (tcp_max_syn_backlog).${machine.note ? ` ${machine.note}` : ''}`,
    '',
    `The api: one process of src/api/main.ts per step (fresh, so that its peak RSS is the step's), ${report.cgroup.path ? `in a ${report.cgroup.note}` : `without a memory cgroup (${report.cgroup.note})`}. `
      + `"admission control" is the shipped defaults; "no admission control" sets ${Object.entries(UNBOUNDED).map(([key, value]) => `${key}=${value}`).join(' ')}. `
      + `Load: scripts/loadgen (Go), one process, applies of new users to one open event, 2 s timeout; each step ${settings.warmupSeconds} s of warm-up at 64 connections, then ${settings.seconds} s of load (closed loop) or ${settings.openSeconds} s (open loop). `
      + 'Rates per second count the answers that came in during the seconds of load (not those to what was still in flight when sending stopped); "no answer within 2 s" counts every request of the step. '
      + `Run time ${report.runSeconds} s.`,
    '',
    `**Capacity**: ${n(cap)} decided answers/s (202/409/410 within 2 s) at ${settings.connections[0]} connections with admission control, ${n(capacity.withoutAdmissionPerSec)} without.`,
    '',
    '## Closed loop',
    '',
    'Each connection sends its next apply as soon as it has the answer to the last. The clients of "admission control" and "no admission control" ignore Retry-After (like wrk); those of "clients honor Retry-After" wait it out after a 503, doubled for each 503 in a row, as the README tells clients.',
    '',
    `| connections | api | requests sent/s | ${COMMON_HEAD} | generator CPU s | accept queue overflows / SYNs sent again | machine busy, cores (others) |`,
    `| ---: | --- | ---: | ${COMMON_ALIGN} | ---: | ---: | ---: |`,
    ...closed.map((s) => `| ${n(s.connections!)} | ${VARIANT_LABELS[s.variant]} | ${n(s.sentPerSec)} | ${common(s, cap).join(' | ')} | ${s.loadgen.cpuSec} | ${tcp(s)} | ${s.machine.busyCores} (${s.machine.othersCores}) |`),
    '',
    '## Open loop',
    '',
    `Requests due at a constant rate for ${settings.openSeconds} s, each on an idle connection or a new one (at most ${n(settings.maxConnections)}; a connection whose request timed out is closed); each one's latency counts from when it was due. A request that finds no connection free within 2 s of being due is not sent and counts as no answer, as does a connect that failed. What the generator achieved: the wall time it took for its ${settings.openSeconds} s schedule (plus up to 2 s for the last answers), its CPU time, and the apply requests that reached the api (read and answered by it, any status, also after the client gave up). Latencies count from when a request was due; where the generator is behind its schedule they include its own lag, which is how a p99 can pass the 2 s timeout.`,
    '',
    `| rate asked /s (x capacity) | api | generator wall s / CPU s | requests that reached the api | ${COMMON_HEAD} | accept queue overflows / SYNs sent again | machine busy, cores (others) |`,
    `| ---: | --- | ---: | ---: | ${COMMON_ALIGN} | ---: | ---: |`,
    ...open.map((s) => `| ${n(s.rate!)} (${s.factor}) | ${VARIANT_LABELS[s.variant]} | ${s.loadgen.wallSec} / ${s.loadgen.cpuSec} | ${n(s.apiAnswered)} | ${common(s, cap).join(' | ')} | ${tcp(s)} | ${s.machine.busyCores} (${s.machine.othersCores}) |`),
    '',
  ];
  return `${lines.join('\n')}\n`;
}
