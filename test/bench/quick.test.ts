/**
 * Keeps `npm run bench` working: runs the benchmark's quick mode end to end (its own throwaway servers, every
 * design, the hello-world ceiling, the bystander, the unthrottled worker) and checks the report's shape and the
 * facts the designs guarantee. Speed is never asserted here: the numbers of a quick run on a busy machine mean little.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HotPathReport } from '../../bench/hot-path.ts';

interface Phase { requests: number; durationSec: number; rps: number; p50Ms: number; p99Ms: number; ratioToCeiling: number | null }
interface Result {
  design: string; scenario: string; totalQuantity: number; requests: number;
  issued: { accepted: number; rows: number; overIssue: number; exact: boolean };
  statuses: Record<string, number>;
  errors: { total: number; connection: number; timeouts: number; unexpectedStatus: number };
  overall: Phase; open: Phase; soldOut: Phase | null; burstSec: number; persistedAfterSec: number;
  apiCpuUsPerRequest: number;
  mysql: { couponRowsPerSecPeak: number; rowsInsertedPerSecPeak: number; insertStatementsPerSecPeak: number };
  bystander: { ops: number; p50Ms: number; p99Ms: number; p99VsIdle: number; errors: number } | null;
  series: { requestsPerSec: unknown[]; couponRowsPerSec: unknown[]; mysqlCounters: unknown[]; bystanderP99Ms: unknown[] };
}
interface Report {
  schemaVersion: number; mode: string;
  machine: { cpus: number; node: string; redis: string; mariadb: string };
  settings: { scenarios: Array<{ totalQuantity: number; requests: number }>; drainRows: number };
  ceiling: { rps: number; runs: Array<{ label: string; rps: number }> };
  bystanderIdle: { ops: number; p99Ms: number };
  results: Result[];
  worker: { rowsPerSec: number; batchSize: number; runs: Array<{ rows: number; rowsPerSec: number }> };
  targets: Array<{ id: string; met: boolean | null }>;
  hotPath: HotPathReport;
}

let dir: string;
let report: Report;
let outDir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'coupon-bench-test-'));
  outDir = join(dir, 'out');
  const child = spawn(process.execPath, ['bench/run.ts', '--quick', '--dir', join(dir, 'servers'), '--out', outDir], { stdio: ['ignore', 'pipe', 'pipe'] });
  const output: string[] = [];
  child.stdout.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  const [code] = await once(child, 'exit');
  if (code !== 0) throw new Error(`bench --quick exited with ${code}:\n${output.join('').slice(-4000)}`);
  report = JSON.parse(await readFile(join(outDir, 'report.json'), 'utf8')) as Report;
}, 300_000);

afterAll(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

const byDesign = (design: string) => report.results.filter((r) => r.design === design);

test('when the quick benchmark runs, then every design meets every scenario and the machine is described', () => {
  expect(report).toMatchObject({ schemaVersion: 1, mode: 'quick' });
  expect(report.machine.cpus).toBeGreaterThan(0);
  for (const field of ['node', 'redis', 'mariadb'] as const) expect(report.machine[field]).toMatch(/\d+\.\d+/);
  expect(report.ceiling.runs.map((run) => run.label)).toEqual(['before naive', 'before incr-direct', 'before outbox', 'end']);
  expect(report.ceiling.rps).toBeGreaterThan(0);
  expect(report.bystanderIdle.ops).toBeGreaterThan(0);
  const scenarios = report.settings.scenarios.length;
  for (const design of ['naive', 'incr-direct', 'outbox']) expect(byDesign(design)).toHaveLength(scenarios);
});

test('when incr-direct or outbox take the burst, then exactly N coupons are issued and persisted, and every request gets a contract answer', () => {
  for (const result of [...byDesign('incr-direct'), ...byDesign('outbox')]) {
    expect(result.issued).toEqual({ accepted: result.totalQuantity, rows: result.totalQuantity, overIssue: 0, exact: true });
    expect(result.errors.total).toBe(0);
    expect(result.statuses['202']).toBe(result.totalQuantity);
    expect((result.statuses['409'] ?? 0) + (result.statuses['410'] ?? 0)).toBe(result.requests - result.totalQuantity);
  }
});

test('when the naive design takes the burst, then it issues at least N, every issued coupon is in MySQL, and over-issue is reported', () => {
  for (const result of byDesign('naive')) {
    expect(result.issued.rows).toBeGreaterThanOrEqual(result.totalQuantity);
    expect(result.issued.rows).toBe(result.issued.accepted);
    expect(result.issued.overIssue).toBe(result.issued.rows - result.totalQuantity);
  }
});

test('when a burst is reported, then throughput, latency, MySQL writes, the bystander and the series are all there', () => {
  for (const result of report.results) {
    for (const phase of [result.overall, result.open]) {
      expect(phase.requests).toBeGreaterThan(0);
      expect(phase.p99Ms).toBeGreaterThanOrEqual(phase.p50Ms);
      expect(phase.ratioToCeiling).toBeGreaterThan(0);
    }
    expect(result.soldOut?.requests).toBeGreaterThan(0);
    expect(result.persistedAfterSec).toBeGreaterThan(0);
    expect(result.apiCpuUsPerRequest).toBeGreaterThanOrEqual(0);
    expect(result.mysql.couponRowsPerSecPeak).toBeGreaterThan(0);
    expect(result.mysql.insertStatementsPerSecPeak).toBeGreaterThan(0);
    expect(result.bystander?.ops).toBeGreaterThan(0);
    expect(typeof result.bystander?.p99VsIdle).toBe('number');
    for (const series of Object.values(result.series)) expect(series.length).toBeGreaterThan(0);
  }
  expect(report.worker.runs.length).toBeGreaterThan(0);
  for (const run of report.worker.runs) {
    expect(run.rows).toBe(report.settings.drainRows);
    expect(run.rowsPerSec).toBeGreaterThan(0);
  }
  expect(report.targets.map((t) => t.id)).toEqual([
    'outbox-open-throughput', 'outbox-sold-out-throughput', 'outbox-p99', 'outbox-writes-at-cap',
    'bystander-outbox', 'bystander-hello-control', 'bystander-incr-direct', 'worker-unthrottled', 'bystander-outbox-pinned', 'exactly-n',
    'hot-open', 'hot-sold-out', 'hot-p99',
  ]);
  expect(report.targets.find((t) => t.id === 'exactly-n')?.met).toBe(true);
});

test('when the hot path is compared, then hello, minimal, bare, open, sold-out and batched open apply each answered as they should, with CPU per request', () => {
  const hot = report.hotPath;
  expect(hot.summary.map((s) => s.case)).toEqual(['hello', 'minimal', 'open', 'sold-out', 'bare', 'open-batched']);
  for (const s of hot.summary) {
    expect(s.rps).toBeGreaterThan(0);
    expect(s.p99Us).toBeGreaterThanOrEqual(s.p50Us);
    expect(s.cpuUsPerRequest).toBeGreaterThan(0);
    // every open apply a 202 from a new user, every sold-out apply a 410
    expect(s.unexpected).toBe(0);
  }
  expect(hot.ratios[0]!.openVsMinimal).toBeGreaterThan(0);
  expect(hot.ratios[0]!.openBatchedVsBare).toBeGreaterThan(0);
  expect(hot.ratios[0]!.openBatchedRedisUsPerCoupon).toBeGreaterThan(0);
});

test('when the quick benchmark finishes, then it leaves a Markdown table and four SVG plots', async () => {
  const markdown = await readFile(join(outDir, 'report.md'), 'utf8');
  expect(markdown).toContain('| design | event | requests | coupons / N |');
  for (const design of ['naive', 'incr-direct', 'outbox']) expect(markdown).toContain(`| ${design} |`);
  for (const plot of ['requests-per-sec.svg', 'mysql-writes-per-sec.svg', 'mysql-insert-statements-per-sec.svg', 'bystander-p99.svg']) {
    expect(await readFile(join(outDir, plot), 'utf8')).toMatch(/^<svg[\s\S]*<\/svg>$/);
  }
});
