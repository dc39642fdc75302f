import type { LocalServer } from '../../scripts/local-servers/index.ts';
import {
  type ServiceProcess, apply, closePool, createEvent, query, spawnApi, spawnWorker, startOwnRedis, uniqueEventId, waitForPersisted,
} from '../support/harness.ts';
import { scrapeMetric } from '../support/observe.ts';

/**
 * The most rows whose MySQL `created_at` falls in any one-second window [t, t + 1 s), at millisecond precision:
 * a sliding window, so a burst straddling two calendar seconds is counted whole.
 */
function peakRowsInAnySecond(createdAtMs: readonly number[]): { rows: number; startMs: number } {
  const times = [...createdAtMs].sort((a, b) => a - b);
  let peak = { rows: 0, startMs: times[0] ?? 0 };
  let last = 0;
  for (let first = 0; first < times.length; first++) {
    while (last < times.length && times[last]! < times[first]! + 1_000) last++;
    if (last - first > peak.rows) peak = { rows: last - first, startMs: times[first]! };
  }
  return peak;
}

/** What each insert wrote at one instant: the rows sharing a `created_at` (one statement's timestamp). */
function largestInsert(createdAtMs: readonly number[]): number {
  const perInstant = new Map<number, number>();
  for (const ms of createdAtMs) perInstant.set(ms, (perInstant.get(ms) ?? 0) + 1);
  return Math.max(...perInstant.values());
}

const CASES = [
  { rate: 100, batchSize: 100, total: 600, what: 'the default batch size at a cap of 100/s' },
  { rate: 200, batchSize: 10, total: 1_000, what: 'batches of 10 at a cap of 200/s' },
  { rate: 20, batchSize: 100, total: 100, what: 'a batch size above the cap (100 at 20/s)' },
];

describe('the global write cap', () => {
  const processes: ServiceProcess[] = [];
  let redis: LocalServer;
  let api: ServiceProcess;
  // A Redis of its own: the workers' counters then count this test's rows only.
  beforeAll(async () => {
    redis = await startOwnRedis('rate');
    api = await spawnApi({ REDIS_URL: redis.url });
  });
  afterAll(async () => {
    await Promise.all([api, ...processes].map((process) => process?.stop()));
    await redis?.stop();
    await closePool();
  });

  test.each(CASES)('when two workers drain a backlog with $what, then no one-second window of MySQL rows holds more than the cap plus 10%', async ({ rate, batchSize, total }) => {
    // Only this case's workers may drain this Redis.
    await Promise.all(processes.splice(0).map((process) => process.stop()));
    const eventId = uniqueEventId('rate');
    await createEvent(api.url, { id: eventId, totalQuantity: total });
    for (let start = 0; start < total; start += 200) {
      await Promise.all(Array.from({ length: Math.min(200, total - start) }, (_, i) => apply(api.url, eventId, `user-${start + i}`)));
    }

    const env = { REDIS_URL: redis.url, PERSIST_RATE_PER_SEC: String(rate), PERSIST_BATCH_SIZE: String(batchSize) };
    const workers = await Promise.all([spawnWorker(env), spawnWorker(env)]);
    processes.push(...workers);
    await waitForPersisted(eventId, total, 60_000 + (total / rate) * 2_000);

    const rows = await query<{ created_at: Date }>('select created_at from coupon where event_id = ?', [eventId]);
    const createdAtMs = rows.map((row) => row.created_at.getTime());
    const peak = peakRowsInAnySecond(createdAtMs);
    const spanMs = Math.max(...createdAtMs) - Math.min(...createdAtMs);
    console.log(`rate-limit (cap ${rate}/s, PERSIST_BATCH_SIZE ${batchSize}, 2 workers): peak ${peak.rows} rows in a sliding second `
      + `(from ${new Date(peak.startMs).toISOString()}), largest insert ${largestInsert(createdAtMs)} rows, first to last row ${spanMs} ms`);

    expect(peak.rows).toBeLessThanOrEqual(Math.floor(rate * 1.1));
    // At the cap, these rows cannot be written in much less than total / rate seconds, however many workers share it.
    expect(spanMs).toBeGreaterThanOrEqual(((total - rate / 10) / rate) * 1_000 * 0.9);
    // Both workers took part: the cap is shared, not per replica.
    const [first, second] = await Promise.all(workers.map((worker) => scrapeMetric(worker.url, 'coupon_persisted_total')));
    expect(first).toBeGreaterThan(0);
    expect(second).toBeGreaterThan(0);
    expect(first! + second!).toBe(total);
  }, 180_000);
});
