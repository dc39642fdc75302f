/** The memory phase: MEMORY USAGE of an event's keys on a Cluster shard, created, issued and persisted. */
import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../../scripts/local-servers/index.ts';
import { type ServiceProcess, startApi, startWorker } from '../../scripts/services.ts';
import { eventKeys } from '../../src/redis/keys.ts';
import { primaryOf } from '../../src/redis/topology.ts';
import { round } from '../stats.ts';
import type { ClusterBenchSettings, MemoryReport, MemoryState } from './report.ts';
import { type ClusterBenchContext, type Target, post } from './targets.ts';

/**
 * Memory of an event on a Cluster shard: `memoryEvents` events of `memoryCoupons` coupons, issued through the api
 * to users with UUID ids, measured just created, once issued (every coupon in the outbox) and once a worker has
 * persisted them (the persisted bitmap set, the outbox trimmed by the worker's maintenance).
 */
export async function measureMemory(ctx: ClusterBenchContext, target: Target, settings: ClusterBenchSettings, runId: string): Promise<MemoryReport> {
  const env = { ...ctx.env, ...target.env, LOG_LEVEL: 'warn' };
  const api = await ctx.running.track(startApi({ port: await freePort(), env }));
  let worker: ServiceProcess | undefined;
  try {
    const events = Array.from({ length: settings.memoryEvents }, (_, i) => `mem-${runId}-${i}`);
    for (const id of events) await post(api.url, '/v1/events', { id, name: 'memory', totalQuantity: settings.memoryCoupons }, ctx.env.ADMIN_TOKEN);
    const created = await eventMemory(target, events);
    const userIdChars = randomUUID().length;
    const calls = events.flatMap((id) => Array.from({ length: settings.memoryCoupons }, () => id));
    const statuses: Record<number, number> = {};
    await Promise.all(Array.from({ length: 32 }, async () => {
      for (let id = calls.pop(); id !== undefined; id = calls.pop()) {
        const response = await post(api.url, `/v1/events/${id}/apply`, { userId: randomUUID() });
        statuses[response.status] = (statuses[response.status] ?? 0) + 1;
        await response.arrayBuffer();
      }
    }));
    if (statuses[202] !== settings.memoryEvents * settings.memoryCoupons) throw new Error(`memory phase: answers ${JSON.stringify(statuses)}`);
    const issued = await eventMemory(target, events);
    worker = await ctx.running.track(startWorker({ port: await freePort(), env: { ...env, PERSIST_RATE_PER_SEC: '1000000', PERSIST_BATCH_SIZE: '500' } }));
    // Persisted, and trimmed by the worker's maintenance (every 5 s) down to the last entry handed out.
    const deadline = Date.now() + 30_000;
    for (;;) {
      const states = await Promise.all(events.map(async (id) => {
        const keys = eventKeys(id);
        const [bits, length] = await Promise.all([target.client.bitcount(keys.persisted), target.client.xlen(keys.outbox)]);
        return bits >= settings.memoryCoupons && length <= 1;
      }));
      if (states.every(Boolean)) break;
      if (Date.now() > deadline) throw new Error('memory phase: the worker did not persist and trim the events within 30 s');
      await sleep(250);
    }
    const persisted = await eventMemory(target, events);
    // What stays per coupon: its user's entry and its bit. What stays per event once persisted: the rest, the
    // trimmed outbox among it (entries deleted from a stream node are only marked until the whole node goes).
    const lasting = (state: MemoryState) => (state.byKey.users ?? 0) + (state.byKey.persisted ?? 0);
    const bytesPerCouponPersisted = round((lasting(persisted) - lasting(created)) / settings.memoryCoupons, 1);
    const report: MemoryReport = {
      target: target.name, events: events.length, couponsPerEvent: settings.memoryCoupons, userIdChars, created, issued, persisted,
      bytesPerCouponPersisted,
      eventFixedBytesPersisted: Math.round(persisted.bytesPerEvent - bytesPerCouponPersisted * settings.memoryCoupons),
      bytesPerCouponInOutbox: round(((issued.byKey.outbox ?? 0) - (created.byKey.outbox ?? 0)) / settings.memoryCoupons, 1),
    };
    ctx.log(`memory: ${created.bytesPerEvent} B per event created, ${issued.bytesPerEvent} B with ${settings.memoryCoupons} coupons in the outbox, ${persisted.bytesPerEvent} B persisted: ${report.eventFixedBytesPersisted} B + ${report.bytesPerCouponPersisted} B per coupon (+${report.bytesPerCouponInOutbox} B per coupon in the outbox)`);
    return report;
  } finally {
    if (worker) await ctx.running.stop(worker);
    await ctx.running.stop(api);
  }
}

async function eventMemory(target: Target, events: string[]): Promise<MemoryState> {
  const byKey: Record<string, number> = {};
  let outboxEntries = 0;
  for (const id of events) {
    const keys = eventKeys(id);
    for (const [part, key] of Object.entries(keys)) {
      const node = primaryOf(target.client, key)!;
      const bytes = Number((await node.call('MEMORY', 'USAGE', key, 'SAMPLES', '0')) ?? 0);
      byKey[part] = (byKey[part] ?? 0) + bytes;
    }
    outboxEntries += await target.client.xlen(keys.outbox);
  }
  for (const part of Object.keys(byKey)) byKey[part] = Math.round(byKey[part]! / events.length);
  return { bytesPerEvent: Object.values(byKey).reduce((a, b) => a + b, 0), byKey, outboxEntries: Math.round(outboxEntries / events.length) };
}

