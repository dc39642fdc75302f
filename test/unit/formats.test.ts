import { encodeOutboxFields, encodeUserEntry, parseOutboxFields, parseUserEntry } from '../../src/redis/formats.ts';

describe('the Redis value formats', () => {
  test('when a user entry is written with a request id, then it reads back whole', () => {
    const entry = { sequence: 42, issuedAtMs: 1_790_000_000_123, requestId: 'k3.mx9.1a' };
    expect(encodeUserEntry(entry)).toBe('42:1790000000123:k3.mx9.1a');
    expect(parseUserEntry(encodeUserEntry(entry))).toEqual(entry);
  });

  test('when a user entry is restored from MySQL without a request id, then it reads back without one', () => {
    const entry = { sequence: 7, issuedAtMs: 1_790_000_000_000 };
    expect(parseUserEntry(encodeUserEntry(entry))).toEqual(entry);
  });

  test('when a coupon is written as an outbox entry, then it reads back whole, whatever the field order', () => {
    const coupon = { eventId: 'summer-2026', userId: 'Alice_1', sequence: 3, issuedAtMs: 1_790_000_000_456 };
    const fields = encodeOutboxFields(coupon);
    expect(parseOutboxFields(fields)).toEqual(coupon);
    const reordered = [fields.slice(4), fields.slice(0, 4)].flat();
    expect(parseOutboxFields(reordered)).toEqual(coupon);
  });
});
