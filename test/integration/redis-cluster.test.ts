/**
 * The service on a Redis Cluster (REDIS_CLUSTER_NODES): 3 primaries from `redis-server --cluster-enabled yes`,
 * joined by `redis-cli --cluster create`; 2 api and 2 worker processes. Events spread over every shard by hash
 * slot, each issues exactly N, and every 202 a client got is a row in MySQL (history check).
 */
import { EVENT_REGISTRY_KEY, eventKeys } from '../../src/redis/keys.ts';
import {
  type ServiceProcess, apply, createEvent, query, request, uniqueEventId, waitForPersisted,
} from '../support/harness.ts';
import { checkPersisted, scrapeMetric, toldSequence } from '../support/observe.ts';
import { eventIdsOnEveryShard, ownerOf, useClusterServices } from '../support/redis-cluster.ts';

const TOTAL = 30;
const USERS_PER_EVENT = 60;
const IN_FLIGHT = 48;

const services = useClusterServices('redis-cluster');

test('when 9 events spread over 3 shards get a burst through 2 apis and 2 workers, then each issues exactly N and every 202 is a row', async () => {
  const eventIds = eventIdsOnEveryShard(services.own.client, 'cluster', 3);
  expect(new Set(eventIds.map((eventId) => ownerOf(services.own.client, eventId))).size).toBe(3);
  for (const [i, eventId] of eventIds.entries()) await createEvent(services.apis[i % 2]!.url, { id: eventId, totalQuantity: TOTAL });

  // Every event's users interleaved, half through each api, IN_FLIGHT requests at a time.
  // User ids of this run alone: the suite's shared MySQL holds other tests' coupons of `user-0` and the like.
  const run = uniqueEventId('u');
  const calls = Array.from({ length: USERS_PER_EVENT }, (_, u) => eventIds.map((eventId) => ({ eventId, userId: `${run}-${u}` }))).flat();
  const answers = new Map<string, Record<number, number>>(eventIds.map((eventId) => [eventId, {}]));
  const issued = new Map<string, Array<{ userId: string; sequence: number }>>(eventIds.map((eventId) => [eventId, []]));
  /** A user's final answer: a coupon told of (202, or a retry's 409 naming it) counts as issued. */
  const record = (call: { eventId: string; userId: string }, answer: Awaited<ReturnType<typeof apply>>) => {
    const sequence = toldSequence(answer.status, answer.body);
    const status = sequence === undefined ? answer.status : 202;
    const counts = answers.get(call.eventId)!;
    counts[status] = (counts[status] ?? 0) + 1;
    if (sequence !== undefined) issued.get(call.eventId)!.push({ userId: call.userId, sequence });
  };
  let next = 0;
  const unknown: typeof calls = [];
  await Promise.all(Array.from({ length: IN_FLIGHT }, async () => {
    for (let call = calls[next++]; call; call = calls[next++]) {
      const answer = await apply(services.apis[next % 2]!.url, call.eventId, call.userId);
      // A 503 (the gate's deadline passed on a loaded machine) tells nothing: the client asks again below.
      if (answer.status === 503) unknown.push(call);
      else record(call, answer);
    }
  }));
  for (const call of unknown) record(call, await apply(services.apis[0]!.url, call.eventId, call.userId));

  for (const eventId of eventIds) {
    expect({ eventId, answers: answers.get(eventId) }).toEqual({ eventId, answers: { 202: TOTAL, 410: USERS_PER_EVENT - TOTAL } });
    await waitForPersisted(eventId, TOTAL);
    expect(await checkPersisted(query, eventId, issued.get(eventId)!)).toEqual({
      rows: TOTAL, distinctUsers: TOTAL, distinctSequences: TOTAL, minSequence: 1, maxSequence: TOTAL, issuedButMissing: [],
    });
    // The event's keys (the outbox among them) live on its shard alone; the registry, one key, names it.
    expect(await services.own.client.xlen(eventKeys(eventId).outbox)).toBeGreaterThan(0);
    expect(await services.own.client.sismember(EVENT_REGISTRY_KEY, eventId)).toBe(1);
  }
  // Both workers drained streams of the Cluster, and both apis answered.
  const persistedBy = await Promise.all(services.workers.map((worker) => scrapeMetric(worker.url, 'coupon_persisted_total')));
  expect(persistedBy.reduce((a, b) => a + b, 0)).toBe(9 * TOTAL);
  for (const count of persistedBy) expect(count).toBeGreaterThan(0);

  // One user's coupons across the shards: the read asks each event's users hash on its own shard.
  const holder = issued.get(eventIds[0]!)![0]!.userId;
  const held = eventIds.filter((eventId) => issued.get(eventId)!.some((coupon) => coupon.userId === holder));
  const listed = await request<{ coupons: Array<{ eventId: string }> }>(`${services.apis[1]!.url}/v1/users/${holder}/coupons`);
  expect(listed.status).toBe(200);
  expect(listed.body.coupons.map((coupon) => coupon.eventId).sort()).toEqual([...held].sort());
}, 180_000);

test('when an event is created on a Cluster, then an unknown event id on any shard answers 404 without waiting for a restore', async () => {
  const unknown = eventIdsOnEveryShard(services.own.client, 'nowhere', 1);
  for (const eventId of unknown) {
    const answer = await apply(services.apis[0]!.url, eventId, 'someone');
    expect({ eventId, status: answer.status, error: answer.body.error }).toEqual({ eventId, status: 404, error: 'event_not_found' });
  }
});
