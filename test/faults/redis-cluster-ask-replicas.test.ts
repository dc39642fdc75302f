/**
 * GATE_MIN_REPLICAS while a slot is half moved. Once an event's keys have been MIGRATEd to the importing primary
 * and before the slot is assigned to it, the source answers ASK and the client runs the gate script on the
 * importing primary. The WAIT that confirms the coupon must go to that primary, the one that wrote it, not to the
 * one the slot map still names. Here the importing primary has no replica up: no 202 may be answered for a coupon
 * only it holds. Redis Cluster with a replica per primary (test/support/fault-cluster.ts). History check: every
 * answer against MySQL at the end.
 */
import calculateSlot from 'cluster-key-slot';
import { inSync } from '../../scripts/local-servers/redis-cluster.ts';
import { eventKeys } from '../../src/redis/keys.ts';
import { nodeName, primaries } from '../../src/redis/topology.ts';
import { useFaultCluster } from '../support/fault-cluster.ts';
import { describeFault } from '../support/fault-stack.ts';
import { createEvent, waitFor } from '../support/harness.ts';
import { applyLoad, statusesOf, users } from '../support/load.ts';
import { checkPersisted, recordFigures, toldSequence } from '../support/observe.ts';
import { assignSlot, eventIdsOnEveryShard, migrateSlotKeys, ownerOf } from '../support/redis-cluster.ts';

describeFault('Redis Cluster: GATE_MIN_REPLICAS on a slot half moved', { folder: 'redis-cluster-ask-replicas' }, (stack) => {
  const shards = useFaultCluster(stack, 'redis-cluster-ask-replicas', { GATE_MIN_REPLICAS: '1', GATE_REPLICA_TIMEOUT_MS: '1000', LOG_LEVEL: 'info' }, () => 'test');

  test('when the gate follows ASK to an importing primary whose replica is down, then it answers 503, not 202, and the users learn their coupons once the replica is back', async () => {
    await shards.startServices();
    const { client, apis, serverOf, replicaOf } = shards;
    // To the primary that owns slot 0: its state marker (kept in its lowest slot) stays where it is, so the move
    // does not make it be compared with MySQL again.
    const masters = primaries(client);
    const to = masters.find((node) => nodeName(node) === client.slots[0]?.[0])!;
    const moving = eventIdsOnEveryShard(client, 'asked', 1).find((eventId) => ownerOf(client, eventId) !== nodeName(to));
    const from = masters.find((node) => nodeName(node) === ownerOf(client, moving!))!;
    await createEvent(apis[0]!.url, { id: moving!, totalQuantity: 100 });
    const urls = () => apis.map((api) => api.url);
    const before = await applyLoad({ urls, eventId: moving!, users: users('before', 20), concurrency: 4 });
    expect(statusesOf(before)).toEqual({ 202: 20 });

    // The importing primary's replica goes down; the event's keys move to it, the slot stays the source's.
    const replica = await replicaOf(serverOf(nodeName(to)));
    await replica.kill();
    const slot = calculateSlot(eventKeys(moving!).meta);
    const keys = await migrateSlotKeys(slot, from, to, 0);
    const asked = await applyLoad({ urls, eventId: moving!, users: users('asked', 20), concurrency: 4 });
    // The gate ran on the importing primary (ASK), which has no replica up: it refused before issuing (issue 20,
    // break 1; before that fix it issued, and only the WAIT failed).
    expect(statusesOf(asked)).toEqual({ 503: 20 });

    await assignSlot(client, slot, from, to);
    await replica.start();
    await waitFor(() => inSync(replica.port), { timeoutMs: 30_000, what: 'the replica back in sync' });
    await waitFor(() => ownerOf(client, moving!) === nodeName(to) || undefined, { timeoutMs: 10_000, what: 'the slot map to name the target' });
    // The same users ask again: nothing was issued behind their 503s, so each is issued a coupon now (a 409 would
    // mean a 503 had left one behind).
    const again = await applyLoad({ urls, eventId: moving!, users: users('asked', 20), concurrency: 4 });
    expect(statusesOf(again)).toEqual({ 202: 20 });

    // History check: every coupon told (the 202s before and after) is a row with its sequence, 1-40.
    const told = [...before, ...again].map((result) => ({ userId: result.userId, sequence: toldSequence(result.status, result.body)! }));
    const check = await waitFor(async () => {
      const now = await checkPersisted(stack.query, moving!, told);
      return now.issuedButMissing.length === 0 && now.rows >= 40 ? now : undefined;
    }, { timeoutMs: 30_000, what: `the coupons of ${moving} persisted` });
    expect(check).toMatchObject({ rows: 40, distinctUsers: 40, distinctSequences: 40, minSequence: 1, maxSequence: 40 });
    await recordFigures('redis-cluster-ask-replicas', { keysMoved: keys, before: statusesOf(before), whileAsked: statusesOf(asked), after: statusesOf(again), rows: check.rows });
  }, 120_000);
});
