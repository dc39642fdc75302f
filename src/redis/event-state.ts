/** An event's gate state as whole: installed or merged from MySQL, changed by an admin, checked by the worker. */
import type { CouponRedis } from './client.ts';
import { parseUserEntry } from './formats.ts';
import { EVENT_REGISTRY_KEY, PERSIST_GROUP, eventKeys } from './keys.ts';

export interface GateState {
  totalQuantity: number;
  startsAtMs: number;
  endsAtMs: number | null;
  /** the highest sequence already handed out (as far as MySQL knows) */
  issued: number;
  /** the event's gate epoch in MySQL (see check-holders.lua), 0 for a new event; never lowered in Redis */
  epoch?: number;
  /** users already holding a coupon: userId -> "sequence:issuedAtMs" */
  users?: Array<[string, string]>;
}

/** What installEventState did: wrote a missing state, merged into an existing one, or found nothing to do. */
export type InstallOutcome = 'installed' | 'merged' | 'unchanged';
const INSTALL_OUTCOMES: InstallOutcome[] = ['unchanged', 'merged', 'installed'];

/**
 * Writes an event's gate state if it is missing; otherwise merges in the users and the counter it lacks and
 * raises its epoch (see install-event.lua).
 */
export async function installEventState(redis: CouponRedis, eventId: string, state: GateState): Promise<InstallOutcome> {
  const keys = eventKeys(eventId);
  const args = [
    keys.meta, keys.issued, keys.users, keys.outbox, EVENT_REGISTRY_KEY,
    eventId, String(state.totalQuantity), String(state.startsAtMs), state.endsAtMs === null ? '' : String(state.endsAtMs),
    String(state.issued), PERSIST_GROUP, String(state.epoch ?? 0),
  ];
  for (const [userId, value] of state.users ?? []) args.push(userId, value);
  return INSTALL_OUTCOMES[await redis.installEvent(...args)]!;
}

/**
 * The gate's current word on coupons of one event about to be written: its epoch, and which of the coupons their
 * users' entries still carry. Null when the event's gate state is missing (it must be restored first).
 */
export async function checkHolders(
  redis: CouponRedis, eventId: string, coupons: ReadonlyArray<{ userId: string; sequence: number }>,
): Promise<{ epoch: number; current: boolean[] } | null> {
  const keys = eventKeys(eventId);
  const [epoch, ...entries] = await redis.checkHolders(keys.meta, keys.users, ...coupons.map((coupon) => coupon.userId));
  if (epoch === -1) return null;
  const current = coupons.map((coupon, i) => {
    const entry = entries[i];
    return typeof entry === 'string' && parseUserEntry(entry).sequence === coupon.sequence;
  });
  return { epoch: Number(epoch), current };
}

export type UpdateOutcome = { kind: 'updated'; issued: number } | { kind: 'quantity_below_issued'; issued: number } | { kind: 'state_missing' };

export async function updateEventState(
  redis: CouponRedis, eventId: string, change: { totalQuantity?: number; endsAtMs?: number | null },
): Promise<UpdateOutcome> {
  const keys = eventKeys(eventId);
  const total = change.totalQuantity === undefined ? '' : String(change.totalQuantity);
  const endsAt = change.endsAtMs === undefined ? '' : change.endsAtMs === null ? '-' : String(change.endsAtMs);
  const [code, issued] = await redis.updateEvent(keys.meta, keys.issued, total, endsAt);
  if (code === 0) return { kind: 'updated', issued };
  if (code === 1) return { kind: 'quantity_below_issued', issued };
  return { kind: 'state_missing' };
}
