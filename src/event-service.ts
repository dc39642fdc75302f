import { pino } from 'pino';
import type { CouponEvent } from './domain/coupon.ts';
import type { CouponStore, EventChange } from './db/store.ts';
import { GateStateKeeper } from './gate-state.ts';
import { type CouponRedis, redisNowMs } from './redis/client.ts';
import { type CouponView, type EventPage, EventReads, type EventView, type UserCouponView } from './event-reads.ts';
import { installEventState, markBitmapComplete, type UpdateOutcome, updateEventState } from './redis/event-state.ts';
import { EVENT_CHANGED_CHANNEL, eventKeys } from './redis/keys.ts';
import type { ReplicaAcks } from './redis/replica-acks.ts';

/** An event to create; without `startsAt` it starts now by Redis TIME (and a retry of it matches the event whatever its start). */
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
  /** ended and archived (EVENT_RETENTION): its gate state is gone for good, and it can no longer be changed */
  | { kind: 'event_archived' }
  | { kind: 'state_missing' };
export type { CouponView, EventPage, EventView, UserCouponView };

/**
 * Event management: MySQL holds the event of record, Redis the gate state the apply path reads. The reads are
 * EventReads'. None of this is on the apply hot path.
 */
export class EventService {
  readonly #redis: CouponRedis;
  readonly #store: CouponStore;
  readonly #keeper: Pick<GateStateKeeper, 'restore' | 'restoreBehind'>;
  readonly #reads: EventReads;
  readonly #replicas: Pick<ReplicaAcks, 'confirm'> | undefined;

  /**
   * @param keeper restores an event's gate state from MySQL, fenced (see GateStateKeeper.restore): how a retried
   *   create completes an event whose first try wrote MySQL but not Redis
   * @param options.replicas GATE_MIN_REPLICAS > 0: a change is saved (and answered 200) only once replicas hold its
   *   gate write, as a coupon is answered 202 only then
   */
  constructor(
    redis: CouponRedis, store: CouponStore, keeper: Pick<GateStateKeeper, 'restore' | 'restoreBehind'> = new GateStateKeeper(redis, store, pino({ level: 'silent' })),
    options: { reads?: EventReads; replicas?: Pick<ReplicaAcks, 'confirm'> | undefined } = {},
  ) {
    this.#redis = redis;
    this.#store = store;
    this.#keeper = keeper;
    this.#reads = options.reads ?? new EventReads(redis, store);
    this.#replicas = options.replicas;
  }

  /** The reads (EventReads), here too so the routes have one service to ask. */
  get = (id: string): Promise<EventView | null> => this.#reads.get(id);
  list = (options: Parameters<EventReads['list']>[0]): Promise<EventPage> => this.#reads.list(options);
  findCoupon = (eventId: string, userId: string): Promise<CouponView | null> => this.#reads.findCoupon(eventId, userId);
  couponsOfUser = (userId: string): Promise<UserCouponView[]> => this.#reads.couponsOfUser(userId);
  forget = (id: string): void => this.#reads.forget(id);

  /**
   * Creates the event: MySQL first (the record), then its gate state in Redis. Safe to retry: when the Redis write
   * failed (or its answer was lost), the same body again finds the row, installs the missing gate state and answers
   * as a create. A body that differs from the event of that id is refused.
   */
  async create(asked: NewEvent): Promise<CreateEventResult> {
    // "Now" is Redis's clock, the one the gate judges the window by: an api pod whose clock runs ahead would
    // otherwise create an event the gate calls not started.
    const event: CouponEvent = { ...asked, startsAt: asked.startsAt ?? new Date(await redisNowMs(this.#redis)), paused: false };
    if (await this.#store.createEvent(event)) {
      await installEventState(this.#redis, event.id, {
        totalQuantity: event.totalQuantity, startsAtMs: event.startsAt.getTime(), endsAtMs: event.endsAt?.getTime() ?? null, issued: 0,
      });
      await markBitmapComplete(this.#redis, event.id);
      return { kind: 'created', event: await this.#reads.view(event) };
    }
    const existing = await this.#store.findEvent(event.id);
    if (!existing || !isSameEvent(existing, asked)) return { kind: 'event_exists' };
    if ((await this.#redis.exists(eventKeys(event.id).meta)) === 1) return { kind: 'unchanged', event: await this.#reads.view(existing) };
    // Restored like any event Redis lacks (fenced, with whatever coupons MySQL holds), never installed empty: the
    // state may be missing because it was lost, not only because it was never written.
    await this.#keeper.restore([event.id]);
    return { kind: 'created', event: await this.#reads.view(existing) };
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
    const result = await this.#updateLocked(id, change);
    if (result.kind !== 'state_missing') return result;
    // Redis lacks the event's gate state (lost, or not restored yet): restored from MySQL here, as a create's retry
    // does, rather than answering 503 until the background sweep gets to it. Outside the row lock: a restore
    // raises the event's epoch in MySQL first.
    await this.#keeper.restore([id]);
    return this.#updateLocked(id, change);
  }

  async #updateLocked(id: string, change: EventChange): Promise<UpdateEventResult> {
    const result = await this.#store.withEventLocked(id, async (event, save, archived): Promise<UpdateEventResult | { kind: 'saved'; event: CouponEvent }> => {
      if (!event) return { kind: 'event_not_found' };
      if (archived) return { kind: 'event_archived' };
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
        // Not acknowledged (NotReplicatedError, a 503): the gate is put back and MySQL keeps the record as it was.
        if (outcome.kind === 'updated') await this.#replicas?.confirm(eventKeys(id).meta);
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
    this.forget(id);
    await this.#redis.publish(EVENT_CHANGED_CHANNEL, id);
    return { kind: 'updated', event: await this.#reads.view(result.event) };
  }

  async exists(id: string): Promise<boolean> {
    return (await this.#store.findEvent(id)) !== null;
  }

  /** the events this process is restoring now (restoreLost) */
  readonly #restoring = new Set<string>();

  /**
   * An event MySQL holds has no gate state on a server that lost nothing since it was checked (on a Cluster: its
   * slot moved there from a shard that lost it, before that shard's restore reached it). Restores that one event,
   * fenced, in the background: the applies meanwhile answer 503. One restore per event at a time in this process,
   * and none while another process holds the restore lock (it is restoring; a later apply asks again).
   */
  restoreLost(id: string): void {
    if (this.#restoring.has(id)) return;
    this.#restoring.add(id);
    void this.#keeper.restoreBehind([id])
      .catch(() => false)
      .finally(() => this.#restoring.delete(id));
  }

  /** The coupon MySQL holds for the user, for applies to an archived event (no gate state left to ask). */
  holder(eventId: string, userId: string): Promise<{ sequence: number; requestId: string | null } | null> {
    return this.#store.findCoupon(eventId, userId);
  }

}

/** Whether an existing event is the one a create asks for: every field equal, `startsAt` only if the body gave it. */
function isSameEvent(existing: CouponEvent, asked: NewEvent): boolean {
  return existing.name === asked.name
    && existing.totalQuantity === asked.totalQuantity
    && (asked.startsAt === undefined || existing.startsAt.getTime() === asked.startsAt.getTime())
    && (existing.endsAt?.getTime() ?? null) === (asked.endsAt?.getTime() ?? null);
}
