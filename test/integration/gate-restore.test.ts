/**
 * The gate state against MySQL, in process, on the shared test servers: a state that came back older than MySQL
 * is repaired before it issues, and a coupon issued by a state that was since lost is never written over the
 * answer the rebuilt state gave.
 */
import { pino } from 'pino';
import { createOrm, type Orm } from '../../src/db/orm.ts';
import { CouponStore } from '../../src/db/store.ts';
import type { IssuedCoupon } from '../../src/domain/coupon.ts';
import { GateStateKeeper } from '../../src/gate-state.ts';
import { createRegistry } from '../../src/metrics.ts';
import { createRedis, type CouponRedis } from '../../src/redis/client.ts';
import { installEventState } from '../../src/redis/event-state.ts';
import { applyForCoupon } from '../../src/redis/gate.ts';
import { eventKeys } from '../../src/redis/keys.ts';
import { WorkerMetrics } from '../../worker/metrics.ts';
import { Persister } from '../../worker/persister.ts';
import { closePool, couponRows, query, serverUrls, uniqueEventId } from '../support/harness.ts';

const coupon = (eventId: string, userId: string, sequence: number): IssuedCoupon => ({ eventId, userId, sequence, issuedAtMs: 1_790_000_000_000 + sequence });

describe('restoring the gate state from MySQL', () => {
  let orm: Orm;
  let redis: CouponRedis;
  let keeper: GateStateKeeper;
  let persister: Persister;
  let metrics: WorkerMetrics;

  beforeAll(async () => {
    orm = await createOrm(serverUrls().MYSQL_URL);
    redis = createRedis(serverUrls().REDIS_URL);
    const store = new CouponStore(orm);
    keeper = new GateStateKeeper(redis, store, pino({ level: 'silent' }));
    metrics = new WorkerMetrics(createRegistry('worker'));
    persister = new Persister({ redis, store, metrics, keeper, ratePerSec: 1_000_000, batchSize: 100 });
  });
  afterAll(async () => {
    await orm.close(true);
    await redis.quit();
    await closePool();
  });

  /** An event in MySQL with a gate state in Redis that issued these coupons. */
  async function eventIssuing(eventId: string, issued: IssuedCoupon[], total = 10): Promise<void> {
    await query('insert into coupon_event (id, name, total_quantity, starts_at) values (?, ?, ?, now(3))', [eventId, eventId, total]);
    await installEventState(redis, eventId, {
      totalQuantity: total, startsAtMs: 0, endsAtMs: null, issued: issued.length,
      users: issued.map((item) => [item.userId, `${item.sequence}:${item.issuedAtMs}:r`]),
    });
  }

  const gate = (eventId: string, userId: string) => applyForCoupon(redis, eventId, userId, `${userId}-request`);

  test('when Redis comes back older than MySQL (a replica promoted before it got the last writes), then the missing holders and the counter are restored before anything is issued again', async () => {
    const eventId = uniqueEventId('older');
    const persisted = [1, 2, 3, 4, 5].map((n) => coupon(eventId, `u${n}`, n));
    await eventIssuing(eventId, persisted);
    await persister.persist(persisted);
    // The promoted replica had shipped only the first three coupons.
    const keys = eventKeys(eventId);
    await redis.hdel(keys.users, 'u4', 'u5');
    await redis.set(keys.issued, '3');

    const changed = await keeper.restore([eventId]);

    expect(changed).toEqual({ [eventId]: 'merged' });
    expect(await redis.get(keys.issued)).toBe('5');
    expect(await gate(eventId, 'u4')).toEqual({ kind: 'already_applied', sequence: 4 });
    expect(await gate(eventId, 'u5')).toEqual({ kind: 'already_applied', sequence: 5 });
    expect(await gate(eventId, 'newcomer')).toMatchObject({ kind: 'issued', sequence: 6 });
    const [row] = await query<{ epoch: number }>('select epoch from coupon_event where id = ?', [eventId]);
    expect(Number(await redis.hget(keys.meta, 'epoch'))).toBe(Number(row!.epoch));
    expect(Number(row!.epoch)).toBe(1);
  });

  test('when a coupon waits for a retry while its gate state is lost and rebuilt, then it is not written over the coupon the rebuilt gate gave since', async () => {
    const eventId = uniqueEventId('stale');
    const persisted = [1, 2, 3].map((n) => coupon(eventId, `u${n}`, n));
    const waiting = coupon(eventId, 'waiting', 4);
    await eventIssuing(eventId, [...persisted, waiting]);
    await persister.persist(persisted);
    // Redis loses the event (a flush); the rebuild from MySQL knows nothing of `waiting`.
    const keys = eventKeys(eventId);
    await redis.del(keys.meta, keys.issued, keys.users, keys.outbox);
    expect(await keeper.restore([eventId])).toEqual({ [eventId]: 'installed' });
    const since = await gate(eventId, 'since-rebuild');
    expect(since).toMatchObject({ kind: 'issued', sequence: 4 });
    const fencedBefore = (await metrics.fencedCoupons.get()).values[0]?.value ?? 0;

    // The retry of the old coupon arrives now.
    expect(await persister.persist([waiting])).toBe(0);
    expect(await persister.persist([coupon(eventId, 'since-rebuild', 4)])).toBe(1);

    expect((await couponRows(eventId)).map((row) => [row.user_id, row.sequence])).toEqual([['u1', 1], ['u2', 2], ['u3', 3], ['since-rebuild', 4]]);
    expect(((await metrics.fencedCoupons.get()).values[0]?.value ?? 0) - fencedBefore).toBe(1);
  });

  test('when a restore died after raising the epoch in MySQL, then the next batch restores the Redis epoch itself and is written', async () => {
    const eventId = uniqueEventId('behind');
    const issued = [1, 2].map((n) => coupon(eventId, `u${n}`, n));
    await eventIssuing(eventId, issued);
    await query('update coupon_event set epoch = epoch + 1 where id = ?', [eventId]);

    expect(await persister.persist(issued)).toBe(2);

    const [row] = await query<{ epoch: number }>('select epoch from coupon_event where id = ?', [eventId]);
    expect(Number(await redis.hget(eventKeys(eventId).meta, 'epoch'))).toBe(Number(row!.epoch));
    expect((await couponRows(eventId)).map((item) => item.user_id)).toEqual(['u1', 'u2']);
  });
});
