import { RECHECK_MS, SoldOutFlags } from '../../src/api/sold-out.ts';

describe('the local sold-out flag', () => {
  test('when the gate said sold out, then the process answers by itself until the flag expires', () => {
    const flags = new SoldOutFlags(5_000);
    flags.markSoldOut('e', 0);
    expect(flags.isSoldOut('e', 4_999)).toBe(true);
    expect(flags.isSoldOut('other', 10)).toBe(false);
  });

  test('when the flag expires under load, then one request asks the gate and the others keep the flag meanwhile', () => {
    const flags = new SoldOutFlags(5_000);
    flags.markSoldOut('e', 0);
    expect(flags.isSoldOut('e', 5_000)).toBe(false);
    expect(flags.isSoldOut('e', 5_001)).toBe(true);
    expect(flags.isSoldOut('e', 5_000 + RECHECK_MS - 1)).toBe(true);
    // Nobody brought an answer back (the re-check was shed or failed): another request asks.
    expect(flags.isSoldOut('e', 5_000 + RECHECK_MS)).toBe(false);
  });

  test('when the re-check hears sold out again, then the flag is renewed; when it is issued a coupon, then the flag is gone', () => {
    const flags = new SoldOutFlags(5_000);
    flags.markSoldOut('e', 0);
    expect(flags.isSoldOut('e', 5_000)).toBe(false);
    flags.markSoldOut('e', 5_010);
    expect(flags.isSoldOut('e', 9_000)).toBe(true);
    flags.stockSeen('e');
    expect(flags.isSoldOut('e', 9_001)).toBe(false);
    expect(flags.isSoldOut('e', 9_002)).toBe(false);
  });
});

describe('a sold_out that crosses a change', () => {
  test('when a raise is heard while a gate call is out and its sold_out reply comes after, then the flag is not set (issue 20, break 6)', () => {
    const flags = new SoldOutFlags(5_000);
    const stamp = flags.stamp();
    // the raise's message arrives first...
    flags.forget('e');
    // ...then the reply of the call the gate decided before the raise
    flags.markSoldOut('e', 10, stamp);
    expect(flags.isSoldOut('e', 11)).toBe(false);
  });

  test('when no change was heard during the call, then its sold_out sets the flag', () => {
    const flags = new SoldOutFlags(5_000);
    const stamp = flags.stamp();
    flags.markSoldOut('e', 10, stamp);
    expect(flags.isSoldOut('e', 11)).toBe(true);
  });
});
