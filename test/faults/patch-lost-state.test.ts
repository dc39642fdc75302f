/**
 * A PATCH of an event whose gate state Redis has lost (its keys gone while the marker stays: a Redis that never
 * had them, or lost them alone). Before the fix it answered 503 until the background sweep, a minute later; now
 * it restores the event from MySQL first (fenced) and applies the change. History check: every answer a client
 * got, before and after, against MySQL at the end: nothing lost, nothing doubled, never over the new quantity.
 * On a Redis of its own, with its own api and worker, so nothing else of the suite touches the event.
 */
import type { LocalServer } from '../../scripts/local-servers/index.ts';
import { eventKeys } from '../../src/redis/keys.ts';
import { createRedis } from '../../src/redis/client.ts';
import {
  ADMIN_TOKEN, type ServiceProcess, apply, closePool, createEvent, query, request, startOwnRedis, spawnApi, spawnWorker,
  uniqueEventId, waitForPersisted,
} from '../support/harness.ts';
import { checkPersisted } from '../support/observe.ts';

let redisServer: LocalServer;
let api: ServiceProcess;
let worker: ServiceProcess;

beforeAll(async () => {
  redisServer = await startOwnRedis('patch-lost-state');
  api = await spawnApi({ REDIS_URL: redisServer.url });
  worker = await spawnWorker({ REDIS_URL: redisServer.url });
}, 60_000);
afterAll(async () => {
  await Promise.all([api?.stop(), worker?.stop()]);
  await redisServer?.stop();
  await closePool();
});

test('when Redis has lost an event\'s gate state, then a PATCH restores it from MySQL and applies the change, and every answer matches MySQL', async () => {
  const eventId = uniqueEventId('patch-lost');
  await createEvent(api.url, { id: eventId, totalQuantity: 4 });
  const issued: Array<{ userId: string; sequence: number }> = [];
  const answers: Record<string, number> = {};
  const applyAs = async (userId: string) => {
    const answer = await apply(api.url, eventId, userId);
    answers[answer.status] = (answers[answer.status] ?? 0) + 1;
    if (answer.status === 202) issued.push({ userId, sequence: answer.body.sequence! });
    return answer;
  };
  for (const userId of ['early-1', 'early-2', 'early-3']) expect((await applyAs(userId)).status).toBe(202);
  await waitForPersisted(eventId, 3);

  const redis = createRedis(redisServer.url);
  try {
    const keys = eventKeys(eventId);
    await redis.del(keys.meta, keys.issued, keys.users);
  } finally {
    redis.disconnect();
  }

  const patched = await request(`${api.url}/v1/events/${eventId}`, { method: 'PATCH', body: { totalQuantity: 6 }, token: ADMIN_TOKEN });
  expect(patched).toMatchObject({ status: 200, body: { totalQuantity: 6, issued: 3 } });

  // The holders are known again, and the counter goes on from MySQL's highest sequence.
  const again = await applyAs('early-1');
  expect(again).toMatchObject({ status: 409, body: { error: 'already_applied' } });
  const later = await Promise.all(Array.from({ length: 6 }, (_, i) => applyAs(`late-${i}`)));
  expect(later.filter((answer) => answer.status === 202)).toHaveLength(3);
  expect(later.filter((answer) => answer.status === 410)).toHaveLength(3);

  await waitForPersisted(eventId, issued.length);
  const check = await checkPersisted(query, eventId, issued);
  expect(answers).toEqual({ 202: 6, 409: 1, 410: 3 });
  expect(check).toEqual({ rows: 6, distinctUsers: 6, distinctSequences: 6, minSequence: 1, maxSequence: 6, issuedButMissing: [] });
}, 90_000);
