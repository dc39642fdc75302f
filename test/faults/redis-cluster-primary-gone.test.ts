/**
 * A shard's primary dies for good (SIGKILL, never started again) on a Redis Cluster with a replica per primary,
 * 2 apis and 2 workers (test/support/fault-cluster.ts): the replica is promoted and the node is gone from the
 * Cluster's map. The workers kept asking for that shard's stream while it was away, so their client had reads
 * queued for the dead node: those must fail, not wait for ever, and every 202 on every shard must become a row.
 * History check: every answer against MySQL at the end.
 */
import { redisCommand } from '../../scripts/local-servers/redis.ts';
import { useFaultCluster } from '../support/fault-cluster.ts';
import { describeFault } from '../support/fault-stack.ts';
import { createEvent, waitFor } from '../support/harness.ts';
import { type ApplyResult, applyLoad, countBy, statusesOf, users } from '../support/load.ts';
import { checkPersisted, recordFigures, toldSequence } from '../support/observe.ts';
import { eventIdsOnEveryShard, ownerOf } from '../support/redis-cluster.ts';

describeFault('Redis Cluster: a shard\'s primary gone for good', { folder: 'redis-cluster-primary-gone' }, (stack) => {
  // No replica is left to the promoted one: with GATE_MIN_REPLICAS its shard could not issue at all.
  const shards = useFaultCluster(stack, 'redis-cluster-primary-gone', { GATE_MIN_REPLICAS: '0', LOG_LEVEL: 'info' }, () => 'test');

  test('when a shard\'s primary dies for good, then its replica takes over and the workers, whose reads were waiting on the dead node, persist every 202 on every shard', async () => {
    await shards.startServices();
    const { client, apis, serverOf, replicaOf } = shards;
    const eventIds = eventIdsOnEveryShard(client, 'gone', 1);
    for (const eventId of eventIds) await createEvent(apis[0]!.url, { id: eventId, totalQuantity: 100 });
    const victim = eventIds[0]!;
    const primary = serverOf(ownerOf(client, victim));
    const replica = await replicaOf(primary);
    const sell = (prefix: string) => Promise.all(eventIds.map((eventId) =>
      applyLoad({ urls: () => apis.map((api) => api.url), eventId, users: users(`${prefix}-${eventId}`, 20), concurrency: 4 })));
    const before = await sell('before');
    for (const results of before) expect(statusesOf(results)).toEqual({ 202: 20 });

    // Killed and never started again: the workers keep asking for the victim's stream while it is away (their
    // client queues those reads for the node), and the Cluster drops the node from its map once the replica is
    // promoted.
    const killedAt = performance.now();
    await primary.kill();
    await waitFor(async () => /role:master/.test(await redisCommand(replica.port, 'INFO', 'replication')) || undefined,
      { timeoutMs: 30_000, intervalMs: 20, what: 'the Cluster to promote the replica' });
    const promotedMs = performance.now() - killedAt;
    // One new user at a time until each api issues there again (it checks the promoted replica against MySQL first).
    const probes: ApplyResult[] = [];
    for (const api of apis) {
      await waitFor(async () => {
        const [result] = await applyLoad({ urls: () => [api.url], eventId: victim, users: [`probe-${probes.length}`], concurrency: 1 });
        probes.push(result!);
        return result!.status === 202 || undefined;
      }, { timeoutMs: 30_000, intervalMs: 200, what: 'the api to issue on the promoted replica' });
    }
    const probed = countBy(probes, (result) => result.status);
    expect(Object.keys(probed).sort()).toEqual(expect.arrayContaining(['202']));
    for (const status of Object.keys(probed)) expect(['202', '503']).toContain(status);
    const issuingAfterKillMs = performance.now() - killedAt;
    const after = await sell('after');
    for (const results of after) expect(statusesOf(results)).toEqual({ 202: 20 });

    // History check: every 202 (the last probe's too) is a row with its sequence; no other row but a 503'd probe's.
    const persisted = await Promise.all(eventIds.map((eventId, i) => waitFor(async () => {
      const told = [...before[i]!, ...after[i]!, ...(eventId === victim ? probes.filter((result) => result.status === 202) : [])]
        .map((result) => ({ userId: result.userId, sequence: toldSequence(result.status, result.body)! }));
      const check = await checkPersisted(stack.query, eventId, told);
      if (check.issuedButMissing.length === 0) return check;
      throw new Error(`${check.rows} rows, ${check.issuedButMissing.length} of ${told.length} answered 202 missing`);
    }, { timeoutMs: 30_000, intervalMs: 250, what: `every 202 of ${eventId} persisted` })));
    const persistedAfterKillMs = performance.now() - killedAt;
    for (const [i, check] of persisted.entries()) {
      expect(check.rows).toBe(check.distinctUsers);
      expect(check.rows).toBe(check.distinctSequences);
      const told = 40 + (eventIds[i] === victim ? probed[202]! : 0);
      expect(check.rows - told).toBeLessThanOrEqual(eventIds[i] === victim ? probed[503] ?? 0 : 0);
    }
    await recordFigures('redis-cluster-primary-gone', {
      promotedAfterKillMs: Math.round(promotedMs), issuingAfterKillMs: Math.round(issuingAfterKillMs), persistedAfterKillMs: Math.round(persistedAfterKillMs),
      rows: Object.fromEntries(eventIds.map((eventId, i) => [eventId === victim ? 'killedShard' : `otherShard${i}`, persisted[i]!.rows])),
      probes: probed,
    });
  }, 120_000);
});
