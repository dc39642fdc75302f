import type { CouponRedis } from './client.ts';
import { PERSIST_GROUP } from './keys.ts';

/** The state of one outbox stream's consumer group, as the worker's housekeeping and both processes' gauges read it. */
export interface GroupState {
  /** entries delivered to a worker and not yet acked */
  pending: number;
  /** entries never delivered to a worker */
  lag: number;
  lastDelivered: string;
  oldestPending: string | null;
}

/** Pending, undelivered and trimmable state of one stream's group; null when the stream or group is gone. */
export async function outboxGroupState(redis: CouponRedis, stream: string): Promise<GroupState | null> {
  try {
    const [groups, info, summary] = await Promise.all([
      redis.xinfo('GROUPS', stream) as Promise<unknown[][]>,
      redis.xinfo('STREAM', stream) as Promise<unknown[]>,
      redis.xpending(stream, PERSIST_GROUP) as Promise<[number, string | null, string | null, unknown]>,
    ]);
    const group = groups.map(toRecord).find((candidate) => candidate.name === PERSIST_GROUP);
    if (!group) return null;
    const stream_ = toRecord(info);
    const lastDelivered = String(group['last-delivered-id']);
    const lastGenerated = String(stream_['last-generated-id']);
    const lag = typeof group.lag === 'number' ? group.lag : lastDelivered === lastGenerated ? 0 : Number(stream_.length);
    return { pending: Number(group.pending), lag, lastDelivered, oldestPending: summary[1] };
  } catch (error) {
    if (error instanceof Error && /no such key|NOGROUP/i.test(error.message)) return null;
    throw error;
  }
}

/** A Redis reply of alternating names and values (XINFO), as a record. */
export function toRecord(flat: unknown[]): Record<string, unknown> {
  const record: Record<string, unknown> = {};
  for (let i = 0; i < flat.length; i += 2) record[String(flat[i])] = flat[i + 1];
  return record;
}
