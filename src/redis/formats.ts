/**
 * The two values this project stores in Redis besides counters, in one place: whatever writes them (the gate
 * script, a restore from MySQL, a test) and whatever reads them (the api, the worker) follow these. gate.lua
 * writes both in Lua; test/unit/formats.test.ts and test/integration/gate.test.ts hold it to this module.
 */
import type { IssuedCoupon } from '../domain/coupon.ts';

/**
 * The user entry, `users` hash field value: `sequence:issuedAtMs[:requestId]`. The request id is there when the
 * gate wrote the entry (a timed-out caller reads it to learn whether its own request got the coupon, a retry with
 * the same Idempotency-Key is answered the first 202 again); the worker keeps it in MySQL with the coupon, and a
 * state restored from MySQL has it back. Only coupons persisted before MySQL kept it are restored without one.
 */
export interface UserEntry {
  sequence: number;
  issuedAtMs: number;
  requestId?: string;
}

export function encodeUserEntry(entry: UserEntry): string {
  return entry.requestId === undefined ? `${entry.sequence}:${entry.issuedAtMs}` : `${entry.sequence}:${entry.issuedAtMs}:${entry.requestId}`;
}

export function parseUserEntry(value: string): UserEntry {
  const [sequence, issuedAtMs, requestId] = value.split(':');
  return { sequence: Number(sequence), issuedAtMs: Number(issuedAtMs), ...(requestId !== undefined && { requestId }) };
}

/** The outbox stream entry: field/value pairs `eventId`, `userId`, `sequence`, `issuedAt` (epoch ms). */
export function encodeOutboxFields(coupon: IssuedCoupon): string[] {
  return ['eventId', coupon.eventId, 'userId', coupon.userId, 'sequence', String(coupon.sequence), 'issuedAt', String(coupon.issuedAtMs)];
}

export function parseOutboxFields(fields: readonly string[]): IssuedCoupon {
  const record: Record<string, string> = {};
  for (let i = 0; i + 1 < fields.length; i += 2) record[fields[i]!] = fields[i + 1]!;
  return {
    eventId: record.eventId ?? '',
    userId: record.userId ?? '',
    sequence: Number(record.sequence),
    issuedAtMs: Number(record.issuedAt),
  };
}
