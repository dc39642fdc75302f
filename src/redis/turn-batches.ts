/**
 * The batches of one event-loop turn, one per key (an event id): a batch is started on first use and sent at the end
 * of the turn it started in (setImmediate, after the I/O callbacks that parsed this turn's requests), or earlier by
 * its owner (full, or its arguments changed). Nothing waits on a timer: a lone request goes out at the end of its
 * turn. GateBatcher (the gate's calls) and HolderReads (the reads behind sold-out answers) batch this way.
 */
export class TurnBatches<B> {
  readonly #filling = new Map<string, B>();
  readonly #send: (batch: B) => void;
  #flushQueued = false;

  constructor(send: (batch: B) => void) {
    this.#send = send;
  }

  /** the batch `key` is filling this turn, if any */
  current(key: string): B | undefined {
    return this.#filling.get(key);
  }

  /** makes `batch` the one `key` fills this turn; it is sent at the end of the turn unless sent before */
  start(key: string, batch: B): B {
    this.#filling.set(key, batch);
    if (!this.#flushQueued) {
      this.#flushQueued = true;
      setImmediate(this.#flush);
    }
    return batch;
  }

  /** sends `key`'s batch now; the key's next request starts a new one */
  send(key: string, batch: B): void {
    if (this.#filling.get(key) === batch) this.#filling.delete(key);
    this.#send(batch);
  }

  readonly #flush = (): void => {
    this.#flushQueued = false;
    for (const [key, batch] of this.#filling) this.send(key, batch);
  };
}
