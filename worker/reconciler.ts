import type { IssuedCoupon } from '../src/domain/coupon.ts';
import type { CouponStore } from '../src/db/store.ts';
import type { CouponRedis } from '../src/redis/client.ts';
import { parseUserEntry } from '../src/redis/formats.ts';
import { EVENT_REGISTRY_KEY, eventKeys } from '../src/redis/keys.ts';
import type { OutboxAdmin } from './outbox-admin.ts';

/** Fields per HSCAN call (and user ids per MySQL lookup): about a millisecond of Redis time each. */
export const RECONCILE_SCAN_COUNT = 1_000;

/** The users of one event whose coupons the dead-letter queue holds: they are the operator's, not a gap. */
export type DeadLetteredUsers = (eventId: string) => Promise<ReadonlySet<string>>;

const noDeadLetters: DeadLetteredUsers = async () => new Set();

/** Whether coupons of the event wait in the retry queue: acked in the outbox, not yet in MySQL, and not a gap. */
export type WaitingForRetry = (eventId: string) => Promise<boolean>;

const nothingWaits: WaitingForRetry = async () => false;

/**
 * Compares the users Redis issued coupons to with the rows in MySQL. Only events whose outbox is drained
 * (nothing undelivered, nothing pending) are compared, so a coupon still on its way is never counted missing.
 *
 * However big an event, no Redis command here is long: counts are compared first (HLEN against MySQL's count,
 * less the coupons the dead-letter queue already holds), and only an event whose counts leave room for a gap is
 * scanned, RECONCILE_SCAN_COUNT users per HSCAN and one indexed MySQL lookup per page of them.
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

  /** Every coupon Redis issued that MySQL lacks, except those the dead-letter queue holds. */
  async findMissing(deadLettered: DeadLetteredUsers = noDeadLetters, waitingForRetry: WaitingForRetry = nothingWaits): Promise<IssuedCoupon[]> {
    const missing: IssuedCoupon[] = [];
    for (const eventId of await this.#eventIds()) missing.push(...await this.#missingOf(eventId, deadLettered, waitingForRetry));
    return missing;
  }

  async #eventIds(): Promise<string[]> {
    const ids = new Set<string>();
    let cursor = '0';
    do {
      const [next, page] = await this.#redis.sscan(EVENT_REGISTRY_KEY, cursor, 'COUNT', RECONCILE_SCAN_COUNT);
      for (const id of page) ids.add(id);
      cursor = next;
    } while (cursor !== '0');
    return [...ids].sort();
  }

  async #missingOf(eventId: string, deadLettered: DeadLetteredUsers, waitingForRetry: WaitingForRetry): Promise<IssuedCoupon[]> {
    const keys = eventKeys(eventId);
    // The count first, the outbox after: a coupon issued in between is then in the outbox (not drained, skipped)
    // rather than counted in the users but not yet in MySQL (a false gap). No meta hash: a restore is writing
    // the users, or must; nothing to compare yet.
    const [metaExists, issued] = await Promise.all([this.#redis.exists(keys.meta), this.#redis.hlen(keys.users)]);
    const before = await this.#outbox.groupState(keys.outbox);
    if (metaExists === 0 || !before || before.lag > 0 || before.pending > 0) return [];
    // Redis holds every persisted holder (a restore merges them in), so MySQL's count at or above the users' means
    // nothing is missing. Counting is one pass of the (event_id, user_id) index, on MySQL, not Redis.
    const persisted = await this.#store.countPersisted(eventId);
    if (persisted >= issued) return [];
    // Its coupons in the retry queue are on their way: comparing now would send them a second time.
    if (await waitingForRetry(eventId)) return [];
    const dead = await this.#deadNotPersisted(eventId, deadLettered);
    if (persisted + dead.size >= issued) return [];

    const missing = new Map<string, IssuedCoupon>();
    let cursor = '0';
    do {
      const [next, flat] = await this.#redis.hscan(keys.users, cursor, 'COUNT', RECONCILE_SCAN_COUNT);
      cursor = next;
      const page = new Map<string, string>();
      for (let i = 0; i + 1 < flat.length; i += 2) {
        const userId = flat[i]!;
        // HSCAN may return a field twice; a field that is no user id (':restoring') is no coupon.
        if (!userId.includes(':') && !dead.has(userId) && !missing.has(userId)) page.set(userId, flat[i + 1]!);
      }
      const present = await this.#store.persistedUsers(eventId, [...page.keys()]);
      for (const [userId, entry] of page) {
        if (present.has(userId)) continue;
        const { sequence, issuedAtMs } = parseUserEntry(entry);
        missing.set(userId, { eventId, userId, sequence, issuedAtMs });
      }
    } while (cursor !== '0');

    // The scan took a while: a coupon issued meanwhile may be on its way to MySQL. Only a gap seen with the outbox
    // drained and unmoved throughout is a gap; otherwise the next run looks again.
    const after = await this.#outbox.groupState(keys.outbox);
    if (!after || after.lag > 0 || after.pending > 0 || after.lastDelivered !== before.lastDelivered) return [];
    return [...missing.values()];
  }

  /** The event's dead-lettered users that MySQL still lacks (a redriven or hand-fixed coupon counts as persisted). */
  async #deadNotPersisted(eventId: string, deadLettered: DeadLetteredUsers): Promise<Set<string>> {
    const dead = [...await deadLettered(eventId)];
    const result = new Set<string>();
    for (let start = 0; start < dead.length; start += RECONCILE_SCAN_COUNT) {
      const page = dead.slice(start, start + RECONCILE_SCAN_COUNT);
      const present = await this.#store.persistedUsers(eventId, page);
      for (const userId of page) if (!present.has(userId)) result.add(userId);
    }
    return result;
  }
}
