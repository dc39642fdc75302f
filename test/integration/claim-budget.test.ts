import { setTimeout as sleep } from 'node:timers/promises';
import { Redis } from 'ioredis';
import type { LocalServer } from '../../scripts/local-servers/index.ts';
import { PERSIST_GROUP, eventKeys } from '../../src/redis/keys.ts';
import {
  type ServiceProcess, apply, closePool, createEvent, query, spawnApi, spawnWorker, startOwnRedis, uniqueEventId, waitForPersisted,
} from '../support/harness.ts';
import { scrapeMetric } from '../support/observe.ts';

const WORKERS = 4;
const RATE = 100;
const CLAIM_IDLE_MS = 2_000;
const TOTAL = 800;

describe('the claim budget shared by worker replicas', () => {
  const processes: ServiceProcess[] = [];
  let redis: LocalServer;
  let watcher: Redis | undefined;
  // A Redis of its own: the workers' counters then count this test's entries only.
  beforeAll(async () => {
    redis = await startOwnRedis('claims');
  });
  afterAll(async () => {
    await Promise.all(processes.map((process) => process.stop()));
    await watcher?.quit();
    await redis?.stop();
    await closePool();
  });

  test(`when ${WORKERS} workers drain a backlog at a cap of ${RATE}/s with CLAIM_IDLE_MS=${CLAIM_IDLE_MS}, then no entry is claimed from a live worker, none goes to the retry queue, and each coupon is inserted once`, async () => {
    const api = await spawnApi({ REDIS_URL: redis.url });
    processes.push(api);
    const eventId = uniqueEventId('claims');
    await createEvent(api.url, { id: eventId, totalQuantity: TOTAL });
    for (let start = 0; start < TOTAL; start += 200) {
      await Promise.all(Array.from({ length: 200 }, (_, i) => apply(api.url, eventId, `user-${start + i}`)));
    }

    // MAX_DELIVERIES=1: an entry taken over by XAUTOCLAIM is on its second delivery, so it goes to the retry queue
    // at once; every claim of an entry whose worker is alive and still waiting for its write slot shows there.
    const env = {
      REDIS_URL: redis.url, PERSIST_RATE_PER_SEC: String(RATE), CLAIM_IDLE_MS: String(CLAIM_IDLE_MS), MAX_DELIVERIES: '1',
      RETRY_DELAY_SEC: '3600',
    };
    const workers = await Promise.all(Array.from({ length: WORKERS }, () => spawnWorker(env)));
    processes.push(...workers);

    // Meanwhile, watch the group's pending entries: an entry delivered a second time was claimed.
    watcher = new Redis(redis.url);
    const stream = eventKeys(eventId).outbox;
    const redelivered = new Set<string>();
    let maxPending = 0;
    let watching = true;
    const watched = (async () => {
      while (watching) {
        const pending = (await watcher!.xpending(stream, PERSIST_GROUP, '-', '+', 10_000)) as Array<[string, string, number, number]>;
        maxPending = Math.max(maxPending, pending.length);
        for (const [id, , , deliveries] of pending) if (deliveries > 1) redelivered.add(id);
        await sleep(50);
      }
    })();
    await waitForPersisted(eventId, TOTAL, 60_000);
    // The last acks and any claim of a late entry land just after its row: give them a moment.
    await sleep(CLAIM_IDLE_MS);
    watching = false;
    await watched;

    const [moved, persisted] = await Promise.all([
      Promise.all(workers.map((worker) => scrapeMetric(worker.url, 'coupon_moved_to_retry_total'))),
      Promise.all(workers.map((worker) => scrapeMetric(worker.url, 'coupon_persisted_total'))),
    ]);
    const [row] = await query<{ n: number; users: number; ms: number }>(
      `select count(*) as n, count(distinct user_id) as users, timestampdiff(microsecond, min(created_at), max(created_at)) / 1000 as ms
         from coupon where event_id = ?`, [eventId]);
    console.log(`claim budget (${WORKERS} workers, cap ${RATE}/s, CLAIM_IDLE_MS ${CLAIM_IDLE_MS}): most entries pending at once ${maxPending}, `
      + `entries seen redelivered ${redelivered.size}, moved to retry ${moved.reduce((a, b) => a + b, 0)} (per worker ${JSON.stringify(moved)}), `
      + `persisted per worker ${JSON.stringify(persisted)}, first to last row ${Math.round(Number(row?.ms))} ms`);

    // All workers together held no more than the cap writes in half of CLAIM_IDLE_MS (plus what idle workers take
    // before reserving, and entries between their insert and its ack).
    expect(maxPending).toBeLessThanOrEqual(((RATE * CLAIM_IDLE_MS) / 2_000) * 1.25);
    expect(redelivered.size).toBe(0);
    expect(moved).toEqual(workers.map(() => 0));
    expect(persisted.reduce((a, b) => a + b, 0)).toBe(TOTAL);
    expect(Number(row?.n)).toBe(TOTAL);
    expect(Number(row?.users)).toBe(TOTAL);
    // Everything is acked: nothing waits to be claimed or retried later.
    expect(await watcher.xpending(stream, PERSIST_GROUP)).toEqual([0, null, null, null]);
  }, 120_000);
});
