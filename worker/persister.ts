import { type IssuedCoupon, isValidCoupon } from '../src/domain/coupon.ts';
import { type CouponStore, holderKey } from '../src/db/store.ts';
import { type CouponRedis, reservePersistSlot } from '../src/redis/client.ts';
import { sleep } from '../src/shutdown.ts';
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

  constructor(deps: { redis: CouponRedis; store: CouponStore; metrics: WorkerMetrics; ratePerSec: number; batchSize: number }) {
    this.#redis = deps.redis;
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
        const written = await this.#store.persistCoupons(batch);
        inserted += written;
        if (written < batch.length) await this.#checkSkipped(batch);
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
