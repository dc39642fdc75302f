/**
 * Fault 2: one of three api processes is killed with SIGKILL in the middle of a burst; clients whose request
 * died with it retry on the surviving processes. The gate lives in Redis, so a reply lost with the process
 * never turns into a second coupon: the retry answers already_applied.
 */
import { createEvent, uniqueEventId, waitFor } from '../support/harness.ts';
import { describeFault } from '../support/fault-stack.ts';
import { type ApplyResult, applyLoad, countBy, users } from '../support/load.ts';
import { checkPersisted, countRows, recordFigures } from '../support/observe.ts';

const TOTAL = 500;
const USERS = 1_500;

describeFault('api SIGKILL mid-burst', { folder: 'api-sigkill' }, (stack) => {
  test('when an api process is killed with SIGKILL mid-burst and clients retry on the others, then never more than N coupons and never two per user', async () => {
    const apis = await Promise.all([stack.spawnApi(), stack.spawnApi(), stack.spawnApi()]);
    await stack.spawnWorker();
    const eventId = uniqueEventId('apikill');
    await createEvent(apis[0]!.url, { id: eventId, totalQuantity: TOTAL });

    const [victim] = apis;
    let killedAt = -1;
    const results = await applyLoad({
      urls: () => apis.map((api) => api.url), eventId, users: users('u', USERS), concurrency: 48, maxAttempts: 6,
      onResult: (_, done) => {
        if (done === 200 && killedAt < 0) {
          killedAt = done;
          victim!.child.kill('SIGKILL');
        }
      },
    });
    expect((await victim!.exited).signal).toBe('SIGKILL');

    const byStatus = countBy(results, (result) => result.status);
    const issued = results.filter((result) => result.status === 202).map((result) => ({ userId: result.userId, sequence: result.body.sequence! }));
    const retried = results.filter((result) => result.networkErrors.length > 0);
    // A retry after a lost reply finds the coupon the dead process issued: already_applied, not a second one.
    const lostReplies = retried.filter((result) => result.status === 409 && result.body.error === 'already_applied');
    expect(results.every((result: ApplyResult) => [202, 409, 410].includes(result.status))).toBe(true);
    expect(issued.length).toBeLessThanOrEqual(TOTAL);
    expect(new Set(issued.map((coupon) => coupon.sequence)).size).toBe(issued.length);
    expect(retried.length).toBeGreaterThan(0);

    await waitFor(async () => (await countRows(stack.query, eventId)) >= TOTAL || undefined, { what: 'every coupon persisted' });
    const check = await checkPersisted(stack.query, eventId, issued);
    // Demand is three times the quantity, so all N are issued: those the clients saw plus those whose reply was lost.
    expect(check).toEqual({
      rows: TOTAL, distinctUsers: TOTAL, distinctSequences: TOTAL, minSequence: 1, maxSequence: TOTAL, issuedButMissing: [],
    });
    expect(issued.length + lostReplies.length).toBeLessThanOrEqual(TOTAL);
    await recordFigures('api-sigkill', {
      apiProcesses: apis.length, users: USERS, quantity: TOTAL, killedAfterAnswers: killedAt, answers: byStatus,
      retriedRequests: retried.length, networkErrors: countBy(retried.flatMap((result) => result.networkErrors), (code) => code), repliesLostWithTheProcess: lostReplies.length, rows: check.rows,
      duplicates: check.rows - check.distinctUsers, issuedButMissing: check.issuedButMissing.length,
    });
  }, 120_000);
});
