/**
 * A Redis Cluster with a replica per primary (3 + 3 servers), GATE_MIN_REPLICAS=1 (replica timeout 1 s), 2 apis and
 * 2 workers on the fault stack's own MySQL and PostgreSQL (test/support/fault-cluster.ts).
 *
 * 1. GATE_MIN_REPLICAS applies per shard: with one shard's replica down, that shard's events answer 503 (no
 *    replica can acknowledge their writes, so the gate refuses before issuing) while the other shards' events go
 *    on issuing; the replica back, its shard issues again.
 * 2. A primary dies mid-burst (SIGKILL): the Cluster promotes its replica after cluster-node-timeout, the api
 *    checks the promoted server against MySQL before it issues there, and the killed node comes back as the new
 *    primary's replica. History check: every answer a client got, on every shard, against MySQL at the end.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { inSync } from '../../scripts/local-servers/redis-cluster.ts';
import { redisCommand } from '../../scripts/local-servers/redis.ts';
import { PERSIST_BUCKET_KEY, eventKeys } from '../../src/redis/keys.ts';
import { useFaultCluster } from '../support/fault-cluster.ts';
import { describeFault } from '../support/fault-stack.ts';
import { createEvent, waitFor } from '../support/harness.ts';
import { type ApplyResult, applyLoad, percentile, statusesOf, users } from '../support/load.ts';
import { checkPersisted, recordFigures, scrapeMetric, toldSequence } from '../support/observe.ts';
import { eventIdsOnEveryShard, ownerOf } from '../support/redis-cluster.ts';

const TOTAL = 400;
const USERS = 800;
const CONCURRENCY = 24;
/** a client answered 503 tries once more this much later */
const RETRY_AFTER_MS = 1_500;
/** what the workers count that would explain a told coupon missing from MySQL (printed when one is) */
const WORKER_COUNTERS = ['coupon_moved_to_retry_total', 'coupon_sequence_conflicts_total', 'coupon_fenced_total', 'coupon_persist_failures_total'];

describeFault('Redis Cluster replicas and primary failover', { folder: 'redis-cluster-failover' }, (stack) => {
  const shards = useFaultCluster(stack, 'redis-cluster-failover', {
    // A replica that is up acknowledges well within a second even on a loaded CI machine: a 503 then means
    // no replica, not a slow one.
    GATE_MIN_REPLICAS: '1', GATE_REPLICA_TIMEOUT_MS: '1000', LOG_LEVEL: 'info',
    // Only to bound the test: entries a worker held when a primary died are taken over after this long.
    CLAIM_IDLE_MS: '3000',
  }, (name) => (name.includes('SIGKILLed') ? 'primary-killed' : 'replica-down'));

  test('GATE_MIN_REPLICAS per shard: one shard\'s replica down makes only that shard\'s events answer 503, issuing nothing, and their users get coupons once it is back', async () => {
    await shards.startServices();
    const { client, apis, serverOf, replicaOf } = shards;
    const eventIds = eventIdsOnEveryShard(client, 'replica-down', 1);
    for (const eventId of eventIds) await createEvent(apis[0]!.url, { id: eventId, totalQuantity: 100 });
    const [quiet, ...others] = eventIds;
    const replica = await replicaOf(serverOf(ownerOf(client, quiet!)));
    await replica.kill();
    const during = await Promise.all(eventIds.map((eventId, i) =>
      applyLoad({ urls: () => [apis[i % 2]!.url], eventId, users: users(`down-${i}`, 20), concurrency: 4 })));
    expect(statusesOf(during[0]!)).toEqual({ 503: 20 });
    // Refused before issuing (issue 20, break 1): no coupon went to a user told 503.
    expect(Number((await client.get(eventKeys(quiet!).issued)) ?? 0)).toBe(0);
    for (const results of during.slice(1)) expect(statusesOf(results)).toEqual({ 202: 20 });

    await replica.start();
    await waitFor(() => inSync(replica.port), { timeoutMs: 30_000, what: 'the replica back in sync' });
    const after = await applyLoad({ urls: () => [apis[1]!.url], eventId: quiet!, users: users('down-0', 20), concurrency: 4 });
    // The same users ask again and are issued their coupons now (before issue 20's break 1 the primary had run the
    // gate behind each 503, and the retries heard 409).
    expect(statusesOf(after)).toEqual({ 202: 20 });
    expect(after.map((result) => toldSequence(result.status, result.body)).sort((a, b) => a! - b!)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1));
    const persisted = await Promise.all(eventIds.map((eventId, i) => waitFor(async () => {
      const issued = (i === 0 ? after : during[i]!).map((result) => ({ userId: result.userId, sequence: toldSequence(result.status, result.body)! }));
      const check = await checkPersisted(stack.query, eventId, issued);
      return check.rows === 20 && check.issuedButMissing.length === 0 ? check : undefined;
    }, { timeoutMs: 30_000, what: `the coupons of ${eventId} persisted` })));
    for (const check of persisted) expect(check).toMatchObject({ rows: 20, distinctUsers: 20, distinctSequences: 20, minSequence: 1, maxSequence: 20 });
    expect(others).toHaveLength(2);
  }, 120_000);

  test('when a shard\'s primary is SIGKILLed mid-burst, then its replica is promoted, issuing resumes after the check, and every 202 on every shard is a MySQL row', async () => {
    await shards.startServices();
    const { client, apis, serverOf, replicaOf } = shards;
    const eventIds = eventIdsOnEveryShard(client, 'failover', 1);
    for (const eventId of eventIds) await createEvent(apis[0]!.url, { id: eventId, totalQuantity: TOTAL });
    const victim = eventIds[0]!;
    const primary = serverOf(ownerOf(client, victim));
    const replica = await replicaOf(primary);

    const started = performance.now();
    const at: { kill?: number; promoted?: number; rejoined?: number } = {};
    const answers = new Map<string, Array<ApplyResult & { attempt: 'first' | 'retry'; answeredAt: number }>>(eventIds.map((eventId) => [eventId, []]));
    const retries: Array<Promise<unknown>> = [];
    let fault: Promise<void> | undefined;
    const inflict = async () => {
      at.kill = performance.now() - started;
      await primary.kill();
      await waitFor(async () => /role:master/.test(await redisCommand(replica.port, 'INFO', 'replication')) || undefined,
        { timeoutMs: 30_000, intervalMs: 20, what: 'the Cluster to promote the replica' });
      at.promoted = performance.now() - started;
      // The killed node comes back (same node table) and rejoins as the promoted primary's replica.
      await primary.start();
      await waitFor(() => inSync(primary.port), { timeoutMs: 30_000, what: 'the killed node back as a replica' });
      at.rejoined = performance.now() - started;
    };
    const record = (eventId: string, attempt: 'first' | 'retry') => (result: ApplyResult) => {
      answers.get(eventId)!.push({ ...result, attempt, answeredAt: performance.now() - started });
      if (attempt === 'first' && result.status === 503) {
        retries.push(sleep(RETRY_AFTER_MS).then(() => applyLoad({
          urls: () => apis.map((api) => api.url), eventId, users: [result.userId], concurrency: 1, onResult: record(eventId, 'retry'),
        })));
      }
    };
    await Promise.all(eventIds.map((eventId) => applyLoad({
      urls: () => apis.map((api) => api.url), eventId, users: users(eventId, USERS), concurrency: CONCURRENCY / 3, ratePerSec: 100,
      onResult: (result, done) => {
        record(eventId, 'first')(result);
        if (eventId === victim && done === 100 && !fault) fault = inflict();
      },
    })));
    await fault;
    while (retries.length > 0) await Promise.all(retries.splice(0));

    const figures: Record<string, unknown> = {};
    for (const eventId of eventIds) {
      const all = answers.get(eventId)!;
      // What each user was told: a 202, or a 409 naming the coupon a retry learned it holds. A 503 tells nothing
      // (the gate may have run while no replica could confirm it), and its retry may hear 410 from an api's
      // sold-out flag: a row of a user who got a 503 and was told nothing after is allowed, no other untold row.
      const told = new Map<string, number>();
      const got503 = new Set<string>();
      for (const answer of all) {
        const sequence = toldSequence(answer.status, answer.body);
        if (sequence !== undefined) told.set(answer.userId, sequence);
        if (answer.status === 503) got503.add(answer.userId);
      }
      const issued = [...told].map(([userId, sequence]) => ({ userId, sequence }));
      const check = await waitFor(async () => {
        const now = await checkPersisted(stack.query, eventId, issued);
        if (now.issuedButMissing.length === 0 && now.rows >= Math.min(TOTAL, issued.length)) return now;
        const counters = Object.fromEntries(await Promise.all(WORKER_COUNTERS.map(async (name) =>
          [name, (await Promise.all(shards.workers.map((worker) => scrapeMetric(worker.url, name)))).reduce((a, b) => a + b, 0)] as const)));
        const outbox = eventKeys(eventId).outbox;
        const [groups, length, timeline, time] = await Promise.all([
          client.xinfo('GROUPS', outbox).catch(String), client.xlen(outbox).catch(String), client.get(PERSIST_BUCKET_KEY), client.time(),
        ]);
        throw new Error(`${now.rows} rows, ${issued.length} told, ${now.issuedButMissing.length} told and missing (${now.issuedButMissing.slice(0, 3).join(', ')}); workers: ${JSON.stringify(counters)}; stream ${length} long, groups ${JSON.stringify(groups)}; write timeline ${timeline} at ${time.join('.')}`);
      }, { timeoutMs: 60_000, intervalMs: 250, what: `every 202 of ${eventId} persisted` });
      expect({ eventId, issuedButMissing: check.issuedButMissing }).toEqual({ eventId, issuedButMissing: [] });
      expect(check.rows).toBe(check.distinctUsers);
      expect(check.rows).toBe(check.distinctSequences);
      expect(check.rows).toBeLessThanOrEqual(TOTAL);
      const untold = (await stack.query<{ user_id: string }>('select user_id from coupon where event_id = ?', [eventId]))
        .map((row) => row.user_id).filter((userId) => !told.has(userId));
      expect({ eventId, untoldWithout503: untold.filter((userId) => !got503.has(userId)) }).toEqual({ eventId, untoldWithout503: [] });
      for (const answer of all) expect([202, 409, 410, 503]).toContain(answer.status);
      const first = all.filter((answer) => answer.attempt === 'first');
      const firstAfterKill = all.find((answer) => answer.status === 202 && at.kill !== undefined && answer.answeredAt - answer.latencyMs > at.kill);
      figures[eventId === victim ? 'killedShard' : `otherShard${Object.keys(figures).length}`] = {
        first: statusesOf(first), retries: statusesOf(all.filter((answer) => answer.attempt === 'retry')), rows: check.rows, rowsOfUsersToldOnly503: untold.length,
        p99Ms: Math.round(percentile(first.map((answer) => answer.latencyMs), 99)),
        first202AfterKillMs: firstAfterKill && at.kill !== undefined ? Math.round(firstAfterKill.answeredAt - at.kill) : null,
      };
    }
    // The killed shard's event answered 503 for a while; the others did not wait for it. Waiting on the failover
    // (CLUSTERDOWN on every node from the FAIL mark to the promotion, with cluster-require-full-coverage yes) gave
    // them 6-16 × 503 each; at most 2 of their 800 first answers are allowed: in a CI trial of 2026-12-07 one
    // other shard answered 1 × 503 (a gate or replica deadline met on a loaded 2-core machine, it seems; not pinned down).
    expect(statusesOf(answers.get(victim)!.filter((answer) => answer.attempt === 'first'))[503]).toBeGreaterThan(0);
    for (const eventId of eventIds.filter((eventId) => eventId !== victim)) {
      const answered503 = statusesOf(answers.get(eventId)!)[503] ?? 0;
      expect({ eventId, answered503, atMost2: answered503 <= 2 }).toEqual({ eventId, answered503, atMost2: true });
    }
    await recordFigures('redis-cluster-failover', {
      total: TOTAL, usersPerEvent: USERS, killAtMs: Math.round(at.kill!), promotedAfterKillMs: Math.round(at.promoted! - at.kill!),
      rejoinedAfterKillMs: Math.round(at.rejoined! - at.kill!), ...figures,
    });
  }, 180_000);
});
