import { setTimeout as sleep } from 'node:timers/promises';
import { Admission, MIN_IN_FLIGHT } from '../../src/api/admission.ts';

describe('admission control of applies', () => {
  test('when slots are free and nobody waits, then a request is admitted at once, without a promise', () => {
    const admission = new Admission({ maxInFlight: 2, loopDelayTargetMs: 0, maxQueued: 10, queueTimeoutMs: 1_000 });
    expect(admission.acquire()).toBe(true);
    expect(admission.acquire()).toBe(true);
    expect(admission.inFlight).toBe(2);
    expect(admission.acquire()).toBeInstanceOf(Promise);
    admission.close();
  });

  test('when slots free up, then the waiters are admitted in the order they came, one per slot', async () => {
    const admission = new Admission({ maxInFlight: 1, loopDelayTargetMs: 0, maxQueued: 10, queueTimeoutMs: 5_000 });
    expect(admission.acquire()).toBe(true);
    const order: number[] = [];
    const waiters = [0, 1, 2, 3].map((index) => (admission.acquire() as Promise<unknown>).then((outcome) => {
      order.push(index);
      return outcome;
    }));
    expect(admission.queued).toBe(4);
    for (let released = 0; released < 4; released++) {
      admission.release();
      await Promise.resolve();
      await Promise.resolve();
      expect(order).toHaveLength(released + 1);
      expect(admission.inFlight).toBe(1);
    }
    expect(order).toEqual([0, 1, 2, 3]);
    expect(await Promise.all(waiters)).toEqual([true, true, true, true]);
  });

  test('when a slot frees up, then a newcomer does not overtake a waiter', async () => {
    const admission = new Admission({ maxInFlight: 1, loopDelayTargetMs: 0, maxQueued: 10, queueTimeoutMs: 5_000 });
    admission.acquire();
    const waiter = admission.acquire() as Promise<unknown>;
    admission.release();
    // The slot went to the waiter: the newcomer must wait behind it.
    expect(admission.acquire()).toBeInstanceOf(Promise);
    expect(await waiter).toBe(true);
    admission.close();
  });

  test('when the queue is full, then one more request is shed at once', () => {
    const admission = new Admission({ maxInFlight: 1, loopDelayTargetMs: 0, maxQueued: 2, queueTimeoutMs: 5_000 });
    admission.acquire();
    admission.acquire();
    admission.acquire();
    expect(admission.acquire()).toBe('queue_full');
    admission.close();
  });

  test('when the queue timeout is 0, then nobody waits: a request finding no slot is shed at once', () => {
    const admission = new Admission({ maxInFlight: 1, loopDelayTargetMs: 0, maxQueued: 100, queueTimeoutMs: 0 });
    admission.acquire();
    expect(admission.acquire()).toBe('queue_full');
  });

  test('when a request waits past its timeout, then it is shed without a slot being freed, and the later ones keep their place', async () => {
    const admission = new Admission({ maxInFlight: 1, loopDelayTargetMs: 0, maxQueued: 10, queueTimeoutMs: 40 });
    admission.acquire();
    const first = admission.acquire() as Promise<unknown>;
    await sleep(20);
    const second = admission.acquire() as Promise<unknown>;
    const started = performance.now();
    expect(await first).toBe('queue_timeout');
    expect(performance.now() - started).toBeLessThan(40);
    expect(admission.queued).toBe(1);
    admission.release();
    expect(await second).toBe(true);
    expect(admission.inFlight).toBe(1);
  });

  test('when a waiter has expired by the time a slot frees up, then the slot goes to the next one within its deadline', async () => {
    let now = 0;
    const admission = new Admission({ maxInFlight: 1, loopDelayTargetMs: 0, maxQueued: 10, queueTimeoutMs: 100 }, () => now);
    admission.acquire();
    const stale = admission.acquire() as Promise<unknown>;
    now = 60;
    const fresh = admission.acquire() as Promise<unknown>;
    now = 120;
    admission.release();
    expect(await stale).toBe('queue_timeout');
    expect(await fresh).toBe(true);
    admission.close();
  });

  test('when it closes, then every waiter is answered', async () => {
    const admission = new Admission({ maxInFlight: 1, loopDelayTargetMs: 0, maxQueued: 10, queueTimeoutMs: 60_000 });
    admission.acquire();
    const waiters = [admission.acquire(), admission.acquire()];
    admission.close();
    expect(await Promise.all(waiters)).toEqual(['queue_timeout', 'queue_timeout']);
  });
});

describe('the adaptive limit (event-loop delay)', () => {
  test('when the loop runs later than the target, then the limit is cut in proportion, and never below the floor', () => {
    const admission = new Admission({ maxInFlight: 10_000, loopDelayTargetMs: 100, maxQueued: 10, queueTimeoutMs: 100 });
    admission.adjust(200);
    expect(admission.limit).toBe(5_000);
    admission.adjust(110);
    // at least a tenth off, however little the target is passed
    expect(admission.limit).toBe(4_500);
    admission.adjust(10_000);
    expect(admission.limit).toBe(450);
    admission.adjust(10_000);
    expect(admission.limit).toBe(MIN_IN_FLIGHT);
  });

  test('when the maximum is below the floor, then the limit stays at the maximum', () => {
    const admission = new Admission({ maxInFlight: 40, loopDelayTargetMs: 100, maxQueued: 10, queueTimeoutMs: 100 });
    admission.adjust(10_000);
    expect(admission.limit).toBe(40);
  });

  test('when the loop is well within the target and the limit was in use, then it grows by a tenth up to the maximum, admitting waiters', async () => {
    const admission = new Admission({ maxInFlight: 300, loopDelayTargetMs: 100, maxQueued: 100, queueTimeoutMs: 60_000 });
    admission.adjust(10_000);
    expect(admission.limit).toBe(MIN_IN_FLIGHT);
    for (let slot = 0; slot < MIN_IN_FLIGHT; slot++) expect(admission.acquire()).toBe(true);
    const waiters = Array.from({ length: 13 }, () => admission.acquire());
    admission.adjust(10);
    expect(admission.limit).toBe(MIN_IN_FLIGHT + 13);
    expect(await Promise.all(waiters)).toEqual(Array(13).fill(true));
    for (let step = 0; step < 20; step++) {
      while (admission.inFlight < admission.limit) admission.acquire();
      admission.acquire();
      admission.adjust(10);
    }
    expect(admission.limit).toBe(300);
    admission.close();
  });

  test('when the limit was not in use, then a quiet loop does not raise it', () => {
    const admission = new Admission({ maxInFlight: 1_000, loopDelayTargetMs: 100, maxQueued: 10, queueTimeoutMs: 100 });
    admission.adjust(10_000);
    admission.adjust(0);
    expect(admission.limit).toBe(MIN_IN_FLIGHT);
  });

  test('when the target is 0, then the limit stays at the maximum whatever the loop does', () => {
    const admission = new Admission({ maxInFlight: 100, loopDelayTargetMs: 0, maxQueued: 10, queueTimeoutMs: 100 });
    admission.adjust(5_000);
    expect(admission.limit).toBe(100);
  });
});
