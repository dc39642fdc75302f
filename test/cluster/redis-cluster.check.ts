/**
 * `npm run test:cluster`, after e2e.check.ts: the release pointed at a Redis Cluster in the same Kubernetes.
 *   8. k8s/deps/redis-cluster/ (3 primaries, 3 replicas, created by its Job) applied unchanged; the release
 *      upgraded with k8s/values/redis-cluster.yaml (REDIS_CLUSTER_NODES, GATE_MIN_REPLICAS=1); events on every
 *      shard get a burst through the Ingress: exactly N each, every 202 a MySQL row. Then one shard's primary pod is
 *      deleted mid-burst: it comes back (as the promoted replica's replica, or as the primary when it restarted
 *      within cluster-node-timeout), and what was answered 503 is asked again; every 202 a row, never over N. Then the release goes back to the values it had (the
 *      Redis Cluster stays until `npm run cluster:down`).
 * Loads are bounded and go to the Ingress stand-in on loopback only.
 */
import assert from 'node:assert/strict';
import { chownSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import calculateSlot from 'cluster-key-slot';
import {
  DEPS_NS, NS, RELEASE, burst, createEvent, helmAsync, issuedUsers, kubectl, kubectlJson, log, pods, root, unique, users,
  waitFor, waitPersisted,
} from './cluster.ts';

const T = { timeout: 15 * 60_000 };
const NODES = 6;
const EVENTS = 6;
const N = 40;
const FAILOVER_N = 200;

/** redis-cli inside a node's pod, with the Cluster's password. */
const redisCli = (pod: string, command: string) =>
  kubectl(['-n', DEPS_NS, 'exec', pod, '--', 'sh', '-c', `REDISCLI_AUTH="$REDIS_PASSWORD" redis-cli ${command}`]);

/** hostPath PersistentVolumes pre-bound to the StatefulSet's claims, as scripts/cluster/deps.sh makes them for k8s/deps. */
function volumes(): void {
  for (let i = 0; i < NODES; i += 1) {
    const claim = `data-redis-cluster-${i}`;
    const dir = join(root, '.cluster', 'volumes', `${DEPS_NS}-${claim}`);
    mkdirSync(dir, { recursive: true, mode: 0o750 });
    // The pods run as uid 999 (the redis user of the image), and a hostPath volume keeps its owner.
    chownSync(dir, 999, 999);
    kubectl(['apply', '-f', '-'], JSON.stringify({
      apiVersion: 'v1', kind: 'PersistentVolume',
      metadata: { name: `${DEPS_NS}-${claim}`, labels: { 'app.kubernetes.io/part-of': 'coupon-cluster' } },
      spec: {
        capacity: { storage: '1Gi' }, accessModes: ['ReadWriteOnce'], persistentVolumeReclaimPolicy: 'Retain', storageClassName: '',
        claimRef: { namespace: DEPS_NS, name: claim }, hostPath: { path: dir, type: 'Directory' },
      },
    }));
  }
}

test('8. Redis Cluster (k8s/deps/redis-cluster/): the release pointed at it, a burst on events of every shard, exactly N each, every 202 a row', T, async () => {
  volumes();
  const started = Date.now();
  kubectl(['apply', '-f', join(root, 'k8s', 'deps', 'redis-cluster')]);
  await waitFor('the redis-cluster-create Job to complete', 600_000, () => {
    const job = kubectlJson(['-n', DEPS_NS, 'get', 'job', 'redis-cluster-create']);
    return (job.status?.succeeded ?? 0) >= 1 || undefined;
  }, 3_000);
  kubectl(['-n', DEPS_NS, 'rollout', 'status', 'statefulset/redis-cluster', '--timeout=300s']);
  const info = redisCli('redis-cluster-0', 'cluster info');
  log(`Redis Cluster of ${NODES} pods up ${Math.round((Date.now() - started) / 1000)} s after apply: ${/cluster_state:\w+/.exec(info)?.[0]}, ${/cluster_size:\d+/.exec(info)?.[0]}, ${/cluster_known_nodes:\d+/.exec(info)?.[0]}`);
  assert.match(info, /cluster_state:ok/);
  assert.match(info, /cluster_size:3/);

  const before = (await helmAsync(['get', 'values', RELEASE, '-n', NS, '-o', 'json'])).output;
  const saved = join(root, '.cluster', 'values-before-redis-cluster.json');
  writeFileSync(saved, before);
  const upgrade = await helmAsync(['upgrade', RELEASE, join(root, 'charts', 'coupon'), '-n', NS, '--reuse-values',
    '-f', join(root, 'k8s', 'values', 'redis-cluster.yaml'), '--wait', '--timeout', '10m']);
  assert.equal(upgrade.code, 0, `helm upgrade with k8s/values/redis-cluster.yaml failed: ${upgrade.output}`);
  try {
    const cm = kubectlJson(['-n', NS, 'get', 'configmap', '-l', `app.kubernetes.io/instance=${RELEASE}`]).items[0];
    log(`release upgraded: REDIS_CLUSTER_NODES has ${String(cm?.data?.REDIS_CLUSTER_NODES ?? '').split(',').length} nodes, GATE_MIN_REPLICAS ${cm?.data?.GATE_MIN_REPLICAS}`);
    // Not before the old pods are gone: draining, they still serve for a few seconds against the old Redis, and an
    // event created through one of them would exist there only (its burst on the new pods then answered 404 in CI).
    await waitFor('2 ready api pods on the Cluster, the old ones gone', 180_000, () => {
      const api = pods('api');
      return (api.every((p) => !p.deleting) && api.filter((p) => p.ready).length >= 2) || undefined;
    });

    // Which primary serves each event's slot: the master lines of CLUSTER NODES end with their slot ranges.
    const masters = redisCli('redis-cluster-0', 'cluster nodes')
      .split('\n').map((line) => line.trim().split(' ')).filter((fields) => fields[2]?.includes('master'));
    const shardOf = (slot: number) => masters.findIndex((fields) => fields.slice(8).some((range) => {
      const [from, to = from] = range.split('-').map(Number);
      return slot >= from! && slot <= to!;
    }));
    // Two events on each shard: ids drawn until every primary serves two of their slots.
    const ids: string[] = [];
    const perShard = new Map<number, number>();
    for (let n = 0; ids.length < EVENTS; n += 1) {
      const id = unique(`shard-${n}`);
      const shard = shardOf(calculateSlot(`coupon:{${id}}:meta`));
      if (shard >= 0 && (perShard.get(shard) ?? 0) < EVENTS / masters.length) {
        perShard.set(shard, (perShard.get(shard) ?? 0) + 1);
        ids.push(id);
      }
    }
    const slots = ids.map((id) => calculateSlot(`coupon:{${id}}:meta`));
    for (const id of ids) assert.equal((await createEvent(id, N)).status, 201);
    const results = await Promise.all(ids.map((id, i) => burst(id, users(`c${i}`, 2 * N), { concurrency: 4 })));
    for (const [i, r] of results.entries()) {
      log(`event ${ids[i]} (slot ${slots[i]}): ${Object.entries(r.byStatus).map(([k, v]) => `${k} x${v}`).join(', ')}`);
      assert.equal(issuedUsers(r).length, N, `${ids[i]}: ${issuedUsers(r).length} answers 202, expected ${N}`);
      assert.equal(r.byStatus['410'] ?? 0, N, `${ids[i]}: the rest should be 410 sold_out`);
      const rows = await waitPersisted(ids[i]!, N);
      for (const u of issuedUsers(r)) assert.ok(rows.users.has(u), `${u} was answered 202 but has no row`);
    }
    assert.equal(new Set(slots.map(shardOf)).size, masters.length);
    log(`events spread over ${new Set(slots.map(shardOf)).size} of ${masters.length} shards; ${EVENTS * N} rows in MySQL, one per 202`);

    // A shard's primary pod deleted mid-burst (SIGTERM: Redis writes its AOF and exits). A pod back within
    // cluster-node-timeout (5 s) is still the primary; one later finds its replica promoted and follows it.
    const id = unique('shard-failover');
    assert.equal((await createEvent(id, FAILOVER_N)).status, 201);
    const address = masters[shardOf(calculateSlot(`coupon:{${id}}:meta`))]![1]!;
    const victim = address.split(',')[1]!.split('.')[0]!;
    let deletedAt = 0;
    const started = performance.now();
    const first = await burst(id, users('f', 3 * FAILOVER_N), {
      concurrency: 8, ratePerSec: 50,
      at: [{ share: 0.2, run: () => { deletedAt = performance.now() - started; kubectl(['-n', DEPS_NS, 'delete', 'pod', victim, '--wait=false']); } }],
    });
    log(`primary pod ${victim} deleted ${(deletedAt / 1000).toFixed(1)} s into the burst: ${Object.entries(first.byStatus).map(([k, v]) => `${k} x${v}`).join(', ')}`);
    for (const status of Object.keys(first.byStatus)) assert.ok(['202', '410', '503'].includes(status), `unexpected answers ${status}`);
    kubectl(['-n', DEPS_NS, 'rollout', 'status', 'statefulset/redis-cluster', '--timeout=300s']);
    // Back as the promoted primary's replica, or, when it restarted within cluster-node-timeout, still the primary
    // (its AOF replayed): either way its shard needs a primary and a replica in sync before GATE_MIN_REPLICAS=1
    // lets it issue again.
    const role = await waitFor(`${victim} back with its shard replicated`, 180_000, () => {
      const replication = redisCli(victim, 'info replication');
      if (/role:slave/.test(replication) && /master_link_status:up/.test(replication)) return 'replica of the promoted primary';
      if (/role:master/.test(replication) && /slave\d+:.*state=online/.test(replication)) return 'primary (restarted before a failover)';
      return undefined;
    }, 2_000);
    // What was answered 503 is asked again, with the same Idempotency-Key, now that the shard has a primary and a replica.
    const unknown = [...first.answers].filter(([, answer]) => answer.status === 503).map(([user]) => user);
    const again = await burst(id, unknown, { concurrency: 4 });
    log(`${victim} came back as ${role}; the ${unknown.length} answered 503 asked again: ${Object.entries(again.byStatus).map(([k, v]) => `${k} x${v}`).join(', ') || 'none'}`);
    for (const status of Object.keys(again.byStatus)) assert.ok(['202', '410'].includes(status), `unexpected answers on retry ${status}`);
    const told = new Set([...issuedUsers(first), ...issuedUsers(again)]);
    assert.ok(told.size <= FAILOVER_N, `${told.size} answered 202 for ${FAILOVER_N} coupons`);
    const rows = await waitPersisted(id, told.size);
    assert.deepEqual([...told].filter((u) => !rows.users.has(u)), [], 'answered 202 without a row');
    const untold = [...rows.users].filter((u) => !told.has(u));
    assert.ok(rows.count <= FAILOVER_N, `${rows.count} rows for ${FAILOVER_N} coupons`);
    assert.deepEqual(untold, [], 'rows of users never answered 202 (a retry with the same key would have been told)');
    log(`MySQL: ${rows.count} rows = ${told.size} answered 202, none over N (${FAILOVER_N})`);
  } finally {
    const back = await helmAsync(['upgrade', RELEASE, join(root, 'charts', 'coupon'), '-n', NS, '--reset-values', '-f', saved, '--wait', '--timeout', '10m']);
    log(`release back to its earlier values: exit ${back.code}`);
    assert.equal(back.code, 0, back.output);
  }
});
