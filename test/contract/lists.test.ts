/**
 * The lists of issue 11.5 against real api and worker processes: the admin's event list (status filter, cursor
 * pagination) and a user's coupons across events (pending and persisted, and who may read them with JWT).
 */
import { SignJWT } from 'jose';
import type { LocalServer } from '../../scripts/local-servers/index.ts';
import {
  ADMIN_TOKEN, closePool, spawnApi, spawnWorker, startOwnRedis, uniqueEventId, waitFor, waitForPersisted, type ServiceProcess,
} from '../support/harness.ts';
import { call } from '../support/openapi.ts';

const SECRET = 'lists-test-jwt-secret-0123456789abcdef';
let api: ServiceProcess;
let jwtApi: ServiceProcess;
let worker: ServiceProcess;

beforeAll(async () => {
  [api, jwtApi, worker] = await Promise.all([spawnApi(), spawnApi({ AUTH_JWT_SECRET: SECRET }), spawnWorker()]);
}, 60_000);

afterAll(async () => {
  await Promise.all([api, jwtApi, worker].filter(Boolean).map((service) => service.stop()));
  await closePool();
});

type EventPage = { events: Array<{ id: string; status: string }>; nextCursor: string | null };
/** null: without a token */
const list = (query: string, token: string | null = ADMIN_TOKEN) =>
  call<EventPage>(`${api.url}/v1/events${query}`, { ...(token !== null && { token }) });

async function newEvent(prefix: string, extra: Record<string, unknown> = {}, url = api.url): Promise<string> {
  const id = uniqueEventId(prefix);
  const created = await call(`${url}/v1/events`, { body: { id, name: `list ${id}`, totalQuantity: 5, ...extra }, token: ADMIN_TOKEN });
  expect(created.status).toBe(201);
  return id;
}

/** Every event of a listing, page by page, and how many pages it took. */
async function listAll(query: string, limit: number): Promise<{ ids: string[]; statuses: Map<string, string>; pages: number }> {
  const ids: string[] = [];
  const statuses = new Map<string, string>();
  let cursor: string | null = null;
  let pages = 0;
  do {
    const page = await list(`?limit=${limit}${query}${cursor ? `&cursor=${cursor}` : ''}`);
    expect(page.status).toBe(200);
    expect(page.body.events.length).toBeLessThanOrEqual(limit);
    for (const event of page.body.events) {
      ids.push(event.id);
      statuses.set(event.id, event.status);
    }
    cursor = page.body.nextCursor;
    pages += 1;
  } while (cursor !== null && pages < 10_000);
  return { ids, statuses, pages };
}

const token = (sub: string) => new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(sub).setIssuedAt().setExpirationTime('5m')
  .sign(new TextEncoder().encode(SECRET));

describe('GET /v1/events', () => {
  test('when an admin pages through the events, then each event appears once, in id order, and the last page has no cursor', async () => {
    const prefix = uniqueEventId('lp');
    const ours = [await newEvent(prefix), await newEvent(prefix), await newEvent(prefix)].sort();
    const { ids, pages } = await listAll('', 2);
    expect(ids.filter((id) => id.startsWith(`${prefix}-`))).toEqual(ours);
    expect(new Set(ids).size).toBe(ids.length);
    expect([...ids].sort()).toEqual(ids);
    expect(pages).toBeGreaterThanOrEqual(2);
  });

  test('when an admin filters by status, then only events of that status are listed', async () => {
    const prefix = uniqueEventId('ls');
    const open = await newEvent(prefix);
    const paused = await newEvent(prefix);
    const scheduled = await newEvent(prefix, { startsAt: new Date(Date.now() + 3_600_000).toISOString() });
    expect((await call(`${api.url}/v1/events/${paused}`, { method: 'PATCH', body: { paused: true }, token: ADMIN_TOKEN })).status).toBe(200);

    const pausedList = await listAll('&status=paused', 50);
    expect(pausedList.ids).toContain(paused);
    expect(pausedList.ids).not.toContain(open);
    expect([...pausedList.statuses.values()].every((status) => status === 'paused')).toBe(true);
    const scheduledList = await listAll('&status=scheduled', 50);
    expect(scheduledList.ids).toContain(scheduled);
    expect(scheduledList.ids).not.toContain(paused);
  });

  test('when the query is wrong or the admin token is missing, then it answers 400 or 401', async () => {
    for (const query of ['?status=dormant', '?limit=0', '?limit=101', '?limit=x', '?cursor=!!', '?cursor=QUJD', '?other=1']) {
      const response = await list(query);
      expect(response.status).toBe(400);
    }
    expect((await list('', null)).status).toBe(401);
    expect((await list('', 'not-the-token')).status).toBe(401);
  });
});

describe('GET /v1/users/:userId/coupons', () => {
  // The test that waits for rows runs on a Redis of its own (and its own worker): on the suite's shared Redis, other
  // files' workers share the write timeline and consumer group, and a CI run saw its 2 rows not written in 60 s.
  let ownRedis: LocalServer;
  let ownApi: ServiceProcess;
  let ownWorker: ServiceProcess;
  beforeAll(async () => {
    ownRedis = await startOwnRedis('lists');
    [ownApi, ownWorker] = await Promise.all([spawnApi({ REDIS_URL: ownRedis.url }), spawnWorker({ REDIS_URL: ownRedis.url })]);
  }, 60_000);
  afterAll(async () => {
    await Promise.all([ownApi, ownWorker].filter(Boolean).map((service) => service.stop()));
    await ownRedis?.stop();
  });

  test('when a user holds coupons of several events, then the list shows each, pending until persisted', async () => {
    const userId = `holder-${uniqueEventId('u')}`;
    const first = await newEvent('lu', {}, ownApi.url);
    const second = await newEvent('lu', {}, ownApi.url);
    await newEvent('lu', {}, ownApi.url);
    expect((await call(`${ownApi.url}/v1/events/${first}/apply`, { body: { userId } })).status).toBe(202);
    expect((await call(`${ownApi.url}/v1/events/${second}/apply`, { body: { userId: 'someone-else' } })).status).toBe(202);
    expect((await call(`${ownApi.url}/v1/events/${second}/apply`, { body: { userId } })).status).toBe(202);

    const now = await call<{ userId: string; coupons: Array<{ eventId: string; sequence: number; status: string }> }>(`${ownApi.url}/v1/users/${userId}/coupons`);
    expect(now.status).toBe(200);
    expect(now.body.userId).toBe(userId);
    expect(now.body.coupons.map(({ eventId, sequence }) => ({ eventId, sequence }))).toEqual(
      [{ eventId: first, sequence: 1 }, { eventId: second, sequence: 2 }].sort((a, b) => (a.eventId < b.eventId ? -1 : 1)),
    );
    await waitForPersisted(first, 1);
    await waitForPersisted(second, 2);
    const later = await waitFor(async () => {
      const response = await call<{ coupons: Array<{ status: string }> }>(`${ownApi.url}/v1/users/${userId}/coupons`);
      return response.body.coupons.every((coupon) => coupon.status === 'persisted') && response.body;
    }, { what: 'both coupons persisted' });
    expect(later.coupons).toHaveLength(2);
  });

  test('when a user holds nothing, then the list is empty', async () => {
    const response = await call(`${api.url}/v1/users/nobody-${uniqueEventId('n')}/coupons`);
    expect(response.status).toBe(200);
    expect(response.body.coupons).toEqual([]);
  });

  test('when JWT is configured, then a token reads only its own subject\'s coupons and the admin token reads anyone\'s', async () => {
    const eventId = await newEvent('lj');
    const own = await call(`${jwtApi.url}/v1/events/${eventId}/apply`, { method: 'POST', token: await token('jwt-holder') });
    expect(own.status).toBe(202);
    const mine = await call(`${jwtApi.url}/v1/users/jwt-holder/coupons`, { token: await token('jwt-holder') });
    expect(mine.status).toBe(200);
    expect(mine.body.coupons).toContainEqual(expect.objectContaining({ eventId }));
    const theirs = await call(`${jwtApi.url}/v1/users/jwt-holder/coupons`, { token: await token('jwt-other') });
    expect(theirs.status).toBe(403);
    expect(theirs.body.error).toBe('forbidden');
    expect((await call(`${jwtApi.url}/v1/users/jwt-holder/coupons`)).status).toBe(401);
    expect((await call(`${jwtApi.url}/v1/users/jwt-holder/coupons`, { token: 'garbage' })).status).toBe(401);
    const admin = await call(`${jwtApi.url}/v1/users/jwt-holder/coupons`, { token: ADMIN_TOKEN });
    expect(admin.status).toBe(200);
    expect(admin.body.coupons).toContainEqual(expect.objectContaining({ eventId }));
  });

  test('when the user id is malformed, then it answers 400', async () => {
    expect((await call(`${api.url}/v1/users/bad%20id/coupons`)).status).toBe(400);
  });
});
