/**
 * `npm run test:cluster`: end-to-end checks against the local cluster of `npm run cluster` (run that first).
 * Each check prints its figures. Named *.check.ts so that jest (`npm test`) does not pick it up: it needs the
 * cluster, and runs with node's own test runner, one check after the other, in this order:
 *   1. an event created through the Ingress, a burst across all api pods: exactly N persisted
 *   2. an api pod and a worker pod deleted mid-burst: still exactly N, every 202 a row
 *   3. helm upgrade (a changed value) mid-burst, the PDBs holding (a drain-like eviction refused): no request lost
 *   4. helm test passes
 *   5. the HPA reads CPU from metrics-server, scales the api out under a sustained load and back in after
 *   6. the migrations hook ran once per release revision, every migration applied once
 *   7. the production values (charts/coupon/ci/production-values.yaml) pass a server-side dry run, CRDs included
 * Loads are bounded (request counts and durations) and go to the Ingress stand-in on loopback only.
 */
import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import {
  applyCountsByPod, burst, createEvent, helmAsync, issuedUsers, kubectl, kubectlJson, log, mysql, NS,
  pods, RELEASE, request, root, sleep, unique, users, waitFor, waitPersisted, type BurstResult,
} from './cluster.ts';

const T = { timeout: 15 * 60_000 };

function fmt(r: BurstResult): string {
  return `${r.answers.size} requests in ${r.seconds.toFixed(1)} s: ${Object.entries(r.byStatus).map(([k, v]) => `${k} x${v}`).join(', ')}` +
    (r.retried ? ` (${r.retried} sent again with the same Idempotency-Key after the stand-in's nginx closed a keep-alive connection under them)` : '');
}
const failures = (r: BurstResult) => [...r.answers.values()].filter((a) => a.status === 0 || a.status >= 500);

async function readyApiPods(min: number): Promise<string[]> {
  const ready = await waitFor(`${min} ready api pods`, 180_000, () => {
    const p = pods('api').filter((x) => x.ready && !x.deleting);
    return p.length >= min ? p : undefined;
  });
  return (ready ?? []).map((p) => p.name);
}

async function settled(): Promise<void> {
  for (const d of ['api', 'worker']) {
    kubectl(['-n', NS, 'rollout', 'status', `deployment/${RELEASE}-${d}`, '--timeout=180s']);
  }
  await waitFor('no terminating api or worker pod', 120_000, () => [...pods('api'), ...pods('worker')].every((p) => !p.deleting));
}

test('1. event through the Ingress, a burst across all api pods: exactly N persisted', T, async () => {
  await settled();
  const apiPods = await readyApiPods(2);
  const id = unique('burst');
  const N = 300;
  const created = await createEvent(id, N);
  assert.equal(created.status, 201, `POST /v1/events through the Ingress answered ${created.status}: ${JSON.stringify(created.body)}`);
  log(`event ${id} (totalQuantity ${N}) created through the Ingress: 201`);
  const before = await applyCountsByPod();
  const r = await burst(id, users('u', 3 * N), { concurrency: 24 });
  const after = await applyCountsByPod();
  log(`burst: ${fmt(r)}`);
  const perPod = apiPods.map((p) => `${p} ${(after.get(p) ?? 0) - (before.get(p) ?? 0)}`);
  log(`requests per api pod (their /metrics): ${perPod.join(', ')}`);
  for (const p of apiPods) assert.ok((after.get(p) ?? 0) > (before.get(p) ?? 0), `api pod ${p} served no request of the burst`);
  assert.deepEqual(failures(r), [], 'requests failed');
  const issued = issuedUsers(r);
  assert.equal(issued.length, N, `202 answers: ${issued.length}, expected ${N}`);
  assert.equal(r.byStatus['410'] ?? 0, 2 * N, 'the rest should be 410 sold_out');
  const rows = await waitPersisted(id, N);
  log(`MySQL: ${rows.count} rows (all persisted ${rows.seconds.toFixed(0)} s after the burst)`);
  for (const u of issued) assert.ok(rows.users.has(u), `${u} was answered 202 but has no row`);
  const ev = await request('GET', `/v1/events/${id}`);
  log(`GET /v1/events/${id}: issued ${ev.body?.issued}, persisted ${ev.body?.persisted}, status ${ev.body?.status}`);
  assert.equal(ev.body?.persisted, N);
});

test('2. an api pod and a worker pod deleted mid-burst: still exactly N, every 202 a row', T, async () => {
  await settled();
  await readyApiPods(2);
  const id = unique('chaos');
  const N = 400;
  assert.equal((await createEvent(id, N)).status, 201);
  const deleted: string[] = [];
  const del = (component: string) => {
    const victim = pods(component).find((p) => p.ready && !p.deleting);
    assert.ok(victim, `no ${component} pod to delete`);
    kubectl(['-n', NS, 'delete', 'pod', victim.name, '--wait=false']);
    deleted.push(`${component} ${victim.name}`);
  };
  // ~12 s of requests at 100/s; the pods are deleted a quarter of the way in.
  const r = await burst(id, users('c', 3 * N), { concurrency: 8, ratePerSec: 100, at: [{ share: 0.25, run: () => { del('api'); del('worker'); } }] });
  log(`deleted mid-burst: ${deleted.join(', ')}`);
  log(`burst: ${fmt(r)}`);
  const issued = issuedUsers(r);
  const rows = await waitPersisted(id, N);
  log(`MySQL: ${rows.count} rows (all persisted ${rows.seconds.toFixed(0)} s after the burst); 202 answers: ${issued.length}`);
  const missing = issued.filter((u) => !rows.users.has(u));
  assert.deepEqual(missing, [], 'answered 202 without a row');
  const failed = failures(r);
  // A request that failed in flight may still have issued its coupon; otherwise every coupon was answered 202.
  assert.ok(issued.length + failed.length >= N && issued.length <= N, `202 answers ${issued.length}, failed ${failed.length}, N ${N}`);
  log(`failed requests (5xx or connection errors): ${failed.length}`);
  assert.equal(failed.length, 0, `requests failed while pods were deleted: ${JSON.stringify(failed.slice(0, 3))}`);
  await settled();
  log(`after: api ${pods('api').filter((p) => p.ready).length} ready, worker ${pods('worker').filter((p) => p.ready).length} ready`);
});

test('3. helm upgrade (a changed value) mid-burst, the PDBs holding: no request lost', T, async () => {
  await settled();
  await readyApiPods(2);
  const id = unique('upgrade');
  assert.equal((await createEvent(id, 1_000_000)).status, 201);
  const oldPods = new Set([...pods('api'), ...pods('worker')].map((p) => p.uid));
  const cm = kubectlJson(['-n', NS, 'get', 'configmap', '-l', `app.kubernetes.io/instance=${RELEASE}`]).items[0];
  const level = cm?.data?.LOG_LEVEL === 'warn' ? 'info' : 'warn';
  let upgrading = true;
  let upgrade: Promise<{ code: number; output: string }> | undefined;
  const pdbSamples: string[] = [];
  let minMargin = Infinity;
  const evictions = { granted: 0, refused: 0, other: [] as string[] };
  const sampler = (async () => {
    while (upgrading) {
      for (const pdb of kubectlJson(['-n', NS, 'get', 'pdb']).items) {
        const s = pdb.status ?? {};
        minMargin = Math.min(minMargin, (s.currentHealthy ?? 0) - (s.desiredHealthy ?? 0));
        pdbSamples.push(`${pdb.metadata.name} ${s.currentHealthy}/${s.desiredHealthy}`);
      }
      await sleep(2000);
    }
  })();
  let helmDoneAt = Infinity;
  // 40 requests/s until 5 s after helm returns (at most 12,000 requests, 5 minutes).
  const r = await burst(id, users('g', 12_000), {
    concurrency: 8, ratePerSec: 40, until: () => Date.now() > helmDoneAt + 5000,
    at: [{
      share: 0.01, run: () => {
        // A drain-like eviction of every api and worker pod at once: each PDB (maxUnavailable 1) grants one.
        for (const p of [...pods('api'), ...pods('worker')]) {
          const body = JSON.stringify({ apiVersion: 'policy/v1', kind: 'Eviction', metadata: { name: p.name, namespace: NS } });
          try {
            kubectl(['create', '--raw', `/api/v1/namespaces/${NS}/pods/${p.name}/eviction`, '-f', '-'], body);
            evictions.granted++;
          } catch (e) {
            if (/429|disruption budget/i.test(String(e))) evictions.refused++;
            else evictions.other.push(String(e).slice(0, 200));
          }
        }
        upgrade = helmAsync(['upgrade', RELEASE, join(root, 'charts', 'coupon'), '-n', NS, '--reuse-values',
          '--set', `config.logLevel=${level}`, '--wait', '--timeout', '10m']).then((res) => {
          helmDoneAt = Date.now();
          return res;
        });
      },
    }],
  });
  upgrading = false;
  await sampler;
  const res = await upgrade!;
  log(`helm upgrade --reuse-values --set config.logLevel=${level}: exit ${res.code}`);
  assert.equal(res.code, 0, `helm upgrade failed: ${res.output}`);
  log(`evictions of every api and worker pod at once: ${evictions.granted} granted, ${evictions.refused} refused by the PDBs${evictions.other.length ? `, other: ${evictions.other.join('; ')}` : ''}`);
  log(`PDB samples during the upgrade: ${pdbSamples.length}, smallest currentHealthy - desiredHealthy: ${minMargin}`);
  log(`burst: ${fmt(r)}`);
  assert.ok(evictions.refused >= 2, 'the PDBs should refuse all but one eviction per Deployment');
  assert.ok(minMargin >= 0, 'a PDB fell below its desired healthy count');
  const failed = failures(r);
  assert.deepEqual(failed.map((a) => `${a.status} ${a.error ?? ''}`), [], 'requests lost during the upgrade');
  const issued = issuedUsers(r);
  assert.equal(issued.length, r.answers.size, 'every request should be answered 202');
  const rows = await waitPersisted(id, issued.length);
  log(`MySQL: ${rows.count} rows = ${issued.length} answers 202 (persisted ${rows.seconds.toFixed(0)} s after)`);
  await settled();
  const now = [...pods('api'), ...pods('worker')];
  assert.ok(now.every((p) => !oldPods.has(p.uid)), 'some pods were not replaced by the upgrade');
  log(`pods replaced by the upgrade: all ${now.length} (${now.map((p) => p.name).join(', ')})`);
});

test('4. helm test passes', T, async () => {
  const res = await helmAsync(['test', RELEASE, '-n', NS, '--timeout', '5m']);
  const phase = /Phase:\s+(\w+)/.exec(res.output)?.[1];
  log(`helm test ${RELEASE}: exit ${res.code}, test pod phase ${phase}`);
  assert.equal(res.code, 0, res.output);
});

test('5. HPA reads CPU from metrics-server, scales the api out under load and back in after', T, async () => {
  await settled();
  const hpaName = `${RELEASE}-api`;
  const hpa = () => kubectlJson(['-n', NS, 'get', 'hpa', hpaName]);
  const cpu = (h: any): number | undefined =>
    h.status?.currentMetrics?.find((m: any) => m.type === 'Resource' && m.resource?.name === 'cpu')?.resource?.current?.averageUtilization;
  const first = await waitFor('the HPA to read a CPU figure', 180_000, () => cpu(hpa()) !== undefined && hpa());
  const min = first.spec.minReplicas;
  const max = first.spec.maxReplicas;
  const target = first.spec.metrics?.[0]?.resource?.target?.averageUtilization;
  log(`HPA ${hpaName}: cpu ${cpu(first)}%/${target}%, replicas ${first.status.currentReplicas} (min ${min}, max ${max})`);
  const id = unique('hpa');
  assert.equal((await createEvent(id, 10)).status, 201);
  const timeline: string[] = [];
  const t0 = Date.now();
  const sample = () => {
    const h = hpa();
    const s = `${Math.round((Date.now() - t0) / 1000)}s cpu ${cpu(h) ?? '?'}% replicas ${h.status.currentReplicas}->${h.status.desiredReplicas}`;
    timeline.push(s);
    return h;
  };
  // Sustained load: GET the event through the Ingress, 32 at a time, for at most 4 minutes or until scaled out.
  let loading = true;
  let sent = 0;
  const loadEnd = Date.now() + 240_000;
  const lanes = Array.from({ length: 32 }, async () => {
    while (loading && Date.now() < loadEnd) { await request('GET', `/v1/events/${id}`); sent++; }
  });
  let peak = min;
  try {
    await waitFor(`the api to scale out above ${min} replicas under load`, 240_000, () => {
      const h = sample();
      peak = Math.max(peak, h.status.currentReplicas);
      return h.status.currentReplicas > min && pods('api').filter((p) => p.ready).length > min;
    }, 5000);
  } finally {
    loading = false;
    await Promise.all(lanes);
  }
  const outAt = Math.round((Date.now() - t0) / 1000);
  log(`load: ${sent} GETs in ${outAt} s; scaled out to ${peak}+ replicas after ${outAt} s`);
  const t1 = Date.now();
  await waitFor(`the api to scale back in to ${min} replicas`, 300_000, () => {
    const h = sample();
    peak = Math.max(peak, h.status.currentReplicas);
    return h.status.currentReplicas === min;
  }, 5000);
  log(`back in to ${min} replicas ${Math.round((Date.now() - t1) / 1000)} s after the load stopped (peak ${peak})`);
  log(`timeline: ${timeline.join(' | ')}`);
  assert.ok(peak > min);
});

test('6. the migrations hook ran once per release revision; every migration applied once', T, async () => {
  const files = readdirSync(join(root, 'src', 'db', 'migrations')).filter((f) => /^Migration\d+.*\.ts$/.test(f)).map((f) => f.replace(/\.ts$/, ''));
  const rows = mysql('SELECT name, COUNT(*) FROM mikro_orm_migrations GROUP BY name');
  const applied = new Map(rows.map(([n, c]) => [n, Number(c)]));
  log(`mikro_orm_migrations: ${[...applied].map(([n, c]) => `${n} x${c}`).join(', ')}`);
  for (const f of files) assert.equal(applied.get(f), 1, `migration ${f} applied ${applied.get(f) ?? 0} times`);
  assert.equal(applied.size, files.length, 'unknown migrations in the table');
  const revisions = JSON.parse((await helmAsync(['history', RELEASE, '-n', NS, '-o', 'json'])).output) as any[];
  // Only this release's life counts (a release uninstalled before, e.g. a failed first install, left events too).
  const since = Date.parse(revisions[0]?.updated ?? 0) - 2000;
  const events = kubectlJson(['-n', NS, 'get', 'events', '--field-selector', `involvedObject.kind=Job,involvedObject.name=${RELEASE}-migrations`])
    .items.filter((e: any) => Date.parse(e.lastTimestamp ?? e.eventTime ?? e.metadata.creationTimestamp) >= since);
  const count = (reason: string) => events.filter((e: any) => e.reason === reason).reduce((n: number, e: any) => n + (e.count ?? e.series?.count ?? 1), 0);
  const created = count('SuccessfulCreate');
  const completed = count('Completed');
  log(`release revisions ${revisions.length}; hook Job pods created ${created}, Jobs completed ${completed}, failed ${count('BackoffLimitExceeded')}`);
  assert.equal(count('BackoffLimitExceeded'), 0);
  assert.ok(created <= revisions.length, `the hook created ${created} pods for ${revisions.length} revisions (a retry)`);
  assert.ok(created >= 1, 'no record of the migrations hook (events expire after an hour: run on a fresh cluster)');
  const jobs = kubectlJson(['-n', NS, 'get', 'jobs']).items.map((j: any) => j.metadata.name);
  assert.ok(!jobs.includes(`${RELEASE}-migrations`), 'the hook Job should have been deleted on success (hook-succeeded)');
});

test('7. the production values validate against the API server, CRDs included (server-side dry run)', T, async () => {
  const crds = ['servicemonitors.monitoring.coreos.com', 'prometheusrules.monitoring.coreos.com', 'scaledobjects.keda.sh', 'triggerauthentications.keda.sh'];
  const present = new Set(kubectlJson(['get', 'crd']).items.map((c: any) => c.metadata.name));
  const missing = crds.filter((c) => !present.has(c));
  assert.deepEqual(missing, [], 'CRDs missing: scripts/cluster/crds.sh installs them (npm run cluster runs it)');
  const res = await helmAsync(['install', `${RELEASE}-production`, join(root, 'charts', 'coupon'), '-n', NS,
    '-f', join(root, 'charts', 'coupon', 'ci', 'production-values.yaml'), '--dry-run=server']);
  const kinds = new Map<string, number>();
  for (const m of res.output.matchAll(/^kind: (\w+)$/gm)) kinds.set(m[1]!, (kinds.get(m[1]!) ?? 0) + 1);
  log(`helm install --dry-run=server -f charts/coupon/ci/production-values.yaml: exit ${res.code}; ${[...kinds].map(([k, n]) => `${k} x${n}`).join(', ')}`);
  assert.equal(res.code, 0, res.output.slice(-2000));
  for (const k of ['ServiceMonitor', 'PrometheusRule', 'ScaledObject', 'TriggerAuthentication']) assert.ok(kinds.get(k), `no ${k} in the release`);
});
