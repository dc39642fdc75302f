/**
 * `console report EVENT [--out DIR]`: what happened in a sale, after it, from MySQL (MYSQL_URL, or the local
 * stack's): every coupon row's issued_at (the gate's Redis time) and created_at (the insert's time) give the coupons
 * issued and persisted over time and the write rate against the cap. Written to DIR: sale-report.svg (Vega-Lite,
 * rendered headless by Vega as bench/ does) and sale-report.md (time to sell out, time to persist, the peak write
 * rate). With --samples FILE (what `console watch --record FILE` kept) it adds the apply answers per second by
 * outcome and the gate's p99 over the sale. Reads only; the report is the one console command that reads MySQL.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import mysql from 'mysql2/promise';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { ConsoleError } from './output.ts';
import type { WatchSample } from './watch.ts';

export interface SaleData {
  eventId: string;
  name: string;
  totalQuantity: number;
  startsAt: Date;
  /** ms since the epoch, one per coupon row, ascending */
  issuedAt: number[];
  persistedAt: number[];
}

export interface SaleSummary {
  eventId: string;
  totalQuantity: number;
  issued: number;
  persisted: number;
  firstIssuedAt: string | null;
  lastIssuedAt: string | null;
  lastPersistedAt: string | null;
  /** first coupon to last coupon issued, when all were issued */
  sellOutMs: number | null;
  /** last coupon issued to last row written: how long the writes trailed the gate */
  persistAfterSellOutMs: number | null;
  /** first coupon issued to last row written */
  persistAllMs: number | null;
  peakWritesPerSec: number;
  cap: number;
  gateP99Ms: number | null;
}

export async function readSale(mysqlUrl: string, eventId: string): Promise<SaleData> {
  let connection: mysql.Connection;
  try {
    connection = await mysql.createConnection({ uri: mysqlUrl, timezone: 'Z' });
  } catch (error) {
    throw new ConsoleError(`cannot reach MySQL: ${(error as Error).message}`);
  }
  try {
    const [events] = await connection.query<mysql.RowDataPacket[]>('select id, name, total_quantity, starts_at from coupon_event where id = ?', [eventId]);
    const event = events[0];
    if (!event) throw new ConsoleError(`no event ${eventId} in MySQL`);
    const [rows] = await connection.query<mysql.RowDataPacket[]>('select issued_at, created_at from coupon where event_id = ?', [eventId]);
    const ms = (value: Date | string) => (value instanceof Date ? value : new Date(`${value}Z`)).getTime();
    return {
      eventId, name: String(event.name), totalQuantity: Number(event.total_quantity), startsAt: new Date(ms(event.starts_at as Date)),
      issuedAt: rows.map((row) => ms(row.issued_at as Date)).sort((a, b) => a - b),
      persistedAt: rows.map((row) => ms(row.created_at as Date)).sort((a, b) => a - b),
    };
  } finally {
    await connection.end().catch(() => {});
  }
}

/** rows written per whole second since `origin` */
function perSecond(times: number[], origin: number): Map<number, number> {
  const counts = new Map<number, number>();
  for (const t of times) {
    const second = Math.floor((t - origin) / 1000);
    counts.set(second, (counts.get(second) ?? 0) + 1);
  }
  return counts;
}

/** p99 (ms) from two snapshots of a cumulative histogram: the upper bound of the bucket holding the 99th percentile. */
export function histogramP99(first: Record<string, number>, last: Record<string, number>): number | null {
  const bounds = Object.keys(last).filter((le) => le !== '+Inf').map(Number).sort((a, b) => a - b);
  const count = (le: string) => (last[le] ?? 0) - (first[le] ?? 0);
  const total = count('+Inf');
  if (total <= 0) return null;
  for (const bound of bounds) if (count(String(bound)) >= 0.99 * total) return bound * 1000;
  return Infinity;
}

export function summarize(sale: SaleData, cap: number, samples: WatchSample[] = []): SaleSummary {
  const first = sale.issuedAt[0];
  const lastIssued = sale.issuedAt.at(-1);
  const lastPersisted = sale.persistedAt.at(-1);
  const soldOut = sale.issuedAt.length >= sale.totalQuantity;
  const writes = first === undefined ? [] : [...perSecond(sale.persistedAt, first).values()];
  const histograms = samples.map((s) => s.applyLatencyBuckets).filter((h): h is Record<string, number> => h !== null);
  const iso = (t: number | undefined) => (t === undefined ? null : new Date(t).toISOString());
  return {
    eventId: sale.eventId, totalQuantity: sale.totalQuantity, issued: sale.issuedAt.length, persisted: sale.persistedAt.length,
    firstIssuedAt: iso(first), lastIssuedAt: iso(lastIssued), lastPersistedAt: iso(lastPersisted),
    sellOutMs: soldOut && first !== undefined && lastIssued !== undefined ? lastIssued - first : null,
    persistAfterSellOutMs: soldOut && lastIssued !== undefined && lastPersisted !== undefined ? Math.max(0, lastPersisted - lastIssued) : null,
    persistAllMs: first !== undefined && lastPersisted !== undefined ? lastPersisted - first : null,
    peakWritesPerSec: writes.length ? Math.max(...writes) : 0,
    cap,
    gateP99Ms: histograms.length >= 2 ? histogramP99(histograms[0]!, histograms.at(-1)!) : null,
  };
}

/** At most `points` steps of a cumulative count: every row would make a 100,000-point line. */
function cumulative(times: number[], origin: number, series: string, points = 400): Array<{ s: number; coupons: number; series: string }> {
  if (!times.length) return [];
  const step = Math.max(1, Math.ceil(times.length / points));
  const out = [{ s: 0, coupons: 0, series }];
  for (let i = step - 1; i < times.length; i += step) out.push({ s: (times[i]! - origin) / 1000, coupons: i + 1, series });
  if (out.at(-1)!.coupons !== times.length) out.push({ s: (times.at(-1)! - origin) / 1000, coupons: times.length, series });
  return out;
}

export function saleSpec(sale: SaleData, summary: SaleSummary, samples: WatchSample[] = []): TopLevelSpec {
  const origin = sale.issuedAt[0] ?? sale.startsAt.getTime();
  const x = { field: 's', type: 'quantitative', title: 'seconds since the first coupon was issued' };
  const coupons = [...cumulative(sale.issuedAt, origin, 'issued (issued_at, Redis gate)'), ...cumulative(sale.persistedAt, origin, 'persisted (created_at, MySQL row)')];
  const writes = [...perSecond(sale.persistedAt, origin)].map(([second, rows]) => ({ s: second, end: second + 1, rows }));
  const panels: Array<Record<string, unknown>> = [
    {
      title: { text: `Coupons of ${sale.eventId}: issued and persisted (total ${sale.totalQuantity})`, anchor: 'start', fontSize: 12 },
      width: 640, height: 220,
      layer: [
        {
          data: { values: coupons }, mark: { type: 'line', interpolate: 'step-after', strokeWidth: 2 },
          encoding: { x, y: { field: 'coupons', type: 'quantitative', title: 'coupons' }, color: { field: 'series', type: 'nominal', title: null, scale: { range: ['#ff7f0e', '#1f77b4'] }, legend: { orient: 'bottom', labelLimit: 0 } } },
        },
        { data: { values: [{ y: sale.totalQuantity }] }, mark: { type: 'rule', strokeDash: [4, 4], color: '#555' }, encoding: { y: { field: 'y', type: 'quantitative' } } },
      ],
    },
    {
      title: { text: `MySQL writes per second against the write cap (PERSIST_RATE_PER_SEC ${summary.cap}/s)`, anchor: 'start', fontSize: 12 },
      width: 640, height: 160,
      layer: [
        {
          data: { values: writes }, mark: { type: 'bar', color: '#1f77b4', stroke: 'white', strokeWidth: 0.5 },
          encoding: {
            x, x2: { field: 'end' }, y: { field: 'rows', type: 'quantitative', title: 'rows written in that second', scale: { domainMin: 0 } }, y2: { datum: 0 },
          },
        },
        { data: { values: [{ y: summary.cap }] }, mark: { type: 'rule', strokeDash: [4, 4], color: '#d62728' }, encoding: { y: { field: 'y', type: 'quantitative' } } },
        {
          data: { values: [{ y: summary.cap, label: `cap ${summary.cap}/s` }] }, mark: { type: 'text', align: 'left', dx: 4, dy: -6, color: '#d62728', fontSize: 10 },
          encoding: { y: { field: 'y', type: 'quantitative' }, x: { value: 0 }, text: { field: 'label' } },
        },
      ],
    },
  ];
  const answers = samples.flatMap((sample) => Object.entries(sample.answersPerSec ?? {}).map(([outcome, rate]) => ({ s: (Date.parse(sample.at) - origin) / 1000, rate, outcome })));
  if (answers.length) {
    panels.push({
      title: { text: 'Apply answers per second by outcome (the api\'s /metrics, sampled by console watch)', anchor: 'start', fontSize: 12 },
      width: 640, height: 160,
      data: { values: answers },
      mark: { type: 'line', point: { size: 20 } },
      encoding: { x, y: { field: 'rate', type: 'quantitative', title: 'answers/s' }, color: { field: 'outcome', type: 'nominal', scale: OUTCOME_COLORS, legend: { orient: 'bottom' } } },
    });
  }
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: `Sale ${sale.eventId} (${sale.name})`, anchor: 'start' },
    config: { font: 'sans-serif', view: { stroke: '#ddd' } },
    resolve: { scale: { color: 'independent' }, legend: { color: 'independent' } },
    vconcat: panels,
  } as never;
}

/** issued in the same orange as the issued line above; the other answers apart */
const OUTCOME_COLORS = { domain: ['issued', 'conflict', 'sold_out', 'unavailable', 'other'], range: ['#ff7f0e', '#9467bd', '#2ca02c', '#d62728', '#7f7f7f'] };

const seconds = (ms: number | null) => (ms === null ? 'n/a' : `${(ms / 1000).toFixed(2)} s`);

export function saleMarkdown(summary: SaleSummary, samplesFile: string | undefined): string {
  const soldOut = summary.issued >= summary.totalQuantity;
  return [
    `# Sale ${summary.eventId}`,
    '',
    '![coupons issued and persisted over time, writes per second against the cap](sale-report.svg)',
    '',
    '| | |',
    '| --- | --- |',
    `| coupons | ${summary.issued} issued of ${summary.totalQuantity} (${soldOut ? 'sold out' : 'not sold out'}), ${summary.persisted} persisted |`,
    `| first coupon issued | ${summary.firstIssuedAt ?? 'none'} |`,
    `| time to sell out | ${seconds(summary.sellOutMs)} (first coupon to last, by issued_at) |`,
    `| time to persist | ${seconds(summary.persistAfterSellOutMs)} after the last coupon was issued; ${seconds(summary.persistAllMs)} from the first coupon to the last row (created_at) |`,
    `| peak writes | ${summary.peakWritesPerSec} rows in one second, against a cap of ${summary.cap}/s |`,
    `| gate p99 | ${summary.gateP99Ms === null ? 'not known (run `console watch --record FILE` during the sale, then `report --samples FILE`)' : `at most ${summary.gateP99Ms} ms (the apply route's histogram bucket, over the watched samples)`} |`,
    '',
    `From MySQL: each coupon row's issued_at (the gate's Redis time) and created_at (its insert).${samplesFile ? ' Answers by outcome from the samples of `console watch --record`.' : ''}`,
    '',
  ].join('\n');
}

export async function writeSaleReport(options: { mysqlUrl: string; eventId: string; out: string; cap: number; samplesFile?: string }): Promise<{ svg: string; markdown: string; summary: SaleSummary }> {
  const sale = await readSale(options.mysqlUrl, options.eventId);
  const samples = options.samplesFile
    ? readFileSync(options.samplesFile, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line) as WatchSample)
    : [];
  const summary = summarize(sale, options.cap, samples);
  const view = new vega.View(vega.parse(compile(saleSpec(sale, summary, samples)).spec), { renderer: 'none' });
  mkdirSync(options.out, { recursive: true });
  const svg = join(options.out, 'sale-report.svg');
  const markdown = join(options.out, 'sale-report.md');
  writeFileSync(svg, await view.toSVG());
  writeFileSync(markdown, saleMarkdown(summary, options.samplesFile));
  return { svg, markdown, summary };
}

export interface ReportTarget { mysqlUrl: string | undefined; persistRatePerSec: number }

export function reportCommand(program: Command, target: () => ReportTarget): void {
  program.command('report <eventId>')
    .description('after a sale: a picture (SVG) and a markdown summary of coupons issued and persisted over time, from MySQL (MYSQL_URL)')
    .option('--out <dir>', 'folder to write sale-report.svg and sale-report.md to', '.')
    .option('--samples <file>', 'samples of `console watch --record FILE`: adds answers by outcome and the gate p99')
    .option('--json', 'print the summary as one JSON line', false)
    .action(async (eventId: string, options: { out: string; samples?: string; json: boolean }) => {
      const { mysqlUrl, persistRatePerSec } = target();
      if (!mysqlUrl) throw new ConsoleError('set MYSQL_URL (or --mysql) to the database the workers write to');
      const written = await writeSaleReport({ mysqlUrl, eventId, out: resolve(options.out), cap: persistRatePerSec, ...(options.samples && { samplesFile: options.samples }) });
      if (options.json) console.log(JSON.stringify({ ...written.summary, files: [written.svg, written.markdown] }));
      else console.log(`wrote ${written.svg} and ${written.markdown}`);
    });
}
