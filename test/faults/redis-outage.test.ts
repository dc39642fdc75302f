/**
 * Fault 5: Redis stopped, then back (here without persistence, so it returns empty, as a replaced Redis would).
 * The api's gate client has no offline queue and a command timeout: apply answers 503 `unavailable` at once and
 * issues nothing; /readyz fails on both processes. When Redis is back both reconnect by themselves; the worker
 * rebuilds the gate state from MySQL, and issuing continues without a second coupon for anyone.
 */
import { apply as applyOnce, createEvent, uniqueEventId, waitFor } from '../support/harness.ts';
import { describeFault } from '../support/fault-stack.ts';
import { applyLoad, countBy, percentile, users } from '../support/load.ts';
import { checkPersisted, countRows, readyz, recordFigures } from '../support/observe.ts';

const TOTAL = 1_000;

describeFault('Redis outage', { folder: 'redis-outage' }, (stack) => {
  test('when Redis is stopped, then apply answers 503 within a second and /readyz fails, and both processes recover by themselves when it returns', async () => {
    const api = await stack.spawnApi();
    const worker = await stack.spawnWorker();
    const eventId = uniqueEventId('redis');
    await createEvent(api.url, { id: eventId, totalQuantity: TOTAL });
    const before = await applyLoad({ urls: () => [api.url], eventId, users: users('a', 200), concurrency: 16 });
    await waitFor(async () => (await countRows(stack.query, eventId)) >= 200 || undefined, { what: 'the first 200 persisted' });

    await stack.redis.stop();
    const stoppedAt = Date.now();
    // Three seconds of paced applies (20/s) against the dead Redis.
    const during = await applyLoad({ urls: () => [api.url], eventId, users: users('b', 60), concurrency: 4, ratePerSec: 20 });
    const apiReadyDuring = await readyz(api.opsUrl);
    const workerReadyDuring = await readyz(worker.url);

    await stack.redis.start();
    const outageMs = Date.now() - stoppedAt;
    const returnedAt = Date.now();
    await waitFor(async () => (await readyz(api.opsUrl)).status === 200 || undefined, { what: 'the api ready again' });
    const apiReadyAfterMs = Date.now() - returnedAt;
    await waitFor(async () => (await readyz(worker.url)).status === 200 || undefined, { what: 'the worker ready again' });
    const workerReadyAfterMs = Date.now() - returnedAt;
    // Until the worker has rebuilt the gate state, the event answers 503 and issues nothing.
    const probe = await waitFor(async () => {
      const response = await applyOnce(api.url, eventId, 'a-0');
      return response.status === 503 ? undefined : response;
    }, { what: 'the gate state rebuilt' });
    const issuingAgainAfterMs = Date.now() - returnedAt;
    const after = await applyLoad({ urls: () => [api.url], eventId, users: users('c', TOTAL), concurrency: 16 });

    expect(during.every((result) => result.status === 503 && result.body.error === 'unavailable')).toBe(true);
    expect(Math.max(...during.map((result) => result.latencyMs))).toBeLessThan(1_000);
    expect(apiReadyDuring.status).toBe(503);
    expect(workerReadyDuring.status).toBe(503);
    expect([api.child.exitCode, worker.child.exitCode]).toEqual([null, null]);
    // The user who got coupon 1 before the outage still holds it: already_applied, not a second one.
    expect(probe.status).toBe(409);
    const issuedAfter = after.filter((result) => result.status === 202);
    expect(issuedAfter).toHaveLength(TOTAL - 200);
    expect(Math.min(...issuedAfter.map((result) => result.body.sequence!))).toBe(201);

    await waitFor(async () => (await countRows(stack.query, eventId)) >= TOTAL || undefined, { what: 'all persisted' });
    const issued = [...before, ...issuedAfter].filter((result) => result.status === 202).map((result) => ({ userId: result.userId, sequence: result.body.sequence! }));
    expect(await checkPersisted(stack.query, eventId, issued)).toEqual({
      rows: TOTAL, distinctUsers: TOTAL, distinctSequences: TOTAL, minSequence: 1, maxSequence: TOTAL, issuedButMissing: [],
    });
    await recordFigures('redis-outage', {
      outageSeconds: outageMs / 1000, appliesDuringOutage: during.length, answersDuringOutage: countBy(during, (result) => result.status),
      latencyDuringOutageMs: { p50: percentile(during.map((r) => r.latencyMs), 50), p99: percentile(during.map((r) => r.latencyMs), 99), max: percentile(during.map((r) => r.latencyMs), 100) },
      apiReadyzDuring: apiReadyDuring.status, workerReadyzDuring: workerReadyDuring.status,
      apiReadyAfterReturnMs: apiReadyAfterMs, workerReadyAfterReturnMs: workerReadyAfterMs, issuingAgainAfterReturnMs: issuingAgainAfterMs,
      restartsNeeded: 0, rows: TOTAL,
    });
  }, 120_000);
});
