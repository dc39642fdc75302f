import type { CouponEvent, EventStatus } from './domain/coupon.ts';
import { eventStatus } from './domain/coupon.ts';
import type { CouponStore } from './db/store.ts';
import { type CouponRedis, redisNowMs } from './redis/client.ts';
import { installEventState, updateEventState } from './redis/event-state.ts';
import { parseUserEntry } from './redis/formats.ts';
import { EVENT_CHANGED_CHANNEL, eventKeys } from './redis/keys.ts';

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

export type CreateEventResult = { kind: 'created'; event: EventView } | { kind: 'event_exists' };
export type UpdateEventResult =
  | { kind: 'updated'; event: EventView }
  | { kind: 'event_not_found' }
  | { kind: 'quantity_below_issued'; issued: number }
  | { kind: 'ends_before_start' }
  | { kind: 'state_missing' };
const READ_CACHE_MS = 1_000;

export type CouponView = { userId: string; sequence: number; status: 'pending' | 'persisted' };

/**
 * Event management: MySQL holds the event of record, Redis the gate state the apply path reads.
 * None of this is on the apply hot path.
 */
export class EventService {
  readonly #redis: CouponRedis;
  readonly #store: CouponStore;
  readonly #readCache = new Map<string, { event: CouponEvent | null; until: number }>();

  constructor(redis: CouponRedis, store: CouponStore) {
    this.#redis = redis;
    this.#store = store;
  }

  async create(event: CouponEvent): Promise<CreateEventResult> {
    if (!(await this.#store.createEvent(event))) return { kind: 'event_exists' };
    await installEventState(this.#redis, event.id, {
      totalQuantity: event.totalQuantity, startsAtMs: event.startsAt.getTime(), endsAtMs: event.endsAt?.getTime() ?? null, issued: 0,
    });
    return { kind: 'created', event: await this.#view(event) };
  }

  async update(id: string, change: { name?: string; totalQuantity?: number; endsAt?: Date | null }): Promise<UpdateEventResult> {
    const event = await this.#store.findEvent(id);
    if (!event) return { kind: 'event_not_found' };
    if (change.endsAt && change.endsAt <= event.startsAt) return { kind: 'ends_before_start' };
    // Redis first: the script refuses a quantity below what is issued, atomically with the gate.
    const outcome = await updateEventState(this.#redis, id, {
      ...(change.totalQuantity !== undefined && { totalQuantity: change.totalQuantity }),
      ...(change.endsAt !== undefined && { endsAtMs: change.endsAt?.getTime() ?? null }),
    });
    if (outcome.kind !== 'updated') return outcome;
    try {
      await this.#store.updateEvent(id, change);
    } catch (error) {
      // MySQL failed after the gate changed: put the gate back so a later rebuild from MySQL agrees with it.
      // If coupons beyond the old quantity were issued meanwhile, the gate keeps the new one (never over-issues).
      await updateEventState(this.#redis, id, {
        ...(change.totalQuantity !== undefined && { totalQuantity: event.totalQuantity }),
        ...(change.endsAt !== undefined && { endsAtMs: event.endsAt?.getTime() ?? null }),
      }).catch(() => undefined);
      throw error;
    }
    this.#readCache.delete(id);
    await this.#redis.publish(EVENT_CHANGED_CHANNEL, id);
    return { kind: 'updated', event: await this.#view({ ...event, ...change }) };
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
