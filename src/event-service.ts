import { pino } from 'pino';
import type { CouponEvent, EventStatus } from './domain/coupon.ts';
import { eventStatus } from './domain/coupon.ts';
import type { CouponStore, EventChange } from './db/store.ts';
import { GateStateKeeper } from './gate-state.ts';
import { type CouponRedis, redisNowMs } from './redis/client.ts';
import { installEventState, type UpdateOutcome, updateEventState } from './redis/event-state.ts';
import { parseUserEntry } from './redis/formats.ts';
import { EVENT_CHANGED_CHANNEL, EVENT_REGISTRY_KEY, eventKeys } from './redis/keys.ts';

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

/** An event to create; without `startsAt` it starts now (and a retry of it matches the event whatever its start). */
export type NewEvent = Omit<CouponEvent, 'startsAt' | 'paused'> & { startsAt: Date | undefined };
export type CreateEventResult =
  /** this request created the event, or completed one that an earlier try of the same body left without gate state */
  | { kind: 'created'; event: EventView }
  /** the event exists already, complete and exactly as asked: the answer to a retry whose first try got through */
  | { kind: 'unchanged'; event: EventView }
  /** an event with this id exists with other fields */
  | { kind: 'event_exists' };
export type UpdateEventResult =
  | { kind: 'updated'; event: EventView }
  | { kind: 'event_not_found' }
  | { kind: 'quantity_below_issued'; issued: number }
  | { kind: 'ends_before_start' }
  | { kind: 'state_missing' };
const READ_CACHE_MS = 1_000;

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
/** Events whose users hash one pipeline asks, when a user's pending coupons are looked up. */
const USER_LOOKUP_CHUNK = 500;

/**
 * Event management: MySQL holds the event of record, Redis the gate state the apply path reads.
 * None of this is on the apply hot path.
 */
export class EventService {
  readonly #redis: CouponRedis;
  readonly #store: CouponStore;
  readonly #keeper: Pick<GateStateKeeper, 'restore'>;
  readonly #readCache = new Map<string, { event: CouponEvent | null; until: number }>();

  /**
   * @param keeper restores an event's gate state from MySQL, fenced (see GateStateKeeper.restore): how a retried
   *   create completes an event whose first try wrote MySQL but not Redis
   */
  constructor(redis: CouponRedis, store: CouponStore, keeper: Pick<GateStateKeeper, 'restore'> = new GateStateKeeper(redis, store, pino({ level: 'silent' }))) {
    this.#redis = redis;
    this.#store = store;
    this.#keeper = keeper;
  }

  /**
   * Creates the event: MySQL first (the record), then its gate state in Redis. Safe to retry: when the Redis write
   * failed (or its answer was lost), the same body again finds the row, installs the missing gate state and answers
   * as a create. A body that differs from the event of that id is refused.
   */
  async create(asked: NewEvent): Promise<CreateEventResult> {
    const event: CouponEvent = { ...asked, startsAt: asked.startsAt ?? new Date(), paused: false };
    if (await this.#store.createEvent(event)) {
      await installEventState(this.#redis, event.id, {
        totalQuantity: event.totalQuantity, startsAtMs: event.startsAt.getTime(), endsAtMs: event.endsAt?.getTime() ?? null, issued: 0,
      });
      return { kind: 'created', event: await this.#view(event) };
    }
    const existing = await this.#store.findEvent(event.id);
    if (!existing || !isSameEvent(existing, asked)) return { kind: 'event_exists' };
    if ((await this.#redis.exists(eventKeys(event.id).meta)) === 1) return { kind: 'unchanged', event: await this.#view(existing) };
    // Restored like any event Redis lacks (fenced, with whatever coupons MySQL holds), never installed empty: the
    // state may be missing because it was lost, not only because it was never written.
    await this.#keeper.restore([event.id]);
    return { kind: 'created', event: await this.#view(existing) };
  }

  /**
   * Changes the event in Redis (the gate) and MySQL (the record). Concurrent changes of one event are serialized
   * by the event's MySQL row lock (SELECT ... FOR UPDATE), held across both writes: otherwise two PATCHes can
   * interleave as Redis A, Redis B, MySQL B, MySQL A and leave the gate at B and the record at A. A row lock rather
   * than a Redis lock (SET NX PX): it cannot expire under a holder that is slow (a Redis call waiting out its
   * timeout), it goes when the holder's connection dies, waiters queue instead of polling, and the row is the one
   * both writes must agree with. Its cost: the event's coupon inserts (shared lock on the row) wait for one Redis
   * round trip, on an admin call.
   */
  async update(id: string, change: EventChange): Promise<UpdateEventResult> {
    const result = await this.#store.withEventLocked(id, async (event, save): Promise<UpdateEventResult | { kind: 'saved'; event: CouponEvent }> => {
      if (!event) return { kind: 'event_not_found' };
      if (change.endsAt && change.endsAt <= event.startsAt) return { kind: 'ends_before_start' };
      // Puts the gate back to the record, still under the lock, when a write failed after the gate may have
      // changed (a Redis call that timed out may still have run). If coupons beyond the old quantity were issued
      // meanwhile, the script refuses and the gate keeps the new quantity (never over-issues).
      const restoreGate = () => updateEventState(this.#redis, id, {
        ...(change.totalQuantity !== undefined && { totalQuantity: event.totalQuantity }),
        ...(change.endsAt !== undefined && { endsAtMs: event.endsAt?.getTime() ?? null }),
        ...(change.paused !== undefined && { paused: event.paused }),
      }).catch(() => undefined);
      let outcome: UpdateOutcome;
      try {
        // Redis first: the script refuses a quantity below what is issued, atomically with the gate.
        outcome = await updateEventState(this.#redis, id, {
          ...(change.totalQuantity !== undefined && { totalQuantity: change.totalQuantity }),
          ...(change.endsAt !== undefined && { endsAtMs: change.endsAt?.getTime() ?? null }),
          ...(change.paused !== undefined && { paused: change.paused }),
        });
      } catch (error) {
        await restoreGate();
        throw error;
      }
      if (outcome.kind !== 'updated') return outcome;
      try {
        await save(change);
      } catch (error) {
        await restoreGate();
        throw error;
      }
      // A commit that fails after this (the connection lost at that very moment) leaves the gate ahead of the
      // record: the lock is gone by then, so putting the gate back could undo a change made since.
      return { kind: 'saved', event: { ...event, ...change } };
    });
    if (result.kind !== 'saved') return result;
    this.#readCache.delete(id);
    await this.#redis.publish(EVENT_CHANGED_CHANNEL, id);
    return { kind: 'updated', event: await this.#view(result.event) };
  }

  /**
   * The public event view. The event row is shared for a second per id, found or not, so a flood of made-up
   * ids costs the shared database one query a second each; the persisted count is always read fresh.
   */
  async get(id: string): Promise<EventView | null> {
    const now = Date.now();
    let cached = this.#readCache.get(id);
    if (!cached || cached.until <= now) {
      cached = { event: await this.#store.findEvent(id), until: now + READ_CACHE_MS };
      if (this.#readCache.size >= 10_000) this.#readCache.clear();
      this.#readCache.set(id, cached);
    }
    return cached.event && this.#view(cached.event);
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
      const views = await Promise.all(rows.map((row) => this.#view(row)));
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
      const pipeline = this.#redis.pipeline();
      for (const eventId of chunk) pipeline.hget(eventKeys(eventId).users, userId);
      const answers = (await pipeline.exec()) ?? [];
      answers.forEach(([error, entry], i) => {
        if (error) throw error;
        if (typeof entry === 'string') coupons.set(chunk[i]!, { eventId: chunk[i]!, sequence: parseUserEntry(entry).sequence, status: 'pending' });
      });
    }
    return [...coupons.values()].sort((a, b) => (a.eventId < b.eventId ? -1 : a.eventId > b.eventId ? 1 : 0));
  }

  async exists(id: string): Promise<boolean> {
    return (await this.#store.findEvent(id)) !== null;
  }

  /** A user's coupon: pending while it waits in the outbox, persisted once it is in MySQL. */
  async findCoupon(eventId: string, userId: string): Promise<CouponView | null> {
    const [entry, row] = await Promise.all([this.#redis.hget(eventKeys(eventId).users, userId), this.#store.findCoupon(eventId, userId)]);
    if (row) return { userId, sequence: row.sequence, status: 'persisted' };
    if (entry) return { userId, sequence: parseUserEntry(entry).sequence, status: 'pending' };
    return null;
  }

  async #view(event: CouponEvent): Promise<EventView> {
    const [issuedRaw, persisted, nowMs] = await Promise.all([
      this.#redis.get(eventKeys(event.id).issued), this.#store.countPersisted(event.id), redisNowMs(this.#redis),
    ]);
    const issued = Number(issuedRaw ?? 0);
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
  }
}

/** Whether an existing event is the one a create asks for: every field equal, `startsAt` only if the body gave it. */
function isSameEvent(existing: CouponEvent, asked: NewEvent): boolean {
  return existing.name === asked.name
    && existing.totalQuantity === asked.totalQuantity
    && (asked.startsAt === undefined || existing.startsAt.getTime() === asked.startsAt.getTime())
    && (existing.endsAt?.getTime() ?? null) === (asked.endsAt?.getTime() ?? null);
}
