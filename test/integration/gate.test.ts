import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { startRedis } from '../../scripts/local-servers/index.ts';
import { isDependencyFault } from '../../src/dependency-faults.ts';
import { createRedis, type CouponRedis } from '../../src/redis/client.ts';
import { installEventState, updateEventState } from '../../src/redis/event-state.ts';
import { applyForCoupon } from '../../src/redis/gate.ts';
import { NotReplicatedError, ReplicaAcks } from '../../src/redis/replica-acks.ts';
import { encodeOutboxFields, parseUserEntry } from '../../src/redis/formats.ts';
import { EVENT_REGISTRY_KEY, eventKeys } from '../../src/redis/keys.ts';
import { serverUrls, uniqueEventId } from '../support/harness.ts';

let redis: CouponRedis;

beforeAll(() => {
  redis = createRedis(serverUrls().REDIS_URL);
});
afterAll(async () => {
  await redis.quit();
});

const gate = (eventId: string, userId: string) => applyForCoupon(redis, eventId, userId, randomUUID());

async function openEvent(totalQuantity: number, window: { startsAtMs?: number; endsAtMs?: number | null } = {}): Promise<string> {
  const eventId = uniqueEventId('gate');
  await installEventState(redis, eventId, {
    totalQuantity, startsAtMs: window.startsAtMs ?? Date.now() - 60_000, endsAtMs: window.endsAtMs ?? null, issued: 0,
  });
  return eventId;
}

describe('the gate script', () => {
  test('when users apply, then each gets the next sequence and one outbox entry with the gate\'s time', async () => {
    const eventId = await openEvent(3);
    const before = Date.now();
    const outcomes = [await gate(eventId, 'ann'), await gate(eventId, 'bob')];
    expect(outcomes).toEqual([
      { kind: 'issued', sequence: 1, issuedAtMs: expect.any(Number) },
      { kind: 'issued', sequence: 2, issuedAtMs: expect.any(Number) },
    ]);
    // What the script writes is what src/redis/formats.ts reads and writes: the one home of both formats.
    const issuedAt = outcomes.map((outcome) => (outcome as { issuedAtMs: number }).issuedAtMs);
    const entries = await redis.xrange(eventKeys(eventId).outbox, '-', '+');
    expect(entries.map(([, fields]) => fields)).toEqual([
      encodeOutboxFields({ eventId, userId: 'ann', sequence: 1, issuedAtMs: issuedAt[0]! }),
      encodeOutboxFields({ eventId, userId: 'bob', sequence: 2, issuedAtMs: issuedAt[1]! }),
    ]);
    const annEntry = parseUserEntry((await redis.hget(eventKeys(eventId).users, 'ann'))!);
    expect(annEntry).toEqual({ sequence: 1, issuedAtMs: issuedAt[0], requestId: expect.stringMatching(/^[0-9a-f-]{36}$/) });
    // Redis TIME and this machine's clock are the same clock here; the gate must not drift from it.
    expect(Math.abs((outcomes[0] as { issuedAtMs: number }).issuedAtMs - before)).toBeLessThan(5_000);
    expect(await redis.sismember(EVENT_REGISTRY_KEY, eventId)).toBe(1);
  });

  test('when a user applies twice, then the second answer names the first sequence and nothing more is issued', async () => {
    const eventId = await openEvent(5);
    await gate(eventId, 'ann');
    expect(await gate(eventId, 'ann')).toEqual({ kind: 'already_applied', sequence: 1 });
    expect(await redis.get(eventKeys(eventId).issued)).toBe('1');
    expect(await redis.xlen(eventKeys(eventId).outbox)).toBe(1);
  });

  test('when the quantity is reached, then every further user is sold out and the count stays at N', async () => {
    const eventId = await openEvent(2);
    const outcomes = [];
    for (const user of ['a', 'b', 'c', 'd']) outcomes.push((await gate(eventId, user)).kind);
    expect(outcomes).toEqual(['issued', 'issued', 'sold_out', 'sold_out']);
    expect(await redis.get(eventKeys(eventId).issued)).toBe('2');
    expect(await redis.xlen(eventKeys(eventId).outbox)).toBe(2);
  });

  test('when a sold-out user applies again, then they hear already_applied rather than sold_out', async () => {
    const eventId = await openEvent(1);
    await gate(eventId, 'winner');
    expect((await gate(eventId, 'winner')).kind).toBe('already_applied');
  });

  test('when the event has not started or has ended, then nothing is issued', async () => {
    const future = await openEvent(5, { startsAtMs: Date.now() + 3_600_000 });
    const past = await openEvent(5, { startsAtMs: Date.now() - 7_200_000, endsAtMs: Date.now() - 3_600_000 });
    expect(await gate(future, 'ann')).toEqual({ kind: 'not_started' });
    expect(await gate(past, 'ann')).toEqual({ kind: 'ended' });
    for (const eventId of [future, past]) {
      expect(await redis.get(eventKeys(eventId).issued)).toBe('0');
      expect(await redis.xlen(eventKeys(eventId).outbox)).toBe(0);
      expect(await redis.hlen(eventKeys(eventId).users)).toBe(0);
    }
  });

  test('when an operator paused the event, then nothing is issued, but a retry of the request that got a coupon still gets it', async () => {
    const eventId = await openEvent(5);
    const first = await applyForCoupon(redis, eventId, 'ann', 'ann-key');
    await redis.hset(eventKeys(eventId).meta, 'paused', '1');
    expect(await gate(eventId, 'bob')).toEqual({ kind: 'paused' });
    expect(await applyForCoupon(redis, eventId, 'ann', 'ann-key')).toEqual({ ...first, kind: 'repeated' });
    expect(await redis.get(eventKeys(eventId).issued)).toBe('1');
    await redis.hdel(eventKeys(eventId).meta, 'paused');
    expect(await gate(eventId, 'bob')).toMatchObject({ kind: 'issued', sequence: 2 });
  });

  test('when a holder applies while the event is paused or after its end, then they hear already_applied with their sequence', async () => {
    const pausedEvent = await openEvent(5);
    const endedEvent = await openEvent(5, { startsAtMs: Date.now() - 60_000, endsAtMs: Date.now() + 1_000 });
    await gate(pausedEvent, 'ann');
    await gate(endedEvent, 'ann');
    await redis.hset(eventKeys(pausedEvent).meta, 'paused', '1');
    await redis.hset(eventKeys(endedEvent).meta, 'endsAt', String(Date.now() - 1_000));
    expect(await gate(pausedEvent, 'ann')).toEqual({ kind: 'already_applied', sequence: 1 });
    expect(await gate(endedEvent, 'ann')).toEqual({ kind: 'already_applied', sequence: 1 });
    // everyone else still hears why nothing is issued
    expect(await gate(pausedEvent, 'bob')).toEqual({ kind: 'paused' });
    expect(await gate(endedEvent, 'bob')).toEqual({ kind: 'ended' });
  });

  test('when GATE_MIN_REPLICAS asks for a replica the primary does not have, then the gate refuses before issuing anything', async () => {
    expect(await redis.info('replication')).toMatch(/connected_slaves:0\b/);
    const eventId = await openEvent(5);
    const first = await applyForCoupon(redis, eventId, 'ann', 'ann-key');
    const replicas = new ReplicaAcks(redis, 1, 50);
    await expect(applyForCoupon(redis, eventId, 'bob', randomUUID(), { replicas })).rejects.toThrow(NotReplicatedError);
    // a repeat would write its entry again to be acknowledged: refused alike, and the holder keeps the coupon
    await expect(applyForCoupon(redis, eventId, 'ann', 'ann-key', { replicas })).rejects.toThrow(NotReplicatedError);
    expect(await redis.get(eventKeys(eventId).issued)).toBe('1');
    expect(await redis.hget(eventKeys(eventId).users, 'bob')).toBeNull();
    expect(await redis.xlen(eventKeys(eventId).outbox)).toBe(1);
    // answers that write nothing need no replica: a holder still hears their sequence, and sold out stays 410
    expect(await applyForCoupon(redis, eventId, 'ann', randomUUID(), { replicas })).toEqual({ kind: 'already_applied', sequence: (first as { sequence: number }).sequence });
    await redis.hset(eventKeys(eventId).meta, 'total', '1');
    expect(await applyForCoupon(redis, eventId, 'bob', randomUUID(), { replicas })).toEqual({ kind: 'sold_out' });
  });

  test('when the server itself refuses writes short of replicas (min-replicas-to-write), then the gate fails as a dependency fault and issues nothing', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'coupon-gate-noreplicas-'));
    const server = await startRedis({ dir: join(dir, 'redis') });
    const own = createRedis(server.url);
    try {
      const eventId = uniqueEventId('gate');
      await own.hset(eventKeys(eventId).meta, 'total', '5', 'startsAt', '0');
      await own.config('SET', 'min-replicas-to-write', '1');
      const refused = await applyForCoupon(own, eventId, 'ann', randomUUID()).catch((error: unknown) => error);
      expect(isDependencyFault(refused)).toBe(true);
      expect(String(refused)).toMatch(/NOREPLICAS/);
      expect(await own.get(eventKeys(eventId).issued)).toBeNull();
      expect(await own.hlen(eventKeys(eventId).users)).toBe(0);
    } finally {
      own.disconnect();
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('when Redis has no state for the event, then the gate says so and writes nothing', async () => {
    const eventId = uniqueEventId('gate');
    expect(await gate(eventId, 'ann')).toEqual({ kind: 'state_missing' });
    expect(await redis.exists(...Object.values(eventKeys(eventId)))).toBe(0);
  });

  test('when the state is installed twice, then the second install changes nothing (a rebuild cannot roll back the count)', async () => {
    const eventId = await openEvent(3);
    await gate(eventId, 'ann');
    const wrote = await installEventState(redis, eventId, { totalQuantity: 3, startsAtMs: 0, endsAtMs: null, issued: 0 });
    expect(wrote).toBe('unchanged');
    expect((await gate(eventId, 'bob')).kind).toBe('issued');
    expect(await redis.get(eventKeys(eventId).issued)).toBe('2');
  });

  test('when the quantity is lowered below what is issued, then the change is refused; raising it reopens the event', async () => {
    const eventId = await openEvent(2);
    await gate(eventId, 'a');
    await gate(eventId, 'b');
    expect(await updateEventState(redis, eventId, { totalQuantity: 1 })).toEqual({ kind: 'quantity_below_issued', issued: 2 });
    expect((await gate(eventId, 'c')).kind).toBe('sold_out');
    expect(await updateEventState(redis, eventId, { totalQuantity: 3 })).toEqual({ kind: 'updated', issued: 2 });
    expect(await gate(eventId, 'c')).toMatchObject({ kind: 'issued', sequence: 3 });
  });

  test('when the gate\'s reply comes too late, then the request still learns for certain whether its own call issued the coupon', async () => {
    const eventId = await openEvent(5);
    const timeoutMs = 300;
    const impatient = createRedis(serverUrls().REDIS_URL, { commandTimeoutMs: 5 * timeoutMs });
    const probe = createRedis(serverUrls().REDIS_URL, { commandTimeoutMs: timeoutMs });
    const blocker = createRedis(serverUrls().REDIS_URL);
    try {
      await Promise.all([impatient.ping(), probe.ping()]);
      // Redis is busy for ~400 ms: the gate runs after that, so its reply misses the 300 ms timeout, and the
      // settling read (150 ms more) arrives in time.
      const busy = blocker.eval("local t = redis.call('TIME'); local s = t[1] * 1000000 + t[2]; repeat t = redis.call('TIME') until t[1] * 1000000 + t[2] - s > 400000; return 1", 0);
      await new Promise((resolve) => setTimeout(resolve, 20));
      const [mine, theirs, plain] = await Promise.allSettled([
        applyForCoupon(impatient, eventId, 'ann', 'request-1', { timeoutMs }),
        applyForCoupon(impatient, eventId, 'ann', 'request-2', { timeoutMs }),
        probe.get(eventKeys(eventId).issued),
      ]);
      // The same wait makes an ordinary command fail: the gate calls above really did time out.
      expect(plain).toMatchObject({ status: 'rejected', reason: { message: 'Command timed out' } });
      await busy;
      expect(mine).toMatchObject({ status: 'fulfilled', value: { kind: 'issued', sequence: 1 } });
      expect(theirs).toEqual({ status: 'fulfilled', value: { kind: 'already_applied', sequence: 1 } });
      expect(await redis.xlen(eventKeys(eventId).outbox)).toBe(1);
    } finally {
      impatient.disconnect();
      probe.disconnect();
      blocker.disconnect();
    }
  });
});
