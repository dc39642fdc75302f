/**
 * Issue 8, item 1: ids are exact byte strings. `alice`, `Alice` and `ALICE` are three users; MySQL's default
 * (case-insensitive) collation made them one, so two of three coupons were refused by the unique key and a coupon
 * read returned another user's row.
 */
import { randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mysql from 'mysql2/promise';
import type { PgBoss } from 'pg-boss';
import { type LocalServer, startMariadb } from '../../scripts/local-servers/index.ts';
import { migrateUp } from '../../src/db/migrate.ts';
import { createOrm } from '../../src/db/orm.ts';
import { CouponStore } from '../../src/db/store.ts';
import { PERSIST_DEAD_QUEUE, PERSIST_RETRY_QUEUE, type PersistRetryJob } from '../../src/jobs/queues.ts';
import { checkPersisted, scrapeMetric } from '../support/observe.ts';
import {
  type ServiceProcess, apply, closePool, createEvent, query, request, spawnApi, spawnWorker, jobsUrlFor, startBoss, startOwnRedis, uniqueEventId, waitFor,
} from '../support/harness.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const INITIAL_MIGRATION = 'Migration20261125000000_initial';

/** Ids that differ in letter case only, plus ordinary ones: every one is a distinct user. */
const MIXED_CASE_USERS = ['alice', 'Alice', 'ALICE', 'aLiCe', 'bob', 'Bob', 'BOB', 'carol_x-1', 'CAROL_X-1'];

describe('ids are exact: a database created by the old migration', () => {
  let dir: string;
  let mariadb: LocalServer | undefined;
  let connection: mysql.Connection | undefined;

  beforeAll(async () => {
    dir = join(ROOT, '.stack', `exact-ids-${process.pid}-${randomBytes(3).toString('hex')}`);
    mariadb = await startMariadb({ dir: join(dir, 'mariadb') });
  }, 120_000);
  afterAll(async () => {
    await connection?.end();
    await mariadb?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('when the exact-ids migration runs on it, then the id columns compare as bytes, old rows are kept, and Alice and ALICE get rows of their own that are read back exactly', async () => {
    const url = mariadb!.url;
    // The database as it was before the fix: only the initial migration.
    const oldOrm = await createOrm(url, { poolMax: 1 });
    try {
      const applied = await oldOrm.migrator.up({ to: INITIAL_MIGRATION });
      expect(applied.map((migration) => migration.name)).toEqual([INITIAL_MIGRATION]);
    } finally {
      await oldOrm.close(true);
    }

    connection = await mysql.createConnection({ uri: url, timezone: 'Z' });
    const sql = async <T>(text: string, params: unknown[] = []): Promise<T[]> => (await connection!.query(text, params))[0] as T[];
    const insertCoupon = (userId: string, sequence: number) =>
      sql('insert into coupon (event_id, user_id, sequence, issued_at) values (?, ?, ?, ?)',
        ['spring-sale', userId, sequence, new Date(Date.UTC(2026, 10, 30, 9, 0, 0, sequence))]);
    const rowsOf = (userId: string) =>
      sql<{ user_id: string; sequence: number }>('select user_id, sequence from coupon where event_id = ? and user_id = ? order by sequence',
        ['spring-sale', userId]);
    const allRows = () =>
      sql<Record<string, unknown>>('select id, event_id, user_id, sequence, issued_at, created_at from coupon order by id');

    await sql("insert into coupon_event (id, name, total_quantity, starts_at) values ('spring-sale', 'Spring sale', 10, '2026-11-30 09:00:00.000')");
    await insertCoupon('alice', 1);
    await insertCoupon('bob', 2);

    // The bug, on the old schema: Alice is refused as if she were alice, and a read for Alice finds alice's row.
    await expect(insertCoupon('Alice', 3)).rejects.toMatchObject({ code: 'ER_DUP_ENTRY' });
    expect(await rowsOf('Alice')).toEqual([{ user_id: 'alice', sequence: 1 }]);
    const before = await allRows();
    expect(before).toHaveLength(2);

    const migrated = await migrateUp(url);
    expect(migrated).toContain('Migration20261201000000_exact_ids');
    expect(migrated).not.toContain(INITIAL_MIGRATION);

    const collations = await sql<{ TABLE_NAME: string; COLUMN_NAME: string; COLLATION_NAME: string }>(
      `select TABLE_NAME, COLUMN_NAME, COLLATION_NAME from information_schema.COLUMNS
       where TABLE_SCHEMA = database() and ((TABLE_NAME = 'coupon' and COLUMN_NAME in ('event_id', 'user_id'))
         or (TABLE_NAME = 'coupon_event' and COLUMN_NAME = 'id'))
       order by TABLE_NAME, COLUMN_NAME`);
    expect(collations).toEqual([
      { TABLE_NAME: 'coupon', COLUMN_NAME: 'event_id', COLLATION_NAME: 'utf8mb4_bin' },
      { TABLE_NAME: 'coupon', COLUMN_NAME: 'user_id', COLLATION_NAME: 'utf8mb4_bin' },
      { TABLE_NAME: 'coupon_event', COLUMN_NAME: 'id', COLLATION_NAME: 'utf8mb4_bin' },
    ]);

    // The rows written before the migration are unchanged, byte for byte.
    expect(await allRows()).toEqual(before);
    // A read for Alice no longer finds alice.
    expect(await rowsOf('Alice')).toEqual([]);

    await insertCoupon('Alice', 3);
    await insertCoupon('ALICE', 4);
    expect(await rowsOf('alice')).toEqual([{ user_id: 'alice', sequence: 1 }]);
    expect(await rowsOf('Alice')).toEqual([{ user_id: 'Alice', sequence: 3 }]);
    expect(await rowsOf('ALICE')).toEqual([{ user_id: 'ALICE', sequence: 4 }]);
    expect(await rowsOf('aLiCe')).toEqual([]);
    // Still one coupon per (exact) user and one user per sequence: the unique keys survived the change.
    await expect(insertCoupon('Alice', 5)).rejects.toMatchObject({ code: 'ER_DUP_ENTRY' });
    await expect(insertCoupon('aLiCe', 3)).rejects.toMatchObject({ code: 'ER_DUP_ENTRY' });
    // The event id is exact too: a differently cased id is another (unknown) event.
    expect(await sql('select id from coupon_event where id = ?', ['SPRING-SALE'])).toEqual([]);

    // What the api reads for GET /v1/events/:id/coupons/:userId (the MySQL half of it).
    const orm = await createOrm(url, { poolMax: 1 });
    try {
      const store = new CouponStore(orm);
      expect(await store.findCoupon('spring-sale', 'alice')).toEqual({ sequence: 1, requestId: null });
      expect(await store.findCoupon('spring-sale', 'Alice')).toEqual({ sequence: 3, requestId: null });
      expect(await store.findCoupon('spring-sale', 'ALICE')).toEqual({ sequence: 4, requestId: null });
      expect(await store.findCoupon('spring-sale', 'BOB')).toBeNull();
      expect(await store.countPersisted('spring-sale')).toBe(4);
    } finally {
      await orm.close(true);
    }
  }, 120_000);
});

describe('ids are exact: api and worker end to end', () => {
  const processes: ServiceProcess[] = [];
  let boss: PgBoss;
  // A Redis of its own: its worker then persists (and counts sequence conflicts of) this test's coupons only.
  let redis: LocalServer;

  beforeAll(async () => {
    redis = await startOwnRedis('exact-ids');
    // Its worker's queues are in a jobs database of its own (see jobsUrlFor): read them there.
    boss = await startBoss(await jobsUrlFor(redis.url));
  });
  afterAll(async () => {
    await Promise.all(processes.map((service) => service.stop()));
    await boss.stop({ graceful: false, close: true });
    await redis?.stop();
    await closePool();
  });

  test('when alice, Alice, ALICE and other ids differing only in case apply, then each gets its own coupon: a distinct sequence, its own MySQL row, its own coupon read, nothing dead-lettered', async () => {
    const api = await spawnApi({ REDIS_URL: redis.url });
    processes.push(api);
    // A short failure path, so that a row MySQL refused would reach the dead-letter queue within this test.
    const worker = await spawnWorker({
      REDIS_URL: redis.url, PERSIST_RATE_PER_SEC: '100000', CLAIM_IDLE_MS: '500', MAX_DELIVERIES: '2', RETRY_LIMIT: '1', RETRY_DELAY_SEC: '1',
    });
    processes.push(worker);
    const eventId = uniqueEventId('exact');
    const total = 12;
    await createEvent(api.url, { id: eventId, totalQuantity: total });

    // All at once, as a burst would send them.
    const answers = await Promise.all(MIXED_CASE_USERS.map(async (userId) => ({ userId, ...(await apply(api.url, eventId, userId)) })));
    const issued = answers.filter((answer) => answer.status === 202).map((answer) => ({ userId: answer.userId, sequence: answer.body.sequence! }));
    const repeat = await apply(api.url, eventId, 'Alice');

    // Wait for MySQL to hold every issued coupon; if it never does, the assertions below say what is missing.
    const rowCount = async () => Number((await query<{ n: number }>('select count(*) as n from coupon where event_id = ?', [eventId]))[0]?.n);
    await waitFor(async () => (await rowCount()) >= issued.length, { timeoutMs: 20_000, what: 'every issued coupon in MySQL' })
      .catch(() => undefined);
    const persistedNow = await rowCount();
    if (persistedNow < issued.length) {
      // Give a refused row the time to go through retry to the dead-letter queue, so the figures below show it.
      await waitFor(async () => (await boss.findJobs(PERSIST_DEAD_QUEUE, { data: { coupons: [{ eventId }] } })).length > 0,
        { timeoutMs: 20_000 }).catch(() => undefined);
    }

    const check = await checkPersisted(query, eventId, issued);
    const rows = await query<{ user_id: string; sequence: number }>('select user_id, sequence from coupon where event_id = ? order by sequence', [eventId]);
    const reads = await Promise.all(MIXED_CASE_USERS.map(async (userId) =>
      ({ userId, ...(await request<{ userId?: string; sequence?: number; status?: string }>(`${api.url}/v1/events/${eventId}/coupons/${userId}`)) })));
    const event = await request(`${api.url}/v1/events/${eventId}`);
    const sequenceConflicts = await scrapeMetric(worker.url, 'coupon_sequence_conflicts_total');
    const jobsOfEvent = async (queue: string) => (await boss.findJobs<PersistRetryJob>(queue, { data: { coupons: [{ eventId }] } }))
      .flatMap((job) => job.data.coupons.filter((coupon) => coupon.eventId === eventId).map((coupon) => coupon.userId));
    const [retried, deadLettered] = await Promise.all([jobsOfEvent(PERSIST_RETRY_QUEUE), jobsOfEvent(PERSIST_DEAD_QUEUE)]);
    console.log(`[exact-ids figures] ${JSON.stringify({
      answers: answers.map((answer) => [answer.userId, answer.status, answer.body.sequence ?? answer.body.error]),
      repeatAlice: [repeat.status, repeat.body.error],
      rows: rows.map((row) => [row.user_id, Number(row.sequence)]),
      check,
      reads: reads.map((read) => [read.userId, read.status, read.body.userId, read.body.sequence, read.body.status]),
      event: event.body,
      sequenceConflicts, retried, deadLettered,
    })}`);
    if (persistedNow < issued.length) console.log(`[exact-ids] worker output (tail):\n${worker.output().slice(-3_000)}`);

    // The gate: nine users, nine 202s, nine different sequences within 1..N; a second Alice is already served.
    expect(answers.map((answer) => answer.status)).toEqual(MIXED_CASE_USERS.map(() => 202));
    expect(new Set(issued.map((coupon) => coupon.sequence)).size).toBe(MIXED_CASE_USERS.length);
    expect(issued.every((coupon) => coupon.sequence >= 1 && coupon.sequence <= total)).toBe(true);
    expect(repeat).toMatchObject({ status: 409, body: { error: 'already_applied' } });

    // History check, every 202 against MySQL: none lost, none doubled, none with another sequence, not over N.
    expect(check).toEqual({
      rows: MIXED_CASE_USERS.length,
      distinctUsers: MIXED_CASE_USERS.length,
      distinctSequences: MIXED_CASE_USERS.length,
      minSequence: 1,
      maxSequence: MIXED_CASE_USERS.length,
      issuedButMissing: [],
    });
    expect(check.rows).toBeLessThanOrEqual(total);
    expect(rows.map((row) => [row.user_id, Number(row.sequence)]).sort())
      .toEqual(issued.map((coupon) => [coupon.userId, coupon.sequence]).sort());

    // Each user reads back their own coupon, not the one of a user whose id differs in case.
    for (const read of reads) {
      const told = issued.find((coupon) => coupon.userId === read.userId)!;
      expect({ userId: read.userId, status: read.status, body: read.body })
        .toEqual({ userId: read.userId, status: 200, body: { userId: read.userId, sequence: told.sequence, status: 'persisted' } });
    }
    expect(event.body).toMatchObject({ issued: MIXED_CASE_USERS.length, persisted: MIXED_CASE_USERS.length, status: 'open' });

    // Nothing went down the failure path: no sequence conflict reported, no coupon of this event retried or dead-lettered.
    expect(sequenceConflicts).toBe(0);
    expect(retried).toEqual([]);
    expect(deadLettered).toEqual([]);
  }, 120_000);
});
