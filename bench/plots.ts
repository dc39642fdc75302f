/** SVG plots over time, drawn with Vega-Lite and rendered headless by Vega (no canvas, no browser). */
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { BenchReport, BurstResult } from './report.ts';

const COLORS = { domain: ['naive', 'incr-direct', 'outbox'], range: ['#d62728', '#ff7f0e', '#2ca02c'] };

type Point = { design: string; t: number; value: number };

/** One chart per scenario, stacked: a line per design over seconds since the burst began, plus a reference rule. */
function chart(report: BenchReport, title: string, yTitle: string, pick: (r: BurstResult) => Array<{ t: number; value: number }>, rule?: { value: number; label: string }, logScale = false): TopLevelSpec {
  const scenarios = [...new Set(report.results.map((r) => r.scenario))];
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, anchor: 'start' },
    config: { font: 'sans-serif', view: { stroke: '#ddd' } },
    vconcat: scenarios.map((scenario) => {
      const values: Point[] = report.results.filter((r) => r.scenario === scenario)
        .flatMap((r) => pick(r).map((p) => ({ design: r.design, t: p.t, value: logScale ? Math.max(p.value, 0.1) : p.value })));
      const layers: Array<Record<string, unknown>> = [{
        data: { values },
        mark: { type: 'line', strokeWidth: 1.5, point: { size: 12 } },
        encoding: {
          x: { field: 't', type: 'quantitative', title: 'seconds since the burst began' },
          y: { field: 'value', type: 'quantitative', title: yTitle, ...(logScale && { scale: { type: 'log' } }) },
          color: { field: 'design', type: 'nominal', scale: COLORS, title: 'design' },
        },
      }];
      if (rule) {
        layers.push(
          { data: { values: [{ y: rule.value }] }, mark: { type: 'rule', strokeDash: [4, 4], color: '#555' }, encoding: { y: { field: 'y', type: 'quantitative' } } },
          { data: { values: [{ y: rule.value, label: rule.label }] }, mark: { type: 'text', align: 'left', dx: 4, dy: -6, color: '#555', fontSize: 10 }, encoding: { y: { field: 'y', type: 'quantitative' }, x: { value: 0 }, text: { field: 'label' } } },
        );
      }
      return { title: { text: scenario, fontSize: 12 }, width: 640, height: 200, layer: layers } as never;
    }),
  };
}

async function toSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  return view.toSVG();
}

export async function renderPlots(report: BenchReport): Promise<Record<string, string>> {
  const cap = report.settings.persistRatePerSec;
  return {
    'requests-per-sec.svg': await toSvg(chart(report, 'Apply responses per second (250 ms buckets)', 'responses/s',
      (r) => r.series.requestsPerSec, { value: report.ceiling.rps, label: `hello-world ceiling ${report.ceiling.rps} req/s (best run)` })),
    'mysql-writes-per-sec.svg': await toSvg(chart(report, 'Coupon rows written to MySQL per second (from created_at)', 'rows/s',
      (r) => r.series.couponRowsPerSec, { value: cap, label: `outbox worker cap ${cap} rows/s` })),
    'mysql-insert-statements-per-sec.svg': await toSvg(chart(report, 'INSERT statements per second on MariaDB (Com_insert, all tables, 250 ms samples)', 'statements/s',
      (r) => r.series.mysqlCounters.map((c) => ({ t: c.t, value: c.statementsPerSec })), { value: report.settings.bystanderOpsPerSec / 2, label: 'bystander alone' })),
    'bystander-p99.svg': await toSvg(chart(report, 'Bystander (order service) p99 latency per 500 ms, log scale', 'p99 ms',
      (r) => r.series.bystanderP99Ms, { value: report.bystanderIdle.p99Ms, label: `idle p99 ${report.bystanderIdle.p99Ms} ms` }, true)),
  };
}
