/**
 * The chaos checker (scripts/chaos/check.ts) on histories written by hand: it must pass a history that keeps
 * every promise and name each broken one. The runs themselves are in test/faults/chaos.test.ts.
 */
import { type Attempt, type EventOutcome, type History, checkHistory, lowestQuantity } from '../../scripts/chaos/check.ts';

const T0 = 1_000_000;

const attempt = (userId: string, at: number, status: number, extra: Partial<Attempt> = {}): Attempt => ({
  event: 0, userId, key: undefined, phase: 'load', startedAt: T0 + at, answeredAt: T0 + at + 5, status, error: undefined, sequence: undefined, ...extra,
});
const issued = (userId: string, at: number, sequence: number, extra: Partial<Attempt> = {}) => attempt(userId, at, 202, { sequence, ...extra });

/** A sold-out event of 2: u1 and u2 hold #1 and #2 (rows 100 ms after their 202s), u3 heard 410; everyone asked again at the end. */
function soldOutHistory(): History {
  const outcome: EventOutcome = {
    initialQuantity: 2, createdAt: T0, finalQuantity: 2,
    rows: [
      { userId: 'u1', sequence: 1, issuedAt: T0 + 10, createdAt: T0 + 115 },
      { userId: 'u2', sequence: 2, issuedAt: T0 + 20, createdAt: T0 + 125 },
    ],
    eventReads: [{ status: 200, totalQuantity: 2, issued: 2, persisted: 2 }],
    couponReads: [{ userId: 'u1', status: 200, sequence: 1 }, { userId: 'u2', status: 200, sequence: 2 }],
  };
  return {
    attempts: [
      issued('u1', 10, 1), issued('u2', 20, 2), attempt('u3', 30, 410, { error: 'sold_out' }),
      attempt('u1', 5_000, 409, { error: 'already_applied', phase: 'final', sequence: 1 }),
      attempt('u2', 5_000, 409, { error: 'already_applied', phase: 'final', sequence: 2 }),
      attempt('u3', 5_000, 410, { error: 'sold_out', phase: 'final' }),
    ],
    patches: [], faults: [], losses: [], events: [outcome],
  };
}

describe('the chaos checker', () => {
  test('a history that keeps every promise passes, with its figures', () => {
    const verdict = checkHistory(soldOutHistory());
    expect(verdict).toEqual({
      violations: [],
      figures: { answers: { '202': 2, '409 already_applied': 2, '410 sold_out': 2 }, told: 2, rows: 2, lostToRedis: 0, maxToRowMs: 100, maxToRowAfterFaultMs: 100 },
    });
  });

  test('a 202 without its row, or with another sequence, is named', () => {
    const history = soldOutHistory();
    history.events[0]!.rows[1]!.sequence = 3;
    history.events[0]!.rows.splice(0, 1);
    expect(checkHistory(history).violations).toEqual(expect.arrayContaining([
      'event 0: u1 was told 202 #1 (load) and holds no row',
      'event 0: u2 was told #2 (load), its row is #3',
      'event 0: sequences beyond 1..2: 3',
    ]));
  });

  test('more rows than the quantity, and a sequence held twice, are named', () => {
    const history = soldOutHistory();
    history.events[0]!.rows.push({ userId: 'u3', sequence: 2, issuedAt: T0 + 30, createdAt: T0 + 130 });
    expect(checkHistory(history).violations).toEqual(expect.arrayContaining([
      'event 0: 3 rows, quantity 2', 'event 0: a sequence is held by two users',
    ]));
  });

  test('a holder whose last answer is 410 (or a lost one) was never told: named', () => {
    const history = soldOutHistory();
    history.attempts[3] = attempt('u1', 5_000, 410, { error: 'sold_out', phase: 'final' });
    history.attempts[4] = attempt('u2', 5_000, 503, { error: 'unavailable', phase: 'final' });
    expect(checkHistory(history).violations).toEqual([
      'event 0: u1 holds #1 but its last answer was 410 sold_out',
      'event 0: u2 holds #2 but its last answer was 503 unavailable',
    ]);
  });

  test('a replay of the key that was issued the coupon must get the 202 again, not 409', () => {
    const history = soldOutHistory();
    history.attempts[0] = issued('u1', 10, 1, { key: 'k1' });
    history.attempts[3] = attempt('u1', 5_000, 409, { error: 'already_applied', phase: 'final', key: 'k1' });
    expect(checkHistory(history).violations).toEqual(['event 0: u1 replayed the key of its 202 and heard 409 already_applied']);
  });

  test('a 410 while stock remained is named; one after the quantity was lowered to what was issued is not', () => {
    const history = soldOutHistory();
    history.events[0]!.initialQuantity = 3;
    history.events[0]!.finalQuantity = 3;
    history.events[0]!.eventReads[0]!.totalQuantity = 3;
    expect(checkHistory(history).violations).toEqual([
      'event 0: u3 heard 410 with 2 of 3 issued', 'event 0: u3 heard 410 with 2 of 3 issued',
    ]);
    history.patches.push({ event: 0, change: 'lower', quantity: 2, startedAt: T0 + 25, answeredAt: T0 + 28, status: 200, error: undefined });
    history.events[0]!.finalQuantity = 2;
    history.events[0]!.eventReads[0]!.totalQuantity = 2;
    expect(checkHistory(history).violations).toEqual([]);
  });

  test('any 5xx other than 503, a 404 of the event and reads that disagree with MySQL are named', () => {
    const history = soldOutHistory();
    history.attempts.push(attempt('u4', 40, 500, { error: 'internal' }), attempt('u5', 40, 404, { error: 'event_not_found' }));
    history.events[0]!.eventReads.push({ status: 200, totalQuantity: 2, issued: 1, persisted: 2 });
    history.events[0]!.couponReads[0] = { userId: 'u1', status: 404 };
    expect(checkHistory(history).violations).toEqual([
      'u4 (event 0) answered 500 internal',
      'u5 (event 0): the event answered 404',
      'event 0: GET answered {"status":200,"totalQuantity":2,"issued":1,"persisted":2}; MySQL: quantity 2, 2 rows',
      'event 0: GET coupon of u1 answered 404 #undefined, its row #1',
    ]);
  });

  test('a row late only because a fault held it back is within the promise; late after the fault\'s end, it is named', () => {
    const history = soldOutHistory();
    history.events[0]!.rows[0]!.createdAt = T0 + 20_000;
    history.faults.push({ what: 'outage mariadb', from: T0 + 100, until: T0 + 15_000 });
    expect(checkHistory(history).violations).toEqual([]);
    expect(checkHistory(history).figures).toMatchObject({ maxToRowMs: 19_985, maxToRowAfterFaultMs: 5_000 });
    history.faults[0]!.until = T0 + 5_000;
    expect(checkHistory(history).violations).toEqual(["event 0: u1's row came 15000 ms after its 202 (or the fault's end)"]);
  });

  test('a coupon told before a flush and not yet in MySQL may be lost (counted); one MySQL held may not', () => {
    const history = soldOutHistory();
    // u2's coupon was still in the outbox when Redis was flushed; u2 asked again after the restore and got #2 anew
    // (holes are not re-issued: here the counter went back to 1). u1's row was in MySQL before the flush.
    history.losses.push({ at: T0 + 1_000, persisted: [['u1']] });
    history.events[0]!.rows[1] = { userId: 'u2', sequence: 2, issuedAt: T0 + 2_000, createdAt: T0 + 2_100 };
    history.attempts[1] = issued('u2', 20, 7);
    expect(checkHistory(history)).toMatchObject({ violations: [], figures: { lostToRedis: 1 } });
    history.losses[0]!.persisted = [['u1', 'u2']];
    expect(checkHistory(history).violations).toEqual(['event 0: u2 was told #7 (load), its row is #2']);
    // A key whose 202 went with the flush has nothing to replay: its 409 (the event ended meanwhile) is no break.
    history.losses[0]!.persisted = [['u1']];
    history.events[0]!.rows.splice(1, 1);
    history.events[0]!.couponReads.splice(1, 1);
    history.events[0]!.eventReads[0] = { status: 200, totalQuantity: 2, issued: 1, persisted: 1 };
    history.attempts[1] = issued('u2', 20, 7, { key: 'k2' });
    history.attempts[4] = attempt('u2', 5_000, 409, { error: 'event_not_open', phase: 'final', key: 'k2' });
    history.attempts[5] = attempt('u3', 5_000, 409, { error: 'event_not_open', phase: 'final' });
    expect(checkHistory(history)).toMatchObject({ violations: [], figures: { lostToRedis: 1 } });
  });
});

describe('the lowest quantity an event may have had', () => {
  const patch = (quantity: number, startedAt: number, answeredAt: number, status = 200) => ({
    event: 0, change: 'set', quantity, startedAt, answeredAt, status, error: undefined,
  });

  test('the quantity set before, and any a PATCH may have set meanwhile, answered or not', () => {
    expect(lowestQuantity(10, [], 0, 100)).toBe(10);
    expect(lowestQuantity(10, [patch(20, 10, 20)], 50, 100)).toBe(20);
    expect(lowestQuantity(10, [patch(20, 10, 20), patch(5, 60, 70)], 50, 100)).toBe(5);
    expect(lowestQuantity(10, [patch(5, 60, 0, 0)], 50, 100)).toBe(5);
    expect(lowestQuantity(10, [patch(5, 60, 70, 409)], 50, 100)).toBe(10);
  });
});
