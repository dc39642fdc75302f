/**
 * The story's first attempt: count the event's coupons in MySQL, insert one if the count is below N. There is no
 * lock, so concurrent requests read the same count and all insert: the benchmark shows how far past N it goes.
 *
 * It writes to bench_naive_coupon, a copy of the coupon table without the unique (event_id, sequence) key, as the
 * story's entity had none; the unique (event_id, user_id) key stays, so a repeat user gets 409.
 */
import { createBenchApp, createPool, EventTotals, listen, routeApplyForEvent, sendError, sendIssued } from './common.ts';

const pool = createPool();
const totals = new EventTotals(pool);

const app = createBenchApp((router) => routeApplyForEvent(router, totals, async (ctx, request, total) => {
  const [rows] = await pool.execute('select count(*) as n from bench_naive_coupon where event_id = ?', [request.eventId]);
  const count = Number((rows as Array<{ n: number }>)[0]!.n);
  if (count >= total) return sendError(ctx, 410, 'sold_out', 'all coupons of this event are issued');
  try {
    await pool.execute(
      'insert into bench_naive_coupon (event_id, user_id, sequence, issued_at) values (?, ?, ?, current_timestamp(3))',
      [request.eventId, request.userId, count + 1],
    );
  } catch (error) {
    if ((error as { code?: string }).code === 'ER_DUP_ENTRY') return sendError(ctx, 409, 'already_applied', 'this user holds a coupon');
    throw error;
  }
  sendIssued(ctx, count + 1);
}));
listen(app, () => pool.end());
