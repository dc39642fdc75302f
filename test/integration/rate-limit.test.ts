import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type LocalServer, startRedis } from '../../scripts/local-servers/index.ts';
import {
  type ServiceProcess, apply, closePool, createEvent, query, spawnApi, spawnWorker, uniqueEventId, waitForPersisted,
} from '../support/harness.ts';

const RATE = 200;

async function persistedBy(worker: ServiceProcess): Promise<number> {
  const metrics = await fetch(`${worker.url}/metrics`).then((response) => response.text());
  return Number(/^coupon_persisted_total\{[^}]*\} (\d+)/m.exec(metrics)?.[1] ?? 0);
}

describe('the global write cap', () => {
  const processes: ServiceProcess[] = [];
  let redis: LocalServer;
  // A Redis of its own: the workers' counters then count this test's rows only.
  beforeAll(async () => {
    redis = await startRedis({ dir: join(await mkdtemp(join(tmpdir(), 'coupon-rate-')), 'redis') });
  });
  afterAll(async () => {
    await Promise.all(processes.map((process) => process.stop()));
    await redis?.stop();
    await closePool();
  });

  test(`when two workers drain a backlog with PERSIST_RATE_PER_SEC=${RATE}, then MySQL never gets more than the cap plus 10% in any second`, async () => {
    const api = await spawnApi({ REDIS_URL: redis.url });
    processes.push(api);
    const eventId = uniqueEventId('rate');
    const total = 1_000;
    await createEvent(api.url, { id: eventId, totalQuantity: total });
    for (let start = 0; start < total; start += 200) {
      await Promise.all(Array.from({ length: 200 }, (_, i) => apply(api.url, eventId, `user-${start + i}`)));
    }

    const env = { REDIS_URL: redis.url, PERSIST_RATE_PER_SEC: String(RATE), PERSIST_BATCH_SIZE: '10' };
    const workers = await Promise.all([spawnWorker(env), spawnWorker(env)]);
    processes.push(...workers);
    await waitForPersisted(eventId, total, 60_000);

    const perSecond = await query<{ second: string; n: number }>(
      `select date_format(created_at, '%Y-%m-%d %H:%i:%s') as second, count(*) as n
         from coupon where event_id = ? group by second order by second`, [eventId]);
    const counts = perSecond.map((row) => Number(row.n));
    const [span] = await query<{ ms: number }>(
      'select timestampdiff(microsecond, min(created_at), max(created_at)) / 1000 as ms from coupon where event_id = ?', [eventId]);
    console.log(`rate-limit: rows per second ${JSON.stringify(counts)}, first to last row ${Math.round(Number(span?.ms))} ms`);

    expect(Math.max(...counts)).toBeLessThanOrEqual(RATE * 1.1);
    // 1,000 rows at 200/s cannot be written in much less than 5 s, however many workers share the cap.
    expect(Number(span?.ms)).toBeGreaterThanOrEqual(((total - 10) / RATE) * 1000 * 0.9);
    // Both workers took part: the cap is shared, not per replica.
    const [first, second] = await Promise.all(workers.map(persistedBy));
    expect(first).toBeGreaterThan(0);
    expect(second).toBeGreaterThan(0);
    expect(first! + second!).toBe(total);
  }, 120_000);

  test('when the batch size is larger than the cap, then a batch is cut to one second of the cap', async () => {
    // Only this test's worker may drain this Redis.
    await Promise.all(processes.splice(0).map((process) => process.stop()));
    const api = await spawnApi({ REDIS_URL: redis.url });
    processes.push(api);
    const eventId = uniqueEventId('smallcap');
    const total = 60;
    await createEvent(api.url, { id: eventId, totalQuantity: total });
    await Promise.all(Array.from({ length: total }, (_, i) => apply(api.url, eventId, `user-${i}`)));
    processes.push(await spawnWorker({ REDIS_URL: redis.url, PERSIST_RATE_PER_SEC: '20', PERSIST_BATCH_SIZE: '100' }));
    await waitForPersisted(eventId, total, 30_000);
    const perSecond = await query<{ n: number }>(
      `select count(*) as n from coupon where event_id = ? group by date_format(created_at, '%Y-%m-%d %H:%i:%s')`, [eventId]);
    const counts = perSecond.map((row) => Number(row.n));
    console.log(`rate-limit (cap 20/s, batch 100): rows per second ${JSON.stringify(counts)}`);
    expect(Math.max(...counts)).toBeLessThanOrEqual(22);
  }, 60_000);
});

