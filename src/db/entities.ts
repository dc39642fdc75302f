import { defineEntity, p, type InferEntity } from '@mikro-orm/core';

/** A sale event. Its quantity and window are also held in Redis as the gate's state. */
export const CouponEventSchema = defineEntity({
  name: 'CouponEvent',
  tableName: 'coupon_event',
  properties: {
    id: p.string().length(64).primary(),
    name: p.string().length(200),
    totalQuantity: p.integer().fieldName('total_quantity'),
    startsAt: p.datetime(3).fieldName('starts_at'),
    endsAt: p.datetime(3).fieldName('ends_at').nullable(),
    /** raised before each rebuild or repair of the event's Redis gate state; coupon inserts check it */
    epoch: p.integer().default(0),
    /** the kill switch: the gate issues nothing while set (Redis holds it too, as the meta field `paused`) */
    paused: p.boolean().default(false),
    /** set once the ended event's coupons were all persisted and its Redis gate state deleted: it lives in MySQL only */
    archivedAt: p.datetime(3).fieldName('archived_at').nullable(),
    createdAt: p.datetime(3).fieldName('created_at').defaultRaw('current_timestamp(3)').persist(false),
  },
});
export type CouponEventRow = InferEntity<typeof CouponEventSchema>;

/** One persisted coupon. created_at is set by the database at insert: it is how the write rate is measured. */
export const CouponSchema = defineEntity({
  name: 'Coupon',
  tableName: 'coupon',
  properties: {
    id: p.bigint().primary().autoincrement(),
    eventId: p.string().length(64).fieldName('event_id'),
    userId: p.string().length(64).fieldName('user_id'),
    sequence: p.integer(),
    issuedAt: p.datetime(3).fieldName('issued_at'),
    /** the request the gate issued it to (see IssuedCoupon.requestId): a restore writes it back into the user entry */
    requestId: p.string().length(128).fieldName('request_id').nullable(),
    createdAt: p.datetime(3).fieldName('created_at').defaultRaw('current_timestamp(3)').persist(false),
  },
  uniques: [
    { name: 'coupon_event_user_unique', properties: ['eventId', 'userId'] },
    { name: 'coupon_event_sequence_unique', properties: ['eventId', 'sequence'] },
  ],
});
export type CouponRow = InferEntity<typeof CouponSchema>;
