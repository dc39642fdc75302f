import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { LocalServer } from '../../scripts/local-servers/index.ts';
import { startRedis } from '../../scripts/local-servers/index.ts';
import { startApi } from '../../scripts/services.ts';
import { createRedis, serverIdentity } from '../../src/redis/client.ts';
import { STATE_SENTINEL_KEY } from '../../src/redis/keys.ts';
import {
  ADMIN_TOKEN, type ServiceProcess, apply, baseEnv, createEvent, freePort, request, spawnApi, uniqueEventId, waitFor,
} from '../support/harness.ts';

describe('an event Redis knows nothing about', () => {
  let redis: LocalServer;
  let api: ServiceProcess;

  beforeAll(async () => {
    // Not startOwnRedis: that one is marked as already compared with MySQL, and this test needs a Redis nobody vouched for.
    redis = await startRedis({ dir: join(await mkdtemp(join(tmpdir(), 'coupon-state-')), 'redis') });
    // MySQL is unreachable for this api: any answer that needed it would be a 503, and it cannot compare this
    // Redis with MySQL, so it is alive but not ready.
    api = await startApi({
      port: await freePort(), waitFor: 'alive',
      env: baseEnv({ REDIS_URL: redis.url, MYSQL_URL: `mysql://root@127.0.0.1:${await freePort()}/coupon` }),
    });
  });
  afterAll(async () => {
    await api?.stop();
    await redis?.stop();
  });

  test('when nobody could compare this Redis with MySQL yet, then the api is not ready and apply answers 503 rather than guess', async () => {
    const answer = await apply(api.url, uniqueEventId('nowhere'), 'someone');
    expect(answer.status).toBe(503);
    expect((await request(`${api.opsUrl}/readyz`)).status).toBe(503);
  });

  test('when the worker\'s sentinel says Redis lost nothing, then an unknown event is 404 at once, without asking MySQL', async () => {
    // What a worker (or an api) writes once it compared this server with MySQL: the server's own identity.
    const client = createRedis(redis.url);
    try {
      await client.set(STATE_SENTINEL_KEY, await serverIdentity(client));
    } finally {
      await client.quit();
    }
    const answer = await waitFor(async () => {
      const reply = await apply(api.url, uniqueEventId('nowhere'), 'someone');
      return reply.status === 503 ? undefined : reply;
    }, { what: 'the api to see the marker', timeoutMs: 5_000 });
    expect(answer).toMatchObject({ status: 404, body: { error: 'event_not_found' } });
    expect((await request(`${api.opsUrl}/readyz`)).status).toBe(200);
  });
});

describe('changing an event', () => {
  let api: ServiceProcess;
  beforeAll(async () => {
    api = await spawnApi();
  });
  afterAll(async () => {
    await api?.stop();
  });

  test('when a new end is not after the start, then the change is refused with 400 and nothing changes', async () => {
    const eventId = uniqueEventId('patch');
    await createEvent(api.url, { id: eventId, totalQuantity: 5, startsAt: '2026-01-01T00:00:00.000Z' });
    const refused = await request(`${api.url}/v1/events/${eventId}`, {
      method: 'PATCH', token: ADMIN_TOKEN, body: { endsAt: '2025-12-31T23:59:59.000Z' },
    });
    expect(refused).toMatchObject({ status: 400, body: { error: 'invalid_request', message: 'endsAt must be after startsAt' } });
    expect((await request(`${api.url}/v1/events/${eventId}`)).body).toMatchObject({ endsAt: null, status: 'open' });
    expect((await apply(api.url, eventId, 'still-open')).status).toBe(202);
  });
});
