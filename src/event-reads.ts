import type { CouponEvent, EventStatus } from './domain/coupon.ts';
import { eventStatus } from './domain/coupon.ts';
import type { CouponStore } from './db/store.ts';
import { type CouponRedis, redisNowMs } from './redis/client.ts';
import { missingStateCause } from './redis/event-state.ts';
import { parseUserEntry } from './redis/formats.ts';
import { EVENT_REGISTRY_KEY, eventKeys } from './redis/keys.ts';
import { outboxGroupState } from './redis/outbox-state.ts';

export interface EventView {
  id: string;
  name: string;
  totalQuantity: number;
  issued: number;
  persisted: number;
  startsAt: string;
  endsAt: string | null;
  status: EventStatus;
}

/** how long an event row is shared by the reads: changes made through any api drop it at once (event-changed) */
const EVENT_CACHE_MS = 30_000;
/** how long "no such event" is believed: a flood of made-up ids costs MySQL one query per id this often */
const MISSING_EVENT_CACHE_MS = 5_000;
/** how long a persisted count read from MySQL is shared, for an event whose bitmap Redis does not have */
const COUNT_CACHE_MS = 5_000;

/** One live event's outbox and persistence backlog (see EventReads.backlogs). */
export type EventBacklog = { event: string; lag: number; pending: number; issuedMinusPersisted: number };
export type CouponView = { userId: string; sequence: number; status: 'pending' | 'persisted' };
export type UserCouponView = { eventId: string; sequence: number; status: 'pending' | 'persisted' };
export interface EventPage {
  events: EventView[];
  /** where the next page starts (the last event id looked at), null once every event was looked at */
  nextCursor: string | null;
}
/** Events read from MySQL per step of a listing, and at most per request when a status filter skips most of them. */
const LIST_STEP_ROWS = 100;
const LIST_MAX_SCANNED = 1_000;
/** Events the api's backlog gauges cover at most (a registry holds the live events: a few, in practice). */
const MAX_GAUGED_EVENTS = 200;
/** Events whose users hash one pipeline asks, when a user's pending coupons are looked up. */
const USER_LOOKUP_CHUNK = 500;

/**
 * The public reads of events and coupons, polled by storefronts during a sale: answered from Redis (the gate state,
 * the persisted bitmap) and a shared cache of event rows, so they cost the shared MySQL next to nothing.
 */
export class EventReads {
  readonly #redis: CouponRedis;
  readonly #store: CouponStore;
  readonly #readCache = new Map<string, { event: CouponEvent | null; until: number }>();
  readonly #countCache = new Map<string, { count: number; until: number }>();

  constructor(redis: CouponRedis, store: CouponStore) {
    this.#redis = redis;
    this.#store = store;
  }

  /**
   * The public event view, polled by storefronts during a sale: no MySQL per request. The event row is shared
   * for EVENT_CACHE_MS per id (a change through any api drops it: forget()), a missing one for
   * MISSING_EVENT_CACHE_MS; issued and persisted are read from Redis.
   */
  async get(id: string): Promise<EventView | null> {
    const event = await this.#event(id);
    return event && this.view(event);
  }

  /**
   * The event row, shared for a while (see EVENT_CACHE_MS). MySQL is not asked about an id Redis can vouch does not
   * exist: no gate state, no archive tombstone, and unknown to Redis (missingStateCause). So a flood of made-up ids
   * costs Redis a round trip or two each and MySQL nothing.
   */
  async #event(id: string): Promise<CouponEvent | null> {
    const cached = this.#readCache.get(id);
    if (cached && cached.until > Date.now()) return cached.event;
    const keys = eventKeys(id);
    const [state, tombstone] = await Promise.all([this.#redis.exists(keys.meta), this.#redis.exists(keys.archived)]);
    const absent = state === 0 && tombstone === 0 && (await missingStateCause(this.#redis, id)) === 'unknown';
    const event = absent ? null : await this.#store.findEvent(id);
    if (this.#readCache.size >= 10_000) this.#readCache.clear();
    this.#readCache.set(id, { event, until: Date.now() + (event ? EVENT_CACHE_MS : MISSING_EVENT_CACHE_MS) });
    return event;
  }

  /** Drops what the reads share about an event: called on every change, here and (pub/sub) on every other api. */
  forget(id: string): void {
    this.#readCache.delete(id);
    this.#countCache.delete(id);
  }

  /**
   * A page of events in id order, after the event `afterId`, optionally only those of one status. The status is
   * computed (Redis counter and clock), so a filter is applied while scanning: a request looks at no more than
   * LIST_MAX_SCANNED events and may answer fewer than `limit` with a cursor to go on from.
   */
  async list(options: { afterId: string | null; limit: number; status?: EventStatus }): Promise<EventPage> {
    const events: EventView[] = [];
    let after = options.afterId;
    let scanned = 0;
    while (scanned < LIST_MAX_SCANNED) {
      const rows = await this.#store.listEventsAfter(after, Math.min(LIST_STEP_ROWS, LIST_MAX_SCANNED - scanned));
      const views = await Promise.all(rows.map((row) => this.view(row)));
      for (const view of views) {
        scanned += 1;
        after = view.id;
        if (options.status === undefined || view.status === options.status) events.push(view);
        if (events.length === options.limit) return { events, nextCursor: after };
      }
      if (rows.length < LIST_STEP_ROWS) return { events, nextCursor: null };
    }
    return { events, nextCursor: after };
  }

  /**
   * Every coupon one user holds, across events: persisted ones from MySQL, pending ones from the users hash of
   * each event the worker drains (the registry), asked a pipeline per USER_LOOKUP_CHUNK events.
   */
  async couponsOfUser(userId: string): Promise<UserCouponView[]> {
    const [persisted, eventIds] = await Promise.all([this.#store.findCouponsOfUser(userId), this.#redis.smembers(EVENT_REGISTRY_KEY)]);
    const coupons = new Map<string, UserCouponView>(persisted.map((row) => [row.eventId, { ...row, status: 'persisted' }]));
    const unknown = eventIds.filter((eventId) => !coupons.has(eventId));
    for (let start = 0; start < unknown.length; start += USER_LOOKUP_CHUNK) {
      const chunk = unknown.slice(start, start + USER_LOOKUP_CHUNK);
      // Sent together: one write per shard (auto-pipelined), each command to the shard of its event.
      const answers = await Promise.all(chunk.map((eventId) => this.#redis.hget(eventKeys(eventId).users, userId)));
      answers.forEach((entry, i) => {
        if (typeof entry === 'string') coupons.set(chunk[i]!, { eventId: chunk[i]!, sequence: parseUserEntry(entry).sequence, status: 'pending' });
      });
    }
    return [...coupons.values()].sort((a, b) => (a.eventId < b.eventId ? -1 : a.eventId > b.eventId ? 1 : 0));
  }



  /**
   * Each live event's backlog, for the api's gauges (coupon_outbox_lag, coupon_issued_minus_persisted): read from
   * Redis when scraped, so the alerts on them still see a backlog when no worker runs to report it (every worker
   * crashed or scaled to 0). Persisted is the bitmap, or MySQL's count (cached) where the bitmap is incomplete.
   * At most MAX_GAUGED_EVENTS events, the registry's first in id order.
   */
  async backlogs(): Promise<EventBacklog[]> {
    const ids = (await this.#redis.smembers(EVENT_REGISTRY_KEY)).sort().slice(0, MAX_GAUGED_EVENTS);
    const backlogs = await Promise.all(ids.map(async (event): Promise<EventBacklog | null> => {
      const keys = eventKeys(event);
      const [group, [hasState, complete], issued, bits] = await Promise.all([
        outboxGroupState(this.#redis, keys.outbox), this.#bitmapState(event), this.#redis.get(keys.issued), this.#redis.bitcount(keys.persisted),
      ]);
      if (!group || !hasState) return null;
      const persisted = complete ? bits : await this.#persistedCount(event);
      return { event, lag: group.lag, pending: group.pending, issuedMinusPersisted: Math.max(0, Number(issued ?? 0) - persisted) };
    }));
    return backlogs.filter((backlog) => backlog !== null);
  }

  /**
   * A user's coupon: pending while it waits in the outbox, persisted once it is in MySQL, both told by Redis (the
   * user entry and the persisted bitmap). MySQL is asked only when Redis cannot tell: the event's gate state is
   * not there (archived, or lost and not yet restored), or its bitmap is missing (written before it existed).
   */
  async findCoupon(eventId: string, userId: string): Promise<CouponView | null> {
    const keys = eventKeys(eventId);
    const [entry, [hasState, complete]] = await Promise.all([this.#redis.hget(keys.users, userId), this.#bitmapState(eventId)]);
    if (entry) {
      const { sequence } = parseUserEntry(entry);
      if ((await this.#redis.getbit(keys.persisted, sequence)) === 1) return { userId, sequence, status: 'persisted' };
      if (complete) return { userId, sequence, status: 'pending' };
      const row = await this.#store.findCoupon(eventId, userId);
      return { userId, sequence: row?.sequence ?? sequence, status: row ? 'persisted' : 'pending' };
    }
    // Every persisted holder has an entry while the state is there (a restore merges them back in).
    if (hasState || !(await this.#event(eventId))) return null;
    const row = await this.#store.findCoupon(eventId, userId);
    return row && { userId, sequence: row.sequence, status: 'persisted' };
  }

  /**
   * Whether Redis has the event's gate state, and whether its persisted bitmap is complete: marked so in the meta
   * hash when the event was created with it, or when a restore rebuilt it from every row. An event older than the
   * bitmap is answered from MySQL instead (cached).
   */
  async #bitmapState(id: string): Promise<[hasState: boolean, complete: boolean]> {
    const [total, bitmap] = await this.#redis.hmget(eventKeys(id).meta, 'total', 'bitmap');
    return [total !== null, total !== null && bitmap === '1'];
  }



  /** Coupons of the event in MySQL, for an event Redis has no bitmap for: shared for a few seconds per event. */
  async #persistedCount(id: string): Promise<number> {
    const now = Date.now();
    const cached = this.#countCache.get(id);
    if (cached && cached.until > now) return cached.count;
    const count = await this.#store.countPersisted(id);
    if (this.#countCache.size >= 10_000) this.#countCache.clear();
    this.#countCache.set(id, { count, until: now + COUNT_CACHE_MS });
    return count;
  }

  /** The event as GET answers it: the row, with issued, persisted and status from Redis. */
  async view(event: CouponEvent): Promise<EventView> {
    const keys = eventKeys(event.id);
    const [[hasState, complete], issuedRaw, bits, nowMs] = await Promise.all([
      this.#bitmapState(event.id), this.#redis.get(keys.issued), this.#redis.bitcount(keys.persisted), redisNowMs(this.#redis),
    ]);
    // Without gate state (an archived event, or one Redis lost) or a complete bitmap, MySQL's count tells.
    const persisted = complete ? bits : await this.#persistedCount(event.id);
    const issued = hasState ? Number(issuedRaw ?? 0) : persisted;
    return {
      id: event.id,
      name: event.name,
      totalQuantity: event.totalQuantity,
      issued,
      persisted,
      startsAt: event.startsAt.toISOString(),
      endsAt: event.endsAt?.toISOString() ?? null,
      status: eventStatus(event, issued, nowMs),
    };
  }}
