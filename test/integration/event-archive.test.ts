/**
 * Events have a lifecycle (issue 9, item 4): an ended event whose coupons are all persisted is archived
 * EVENT_RETENTION after its end. Its Redis keys and registry entry go, the worker's metric series for it go, no
 * restore brings it back, and MySQL keeps every coupon. The api, the worker and this test share a Redis and a
 * MySQL database of this file's own, so nothing else the suite runs is archived, counted or flushed here.
 */
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { pino } from 'pino';
import type { LocalServer } from '../../scripts/local-servers/index.ts';
import { migrateUp } from '../../src/db/migrate.ts';
import { createOrm, type Orm } from '../../src/db/orm.ts';
import { CouponStore } from '../../src/db/store.ts';
import { GateStateKeeper } from '../../src/gate-state.ts';
import { createRedis, serverIdentity, type CouponRedis } from '../../src/redis/client.ts';
import { EVENT_REGISTRY_KEY, STATE_SENTINEL_KEY } from '../../src/redis/keys.ts';
import {
  ADMIN_TOKEN, type ServiceProcess, apply, closePool, createEvent, query, request, serverUrls, spawnApi, spawnWorker, startOwnRedis, waitFor,
} from '../support/harness.ts';

const EVENTS = 50;
const COUPONS_PER_EVENT = 3;
/** how long each event of the test is open: long enough to apply to all of them, short enough to wait out */
const WINDOW_MS = 6_000;

/** Resident set of a process, in MB, as the kernel counts it. */
const rssMb = (pid: number): number => Number(/VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]) / 1024;

/** The series on the worker's /metrics that name one of these events. */
async function seriesOf(worker: ServiceProcess, eventIds: readonly string[]): Promise<string[]> {
  const text = await (await fetch(`${worker.url}/metrics`)).text();
  const ids = new Set(eventIds);
  return text.split('\n').filter((line) => {
    const match = /event="([^"]+)"/.exec(line);
    return !line.startsWith('#') && match !== null && ids.has(match[1]!);
  });
}

describe('archiving ended events', () => {
  let redisServer: LocalServer;
  let redis: CouponRedis;
  let orm: Orm;
  let mysqlUrl: string;
  let database: string;
  let api: ServiceProcess;
  let worker: ServiceProcess;
  const figures: Record<string, unknown> = {};

  beforeAll(async () => {
    redisServer = await startOwnRedis('archive');
    database = `coupon_archive_${randomBytes(4).toString('hex')}`;
    await query(`create database ${database}`);
    const url = new URL(serverUrls().MYSQL_URL);
    url.pathname = `/${database}`;
    mysqlUrl = url.toString();
    await migrateUp(mysqlUrl);
    orm = await createOrm(mysqlUrl, { poolMax: 2 });
    redis = createRedis(redisServer.url);
    const own = { REDIS_URL: redisServer.url, MYSQL_URL: mysqlUrl };
    api = await spawnApi(own);
    worker = await spawnWorker({ ...own, EVENT_RETENTION: '1s', PERSIST_RATE_PER_SEC: '5000' });
  }, 120_000);
  afterAll(async () => {
    await Promise.all([api?.stop(), worker?.stop()]);
    await orm?.close(true);
    await redis?.quit();
    await redisServer?.stop();
    if (database) await query(`drop database if exists ${database}`);
    await closePool();
    console.log(`[archive figures] ${JSON.stringify(figures)}`);
  });

  const ownQuery = <T>(sql: string, params: unknown[] = []) => orm.em.getConnection().execute<T[]>(sql, params);

  /** When the events of the last eventsWithCoupons call end. */
  let lastEndsAt = 0;

  /** Creates `EVENTS` events that end WINDOW_MS from now, and gives each COUPONS_PER_EVENT coupons. */
  async function eventsWithCoupons(prefix: string): Promise<string[]> {
    lastEndsAt = Date.now() + WINDOW_MS;
    const endsAt = new Date(lastEndsAt).toISOString();
    const ids = Array.from({ length: EVENTS }, (_, i) => `${prefix}-${randomBytes(3).toString('hex')}-${i}`);
    for (const id of ids) await createEvent(api.url, { id, totalQuantity: 10, endsAt });
    // user-0 sends an Idempotency-Key, as a client that retries would.
    const answers = await Promise.all(ids.flatMap((id) => Array.from({ length: COUPONS_PER_EVENT }, (_, user) => (user === 0
      ? request(`${api.url}/v1/events/${id}/apply`, { body: { userId: 'user-0' }, headers: { 'idempotency-key': `key-${id}` } })
      : apply(api.url, id, `user-${user}`)))));
    expect(answers.map((answer) => answer.status)).toEqual(answers.map(() => 202));
    return ids;
  }

  const archivedCount = async (ids: readonly string[]) => Number((await ownQuery<{ n: number }>(
    `select count(*) as n from coupon_event where archived_at is not null and id in (${ids.map(() => '?').join(', ')})`, [...ids],
  ))[0]?.n);

  const eventKeysLeft = async (ids: readonly string[]) => {
    const keys = await redis.keys('coupon:{*');
    // Only the tombstone stays: it tells the public reads to answer from MySQL.
    return keys.filter((key) => ids.some((id) => key.startsWith(`coupon:{${id}}:`)) && !key.endsWith(':archived'));
  };

  test('when 50 ended events have all their coupons persisted, then each is archived: keys, registry entry and series gone, rows kept', async () => {
    const rssStart = rssMb(worker.child.pid!);
    const ids = await eventsWithCoupons('ended');
    expect(await redis.scard(EVENT_REGISTRY_KEY)).toBe(EVENTS);
    // The worker reports each event while it drains it (the series archiving must remove).
    const seen = await waitFor(async () => ((await seriesOf(worker, ids)).length > 0 ? (await seriesOf(worker, ids)).length : undefined),
      { what: 'series of the new events on /metrics', timeoutMs: 20_000 });

    await waitFor(async () => (await archivedCount(ids)) === EVENTS, { what: `all ${EVENTS} events archived`, timeoutMs: 90_000, intervalMs: 500 });
    // Retention 1 s, the archive task every second: within a few seconds of the end (polled every 0.5 s here).
    figures.allArchivedSecondsAfterEnd = Math.round((Date.now() - lastEndsAt) / 100) / 10;

    expect(await eventKeysLeft(ids)).toEqual([]);
    expect(await redis.scard(EVENT_REGISTRY_KEY)).toBe(0);
    await waitFor(async () => (await seriesOf(worker, ids)).length === 0, { what: 'series of archived events gone', timeoutMs: 10_000 });
    const rows = await ownQuery<{ event_id: string; n: number; max_sequence: number }>(
      'select event_id, count(*) as n, max(sequence) as max_sequence from coupon group by event_id',
    );
    expect(rows.filter((row) => ids.includes(row.event_id)).map((row) => [Number(row.n), Number(row.max_sequence)]))
      .toEqual(ids.map(() => [COUPONS_PER_EVENT, COUPONS_PER_EVENT]));
    const store = new CouponStore(orm);
    expect(await store.archivedAt(ids[0]!)).toBeInstanceOf(Date);
    // Reads of an archived event are still answered, from MySQL.
    expect((await request(`${api.url}/v1/events/${ids[0]}`)).body).toMatchObject({ issued: COUPONS_PER_EVENT, persisted: COUPONS_PER_EVENT, status: 'closed' });
    expect((await request(`${api.url}/v1/events/${ids[1]}/coupons/user-0`)).body).toMatchObject({ userId: 'user-0', status: 'persisted' });
    expect((await request(`${api.url}/v1/events/${ids[1]}/coupons/nobody`)).status).toBe(404);
    // It exists and has ended: an apply is refused as such, and a change is refused with why.
    expect(await apply(api.url, ids[2]!, 'after-archive')).toMatchObject({ status: 409, body: { error: 'event_not_open', message: 'the event has ended' } });
    // Its holders still hear their coupons, from MySQL: the first 202 again for the key it was issued to, 409 with
    // the sequence otherwise (before: 409 event_not_open, as to a stranger).
    const [held0, held1] = await Promise.all(['user-0', 'user-1'].map(async (userId) =>
      Number((await ownQuery<{ sequence: number }>('select sequence from coupon where event_id = ? and user_id = ?', [ids[2], userId]))[0]?.sequence)));
    expect(await request(`${api.url}/v1/events/${ids[2]}/apply`, { body: { userId: 'user-0' }, headers: { 'idempotency-key': `key-${ids[2]}` } }))
      .toMatchObject({ status: 202, body: { status: 'issued', sequence: held0 } });
    expect(await apply(api.url, ids[2]!, 'user-1')).toMatchObject({ status: 409, body: { error: 'already_applied', message: `user user-1 already holds coupon ${held1}` } });
    expect(await apply(api.url, ids[2]!, 'user-0')).toMatchObject({ status: 409, body: { error: 'already_applied', message: `user user-0 already holds coupon ${held0}` } });
    const change = await request(`${api.url}/v1/events/${ids[2]}`, { method: 'PATCH', body: { totalQuantity: 20 }, token: ADMIN_TOKEN });
    expect(change).toMatchObject({ status: 409, body: { error: 'event_not_open', message: expect.stringMatching(/archived/) } });
    expect((await store.listLiveEvents()).filter((event) => ids.includes(event.id))).toEqual([]);
    Object.assign(figures, { events: EVENTS, seriesBeforeArchive: seen, rssStartMb: Math.round(rssStart) });
  }, 180_000);

  test('when Redis is flushed or its marker removed, then the state check restores no archived event', async () => {
    const ids = (await ownQuery<{ id: string }>('select id from coupon_event where archived_at is not null')).map((row) => row.id);
    expect(ids.length).toBeGreaterThanOrEqual(EVENTS);
    for (const lose of [() => redis.del(STATE_SENTINEL_KEY), () => redis.flushall()]) {
      await lose();
      const identity = await serverIdentity(redis);
      await waitFor(async () => (await redis.get(STATE_SENTINEL_KEY)) === identity, { what: 'the worker to check Redis again', timeoutMs: 30_000 });
      expect(await eventKeysLeft(ids)).toEqual([]);
      expect(await redis.scard(EVENT_REGISTRY_KEY)).toBe(0);
    }
    // And the once-a-minute sweep for single missing states, run here at once.
    const keeper = new GateStateKeeper(redis, new CouponStore(orm), pino({ level: 'silent' }));
    expect(await keeper.restoreMissing()).toEqual({});
    expect(await keeper.restore(ids.slice(0, 5))).toEqual({});
    expect(await eventKeysLeft(ids)).toEqual([]);
  }, 90_000);

  test('when event after event is created, drained and archived, then the worker keeps no trace of them (soak: RSS reported)', async () => {
    const samples = [rssMb(worker.child.pid!)];
    const rounds = 3;
    for (let round = 0; round < rounds; round += 1) {
      const ids = await eventsWithCoupons(`soak${round}`);
      await waitFor(async () => (await archivedCount(ids)) === EVENTS, { what: `round ${round} archived`, timeoutMs: 90_000, intervalMs: 500 });
      await waitFor(async () => (await seriesOf(worker, ids)).length === 0, { what: `round ${round} series gone`, timeoutMs: 10_000 });
      expect(await eventKeysLeft(ids)).toEqual([]);
      samples.push(rssMb(worker.child.pid!));
    }
    expect(await redis.scard(EVENT_REGISTRY_KEY)).toBe(0);
    Object.assign(figures, { soakRounds: rounds, soakEventsPerRound: EVENTS, workerRssMb: samples.map((mb) => Math.round(mb * 10) / 10) });
  }, 400_000);
});
