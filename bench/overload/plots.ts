/**
 * The overload plots, drawn with Vega-Lite and rendered headless by Vega like bench/plots.ts: goodput, p99 and
 * peak RSS against offered load, the closed loop (connections) beside the open loop (rate asked), a line per
 * variant. SVG always; PNG too where librsvg's rsvg-convert is installed (apt-get install librsvg2-bin).
 */
import { execFile } from 'node:child_process';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { type OverloadReport, type OverloadStep, VARIANT_LABELS, type Variant } from '../overload.ts';

const VARIANTS: Variant[] = ['admission', 'admission-backoff', 'none'];
const COLORS = { domain: VARIANTS.map((v) => VARIANT_LABELS[v]), range: ['#2ca02c', '#1f77b4', '#d62728'] };

/** requests of a step that got no answer within 2 s: timed out, not sent, or failed */
const unanswered = (s: OverloadStep) => s.timeouts + s.notSent + Object.values(s.otherErrors).reduce((a, b) => a + b, 0);

/** the value(s) of a step to plot: one number, or several lines told apart by their dash (a null is left out) */
type Pick = (step: OverloadStep) => number | null | Record<string, number | null>;
interface Rule { value: number; label: string }

function panel(steps: OverloadStep[], loop: 'closed' | 'open', yTitle: string, pick: Pick, logY: boolean, rule?: Rule): Record<string, unknown> {
  const values = steps.filter((s) => s.loop === loop).flatMap((s) => {
    const picked = pick(s);
    const lines = picked !== null && typeof picked === 'object' ? Object.entries(picked) : [['', picked] as const];
    return lines.flatMap(([measure, value]) => (value === null || (logY && value <= 0) ? [] : [{
      x: loop === 'closed' ? s.connections : s.rate, value, measure, line: `${s.variant} ${measure}`,
      variant: VARIANT_LABELS[s.variant], died: s.api.alive ? '' : 'died',
      unanswered: unanswered(s) >= 0.01 * Math.max(s.due, 1),
    }]));
  });
  const measures = [...new Set(values.map((v) => v.measure))];
  const layers: Array<Record<string, unknown>> = [{
    data: { values },
    mark: { type: 'line', strokeWidth: 1.5, point: { size: 30 } },
    encoding: {
      x: { field: 'x', type: 'quantitative', scale: { type: 'log', nice: false, padding: 12 }, title: loop === 'closed' ? 'closed loop: connections (log)' : 'open loop: rate asked, requests/s (log)' },
      y: { field: 'value', type: 'quantitative', title: yTitle, ...(logY && { scale: { type: 'log' } }) },
      color: { field: 'variant', type: 'nominal', scale: COLORS, title: 'api', legend: { orient: 'bottom', direction: 'vertical', labelLimit: 0 } },
      detail: { field: 'line', type: 'nominal' },
      ...(measures.length > 1 && { strokeDash: { field: 'measure', type: 'nominal', sort: measures, legend: null } }),
    },
  }, {
    data: { values: values.filter((v) => v.unanswered) },
    mark: { type: 'point', shape: 'cross', size: 160, filled: true, opacity: 0.9 },
    encoding: {
      x: { field: 'x', type: 'quantitative', scale: { type: 'log', nice: false, padding: 12 } },
      y: { field: 'value', type: 'quantitative', ...(logY && { scale: { type: 'log' } }) },
      color: { field: 'variant', type: 'nominal', scale: COLORS },
    },
  }, {
    data: { values: values.filter((v) => v.died) },
    mark: { type: 'text', dy: -10, fontSize: 10, color: '#d62728' },
    encoding: { x: { field: 'x', type: 'quantitative', scale: { type: 'log', nice: false, padding: 12 } }, y: { field: 'value', type: 'quantitative', ...(logY && { scale: { type: 'log' } }) }, text: { field: 'died' } },
  }];
  if (rule) {
    layers.push(
      { data: { values: [{ y: rule.value }] }, mark: { type: 'rule', strokeDash: [4, 4], color: '#555' }, encoding: { y: { field: 'y', type: 'quantitative' } } },
      { data: { values: [{ y: rule.value, label: rule.label }] }, mark: { type: 'text', align: 'left', dx: 4, dy: -6, color: '#555', fontSize: 10 }, encoding: { y: { field: 'y', type: 'quantitative' }, x: { value: 0 }, text: { field: 'label' } } },
    );
  }
  return { title: { text: loop === 'closed' ? 'closed loop' : 'open loop', fontSize: 12 }, width: 380, height: 240, layer: layers };
}

function chart(report: OverloadReport, title: string | string[], yTitle: string, pick: Pick, logY = false, rule?: Rule): TopLevelSpec {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, anchor: 'start' },
    config: { font: 'sans-serif', view: { stroke: '#ddd' } },
    resolve: { scale: { y: 'shared' } },
    hconcat: [panel(report.steps, 'closed', yTitle, pick, logY, rule), panel(report.steps, 'open', yTitle, pick, logY, rule)],
  } as never;
}

async function toSvg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  return view.toSVG();
}

/** SVG to PNG with rsvg-convert on a white background; undefined when it is not installed. */
function toPng(svg: string): Promise<Buffer | undefined> {
  return new Promise((resolve) => {
    const child = execFile('rsvg-convert', ['--format', 'png', '--background-color', 'white', '--zoom', '1.5'], { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 }, (error, stdout) => {
      resolve(error ? undefined : stdout);
    });
    child.stdin?.on('error', () => {});
    child.stdin?.end(svg);
  });
}

export async function renderOverloadPlots(report: OverloadReport): Promise<{ files: Record<string, string | Buffer>; note?: string }> {
  const cap = report.capacity.goodputPerSec;
  const limit = report.cgroup.limitMiB;
  const specs: Record<string, TopLevelSpec> = {
    'overload-goodput': chart(report, ['Goodput: decided answers (202/409/410) within 2 s, per second', 'a cross: 1% or more of the step\'s requests got no answer within 2 s'], 'goodput/s', (s) => s.goodputPerSec, false,
      { value: cap, label: `capacity ${cap.toLocaleString('en-US')}/s (64 connections)` }),
    'overload-p99': chart(report, ['p99 latency (ms, log) of all answers (503s included, solid) and of 202s (dashed)', 'a request not answered within 2 s is not in it; a cross: 1% or more of the step\'s requests got no answer'], 'p99 ms',
      (s) => ({
        'all answers': Object.keys(s.byStatus).length > 0 ? s.latencyMs.p99 : null,
        '202 (issued)': (s.byStatus['202'] ?? 0) > 0 ? s.issuedLatencyMs.p99 : null,
      }), true),
    'overload-rss': chart(report, ['Peak RSS of the api process (VmHWM, MiB), a fresh process per step', 'a cross: 1% or more of the step\'s requests got no answer within 2 s'], 'peak RSS MiB', (s) => s.api.peakRssMiB, false,
      limit ? { value: limit, label: `memory cgroup limit ${limit} MiB` } : undefined),
  };
  const files: Record<string, string | Buffer> = {};
  let missingPng = false;
  for (const [name, spec] of Object.entries(specs)) {
    const svg = await toSvg(spec);
    files[`${name}.svg`] = svg;
    const png = await toPng(svg);
    if (png) files[`${name}.png`] = png;
    else missingPng = true;
  }
  return { files, ...(missingPng && { note: 'no PNG plots: rsvg-convert is not installed (apt-get install librsvg2-bin)' }) };
}
