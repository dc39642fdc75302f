/**
 * Issue 20, breaks 2-4: what a restore of the gate state from MySQL must put back besides holders and counter.
 * - 2: the settings an operator saved (quantity, pause, end) when Redis lost the PATCH that wrote them (a restart
 *   from a snapshot taken before it, as after a failover to a replica that missed it);
 * - 3: the request id of each holder's entry, so an Idempotency-Key retry still gets its first 202;
 * - 4: the archive tombstone, so an archived event and its coupons are still read from MySQL;
 * - 6b: an event whose state alone is gone from a server that lost nothing else (on a Cluster: its slot moved off a
 *   flushed shard before that shard's restore reached it) is restored, not taken for an event that never existed.
 * Each test keeps every apply answer a client got and compares them with MySQL at the end (checkPersisted): every
 * told coupon is the row with that sequence, never more rows than the quantity MySQL records.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ServiceProcess } from '../../scripts/services.ts';
import { eventStateKeys } from '../../src/redis/archive-event.ts';
import { serverIdentity } from '../../src/redis/client.ts';
import { STATE_SENTINEL_KEY } from '../../src/redis/keys.ts';
import { ADMIN_TOKEN, type JsonResponse, createEvent, request, uniqueEventId, waitFor } from '../support/harness.ts';
import { describeFault } from '../support/fault-stack.ts';
import { countBy } from '../support/load.ts';
import { checkPersisted, countRows, readyz, recordFigures, toldSequence } from '../support/observe.ts';

type ApplyBody = { status?: string; sequence?: number; error?: string; message?: string };
type Answer = { eventId: string; userId: string; status: number; body: ApplyBody };

describeFault('restore seams', { folder: 'restore-seams' }, (stack) => {
  /** Every apply answer a client got in one test, for the history check. */
  let history: Answer[] = [];
  beforeEach(() => {
    history = [];
  });

  async function applyAs(api: ServiceProcess, eventId: string, userId: string, idempotencyKey?: string): Promise<Answer> {
    const response: JsonResponse<ApplyBody> = await request<ApplyBody>(`${api.url}/v1/events/${eventId}/apply`, {
      body: { userId }, ...(idempotencyKey !== undefined && { headers: { 'idempotency-key': idempotencyKey } }),
    });
    const answer = { eventId, userId, status: response.status, body: response.body };
    history.push(answer);
    return answer;
  }
  const applyMany = (api: ServiceProcess, eventId: string, prefix: string, count: number) =>
    Promise.all(Array.from({ length: count }, (_, i) => applyAs(api, eventId, `${prefix}-${i}`)));
  const statuses = (answers: Answer[]) => countBy(answers, (answer) => `${answer.status}${answer.body.error ? ` ${answer.body.error}` : ''}`);
  const patch = (api: ServiceProcess, eventId: string, body: Record<string, unknown>) =>
    request(`${api.url}/v1/events/${eventId}`, { method: 'PATCH', body, token: ADMIN_TOKEN });

  /** Waits until every coupon a client was told of is in MySQL, then compares the history with the rows. */
  async function checkHistory(eventId: string) {
    const told = history.filter((answer) => answer.eventId === eventId)
      .map((answer) => ({ userId: answer.userId, sequence: toldSequence(answer.status, answer.body) }))
      .filter((coupon): coupon is { userId: string; sequence: number } => coupon.sequence !== undefined);
    const distinct = new Set(told.map((coupon) => coupon.userId)).size;
    await waitFor(async () => (await countRows(stack.query, eventId)) >= distinct || undefined, { what: `the told coupons of ${eventId} in MySQL` });
    const [event] = await stack.query<{ total_quantity: number }>('select total_quantity from coupon_event where id = ?', [eventId]);
    return { total: Number(event?.total_quantity), ...(await checkPersisted(stack.query, eventId, told)) };
  }

  /** Waits until the server now connected was compared with MySQL (the marker names it) and the api issues again. */
  async function waitRestored(api: ServiceProcess): Promise<void> {
    const redis = stack.redisClient();
    const identity = await serverIdentity(redis);
    await waitFor(async () => (await redis.get(STATE_SENTINEL_KEY)) === identity, { what: 'the gate state compared with MySQL', timeoutMs: 30_000 });
    await waitFor(async () => (await readyz(api.opsUrl)).status === 200 || undefined, { what: 'the api ready', timeoutMs: 30_000 });
  }

  test('when Redis restarts from a snapshot taken before PATCHes, then the quantity, pause and end saved in MySQL are enforced, not the snapshot\'s', async () => {
    const api = await stack.spawnApi();
    await stack.spawnWorker();
    const lowered = uniqueEventId('lowered');
    const paused = uniqueEventId('paused');
    const raised = uniqueEventId('raised');
    const ended = uniqueEventId('ended');
    await createEvent(api.url, { id: lowered, totalQuantity: 10 });
    await createEvent(api.url, { id: paused, totalQuantity: 10 });
    await createEvent(api.url, { id: raised, totalQuantity: 2 });
    await createEvent(api.url, { id: ended, totalQuantity: 10, endsAt: new Date(Date.now() + 600_000).toISOString() });
    expect(statuses(await applyMany(api, lowered, 'a', 3))).toEqual({ 202: 3 });
    expect(statuses(await applyMany(api, paused, 'a', 2))).toEqual({ 202: 2 });
    expect(statuses(await applyMany(api, raised, 'a', 3))).toEqual({ 202: 2, '410 sold_out': 1 });
    expect(statuses(await applyMany(api, ended, 'a', 1))).toEqual({ 202: 1 });

    // The snapshot Redis comes back from: taken before the PATCHes, which it therefore loses.
    const redis = stack.redisClient();
    expect(await redis.save()).toBe('OK');
    const endsAt = new Date(Date.now() + 1_000);
    expect(await patch(api, lowered, { totalQuantity: 5 })).toMatchObject({ status: 200, body: { totalQuantity: 5, issued: 3 } });
    expect(await patch(api, paused, { paused: true })).toMatchObject({ status: 200, body: { status: 'paused' } });
    expect(await patch(api, raised, { totalQuantity: 4 })).toMatchObject({ status: 200, body: { totalQuantity: 4, status: 'open' } });
    expect(await patch(api, ended, { endsAt: endsAt.toISOString() })).toMatchObject({ status: 200, body: { endsAt: endsAt.toISOString() } });
    await stack.redis.kill();
    await stack.redis.start();
    await waitRestored(api);
    await waitFor(() => Date.now() > endsAt.getTime() + 100 || undefined, { what: 'the new end to pass' });

    const afterLowered = statuses(await applyMany(api, lowered, 'b', 10));
    const afterPaused = statuses(await applyMany(api, paused, 'b', 3));
    const afterRaised = statuses(await applyMany(api, raised, 'b', 4));
    const afterEnded = statuses(await applyMany(api, ended, 'b', 2));
    const reads = await Promise.all([lowered, paused, raised, ended].map(async (id) => (await request(`${api.url}/v1/events/${id}`)).body));
    const checks = Object.fromEntries(await Promise.all([lowered, paused, raised, ended].map(async (id) => [id, await checkHistory(id)] as const)));

    expect({ afterLowered, afterPaused, afterRaised, afterEnded }).toEqual({
      afterLowered: { 202: 2, '410 sold_out': 8 },
      afterPaused: { '409 event_paused': 3 },
      afterRaised: { 202: 2, '410 sold_out': 2 },
      afterEnded: { '409 event_not_open': 2 },
    });
    expect(reads).toMatchObject([
      { totalQuantity: 5, issued: 5, status: 'sold_out' }, { totalQuantity: 10, issued: 2, status: 'paused' },
      { totalQuantity: 4, issued: 4, status: 'sold_out' }, { endsAt: endsAt.toISOString(), issued: 1, status: 'closed' },
    ]);
    expect(checks).toEqual({
      [lowered]: { total: 5, rows: 5, distinctUsers: 5, distinctSequences: 5, minSequence: 1, maxSequence: 5, issuedButMissing: [] },
      [paused]: { total: 10, rows: 2, distinctUsers: 2, distinctSequences: 2, minSequence: 1, maxSequence: 2, issuedButMissing: [] },
      [raised]: { total: 4, rows: 4, distinctUsers: 4, distinctSequences: 4, minSequence: 1, maxSequence: 4, issuedButMissing: [] },
      [ended]: { total: 10, rows: 1, distinctUsers: 1, distinctSequences: 1, minSequence: 1, maxSequence: 1, issuedButMissing: [] },
    });
  }, 120_000);

  test('when GATE_MIN_REPLICAS asks for a replica that does not acknowledge, then a PATCH is answered 503 and neither the gate nor MySQL takes the change', async () => {
    // This Redis has no replica: no WAIT can be met. The gate's own answer for the same fault is 503, issuing nothing.
    const api = await stack.spawnApi({ GATE_MIN_REPLICAS: '1', GATE_REPLICA_TIMEOUT_MS: '50' });
    const admin = await stack.spawnApi();
    await stack.spawnWorker();
    const eventId = uniqueEventId('unacked');
    await createEvent(admin.url, { id: eventId, totalQuantity: 2 });
    expect(statuses(await applyMany(admin, eventId, 'a', 2))).toEqual({ 202: 2 });

    const raise = await patch(api, eventId, { totalQuantity: 4 });
    const pause = await patch(api, eventId, { paused: true });
    const read = await request(`${admin.url}/v1/events/${eventId}`);
    const [record] = await stack.query<{ total_quantity: number; paused: number }>('select total_quantity, paused from coupon_event where id = ?', [eventId]);
    // The gate (read through an api without GATE_MIN_REPLICAS) enforces what MySQL records: still sold out at 2.
    const later = statuses(await applyMany(admin, eventId, 'b', 2));
    const check = await checkHistory(eventId);

    expect([raise.status, raise.body.error, pause.status, pause.body.error]).toEqual([503, 'unavailable', 503, 'unavailable']);
    expect(read.body).toMatchObject({ totalQuantity: 2, status: 'sold_out' });
    expect({ total: Number(record?.total_quantity), paused: Number(record?.paused) }).toEqual({ total: 2, paused: 0 });
    expect(later).toEqual({ '410 sold_out': 2 });
    expect(check).toEqual({ total: 2, rows: 2, distinctUsers: 2, distinctSequences: 2, minSequence: 1, maxSequence: 2, issuedButMissing: [] });
  }, 90_000);

  test('when Redis is flushed after a sell-out, then a retry with the Idempotency-Key of a persisted coupon gets its first 202 again', async () => {
    const api = await stack.spawnApi();
    await stack.spawnWorker();
    const eventId = uniqueEventId('replay');
    await createEvent(api.url, { id: eventId, totalQuantity: 3 });
    const first = await Promise.all(['u1', 'u2', 'u3'].map((userId) => applyAs(api, eventId, userId, `key-${userId}`)));
    expect(first.map((answer) => answer.status)).toEqual([202, 202, 202]);
    expect(await applyAs(api, eventId, 'u4', 'key-u4')).toMatchObject({ status: 410 });
    const replayBefore = await applyAs(api, eventId, 'u1', 'key-u1');
    await waitFor(async () => (await countRows(stack.query, eventId)) >= 3 || undefined, { what: 'the three coupons in MySQL' });

    await stack.redisClient().flushall();
    await waitRestored(api);
    const replays = await Promise.all(['u1', 'u2', 'u3'].map((userId) => applyAs(api, eventId, userId, `key-${userId}`)));
    const newKey = await applyAs(api, eventId, 'u1', 'another-key');
    const stranger = await applyAs(api, eventId, 'u5', 'key-u5');
    const check = await checkHistory(eventId);

    expect(replayBefore).toMatchObject({ status: 202, body: { sequence: first[0]!.body.sequence } });
    expect(replays.map((answer) => [answer.status, answer.body.sequence ?? answer.body.error]))
      .toEqual(first.map((answer) => [202, answer.body.sequence]));
    expect(newKey).toMatchObject({ status: 409, body: { error: 'already_applied' } });
    expect(stranger).toMatchObject({ status: 410, body: { error: 'sold_out' } });
    expect(check).toEqual({ total: 3, rows: 3, distinctUsers: 3, distinctSequences: 3, minSequence: 1, maxSequence: 3, issuedButMissing: [] });
  }, 90_000);

  test('when Redis is flushed after an event was archived, then the event and its coupons are read as before the flush', async () => {
    const api = await stack.spawnApi();
    await stack.spawnWorker({ EVENT_RETENTION: '1s' });
    const eventId = uniqueEventId('archived');
    await createEvent(api.url, { id: eventId, totalQuantity: 5, endsAt: new Date(Date.now() + 2_000).toISOString() });
    expect(statuses(await applyMany(api, eventId, 'a', 2))).toEqual({ 202: 2 });
    await waitFor(async () => {
      const [row] = await stack.query<{ archived_at: Date | null }>('select archived_at from coupon_event where id = ?', [eventId]);
      return row?.archived_at ?? undefined;
    }, { what: 'the event archived', timeoutMs: 60_000, intervalMs: 250 });
    const reads = async (reader: ServiceProcess) => ({
      event: await request(`${reader.url}/v1/events/${eventId}`),
      coupon: await request(`${reader.url}/v1/events/${eventId}/coupons/a-0`),
      stranger: await request(`${reader.url}/v1/events/${eventId}/coupons/nobody`),
      apply: await applyAs(reader, eventId, 'late'),
    });
    const before = await reads(api);

    await stack.redisClient().flushall();
    await waitRestored(api);
    // An api started after the flush: nothing it answers comes from what it read before.
    const fresh = await stack.spawnApi();
    const after = await reads(fresh);
    const check = await checkHistory(eventId);

    expect(before).toMatchObject({
      event: { status: 200, body: { id: eventId, issued: 2, persisted: 2, status: 'closed' } },
      coupon: { status: 200, body: { userId: 'a-0', status: 'persisted' } },
      stranger: { status: 404 },
      apply: { status: 409, body: { error: 'event_not_open' } },
    });
    expect({ event: [after.event.status, after.event.body], coupon: [after.coupon.status, after.coupon.body], stranger: after.stranger.status, apply: [after.apply.status, after.apply.body.error] })
      .toEqual({ event: [200, before.event.body], coupon: [200, before.coupon.body], stranger: 404, apply: [409, 'event_not_open'] });
    expect(check).toEqual({ total: 5, rows: 2, distinctUsers: 2, distinctSequences: 2, minSequence: 1, maxSequence: 2, issuedButMissing: [] });
  }, 120_000);

  test('when an event\'s gate state alone is gone from a server that lost nothing else, then applies answer 503 until it is restored from MySQL, never 404, and holders keep their coupons', async () => {
    const api = await stack.spawnApi();
    await stack.spawnWorker();
    const eventId = uniqueEventId('lost-alone');
    await createEvent(api.url, { id: eventId, totalQuantity: 6 });
    const first = await applyMany(api, eventId, 'a', 3);
    expect(statuses(first)).toEqual({ 202: 3 });
    await waitFor(async () => (await countRows(stack.query, eventId)) >= 3 || undefined, { what: 'the three coupons in MySQL' });

    // As on a Cluster when the event's slot moves off a flushed shard before that shard's restore reached the
    // event: its keys are gone from a server whose marker says it lost nothing since it was checked.
    await stack.redisClient().del(...eventStateKeys(eventId));
    const lostAt = Date.now();
    const readDuring = await request(`${api.url}/v1/events/${eventId}`);
    const firstAfter = await applyAs(api, eventId, 'a-0');
    // A client asks again after a 503 (README), here every 200 ms for at most 10 s.
    const untilAnswered = async (userId: string): Promise<Answer> => {
      for (let attempt = 1; ; attempt += 1) {
        const answer = await applyAs(api, eventId, userId);
        if (answer.status !== 503 || attempt === 50) return answer;
        await sleep(200);
      }
    };
    const holders = await Promise.all(['a-0', 'a-1', 'a-2'].map(untilAnswered));
    const newcomers = await Promise.all(['b-0', 'b-1', 'b-2', 'b-3', 'b-4'].map(untilAnswered));
    const answeredAt = Date.now();
    const readAfter = await request(`${api.url}/v1/events/${eventId}`);
    const neverCreated = await applyAs(api, uniqueEventId('never-created'), 'c-0');
    const check = await checkHistory(eventId);

    expect(history.filter((answer) => answer.eventId === eventId && answer.status === 404)).toEqual([]);
    expect([readDuring.status, firstAfter.status]).toEqual([200, 503]);
    expect(holders.map((answer) => [answer.status, toldSequence(answer.status, answer.body)])).toEqual(first.map((answer) => [409, answer.body.sequence]));
    expect(statuses(newcomers)).toEqual({ 202: 3, '410 sold_out': 2 });
    expect(readAfter).toMatchObject({ status: 200, body: { id: eventId, totalQuantity: 6, issued: 6 } });
    expect(neverCreated).toMatchObject({ status: 404, body: { error: 'event_not_found' } });
    expect(check).toEqual({ total: 6, rows: 6, distinctUsers: 6, distinctSequences: 6, minSequence: 1, maxSequence: 6, issuedButMissing: [] });
    await recordFigures('state-lost-alone', {
      answers: statuses(history.filter((answer) => answer.eventId === eventId)), everyUserAnsweredAfterMs: answeredAt - lostAt,
    });
  }, 90_000);
});
