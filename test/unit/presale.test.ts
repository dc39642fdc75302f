import { eventsWantingCapacity } from '../../worker/presale.ts';

const MIN = 60_000;
const window = { leadMs: 5 * MIN, holdMs: 15 * MIN };
const start = Date.parse('2026-12-24T12:00:00Z');
const event = (id: string, overrides: Partial<{ totalQuantity: number; startsAt: Date; endsAt: Date | null }> = {}) =>
  ({ id, totalQuantity: 100, startsAt: new Date(start), endsAt: null, ...overrides });
const wanting = (nowMs: number, issued: Record<string, number> = {}, events = [event('sale')]) =>
  eventsWantingCapacity(events, new Map(Object.entries(issued)), nowMs, window);

describe('eventsWantingCapacity: when the api is held at its pre-sale size', () => {
  test('When an event starts within the lead, then it wants capacity; earlier it does not', () => {
    expect(wanting(start - 5 * MIN - 1)).toEqual([]);
    expect(wanting(start - 5 * MIN)).toEqual(['sale']);
    expect(wanting(start - 1)).toEqual(['sale']);
  });

  test('When it has started and is not sold out, then it wants capacity until the hold has passed', () => {
    expect(wanting(start + 14 * MIN, { sale: 99 })).toEqual(['sale']);
    expect(wanting(start + 15 * MIN, { sale: 99 })).toEqual([]);
  });

  test('When it sold out, then it no longer wants capacity, however early', () => {
    expect(wanting(start + 10_000, { sale: 100 })).toEqual([]);
    expect(wanting(start + 10_000, { sale: 101 })).toEqual([]);
  });

  test('When it has ended, then it no longer wants capacity', () => {
    const short = event('short', { endsAt: new Date(start + 2 * MIN) });
    expect(wanting(start + MIN, {}, [short])).toEqual(['short']);
    expect(wanting(start + 2 * MIN, {}, [short])).toEqual([]);
  });

  test('When several events are near, then each one still open is named; a later one is not yet', () => {
    const events = [event('a'), event('b', { startsAt: new Date(start + 3 * MIN) }), event('c', { startsAt: new Date(start + 60 * MIN) })];
    expect(wanting(start - MIN, { a: 100 }, events)).toEqual(['b']);
    expect(wanting(start - MIN, {}, events)).toEqual(['a', 'b']);
  });
});
