/** The report's shape (report.json; field names are stable), the targets of the issue, and the Markdown rendering. */
import { type HotPathReport, hotPathMarkdown } from './hot-path.ts';
import type { Layout } from './layout.ts';
import type { MachineFacts } from './machine.ts';

export type DesignName = 'naive' | 'incr-direct' | 'outbox';

export interface Settings {
  mode: 'quick' | 'full';
  /** Koa processes per design, each on its own port; the load generator spreads its connections over them */
  apiProcesses: number;
  connections: number;
  /** share of requests from a user who already applied in the same burst */
  repeatFraction: number;
  /** the outbox worker's global write cap during the bursts */
  persistRatePerSec: number;
  persistBatchSize: number;
  bystanderOpsPerSec: number;
  bystanderTimeoutMs: number;
  idleBaselineSec: number;
  warmupRequests: number;
  ceilingRequests: number;
  maxBurstSec: number;
  /** coupons pre-filled into the outbox for the unthrottled worker measurement */
  drainRows: number;
  drainRatePerSec: number;
  /** PERSIST_BATCH_SIZE values the unthrottled worker is measured with */
  drainBatchSizes: number[];
  /** innodb_flush_log_at_trx_commit = 1, as production MySQL runs (the throwaway server starts with 2) */
  durableCommits: boolean;
  scenarios: Array<{ name: string; totalQuantity: number; requests: number }>;
  /** each layout runs every design again (bench/layout.ts); the first is the one the main targets judge */
  layouts: Layout[];
}

export interface Phase {
  requests: number;
  durationSec: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** rps divided by the hello-world ceiling of the same run */
  ratioToCeiling: number | null;
}

export interface BystanderStats {
  ops: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  errors: number;
}

export interface BurstResult {
  design: DesignName;
  layout: Layout;
  scenario: string;
  totalQuantity: number;
  requests: number;
  /** accepted: 202 answers; rows: coupons in MySQL once everything is persisted (the truth) */
  issued: { accepted: number; rows: number; overIssue: number; exact: boolean };
  /** answers by HTTP status */
  statuses: Record<string, number>;
  errors: { total: number; connection: number; timeouts: number; unexpectedStatus: number };
  overall: Phase;
  /** from the first request until the first 410 sold_out answer */
  open: Phase;
  /** after the first 410; null when the burst never sold the event out */
  soldOut: Phase | null;
  burstSec: number;
  /** from the burst's first request until the last coupon row was written */
  persistedAfterSec: number;
  mysql: {
    /** coupon rows of this event written in any one-second bucket from the burst's start (from created_at) */
    couponRowsPerSecPeak: number;
    /** the event's rows over the time from its first to its last row */
    couponRowsPerSecMean: number;
    /** all rows inserted in MariaDB (every table, bystander included), highest one-second rate */
    rowsInsertedPerSecPeak: number;
    /** INSERT statements (Com_insert), highest one-second rate */
    insertStatementsPerSecPeak: number;
  };
  /** the hello-world ceiling measured right before this design; every ratioToCeiling divides by it */
  ceilingRps: number;
  /**
   * CPU time the design's api processes spent per request during the burst (user + system, from /proc): a cost
   * that, unlike throughput, hardly depends on what else the shared machine is doing
   */
  apiCpuUsPerRequest: number;
  /** the bystander during [burst start, all persisted]; p99VsIdle is its p99 over the idle p99 */
  bystander: (BystanderStats & { p99VsIdle: number }) | null;
  window: { fromMs: number; toMs: number };
  /** over time, t in seconds since the burst's first request */
  series: {
    requestsPerSec: Array<{ t: number; value: number }>;
    couponRowsPerSec: Array<{ t: number; value: number }>;
    mysqlCounters: Array<{ t: number; rowsPerSec: number; statementsPerSec: number }>;
    bystanderP99Ms: Array<{ t: number; value: number }>;
  };
}

export interface CeilingRun {
  /** when it ran: "before <design>" or "end" */
  label: string;
  layout: Layout;
  requests: number;
  durationSec: number;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  errors: number;
  /** the hello-world processes' CPU time per request */
  cpuUsPerRequest: number;
  window: { fromMs: number; toMs: number };
  /** the bystander during this burst: what CPU contention alone does to it, with no extra database work */
  bystander: (BystanderStats & { p99VsIdle: number }) | null;
}

export interface DrainRun {
  rows: number;
  batchSize: number;
  ratePerSec: number;
  /** from the first to the last coupon's created_at */
  drainSec: number;
  rowsPerSec: number;
  wallSecIncludingStartup: number;
}

export interface Target {
  id: string;
  description: string;
  target: string;
  value: string;
  /** null: not measured in this run */
  met: boolean | null;
}

export interface BenchReport {
  schemaVersion: 1;
  mode: 'quick' | 'full';
  startedAt: string;
  finishedAt: string;
  machine: MachineFacts;
  settings: Settings;
  /** the highest of the hello-world runs (one before each design, one at the end) */
  ceiling: { rps: number; runs: CeilingRun[] };
  bystanderIdle: BystanderStats;
  /** the idle baseline measured at the start of each layout */
  bystanderIdleByLayout: Partial<Record<Layout, BystanderStats>>;
  results: BurstResult[];
  /** the unthrottled worker: the best run, and every run by batch size */
  worker: { rowsPerSec: number; batchSize: number; runs: DrainRun[] } | undefined;
  /** the hot-path comparison (bench/hot-path.ts), measured after the designs */
  hotPath?: HotPathReport;
  targets: Target[];
}

/** The issue's targets, judged on this run. They are reported, never asserted. */
export function evaluateTargets(report: BenchReport): Target[] {
  // The main targets are judged in the first layout; the pinned one adds its own bystander figure.
  const main = report.settings.layouts[0];
  const inMain = report.results.filter((r) => r.layout === main);
  const outbox = inMain.filter((r) => r.design === 'outbox');
  const incr = inMain.filter((r) => r.design === 'incr-direct');
  const largest = outbox.at(-1);
  const cap = report.settings.persistRatePerSec;
  const targets: Target[] = [];
  const add = (id: string, description: string, target: string, value: string | undefined, met: boolean | undefined) =>
    targets.push({ id, description, target, value: value ?? 'not measured', met: met ?? null });

  add('outbox-open-throughput', `outbox apply throughput while open (${largest?.scenario ?? '-'}) / hello-world ceiling`, '>= 0.80',
    fmt(largest?.open.ratioToCeiling, 2), largest && (largest.open.ratioToCeiling ?? 0) >= 0.8);
  const soldOut = outbox.filter((r) => r.soldOut).map((r) => r.soldOut!.ratioToCeiling ?? 0);
  add('outbox-sold-out-throughput', 'outbox apply throughput after sold out / hello-world ceiling (worst burst)', '>= 0.95',
    soldOut.length ? outbox.map((r) => `${fmt(r.soldOut?.ratioToCeiling, 2) ?? '-'} (${r.scenario})`).join(', ') : undefined,
    soldOut.length ? Math.min(...soldOut) >= 0.95 : undefined);
  const p99 = outbox.length ? Math.max(...outbox.map((r) => r.overall.p99Ms)) : undefined;
  add('outbox-p99', `outbox apply p99 at ${report.settings.connections} connections (worst burst)`, '< 10 ms',
    p99 === undefined ? undefined : `${fmt(p99, 1)} ms`, p99 === undefined ? undefined : p99 < 10);
  // A batch is written at once at the start of its reserved slot, so a fixed one-second bucket can hold one batch more.
  const batch = report.settings.persistBatchSize;
  add('outbox-writes-at-cap', `outbox coupon writes per one-second bucket during the burst (${largest?.scenario ?? '-'}), cap ${cap}/s, batch ${batch}`,
    `peak <= ${cap + batch}/s (cap + one batch), flat at the cap`,
    largest && `peak ${largest.mysql.couponRowsPerSecPeak}/s, mean ${largest.mysql.couponRowsPerSecMean}/s`,
    largest && largest.mysql.couponRowsPerSecPeak <= cap + batch);
  const outboxBystander = outbox.length ? Math.max(...outbox.map((r) => r.bystander?.p99VsIdle ?? Number.NaN)) : undefined;
  add('bystander-outbox', 'bystander p99 during outbox bursts / idle p99 (worst burst)', '<= 1.5',
    fmt(outboxBystander, 2), outboxBystander === undefined ? undefined : outboxBystander <= 1.5);
  const mainCeiling = report.ceiling.runs.filter((r) => r.layout === main);
  const control = mainCeiling.length ? Math.max(...mainCeiling.map((r) => r.bystander?.p99VsIdle ?? Number.NaN)) : undefined;
  add('bystander-hello-control', 'bystander p99 during hello-world bursts / idle p99 (worst run): CPU contention alone, no database work', 'for reference',
    fmt(control, 2), undefined);
  const incrBystander = incr.length ? Math.max(...incr.map((r) => r.bystander?.p99VsIdle ?? Number.NaN)) : undefined;
  add('bystander-incr-direct', 'bystander p99 during incr-direct bursts / idle p99 (worst burst), for contrast', 'far worse than outbox',
    fmt(incrBystander, 2), incrBystander === undefined || outboxBystander === undefined ? undefined : incrBystander > outboxBystander);
  add('worker-unthrottled', `one worker's rows/s with the cap lifted (${report.settings.drainRows} pre-filled coupons)`, '>= 20,000',
    report.worker?.runs.map((run) => `${run.rowsPerSec.toLocaleString('en-US')} (batch ${run.batchSize})`).join(', '), report.worker && report.worker.rowsPerSec >= 20_000);
  const pinned = report.results.filter((r) => r.layout === 'pinned' && r.design === 'outbox');
  const pinnedBystander = pinned.length ? Math.max(...pinned.map((r) => r.bystander?.p99VsIdle ?? Number.NaN)) : undefined;
  add('bystander-outbox-pinned', 'pinned layout (MariaDB and the bystander on a core of their own): bystander p99 during outbox bursts / idle p99 (worst burst)', '<= 1.5',
    fmt(pinnedBystander, 2), pinnedBystander === undefined ? undefined : pinnedBystander <= 1.5);
  const exact = report.results.filter((r) => r.design !== 'naive');
  add('exactly-n', 'incr-direct and outbox issue exactly N in every burst', 'rows = N',
    exact.length ? exact.map((r) => `${r.design} ${r.issued.rows}/${r.totalQuantity}`).join(', ') : undefined, exact.length ? exact.every((r) => r.issued.exact) : undefined);
  const hot = report.hotPath?.ratios.find((r) => r.processes === 1);
  add('hot-open', 'open-event apply req/s / the minimal one-round-trip design, one process (hot path)', '>= 0.90', fmt(hot?.openVsMinimal, 2), hot && hot.openVsMinimal >= 0.9);
  add('hot-sold-out', 'sold-out apply req/s / Koa hello, one process (hot path)', '>= 0.95', fmt(hot?.soldOutVsHello, 2), hot && hot.soldOutVsHello >= 0.95);
  add('hot-p99', 'open-event apply p99 / the minimal design p99, one process (hot path)', '<= 1.5', fmt(hot?.openP99VsMinimalP99, 2), hot && hot.openP99VsMinimalP99 <= 1.5);
  return targets;
}

function fmt(value: number | null | undefined, digits: number): string | undefined {
  return value === undefined || value === null || Number.isNaN(value) ? undefined : value.toFixed(digits);
}

const ms = (phase: Phase | null) => (phase ? `${phase.p50Ms} / ${phase.p99Ms}` : '-');
const rps = (phase: Phase | null) => (phase ? `${phase.rps.toLocaleString('en-US')} (${phase.ratioToCeiling?.toFixed(2) ?? '-'})` : '-');

export function resultsTable(report: BenchReport): string {
  const lines = [
    '| layout | design | event | requests | coupons / N | open req/s (× ceiling) | open p50 / p99 ms | sold-out req/s (× ceiling) | sold-out p50 / p99 ms | errors | coupon writes/s peak | INSERT stmts/s peak | bystander p50 / p99 ms (p99 × idle) | all persisted after | api CPU µs/req |',
    '| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const r of report.results) {
    const over = r.issued.overIssue ? ` (**+${r.issued.overIssue}**)` : '';
    const bystander = r.bystander ? `${r.bystander.p50Ms} / ${r.bystander.p99Ms} (${r.bystander.p99VsIdle}×)` : '-';
    lines.push(`| ${r.layout} | ${r.design} | ${r.scenario} | ${r.requests.toLocaleString('en-US')} | ${r.issued.rows.toLocaleString('en-US')} / ${r.totalQuantity.toLocaleString('en-US')}${over} | ${rps(r.open)} | ${ms(r.open)} | ${rps(r.soldOut)} | ${ms(r.soldOut)} | ${r.errors.total} | ${r.mysql.couponRowsPerSecPeak.toLocaleString('en-US')} | ${r.mysql.insertStatementsPerSecPeak.toLocaleString('en-US')} | ${bystander} | ${r.persistedAfterSec} s | ${r.apiCpuUsPerRequest} |`);
  }
  return lines.join('\n');
}

export function markdownReport(report: BenchReport): string {
  const m = report.machine;
  const s = report.settings;
  const ceiling = report.ceiling;
  const lines = [
    `# Burst benchmark (${report.mode} run, ${report.startedAt.slice(0, 16).replace('T', ' ')} UTC)`,
    '',
    `Machine: ${m.cpus} cores (${m.cpuModel}), ${m.memoryGiB} GiB, ${m.os}; Node ${m.node}, Redis ${m.redis}, MariaDB ${m.mariadb}, autocannon ${m.autocannon}; load average ${m.loadAverage1mAtStart} at start.${m.note ? ` ${m.note}` : ''}`,
    '',
    `Setup: MariaDB with innodb_flush_log_at_trx_commit=${s.durableCommits ? 1 : 2}; ${s.apiProcesses} Koa processes per design, ${s.connections} connections from autocannon in its own process over loopback, ${Math.round(s.repeatFraction * 100)}% repeat users; outbox worker capped at ${s.persistRatePerSec} rows/s in batches of ${s.persistBatchSize}; bystander ${s.bystanderOpsPerSec} order ops/s (INSERT and point SELECT alternating).`,
    '',
    `Hello-world ceiling, measured before each design (each design's ratios use its own): ${ceiling.runs.map((r) => `${r.layout} ${r.label} ${r.rps.toLocaleString('en-US')} req/s (p99 ${r.p99Ms} ms, ${r.cpuUsPerRequest} µs CPU/req, bystander p99 ${r.bystander?.p99Ms ?? '-'} ms)`).join('; ')}. Bystander idle: ${Object.entries(report.bystanderIdleByLayout).map(([layout, b]) => `${layout} p50 ${b!.p50Ms} ms, p99 ${b!.p99Ms} ms over ${b!.ops} ops`).join('; ')}.`,
    '',
    `Layouts: ${s.layouts.join(', ')}. shared: every process wherever the scheduler puts it; pinned: MariaDB and the bystander on core 0, Redis, PostgreSQL, the designs, the worker and the load generator on the other cores (bench/layout.ts), so the bystander's figures show what the database suffers and not CPU contention. The main targets are judged in the ${s.layouts[0]} layout.`,
    '',
    resultsTable(report),
    '',
  ];
  for (const w of report.worker?.runs ?? []) {
    lines.push(`Worker with the cap lifted (PERSIST_RATE_PER_SEC=${w.ratePerSec}, PERSIST_BATCH_SIZE=${w.batchSize}): ${w.rows.toLocaleString('en-US')} pre-filled coupons persisted in ${w.drainSec} s = **${w.rowsPerSec.toLocaleString('en-US')} rows/s** (${w.wallSecIncludingStartup} s including the worker's start-up).`, '');
  }
  if (report.hotPath) lines.push(hotPathMarkdown(report.hotPath));
  lines.push('| target | goal | this run | met |', '| --- | --- | --- | --- |');
  for (const t of report.targets) lines.push(`| ${t.description} | ${t.target} | ${t.value} | ${t.met === null ? '-' : t.met ? 'yes' : '**no**'} |`);
  lines.push('');
  return lines.join('\n');
}
