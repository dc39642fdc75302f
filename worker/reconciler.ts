import type { IssuedCoupon } from '../src/domain/coupon.ts';
import type { CouponStore } from '../src/db/store.ts';
import type { CouponRedis } from '../src/redis/client.ts';
import { parseUserEntry } from '../src/redis/formats.ts';
import { EVENT_REGISTRY_KEY, eventKeys } from '../src/redis/keys.ts';
import type { OutboxAdmin } from './outbox-admin.ts';

/**
 * Compares the users Redis issued coupons to with the rows in MySQL. Only events whose outbox is drained
 * (nothing undelivered, nothing pending) are compared, so a coupon still on its way is never counted missing.
 */
export class Reconciler {
  readonly #redis: CouponRedis;
  readonly #store: CouponStore;
  readonly #outbox: OutboxAdmin;

  constructor(redis: CouponRedis, store: CouponStore, outbox: OutboxAdmin) {
    this.#redis = redis;
    this.#store = store;
    this.#outbox = outbox;
  }

  async findMissing(): Promise<IssuedCoupon[]> {
    const missing: IssuedCoupon[] = [];
    for (const eventId of await this.#redis.smembers(EVENT_REGISTRY_KEY)) {
      const keys = eventKeys(eventId);
      // The users first, the outbox after: a coupon issued in between is then in the outbox (not drained,
      // skipped) rather than in the users but not yet in MySQL (a false gap).
      const issued = await this.#redis.hgetall(keys.users);
      const state = await this.#outbox.groupState(keys.outbox);
      if (!state || state.lag > 0 || state.pending > 0) continue;
      const userIds = Object.keys(issued);
      // Counting is cheap on the (event_id, user_id) index; the rows are read only when the counts differ.
      if ((await this.#store.countPersisted(eventId)) >= userIds.length) continue;
      const persistedUsers = new Set((await this.#store.persistedCoupons(eventId)).map((coupon) => coupon.userId));
      for (const userId of userIds) {
        if (persistedUsers.has(userId)) continue;
        const { sequence, issuedAtMs } = parseUserEntry(issued[userId]!);
        missing.push({ eventId, userId, sequence, issuedAtMs });
      }
    }
    return missing;
  }
}
