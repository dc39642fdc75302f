import { setImmediate as nextTurn } from 'node:timers/promises';
import { MAX_AGE_MS, TurnBatches } from '../../src/redis/turn-batches.ts';

/** A batches owner as GateBatcher and HolderReads are: one array of items per key, what was sent recorded. */
function owner() {
  const sent: string[][] = [];
  const batches = new TurnBatches<string[]>((batch) => sent.push(batch));
  const add = (key: string, item: string) => (batches.current(key) ?? batches.start(key, [])).push(item);
  return { sent, add, sendIfOlder: (now = performance.now()) => batches.sendIfOlder(now) };
}

/** Holds the thread for `ms`, as a long poll phase of the event loop does: no timer or setImmediate runs meanwhile. */
function busy(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) { /* a turn of the loop still running */ }
}

describe('the batches of one event-loop turn', () => {
  test('when requests of two events start in one turn, then each event has one batch, sent at the end of the turn in arrival order', async () => {
    const { sent, add } = owner();
    add('a', 'a1');
    add('b', 'b1');
    add('a', 'a2');
    expect(sent).toEqual([]);
    await nextTurn();
    expect(sent).toEqual([['a1', 'a2'], ['b1']]);
  });

  test('when the turn runs longer than MAX_AGE_MS (no setImmediate meanwhile), then the next apply sends every batch that filled, of every event and owner', () => {
    const gate = owner();
    const reads = owner();
    gate.add('a', 'a1');
    reads.add('b', 'b1');
    busy(MAX_AGE_MS + 5);
    // what ApplyForCoupon.sendAgedBatches does for its gate batcher and holder reads
    gate.sendIfOlder();
    reads.sendIfOlder();
    expect({ gate: gate.sent, reads: reads.sent }).toEqual({ gate: [['a1']], reads: [['b1']] });
    // the next request starts a batch of its own
    gate.add('a', 'a2');
    expect(gate.sent).toEqual([['a1']]);
  });

  test('when the batches are younger than MAX_AGE_MS, then an apply leaves them to fill until the end of the turn', async () => {
    const { sent, add, sendIfOlder } = owner();
    const before = performance.now();
    add('a', 'a1');
    // "now" given, so that a CI machine pausing this process between two lines cannot age the batch
    sendIfOlder(before + MAX_AGE_MS - 1);
    add('a', 'a2');
    expect(sent).toEqual([]);
    await nextTurn();
    expect(sent).toEqual([['a1', 'a2']]);
  });
});
