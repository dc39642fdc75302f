import { type IssuedCoupon, isValidCoupon } from '../src/domain/coupon.ts';
import { type CouponStore, GateEpochChangedError, holderKey } from '../src/db/store.ts';
import { type CouponRedis, reservePersistSlot } from '../src/redis/client.ts';
import { checkHolders } from '../src/redis/event-state.ts';
import type { Logger } from 'pino';
import type { GateStateKeeper } from '../src/gate-state.ts';
import { sleep } from '../src/loop.ts';
import type { WorkerMetrics } from './metrics.ts';

/**
 * Writes coupons to MySQL under the global rate limit: before each multi-row insert it reserves its rows
 * on the one timeline in Redis that every worker replica shares, and waits for its slot. However many
 * replicas run, MySQL sees at most PERSIST_RATE_PER_SEC coupon rows a second.
 */
export class Persister {
  readonly #redis: CouponRedis;
  readonly #store: CouponStore;
  readonly #metrics: WorkerMetrics;
  readonly #ratePerSec: number;
  readonly #batchSize: number;
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
    // A batch is written at one instant, so it may not hold more than one second's worth of the cap.
    this.#batchSize = Math.min(deps.batchSize, deps.ratePerSec);
  }

  /** Persists coupons in batches of PERSIST_BATCH_SIZE; rows already there are skipped. Returns the new rows. */
  async persist(coupons: readonly IssuedCoupon[]): Promise<number> {
    // INSERT IGNORE would quietly truncate a malformed row; refuse it instead, so it ends in the dead-letter queue.
    const malformed = coupons.find((coupon) => !isValidCoupon(coupon));
    if (malformed) throw new Error(`malformed coupon refused: ${JSON.stringify(malformed)}`);
    let inserted = 0;
    for (let start = 0; start < coupons.length; start += this.#batchSize) {
      const batch = coupons.slice(start, start + this.#batchSize);
      const waitMs = await reservePersistSlot(this.#redis, batch.length, this.#ratePerSec);
      if (waitMs > 0) await sleep(waitMs);
      const timer = this.#metrics.batchSeconds.startTimer();
      try {
        const { current, written } = await this.#writeFenced(batch);
        inserted += written;
        if (written < current.length) await this.#checkSkipped(current);
      } catch (error) {
        this.#metrics.persistFailures.inc();
        throw error;
      } finally {
        timer();
      }
    }
    this.#metrics.persisted.inc(inserted);
    return inserted;
  }

  /**
   * Checks the batch against the gate state and writes it; checks again when a restore raced the write. An epoch
   * that stays behind MySQL's for a second (a restore that died half-way) is restored here.
   */
  async #writeFenced(batch: readonly IssuedCoupon[]): Promise<{ current: IssuedCoupon[]; written: number }> {
    for (let attempt = 1; ; attempt++) {
      const { current, epochs, fenced } = await this.#currentWord(batch);
      try {
        const written = await this.#store.persistCoupons(current, epochs);
        if (fenced.length > 0) {
          this.#metrics.fencedCoupons.inc(fenced.length);
          this.#logger?.error({ coupons: fenced }, 'coupons issued by a gate state Redis has since lost were not written');
        }
        return { current, written };
      } catch (error) {
        if (!(error instanceof GateEpochChangedError) || attempt >= 8) throw error;
        if (attempt >= 4) await this.#keeper?.restoreBehind(error.eventIds);
        await sleep(100 * attempt);
      }
    }
  }

  /**
   * Keeps of a batch only the coupons the gate state still vouches for (their user's entry carries their
   * sequence), with the epoch of the state that said so, for the insert's fence. The others were issued by a
   * state Redis has since lost (a flush, a failover) and were never persisted: their users were free to apply
   * again, so writing them now would take a coupon from an answer given since. They are counted, logged and
   * dropped: the loss the README documents for those cases, never a second coupon.
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
      coupons.forEach((coupon, i) => (word.current[i] ? current : fenced).push(coupon));
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
