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
import { INSTALL_CHUNK_USERS, installEventState } from '../../src/redis/event-state.ts';
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

  /** Users u1..uN as MySQL would hand them over, pausing after `pauseAfter` of them until `resume` is called. */
  function pausingUsers(eventId: string, count: number, pauseAfter: number) {
    let resume!: () => void;
    let paused!: () => void;
    const resumed = new Promise<void>((resolve) => (resume = resolve));
    const reachedPause = new Promise<void>((resolve) => (paused = resolve));
    async function* users(): AsyncGenerator<[string, string]> {
      for (let n = 1; n <= count; n++) {
        if (n === pauseAfter + 1) {
          paused();
          await resumed;
        }
        const item = coupon(eventId, `u${n}`, n);
        yield [item.userId, `${item.sequence}:${item.issuedAtMs}`];
      }
    }
    return { users: users(), reachedPause, resume };
  }

  const stateOf = (eventId: string, count: number, users: AsyncIterable<[string, string]> | Array<[string, string]>) => ({
    totalQuantity: count + 10, startsAtMs: 0, endsAtMs: null, issued: count, epoch: 1, users,
  });

  test('when a big missing state is installed in chunks, then the gate issues nothing from the part written so far, and a second restorer that begins meanwhile takes over and leaves it whole', async () => {
    const eventId = uniqueEventId('chunked');
    const count = INSTALL_CHUNK_USERS * 3 + 7;
    const first = pausingUsers(eventId, count, INSTALL_CHUNK_USERS * 2);
    const firstInstall = installEventState(redis, eventId, stateOf(eventId, count, first.users));
    await first.reachedPause;

    // Part of the users are in Redis, but without its meta hash the event is missing to the gate: no sequence
    // already held in MySQL can be handed out again, and no holder can apply twice.
    expect(await redis.hlen(eventKeys(eventId).users)).toBeGreaterThan(0);
    expect(await gate(eventId, 'newcomer')).toEqual({ kind: 'state_missing' });
    expect(await gate(eventId, 'u1')).toEqual({ kind: 'state_missing' });

    // Another restorer (say a worker's once-a-minute sweep) installs the same state while the first one waits.
    const all = Array.from({ length: count }, (_, i) => [`u${i + 1}`, `${i + 1}:${1_790_000_000_000 + i + 1}`] as [string, string]);
    expect(await installEventState(redis, eventId, stateOf(eventId, count, all))).toBe('installed');
    first.resume();
    expect(await firstInstall).toBe('superseded');

    const keys = eventKeys(eventId);
    expect(await redis.hlen(keys.users)).toBe(count);
    expect(await redis.hexists(keys.users, ':restoring')).toBe(0);
    expect(await gate(eventId, `u${count}`)).toEqual({ kind: 'already_applied', sequence: count });
    expect(await gate(eventId, 'newcomer')).toMatchObject({ kind: 'issued', sequence: count + 1 });
  });

  test('when MySQL\'s holders are merged in chunks into a state that lost them, then the counter is raised before any other chunk, so the gate never hands out a persisted sequence meanwhile', async () => {
    const eventId = uniqueEventId('merging');
    const count = INSTALL_CHUNK_USERS * 3;
    await installEventState(redis, eventId, { totalQuantity: count + 10, startsAtMs: 0, endsAtMs: null, issued: 0, epoch: 0 });
    const merging = pausingUsers(eventId, count, INSTALL_CHUNK_USERS * 2);
    const merge = installEventState(redis, eventId, stateOf(eventId, count, merging.users));
    await merging.reachedPause;

    expect(await gate(eventId, 'newcomer')).toMatchObject({ kind: 'issued', sequence: count + 1 });
    merging.resume();
    expect(await merge).toBe('merged');

    const keys = eventKeys(eventId);
    expect(await redis.hlen(keys.users)).toBe(count + 1);
    expect(await redis.hget(keys.meta, 'epoch')).toBe('1');
    expect(await gate(eventId, 'u1')).toEqual({ kind: 'already_applied', sequence: 1 });
  });
});
