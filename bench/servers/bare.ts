/**
 * The bare one-round-trip design, the least any design that sends one gate call per request pays: Koa with no
 * router and no body-parser library, the body read and JSON.parse'd by hand, the same checks of the ids, one EVALSHA
 * of a one-line INCR script over an auto-pipelined connection, 202. Issue 21's third baseline: a batched gate has to
 * beat it, since it pays the per-request round trip that batching shares.
 */
import { Redis } from 'ioredis';
import Koa, { type Context } from 'koa';
import { isEventId, isUserId } from '../../src/domain/coupon.ts';
import { listen, sendError } from './common.ts';

const redisUrl = process.env.REDIS_URL;
if (!redisUrl) throw new Error('REDIS_URL is required');
const redis = new Redis(redisUrl, { enableAutoPipelining: true, maxRetriesPerRequest: 1 }) as Redis & {
  incrOnce(counter: string): Promise<number>;
};
redis.defineCommand('incrOnce', { numberOfKeys: 1, lua: "return redis.call('INCR', KEYS[1])" });

const APPLY = /^\/v1\/events\/([^/]+)\/apply$/;

async function readBody(ctx: Context): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of ctx.req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

const app = new Koa();
app.silent = true;
app.use(async (ctx) => {
  if (ctx.method === 'GET' && ctx.path === '/readyz') {
    ctx.body = { status: 'ready' };
    return;
  }
  const match = ctx.method === 'POST' ? APPLY.exec(ctx.path) : null;
  if (!match) return sendError(ctx, 404, 'not_found', 'no such route');
  let userId: unknown;
  try {
    userId = (JSON.parse(await readBody(ctx)) as { userId?: unknown }).userId;
  } catch {
    return sendError(ctx, 400, 'invalid_request', 'the body is not JSON');
  }
  const eventId = match[1]!;
  if (!isEventId(eventId) || typeof userId !== 'string' || !isUserId(userId)) {
    return sendError(ctx, 400, 'invalid_request', 'eventId or userId is malformed');
  }
  try {
    const sequence = await redis.incrOnce(`bench:{${eventId}}:bare`);
    ctx.status = 202;
    ctx.body = { status: 'issued', sequence };
  } catch (error) {
    sendError(ctx, 503, 'unavailable', (error as Error).message);
  }
});
listen(app, async () => {
  redis.disconnect();
});
