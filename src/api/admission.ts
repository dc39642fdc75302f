/**
 * Admission control of the apply route: at most `limit` applies past this point at once per process, the others
 * wait in one first-come-first-served queue, and a request that cannot start within `queueTimeoutMs` (or finds
 * `maxQueued` already waiting) is shed: the route answers it 503 with Retry-After at once, before its body is read.
 * Without a bound, a burst of 10,000 connections put 10,000 requests in flight at once: 400 MB of a 512 MiB pod,
 * and answers slower than the clients' deadline (docs/reliability.md, overload).
 *
 * The limit adapts to the event loop's delay (AIMD, in the spirit of Netflix's concurrency-limits, with the loop's
 * delay as the latency signal): in one node process every request, admitted or not, waits for the loop, so a
 * loop that runs late means more work was taken on than the process can answer in time. Above `loopDelayTargetMs`
 * the limit is cut in proportion (target / delay, not below 128), so more of the burst is shed cheaply and, told Retry-After,
 * steps back; below half the target, with the limit in use, it grows by a tenth, up to `maxInFlight` (the bound
 * on memory).
 *
 * Order: a slot freed goes to the longest waiter, never to a newcomer, so shedding does not reorder who came
 * first among those admitted. Every waiter has the same timeout, so the queue's head always has the earliest
 * deadline: one timer, armed for the head, sheds what has waited too long.
 */
export interface AdmissionLimits {
  /** applies admitted at once (reading the body, the gate's round trip, the answer), at most */
  readonly maxInFlight: number;
  /** the event-loop delay the limit adapts to; 0 keeps the limit at maxInFlight */
  readonly loopDelayTargetMs: number;
  /** requests waiting for a slot; one more is shed at once */
  readonly maxQueued: number;
  /** the longest a request waits for a slot before it is shed */
  readonly queueTimeoutMs: number;
}

export type Admitted = true;
/** why a request was not admitted: the queue was full, or its wait passed the timeout */
export type Shed = 'queue_full' | 'queue_timeout';

interface Waiter {
  readonly deadline: number;
  readonly settle: (outcome: Admitted | Shed) => void;
}

/**
 * The adaptive limit never goes below this (or maxInFlight, if lower): a process always keeps this many gate calls
 * going. A loop can run late for reasons no limit helps (a CPU shared with others, throttled by a CPU limit): a
 * floor of 16 then admitted 16 at a time, and goodput fell to a few hundred a second while the CPU was elsewhere.
 */
export const MIN_IN_FLIGHT = 128;

export class Admission {
  readonly #limits: AdmissionLimits;
  readonly #now: () => number;
  #limit: number;
  /** whether every slot was taken at some point since the last adjustment: only then may the limit grow */
  #limitReached = false;
  #inFlight = 0;
  /** FIFO: the live waiters are queue[head..]; the array is compacted when half of it is spent */
  #queue: Waiter[] = [];
  #head = 0;
  #timer: NodeJS.Timeout | undefined;

  constructor(limits: AdmissionLimits, now: () => number = () => performance.now()) {
    this.#limits = limits;
    this.#now = now;
    this.#limit = limits.maxInFlight;
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** applies admitted at once now: maxInFlight, or less while the event loop runs late */
  get limit(): number {
    return this.#limit;
  }

  /**
   * One step of the adaptive limit, given the event loop's worst delay since the last step: cut in proportion
   * when over the target (at least by a tenth, at most to a tenth), grown by a tenth when well under it and the
   * limit was in use. A raised limit admits waiters at once.
   */
  adjust(loopDelayMs: number): void {
    const target = this.#limits.loopDelayTargetMs;
    if (target === 0) return;
    if (loopDelayMs > target) {
      const factor = Math.min(0.9, Math.max(0.1, target / loopDelayMs));
      this.#limit = Math.max(Math.min(MIN_IN_FLIGHT, this.#limits.maxInFlight), Math.floor(this.#limit * factor));
    } else if (loopDelayMs < target / 2 && this.#limitReached) {
      this.#limit = Math.min(this.#limits.maxInFlight, this.#limit + Math.max(1, Math.ceil(this.#limit / 10)));
      while (this.#inFlight < this.#limit && this.queued > 0) this.#admitNext();
    }
    this.#limitReached = this.#inFlight >= this.#limit;
  }

  get queued(): number {
    return this.#queue.length - this.#head;
  }

  /**
   * Takes a slot: `true` at once when one is free and nobody waits (no promise on the uncongested path), else a
   * promise of `true` once a slot is this request's, or of the reason it was shed. Every `true` must be paired
   * with one release().
   */
  acquire(): Admitted | Shed | Promise<Admitted | Shed> {
    if (this.#inFlight < this.#limit && this.queued === 0) {
      this.#inFlight++;
      return true;
    }
    this.#limitReached = true;
    if (this.queued >= this.#limits.maxQueued || this.#limits.queueTimeoutMs === 0) return 'queue_full';
    return new Promise((settle) => {
      this.#queue.push({ deadline: this.#now() + this.#limits.queueTimeoutMs, settle });
      if (this.queued === 1) this.#armTimer();
    });
  }

  /** Gives a slot back: to the longest waiter still within its deadline, if any, while within the limit. */
  release(): void {
    this.#inFlight--;
    if (this.#inFlight < this.#limit) this.#admitNext();
  }

  #admitNext(): void {
    this.#shedExpired();
    const next = this.#shift();
    if (next === undefined) return;
    this.#inFlight++;
    next.settle(true);
    if (this.queued === 0) this.#clearTimer();
  }

  /** Sheds every waiter (shutdown): each is answered rather than left hanging. */
  close(): void {
    this.#clearTimer();
    for (let waiter = this.#shift(); waiter !== undefined; waiter = this.#shift()) waiter.settle('queue_timeout');
  }

  #shedExpired(): void {
    const now = this.#now();
    while (this.queued > 0 && this.#queue[this.#head]!.deadline <= now) this.#shift()!.settle('queue_timeout');
  }

  #shift(): Waiter | undefined {
    if (this.queued === 0) return undefined;
    const waiter = this.#queue[this.#head]!;
    this.#head++;
    if (this.#head === this.#queue.length) {
      this.#queue = [];
      this.#head = 0;
    } else if (this.#head >= 1024 && this.#head * 2 >= this.#queue.length) {
      this.#queue = this.#queue.slice(this.#head);
      this.#head = 0;
    }
    return waiter;
  }

  #armTimer(): void {
    this.#clearTimer();
    if (this.queued === 0) return;
    const wait = Math.max(0, this.#queue[this.#head]!.deadline - this.#now());
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#shedExpired();
      this.#armTimer();
    }, Math.ceil(wait));
    this.#timer.unref();
  }

  #clearTimer(): void {
    if (this.#timer === undefined) return;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}

/**
 * Measures how late the event loop runs (a timer due every `intervalMs`: how much later it fired) and feeds the
 * worst delay of each `stepMs` to Admission.adjust(). A loop blocked for a second fires once, a second late: the
 * step after it sees that second.
 */
export class LoopDelayMonitor {
  readonly #admission: Admission;
  readonly #intervalMs: number;
  readonly #stepMs: number;
  #timer: NodeJS.Timeout | undefined;
  #worst = 0;
  #last = 0;
  #stepStarted = 0;

  constructor(admission: Admission, options: { intervalMs?: number; stepMs?: number } = {}) {
    this.#admission = admission;
    this.#intervalMs = options.intervalMs ?? 10;
    this.#stepMs = options.stepMs ?? 50;
  }

  start(): void {
    this.#last = this.#stepStarted = performance.now();
    this.#timer = setInterval(() => this.#tick(), this.#intervalMs);
    this.#timer.unref();
  }

  close(): void {
    clearInterval(this.#timer);
  }

  #tick(): void {
    const now = performance.now();
    this.#worst = Math.max(this.#worst, now - this.#last - this.#intervalMs);
    this.#last = now;
    if (now - this.#stepStarted < this.#stepMs) return;
    this.#admission.adjust(this.#worst);
    this.#worst = 0;
    this.#stepStarted = now;
  }
}
