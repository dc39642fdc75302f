/**
 * Deadlines for calls that all wait the same time, sharing one timer: a call joins the end of a queue (calls
 * of equal length expire in the order they started), and one timer, set for the oldest call still waiting,
 * expires every call whose time has come. A call that settles in time is only marked; the queue drops it when
 * it reaches it. No timer and no timer object per call, which on the apply path cost more than the queue.
 *
 * The expiry runs in setImmediate, after the event loop's I/O phase: a reply already waiting in the socket of
 * a busy process is read first, so a slow event loop does not turn answered calls into timeouts; only a Redis
 * that is really slow does.
 */
export class Deadlines<T> {
  readonly #ms: number;
  readonly #onExpired: (state: T) => void;
  #queue: Array<Call<T>> = [];
  #head = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(ms: number, onExpired: (state: T) => void) {
    this.#ms = ms;
    this.#onExpired = onExpired;
  }

  /** A call started now; settle() it when it ends, and onExpired gets it if it has not after the deadline. */
  start(state: T): Call<T> {
    const call = new Call(performance.now() + this.#ms, state);
    this.#queue.push(call);
    if (this.#timer === undefined) this.#arm(this.#ms);
    return call;
  }

  #arm(ms: number): void {
    this.#timer = setTimeout(() => setImmediate(() => this.#expire()), Math.max(1, Math.ceil(ms)));
    this.#timer.unref();
  }

  #expire(): void {
    const now = performance.now();
    const queue = this.#queue;
    while (this.#head < queue.length) {
      const call = queue[this.#head]!;
      if (!call.settled && call.at > now) break;
      this.#head += 1;
      if (!call.settled) {
        call.settled = true;
        this.#onExpired(call.state);
      }
    }
    // Drop the expired part of the array once it is most of it.
    if (this.#head > 1024 && this.#head * 2 > queue.length) {
      this.#queue = queue.slice(this.#head);
      this.#head = 0;
    }
    const next = this.#queue[this.#head];
    this.#timer = undefined;
    if (next) this.#arm(next.at - now);
    else if (this.#head > 0) {
      this.#queue = [];
      this.#head = 0;
    }
  }
}

export class Call<T> {
  settled = false;
  readonly at: number;
  readonly state: T;

  constructor(at: number, state: T) {
    this.at = at;
    this.state = state;
  }

  /** Marks the call ended; false when its deadline has expired it already. */
  settle(): boolean {
    if (this.settled) return false;
    this.settled = true;
    return true;
  }
}
