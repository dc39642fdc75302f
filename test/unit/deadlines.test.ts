import { setTimeout as sleep } from 'node:timers/promises';
import { Deadlines } from '../../src/redis/deadlines.ts';

describe('Deadlines (one shared timer for calls of equal length)', () => {
  test('when calls do not settle in time, then each expires once, oldest first, not before its deadline', async () => {
    const expired: Array<{ name: string; afterMs: number }> = [];
    const started = new Map<string, number>();
    const deadlines = new Deadlines<string>(30, (name) => expired.push({ name, afterMs: performance.now() - started.get(name)! }));
    started.set('first', performance.now());
    const first = deadlines.start('first');
    await sleep(10);
    started.set('second', performance.now());
    const second = deadlines.start('second');
    await sleep(100);
    expect(expired.map((e) => e.name)).toEqual(['first', 'second']);
    for (const { afterMs } of expired) expect(afterMs).toBeGreaterThanOrEqual(29);
    expect(first.settle()).toBe(false);
    expect(second.settle()).toBe(false);
  });

  test('when calls settle in time, then none expires, and a later call still gets its deadline', async () => {
    const expired: number[] = [];
    const deadlines = new Deadlines<number>(20, (n) => expired.push(n));
    for (let i = 0; i < 3_000; i += 1) expect(deadlines.start(i).settle()).toBe(true);
    const slow = deadlines.start(-1);
    await sleep(60);
    expect(expired).toEqual([-1]);
    expect(slow.settle()).toBe(false);
    const late = deadlines.start(-2);
    await sleep(5);
    expect(late.settle()).toBe(true);
    await sleep(40);
    expect(expired).toEqual([-1]);
  });
});
