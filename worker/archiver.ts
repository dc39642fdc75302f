import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { CouponEvent } from '../src/domain/coupon.ts';
import type { CouponStore } from '../src/db/store.ts';
import { deleteEventState } from '../src/redis/archive-event.ts';
import type { CouponRedis } from '../src/redis/client.ts';
import { EVENT_CHANGED_CHANNEL, EVENT_REGISTRY_KEY, eventKeys } from '../src/redis/keys.ts';
import type { OutboxAdmin } from './outbox-admin.ts';

/** held (SET NX PX) by the one worker that archives, so two replicas never archive the same event at once */
const ARCHIVE_LOCK_KEY = 'coupon:archive-lock';
const ARCHIVE_LOCK_MS = 60_000;
/** events looked at per pass: a backlog of ended events is worked off a page per period */
const ARCHIVE_PAGE = 200;

/**
 * Ends an event's life in Redis. An event whose end is EVENT_RETENTION behind us and whose coupons are all in
 * MySQL (the counter equals MySQL's count, the outbox has nothing undelivered or pending) is archived: marked in
 * MySQL first, then its gate state deleted and its registry entry removed in one script. From then on the
 * registry no longer names it, so no loop of any worker visits it, and no restore writes it back.
 *
 * MySQL's mark comes first: a crash between the two leaves an archived event with keys left over, and every pass
 * begins by deleting the keys of registered events MySQL calls archived (also what a restore that raced the
 * archiving wrote back). The other order could leave a live event without its keys.
 */
export class EventArchiver {
  readonly #redis: CouponRedis;
  readonly #store: CouponStore;
  readonly #outbox: OutboxAdmin;
  readonly #logger: Logger;
  readonly #retentionMs: number;

  constructor(deps: { redis: CouponRedis; store: CouponStore; outbox: OutboxAdmin; logger: Logger; retentionMs: number }) {
    this.#redis = deps.redis;
    this.#store = deps.store;
    this.#outbox = deps.outbox;
    this.#logger = deps.logger;
    this.#retentionMs = deps.retentionMs;
  }

  /** One pass, unless another worker is archiving: the ids whose Redis state was removed. */
  async archiveDue(): Promise<string[]> {
    const token = randomUUID();
    if ((await this.#redis.set(ARCHIVE_LOCK_KEY, token, 'PX', ARCHIVE_LOCK_MS, 'NX')) !== 'OK') return [];
    try {
      const removed = await this.#removeLeftovers();
      const endedBy = new Date(Date.now() - this.#retentionMs);
      for (const event of await this.#store.listArchivable(endedBy, ARCHIVE_PAGE)) {
        if (await this.#archive(event, endedBy)) removed.push(event.id);
      }
      // The apis drop their sold-out flags of these events: a holder asking again then reaches the archived path
      // (its coupon from MySQL) instead of a 410 from a flag set while the event sold.
      for (const id of removed) await this.#redis.publish(EVENT_CHANGED_CHANNEL, id);
      if (removed.length > 0) this.#logger.info({ events: removed.length, ids: removed.slice(0, 20) }, 'archived ended events');
      return removed;
    } finally {
      await this.#release(token);
    }
  }

  /** Registered events that MySQL calls archived: their keys are deleted whatever they hold. */
  async #removeLeftovers(): Promise<string[]> {
    const registered = await this.#redis.smembers(EVENT_REGISTRY_KEY);
    const archived = [...(await this.#store.archivedAmong(registered))];
    for (const id of archived) await deleteEventState(this.#redis, id, null);
    return archived;
  }

  async #archive(event: CouponEvent, endedBy: Date): Promise<boolean> {
    const keys = eventKeys(event.id);
    const [endsAtRaw, issuedRaw, streamExists] = await Promise.all([
      this.#redis.hget(keys.meta, 'endsAt'), this.#redis.get(keys.issued), this.#redis.exists(keys.outbox),
    ]);
    if (endsAtRaw === null && issuedRaw === null && streamExists === 0) {
      // No gate state at all (never installed, or lost and MySQL is all there is): only MySQL's mark is missing.
      if (await this.#store.archiveEvent(event.id, endedBy)) await deleteEventState(this.#redis, event.id, null);
      return true;
    }
    // Redis's own end rules: an end moved later there (or a state not yet installed whole) is not archived yet.
    const endsAtMs = endsAtRaw ? Number(endsAtRaw) : Number.NaN;
    if (!(endsAtMs <= endedBy.getTime())) return false;
    const state = await this.#outbox.groupState(keys.outbox);
    if (state && (state.lag > 0 || state.pending > 0)) return false;
    const issued = Number(issuedRaw ?? 0);
    if ((await this.#store.countPersisted(event.id)) !== issued) return false;
    if (!(await this.#store.archiveEvent(event.id, endedBy))) return false;
    const outcome = await deleteEventState(this.#redis, event.id, { issued, endsAtMs });
    if (outcome === 'moved') {
      // Issued or re-ended since the check: live again.
      await this.#store.unarchiveEvent(event.id);
      this.#logger.warn({ event: event.id }, 'event changed while it was archived; left live');
      return false;
    }
    return true;
  }

  async #release(token: string): Promise<void> {
    try {
      if ((await this.#redis.get(ARCHIVE_LOCK_KEY)) === token) await this.#redis.del(ARCHIVE_LOCK_KEY);
    } catch {
      // the lock expires by itself
    }
  }
}
