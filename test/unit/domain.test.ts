import { eventStatus, isEventId, isUserId, isValidCoupon } from '../../src/domain/coupon.ts';

const event = { totalQuantity: 10, startsAt: new Date(1_000), endsAt: new Date(2_000), paused: false };

describe('event status', () => {
  test.each([
    [500, 0, 'scheduled'],
    [1_000, 0, 'open'],
    [1_500, 10, 'sold_out'],
    [2_000, 3, 'closed'],
    [2_000, 10, 'closed'],
  ])('when it is %d ms and %d are issued, then the event is %s', (now, issued, status) => {
    expect(eventStatus(event, issued, now)).toBe(status);
  });

  test('when an event has no end, then it stays open until sold out', () => {
    expect(eventStatus({ ...event, endsAt: null }, 9, 10 ** 13)).toBe('open');
  });

  test('when an event is paused, then it is paused until it ends, whatever is issued', () => {
    const paused = { ...event, paused: true };
    expect(eventStatus(paused, 0, 500)).toBe('paused');
    expect(eventStatus(paused, 3, 1_500)).toBe('paused');
    expect(eventStatus(paused, 10, 1_500)).toBe('paused');
    expect(eventStatus(paused, 3, 2_000)).toBe('closed');
  });
});

describe('identifiers', () => {
  test('when ids follow the contract, then they are accepted, and otherwise refused', () => {
    expect(isEventId('summer-2026')).toBe(true);
    expect(isEventId('-summer')).toBe(false);
    expect(isEventId('Summer')).toBe(false);
    expect(isEventId('a'.repeat(65))).toBe(false);
    expect(isUserId('user_42-A')).toBe(true);
    expect(isUserId('')).toBe(false);
    expect(isUserId('a b')).toBe(false);
    expect(isUserId('u'.repeat(65))).toBe(false);
  });

  test('when an outbox entry is malformed, then it is not a valid coupon', () => {
    const coupon = { eventId: 'e1', userId: 'u1', sequence: 1, issuedAtMs: Date.now() };
    expect(isValidCoupon(coupon)).toBe(true);
    expect(isValidCoupon({ ...coupon, sequence: Number.NaN })).toBe(false);
    expect(isValidCoupon({ ...coupon, userId: 'u'.repeat(100) })).toBe(false);
  });
});
