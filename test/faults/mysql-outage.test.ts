/**
 * Fault 3: MySQL stopped for about 20 s while the worker drains a backlog, under steady apply traffic.
 * - apply never touches MySQL: it keeps answering (p99 measured before, during and after);
 * - the worker leaves failed entries pending and backs off (100 ms doubling to 5 s) instead of spinning;
 * - entries delivered more than MAX_DELIVERIES times move to the pg-boss retry queue, whose jobs, failing
 *   RETRY_LIMIT times, land in the dead-letter queue;
 * - once MySQL is back everything drains; the operator lists and redrives the dead-letter queue
 *   (`npm run dlq -- list|redrive`), and every issued coupon ends as exactly one row.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { cpuTimeMs } from '../../scripts/services.ts';
import { createEvent, uniqueEventId, waitFor } from '../support/harness.ts';
import { describeFault } from '../support/fault-stack.ts';
import { type ApplyResult, applyLoad, countBy, percentile, users } from '../support/load.ts';
import { checkPersisted, countRows, readyz, recordFigures, runDlq, scrapeMetric } from '../support/observe.ts';

const OUTAGE_MS = 20_000;
const WORKER_ENV = {
  PERSIST_RATE_PER_SEC: '300', PERSIST_BATCH_SIZE: '100', CLAIM_IDLE_MS: '1000', MAX_DELIVERIES: '2',
  RETRY_LIMIT: '1', RETRY_DELAY_SEC: '1',
};

describeFault('MySQL outage', { folder: 'mysql-outage' }, (stack) => {
  test('when MySQL is stopped for 20 s during a drain, then apply keeps answering, the worker backs off, the failure path holds the rest, and all is persisted once MySQL returns', async () => {
    const api = await stack.spawnApi();
    const worker = await stack.spawnWorker(WORKER_ENV);
    const eventId = uniqueEventId('mysql');
    await createEvent(api.url, { id: eventId, totalQuantity: 100_000 });

    // A burst builds the backlog to drain; then steady traffic (paced, 100 applies/s) runs through the whole outage.
    const burst = await applyLoad({ urls: () => [api.url], eventId, users: users('burst', 1_500), concurrency: 16 });
    expect(burst.every((result) => result.status === 202)).toBe(true);
    const window = { stoppedMs: Number.POSITIVE_INFINITY, startedMs: Number.POSITIVE_INFINITY };
    const loadStarted = performance.now();
    let steadyAnswers = 0;
    const steady = applyLoad({
      urls: () => [api.url], eventId, users: users('steady', 3_300), concurrency: 8, ratePerSec: 100,
      onResult: (_, done) => { steadyAnswers = done; },
    });
    await waitFor(() => steadyAnswers >= 300 || undefined, { what: '3 s of steady traffic before the outage' });

    const failuresBefore = await scrapeMetric(worker.url, 'coupon_persist_failures_total');
    const cpuBefore = cpuTimeMs(worker.child.pid!);
    const persistedAtStop = await countRows(stack.query, eventId);
    const issuedAtStop = burst.length + steadyAnswers;
    window.stoppedMs = performance.now() - loadStarted;
    await stack.mysql.stop();
    const stoppedAt = Date.now();

    // During the outage: the worker stays ready (it rides the outage out), the operator sees the dead letters.
    let workerReadyDuring: { status: number; body: Record<string, unknown> } | undefined;
    let deadDuring: Record<string, unknown> = {};
    await waitFor(async () => {
      workerReadyDuring ??= Date.now() - stoppedAt > 5_000 ? await readyz(worker.url) : undefined;
      if (Date.now() - stoppedAt < OUTAGE_MS - 2_000) return undefined;
      deadDuring = await runDlq(stack.env(), 'list');
      return (deadDuring.jobs as unknown[]).length > 0 && Date.now() - stoppedAt >= OUTAGE_MS ? true : undefined;
    }, { timeoutMs: OUTAGE_MS + 30_000, intervalMs: 250, what: 'a job in the dead-letter queue' });
    const outageMs = Date.now() - stoppedAt;
    const failuresDuring = (await scrapeMetric(worker.url, 'coupon_persist_failures_total')) - failuresBefore;
    const cpuDuringMs = cpuTimeMs(worker.child.pid!) - cpuBefore;
    const movedToRetry = await scrapeMetric(worker.url, 'coupon_moved_to_retry_total');

    await stack.mysql.start();
    window.startedMs = performance.now() - loadStarted;
    const restartedAt = Date.now();
    const steadyResults = await steady;

    // The operator redrives the dead-letter queue until it stays empty (a retry that was under way when MySQL
    // came back may still land there); the running worker persists what comes back.
    const deadJobs = deadDuring.jobs as Array<{ coupons: number; lastError: string | null }>;
    const deadAfter = (await runDlq(stack.env(), 'list')).jobs as unknown[];
    const issued = [...burst, ...steadyResults].filter((result) => result.status === 202)
      .map((result) => ({ userId: result.userId, sequence: result.body.sequence! }));
    let redriven = 0;
    await waitFor(async () => {
      if ((await countRows(stack.query, eventId)) >= issued.length) return true;
      redriven += (await runDlq(stack.env(), 'redrive')).redriven as number;
      return undefined;
    }, { timeoutMs: 60_000, intervalMs: 1_000, what: 'everything persisted' });
    const drainedAfterMs = Date.now() - restartedAt;
    expect(redriven).toBeGreaterThanOrEqual(deadAfter.length);
    expect((await runDlq(stack.env(), 'list')).jobs).toEqual([]);

    // What held: apply never failed; the backoff kept attempts sparse; the failure path carried some entries.
    const phase = (result: ApplyResult) => (result.startedMs < window.stoppedMs ? 'before' : result.startedMs < window.startedMs ? 'during' : 'after');
    const latencies = { before: [] as number[], during: [] as number[], after: [] as number[] };
    for (const result of steadyResults) latencies[phase(result)].push(result.latencyMs);
    expect(steadyResults.every((result) => result.status === 202)).toBe(true);
    expect(latencies.during.length).toBeGreaterThan(1_000);
    expect(workerReadyDuring?.status).toBe(200);
    expect(workerReadyDuring?.body.mysql).toBe(false);
    // Backing off, not spinning: well under one failed insert per 100 ms over the outage.
    expect(failuresDuring).toBeLessThan(outageMs / 100 / 2);
    expect(movedToRetry).toBeGreaterThan(0);
    expect(deadJobs.length).toBeGreaterThan(0);
    const check = await checkPersisted(stack.query, eventId, issued);
    expect(check).toEqual({
      rows: issued.length, distinctUsers: issued.length, distinctSequences: issued.length, minSequence: 1,
      maxSequence: issued.length, issuedButMissing: [],
    });

    await recordFigures('mysql-outage', {
      outageSeconds: outageMs / 1000,
      applies: { before: latencies.before.length, during: latencies.during.length, after: latencies.after.length },
      answers: countBy(steadyResults, (result) => result.status),
      p99Ms: { before: percentile(latencies.before, 99), during: percentile(latencies.during, 99), after: percentile(latencies.after, 99) },
      p50Ms: { before: percentile(latencies.before, 50), during: percentile(latencies.during, 50), after: percentile(latencies.after, 50) },
      issuedAtStop, persistedAtStop, backlogAtStop: issuedAtStop - persistedAtStop,
      failedInsertsDuringOutage: failuresDuring, failedInsertsPerSecond: Math.round((failuresDuring / (outageMs / 1000)) * 100) / 100,
      workerCpuDuringOutageMs: Math.round(cpuDuringMs), workerCpuShareOfOneCore: Math.round((cpuDuringMs / outageMs) * 1000) / 1000,
      movedToRetryEntries: movedToRetry, deadLetterJobs: deadAfter.length,
      deadLetterCoupons: deadJobs.reduce((sum, job) => sum + job.coupons, 0), deadLetterLastError: deadJobs[0]?.lastError,
      redrivenJobs: redriven, drainedSecondsAfterMysqlReturned: drainedAfterMs / 1000, rows: check.rows, issued: issued.length,
    });
  }, 150_000);
});
