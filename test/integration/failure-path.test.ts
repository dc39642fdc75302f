import type { PgBoss } from 'pg-boss';
import { PERSIST_DEAD_QUEUE, PERSIST_RETRY_QUEUE, type PersistRetryJob, RECONCILE_QUEUE } from '../../src/jobs/queues.ts';
import {
  type ServiceProcess, apply, closePool, couponRows, createEvent, query, spawnApi, jobsUrlFor, spawnWorker, startBoss, startOwnRedis, uniqueEventId, waitFor,
  waitForPersisted,
} from '../support/harness.ts';
import { scrapeMetric } from '../support/observe.ts';

/** MySQL refusing one event's rows, as a broken constraint or a full disk would: a real trigger, not a mock. */
async function refuseInserts(eventId: string): Promise<string> {
  const trigger = `refuse_${eventId.replaceAll('-', '_')}`;
  await query(`create trigger ${trigger} before insert on coupon for each row
    begin if new.event_id = '${eventId}' then signal sqlstate '45000' set message_text = 'refused by test trigger'; end if; end`);
  return trigger;
}

/** MySQL refusing the row of one user of one event only: the rest of the event's coupons are written. */
async function refuseUser(eventId: string, userId: string): Promise<string> {
  const trigger = `refuse_${eventId.replaceAll('-', '_')}_user`;
  await query(`create trigger ${trigger} before insert on coupon for each row
    begin if new.event_id = '${eventId}' and new.user_id = '${userId}' then signal sqlstate '45000' set message_text = 'refused by test trigger'; end if; end`);
  return trigger;
}

describe('the pg-boss failure path', () => {
  const processes: ServiceProcess[] = [];
  let boss: PgBoss;

  beforeAll(async () => {
    boss = await startBoss();
  });
  /** what tests that run on servers of their own leave to stop */
  const ownServers: Array<() => Promise<void>> = [];
  afterAll(async () => {
    await Promise.all(processes.map((process) => process.stop()));
    // Newest first (a pg-boss before the Redis it was started for); one that fails does not keep the others running.
    const errors: unknown[] = [];
    for (const stop of ownServers.reverse()) await stop().catch((error: unknown) => errors.push(error));
    await boss.stop({ graceful: false, close: true });
    await closePool();
    if (errors.length > 0) throw errors[0];
  });

  test('when MySQL keeps refusing a coupon, then it moves to the retry queue after MAX_DELIVERIES, then to the dead-letter queue, and a redrive persists it once MySQL accepts it', async () => {
    const api = await spawnApi();
    const worker = await spawnWorker({ CLAIM_IDLE_MS: '200', MAX_DELIVERIES: '2', RETRY_LIMIT: '1', RETRY_DELAY_SEC: '1' });
    processes.push(api, worker);
    const eventId = uniqueEventId('dlq');
    await createEvent(api.url, { id: eventId, totalQuantity: 10 });
    const trigger = await refuseInserts(eventId);
    try {
      expect((await apply(api.url, eventId, 'unlucky')).status).toBe(202);

      const dead = await waitFor(async () => {
        const jobs = await boss.findJobs<PersistRetryJob>(PERSIST_DEAD_QUEUE, { data: { coupons: [{ eventId }] } });
        return jobs.length > 0 ? jobs : undefined;
      }, { timeoutMs: 60_000, what: 'the coupon to reach the dead-letter queue' });
      expect(dead).toHaveLength(1);
      expect(dead[0]?.data.coupons).toEqual([{ eventId, userId: 'unlucky', sequence: 1, issuedAtMs: expect.any(Number) }]);
      const retried = await boss.findJobs<PersistRetryJob>(PERSIST_RETRY_QUEUE, { data: { coupons: [{ eventId }] } });
      expect(retried.map((job) => job.state)).toEqual(['failed']);
      expect(retried[0]?.retryCount).toBe(1);
      expect(await couponRows(eventId)).toHaveLength(0);
    } finally {
      await query(`drop trigger if exists ${trigger}`);
    }

    // The operator fixed MySQL: a redrive sends the dead letter back through the retry queue, and it lands.
    expect(await boss.redrive(PERSIST_DEAD_QUEUE, { data: { coupons: [{ eventId }] } })).toBe(1);
    await waitForPersisted(eventId, 1, 30_000);
    expect((await couponRows(eventId)).map((row) => [row.user_id, row.sequence])).toEqual([['unlucky', 1]]);
  }, 120_000);

  test('when a coupon is dead-lettered and later redriven, then the worker\'s dead-letter gauge shows it within seconds (pg-boss counts every 10 s, the worker reads every 5 s), and 0 after', async () => {
    // The alert CouponDeadLetterNotEmpty reads this gauge. It was pg-boss's cached queue count, refreshed by its
    // monitoring pass every 60 s: in the cluster check the alert fired 67 s after the coupon was refused.
    const { api, worker, boss } = await onOwnRedis('dlq-gauge', { MAX_DELIVERIES: '1', RETRY_LIMIT: '0', RETRY_DELAY_SEC: '1' });
    const eventId = uniqueEventId('gauge');
    await createEvent(api.url, { id: eventId, totalQuantity: 3 });
    const trigger = await refuseInserts(eventId);
    try {
      expect((await apply(api.url, eventId, 'refused')).status).toBe(202);
      await waitFor(async () => (await boss.findJobs(PERSIST_DEAD_QUEUE, { queued: true })).length === 1,
        { timeoutMs: 60_000, what: 'the coupon in the dead-letter queue' });
      const dead = Date.now();
      await waitFor(async () => (await scrapeMetric(worker.url, 'coupon_dead_letter_jobs')) === 1, { timeoutMs: 25_000, what: 'the gauge at 1' });
      console.log(`dead-letter gauge: 1 after ${Date.now() - dead} ms`);
    } finally {
      await query(`drop trigger if exists ${trigger}`);
    }
    expect(await boss.redrive(PERSIST_DEAD_QUEUE)).toBe(1);
    const redriven = Date.now();
    await waitForPersisted(eventId, 1, 30_000);
    await waitFor(async () => (await scrapeMetric(worker.url, 'coupon_dead_letter_jobs')) === 0, { timeoutMs: 25_000, what: 'the gauge back at 0' });
    console.log(`dead-letter gauge: 0 after ${Date.now() - redriven} ms`);
  }, 150_000);

  test('when a persisted coupon goes missing from MySQL, then the reconcile job re-enqueues it and it is written again', async () => {
    const { api, boss } = await onOwnRedis('reconcile', { RECONCILE_CRON: '*/5 * * * *' });
    const eventId = uniqueEventId('reconcile');
    await createEvent(api.url, { id: eventId, totalQuantity: 5 });
    for (const user of ['a', 'b', 'c']) expect((await apply(api.url, eventId, user)).status).toBe(202);
    await waitForPersisted(eventId, 3);

    // The schedule is registered by the worker; the test runs the same job the cron would, without waiting minutes.
    const schedules = await waitFor(async () => {
      const found = await boss.getSchedules(RECONCILE_QUEUE);
      return found.length > 0 ? found : undefined;
    }, { what: 'the reconcile schedule' });
    expect(schedules[0]).toMatchObject({ name: RECONCILE_QUEUE, cron: '*/5 * * * *' });

    await query('delete from coupon where event_id = ? and user_id = ?', [eventId, 'b']);
    expect(await couponRows(eventId)).toHaveLength(2);
    await boss.send(RECONCILE_QUEUE, {});
    await waitForPersisted(eventId, 3, 30_000);
    expect((await couponRows(eventId)).map((row) => [row.user_id, row.sequence])).toEqual([['a', 1], ['b', 2], ['c', 3]]);
  }, 60_000);

  /**
   * An api and a worker on a Redis and jobs database of their own: a reconcile run then compares only this test's
   * event (not the gaps other tests left in the shared Redis), and no other worker takes its jobs.
   */
  async function onOwnRedis(name: string, workerEnv: Record<string, string>): Promise<{ api: ServiceProcess; worker: ServiceProcess; boss: PgBoss }> {
    // Each part is left to stop as soon as it runs, so that a start that fails after the Redis leaves no server behind.
    const redis = await startOwnRedis(name);
    ownServers.push(() => redis.stop());
    const boss = await startBoss(await jobsUrlFor(redis.url));
    ownServers.push(() => boss.stop({ graceful: false, close: true }));
    const api = await spawnApi({ REDIS_URL: redis.url });
    processes.push(api);
    const worker = await spawnWorker({ REDIS_URL: redis.url, ...workerEnv });
    processes.push(worker);
    return { api, worker, boss };
  }

  /** Runs the reconcile job now, as the cron would, and waits until it and every retry of the event have settled. */
  async function reconcileAndSettle(boss: PgBoss, eventId: string): Promise<void> {
    const id = await waitFor(() => boss.send(RECONCILE_QUEUE, {}).then((sent) => sent ?? undefined), { what: 'a reconcile job to be queued' });
    await waitFor(async () => (await boss.getJobById(RECONCILE_QUEUE, id))?.state === 'completed', { timeoutMs: 30_000, what: 'the reconcile job to complete' });
    await waitFor(async () => {
      const jobs = await boss.findJobs<PersistRetryJob>(PERSIST_RETRY_QUEUE, { data: { coupons: [{ eventId }] } });
      return jobs.every((job) => job.state === 'completed' || job.state === 'failed');
    }, { timeoutMs: 60_000, what: `the retry jobs of ${eventId} to settle` });
  }

  test('when MySQL refuses one coupon of a reconciled batch, then the others are persisted, the refused one is dead-lettered once, and later reconcile runs do not send it again', async () => {
    const { api, boss } = await onOwnRedis('refused', { MAX_DELIVERIES: '2', RETRY_LIMIT: '1', RETRY_DELAY_SEC: '1', RECONCILE_CRON: '0 0 1 1 *' });
    const eventId = uniqueEventId('refused');
    await createEvent(api.url, { id: eventId, totalQuantity: 10 });
    for (const user of ['a', 'b', 'c', 'd', 'e']) expect((await apply(api.url, eventId, user)).status).toBe(202);
    await waitForPersisted(eventId, 5);
    // MySQL loses four rows (a restore from an older backup, say) and from now on refuses c's: reconcile sends the
    // four in one retry job.
    await query('delete from coupon where event_id = ? and user_id in (?)', [eventId, ['b', 'c', 'd', 'e']]);
    const trigger = await refuseUser(eventId, 'c');
    try {
      await reconcileAndSettle(boss, eventId);
      const deadAfterFirst = await boss.findJobs<PersistRetryJob>(PERSIST_DEAD_QUEUE, { data: { coupons: [{ eventId }] } });
      const retryJobsAfterFirst = (await boss.findJobs<PersistRetryJob>(PERSIST_RETRY_QUEUE, { data: { coupons: [{ eventId }] } })).length;
      // The alert's story: the next scheduled runs find the same gap.
      for (let run = 0; run < 3; run++) await reconcileAndSettle(boss, eventId);

      const dead = await boss.findJobs<PersistRetryJob>(PERSIST_DEAD_QUEUE, { data: { coupons: [{ eventId }] } });
      expect(dead.map((job) => job.data.coupons.map((coupon) => coupon.userId))).toEqual([['c']]);
      expect(dead.map((job) => job.id)).toEqual(deadAfterFirst.map((job) => job.id));
      expect(dead[0]?.data.coupons).toEqual([{ eventId, userId: 'c', sequence: 3, issuedAtMs: expect.any(Number) }]);
      expect((await boss.findJobs<PersistRetryJob>(PERSIST_RETRY_QUEUE, { data: { coupons: [{ eventId }] } })).length).toBe(retryJobsAfterFirst);
      expect((await couponRows(eventId)).map((row) => [row.user_id, row.sequence])).toEqual([['a', 1], ['b', 2], ['d', 4], ['e', 5]]);
    } finally {
      await query(`drop trigger if exists ${trigger}`);
    }

    // Once MySQL accepts it, a redrive lands it, and the event is whole.
    expect(await boss.redrive(PERSIST_DEAD_QUEUE, { data: { coupons: [{ eventId }] } })).toBe(1);
    await waitForPersisted(eventId, 5, 30_000);
  }, 180_000);
});
