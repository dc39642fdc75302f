/**
 * GATE_BATCH=on against the single gate: for the same arrival order, gate-batch.lua (however the requests are split
 * into calls) gives every request gate.lua's answer and leaves the same state (counter, users, meta, outbox), on a
 * real Redis; and the batched path in gate.ts keeps each request's deadline and settle.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import fc from 'fast-check';
import { startRedis } from '../../scripts/local-servers/index.ts';
import { ReplicaAcks } from '../../src/redis/replica-acks.ts';
import { createRedis, type CouponRedis } from '../../src/redis/client.ts';
import { installEventState } from '../../src/redis/event-state.ts';
import { applyForCoupon, GateTimeoutError } from '../../src/redis/gate.ts';
import { GateBatcher, splitBatchReply } from '../../src/redis/gate-batcher.ts';
import { eventKeys } from '../../src/redis/keys.ts';
import type { ApplyOutcome } from '../../src/domain/coupon.ts';
import { serverUrls, uniqueEventId } from '../support/harness.ts';

let redis: CouponRedis;

beforeAll(() => {
  redis = createRedis(serverUrls().REDIS_URL);
});
afterAll(async () => {
  await redis.quit();
});

/** When the pre-existing coupons were issued: told apart from the coupons a run issues (Redis time, now). */
const EARLIER = 1_700_000_000_000;
// 'Dee' and 'dee' are two users: ids are exact byte strings.
const USERS = ['ann', 'bob', 'cy', 'Dee', 'dee', 'e-f_9'];
const KEYS = ['k1', 'k2', 'k3'];
const GIVEN_UP = ['x1', 'x2'];

type Window = 'open' | 'bounded' | 'not_started' | 'ended';

interface Scenario {
  total: number;
  window: Window;
  paused: boolean;
  minReplicas: number;
  /** users holding a coupon before the run (sequence 1, 2, ... in this order), with the request id recorded, if any */
  holders: Array<{ user: string; requestId: string | undefined }>;
  /** attempts recorded as given up (abandon-attempt.lua) before the run */
  givenUp: Array<{ user: string; attempt: string }>;
  /** in arrival order; requestId and attempt: a key or given-up attempt of the pools, or one of the request's own */
  requests: Array<{ user: string; key: string | undefined; attempt: string | undefined | null }>;
  /** where the batched run starts a new script call (indexes into requests) */
  cuts: number[];
}

const scenarios: fc.Arbitrary<Scenario> = fc.record({
  total: fc.integer({ min: 0, max: 6 }),
  window: fc.constantFrom<Window>('open', 'open', 'bounded', 'not_started', 'ended'),
  paused: fc.integer({ min: 0, max: 6 }).map((n) => n === 0),
  minReplicas: fc.constantFrom(0, 0, 0, 1),
  holders: fc.uniqueArray(
    fc.record({ user: fc.constantFrom(...USERS), requestId: fc.option(fc.constantFrom(...KEYS, 'old'), { nil: undefined }) }),
    { maxLength: 3, selector: (holder) => holder.user },
  ),
  givenUp: fc.array(fc.record({ user: fc.constantFrom(...USERS), attempt: fc.constantFrom(...GIVEN_UP) }), { maxLength: 3 }),
  requests: fc.array(
    fc.record({
      user: fc.constantFrom(...USERS),
      key: fc.option(fc.constantFrom(...KEYS), { nil: undefined, freq: 2 }),
      // null: no attempt id (the check is off), undefined: one of its own
      attempt: fc.oneof(fc.constant(undefined), fc.constant(undefined), fc.constantFrom(...GIVEN_UP), fc.constant(null)),
    }),
    { minLength: 1, maxLength: 16 },
  ),
  cuts: fc.uniqueArray(fc.integer({ min: 1, max: 15 }), { maxLength: 4 }),
});

/** The event of a scenario, its window around `now` (the same for both runs of one scenario). */
async function install(scenario: Scenario, now = Date.now()): Promise<string> {
  const eventId = uniqueEventId('gb');
  const hour = 3_600_000;
  const window = {
    open: { startsAtMs: now - hour, endsAtMs: null },
    bounded: { startsAtMs: now - hour, endsAtMs: now + hour },
    not_started: { startsAtMs: now + hour, endsAtMs: null },
    ended: { startsAtMs: now - 2 * hour, endsAtMs: now - hour },
  }[scenario.window];
  await installEventState(redis, eventId, {
    totalQuantity: scenario.total, ...window, issued: scenario.holders.length, paused: scenario.paused,
    users: scenario.holders.map(({ user, requestId }, i) => [user, requestId === undefined ? `${i + 1}:${EARLIER}` : `${i + 1}:${EARLIER}:${requestId}`]),
  });
  const givenUp = new Map<string, string>();
  for (const { user, attempt } of scenario.givenUp) givenUp.set(user, `${givenUp.get(user) ?? ''} ${attempt}`);
  for (const [user, attempts] of givenUp) await redis.hset(eventKeys(eventId).meta, `abandoned:${user}`, attempts);
  return eventId;
}

/** Each request's gate arguments: userId, requestId, attempt id. */
function argsOf(scenario: Scenario): Array<[string, string, string]> {
  return scenario.requests.map(({ user, key, attempt }, i) => [user, key ?? `~r${i}`, attempt === null ? '' : attempt ?? `~a${i}`]);
}

type Reply = [number, number, number | string];

/** Times of this run's writes differ between the two runs (Redis TIME): compared as "now", the earlier ones exactly. */
const when = (ms: number | string): number | string => (Number(ms) === EARLIER || Number(ms) === 0 ? Number(ms) : 'now');

async function runSingle(eventId: string, scenario: Scenario): Promise<Reply[]> {
  const keys = eventKeys(eventId);
  const replies: Reply[] = [];
  for (const [user, requestId, attempt] of argsOf(scenario)) {
    const [code, sequence, issuedAt] = await redis.gate(
      keys.meta, keys.issued, keys.users, keys.outbox, eventId, user, requestId, '', String(scenario.minReplicas), '2', attempt,
    );
    replies.push([code, sequence, when(issuedAt)]);
  }
  return replies;
}

async function runBatched(eventId: string, scenario: Scenario): Promise<Reply[]> {
  const keys = eventKeys(eventId);
  const args = argsOf(scenario);
  const bounds = [0, ...scenario.cuts.filter((cut) => cut < args.length).sort((a, b) => a - b), args.length];
  const replies: Reply[] = [];
  for (let i = 0; i + 1 < bounds.length; i++) {
    const part = args.slice(bounds[i], bounds[i + 1]);
    const reply = await redis.gateBatch(keys.meta, keys.issued, keys.users, keys.outbox, eventId, '', String(scenario.minReplicas), '2', ...part.flat());
    for (const [code, sequence, issuedAt] of splitBatchReply(reply, part.length)) replies.push([code, sequence, when(issuedAt)]);
  }
  return replies;
}

/** Everything the gate reads or writes, with the event id and this run's times made comparable. */
async function stateOf(eventId: string): Promise<unknown> {
  const keys = eventKeys(eventId);
  const users = await redis.hgetall(keys.users);
  const outbox = await redis.xrange(keys.outbox, '-', '+');
  return {
    issued: await redis.get(keys.issued),
    meta: await redis.hgetall(keys.meta),
    users: Object.fromEntries(Object.entries(users).map(([user, entry]) => {
      const [sequence, issuedAt, ...rest] = entry.split(':');
      return [user, [sequence, when(issuedAt!), ...rest].join(':')];
    })),
    outbox: outbox.map(([, fields]) => fields.map((value, i) => (
      fields[i - 1] === 'eventId' ? (value === eventId ? 'E' : value) : fields[i - 1] === 'issuedAt' ? when(value) : value
    ))),
  };
}

describe('the batched gate script', () => {
  test('when the same requests arrive in the same order, then batched and single gates answer each alike and leave the same state', async () => {
    await fc.assert(fc.asyncProperty(scenarios, async (scenario) => {
      const now = Date.now();
      const [single, batched] = [await install(scenario, now), await install(scenario, now)];
      const singleReplies = await runSingle(single, scenario);
      const batchedReplies = await runBatched(batched, scenario);
      expect(batchedReplies).toEqual(singleReplies);
      expect(await stateOf(batched)).toEqual(await stateOf(single));
    }), { numRuns: 150 });
  });

  test('when the event has no gate state, then every request of the call hears so and nothing is written', async () => {
    const eventId = uniqueEventId('gb');
    const keys = eventKeys(eventId);
    const reply = await redis.gateBatch(keys.meta, keys.issued, keys.users, keys.outbox, eventId, '', '0', '2', 'ann', 'r1', 'a1', 'bob', 'r2', 'a2');
    expect(splitBatchReply(reply, 2).map(([code]) => code)).toEqual([5, 5]);
    expect(await redis.exists(keys.issued, keys.users, keys.outbox)).toBe(0);
  });
});

/** An ApplyOutcome with this run's issuedAtMs made comparable. */
const comparable = (outcome: ApplyOutcome | { error: string }): unknown => (
  'issuedAtMs' in outcome ? { ...outcome, issuedAtMs: when(outcome.issuedAtMs) } : outcome
);

describe('the batched gate as the api calls it', () => {
  test('when applies start in one turn, then they share script calls and each gets the answer the single gate gives in that order', async () => {
    await fc.assert(fc.asyncProperty(scenarios.map((s) => ({ ...s, minReplicas: 0, givenUp: [] })), fc.integer({ min: 1, max: 8 }), async (scenario, maxBatch) => {
      const now = Date.now();
      const [single, batched] = [await install(scenario, now), await install(scenario, now)];
      const requests = scenario.requests.map(({ user, key }, i) => ({ user, requestId: key ?? `~r${i}.${Math.random()}` }));
      const alone: unknown[] = [];
      for (const { user, requestId } of requests) alone.push(comparable(await applyForCoupon(redis, single, user, requestId)));
      const batcher = new GateBatcher(redis, { maxBatch });
      const together = await Promise.all(requests.map(({ user, requestId }) => applyForCoupon(redis, batched, user, requestId, { batch: batcher })));
      expect(together.map(comparable)).toEqual(alone);
      expect(await stateOf(batched)).toEqual(await stateOf(single));
      expect(batcher.requests).toBe(requests.length);
      expect(batcher.calls).toBe(Math.ceil(requests.length / maxBatch));
    }), { numRuns: 60 });
  });

  /** A client whose gate-batch calls reach Redis, or answer, only after `delayMs`; the settle's commands go at once. */
  function slowBatches(delayMs: number, where: 'before' | 'after'): CouponRedis {
    const sleep = () => new Promise((resolve) => setTimeout(resolve, delayMs));
    return {
      gateBatch: async (...args: Parameters<CouponRedis['gateBatch']>) => {
        if (where === 'before') await sleep();
        const reply = await redis.gateBatch(...args);
        if (where === 'after') await sleep();
        return reply;
      },
      abandonAttempt: redis.abandonAttempt.bind(redis),
      sendCommand: redis.sendCommand.bind(redis),
    } as unknown as CouponRedis;
  }

  test('when a batch reaches Redis after its callers\' deadlines, then each was answered 503 and the late call issues nothing', async () => {
    const scenario = { total: 5, window: 'open', paused: false, holders: [], givenUp: [] } as unknown as Scenario;
    const eventId = await install(scenario);
    const batcher = new GateBatcher(slowBatches(400, 'before'));
    const answers = await Promise.allSettled(['ann', 'bob', 'cy'].map((user, i) => (
      applyForCoupon(redis, eventId, user, `~late${i}`, { batch: batcher, timeoutMs: 100 }))));
    expect(answers.map((answer) => answer.status === 'rejected' && answer.reason instanceof GateTimeoutError)).toEqual([true, true, true]);
    await new Promise((resolve) => setTimeout(resolve, 600));
    const keys = eventKeys(eventId);
    expect(await redis.get(keys.issued)).toBe('0');
    expect(await redis.hlen(keys.users)).toBe(0);
    expect(await redis.xlen(keys.outbox)).toBe(0);
  });

  test('when a batch ran but its reply comes after the deadlines, then each caller learns its own coupon from the settle', async () => {
    const scenario = { total: 2, window: 'open', paused: false, holders: [{ user: 'cy', requestId: 'k1' }], givenUp: [] } as unknown as Scenario;
    const eventId = await install(scenario);
    const batcher = new GateBatcher(slowBatches(400, 'after'));
    const answers = await Promise.allSettled(['ann', 'bob', 'cy', 'dee'].map((user, i) => (
      applyForCoupon(redis, eventId, user, `~slow${i}`, { batch: batcher, timeoutMs: 100 }))));
    expect(answers.map((answer) => (answer.status === 'fulfilled' ? comparable(answer.value) : { error: String(answer.reason) }))).toEqual([
      { kind: 'issued', sequence: 2, issuedAtMs: 'now' },
      // sold out: the settle finds no entry and reports the gate's own fault, the deadline
      { error: 'GateTimeoutError: Command timed out' },
      { kind: 'already_applied', sequence: 1 },
      { error: 'GateTimeoutError: Command timed out' },
    ]);
  });

  test('when GATE_MIN_REPLICAS is 1, then a batch\'s coupons are answered after one replica acknowledgement that covers them all', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'coupon-gate-batch-replica-'));
    const [primary, replica] = [await startRedis({ dir: join(dir, 'primary') }), await startRedis({ dir: join(dir, 'replica') })];
    const own = createRedis(primary.url);
    const follower = createRedis(replica.url);
    try {
      const { hostname, port } = new URL(primary.url);
      await follower.replicaof(hostname, port);
      for (let i = 0; !/slave0:[^\r\n]*state=online/.test(await own.info('replication')); i++) {
        if (i > 100) throw new Error('the replica did not come online');
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
      const eventId = uniqueEventId('gb');
      await installEventState(own, eventId, { totalQuantity: 3, startsAtMs: 0, endsAtMs: null, issued: 0 });
      const waitsBefore = Number(/cmdstat_wait:calls=(\d+)/.exec(await own.info('commandstats'))?.[1] ?? 0);
      const batcher = new GateBatcher(own);
      const replicas = new ReplicaAcks(own, 1, 1_000);
      const outcomes = await Promise.all(['ann', 'bob', 'cy', 'dee'].map((user, i) => (
        applyForCoupon(own, eventId, user, `~r${i}`, { batch: batcher, replicas }))));
      expect(outcomes.map(comparable)).toEqual([
        ...[1, 2, 3].map((sequence) => ({ kind: 'issued', sequence, issuedAtMs: 'now' })), { kind: 'sold_out' },
      ]);
      expect(batcher.calls).toBe(1);
      expect(Number(/cmdstat_wait:calls=(\d+)/.exec(await own.info('commandstats'))?.[1] ?? 0) - waitsBefore).toBe(1);
      expect(await follower.hlen(eventKeys(eventId).users)).toBe(3);
    } finally {
      own.disconnect();
      follower.disconnect();
      await Promise.all([primary.stop(), replica.stop()]);
      await rm(dir, { recursive: true, force: true });
    }
  });
});
