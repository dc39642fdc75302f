/**
 * The HTTP contract of DESIGN.md against a real api process (and a worker where persisted states matter):
 * every route and outcome, and every response body held to docs/openapi.yaml by `call`.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Redis } from 'ioredis';
import { startRedis } from '../../scripts/local-servers/index.ts';
import { createRedis } from '../../src/redis/client.ts';
import { applyForCoupon } from '../../src/redis/gate.ts';
import { eventKeys } from '../../src/redis/keys.ts';
import { ADMIN_TOKEN, closePool, query, request, serverUrls, spawnApi, spawnWorker, uniqueEventId, waitFor, type ServiceProcess } from '../support/harness.ts';
import { call } from '../support/openapi.ts';

let api: ServiceProcess;
const started: ServiceProcess[] = [];

beforeAll(async () => {
  api = await spawnApi();
  started.push(api);
});

afterAll(async () => {
  await Promise.all(started.map((service) => service.stop()));
  await closePool();
});

const isoIn = (ms: number): string => new Date(Date.now() + ms).toISOString();
const admin = (path: string, init: { method?: string; body?: unknown; headers?: Record<string, string> } = {}) =>
  call(`${api.url}${path}`, { ...init, token: ADMIN_TOKEN });
const newEvent = async (event: { totalQuantity: number; startsAt?: string; endsAt?: string }, prefix = 'ct') => {
  const id = uniqueEventId(prefix);
  const response = await admin('/v1/events', { body: { id, name: `contract ${id}`, ...event } });
  expect(response.status).toBe(201);
  return id;
};
const applyAs = (eventId: string, body: unknown, headers?: Record<string, string>) =>
  call(`${api.url}/v1/events/${eventId}/apply`, { method: 'POST', body, ...(headers && { headers }) });

/** The value of the sample of `name` whose labels include `labels`, or undefined. */
function metric(text: string, name: string, labels: Record<string, string>): number | undefined {
  for (const line of text.split('\n')) {
    const match = /^([a-z_]+)\{([^}]*)\} (\S+)$/.exec(line);
    if (!match || match[1] !== name) continue;
    const has = Object.fromEntries([...match[2]!.matchAll(/(\w+)="([^"]*)"/g)].map((pair) => [pair[1], pair[2]]));
    if (Object.entries(labels).every(([key, value]) => has[key] === value)) return Number(match[3]);
  }
  return undefined;
}

describe('POST /v1/events', () => {
  test('when an admin creates an event, then it answers 201 with the event, its Location, and status open', async () => {
    const id = uniqueEventId('ct');
    const endsAt = isoIn(3_600_000);
    const response = await admin('/v1/events', { body: { id, name: 'Summer sale', totalQuantity: 100, endsAt } });
    expect(response.status).toBe(201);
    expect(response.headers.get('location')).toBe(`/v1/events/${id}`);
    expect(response.body).toMatchObject({ id, name: 'Summer sale', totalQuantity: 100, issued: 0, persisted: 0, endsAt, status: 'open' });
    // startsAt defaults to now
    expect(Math.abs(Date.parse(response.body.startsAt as string) - Date.now())).toBeLessThan(60_000);
  });

  test('when the id is taken, then it answers 409 event_exists and keeps the first event', async () => {
    const id = await newEvent({ totalQuantity: 5 });
    const again = await admin('/v1/events', { body: { id, name: 'other', totalQuantity: 9 } });
    expect(again.status).toBe(409);
    expect(again.body.error).toBe('event_exists');
    const event = await call(`${api.url}/v1/events/${id}`);
    expect(event.body).toMatchObject({ totalQuantity: 5 });
  });

  test('when the same body is sent again, then it answers 200 with the event as it stands, and a body differing in any field is 409', async () => {
    const id = uniqueEventId('ct');
    const body = { id, name: 'Retry sale', totalQuantity: 3, startsAt: isoIn(-60_000), endsAt: isoIn(3_600_000) };
    expect((await admin('/v1/events', { body })).status).toBe(201);
    expect((await applyAs(id, { userId: 'before-retry' })).status).toBe(202);
    const again = await admin('/v1/events', { body });
    expect(again.status).toBe(200);
    expect(again.headers.get('location')).toBe(`/v1/events/${id}`);
    expect(again.body).toMatchObject({ id, name: 'Retry sale', totalQuantity: 3, issued: 1, status: 'open' });
    // without startsAt the body asks for "now", which a retry cannot repeat: it matches the event's start
    const { startsAt: _startsAt, ...withoutStart } = body;
    expect((await admin('/v1/events', { body: withoutStart })).status).toBe(200);
    for (const other of [{ name: 'Other' }, { totalQuantity: 4 }, { startsAt: isoIn(-30_000) }, { endsAt: isoIn(7_200_000) }, { endsAt: null }]) {
      const response = await admin('/v1/events', { body: { ...body, ...other } });
      expect([JSON.stringify(other), response.status, response.body.error]).toEqual([JSON.stringify(other), 409, 'event_exists']);
    }
    expect((await call(`${api.url}/v1/events/${id}`)).body).toMatchObject({ totalQuantity: 3, issued: 1 });
  });

  test('when the Redis write of a create fails, then the same body again completes the event (201) and applies work', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'coupon-contract-create-retry-'));
    const server = await startRedis({ dir });
    const redis = new Redis(server.url);
    let own: ServiceProcess | undefined;
    try {
      own = await spawnApi({ REDIS_URL: server.url });
      started.push(own);
      const ownUrl = own.url;
      const id = uniqueEventId('ct');
      const body = { id, name: `retry ${id}`, totalQuantity: 2, endsAt: isoIn(3_600_000) };
      // The first try's Redis write times out: writes are paused, and once the api has answered, its connections
      // are killed, so the held write never runs. MySQL has the event, the gate does not (the same server, so no
      // repair from MySQL follows: the event answers 404).
      await redis.client('PAUSE', 20_000, 'WRITE');
      const first = await call(`${ownUrl}/v1/events`, { body, token: ADMIN_TOKEN });
      await redis.call('CLIENT', 'KILL', 'TYPE', 'normal', 'SKIPME', 'yes');
      await redis.client('UNPAUSE');
      expect(first.status).toBe(503);
      expect(await redis.exists(eventKeys(id).meta)).toBe(0);
      await waitFor(async () => (await call(`${ownUrl}/v1/events/${id}/apply`, { body: { userId: 'too-early' } })).status === 404, { what: 'the half-made event to answer 404' });

      const retry = await call(`${ownUrl}/v1/events`, { body, token: ADMIN_TOKEN });
      expect(retry.status).toBe(201);
      expect(retry.headers.get('location')).toBe(`/v1/events/${id}`);
      expect(retry.body).toMatchObject({ id, totalQuantity: 2, issued: 0, status: 'open' });
      const applies = await Promise.all(['u1', 'u2', 'u3'].map(async (userId) => (await call(`${ownUrl}/v1/events/${id}/apply`, { body: { userId } })).status));
      expect(applies.sort()).toEqual([202, 202, 410]);
      expect((await call(`${ownUrl}/v1/events`, { body, token: ADMIN_TOKEN })).body).toMatchObject({ issued: 2, status: 'sold_out' });
      expect((await call(`${ownUrl}/v1/events`, { body: { ...body, totalQuantity: 5 }, token: ADMIN_TOKEN })).status).toBe(409);
    } finally {
      // the api before its Redis: an api whose Redis is gone does not finish its shutdown
      await own?.stop();
      redis.disconnect();
      await server.stop();
      await rm(dir, { recursive: true, force: true });
    }
  }, 60_000);

  test.each([
    ['no token', undefined],
    ['a wrong token', `Bearer ${ADMIN_TOKEN}x`],
    ['the token without the Bearer scheme', ADMIN_TOKEN],
    ['an empty bearer token', 'Bearer '],
  ])('when the request carries %s, then it answers 401 unauthorized and creates nothing', async (_what, authorization) => {
    const id = uniqueEventId('ct');
    const response = await call(`${api.url}/v1/events`, {
      body: { id, name: 'x', totalQuantity: 1 }, ...(authorization !== undefined && { headers: { authorization } }),
    });
    expect(response.status).toBe(401);
    expect(response.body.error).toBe('unauthorized');
    expect((await call(`${api.url}/v1/events/${id}`)).status).toBe(404);
  });

  const valid = { name: 'x', totalQuantity: 10 };
  test.each([
    ['an id with capitals', { ...valid, id: 'Summer-2026' }, /id/],
    ['an id longer than 64', { ...valid, id: `a${'b'.repeat(64)}` }, /id/],
    ['an id starting with a dash', { ...valid, id: '-summer' }, /id/],
    ['an unknown field', { ...valid, id: 'ok-id', color: 'red' }, /unknown field "color"/],
    ['totalQuantity as a string', { ...valid, id: 'ok-id', totalQuantity: '10' }, /totalQuantity/],
    ['a fractional totalQuantity', { ...valid, id: 'ok-id', totalQuantity: 1.5 }, /totalQuantity/],
    ['totalQuantity 0', { ...valid, id: 'ok-id', totalQuantity: 0 }, /totalQuantity/],
    ['no name', { id: 'ok-id', totalQuantity: 1 }, /name/],
    ['startsAt that is no date-time', { ...valid, id: 'ok-id', startsAt: 'tomorrow' }, /startsAt/],
    ['endsAt before startsAt', { ...valid, id: 'ok-id', startsAt: isoIn(60_000), endsAt: isoIn(0) }, /endsAt must be after startsAt/],
    ['startsAt in year 0001 (MySQL stored it as 2001)', { ...valid, id: 'ok-id', startsAt: '0001-01-01T00:00:00Z' }, /startsAt must match/],
    ['startsAt before year 1000 once in UTC', { ...valid, id: 'ok-id', startsAt: '1000-01-01T00:00:00+01:00' }, /startsAt must be between/],
    ['endsAt past year 9999 once in UTC', { ...valid, id: 'ok-id', endsAt: '9999-12-31T23:59:59-01:00' }, /endsAt must be between/],
    ['an array body', [valid], /body/],
  ])('when the body has %s, then it answers 400 invalid_request saying what is wrong', async (_what, body, message) => {
    const response = await admin('/v1/events', { body });
    expect(response.status).toBe(400);
    expect(response.body.error).toBe('invalid_request');
    expect(response.body.message).toMatch(message);
  });

  test('when the body is larger than 4 kB, then it answers 413 payload_too_large', async () => {
    const response = await admin('/v1/events', { body: { id: uniqueEventId('ct'), name: 'x', totalQuantity: 1, padding: 'p'.repeat(5_000) } });
    expect(response.status).toBe(413);
    expect(response.body).toMatchObject({ error: 'payload_too_large', message: expect.stringMatching(/larger than 4kb/) });
  });

  test('when the body is malformed JSON, then it answers 400 invalid_request', async () => {
    const response = await admin('/v1/events', { body: '{"id": "x", "name": ' });
    expect(response.status).toBe(400);
    expect(response.body).toMatchObject({ error: 'invalid_request', message: expect.stringMatching(/not valid JSON/) });
  });

  test.each(['text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x'])(
    'when the body is sent as %s, then it answers 415 unsupported_media_type', async (contentType) => {
      const response = await admin('/v1/events', {
        body: JSON.stringify({ id: uniqueEventId('ct'), name: 'x', totalQuantity: 1 }), headers: { 'content-type': contentType },
      });
      expect(response.status).toBe(415);
      expect(response.body.error).toBe('unsupported_media_type');
    },
  );
});

describe('PATCH /v1/events/:eventId', () => {
  test('when Redis has lost the event\'s gate state, then a change restores it from MySQL first and answers 200', async () => {
    const id = await newEvent({ totalQuantity: 3 });
    const redis = new Redis(serverUrls().REDIS_URL);
    try {
      const keys = eventKeys(id);
      await redis.del(keys.meta, keys.issued, keys.users);
      const response = await admin(`/v1/events/${id}`, { method: 'PATCH', body: { totalQuantity: 5 } });
      expect(response).toMatchObject({ status: 200, body: { totalQuantity: 5 } });
      expect(await redis.hget(keys.meta, 'total')).toBe('5');
    } finally {
      redis.disconnect();
    }
  });

  test('when an admin changes the name and end, then it answers 200 with the changed event', async () => {
    const id = await newEvent({ totalQuantity: 3 });
    const endsAt = isoIn(7_200_000);
    const response = await admin(`/v1/events/${id}`, { method: 'PATCH', body: { name: 'renamed', endsAt } });
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({ id, name: 'renamed', endsAt, totalQuantity: 3 });
    expect((await call(`${api.url}/v1/events/${id}`)).body).toMatchObject({ name: 'renamed', endsAt });
  });

  test('when the quantity is raised on a sold-out event, then it reopens and the next user is issued', async () => {
    const id = await newEvent({ totalQuantity: 1 });
    expect((await applyAs(id, { userId: 'first' })).status).toBe(202);
    expect((await applyAs(id, { userId: 'second' })).status).toBe(410);
    const response = await admin(`/v1/events/${id}`, { method: 'PATCH', body: { totalQuantity: 2 } });
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({ totalQuantity: 2, issued: 1, status: 'open' });
    expect((await applyAs(id, { userId: 'second' })).body).toEqual({ status: 'issued', sequence: 2 });
  });

  test('when the quantity would go below what is issued, then it answers 409 quantity_below_issued and keeps the quantity', async () => {
    const id = await newEvent({ totalQuantity: 5 });
    await applyAs(id, { userId: 'u1' });
    await applyAs(id, { userId: 'u2' });
    const response = await admin(`/v1/events/${id}`, { method: 'PATCH', body: { totalQuantity: 1 } });
    expect(response.status).toBe(409);
    expect(response.body).toMatchObject({ error: 'quantity_below_issued', message: expect.stringMatching(/2 coupons/) });
    expect((await call(`${api.url}/v1/events/${id}`)).body).toMatchObject({ totalQuantity: 5, issued: 2 });
    // lowering to exactly what is issued is allowed
    expect((await admin(`/v1/events/${id}`, { method: 'PATCH', body: { totalQuantity: 2 } })).body).toMatchObject({ status: 'sold_out' });
  });

  test('when many PATCHes of one event race with different totals, then Redis and MySQL end at the same total, round after round', async () => {
    const redis = new Redis(serverUrls().REDIS_URL);
    try {
      for (let round = 0; round < 5; round += 1) {
        const id = await newEvent({ totalQuantity: 1 });
        const totals = Array.from({ length: 40 }, (_, i) => 100 + ((i * 17 + round) % 40));
        const responses = await Promise.all(totals.map((totalQuantity) => admin(`/v1/events/${id}`, { method: 'PATCH', body: { totalQuantity } })));
        expect(responses.map((response) => response.status)).toEqual(totals.map(() => 200));
        const [row] = await query<{ total_quantity: number }>('select total_quantity from coupon_event where id = ?', [id]);
        const gate = Number(await redis.hget(eventKeys(id).meta, 'total'));
        expect({ round, gate }).toEqual({ round, gate: row!.total_quantity });
        expect((await call(`${api.url}/v1/events/${id}`)).body).toMatchObject({ totalQuantity: gate });
      }
    } finally {
      redis.disconnect();
    }
  }, 60_000);

  test('when the event does not exist, then it answers 404 event_not_found', async () => {
    const response = await admin(`/v1/events/${uniqueEventId('missing')}`, { method: 'PATCH', body: { totalQuantity: 2 } });
    expect(response.status).toBe(404);
    expect(response.body.error).toBe('event_not_found');
  });

  test.each([
    ['an empty object', {}],
    ['an unknown field', { totalQuantity: 2, startsAt: isoIn(0) }],
    ['a negative quantity', { totalQuantity: -1 }],
  ])('when the body is %s, then it answers 400 invalid_request', async (_what, body) => {
    const id = await newEvent({ totalQuantity: 1 });
    const response = await admin(`/v1/events/${id}`, { method: 'PATCH', body });
    expect(response.status).toBe(400);
    expect(response.body.error).toBe('invalid_request');
  });

  test('when endsAt lies beyond what MySQL can store, then it answers 400 and changes nothing', async () => {
    const id = await newEvent({ totalQuantity: 1 });
    const response = await admin(`/v1/events/${id}`, { method: 'PATCH', body: { endsAt: '9999-12-31T23:59:59-01:00' } });
    expect(response.status).toBe(400);
    expect(response.body.message).toMatch(/endsAt must be between/);
    expect((await call(`${api.url}/v1/events/${id}`)).body).toMatchObject({ endsAt: null, status: 'open' });
    expect((await applyAs(id, { userId: 'still-open' })).status).toBe(202);
  });

  test('when no admin token is sent, then it answers 401 and changes nothing', async () => {
    const id = await newEvent({ totalQuantity: 1 });
    const response = await call(`${api.url}/v1/events/${id}`, { method: 'PATCH', body: { totalQuantity: 99 } });
    expect(response.status).toBe(401);
    expect((await call(`${api.url}/v1/events/${id}`)).body).toMatchObject({ totalQuantity: 1 });
  });

  test('when the body is not JSON, then it answers 415 unsupported_media_type', async () => {
    const id = await newEvent({ totalQuantity: 1 });
    const response = await admin(`/v1/events/${id}`, { method: 'PATCH', body: 'totalQuantity=2', headers: { 'content-type': 'text/plain' } });
    expect(response.status).toBe(415);
  });
});

describe('GET /v1/events/:eventId', () => {
  test('when the event starts later, then its status is scheduled', async () => {
    const id = await newEvent({ totalQuantity: 1, startsAt: isoIn(3_600_000) });
    expect((await call(`${api.url}/v1/events/${id}`)).body).toMatchObject({ status: 'scheduled', issued: 0 });
  });

  test('when the event has ended, then its status is closed', async () => {
    const id = await newEvent({ totalQuantity: 1, startsAt: isoIn(-120_000), endsAt: isoIn(-60_000) });
    expect((await call(`${api.url}/v1/events/${id}`)).body).toMatchObject({ status: 'closed' });
  });

  test('when all coupons are issued, then its status is sold_out and issued equals the quantity', async () => {
    const id = await newEvent({ totalQuantity: 2 });
    await applyAs(id, { userId: 'a' });
    await applyAs(id, { userId: 'b' });
    const response = await call(`${api.url}/v1/events/${id}`);
    expect(response.status).toBe(200);
    expect(response.body).toMatchObject({ status: 'sold_out', issued: 2, totalQuantity: 2 });
  });

  test('when the event lies at the ends of the storable range, then its dates read back exactly', async () => {
    const startsAt = '1000-01-01T00:00:00.000Z';
    const endsAt = '9999-12-31T23:59:59.999Z';
    const id = await newEvent({ totalQuantity: 1, startsAt, endsAt });
    expect((await call(`${api.url}/v1/events/${id}`)).body).toMatchObject({ startsAt, endsAt, status: 'open' });
  });

  test('when the event does not exist, then it answers 404 event_not_found', async () => {
    const response = await call(`${api.url}/v1/events/${uniqueEventId('missing')}`);
    expect(response.status).toBe(404);
    expect(response.body.error).toBe('event_not_found');
  });

  test('when the event id is malformed, then it answers 400 invalid_request', async () => {
    const response = await call(`${api.url}/v1/events/NOT_AN_ID`);
    expect(response.status).toBe(400);
    expect(response.body.error).toBe('invalid_request');
  });
});

describe('POST /v1/events/:eventId/apply', () => {
  test('when users apply, then each gets 202 issued with the next sequence, and a second try is 409 already_applied', async () => {
    const id = await newEvent({ totalQuantity: 3 });
    expect((await applyAs(id, { userId: 'alice' }))).toMatchObject({ status: 202, body: { status: 'issued', sequence: 1 } });
    expect((await applyAs(id, { userId: 'bob_2' }))).toMatchObject({ status: 202, body: { status: 'issued', sequence: 2 } });
    const again = await applyAs(id, { userId: 'alice' });
    expect(again.status).toBe(409);
    expect(again.body).toMatchObject({ error: 'already_applied', message: expect.stringMatching(/coupon 1/) });
  });

  test('when the coupons are gone, then the next user gets 410 sold_out', async () => {
    const id = await newEvent({ totalQuantity: 1 });
    await applyAs(id, { userId: 'winner' });
    for (const userId of ['late-1', 'late-2']) {
      const response = await applyAs(id, { userId });
      expect(response.status).toBe(410);
      expect(response.body.error).toBe('sold_out');
    }
  });

  test('when a user holds a coupon they were never told of and asks after the sell-out, then they hear 409 already_applied with it, not 410', async () => {
    const id = await newEvent({ totalQuantity: 2 });
    // The holder's first answer was lost (a 503 after the gate ran, a dropped connection): the gate issued its coupon.
    const redis = createRedis(serverUrls().REDIS_URL);
    try {
      expect(await applyForCoupon(redis, id, 'untold', 'lost-answer')).toMatchObject({ kind: 'issued', sequence: 1 });
    } finally {
      redis.disconnect();
    }
    expect(await applyAs(id, { userId: 'last' })).toMatchObject({ status: 202, body: { sequence: 2 } });
    // The gate's sold_out sets this process's local flag; the next answers come from it.
    for (const userId of ['late-1', 'late-2']) expect((await applyAs(id, { userId })).status).toBe(410);
    const holder = await applyAs(id, { userId: 'untold' });
    expect(holder).toMatchObject({ status: 409, body: { error: 'already_applied', message: expect.stringMatching(/coupon 1\b/) } });
    expect((await applyAs(id, { userId: 'late-3' })).status).toBe(410);
  });

  test('when the api\'s clock runs ahead of Redis\'s, then an event created without startsAt is open at once (the gate\'s clock decides)', async () => {
    // One hour ahead: every Date in the api process, as on a pod whose clock drifted.
    const skew = 'const R=Date,S=3600000;globalThis.Date=class extends R{constructor(...a){a.length?super(...a):super(R.now()+S)}static now(){return R.now()+S}};';
    const ahead = await spawnApi({ NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import=data:text/javascript,${encodeURIComponent(skew)}` });
    started.push(ahead);
    const id = uniqueEventId('clock');
    const created = await call(`${ahead.url}/v1/events`, { body: { id, name: 'clock', totalQuantity: 1 }, token: ADMIN_TOKEN });
    expect(created.status).toBe(201);
    expect(Math.abs(Date.parse(created.body.startsAt as string) - Date.now())).toBeLessThan(60_000);
    expect(await call(`${ahead.url}/v1/events/${id}/apply`, { body: { userId: 'first' } })).toMatchObject({ status: 202, body: { sequence: 1 } });
  });

  test('when the event has not started, then it answers 409 event_not_open', async () => {
    const id = await newEvent({ totalQuantity: 1, startsAt: isoIn(3_600_000) });
    const response = await applyAs(id, { userId: 'early' });
    expect(response.status).toBe(409);
    expect(response.body).toMatchObject({ error: 'event_not_open', message: expect.stringMatching(/not started/) });
  });

  test('when the event has ended, then it answers 409 event_not_open', async () => {
    const id = await newEvent({ totalQuantity: 1, startsAt: isoIn(-120_000), endsAt: isoIn(-60_000) });
    const response = await applyAs(id, { userId: 'late' });
    expect(response.status).toBe(409);
    expect(response.body).toMatchObject({ error: 'event_not_open', message: expect.stringMatching(/ended/) });
  });

  test('when the event does not exist, then it answers 404 event_not_found', async () => {
    const response = await applyAs(uniqueEventId('missing'), { userId: 'someone' });
    expect(response.status).toBe(404);
    expect(response.body.error).toBe('event_not_found');
  });

  test.each([
    ['no userId', {}],
    ['a userId with a space', { userId: 'a b' }],
    ['a userId longer than 64', { userId: 'u'.repeat(65) }],
    ['a numeric userId', { userId: 42 }],
    ['an unknown field', { userId: 'ok', admin: true }],
    ['malformed JSON', '{"userId":'],
    ['a JSON string', '"alice"'],
  ])('when the body has %s, then it answers 400 invalid_request and issues nothing', async (_what, body) => {
    const id = await newEvent({ totalQuantity: 1 });
    const response = await applyAs(id, body);
    expect(response.status).toBe(400);
    expect(response.body.error).toBe('invalid_request');
    expect((await call(`${api.url}/v1/events/${id}`)).body).toMatchObject({ issued: 0 });
  });

  test('when the body is over 4 kB (413) or absent (400), then it answers saying so, and issues nothing', async () => {
    const id = await newEvent({ totalQuantity: 1 });
    const large = await applyAs(id, { userId: 'big', padding: 'p'.repeat(5_000) });
    expect(large).toMatchObject({ status: 413, body: { error: 'payload_too_large', message: expect.stringMatching(/larger than 4kb/) } });
    const absent = await call(`${api.url}/v1/events/${id}/apply`, { method: 'POST' });
    expect(absent).toMatchObject({ status: 400, body: { error: 'invalid_request', message: 'userId is required' } });
    expect((await call(`${api.url}/v1/events/${id}`)).body).toMatchObject({ issued: 0 });
  });

  test('when the event id is percent-encoded in the path, then it is the same event', async () => {
    const id = await newEvent({ totalQuantity: 1 });
    const encoded = `%${id.charCodeAt(0).toString(16)}${id.slice(1)}`;
    expect(await applyAs(encoded, { userId: 'encoded' })).toMatchObject({ status: 202, body: { sequence: 1 } });
  });

  test('when the body is sent as form data, then it answers 415 unsupported_media_type', async () => {
    const id = await newEvent({ totalQuantity: 1 });
    const response = await applyAs(id, 'userId=alice', { 'content-type': 'application/x-www-form-urlencoded' });
    expect(response.status).toBe(415);
    expect(response.body.error).toBe('unsupported_media_type');
  });
});

describe('GET /v1/events/:eventId/coupons/:userId', () => {
  test('when a coupon is issued, then it is pending, and persisted once a worker has written it', async () => {
    // A Redis of its own, so no worker of another test can persist the coupon before it is seen pending.
    const dir = await mkdtemp(join(tmpdir(), 'coupon-contract-pending-'));
    const redis = await startRedis({ dir });
    try {
      const own = await spawnApi({ REDIS_URL: redis.url });
      started.push(own);
      const id = uniqueEventId('ct');
      expect((await call(`${own.url}/v1/events`, { body: { id, name: id, totalQuantity: 2 }, token: ADMIN_TOKEN })).status).toBe(201);
      expect((await call(`${own.url}/v1/events/${id}/apply`, { body: { userId: 'holder' } })).status).toBe(202);
      const pending = await call(`${own.url}/v1/events/${id}/coupons/holder`);
      expect(pending.status).toBe(200);
      expect(pending.body).toEqual({ userId: 'holder', sequence: 1, status: 'pending' });
      expect((await call(`${own.url}/v1/events/${id}`)).body).toMatchObject({ issued: 1, persisted: 0 });
      // With no worker running, the api itself reports the backlog the alerts watch (a worker scaled to 0 reports none).
      const backlog = async () => {
        const body = (await call<string>(`${own.opsUrl}/metrics`)).body;
        return ['coupon_outbox_lag', 'coupon_outbox_pending', 'coupon_issued_minus_persisted'].map((name) => metric(body, name, { event: id }));
      };
      expect(await backlog()).toEqual([1, 0, 1]);
      expect(metric((await call<string>(`${own.opsUrl}/metrics`)).body, 'coupon_redis_reachable', {})).toBe(1);

      const worker = await spawnWorker({ REDIS_URL: redis.url });
      started.push(worker);
      const persisted = await waitFor(async () => {
        const response = await call(`${own.url}/v1/events/${id}/coupons/holder`);
        return response.body.status === 'persisted' && response;
      }, { what: 'the coupon to be persisted' });
      expect(persisted.body).toEqual({ userId: 'holder', sequence: 1, status: 'persisted' });
      expect((await call(`${own.url}/v1/events/${id}`)).body).toMatchObject({ issued: 1, persisted: 1, status: 'open' });
      // The worker writes the row, then acknowledges the entry: the pending count falls a moment after the row shows.
      await waitFor(async () => JSON.stringify(await backlog()) === '[0,0,0]' || undefined, { what: 'the backlog to be empty', timeoutMs: 5_000 });
      await worker.stop();
      // Redis gone: the scrape still answers, with the request counters and without the backlog it cannot read.
      await redis.stop();
      const scrape = await call<string>(`${own.opsUrl}/metrics`);
      expect(scrape.status).toBe(200);
      expect(metric(scrape.body, 'coupon_http_requests_total', { route: '/v1/events/:eventId/apply', status: '202' })).toBe(1);
      expect(scrape.body).not.toMatch(/^coupon_outbox_lag\{/m);
      expect(metric(scrape.body, 'coupon_redis_reachable', {})).toBe(0);
      await own.stop();
    } finally {
      await redis.stop();
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('when the user holds no coupon, then it answers 404 coupon_not_found', async () => {
    const id = await newEvent({ totalQuantity: 1 });
    const response = await call(`${api.url}/v1/events/${id}/coupons/nobody`);
    expect(response.status).toBe(404);
    expect(response.body.error).toBe('coupon_not_found');
  });

  test('when the user id is malformed, then it answers 400 invalid_request', async () => {
    const id = await newEvent({ totalQuantity: 1 });
    const response = await call(`${api.url}/v1/events/${id}/coupons/${encodeURIComponent('a b')}`);
    expect(response.status).toBe(400);
  });
});

describe('operations and unknown routes', () => {
  test('when probed on the ops port, then /healthz answers ok and /readyz ready', async () => {
    expect((await call(`${api.opsUrl}/healthz`)).body).toEqual({ status: 'ok' });
    expect((await call(`${api.opsUrl}/readyz`)).body).toEqual({ status: 'ready' });
  });

  // `request`, not `call`: docs/openapi.yaml documents these paths on the ops port, where they do exist.
  test.each(['/metrics', '/readyz', '/healthz'])('when %s is asked for on the public port, then it answers 404: only the ops port serves it', async (path) => {
    const response = await request(`${api.url}${path}`);
    expect(response.status).toBe(404);
    expect(response.body.error).toBe('not_found');
  });

  test('when the ops port is asked for anything but its three routes, then it answers 404 or 405 and never the api', async () => {
    expect((await request(`${api.opsUrl}/v1/events`)).status).toBe(404);
    const post = await call(`${api.opsUrl}/healthz`, { method: 'POST', body: {} });
    expect(post.status).toBe(405);
    expect(post.headers.get('allow')).toMatch(/GET/);
  });

  test('when traffic has passed, then /metrics counts requests by route and status and gate outcomes', async () => {
    const id = await newEvent({ totalQuantity: 1 });
    await applyAs(id, { userId: 'm1' });
    await applyAs(id, { userId: 'm2' });
    await applyAs(id, { userId: 'm3' });
    const response = await call<string>(`${api.opsUrl}/metrics`);
    expect(response.status).toBe(200);
    expect(response.headers.get('content-type')).toMatch(/^text\/plain/);
    const body = response.body;
    expect(metric(body, 'coupon_http_requests_total', { route: '/v1/events/:eventId/apply', status: '202' })).toBeGreaterThanOrEqual(1);
    expect(metric(body, 'coupon_http_requests_total', { route: '/v1/events/:eventId/apply', status: '410' })).toBeGreaterThanOrEqual(2);
    expect(metric(body, 'coupon_gate_outcomes_total', { outcome: 'issued' })).toBeGreaterThanOrEqual(1);
    expect(metric(body, 'coupon_gate_outcomes_total', { outcome: 'local_sold_out' })).toBeGreaterThanOrEqual(1);
    expect(response.body).toMatch(/^coupon_http_request_duration_seconds_bucket\{/m);
  });

  test.each(['/v1/nothing-here', '/v1/events/x/y/z', '/'])('when %s is requested, then it answers 404 not_found as JSON', async (path) => {
    const response = await call(`${api.url}${path}`);
    expect(response.status).toBe(404);
    expect(response.body.error).toBe('not_found');
  });

  test.each([
    ['DELETE', '/v1/events/some-event', /GET.*PATCH|PATCH.*GET/],
    ['PUT', '/v1/events', /POST/],
    ['GET', '/v1/events/some-event/apply', /POST/],
    ['DELETE', '/v1/events/some-event/coupons/u1', /GET/],
  ])('when %s %s is sent, then it answers 405 method_not_allowed with an Allow header', async (method, path, allow) => {
    const response = await call(`${api.url}${path}`, { method, ...(method !== 'GET' && method !== 'DELETE' && { body: {} }) });
    expect(response.status).toBe(405);
    expect(response.body.error).toBe('method_not_allowed');
    expect(response.headers.get('allow')).toMatch(allow);
  });
});
