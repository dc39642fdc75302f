/**
 * `npm run test:cluster`, last (node's runner takes the files in name order): the chart's alerts and dashboard on a
 * real Prometheus (scripts/cluster/prometheus.sh: built from the Go module proxy, scraping the release's api and
 * worker pods every 5 s, evaluating the chart's rules every 5 s with the lab's short `for:`s of
 * scripts/cluster/values.yaml). Each check causes the fault, times the alert from the fault to `firing`, removes
 * the fault and times it to resolved, and prints both:
 *   10. every worker scaled to 0 during a burst: CouponOutboxLagGrowing and CouponIssuedNotPersisted fire (the api
 *       reports the backlog when no worker is left to), and resolve once the workers are back and have drained it;
 *       then, during a burst, every dashboard panel's query returns a non-empty result
 *   11. a coupon MySQL keeps refusing (a trigger), with MAX_DELIVERIES=1 and RETRY_LIMIT=0 set on the workers for
 *       the check: it is dead-lettered and CouponDeadLetterNotEmpty fires; the trigger dropped and the job
 *       redriven (npm run console -- dlq redrive), the coupon is a row and the alert resolves
 *   12. Redis made unreachable (its StatefulSet scaled to 0) under a steady trickle of applies: CouponRedisUnreachable
 *       fires (the api's scrapes say it cannot read Redis) and so does CouponApiErrors (its 503s before its readiness
 *       failed); Redis back and sold-out traffic after it, both resolve
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  DEPS_NS, NS, RELEASE, burst, createEvent, kubectl, log, mysql, pods, request, root, sleep, unique, users, waitFor, waitPersisted,
} from './cluster.ts';

const MON_NS = 'coupon-monitoring';
const T = { timeout: 10 * 60_000 };

function prometheusUrl(): string {
  const ip = kubectl(['-n', MON_NS, 'get', 'pods', '-l', 'app.kubernetes.io/name=prometheus', '-o', 'jsonpath={.items[0].status.podIP}']).trim();
  assert.ok(ip, 'no Prometheus pod: did the prometheus step of npm run cluster fail? (bash scripts/cluster/prometheus.sh)');
  return `http://${ip}:9090`;
}
const PROM = prometheusUrl();

async function prom<T>(path: string): Promise<T> {
  const response = await fetch(`${PROM}${path}`, { signal: AbortSignal.timeout(10_000) });
  const body = await response.json() as { status: string; data: T; error?: string };
  if (body.status !== 'success') throw new Error(`Prometheus ${path}: ${body.error}`);
  return body.data;
}
type Sample = { metric: Record<string, string>; value: [number, string] };
const query = (expr: string) => prom<{ result: Sample[] }>(`/api/v1/query?query=${encodeURIComponent(expr)}`).then((data) => data.result);
type Alert = { labels: Record<string, string>; state: 'pending' | 'firing'; activeAt: string };
const alerts = () => prom<{ alerts: Alert[] }>('/api/v1/alerts').then((data) => data.alerts);

/** Seconds from `since` until `name` (optionally of one event) is firing; polls every second. */
async function firing(name: string, since: number, event?: string, limitMs = 180_000): Promise<number> {
  await waitFor(`${name} firing${event ? ` for ${event}` : ''}`, limitMs, async () =>
    (await alerts()).some((a) => a.labels.alertname === name && a.state === 'firing' && (!event || a.labels.event === event)), 1000);
  return (Date.now() - since) / 1000;
}
/** Seconds from `since` until no `name` alert (of the event) is pending or firing. */
async function resolved(name: string, since: number, event?: string, limitMs = 240_000): Promise<number> {
  await waitFor(`${name} resolved${event ? ` for ${event}` : ''}`, limitMs, async () =>
    !(await alerts()).some((a) => a.labels.alertname === name && (!event || a.labels.event === event)), 1000);
  return (Date.now() - since) / 1000;
}
const forOf = (name: string) => {
  const rules = readFileSync(join(root, 'scripts', 'cluster', 'values.yaml'), 'utf8');
  const key = { CouponOutboxLagGrowing: 'outboxLagFor', CouponIssuedNotPersisted: 'issuedMinusPersistedFor', CouponDeadLetterNotEmpty: 'deadLetterFor', CouponApiErrors: 'apiErrorsFor', CouponRedisUnreachable: 'redisUnreachableFor' }[name];
  return new RegExp(`${key}: (\\S+)`).exec(rules)?.[1] ?? '?';
};

function scale(kind: string, name: string, replicas: number, ns = NS): void {
  kubectl(['-n', ns, 'scale', `${kind}/${name}`, `--replicas=${replicas}`]);
}

test('10. every worker scaled to 0 during a burst: the outbox-lag and issued-not-persisted alerts fire, and resolve once the workers drained it; every dashboard panel answers during a burst', T, async () => {
  const firing0 = (await alerts()).filter((a) => a.state === 'firing').map((a) => a.labels.alertname);
  if (firing0.length) log(`firing before the check (left by the checks before it): ${firing0.join(', ')}`);
  // A Prometheus just (re)started scrapes each target within an interval.
  const up = await waitFor('Prometheus scraping the api and the worker', 60_000, async () => {
    const targets = await prom<{ activeTargets: Array<{ labels: Record<string, string>; health: string }> }>('/api/v1/targets');
    const jobs = targets.activeTargets.filter((t) => t.health === 'up').map((t) => t.labels.job!);
    return jobs.includes(`${RELEASE}-api`) && jobs.includes(`${RELEASE}-worker`) ? jobs : undefined;
  }, 1000);
  log(`Prometheus ${PROM}: ${up!.length} targets up (${[...new Set(up!)].join(', ')}), rules: ${(await prom<{ groups: Array<{ rules: unknown[] }> }>('/api/v1/rules')).groups.flatMap((g) => g.rules).length}`);

  const total = 2_000;
  const eventId = unique('alert-lag');
  assert.equal((await createEvent(eventId, total)).status, 201);
  // The api reports the event's backlog (0) from now on: the lag's rise is seen against the samples before it.
  await waitFor('the event\'s lag series in Prometheus', 60_000, async () => (await query(`coupon_outbox_lag{event="${eventId}"}`)).length > 0, 1000);
  await sleep(10_000);
  scale('deployment', `${RELEASE}-worker`, 0);
  await waitFor('no worker pod', 120_000, () => pods('worker').length === 0);
  const start = Date.now();
  const result = await burst(eventId, users('lag', total), { concurrency: 32 });
  assert.equal(result.byStatus['202'], total, JSON.stringify(result.byStatus));
  const burstEnd = Date.now();
  const [lagFired, behindFired] = await Promise.all([
    firing('CouponOutboxLagGrowing', start, eventId), firing('CouponIssuedNotPersisted', start, eventId),
  ]);
  log(`workers at 0; ${total} coupons issued in ${result.seconds.toFixed(1)} s; firing after the burst's start: CouponOutboxLagGrowing ${lagFired.toFixed(1)} s, `
    + `CouponIssuedNotPersisted ${behindFired.toFixed(1)} s (for: ${forOf('CouponOutboxLagGrowing')} and ${forOf('CouponIssuedNotPersisted')}; scrape and evaluation every 5 s; burst ended ${((burstEnd - start) / 1000).toFixed(1)} s in)`);

  const back = Date.now();
  scale('deployment', `${RELEASE}-worker`, 2);
  const rows = await waitPersisted(eventId, total);
  const [lagResolved, behindResolved] = await Promise.all([
    resolved('CouponOutboxLagGrowing', back, eventId), resolved('CouponIssuedNotPersisted', back, eventId),
  ]);
  log(`workers back: ${rows.count} rows; resolved after the scale-up: CouponOutboxLagGrowing ${lagResolved.toFixed(1)} s, CouponIssuedNotPersisted ${behindResolved.toFixed(1)} s`);
  kubectl(['-n', NS, 'rollout', 'status', `deployment/${RELEASE}-worker`, '--timeout=180s']);

  // The dashboard, as Grafana would ask it, during a burst with the workers running.
  const dashboard = JSON.parse(readFileSync(join(root, 'charts', 'coupon', 'dashboards', 'coupon.json'), 'utf8')) as { panels: Array<{ title: string; targets?: Array<{ expr: string }> }> };
  const panels = dashboard.panels.flatMap((panel) => (panel.targets ?? []).map((target) => ({ title: panel.title, expr: target.expr.replaceAll('$namespace', NS) })));
  const second = unique('alert-panels');
  assert.equal((await createEvent(second, 1_500)).status, 201);
  let answered: Array<{ title: string; series: number }> = [];
  await burst(second, users('panel', 2_000), {
    concurrency: 16, ratePerSec: 200,
    at: [{ share: 0.8, run: async () => { answered = await Promise.all(panels.map(async (p) => ({ title: p.title, series: (await query(p.expr)).length }))); } }],
  });
  const empty = answered.filter((p) => p.series === 0);
  log(`dashboard: ${panels.length} queries of ${dashboard.panels.length} panels asked 8 s into a burst; ${panels.length - empty.length} non-empty`
    + (empty.length ? `; empty: ${empty.map((p) => p.title).join(', ')}` : ''));
  assert.equal(answered.length, panels.length);
  assert.deepEqual(empty, []);
});

/** One statement as MySQL's root (a trigger needs more than the service's user may do); `;` inside it is no delimiter. */
function mysqlRoot(sql: string): void {
  kubectl(['-n', DEPS_NS, 'exec', '-i', 'mysql-0', '--', 'sh', '-c', 'MYSQL_PWD="$MYSQL_ROOT_PASSWORD" mysql -u root "$MYSQL_DATABASE"'],
    `delimiter //\n${sql}\n//\n`);
}

test('11. a coupon MySQL keeps refusing is dead-lettered: CouponDeadLetterNotEmpty fires; redriven once MySQL takes it, it is a row and the alert resolves', T, async () => {
  const eventId = unique('alert-dlq');
  const trigger = `refuse_${eventId.replaceAll('-', '_')}`;
  kubectl(['-n', NS, 'set', 'env', `deployment/${RELEASE}-worker`, 'MAX_DELIVERIES=1', 'RETRY_LIMIT=0']);
  try {
    kubectl(['-n', NS, 'rollout', 'status', `deployment/${RELEASE}-worker`, '--timeout=180s']);
    assert.equal((await createEvent(eventId, 5)).status, 201);
    mysqlRoot(`create trigger ${trigger} before insert on coupon for each row
      begin if new.event_id = '${eventId}' then signal sqlstate '45000' set message_text = 'refused by the cluster check'; end if; end`);
    const start = Date.now();
    const told = await request('POST', `/v1/events/${eventId}/apply`, { userId: 'unlucky' });
    assert.equal(told.status, 202);
    const fired = await firing('CouponDeadLetterNotEmpty', start);
    log(`refused by MySQL, 202 answered: CouponDeadLetterNotEmpty firing ${fired.toFixed(1)} s after the apply (for: ${forOf('CouponDeadLetterNotEmpty')}; pg-boss counts the queue every 10 s, the worker reads it every 5 s)`);

    mysqlRoot(`drop trigger ${trigger}`);
    const postgres = kubectl(['-n', DEPS_NS, 'get', 'pod', 'postgres-0', '-o', 'jsonpath={.status.podIP}']).trim();
    const redrive = Date.now();
    const run = spawnSync(process.execPath, ['scripts/console/main.ts', 'dlq', 'redrive', '--json'], {
      cwd: root, encoding: 'utf8', timeout: 60_000,
      env: { PATH: process.env.PATH ?? '', POSTGRES_URL: `postgres://coupon:dev-postgres-password@${postgres}:5432/coupon_jobs` },
    });
    assert.equal(run.status, 0, run.stderr);
    const rows = await waitPersisted(eventId, 1, 120_000);
    assert.deepEqual([...rows.users], ['unlucky']);
    const cleared = await resolved('CouponDeadLetterNotEmpty', redrive);
    log(`trigger dropped, dead letter redriven (${run.stdout.trim()}): the row written, the alert resolved ${cleared.toFixed(1)} s after the redrive`);
  } finally {
    try { mysqlRoot(`drop trigger if exists ${trigger}`); } catch { /* MySQL away: reported by the assertion above */ }
    kubectl(['-n', NS, 'set', 'env', `deployment/${RELEASE}-worker`, 'MAX_DELIVERIES-', 'RETRY_LIMIT-']);
    kubectl(['-n', NS, 'rollout', 'status', `deployment/${RELEASE}-worker`, '--timeout=180s']);
  }
});

// Its own timeout: the firing wait below is up to 330 s, then the rollout and the resolution.
test('12. Redis unreachable under a trickle of applies: CouponRedisUnreachable and CouponApiErrors fire; Redis back and traffic after it, both resolve', { timeout: 15 * 60_000 }, async () => {
  const open = unique('alert-redis');
  assert.equal((await createEvent(open, 100_000)).status, 201);
  const soldOut = unique('alert-sold');
  assert.equal((await createEvent(soldOut, 1)).status, 201);
  assert.equal((await request('POST', `/v1/events/${soldOut}/apply`, { userId: 'first' })).status, 202);

  // Fired by an earlier check's answers (its 5-minute window), it would say nothing about this fault.
  await resolved('CouponApiErrors', Date.now(), undefined, 330_000);
  scale('statefulset', 'redis', 0, DEPS_NS);
  const start = Date.now();
  let fired: number | undefined;
  let unreachable: number | undefined;
  let statuses: Record<string, number> = {};
  try {
    // 20 applies a second until the alert fires: what clients are told meanwhile is counted. The alert is a ratio
    // over 5 minutes, so the answers of the checks before this one dilute the 503s: it fired 27.1 s, 82.2 s and
    // not within 180 s after the outage in three CI trials. Waited for up to the window plus its for: and scrapes.
    const FIRING_LIMIT_MS = 330_000;
    const trickle = burst(open, users('outage', 20 * FIRING_LIMIT_MS / 1000), { concurrency: 8, ratePerSec: 20, until: () => fired !== undefined });
    [unreachable, fired] = await Promise.all([firing('CouponRedisUnreachable', start), firing('CouponApiErrors', start, undefined, FIRING_LIMIT_MS)])
      .finally(() => { fired ??= -1; });
    statuses = (await trickle).byStatus;
  } finally {
    scale('statefulset', 'redis', 1, DEPS_NS);
  }
  log(`Redis scaled to 0: firing CouponRedisUnreachable ${unreachable!.toFixed(1)} s later (for: ${forOf('CouponRedisUnreachable')}), `
    + `CouponApiErrors ${fired.toFixed(1)} s later (for: ${forOf('CouponApiErrors')}); clients were told ${JSON.stringify(statuses)}`);

  kubectl(['-n', DEPS_NS, 'rollout', 'status', 'statefulset/redis', '--timeout=180s']);
  await waitFor('every api pod ready again', 180_000, () => { const api = pods('api'); return api.length >= 2 && api.every((p) => p.ready); });
  const back = Date.now();
  // The alert's 5-minute ratio falls under 5% once the answers after the outage outnumber its 503s twenty to one.
  let after = 0;
  const cleared = resolved('CouponApiErrors', back, undefined, 240_000);
  let done = false;
  void cleared.finally(() => { done = true; });
  while (!done) {
    const wave = await burst(soldOut, users(`after-${after}`, 2_000), { concurrency: 32, until: () => done });
    after += wave.answers.size;
    assert.equal((wave.byStatus['503'] ?? 0) + (wave.byStatus['500'] ?? 0), 0, `5xx after Redis came back: ${JSON.stringify(wave.byStatus)}`);
  }
  const resolvedAfter = await cleared;
  const reachableAgain = await resolved('CouponRedisUnreachable', back);
  log(`Redis back and the api ready: CouponApiErrors resolved ${resolvedAfter.toFixed(1)} s later, after ${after} sold-out answers; `
    + `CouponRedisUnreachable resolved ${reachableAgain.toFixed(1)} s after`);
  const check = await request('POST', `/v1/events/${open}/apply`, { userId: 'after-outage' });
  assert.equal(check.status, 202, JSON.stringify(check));
});
