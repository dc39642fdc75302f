/**
 * The read behind a sold-out answer (a holder hears 409 with its coupon, never 410), batched per event and turn
 * (src/redis/holder-reads.ts): against a real Redis, the batched reads answer each user what an HGET of its own
 * would, and a missing gate state is told to every caller; one HMGET per event per turn, at most 256 users each.
 */
import fc from 'fast-check';
import { createRedis, type CouponRedis } from '../../src/redis/client.ts';
import { installEventState } from '../../src/redis/event-state.ts';
import { heldCoupon } from '../../src/redis/gate.ts';
import { HolderReads } from '../../src/redis/holder-reads.ts';
import { eventKeys } from '../../src/redis/keys.ts';
import { parseUserEntry } from '../../src/redis/formats.ts';
import { serverUrls, uniqueEventId } from '../support/harness.ts';

let redis: CouponRedis;

beforeAll(() => {
  redis = createRedis(serverUrls().REDIS_URL);
});
afterAll(async () => {
  await redis.quit();
});

// 'Dee' and 'dee' are two users: ids are exact byte strings.
const USERS = ['ann', 'bob', 'cy', 'Dee', 'dee', 'e-f_9', 'zed'];

async function soldOutEvent(holders: readonly string[]): Promise<string> {
  const eventId = uniqueEventId('hr');
  await installEventState(redis, eventId, {
    totalQuantity: holders.length, startsAtMs: Date.now() - 60_000, endsAtMs: null, issued: holders.length,
    users: holders.map((user, i) => [user, `${i + 1}:1700000000000`]),
  });
  return eventId;
}

/** What one HGET per user reads: the sequence the user holds, or undefined. */
async function readAlone(eventId: string, userId: string): Promise<number | undefined> {
  const entry = await redis.hget(eventKeys(eventId).users, userId);
  return entry === null ? undefined : parseUserEntry(entry).sequence;
}

test('When users of two sold-out events ask in one turn, then each hears what a read of its own gives, in one HMGET per event', async () => {
  await fc.assert(fc.asyncProperty(
    fc.subarray(USERS), fc.subarray(USERS), fc.array(fc.tuple(fc.boolean(), fc.constantFrom(...USERS)), { maxLength: 30 }),
    async (holdersA, holdersB, asks) => {
      const [a, b] = [await soldOutEvent(holdersA), await soldOutEvent(holdersB)];
      const reads = new HolderReads(redis);
      const batched = await Promise.all(asks.map(([first, user]) => heldCoupon(reads, first ? a : b, user)));
      const alone = await Promise.all(asks.map(([first, user]) => readAlone(first ? a : b, user)));
      expect(batched).toEqual(alone);
      expect(reads.calls).toBe(new Set(asks.map(([first]) => first)).size);
      expect(reads.reads).toBe(asks.length);
    },
  ), { numRuns: 40 });
});

test('When the event has no gate state (a flush), then every reader of the turn is told so, holder or not', async () => {
  const eventId = await soldOutEvent(['ann', 'bob']);
  const keys = eventKeys(eventId);
  await redis.del(keys.meta);
  const reads = new HolderReads(redis);
  expect(await Promise.all(['ann', 'cy'].map((user) => heldCoupon(reads, eventId, user)))).toEqual(['state_missing', 'state_missing']);
  expect(reads.calls).toBe(1);
});

test('When 600 users of one event ask in one turn, then three HMGETs of at most 256 answer them all', async () => {
  const users = Array.from({ length: 600 }, (_, i) => `u${i}`);
  const eventId = await soldOutEvent(users.filter((_, i) => i % 3 === 0));
  const reads = new HolderReads(redis);
  const answers = await Promise.all(users.map((user) => heldCoupon(reads, eventId, user)));
  expect(answers).toEqual(users.map((_, i) => (i % 3 === 0 ? i / 3 + 1 : undefined)));
  expect(reads.calls).toBe(3);
});
