/** An event's outbox stream and the worker's consumer group on it, as XINFO reports them, for tests that watch a drain. */
import type { Redis } from 'ioredis';
import { PERSIST_GROUP, eventKeys } from '../../src/redis/keys.ts';

export interface OutboxState {
  /** the id of the last entry ever appended */
  lastEntryId: string;
  /** the worker's consumer group; undefined until a worker has created it */
  group?: {
    /** delivered to a worker, not acknowledged yet */
    pending: number;
    /** not delivered yet; null where Redis cannot tell */
    lag: number | null;
    lastDeliveredId: string;
  };
}

const field = (fields: unknown[], name: string): unknown => fields[fields.indexOf(name) + 1];

export async function outboxState(redis: Redis, eventId: string): Promise<OutboxState> {
  const stream = eventKeys(eventId).outbox;
  const [info, groups] = await Promise.all([
    redis.xinfo('STREAM', stream) as Promise<unknown[]>, redis.xinfo('GROUPS', stream) as Promise<unknown[][]>,
  ]);
  const group = groups.find((fields) => field(fields, 'name') === PERSIST_GROUP);
  const lag = group && field(group, 'lag');
  return {
    lastEntryId: String(field(info, 'last-generated-id')),
    group: group && {
      pending: Number(field(group, 'pending')),
      lag: lag === null || lag === undefined ? null : Number(lag),
      lastDeliveredId: String(field(group, 'last-delivered-id')),
    },
  };
}

/** Whether the worker has delivered and acknowledged every entry of the event's outbox. */
export async function outboxDrained(redis: Redis, eventId: string): Promise<boolean> {
  const { lastEntryId, group } = await outboxState(redis, eventId);
  if (!group) return false;
  const [last, delivered] = [lastEntryId, group.lastDeliveredId].map((id) => id.split('-').map(BigInt) as [bigint, bigint]);
  return group.pending === 0 && (delivered![0] > last![0] || (delivered![0] === last![0] && delivered![1] >= last![1]));
}
