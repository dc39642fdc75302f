/**
 * Fault 4: PostgreSQL (pg-boss: retry queue, dead letters, reconcile schedule) stopped. The main path
 * (Redis outbox -> MySQL) does not need it and keeps persisting; a worker started during the outage starts
 * anyway. When PostgreSQL returns, the failure path of both workers comes back by itself.
 */
import { createEvent, uniqueEventId, waitFor } from '../support/harness.ts';
import { describeFault } from '../support/fault-stack.ts';
import { applyLoad, users } from '../support/load.ts';
import { checkPersisted, countRows, readyz, recordFigures, runDlq } from '../support/observe.ts';

const TOTAL = 500;

describeFault('PostgreSQL outage', { folder: 'postgres-outage' }, (stack) => {
  test('when PostgreSQL is stopped, then the main path keeps persisting, and the failure path resumes when it returns', async () => {
    const api = await stack.spawnApi();
    const first = await stack.spawnWorker({ LOG_LEVEL: 'info' });
    await waitFor(async () => (await readyz(first.url)).body.jobs === true || undefined, { what: 'the failure path of the first worker' });
    const eventId = uniqueEventId('pg');
    await createEvent(api.url, { id: eventId, totalQuantity: TOTAL });

    await stack.postgres.stop();
    const stoppedAt = Date.now();
    const early = await applyLoad({ urls: () => [api.url], eventId, users: users('a', 300), concurrency: 16 });
    await waitFor(async () => (await countRows(stack.query, eventId)) >= 300 || undefined, { what: '300 persisted without PostgreSQL' });
    // A worker can also start while PostgreSQL is down: pg-boss keeps connecting in the background.
    const second = await stack.spawnWorker({ LOG_LEVEL: 'info' });
    const secondReady = await readyz(second.url);
    const late = await applyLoad({ urls: () => [api.url], eventId, users: users('b', 200), concurrency: 16 });
    await waitFor(async () => (await countRows(stack.query, eventId)) >= TOTAL || undefined, { what: 'all persisted without PostgreSQL' });
    const persistedDuringOutage = await countRows(stack.query, eventId);
    const firstReadyDuring = await readyz(first.url);

    await stack.postgres.start();
    const outageMs = Date.now() - stoppedAt;
    const restartedAt = Date.now();
    await waitFor(async () => (await readyz(second.url)).body.jobs === true || undefined, { what: 'the failure path of the worker started during the outage' });
    const secondConnectedAfterMs = Date.now() - restartedAt;
    // The log line travels through a pipe and can arrive after /readyz has answered: wait for it, don't race it.
    await waitFor(() => second.output().includes('failure path ready'), { timeoutMs: 5_000, what: 'the failure path ready log line' });
    await second.stop('SIGTERM');

    // Only the failure path can close this gap: rows lost from MySQL after they were acked (say, a restore
    // from an older backup). The reconcile run finds them in Redis and re-enqueues them on the retry queue,
    // which the first worker (connected before the outage) must work again.
    await stack.query('delete from coupon where event_id = ? and sequence in (7, 77, 277)', [eventId]);
    await runDlq(stack.env(), 'reconcile');
    await waitFor(async () => (await countRows(stack.query, eventId)) >= TOTAL || undefined, { timeoutMs: 30_000, what: 'the gap re-persisted through pg-boss' });
    const gapClosedAfterMs = Date.now() - restartedAt;

    const issued = [...early, ...late].filter((result) => result.status === 202).map((result) => ({ userId: result.userId, sequence: result.body.sequence! }));
    expect(issued).toHaveLength(TOTAL);
    expect(persistedDuringOutage).toBe(TOTAL);
    expect(secondReady.status).toBe(200);
    expect(secondReady.body.jobs).toBe(false);
    expect(firstReadyDuring.status).toBe(200);
    expect(await checkPersisted(stack.query, eventId, issued)).toEqual({
      rows: TOTAL, distinctUsers: TOTAL, distinctSequences: TOTAL, minSequence: 1, maxSequence: TOTAL, issuedButMissing: [],
    });
    await recordFigures('postgres-outage', {
      outageSeconds: outageMs / 1000, issuedDuringOutage: TOTAL, persistedDuringOutage,
      workerStartedDuringOutageReady: secondReady.status === 200,
      failurePathReconnectedSecondsAfterReturn: secondConnectedAfterMs / 1000,
      gapOf3RowsClosedByReconcileSecondsAfterReturn: gapClosedAfterMs / 1000,
    });
  }, 120_000);
});
