import { type EntityManager, LockMode } from '@mikro-orm/mysql';
import type { CouponEvent, IssuedCoupon } from '../domain/coupon.ts';
import { type CouponEventRow, CouponEventSchema, CouponSchema } from './entities.ts';
import type { Orm } from './orm.ts';

/** What an admin may change of an event. */
export type EventChange = { name?: string; totalQuantity?: number; endsAt?: Date | null; paused?: boolean };

const toEvent = (row: CouponEventRow): CouponEvent => ({
  id: row.id, name: row.name, totalQuantity: row.totalQuantity, startsAt: row.startsAt, endsAt: row.endsAt ?? null, paused: Boolean(row.paused),
});

/**
 * MySQL access for events and coupons. Every call forks its own EntityManager, so callers never share an
 * identity map between requests or batches.
 */
export class CouponStore {
  readonly #orm: Orm;

  constructor(orm: Orm) {
    this.#orm = orm;
  }

  #em(): EntityManager {
    return this.#orm.em.fork() as EntityManager;
  }

  /** Inserts the event; false when an event with that id already exists. */
  async createEvent(event: CouponEvent): Promise<boolean> {
    const result = await this.#em()
      .createQueryBuilder(CouponEventSchema)
      .insert({ id: event.id, name: event.name, totalQuantity: event.totalQuantity, startsAt: event.startsAt, endsAt: event.endsAt, paused: event.paused })
      .onConflict('id')
      .ignore()
      .execute('run');
    return result.affectedRows === 1;
  }

  async findEvent(id: string): Promise<CouponEvent | null> {
    const row = await this.#em().findOne(CouponEventSchema, { id });
    return row && toEvent(row);
  }

  async listEvents(): Promise<CouponEvent[]> {
    const rows = await this.#em().find(CouponEventSchema, {}, { orderBy: { id: 'asc' } });
    return rows.map(toEvent);
  }

  /** The events that are not archived: those whose gate state lives in Redis (the only ones a restore writes). */
  async listLiveEvents(): Promise<CouponEvent[]> {
    const rows = await this.#em().find(CouponEventSchema, { archivedAt: null }, { orderBy: { id: 'asc' } });
    return rows.map(toEvent);
  }

  /** Up to `limit` events not archived whose end is at or before `endedBy`, earliest end first: what may be archived. */
  async listArchivable(endedBy: Date, limit: number): Promise<CouponEvent[]> {
    const rows = await this.#em().find(
      CouponEventSchema, { archivedAt: null, endsAt: { $ne: null, $lte: endedBy } }, { orderBy: { endsAt: 'asc', id: 'asc' }, limit },
    );
    return rows.map(toEvent);
  }

  /**
   * Marks an ended event archived, once: true when this call did (false when it was already, or its end is after
   * `endedBy` after all, or there is no such event). MySQL is marked before Redis is cleared, so a crash between
   * leaves an archived event with stale keys, which the archiver deletes on its next pass, never keys deleted
   * from a live event.
   */
  async archiveEvent(id: string, endedBy: Date): Promise<boolean> {
    const affected = await this.#em().nativeUpdate(
      CouponEventSchema, { id, archivedAt: null, endsAt: { $ne: null, $lte: endedBy } }, { archivedAt: new Date() },
    );
    return affected === 1;
  }

  /** Takes an event back out of the archive: its gate state turned out to have moved on before it was deleted. */
  async unarchiveEvent(id: string): Promise<void> {
    await this.#em().nativeUpdate(CouponEventSchema, { id }, { archivedAt: null });
  }

  /** When the event was archived; null while it is live, and for an id MySQL does not know. */
  async archivedAt(id: string): Promise<Date | null> {
    const row = await this.#em().findOne(CouponEventSchema, { id }, { fields: ['archivedAt'] });
    return row?.archivedAt ?? null;
  }

  /** The ids of every archived event: a restore puts their tombstones back (see GateStateKeeper.restore). */
  async listArchivedIds(): Promise<string[]> {
    const rows = await this.#em().find(CouponEventSchema, { archivedAt: { $ne: null } }, { fields: ['id'], orderBy: { id: 'asc' } });
    return rows.map((row) => row.id);
  }

  /** Which of these events are archived. */
  async archivedAmong(ids: readonly string[]): Promise<Set<string>> {
    if (ids.length === 0) return new Set();
    const rows = await this.#em().find(CouponEventSchema, { id: { $in: [...ids] }, archivedAt: { $ne: null } }, { fields: ['id'] });
    return new Set(rows.map((row) => row.id));
  }

  /** Up to `limit` events with an id after `afterId` (all when null), in id order: a page of the admin's list. */
  async listEventsAfter(afterId: string | null, limit: number): Promise<CouponEvent[]> {
    const rows = await this.#em().find(CouponEventSchema, afterId === null ? {} : { id: { $gt: afterId } }, { orderBy: { id: 'asc' }, limit });
    return rows.map(toEvent);
  }

  /** The coupons one user holds in MySQL, across events (served by the index on coupon.user_id). */
  async findCouponsOfUser(userId: string): Promise<Array<{ eventId: string; sequence: number }>> {
    const rows = await this.#em().find(CouponSchema, { userId }, { fields: ['eventId', 'sequence'], orderBy: { eventId: 'asc' } });
    return rows.map((row) => ({ eventId: row.eventId, sequence: row.sequence }));
  }

  async updateEvent(id: string, change: EventChange): Promise<void> {
    await this.#em().nativeUpdate(CouponEventSchema, { id }, change);
  }

  /**
   * Runs `work` in one transaction holding the event's row lock (`SELECT ... FOR UPDATE`): it gets the event as
   * it stands under the lock (null when there is none) and `save`, which changes the row in the same
   * transaction. Another caller for the same event waits until this one commits or rolls back; so do coupon
   * inserts of the event (they take the row's shared lock), so keep `work` short.
   */
  async withEventLocked<T>(
    id: string, work: (event: CouponEvent | null, save: (change: EventChange) => Promise<void>, archived: boolean) => Promise<T>,
  ): Promise<T> {
    return this.#em().transactional(async (em) => {
      const row = await em.findOne(CouponEventSchema, { id }, { lockMode: LockMode.PESSIMISTIC_WRITE, refresh: true });
      const event = row && toEvent(row);
      return work(event, async (change) => {
        await em.nativeUpdate(CouponEventSchema, { id }, change);
      }, row?.archivedAt != null);
    });
  }

  /**
   * One multi-row INSERT IGNORE: rows already there (same event and user) are skipped, so a batch that is
   * delivered twice writes nothing twice. Returns how many rows were new.
   *
   * Fenced: the coupons were checked against the gate state of `epochs` (event id -> gate epoch). In the same
   * transaction the events' rows are read under a shared lock; if any epoch moved on (a rebuild or repair of the
   * gate state began since the check), nothing is written and GateEpochChangedError asks for a new check. A
   * rebuild raises the epoch first, which waits for inserts in flight, and reads the coupons after: so every
   * row is either seen by the rebuild or refused, never written over answers the rebuilt gate gave.
   */
  async persistCoupons(coupons: readonly IssuedCoupon[], epochs: ReadonlyMap<string, number>): Promise<number> {
    if (coupons.length === 0) return 0;
    const rows = coupons.map((coupon) => ({
      eventId: coupon.eventId, userId: coupon.userId, sequence: coupon.sequence, issuedAt: new Date(coupon.issuedAtMs),
      requestId: coupon.requestId ?? null,
    }));
    return this.#em().transactional(async (em) => {
      const ids = [...epochs.keys()].sort();
      const current = await em.execute<Array<{ id: string; epoch: number }>>(
        `select id, epoch from coupon_event where id in (${ids.map(() => '?').join(', ')}) lock in share mode`, ids,
      );
      const moved = ids.filter((id) => current.find((row) => row.id === id)?.epoch !== epochs.get(id));
      if (moved.length > 0) throw new GateEpochChangedError(moved);
      const result = await em.createQueryBuilder(CouponSchema).insert(rows).onConflict(['eventId', 'userId']).ignore().execute('run');
      return result.affectedRows;
    });
  }

  /**
   * Raises the gate epoch of the given events (or all): the fence a rebuild or repair puts up before it reads
   * what MySQL holds. Waits for inserts in flight to commit; any insert checked against the old state after
   * this is refused.
   */
  async raiseEpochs(eventIds: readonly string[] | 'all'): Promise<void> {
    if (eventIds !== 'all' && eventIds.length === 0) return;
    if (eventIds === 'all') await this.#em().execute('update coupon_event set epoch = epoch + 1');
    else await this.#em().execute(`update coupon_event set epoch = epoch + 1 where id in (${eventIds.map(() => '?').join(', ')})`, [...eventIds]);
  }

  /** Per event: its gate epoch, how many coupons MySQL holds and the highest sequence among them. */
  async persistedSummary(eventIds: readonly string[] | 'all'): Promise<Map<string, { epoch: number; count: number; maxSequence: number }>> {
    if (eventIds !== 'all' && eventIds.length === 0) return new Map();
    const where = eventIds === 'all' ? '' : `where e.id in (${eventIds.map(() => '?').join(', ')})`;
    const rows = await this.#em().execute<Array<{ id: string; epoch: number; count: number | string; max_sequence: number | string }>>(
      `select e.id, e.epoch, count(c.id) as count, coalesce(max(c.sequence), 0) as max_sequence
       from coupon_event e left join coupon c on c.event_id = e.id ${where} group by e.id, e.epoch`,
      eventIds === 'all' ? [] : [...eventIds],
    );
    return new Map(rows.map((row) => [row.id, { epoch: Number(row.epoch), count: Number(row.count), maxSequence: Number(row.max_sequence) }]));
  }

  /** Which of these coupons' holders (event and user) already have a row. */
  async existingHolders(coupons: readonly IssuedCoupon[]): Promise<Set<string>> {
    if (coupons.length === 0) return new Set();
    const rows = await this.#em().find(
      CouponSchema, { $or: coupons.map((coupon) => ({ eventId: coupon.eventId, userId: coupon.userId })) }, { fields: ['eventId', 'userId'] },
    );
    return new Set(rows.map((row) => holderKey(row)));
  }

  async countPersisted(eventId: string): Promise<number> {
    return this.#em().count(CouponSchema, { eventId });
  }

  /** A user's coupon of an event, with the request it was issued to (null for coupons persisted before it was kept). */
  async findCoupon(eventId: string, userId: string): Promise<{ sequence: number; requestId: string | null } | null> {
    const row = await this.#em().findOne(CouponSchema, { eventId, userId }, { fields: ['sequence', 'requestId'] });
    return row && { sequence: row.sequence, requestId: row.requestId ?? null };
  }

  /** The persisted coupons of an event (those above a sequence), for rebuilding the gate state and for reconciling. */
  async persistedCoupons(eventId: string, aboveSequence = 0): Promise<IssuedCoupon[]> {
    const rows = await this.#em().find(
      CouponSchema, { eventId, sequence: { $gt: aboveSequence } }, { fields: ['userId', 'sequence', 'issuedAt'], orderBy: { sequence: 'asc' } },
    );
    return rows.map((row) => ({ eventId, userId: row.userId, sequence: row.sequence, issuedAtMs: row.issuedAt.getTime() }));
  }

  /**
   * An event's persisted coupons with a sequence in (afterSequence, throughSequence], in sequence order. A rebuild
   * reads an event of any size a bounded range at a time: one range of the (event_id, sequence) index per call,
   * as cheap at the millionth coupon as at the first (an open-ended `sequence > ? limit n` was not: MySQL walked
   * the index from the event's first row on every page).
   */
  async persistedCouponRange(eventId: string, afterSequence: number, throughSequence: number): Promise<IssuedCoupon[]> {
    const rows = await this.#em().execute<Array<{ user_id: string; sequence: number; issued_at: Date | string; request_id: string | null }>>(
      'select user_id, sequence, issued_at, request_id from coupon where event_id = ? and sequence > ? and sequence <= ? order by sequence',
      [eventId, afterSequence, throughSequence],
    );
    return rows.map((row) => ({
      eventId, userId: row.user_id, sequence: Number(row.sequence), issuedAtMs: toDate(row.issued_at).getTime(),
      ...(row.request_id !== null && { requestId: row.request_id }),
    }));
  }

  /** Which of these users of one event hold a row: one lookup on the (event_id, user_id) index per page of ids. */
  async persistedUsers(eventId: string, userIds: readonly string[]): Promise<Set<string>> {
    if (userIds.length === 0) return new Set();
    const rows = await this.#em().execute<Array<{ user_id: string }>>(
      `select user_id from coupon where event_id = ? and user_id in (${userIds.map(() => '?').join(', ')})`, [eventId, ...userIds],
    );
    return new Set(rows.map((row) => row.user_id));
  }

  async ping(): Promise<void> {
    await this.#em().execute('select 1');
  }
}

/** The gate state was rebuilt or repaired between a batch's check and its insert: check again, then write. */
export class GateEpochChangedError extends Error {
  override name = 'GateEpochChangedError';
  readonly eventIds: string[];
  constructor(eventIds: string[]) {
    super(`the gate state of ${eventIds.join(', ')} was rebuilt or repaired since the batch was checked`);
    this.eventIds = eventIds;
  }
}

/** A DATETIME(3) column as the driver hands it back in a raw query: a Date, or its text in UTC. */
const toDate = (value: Date | string): Date => (value instanceof Date ? value : new Date(`${value.replace(' ', 'T')}Z`));

export const holderKey = (coupon: { eventId: string; userId: string }): string => `${coupon.eventId}\u0000${coupon.userId}`;
