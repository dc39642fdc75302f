import { type CouponRedis, reservePersistSlot } from '../src/redis/client.ts';

/**
 * How late a reserved slot may still be written. A slot that passed by more (this process, Redis or the read that
 * filled it was slow) is skipped, not caught up on: writing it now would put its rows into a second that other
 * slots already fill.
 */
export const LATE_SLOT_MS = 25;

/**
 * Write slots one holder reserved on the global timeline, used in order. Rows go only into slots of their own: an
 * insert at the time of its first slot, never earlier, and a slot that passed unused by more than LATE_SLOT_MS is
 * skipped rather than caught up on, so no burst follows a wait. Slots left over can be given back.
 */
export class WriteSlots {
  readonly #redis: CouponRedis;
  readonly #ratePerSec: number;
  readonly #intervalMs: number;
  /** reserved ranges not used up yet, oldest first: the time of the next slot (this process's clock), the slots left, the range's end on the timeline */
  readonly #ranges: Array<{ nextAtMs: number; rows: number; end: string }> = [];
  #deadlineMs: number | undefined;

  constructor(redis: CouponRedis, ratePerSec: number) {
    this.#redis = redis;
    this.#ratePerSec = ratePerSec;
    this.#intervalMs = 1_000 / ratePerSec;
  }

  /** Slots reserved and not used yet. */
  get rows(): number {
    return this.#ranges.reduce((sum, range) => sum + range.rows, 0);
  }

  /** Reserves `rows` more slots (see reservePersistSlot's options); resolves to the ms to wait when none were granted. */
  async reserve(rows: number, options: { withinMs?: number; step?: number } = {}): Promise<number> {
    // The wait counts from the moment Redis ran the script: that is when the request was sent, give or take its
    // way there. The moment its answer is read here may be much later (this event loop was busy) and varies.
    const sentAtMs = Date.now();
    const grant = await reservePersistSlot(this.#redis, rows, this.#ratePerSec, options);
    if (grant.rows === 0) return grant.waitMs;
    this.#ranges.push({ nextAtMs: sentAtMs + grant.waitMs, rows: grant.rows, end: grant.end });
    return 0;
  }

  /** Makes the slots left exactly `rows`: reserves what is missing, gives back what is too many (when it can). */
  async fit(rows: number): Promise<void> {
    const have = this.rows;
    if (have < rows) await this.reserve(rows - have);
    else if (have > rows) await this.#giveBack(have - rows);
  }

  /**
   * The time of the next `rows` slots in a row, for one insert. Slots passed by more than LATE_SLOT_MS are skipped,
   * and so is a range's remainder too short for the insert; with none left, `need` more are reserved at the end of
   * the timeline first, but only slots that start before the deadline (see writeBy): with none there, the insert
   * goes now, late, rather than after it.
   */
  async take(rows: number, need = rows): Promise<number> {
    for (;;) {
      const range = this.#ranges[0];
      if (!range) {
        if (this.#deadlineMs === undefined) {
          await this.reserve(Math.max(rows, need));
          continue;
        }
        const withinMs = this.#deadlineMs - Date.now();
        if (withinMs >= 1 && (await this.reserve(Math.max(rows, need), { withinMs, step: rows })) === 0) continue;
        this.#deadlineMs = Date.now();
        return Date.now();
      }
      const lateMs = Date.now() - range.nextAtMs;
      if (lateMs > LATE_SLOT_MS) {
        const skipped = Math.min(range.rows, Math.ceil(lateMs / this.#intervalMs));
        range.rows -= skipped;
        range.nextAtMs += skipped * this.#intervalMs;
      }
      if (range.rows < rows) {
        this.#ranges.shift();
        continue;
      }
      const atMs = range.nextAtMs;
      range.rows -= rows;
      range.nextAtMs += rows * this.#intervalMs;
      if (range.rows === 0) this.#ranges.shift();
      return atMs;
    }
  }

  /**
   * Rows written in these slots must be written by `deadlineMs` (this process's clock): entries pending longer are
   * claimed by other workers. Slots that passed unused are then replaced only by slots before it.
   */
  writeBy(deadlineMs: number): void {
    this.#deadlineMs = deadlineMs;
  }

  /** Gives back every slot not used: they are free for others at once if no reservation came after them. */
  async release(): Promise<void> {
    await this.#giveBack(this.rows);
    this.#ranges.length = 0;
  }

  /** Only the end of the last range can be the end of the timeline, so only its slots can be given back. */
  async #giveBack(rows: number): Promise<void> {
    const last = this.#ranges.at(-1);
    if (!last || rows <= 0) return;
    const count = Math.min(rows, last.rows);
    const answer = await reservePersistSlot(this.#redis, -count, this.#ratePerSec, { end: last.end });
    if (answer.rows === 0) return;
    last.rows -= count;
    last.end = answer.end;
    if (last.rows === 0) this.#ranges.pop();
  }
}
