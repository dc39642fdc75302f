/** Framework-free rules and types shared by the api and the worker. */

export const EVENT_ID_PATTERN = '^[a-z0-9][a-z0-9-]{0,63}$';
export const USER_ID_PATTERN = '^[A-Za-z0-9_-]{1,64}$';
export const MAX_TOTAL_QUANTITY = 10_000_000;

const eventIdRegex = new RegExp(EVENT_ID_PATTERN);
const userIdRegex = new RegExp(USER_ID_PATTERN);

export const isEventId = (value: string): boolean => eventIdRegex.test(value);
export const isUserId = (value: string): boolean => userIdRegex.test(value);

/** A client's Idempotency-Key: it is stored in the user entry (src/redis/formats.ts), so no `:` and bounded. */
export const IDEMPOTENCY_KEY_PATTERN = '^[A-Za-z0-9_.-]{1,128}$';
const idempotencyKeyRegex = new RegExp(IDEMPOTENCY_KEY_PATTERN);
export const isIdempotencyKey = (value: string): boolean => idempotencyKeyRegex.test(value);

export interface CouponEvent {
  id: string;
  name: string;
  totalQuantity: number;
  startsAt: Date;
  endsAt: Date | null;
  /** an operator stopped issuing (the kill switch); holders keep their coupons */
  paused: boolean;
}

export const EVENT_STATUSES = ['scheduled', 'open', 'paused', 'sold_out', 'closed'] as const;
export type EventStatus = typeof EVENT_STATUSES[number];

/** An ended event is closed whether or not it was paused; otherwise a pause shows before the window and the stock. */
export function eventStatus(event: Pick<CouponEvent, 'totalQuantity' | 'startsAt' | 'endsAt' | 'paused'>, issued: number, nowMs: number): EventStatus {
  if (event.endsAt !== null && nowMs >= event.endsAt.getTime()) return 'closed';
  if (event.paused) return 'paused';
  if (nowMs < event.startsAt.getTime()) return 'scheduled';
  if (issued >= event.totalQuantity) return 'sold_out';
  return 'open';
}

/** What the gate decided for one apply request. Expected outcomes are values, not exceptions. */
export type ApplyOutcome =
  | { kind: 'issued'; sequence: number; issuedAtMs: number }
  /** a retry (same Idempotency-Key) of the request that was issued this user's coupon: the same answer again */
  | { kind: 'repeated'; sequence: number; issuedAtMs: number }
  | { kind: 'already_applied'; sequence: number }
  | { kind: 'sold_out' }
  /** an operator paused the event (the kill switch): nothing is issued until it is resumed */
  | { kind: 'paused' }
  | { kind: 'not_started' }
  | { kind: 'ended' }
  | { kind: 'state_missing' }
  /** on a Cluster, the call reached a primary the caller has not compared with MySQL (see gate.lua): nothing done */
  | { kind: 'unchecked_server' };

/** One issued coupon as it travels from the gate, through the outbox, to MySQL. */
export interface IssuedCoupon {
  eventId: string;
  userId: string;
  sequence: number;
  issuedAtMs: number;
  /**
   * the request it was issued to: the client's Idempotency-Key, or the id the api gave a request without one. Taken
   * from the user entry when the coupon is written to MySQL, and put back into it by a restore, so a retry with the
   * same key gets the first 202 again after Redis lost the entry. Absent for coupons persisted before it was kept.
   */
  requestId?: string;
}

/** Whether a coupon read back from the outbox or a job is well-formed; a malformed one must never be written. */
export function isValidCoupon(coupon: IssuedCoupon): boolean {
  return isEventId(coupon.eventId) && isUserId(coupon.userId) && Number.isSafeInteger(coupon.sequence) && coupon.sequence > 0
    && Number.isFinite(coupon.issuedAtMs) && coupon.issuedAtMs > 0;
}
