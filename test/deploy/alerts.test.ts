/**
 * The chart's alerts, evaluated by Prometheus's own rule engine offline: the PrometheusRule that
 * `helm template` renders (namespace "coupons", chart defaults) becomes a rules file that `promtool check rules`
 * must accept, and `promtool test rules` runs test/deploy/alerts/<Alert>.test.yaml, one file per alert: series
 * that must fire it once its `for:` has passed (and not a minute before), and series that must not. To show the
 * tests can fail, each alert is broken on purpose in a copy of the rules (its expression never true, or its
 * `for:` dropped) and promtool must then reject that alert's tests.
 */
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAllDocuments, stringify } from 'yaml';
import { chartDir, repoRoot, run, runPromtool } from './tools.ts';

const testsDir = join(repoRoot, 'test', 'deploy', 'alerts');

interface AlertRule { alert: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }
interface RuleGroup { name: string; rules: AlertRule[] }

let scratch: string;
let groups: RuleGroup[];

/** The rules beside a copy of the alert tests (their rule_files is rules.yaml), in a folder of their own. */
function rulesFolder(name: string, rules: RuleGroup[]): string {
  const dir = join(scratch, name);
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'rules.yaml'), stringify({ groups: rules }));
  for (const file of alertTestFiles()) copyFileSync(join(testsDir, file), join(dir, file));
  return dir;
}

const alertTestFiles = () => readdirSync(testsDir).filter((file) => file.endsWith('.test.yaml')).sort();

function withRule(name: string, change: (rule: AlertRule) => AlertRule): RuleGroup[] {
  return groups.map((group) => ({ ...group, rules: group.rules.map((rule) => (rule.alert === name ? change({ ...rule }) : rule)) }));
}

beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'coupon-alerts-'));
  const rendered = run('helm', [
    'template', 'coupon', chartDir, '--namespace', 'coupons',
    '--set', 'metrics.prometheusRule.enabled=true',
    '--show-only', 'templates/observability/prometheusrule.yaml',
  ]);
  if (rendered.status !== 0) throw new Error(`helm template failed:\n${rendered.output}`);
  const rule = parseAllDocuments(rendered.stdout).map((doc) => doc.toJS() as { kind?: string; spec?: { groups: RuleGroup[] } })
    .find((doc) => doc?.kind === 'PrometheusRule');
  if (!rule?.spec) throw new Error(`no PrometheusRule in:\n${rendered.stdout}`);
  groups = rule.spec.groups;
});

afterAll(() => {
  if (scratch) rmSync(scratch, { recursive: true, force: true });
});

const alertNames = () => groups.flatMap((group) => group.rules.map((rule) => rule.alert));

describe('the chart\'s alerts under promtool', () => {
  test('When the chart renders its PrometheusRule, then promtool check rules accepts the five alerts', () => {
    expect(alertNames()).toEqual(['CouponOutboxLagGrowing', 'CouponDeadLetterNotEmpty', 'CouponIssuedNotPersisted', 'CouponApiErrors', 'CouponRedisUnreachable']);
    const dir = rulesFolder('rendered', groups);
    const checked = runPromtool(['check', 'rules', join(dir, 'rules.yaml')]);
    expect({ status: checked.status, output: checked.output }).toMatchObject({ status: 0 });
    expect(checked.output).toMatch(/SUCCESS: 5 rules found/);
  });

  test('When the alerts are listed, then each has one test file, and each test file an alert', () => {
    expect(alertTestFiles()).toEqual(alertNames().map((name) => `${name}.test.yaml`).sort());
  });

  test('When an alert fires, then its runbook_url names a runbook line of the README\'s "Watching a sale" section', () => {
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## Watching a sale'));
    expect(section.startsWith('## Watching a sale')).toBe(true);
    for (const rule of groups.flatMap((group) => group.rules)) {
      const anchor = `runbook-${rule.alert.toLowerCase()}`;
      expect(rule.annotations?.runbook_url).toBe(`README.md#${anchor}`);
      expect(section).toContain(`<a id="${anchor}"></a>`);
      expect(section).toContain(`**${rule.alert}**`);
    }
  });

  test.each(['CouponOutboxLagGrowing', 'CouponDeadLetterNotEmpty', 'CouponIssuedNotPersisted', 'CouponApiErrors'])(
    'When %s is tested on series that must and must not fire it, then promtool test rules passes',
    (name) => {
      const dir = rulesFolder('rendered', groups);
      const tested = runPromtool(['test', 'rules', join(dir, `${name}.test.yaml`)]);
      expect({ status: tested.status, output: tested.output }).toMatchObject({ status: 0 });
      expect(tested.output).toMatch(/SUCCESS/);
    },
  );

  test.each(['CouponOutboxLagGrowing', 'CouponDeadLetterNotEmpty', 'CouponIssuedNotPersisted', 'CouponApiErrors'])(
    'When %s is broken on purpose (never true, or no for:), then its tests fail',
    (name) => {
      const mutants: Record<string, RuleGroup[]> = {
        // the series that must fire it no longer do
        'never-true': withRule(name, (rule) => ({ ...rule, expr: `(${rule.expr.trim()}) and on() absent(vector(1))` })),
        // it fires at once: the evaluations before its for: has passed catch it
        'no-for': withRule(name, (rule) => { const { for: _dropped, ...rest } = rule; return rest; }),
      };
      for (const [mutant, rules] of Object.entries(mutants)) {
        const dir = rulesFolder(`${name}-${mutant}`, rules);
        // still valid rules: the failure below is the alert tests', not a syntax error
        expect(runPromtool(['check', 'rules', join(dir, 'rules.yaml')]).status).toBe(0);
        const tested = runPromtool(['test', 'rules', join(dir, `${name}.test.yaml`)]);
        expect({ mutant, status: tested.status }).toEqual({ mutant, status: 1 });
        expect(tested.output).toMatch(new RegExp(`FAILED[\\s\\S]*alertname: ${name}`));
      }
    },
  );
});
