/**
 * Fault 6: what Redis keeps and what it loses.
 * - With the AOF on (appendfsync everysec, as the chart deploys it), a Redis killed with SIGKILL and started
 *   again replays its log: the issued counter, the user set and the outbox stream with its consumer group and
 *   pending entries are all back, and issuing continues exactly where it stopped.
 * - Flushed (or replaced by an empty Redis): nothing issues until the worker has rebuilt the event's state from
 *   MySQL (issued = highest persisted sequence, users from the rows). Coupons that were answered 202 but still
 *   waited in the outbox are lost with it: that loss is measured here and documented in docs/reliability.md.
 * - Flushed after a sell-out whose coupons were still in the outbox: those coupons are lost (the documented loss),
 *   and their stock is issued again; the apis' sold-out flags, set before the flush, do not refuse it.
 * - Back from an AOF written while a restore held the restore lock (a crash mid-restore, or a lost tail): the lock
 *   names the server it was taken on, so the new one does not wait out its minute before being checked.
 */
import { randomUUID } from 'node:crypto';
import { serverIdentity } from '../../src/redis/client.ts';
import { PERSIST_GROUP, STATE_CHECK_LOCK_KEY, eventKeys } from '../../src/redis/keys.ts';
import { apply, createEvent, uniqueEventId, waitFor } from '../support/harness.ts';
import { describeFault } from '../support/fault-stack.ts';
import { applyLoad, countBy, users } from '../support/load.ts';
import { checkPersisted, countRows, readyz, recordFigures } from '../support/observe.ts';
import { outboxState } from '../support/outbox.ts';

describeFault('Redis durability', { folder: 'redis-durability', redisAppendonly: true }, (stack) => {
  const gateState = async (eventId: string) => {
    const redis = stack.redisClient();
    const keys = eventKeys(eventId);
    try {
      const [issued, users_, outbox] = await Promise.all([redis.get(keys.issued), redis.hlen(keys.users), outboxState(redis, eventId)]);
      return { issued: Number(issued), users: users_, lastEntryId: outbox.lastEntryId, group: outbox.group ? PERSIST_GROUP : null };
    } finally {
      redis.disconnect();
    }
  };

  test('when Redis with its AOF on is killed and restarted, then counts, sets and streams survive and issuing continues correctly', async () => {
    const api = await stack.spawnApi();
    // A slow worker keeps most of the outbox pending or undelivered when Redis dies.
    await stack.spawnWorker({ PERSIST_RATE_PER_SEC: '100', PERSIST_BATCH_SIZE: '50', CLAIM_IDLE_MS: '1000' });
    const eventId = uniqueEventId('aof');
    const total = 600;
    await createEvent(api.url, { id: eventId, totalQuantity: total });
    const first = await applyLoad({ urls: () => [api.url], eventId, users: users('a', 400), concurrency: 16 });
    expect(first.every((result) => result.status === 202)).toBe(true);
    await waitFor(async () => (await countRows(stack.query, eventId)) > 0 || undefined, { what: 'the drain to begin' });
    const beforeCrash = await gateState(eventId);
    const persistedAtCrash = await countRows(stack.query, eventId);

    await stack.redis.kill();
    await stack.redis.start();
    const afterRestart = await gateState(eventId);
    await waitFor(async () => (await readyz(api.opsUrl)).status === 200 || undefined, { what: 'the api ready again' });

    const again = await apply(api.url, eventId, 'a-0');
    const second = await applyLoad({ urls: () => [api.url], eventId, users: users('b', 300), concurrency: 16 });
    const secondIssued = second.filter((result) => result.status === 202);
    await waitFor(async () => (await countRows(stack.query, eventId)) >= total || undefined, { what: 'all persisted', timeoutMs: 90_000 });

    expect(persistedAtCrash).toBeGreaterThan(0);
    expect(persistedAtCrash).toBeLessThan(400);
    expect(afterRestart).toEqual(beforeCrash);
    expect(afterRestart).toMatchObject({ issued: 400, users: 400, group: PERSIST_GROUP });
    expect(again.status).toBe(409);
    expect(secondIssued.map((result) => result.body.sequence).sort((a, b) => a! - b!)).toEqual(Array.from({ length: 200 }, (_, i) => 401 + i));
    expect(countBy(second, (result) => result.status)).toEqual({ 202: 200, 410: 100 });
    const issued = [...first, ...secondIssued].map((result) => ({ userId: result.userId, sequence: result.body.sequence! }));
    expect(await checkPersisted(stack.query, eventId, issued)).toEqual({
      rows: total, distinctUsers: total, distinctSequences: total, minSequence: 1, maxSequence: total, issuedButMissing: [],
    });
    await recordFigures('redis-aof-restart', {
      issuedBeforeCrash: 400, persistedAtCrash, outboxBacklogAtCrash: 400 - persistedAtCrash, stateBefore: beforeCrash,
      stateAfter: afterRestart, issuedAfterRestart: secondIssued.length, rows: total, lost: 0,
    });
  }, 120_000);

  test('when Redis is flushed, then nothing issues until the state is rebuilt from MySQL, and only coupons still in the outbox are lost', async () => {
    const api = await stack.spawnApi();
    const worker = await stack.spawnWorker();
    const eventId = uniqueEventId('flush');
    const total = 300;
    await createEvent(api.url, { id: eventId, totalQuantity: total });
    const persisted = await applyLoad({ urls: () => [api.url], eventId, users: users('a', 100), concurrency: 16 });
    await waitFor(async () => (await countRows(stack.query, eventId)) >= 100 || undefined, { what: 'the first 100 persisted' });
    // With no worker running, 50 more coupons are answered 202 but stay in the outbox: the ones a flush loses.
    await worker.stop('SIGTERM');
    const inOutbox = await applyLoad({ urls: () => [api.url], eventId, users: users('p', 50), concurrency: 16 });
    expect(inOutbox.every((result) => result.status === 202)).toBe(true);

    const redis = stack.redisClient();
    await redis.flushall();
    const whileMissing = await applyLoad({ urls: () => [api.url], eventId, users: users('q', 20), concurrency: 4 });
    const flushedAt = Date.now();
    await stack.spawnWorker();
    const rebuilt = await waitFor(async () => {
      const state = await gateState(eventId).catch(() => undefined);
      return state && state.group ? state : undefined;
    }, { what: 'the gate state rebuilt by the worker' });
    const rebuiltAfterMs = Date.now() - flushedAt;
    // The outbox went with the flush: nothing can persist those 50 any more.
    const [persistedOfThe50] = await stack.query<{ n: number }>("select count(*) as n from coupon where event_id = ? and user_id like 'p-%'", [eventId]);
    const lostCoupons = inOutbox.length - Number(persistedOfThe50?.n);

    const holder = await apply(api.url, eventId, 'a-0');
    const lostUser = await apply(api.url, eventId, 'p-0');
    const rest = await applyLoad({ urls: () => [api.url], eventId, users: users('r', 300), concurrency: 16 });
    await waitFor(async () => (await countRows(stack.query, eventId)) >= total || undefined, { what: 'all persisted' });

    expect(whileMissing.every((result) => result.status === 503 && result.body.error === 'unavailable')).toBe(true);
    expect(rebuilt).toMatchObject({ issued: 100, users: 100 });
    expect(holder.status).toBe(409);
    // The flush lost p-0's coupon; p-0 is a new applicant to the rebuilt gate.
    expect(lostUser.status).toBe(202);
    const issuedNow = [lostUser, ...rest].filter((result) => result.status === 202).length;
    expect(issuedNow).toBe(total - 100);
    const check = await checkPersisted(stack.query, eventId, [
      ...persisted.map((result) => ({ userId: result.userId, sequence: result.body.sequence! })),
    ]);
    expect(check).toMatchObject({ rows: total, distinctUsers: total, distinctSequences: total, minSequence: 1, maxSequence: total, issuedButMissing: [] });
    expect(lostCoupons).toBe(50);
    await recordFigures('redis-flush', {
      persistedBeforeFlush: 100, answered202StillInOutbox: 50, appliesWhileStateMissing: countBy(whileMissing, (result) => result.status),
      stateRebuiltAfterWorkerStartMs: rebuiltAfterMs, rebuiltState: rebuilt, lostCoupons, rows: check.rows, overIssued: check.rows - total,
    });
  }, 120_000);

  test('when Redis comes back from an AOF written while a restore held the restore lock, then the api issues again within seconds, not after the lock\'s minute', async () => {
    const api = await stack.spawnApi();
    await stack.spawnWorker();
    const eventId = uniqueEventId('lock');
    await createEvent(api.url, { id: eventId, totalQuantity: 10 });
    const before = await apply(api.url, eventId, 'a-0');
    await waitFor(async () => (await countRows(stack.query, eventId)) >= 1 || undefined, { what: 'the first coupon in MySQL' });

    // The lock as a process restoring this server takes it (60 s), in the AOF when the server dies; its holder dies
    // with it, or finishes on a server that is gone: nobody releases it on the server that comes back.
    const redis = stack.redisClient();
    const held = `${await serverIdentity(redis)} ${randomUUID()}`;
    expect(await redis.set(STATE_CHECK_LOCK_KEY, held, 'PX', 60_000)).toBe('OK');
    redis.disconnect();
    await stack.redis.kill();
    await stack.redis.start();
    const restartedAt = Date.now();
    const after = await waitFor(async () => {
      const answer = await apply(api.url, eventId, 'b-0');
      return answer.status === 503 ? undefined : answer;
    }, { what: 'a coupon issued after the restart', timeoutMs: 20_000, intervalMs: 250 });
    const issuedAfterMs = Date.now() - restartedAt;
    await waitFor(async () => (await countRows(stack.query, eventId)) >= 2 || undefined, { what: 'both coupons in MySQL' });

    expect([before.status, before.body.sequence, after.status, after.body.sequence]).toEqual([202, 1, 202, 2]);
    expect(await checkPersisted(stack.query, eventId, [{ userId: 'a-0', sequence: before.body.sequence! }, { userId: 'b-0', sequence: after.body.sequence! }]))
      .toEqual({ rows: 2, distinctUsers: 2, distinctSequences: 2, minSequence: 1, maxSequence: 2, issuedButMissing: [] });
    await recordFigures('redis-restart-with-a-held-lock', { lockTtlMs: 60_000, issuedAfterMs });
  }, 90_000);

  test('when Redis is flushed after a sell-out whose coupons were not persisted yet, then the stock that came back is issued, not refused by the api\'s sold-out flag', async () => {
    const api = await stack.spawnApi();
    const other = await stack.spawnApi();
    const eventId = uniqueEventId('flag');
    await createEvent(api.url, { id: eventId, totalQuantity: 5 });
    // No worker: the 5 coupons stay in the outbox, and the flush loses them.
    const sold = await applyLoad({ urls: () => [api.url], eventId, users: users('a', 5), concurrency: 5 });
    // Both apis flag the event sold out.
    const soldOut = [await apply(api.url, eventId, 'x-0'), await apply(other.url, eventId, 'x-1')];

    await stack.redisClient().flushall();
    const whileMissing = await apply(api.url, eventId, 'g-0');
    await stack.spawnWorker();
    await waitFor(async () => {
      const state = await gateState(eventId).catch(() => undefined);
      return state && state.group ? state : undefined;
    }, { what: 'the gate state rebuilt by the worker' });
    // Within the flags' 5 s (SOLD_OUT_CACHE_MS), on the api that was not asked while the state was missing: the
    // restore tells it to drop its flag.
    const after = await applyLoad({ urls: () => [other.url], eventId, users: users('b', 6), concurrency: 6 });
    const issued = after.filter((result) => result.status === 202).map((result) => ({ userId: result.userId, sequence: result.body.sequence! }));
    await waitFor(async () => (await countRows(stack.query, eventId)) >= issued.length || undefined, { what: 'the new coupons in MySQL' });

    expect(countBy(sold, (result) => result.status)).toEqual({ 202: 5 });
    expect(soldOut.map((answer) => answer.status)).toEqual([410, 410]);
    expect(whileMissing).toMatchObject({ status: 503, body: { error: 'unavailable' } });
    expect(countBy(after, (result) => result.status)).toEqual({ 202: 5, 410: 1 });
    expect(await checkPersisted(stack.query, eventId, issued)).toEqual({
      rows: 5, distinctUsers: 5, distinctSequences: 5, minSequence: 1, maxSequence: 5, issuedButMissing: [],
    });
  }, 90_000);
});
