/**
 * The api issues on an event only once the primary that holds it has been compared with MySQL (gate-state.ts). It
 * decides that from its slot map; but the map can be behind, and the Cluster client follows a MOVED reply to
 * whichever primary owns the slot now. Here an event's slot moves to a primary that is not checked (its state
 * marker gone, and the check held off by another process's lock, as while a restore runs elsewhere) and the
 * burst that follows reaches it through MOVED: no coupon may be told from it until it is checked.
 * History check: every answer against MySQL at the end.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import calculateSlot from 'cluster-key-slot';
import { type LocalRedisCluster, startRedisCluster } from '../../scripts/local-servers/redis-cluster.ts';
import type { ServiceProcess } from '../../scripts/services.ts';
import { type CouponRedis, serverIdentity } from '../../src/redis/client.ts';
import { STATE_CHECK_LOCK_KEY, eventKeys } from '../../src/redis/keys.ts';
import { markerKeyOf, nodeName, primaries, primaryOf } from '../../src/redis/topology.ts';
import { apply, createEvent, waitFor } from '../support/harness.ts';
import { describeFault } from '../support/fault-stack.ts';
import { countBy, users } from '../support/load.ts';
import { checkPersisted, recordFigures, toldSequence } from '../support/observe.ts';
import { clusterClient, eventIdsOnEveryShard, moveSlot, ownerOf, ready } from '../support/redis-cluster.ts';

const BURST = 40;

describeFault('Redis Cluster: a slot moved to a primary not compared with MySQL', { folder: 'redis-cluster-unchecked' }, (stack) => {
  let dir: string;
  let cluster: LocalRedisCluster;
  let client: CouponRedis & { slots: string[][] };
  let apis: ServiceProcess[];

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'coupon-cluster-unchecked-'));
    cluster = await startRedisCluster({ dir });
    const env = { REDIS_URL: `redis://${cluster.nodes[0]}`, REDIS_CLUSTER_NODES: cluster.nodes.join(',') };
    client = clusterClient(env) as typeof client;
    await ready(client);
    apis = [await stack.spawnApi(env), await stack.spawnApi(env)];
    await stack.spawnWorker(env);
  }, 120_000);
  afterAll(async () => {
    await stack.stopProcesses();
    client?.disconnect();
    await cluster?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 60_000);

  test('when a burst follows an event\'s slot by MOVED onto an unchecked primary, then it gets 503s, never a coupon from it, until that primary is checked', async () => {
    const [moving, onTarget] = eventIdsOnEveryShard(client, 'unchecked', 1);
    const masters = primaries(client);
    const from = masters.find((node) => nodeName(node) === ownerOf(client, moving!))!;
    const to = masters.find((node) => nodeName(node) === ownerOf(client, onTarget!))!;
    for (const eventId of [moving!, onTarget!]) await createEvent(apis[0]!.url, { id: eventId, totalQuantity: 100 });
    const before = await Promise.all(users('before', 10).map((userId, i) => apply(apis[i % 2]!.url, moving!, userId)));
    expect(countBy(before, (response) => response.status)).toEqual({ 202: 10 });

    // The target loses its marker while another process holds the check's lock: no api can check it meanwhile.
    // A live holder's lock names the server it was taken on (gate-state.ts): one naming another is void.
    const lockNode = primaryOf(client, STATE_CHECK_LOCK_KEY)!;
    await client.set(STATE_CHECK_LOCK_KEY, `${await serverIdentity(lockNode)} held-by-the-test`, 'PX', 60_000);
    await to.del(markerKeyOf(client, to)!);
    // Both apis notice within their 1 s re-verification: the event already on the target answers 503.
    let probe = 0;
    for (const api of apis) {
      await waitFor(async () => (await apply(api.url, onTarget!, `probe-${probe++}`)).status === 503 || undefined,
        { timeoutMs: 10_000, what: 'the api to see the target unchecked' });
    }

    // The slot moves at once (no pause between keys) and the burst follows before the apis' maps are refreshed.
    await moveSlot(client, calculateSlot(eventKeys(moving!).meta), from, to, 0);
    const burst = await Promise.all(users('burst', BURST).map((userId, i) => apply(apis[i % 2]!.url, moving!, userId)));
    const during = countBy(burst, (response) => response.status);
    expect(during).toEqual({ 503: BURST });

    // The lock released, the apis check the target and the same users ask again.
    await client.del(STATE_CHECK_LOCK_KEY);
    for (const api of apis) {
      await waitFor(async () => (await apply(api.url, onTarget!, `probe-${probe++}`)).status === 202 || undefined,
        { timeoutMs: 15_000, what: 'the api to see the target checked' });
    }
    const retried = await Promise.all(users('burst', BURST).map((userId, i) => apply(apis[i % 2]!.url, moving!, userId)));
    // 202, not 409: the script did nothing on the unchecked primary, so these users held no coupon yet.
    const after = countBy(retried, (response) => response.status);
    expect(after).toEqual({ 202: BURST });

    // History check: each coupon told is a row with its sequence, one per user, none over N.
    const told = new Map<string, number>();
    for (const [userId, response] of [...users('before', 10).map((u, i) => [u, before[i]!] as const),
      ...users('burst', BURST).map((u, i) => [u, burst[i]!] as const), ...users('burst', BURST).map((u, i) => [u, retried[i]!] as const)]) {
      const sequence = toldSequence(response.status, response.body);
      if (sequence !== undefined) told.set(userId, sequence);
    }
    expect(told.size).toBe(10 + BURST);
    const check = await waitFor(async () => {
      const now = await checkPersisted(stack.query, moving!, [...told].map(([userId, sequence]) => ({ userId, sequence })));
      return now.issuedButMissing.length === 0 && now.rows >= told.size ? now : undefined;
    }, { timeoutMs: 30_000, what: `the coupons of ${moving} persisted` });
    expect(check).toMatchObject({ rows: 10 + BURST, distinctUsers: 10 + BURST, distinctSequences: 10 + BURST, minSequence: 1, maxSequence: 10 + BURST });
    await recordFigures('redis-cluster-unchecked-shard', { burst: BURST, whileUnchecked: during, afterCheck: after, rows: check.rows });
  }, 120_000);
});
