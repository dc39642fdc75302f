/**
 * Fault 7: SIGTERM under load. The api turns /readyz off, answers every request already in flight and then
 * closes; the worker finishes and acks the batch in hand, leaves the consumer group and exits 0. Clients see no
 * error except connections refused once the listener is gone, which they retry elsewhere.
 */
import { hostname } from 'node:os';
import { PERSIST_GROUP, eventKeys } from '../../src/redis/keys.ts';
import { createEvent, uniqueEventId, waitFor } from '../support/harness.ts';
import { describeFault } from '../support/fault-stack.ts';
import { applyLoad, countBy, users } from '../support/load.ts';
import { checkPersisted, countRows, readyz, recordFigures } from '../support/observe.ts';

const TOTAL = 2_000;

describeFault('SIGTERM during load', { folder: 'sigterm' }, (stack) => {
  test('when the api and the worker get SIGTERM under load, then in-flight requests are answered, the batch in hand is persisted, and nothing is lost', async () => {
    const apis = [await stack.spawnApi({ SHUTDOWN_DRAIN_MS: '500' }), await stack.spawnApi()];
    // A slow worker: it always holds a batch that waits for its rate slot.
    const worker = await stack.spawnWorker({ PERSIST_RATE_PER_SEC: '200', PERSIST_BATCH_SIZE: '100', CLAIM_IDLE_MS: '60000' });
    const eventId = uniqueEventId('term');
    await createEvent(apis[0]!.url, { id: eventId, totalQuantity: TOTAL });
    const outbox = eventKeys(eventId).outbox;
    const redis = stack.redisClient();
    const consumer = `${hostname()}-${worker.child.pid}`;
    const heldByWorker = async () => {
      const consumers = (await redis.xinfo('CONSUMERS', outbox, PERSIST_GROUP).catch(() => [])) as unknown[][];
      const entry = consumers.find((fields) => fields[fields.indexOf('name') + 1] === consumer);
      return entry ? Number(entry[entry.indexOf('pending') + 1]) : 0;
    };

    const [draining] = apis;
    let terminated: Promise<unknown> | undefined;
    let workerHeldAtSigterm = 0;
    let readinessWhileDraining = 0;
    // The clients stand behind a load balancer: it sends to both apis until the draining one fails /readyz
    // (SHUTDOWN_DRAIN_MS gives it 500 ms to notice), then only to the other.
    let outOfRotation = false;
    const results = await applyLoad({
      urls: () => (outOfRotation ? [apis[1]!.url] : apis.map((api) => api.url)), eventId, users: users('u', TOTAL),
      concurrency: 32, maxAttempts: 6,
      onResult: (_, done) => {
        if (done !== 600 || terminated) return;
        terminated = (async () => {
          draining!.child.kill('SIGTERM');
          readinessWhileDraining = (await waitFor(async () => {
            const status = (await readyz(draining!.opsUrl)).status;
            return status === 200 ? undefined : status;
          }, { intervalMs: 20, what: 'the draining api to fail /readyz' }));
          outOfRotation = true;
        })();
      },
    });
    await terminated;
    // The worker gets its SIGTERM while it holds a batch it has read but not yet written (it waits for its slot).
    workerHeldAtSigterm = await waitFor(async () => (await countRows(stack.query, eventId)) > 0 && (await heldByWorker()) || undefined,
      { intervalMs: 10, what: 'the worker to hold a batch' });
    worker.child.kill('SIGTERM');
    const apiExit = await draining!.exited;
    const workerExit = await worker.exited;

    // Every client got an answer; the only errors on the way (if any) were refused connections, retried on the other api.
    const networkErrors = results.flatMap((result) => result.networkErrors);
    expect(results.every((result) => result.status === 202)).toBe(true);
    expect(networkErrors.filter((code) => code !== 'ECONNREFUSED')).toEqual([]);
    expect(readinessWhileDraining).toBe(503);
    expect(apiExit).toEqual({ code: 0, signal: null });
    expect(workerExit).toEqual({ code: 0, signal: null });
    // The worker acked what it held and left the group: nothing waits for XAUTOCLAIM (idle 60 s here).
    expect(await heldByWorker()).toBe(0);
    const persistedByTheStoppedWorker = await countRows(stack.query, eventId);
    expect(persistedByTheStoppedWorker).toBeGreaterThanOrEqual(workerHeldAtSigterm);

    await stack.spawnWorker({ PERSIST_RATE_PER_SEC: '100000', CLAIM_IDLE_MS: '60000' });
    await waitFor(async () => (await countRows(stack.query, eventId)) >= TOTAL || undefined, { what: 'the rest drained' });
    const issued = results.map((result) => ({ userId: result.userId, sequence: result.body.sequence! }));
    const check = await checkPersisted(stack.query, eventId, issued);
    expect(check).toEqual({
      rows: TOTAL, distinctUsers: TOTAL, distinctSequences: TOTAL, minSequence: 1, maxSequence: TOTAL, issuedButMissing: [],
    });
    await recordFigures('sigterm', {
      requests: TOTAL, sigtermAfterAnswers: 600, answers: countBy(results, (result) => result.status),
      networkErrors: countBy(networkErrors, (code) => code), readyzWhileDraining: readinessWhileDraining,
      apiExitCode: apiExit.code, workerExitCode: workerExit.code, workerHeldAtSigterm, persistedByTheStoppedWorker,
      rows: check.rows, missing: check.issuedButMissing.length,
    });
  }, 120_000);
});
