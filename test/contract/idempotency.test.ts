/**
 * Idempotent retries: a mobile client that timed out sends its apply again with the same Idempotency-Key and
 * gets the answer its first request got, not a 409 or a 410, and never a second coupon.
 */
import { ADMIN_TOKEN, closePool, spawnApi, uniqueEventId, type ServiceProcess } from '../support/harness.ts';
import { call } from '../support/openapi.ts';

let api: ServiceProcess;

beforeAll(async () => {
  // Local sold-out flags kept for an hour: a retry must get past them.
  api = await spawnApi({ SOLD_OUT_CACHE_MS: '3600000' });
});
afterAll(async () => {
  await api?.stop();
  await closePool();
});

const newEvent = async (totalQuantity: number) => {
  const id = uniqueEventId('idem');
  expect((await call(`${api.url}/v1/events`, { body: { id, name: id, totalQuantity }, token: ADMIN_TOKEN })).status).toBe(201);
  return id;
};
const applyAs = (eventId: string, userId: string, key?: string) =>
  call(`${api.url}/v1/events/${eventId}/apply`, { body: { userId }, ...(key !== undefined && { headers: { 'idempotency-key': key } }) });

describe('Idempotency-Key', () => {
  test('when a request that got a coupon is retried with its key, then it gets the same 202 and nothing more is issued', async () => {
    const eventId = await newEvent(5);
    const first = await applyAs(eventId, 'ann', 'tap-1');
    const again = await applyAs(eventId, 'ann', 'tap-1');
    expect(first).toMatchObject({ status: 202, body: { status: 'issued', sequence: 1 } });
    expect(again).toMatchObject({ status: 202, body: { status: 'issued', sequence: 1 } });
    expect((await applyAs(eventId, 'bob')).body).toEqual({ status: 'issued', sequence: 2 });
    const event = await call<{ issued: number }>(`${api.url}/v1/events/${eventId}`);
    expect(event.body.issued).toBe(2);
  });

  test('when a holder applies with a new key or none, then it is 409 already_applied', async () => {
    const eventId = await newEvent(5);
    await applyAs(eventId, 'ann', 'tap-1');
    expect(await applyAs(eventId, 'ann', 'tap-2')).toMatchObject({ status: 409, body: { error: 'already_applied' } });
    expect(await applyAs(eventId, 'ann')).toMatchObject({ status: 409, body: { error: 'already_applied' } });
  });

  test('when another user sends the same key, then it is that user\'s own request', async () => {
    const eventId = await newEvent(5);
    expect((await applyAs(eventId, 'ann', 'shared-key')).body).toEqual({ status: 'issued', sequence: 1 });
    expect((await applyAs(eventId, 'bob', 'shared-key')).body).toEqual({ status: 'issued', sequence: 2 });
    expect(await applyAs(eventId, 'bob', 'shared-key')).toMatchObject({ status: 202, body: { sequence: 2 } });
  });

  test('when the event sold out and this api answers from its local flag, then a retry with the key still gets its 202', async () => {
    const eventId = await newEvent(1);
    expect((await applyAs(eventId, 'winner', 'k-1')).status).toBe(202);
    // Learned from the gate, then answered from the local flag without Redis.
    expect((await applyAs(eventId, 'late')).status).toBe(410);
    expect((await applyAs(eventId, 'late')).status).toBe(410);
    expect(await applyAs(eventId, 'winner', 'k-1')).toMatchObject({ status: 202, body: { status: 'issued', sequence: 1 } });
    // Without a key the holder is not told 410 either: the flag checks whether the user holds a coupon (issue 20).
    expect(await applyAs(eventId, 'winner')).toMatchObject({ status: 409, body: { error: 'already_applied' } });
    expect((await applyAs(eventId, 'late', 'k-9')).status).toBe(410);
  });

  test('when the key is malformed, then it is 400 and nothing is issued', async () => {
    const eventId = await newEvent(1);
    expect(await applyAs(eventId, 'ann', 'has:colon')).toMatchObject({ status: 400, body: { error: 'invalid_request' } });
    expect(await applyAs(eventId, 'ann', 'x'.repeat(129))).toMatchObject({ status: 400, body: { error: 'invalid_request' } });
    expect(await applyAs(eventId, 'ann', '')).toMatchObject({ status: 400, body: { error: 'invalid_request' } });
    expect((await applyAs(eventId, 'ann')).body).toEqual({ status: 'issued', sequence: 1 });
  });
});
