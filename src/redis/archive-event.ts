/** The Redis side of archiving an event: its whole gate state deleted and its registry entry removed at once. */
import { readFileSync } from 'node:fs';
import type { CouponRedis } from './client.ts';
import { EVENT_REGISTRY_KEY, PERSIST_GROUP, eventKeys } from './keys.ts';

const ARCHIVE_EVENT_LUA = readFileSync(new URL('./archive-event.lua', import.meta.url), 'utf8');

/** What deleteEventState did: deleted the state, found none (only the registry entry went), or refused (it moved on). */
export type DeleteOutcome = 'deleted' | 'absent' | 'moved';

/** Every key of the event's gate state, the persisted bitmap (`coupon:{id}:persisted`) included. */
export function eventStateKeys(eventId: string): string[] {
  const { meta, issued, users, outbox, persisted } = eventKeys(eventId);
  return [meta, issued, users, outbox, persisted];
}

/**
 * Deletes the event's gate state (meta, counter, users, outbox, persisted bitmap) and removes it from the
 * registry in one script (archive-event.lua), but only if the counter and the end are still `checked` and no
 * outbox entry is pending. `checked: null` deletes unconditionally: for an event MySQL already calls archived.
 */
export async function deleteEventState(
  redis: CouponRedis, eventId: string, checked: { issued: number; endsAtMs: number } | null,
): Promise<DeleteOutcome> {
  const keys = eventStateKeys(eventId);
  const tombstone = eventKeys(eventId).archived;
  if (checked === null) {
    await redis.multi().del(...keys).srem(EVENT_REGISTRY_KEY, eventId).set(tombstone, '1').exec();
    return 'deleted';
  }
  const result = Number(await redis.eval(
    ARCHIVE_EVENT_LUA, 7, ...keys, EVENT_REGISTRY_KEY, tombstone, eventId, String(checked.issued), String(checked.endsAtMs), PERSIST_GROUP,
  ));
  return result === 1 ? 'deleted' : result === 0 ? 'absent' : 'moved';
}
