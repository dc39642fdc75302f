/**
 * Fault 1: workers killed with SIGKILL mid-batch, again and again, while they drain the outbox. Entries a
 * killed worker held pending are taken over by XAUTOCLAIM; the multi-row INSERT IGNORE makes a batch that is
 * written twice harmless. Every issued coupon must end as exactly one row.
 */
import { hostname } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { PERSIST_GROUP, eventKeys } from '../../src/redis/keys.ts';
import { type ServiceProcess, createEvent, uniqueEventId, waitFor } from '../support/harness.ts';
import { describeFault } from '../support/fault-stack.ts';
import { applyLoad, users } from '../support/load.ts';
import { checkPersisted, countRows, recordFigures } from '../support/observe.ts';

const TOTAL = 3_000;
const WORKER_ENV = { PERSIST_RATE_PER_SEC: '300', PERSIST_BATCH_SIZE: '50', CLAIM_IDLE_MS: '300' };

describeFault('worker SIGKILL mid-batch', { folder: 'worker-sigkill' }, (stack) => {
  test('when workers are killed with SIGKILL again and again during a drain, then every issued coupon is persisted exactly once', async () => {
    const api = await stack.spawnApi();
    const eventId = uniqueEventId('kill');
    await createEvent(api.url, { id: eventId, totalQuantity: TOTAL });
    const results = await applyLoad({ urls: () => [api.url], eventId, users: users('u', TOTAL), concurrency: 32 });
    const issued = results.filter((result) => result.status === 202).map((result) => ({ userId: result.userId, sequence: result.body.sequence! }));
    expect(issued).toHaveLength(TOTAL);

    // Two workers drain at 300 rows/s together; every kill takes the older one down while it holds a batch.
    const outbox = eventKeys(eventId).outbox;
    const redis = stack.redisClient();
    const heldBy = async (worker: ServiceProcess): Promise<number> => {
      const consumer = `${hostname()}-${worker.child.pid}`;
      const summary = (await redis.xpending(outbox, PERSIST_GROUP)) as [number, string, string, Array<[string, string]> | null];
      return Number(summary[3]?.find(([name]) => name === consumer)?.[1] ?? 0);
    };
    const workers = [await stack.spawnWorker(WORKER_ENV), await stack.spawnWorker(WORKER_ENV)];
    const kills: Array<{ persistedBefore: number; heldByVictim: number }> = [];
    const started = Date.now();
    while ((await countRows(stack.query, eventId)) < TOTAL * 0.85 && kills.length < 12) {
      const victim = workers.shift()!;
      // Kill it only while it holds a batch it has not acked yet: that is "mid-batch".
      const held = await waitFor(async () => (await heldBy(victim)) || undefined, { timeoutMs: 10_000, intervalMs: 20, what: 'the victim to hold a batch' })
        .catch(() => 0);
      const persistedBefore = await countRows(stack.query, eventId);
      await victim.stop('SIGKILL');
      kills.push({ persistedBefore, heldByVictim: held });
      workers.push(await stack.spawnWorker(WORKER_ENV));
      await sleep(300);
    }
    await waitFor(async () => (await countRows(stack.query, eventId)) >= TOTAL || undefined, { timeoutMs: 60_000, what: 'the drain to finish' });
    await waitFor(async () => ((await redis.xpending(outbox, PERSIST_GROUP)) as [number])[0] === 0 || undefined, { what: 'every entry acked' });
    const drainSeconds = (Date.now() - started) / 1000;

    const check = await checkPersisted(stack.query, eventId, issued);
    expect(kills.length).toBeGreaterThanOrEqual(3);
    expect(kills.filter((kill) => kill.heldByVictim > 0).length).toBeGreaterThanOrEqual(3);
    expect(check).toEqual({
      rows: TOTAL, distinctUsers: TOTAL, distinctSequences: TOTAL, minSequence: 1, maxSequence: TOTAL, issuedButMissing: [],
    });
    await recordFigures('worker-sigkill', {
      issued: TOTAL, kills: kills.length, entriesHeldByKilledWorkers: kills.reduce((sum, kill) => sum + kill.heldByVictim, 0),
      rows: check.rows, duplicates: check.rows - check.distinctUsers, missing: check.issuedButMissing.length, drainSeconds,
      rateCapPerSec: Number(WORKER_ENV.PERSIST_RATE_PER_SEC),
    });
  }, 120_000);
});
