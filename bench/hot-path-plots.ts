/**
 * The hot path against connections (`npm run bench -- --api-only --connections 64,256,1000`, issue 21 item 4): req/s
 * and p99 of the single gate, the batched gate and the bare one-round-trip design, a line per case and process
 * count, drawn with Vega-Lite and rendered headless by Vega like the other plots.
 */
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import type { HotPathCase, HotPathReport } from './hot-path.ts';

const CASES: HotPathCase[] = ['bare', 'open', 'open-batched'];
const LABELS: Record<string, string> = { bare: 'bare (one round trip)', open: 'single gate', 'open-batched': 'batched gate' };
const COLORS = { domain: CASES.map((c) => LABELS[c]), range: ['#7f7f7f', '#d62728', '#2ca02c'] };

function panel(reports: HotPathReport[], title: string, yTitle: string, pick: (s: HotPathReport['summary'][number]) => number): Record<string, unknown> {
  const values = reports.flatMap((report) => report.summary.filter((s) => CASES.includes(s.case)).map((s) => ({
    connections: report.settings.connections, value: pick(s), case: LABELS[s.case], processes: `${s.processes} process${s.processes > 1 ? 'es' : ''}`,
  })));
  return {
    title: { text: title, fontSize: 12 }, width: 320, height: 220, data: { values },
    mark: { type: 'line', strokeWidth: 1.5, point: { size: 30 } },
    encoding: {
      x: { field: 'connections', type: 'quantitative', scale: { type: 'log', nice: false, padding: 12 }, title: 'wrk connections (log)' },
      y: { field: 'value', type: 'quantitative', title: yTitle },
      color: { field: 'case', type: 'nominal', scale: COLORS, title: 'case', legend: { orient: 'bottom', direction: 'vertical' } },
      strokeDash: { field: 'processes', type: 'nominal', title: 'api' },
    },
  };
}

export async function renderConnectionsPlot(reports: HotPathReport[]): Promise<string> {
  const spec = {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: 'Apply: single and batched gate against connections (medians of interleaved rounds)', anchor: 'start' },
    config: { font: 'sans-serif', view: { stroke: '#ddd' } },
    hconcat: [
      panel(reports, 'requests per second', 'req/s', (s) => s.rps),
      panel(reports, 'p99 latency', 'p99 ms', (s) => s.p99Us / 1000),
    ],
  } as never as TopLevelSpec;
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  return view.toSVG();
}
