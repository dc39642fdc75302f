import { type IssuedCoupon, isValidCoupon } from '../src/domain/coupon.ts';
import { type CouponStore, GateEpochChangedError, holderKey } from '../src/db/store.ts';
import type { CouponRedis } from '../src/redis/client.ts';
import { checkHolders, markPersisted } from '../src/redis/event-state.ts';
import type { Logger } from 'pino';
import type { GateStateKeeper } from '../src/gate-state.ts';
import { sleep } from '../src/loop.ts';
import type { WorkerMetrics } from './metrics.ts';
import { LATE_SLOT_MS, WriteSlots } from './write-slots.ts';

/**
 * One insert writes at most this share of a second of the cap. With every insert at its slot, a one-second window of
 * rows holds at most the cap plus one insert (5%); the other 5% of the promised cap + 10% absorbs inserts that
 * reach MySQL up to 50 ms later than others against their slots.
 */
const INSERT_SHARE_OF_SECOND = 1 / 20;


/** How often an insert gives up passed slots for later ones before it is written late all the same. */
const MAX_SLOT_TRIES = 3;

/**
 * Writes coupons to MySQL under the global rate limit: every row gets a slot on the one timeline in Redis that all
 * worker replicas share (src/redis/persist-bucket.lua), and each multi-row insert waits for the slot of its first
 * row. However many replicas run, MySQL sees at most PERSIST_RATE_PER_SEC coupon rows in any one-second window,
 * plus one insert: an insert holds at most a twentieth of a second of the cap (and at most PERSIST_BATCH_SIZE rows).
 */
export class Persister {
  readonly #redis: CouponRedis;
  readonly #store: CouponStore;
  readonly #metrics: WorkerMetrics;
  readonly #ratePerSec: number;
  /** rows per insert */
  readonly insertSize: number;
  readonly #logger: Logger | undefined;
  readonly #keeper: GateStateKeeper | undefined;

  constructor(deps: {
    redis: CouponRedis; store: CouponStore; metrics: WorkerMetrics; ratePerSec: number; batchSize: number; logger?: Logger; keeper?: GateStateKeeper;
  }) {
    this.#redis = deps.redis;
    this.#logger = deps.logger;
    this.#keeper = deps.keeper;
    this.#store = deps.store;
    this.#metrics = deps.metrics;
    this.#ratePerSec = deps.ratePerSec;
    this.insertSize = Math.max(1, Math.min(deps.batchSize, Math.floor(deps.ratePerSec * INSERT_SHARE_OF_SECOND)));
  }

  /** No slots yet: the first insert reserves them at the end of the timeline, for all the rows it is given. */
  slots(): WriteSlots {
    return new WriteSlots(this.#redis, this.#ratePerSec);
  }

  /**
   * Up to `rows` slots, but only those that start within `withinMs` of now, granted in whole inserts: what a
   * reader may take so that everything it holds is written within `withinMs`. None while the timeline is booked
   * that far ahead: `retryInMs` then tells when an insert's worth will fit.
   */
  async slotsWithin(rows: number, withinMs: number): Promise<{ slots: WriteSlots; retryInMs: number }> {
    const slots = this.slots();
    const retryInMs = await slots.reserve(rows, { withinMs, step: Math.min(rows, this.insertSize) });
    return { slots, retryInMs };
  }

  /**
   * Persists coupons in inserts of at most `insertSize` rows, each in slots of `slots` (reserving more at the end
   * of the timeline when they run out); rows already there are skipped. `onWritten` hears of each insert's rows
   * (how many, in order) once they are committed. Returns the new rows.
   */
  async persist(coupons: readonly IssuedCoupon[], slots = this.slots(), onWritten?: (rows: number) => Promise<void>): Promise<number> {
    // INSERT IGNORE would quietly truncate a malformed row; refuse it instead, so it ends in the dead-letter queue.
    const malformed = coupons.find((coupon) => !isValidCoupon(coupon));
    if (malformed) throw new Error(`malformed coupon refused: ${JSON.stringify(malformed)}`);
    let inserted = 0;
    for (let start = 0; start < coupons.length; start += this.insertSize) {
      const batch = coupons.slice(start, start + this.insertSize);
      try {
        const { current, written } = await this.#writeFenced(batch, slots, coupons.length - start);
        inserted += written;
        this.#metrics.persisted.inc(written);
        if (written < current.length) await this.#checkSkipped(current);
        for (const [eventId, ofEvent] of Map.groupBy(current, (coupon) => coupon.eventId)) {
          await markPersisted(this.#redis, eventId, ofEvent.map((coupon) => coupon.sequence));
        }
      } catch (error) {
        this.#metrics.persistFailures.inc();
        throw error;
      }
      await onWritten?.(batch.length);
    }
    return inserted;
  }

  /**
   * Checks the batch against the gate state and writes it, in its slots; checks again when a restore raced the
   * write. An epoch that stays behind MySQL's for a second (a restore that died half-way) is restored here.
   * `rowsLeft`: the rows of this persist still to write, reserved at once when the slots run out.
   */
  async #writeFenced(batch: readonly IssuedCoupon[], slots: WriteSlots, rowsLeft: number): Promise<{ current: IssuedCoupon[]; written: number }> {
    for (let attempt = 1; ; attempt++) {
      const { current, epochs, fenced } = await this.#inSlot(batch.length, slots, rowsLeft, () => this.#currentWord(batch));
      const timer = this.#metrics.batchSeconds.startTimer();
      try {
        const written = await this.#store.persistCoupons(current, epochs);
        timer();
        if (fenced.length > 0) {
          this.#metrics.fencedCoupons.inc(fenced.length);
          this.#logger?.error({ coupons: fenced }, 'coupons issued by a gate state Redis has since lost were not written');
        }
        return { current, written };
      } catch (error) {
        timer();
        if (!(error instanceof GateEpochChangedError) || attempt >= 8) throw error;
        if (attempt >= 4) await this.#keeper?.restoreBehind(error.eventIds);
        await sleep(100 * attempt);
      }
    }
  }

  /**
   * Waits for the slots of `rows` rows, then runs `prepare` (the gate-state check) and resolves to its answer,
   * leaving the insert to follow at once. A slot found passed by more than LATE_SLOT_MS once its wait and the check
   * are over (this process or Redis was slow) is given up for the next ones: a late insert would land in the
   * same second as the slots after it, and rows would pile up there. After a few tries it is written late anyway.
   */
  async #inSlot<T>(rows: number, slots: WriteSlots, rowsLeft: number, prepare: () => Promise<T>): Promise<T> {
    for (let tries = 1; ; tries++) {
      const atMs = await slots.take(rows, rowsLeft);
      const waitMs = atMs - Date.now();
      if (waitMs > 0) await sleep(waitMs);
      const prepared = await prepare();
      if (Date.now() - atMs <= LATE_SLOT_MS || tries >= MAX_SLOT_TRIES) return prepared;
    }
  }

  /**
   * Keeps of a batch only the coupons the gate state still vouches for (their user's entry carries their
   * sequence), each with the request id of that entry, and the epoch of the state that said so, for the insert's
   * fence. The others were issued by a state Redis has since lost (a flush, a failover) and were never persisted:
   * their users were free to apply again, so writing them now would take a coupon from an answer given since. They
   * are counted, logged and dropped: the loss the README documents for those cases, never a second coupon.
   */
  async #currentWord(batch: readonly IssuedCoupon[]): Promise<{ current: IssuedCoupon[]; epochs: Map<string, number>; fenced: IssuedCoupon[] }> {
    const byEvent = Map.groupBy(batch, (coupon) => coupon.eventId);
    const current: IssuedCoupon[] = [];
    const epochs = new Map<string, number>();
    const fenced: IssuedCoupon[] = [];
    for (const [eventId, coupons] of byEvent) {
      const word = await checkHolders(this.#redis, eventId, coupons);
      if (!word) throw new GateStateMissingError(eventId);
      epochs.set(eventId, word.epoch);
      coupons.forEach((coupon, i) => {
        const entry = word.current[i];
        if (!entry) fenced.push(coupon);
        // The request id the gate recorded goes to MySQL with the row, so a restore can put it back in the entry.
        else current.push(entry.requestId === undefined ? coupon : { ...coupon, requestId: entry.requestId });
      });
    }
    return { current, epochs, fenced };
  }

  /**
   * INSERT IGNORE skips a row whose holder already has one (a redelivery: fine) but also one whose sequence is
   * taken by another user, which only a Redis that lost data can cause. That second kind must not be acked as
   * done: it is reported, and the error keeps the entry pending until it reaches the dead-letter queue.
   */
  async #checkSkipped(batch: readonly IssuedCoupon[]): Promise<void> {
    const holders = await this.#store.existingHolders(batch);
    const clashing = batch.filter((coupon) => !holders.has(holderKey(coupon)));
    if (clashing.length === 0) return;
    this.#metrics.sequenceConflicts.inc(clashing.length);
    throw new Error(`sequence already taken by another user, not written: ${JSON.stringify(clashing)}`);
  }
}

/** A batch's event has no gate state in Redis right now (lost, not yet restored): it cannot be checked; try later. */
export class GateStateMissingError extends Error {
  override name = 'GateStateMissingError';
  constructor(eventId: string) {
    super(`the gate state of ${eventId} is missing in Redis; the batch waits for it to be restored`);
  }
}
