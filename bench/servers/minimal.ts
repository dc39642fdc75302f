/**
 * The minimal one-round-trip design, a baseline for the product's apply path: Koa, the JSON body read, one
 * EVALSHA of a one-line INCR script over an auto-pipelined connection, 202. No window, no per-user record, no
 * outbox, no deadline: what any Redis-gated apply must pay at least. The product's open-event apply is reported
 * as a fraction of it, measured in the same run.
 */
import { Redis } from 'ioredis';
import { createBenchApp, listen, readApply } from './common.ts';

const redisUrl = process.env.REDIS_URL;
if (!redisUrl) throw new Error('REDIS_URL is required');
const redis = new Redis(redisUrl, { enableAutoPipelining: true, maxRetriesPerRequest: 1 }) as Redis & {
  incrOnce(counter: string): Promise<number>;
};
redis.defineCommand('incrOnce', { numberOfKeys: 1, lua: "return redis.call('INCR', KEYS[1])" });

const app = createBenchApp((router) => {
  router.post('/v1/events/:eventId/apply', async (ctx) => {
    const request = readApply(ctx);
    if (!request) return;
    ctx.status = 202;
    ctx.body = { status: 'issued', sequence: await redis.incrOnce(`bench:{${request.eventId}}:minimal`) };
  });
});
listen(app, async () => {
  redis.disconnect();
});
