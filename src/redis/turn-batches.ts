/**
 * The batches of one event-loop turn, one per key (an event id): a batch is started on first use and sent at the end
 * of the turn it started in (setImmediate, after the I/O callbacks that parsed this turn's requests), or earlier by
 * its owner (full, or its arguments changed). Nothing waits on a timer: a lone request goes out at the end of its
 * turn. GateBatcher (the gate's calls) and HolderReads (the reads behind sold-out answers) batch this way.
 *
 * A turn can last seconds. libuv polls again at once while each poll returns a full set of events (1,024; up to
 * 48 times in uv__io_poll) before it runs timers and setImmediate: an api under 10,000 connections went 3.5-5.1 s without a check
 * phase, answering requests all along. A batch waiting for the end of such a turn waited 2.3 s, and its client
 * gave up. So every apply first sends the batches that have filled for longer than MAX_AGE_MS (sendIfOlder, through
 * ApplyForCoupon.sendAgedBatches), whichever event they are for: while the poll goes on, applies keep arriving, and a
 * batch waits about that long.
 */
/** how long the batches of a turn fill before the next apply sends them */
export const MAX_AGE_MS = 10;

export class TurnBatches<B> {
  readonly #filling = new Map<string, B>();
  readonly #send: (batch: B) => void;
  #flushQueued = false;
  /** when the first batch still filling was started */
  #startedAt = 0;

  constructor(send: (batch: B) => void) {
    this.#send = send;
  }

  /** the batch `key` is filling this turn, if any */
  current(key: string): B | undefined {
    return this.#filling.get(key);
  }

  /** makes `batch` the one `key` fills this turn; it is sent at the end of the turn unless sent before */
  start(key: string, batch: B): B {
    if (this.#filling.size === 0) this.#startedAt = performance.now();
    this.#filling.set(key, batch);
    if (!this.#flushQueued) {
      this.#flushQueued = true;
      setImmediate(this.#endOfTurn);
    }
    return batch;
  }

  /** sends `key`'s batch now; the key's next request starts a new one */
  send(key: string, batch: B): void {
    if (this.#filling.get(key) === batch) this.#filling.delete(key);
    this.#send(batch);
  }

  /** sends every batch filling, if the first was started more than MAX_AGE_MS before `now` */
  sendIfOlder(now: number): void {
    if (this.#filling.size > 0 && now - this.#startedAt > MAX_AGE_MS) this.#sendAll();
  }

  readonly #endOfTurn = (): void => {
    this.#flushQueued = false;
    this.#sendAll();
  };

  #sendAll(): void {
    for (const [key, batch] of this.#filling) this.send(key, batch);
  }
}
