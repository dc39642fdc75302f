import type { IssuedCoupon } from '../src/domain/coupon.ts';
import type { CouponStore } from '../src/db/store.ts';
import type { CouponRedis } from '../src/redis/client.ts';
import { EVENT_REGISTRY_KEY, eventKeys, parseUserEntry } from '../src/redis/keys.ts';
import type { Outbox } from './outbox.ts';

/**
 * Compares the users Redis issued coupons to with the rows in MySQL. Only events whose outbox is drained
 * (nothing undelivered, nothing pending) are compared, so a coupon still on its way is never counted missing.
 */
export class Reconciler {
  readonly #redis: CouponRedis;
  readonly #store: CouponStore;
  readonly #outbox: Outbox;

  constructor(redis: CouponRedis, store: CouponStore, outbox: Outbox) {
    this.#redis = redis;
    this.#store = store;
    this.#outbox = outbox;
  }

  async findMissing(): Promise<IssuedCoupon[]> {
    const missing: IssuedCoupon[] = [];
    for (const eventId of await this.#redis.smembers(EVENT_REGISTRY_KEY)) {
      const state = await this.#outbox.groupState(eventKeys(eventId).outbox);
      if (!state || state.lag > 0 || state.pending > 0) continue;
      const [issued, persisted] = await Promise.all([this.#redis.hgetall(eventKeys(eventId).users), this.#store.persistedCoupons(eventId)]);
      const persistedUsers = new Set(persisted.map((coupon) => coupon.userId));
      for (const [userId, value] of Object.entries(issued)) {
        if (!persistedUsers.has(userId)) missing.push({ eventId, userId, ...parseUserEntry(value) });
      }
    }
    return missing;
  }
}
