import type { EntityManager } from '@mikro-orm/mysql';
import type { CouponEvent, IssuedCoupon } from '../domain/coupon.ts';
import { CouponEventSchema, CouponSchema } from './entities.ts';
import type { Orm } from './orm.ts';

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
      .insert({ id: event.id, name: event.name, totalQuantity: event.totalQuantity, startsAt: event.startsAt, endsAt: event.endsAt })
      .onConflict('id')
      .ignore()
      .execute('run');
    return result.affectedRows === 1;
  }

  async findEvent(id: string): Promise<CouponEvent | null> {
    const row = await this.#em().findOne(CouponEventSchema, { id });
    return row && { id: row.id, name: row.name, totalQuantity: row.totalQuantity, startsAt: row.startsAt, endsAt: row.endsAt ?? null };
  }

  async listEvents(): Promise<CouponEvent[]> {
    const rows = await this.#em().find(CouponEventSchema, {}, { orderBy: { id: 'asc' } });
    return rows.map((row) => ({ id: row.id, name: row.name, totalQuantity: row.totalQuantity, startsAt: row.startsAt, endsAt: row.endsAt ?? null }));
  }

  async updateEvent(id: string, change: { name?: string; totalQuantity?: number; endsAt?: Date | null }): Promise<void> {
    await this.#em().nativeUpdate(CouponEventSchema, { id }, change);
  }

  /**
   * One multi-row INSERT IGNORE: rows already there (same event and user) are skipped, so a batch that is
   * delivered twice writes nothing twice. Returns how many rows were new.
   */
  async persistCoupons(coupons: readonly IssuedCoupon[]): Promise<number> {
    if (coupons.length === 0) return 0;
    const rows = coupons.map((coupon) => ({
      eventId: coupon.eventId, userId: coupon.userId, sequence: coupon.sequence, issuedAt: new Date(coupon.issuedAtMs),
    }));
    const result = await this.#em().createQueryBuilder(CouponSchema).insert(rows).onConflict(['eventId', 'userId']).ignore().execute('run');
    return result.affectedRows;
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

  async findCoupon(eventId: string, userId: string): Promise<{ sequence: number } | null> {
    const row = await this.#em().findOne(CouponSchema, { eventId, userId }, { fields: ['sequence'] });
    return row && { sequence: row.sequence };
  }

  /** Every persisted coupon of an event, for rebuilding the gate state and for reconciling. */
  async persistedCoupons(eventId: string): Promise<IssuedCoupon[]> {
    const rows = await this.#em().find(CouponSchema, { eventId }, { fields: ['userId', 'sequence', 'issuedAt'], orderBy: { sequence: 'asc' } });
    return rows.map((row) => ({ eventId, userId: row.userId, sequence: row.sequence, issuedAtMs: row.issuedAt.getTime() }));
  }

  async ping(): Promise<void> {
    await this.#em().execute('select 1');
  }
}

export const holderKey = (coupon: { eventId: string; userId: string }): string => `${coupon.eventId}\u0000${coupon.userId}`;
