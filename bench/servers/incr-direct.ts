/**
 * The story's second attempt: Redis decides (a per-user set and INCR, atomic in one small script, so never more
 * than N and one per user), then the request itself inserts the coupon into MySQL before answering. Correct, but
 * every accepted request is one INSERT on the shared database, at whatever rate the burst arrives.
 */
import { Redis } from 'ioredis';
import { createBenchApp, createPool, EventTotals, listen, routeApplyForEvent, sendError, sendIssued } from './common.ts';

/**
 * KEYS[1] issued counter, KEYS[2] set of users holding a coupon; ARGV[1] total, ARGV[2] userId.
 * Returns the sequence (1..N), 0 when sold out, -1 when the user already holds one.
 */
const GATE = `
if redis.call('SISMEMBER', KEYS[2], ARGV[2]) == 1 then return -1 end
if tonumber(redis.call('GET', KEYS[1]) or '0') >= tonumber(ARGV[1]) then return 0 end
redis.call('SADD', KEYS[2], ARGV[2])
return redis.call('INCR', KEYS[1])
`;

const redisUrl = process.env.REDIS_URL;
if (!redisUrl) throw new Error('REDIS_URL is required');
const redis = new Redis(redisUrl, { enableOfflineQueue: true, maxRetriesPerRequest: 1 }) as Redis & {
  incrGate(issued: string, users: string, total: number, userId: string): Promise<number>;
};
redis.defineCommand('incrGate', { numberOfKeys: 2, lua: GATE });
const pool = createPool();
const totals = new EventTotals(pool);

const app = createBenchApp((router) => routeApplyForEvent(router, totals, async (ctx, request, total) => {
  const sequence = await redis.incrGate(`bench:{${request.eventId}}:issued`, `bench:{${request.eventId}}:users`, total, request.userId);
  if (sequence === -1) return sendError(ctx, 409, 'already_applied', 'this user holds a coupon');
  if (sequence === 0) return sendError(ctx, 410, 'sold_out', 'all coupons of this event are issued');
  await pool.execute(
    'insert into coupon (event_id, user_id, sequence, issued_at) values (?, ?, ?, current_timestamp(3))',
    [request.eventId, request.userId, sequence],
  );
  sendIssued(ctx, sequence);
}));
listen(app, async () => {
  redis.disconnect();
  await pool.end();
});
