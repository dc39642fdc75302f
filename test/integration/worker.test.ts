import { pino } from 'pino';
import { createOrm, type Orm } from '../../src/db/orm.ts';
import { CouponStore } from '../../src/db/store.ts';
import type { IssuedCoupon } from '../../src/domain/coupon.ts';
import { createRegistry } from '../../src/metrics.ts';
import { createRedis, type CouponRedis } from '../../src/redis/client.ts';
import { installEventState } from '../../src/redis/event-state.ts';
import { PERSIST_GROUP, eventKeys } from '../../src/redis/keys.ts';
import { WorkerMetrics } from '../../worker/metrics.ts';
import { Persister } from '../../worker/persister.ts';
import {
  type ServiceProcess, apply, closePool, couponRows, createEvent, query, request, serverUrls, spawnApi, spawnWorker, uniqueEventId, waitFor,
  waitForPersisted,
} from '../support/harness.ts';

const coupons = (eventId: string, count: number): IssuedCoupon[] =>
  Array.from({ length: count }, (_, i) => ({ eventId, userId: `user-${i + 1}`, sequence: i + 1, issuedAtMs: 1_790_000_000_000 + i }));

/** An event in MySQL whose gate state in Redis issued these coupons, as the gate would have recorded them. */
async function issuedBy(redis: CouponRedis, eventId: string, issued: IssuedCoupon[]): Promise<void> {
  await query('insert into coupon_event (id, name, total_quantity, starts_at) values (?, ?, ?, now(3))', [eventId, eventId, 1_000]);
  await installEventState(redis, eventId, {
    totalQuantity: 1_000, startsAtMs: 0, endsAtMs: null, issued: issued.length,
    users: issued.map((coupon) => [coupon.userId, `${coupon.sequence}:${coupon.issuedAtMs}:r`]),
  });
}

/**
 * INSERT statements sent so far on the ORM's one connection (its pool holds one): what this file's persister
 * sent, never what other test files insert into the same server meanwhile.
 */
async function insertStatements(orm: Orm): Promise<number> {
  const [row] = await orm.em.getConnection().execute<Array<{ Value: string }>>("show session status like 'Com_insert'");
  return Number(row?.Value);
}

describe('persisting coupons', () => {
  let orm: Orm;
  let redis: CouponRedis;
  let persister: Persister;

  beforeAll(async () => {
    orm = await createOrm(serverUrls().MYSQL_URL, { poolMax: 1 });
    redis = createRedis(serverUrls().REDIS_URL);
    persister = new Persister({
      redis, store: new CouponStore(orm), metrics: new WorkerMetrics(createRegistry('worker')), ratePerSec: 1_000_000, batchSize: 100,
    });
  });
  afterAll(async () => {
    await orm.close(true);
    await redis.quit();
    await closePool();
  });

  test('when 250 coupons are persisted with a batch size of 100, then MySQL receives 3 multi-row inserts', async () => {
    const eventId = uniqueEventId('batch');
    await issuedBy(redis, eventId, coupons(eventId, 250));
    const before = await insertStatements(orm);
    expect(await persister.persist(coupons(eventId, 250))).toBe(250);
    expect((await insertStatements(orm)) - before).toBe(3);
    const rows = await couponRows(eventId);
    expect(rows.map((row) => row.sequence)).toEqual(Array.from({ length: 250 }, (_, i) => i + 1));
    expect(rows[0]?.issued_at.getTime()).toBe(1_790_000_000_000);
  });

  test('when the same coupons are persisted again, then nothing is written twice and no new rows are reported', async () => {
    const eventId = uniqueEventId('idem');
    await issuedBy(redis, eventId, coupons(eventId, 130));
    await persister.persist(coupons(eventId, 120));
    expect(await persister.persist([...coupons(eventId, 130)].reverse())).toBe(10);
    expect(await couponRows(eventId)).toHaveLength(130);
  });

  test('when a coupon\'s sequence is already held by another user, then it is reported, not silently skipped as a redelivery', async () => {
    const eventId = uniqueEventId('clash');
    const clash = { eventId, userId: 'newcomer', sequence: 2, issuedAtMs: Date.now() };
    // A gate state that vouches for both holders of sequence 2: only a Redis that lost data can say so.
    await issuedBy(redis, eventId, [...coupons(eventId, 3), clash]);
    await persister.persist(coupons(eventId, 3));
    await expect(persister.persist([clash])).rejects.toThrow(/sequence already taken by another user/);
    expect((await couponRows(eventId)).map((row) => row.user_id)).toEqual(['user-1', 'user-2', 'user-3']);
  });

  test('when a malformed coupon is handed over, then it is refused instead of being truncated into MySQL', async () => {
    const eventId = uniqueEventId('bad');
    await expect(persister.persist([{ eventId, userId: 'u'.repeat(100), sequence: 1, issuedAtMs: Date.now() }])).rejects.toThrow(/malformed/);
    expect(await couponRows(eventId)).toHaveLength(0);
  });
});

describe('the worker process', () => {
  let api: ServiceProcess;
  let worker: ServiceProcess;

  beforeAll(async () => {
    [api, worker] = await Promise.all([spawnApi(), spawnWorker({ PERSIST_RATE_PER_SEC: '100000' })]);
  });
  afterAll(async () => {
    await Promise.all([api?.stop(), worker?.stop()]);
    await closePool();
  });

  test('when users are issued coupons, then the worker persists each once, acks every entry and trims the stream', async () => {
    const eventId = uniqueEventId('drain');
    await createEvent(api.url, { id: eventId, totalQuantity: 300 });
    const answers = await Promise.all(Array.from({ length: 300 }, (_, i) => apply(api.url, eventId, `u${i}`)));
    expect(answers.every((answer) => answer.status === 202)).toBe(true);

    await waitForPersisted(eventId, 300);
    const redis = createRedis(serverUrls().REDIS_URL);
    try {
      const keys = eventKeys(eventId);
      await waitFor(async () => (await redis.xpending(keys.outbox, PERSIST_GROUP))[0] === 0, { what: 'no pending entries' });
      await waitFor(async () => (await redis.xlen(keys.outbox)) <= 1, { what: 'the acked entries to be trimmed', timeoutMs: 15_000 });

      // A redelivered entry (same event and user) is acked without a second row.
      await redis.xadd(keys.outbox, '*', 'eventId', eventId, 'userId', 'u7', 'sequence', '8', 'issuedAt', String(Date.now()));
      await waitFor(async () => {
        const [pending] = (await redis.xpending(keys.outbox, PERSIST_GROUP)) as [number];
        const info = (await redis.xinfo('GROUPS', keys.outbox)) as unknown[][];
        return pending === 0 && info[0]?.[info[0].indexOf('lag') + 1] === 0;
      }, { what: 'the duplicate to be consumed' });
    } finally {
      await redis.quit();
    }
    const rows = await couponRows(eventId);
    expect(rows).toHaveLength(300);
    expect(new Set(rows.map((row) => row.user_id)).size).toBe(300);

    const coupon = await request(`${api.url}/v1/events/${eventId}/coupons/u7`);
    expect(coupon.body).toEqual({ userId: 'u7', sequence: rows.find((row) => row.user_id === 'u7')?.sequence, status: 'persisted' });
    const event = await request(`${api.url}/v1/events/${eventId}`);
    expect(event.body).toMatchObject({ issued: 300, persisted: 300, status: 'sold_out' });
  });

  test('when the worker runs, then /readyz and /metrics report on its own port', async () => {
    const ready = await request(`${worker.url}/readyz`);
    expect(ready).toMatchObject({ status: 200, body: { ready: true, redis: true, mysql: true } });
    const metrics = await fetch(`${worker.url}/metrics`).then((response) => response.text());
    expect(metrics).toMatch(/^coupon_persisted_total\{component="worker"\} \d+/m);
    expect(metrics).toContain('coupon_outbox_lag');
  });
});
