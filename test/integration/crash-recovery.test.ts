import { createRedis } from '../../src/redis/client.ts';
import { PERSIST_GROUP, eventKeys } from '../../src/redis/keys.ts';
import type { LocalServer } from '../../scripts/local-servers/index.ts';
import {
  type ServiceProcess, apply, closePool, couponRows, createEvent, spawnApi, spawnWorker, startOwnRedis, uniqueEventId, waitFor, waitForPersisted,
} from '../support/harness.ts';

describe('crash recovery', () => {
  const processes: ServiceProcess[] = [];
  // A Redis of its own: on the shared one, other files' workers (with caps of their own on the one write timeline)
  // took part in draining this event, and in a full run the 400 rows were not all in within the wait.
  let redis: LocalServer;
  beforeAll(async () => {
    redis = await startOwnRedis('crash');
  });
  afterAll(async () => {
    await Promise.all(processes.map((process) => process.stop('SIGKILL')));
    await redis?.stop();
    await closePool();
  });

  test('when a worker is killed with SIGKILL while holding pending entries, then another worker persists them: nothing lost, nothing twice', async () => {
    const api = await spawnApi({ REDIS_URL: redis.url });
    processes.push(api);
    const eventId = uniqueEventId('crash');
    const total = 400;
    await createEvent(api.url, { id: eventId, totalQuantity: total });
    for (let start = 0; start < total; start += 100) {
      await Promise.all(Array.from({ length: 100 }, (_, i) => apply(api.url, eventId, `user-${start + i}`)));
    }

    // A slow worker (50 rows/s) reads a batch, then waits for its rate slot: killed there, it holds pending entries.
    const doomed = await spawnWorker({ REDIS_URL: redis.url, PERSIST_RATE_PER_SEC: '50', PERSIST_BATCH_SIZE: '50', CLAIM_IDLE_MS: '60000' });
    processes.push(doomed);
    const client = createRedis(redis.url);
    const outbox = eventKeys(eventId).outbox;
    try {
      const held = await waitFor(async () => {
        const consumers = (await client.xinfo('CONSUMERS', outbox, PERSIST_GROUP)) as unknown[][];
        const pending = consumers.map((consumer) => Number(consumer[consumer.indexOf('pending') + 1])).reduce((a, b) => a + b, 0);
        const persisted = (await couponRows(eventId)).length;
        return pending > 0 && persisted > 0 ? pending : undefined;
      }, { what: 'the slow worker to persist some and hold some pending' });
      await doomed.stop('SIGKILL');
      expect(held).toBeGreaterThan(0);
      const persistedAtKill = (await couponRows(eventId)).length;
      expect(persistedAtKill).toBeLessThan(total);

      const rescuer = await spawnWorker({ REDIS_URL: redis.url, PERSIST_RATE_PER_SEC: '100000', CLAIM_IDLE_MS: '500' });
      processes.push(rescuer);
      await waitForPersisted(eventId, total);
      await waitFor(async () => (await client.xpending(outbox, PERSIST_GROUP))[0] === 0, { what: 'every entry acked' });
    } finally {
      await client.quit();
    }

    const rows = await couponRows(eventId);
    expect(rows).toHaveLength(total);
    expect(new Set(rows.map((row) => row.user_id)).size).toBe(total);
    expect(rows.map((row) => row.sequence)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
  }, 120_000);
});
