/** The Redis side of archiving an event: its whole gate state deleted at once, then its registry entry removed. */
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
 * Deletes the event's gate state (meta, counter, users, outbox, persisted bitmap) in one script
 * (archive-event.lua), but only if the counter and the end are still `checked` and no outbox entry is pending;
 * then removes it from the registry. `checked: null` deletes unconditionally: for an event MySQL already calls
 * archived. A crash between the two leaves a registered event MySQL calls archived: the archiver's next pass
 * removes it (Archiver.#removeLeftovers).
 */
export async function deleteEventState(
  redis: CouponRedis, eventId: string, checked: { issued: number; endsAtMs: number } | null,
): Promise<DeleteOutcome> {
  const keys = eventStateKeys(eventId);
  const tombstone = eventKeys(eventId).archived;
  if (checked === null) {
    await redis.multi().del(...keys).set(tombstone, '1').exec();
    await redis.srem(EVENT_REGISTRY_KEY, eventId);
    return 'deleted';
  }
  const result = Number(await redis.eval(
    ARCHIVE_EVENT_LUA, 6, ...keys, tombstone, eventId, String(checked.issued), String(checked.endsAtMs), PERSIST_GROUP,
  ));
  if (result === -1) return 'moved';
  await redis.srem(EVENT_REGISTRY_KEY, eventId);
  return result === 1 ? 'deleted' : 'absent';
}
