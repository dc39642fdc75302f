/**
 * Deadlines for calls that all wait the same time, sharing one timer: a call joins the end of a list (calls of
 * equal length expire in the order they started), a call that settles in time leaves the list at once, and one
 * timer, set for the oldest call still waiting, expires every call whose time has come. No timer object per
 * call, and nothing of a settled call is kept until a timer fires (which would carry it into the old
 * generation of the heap): on the apply path this costs less than a setTimeout and clearTimeout per call.
 *
 * The expiry runs in setImmediate, after the event loop's I/O phase: a reply already waiting in the socket of
 * a busy process is read first, so a slow event loop does not turn answered calls into timeouts; only a Redis
 * that is really slow does.
 */
export class Deadlines<T> {
  readonly #ms: number;
  readonly #onExpired: (state: T) => void;
  #head: Call<T> | undefined;
  #tail: Call<T> | undefined;
  #armed = false;

  constructor(ms: number, onExpired: (state: T) => void) {
    this.#ms = ms;
    this.#onExpired = onExpired;
  }

  /** A call started now; settle() it when it ends, and onExpired gets its state if it has not by the deadline. */
  start(state: T): Call<T> {
    const call = new Call(this, performance.now() + this.#ms, state);
    call.prev = this.#tail;
    if (this.#tail) this.#tail.next = call;
    else this.#head = call;
    this.#tail = call;
    if (!this.#armed) this.#arm(this.#ms);
    return call;
  }

  /** Takes a call out of the list (settled, or expiring). */
  unlink(call: Call<T>): void {
    if (call.prev) call.prev.next = call.next;
    else this.#head = call.next;
    if (call.next) call.next.prev = call.prev;
    else this.#tail = call.prev;
    call.prev = undefined;
    call.next = undefined;
  }

  #arm(ms: number): void {
    this.#armed = true;
    setTimeout(() => setImmediate(() => this.#expire()), Math.max(1, Math.ceil(ms))).unref();
  }

  #expire(): void {
    this.#armed = false;
    const now = performance.now();
    for (let call = this.#head; call && call.at <= now; call = this.#head) {
      call.settled = true;
      this.unlink(call);
      this.#onExpired(call.state as T);
      call.state = undefined;
    }
    if (this.#head) this.#arm(this.#head.at - now);
  }
}

export class Call<T> {
  settled = false;
  readonly at: number;
  state: T | undefined;
  prev: Call<T> | undefined;
  next: Call<T> | undefined;
  readonly #deadlines: Deadlines<T>;

  constructor(deadlines: Deadlines<T>, at: number, state: T) {
    this.#deadlines = deadlines;
    this.at = at;
    this.state = state;
  }

  /** Marks the call ended and takes it out of the list; false when its deadline has expired it already. */
  settle(): boolean {
    if (this.settled) return false;
    this.settled = true;
    this.#deadlines.unlink(this);
    this.state = undefined;
    return true;
  }
}
