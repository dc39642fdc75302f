/**
 * What the three bench-only servers (hello, naive, incr-direct) share with each other and with the product's api:
 * Koa 3, @koa/router, the same JSON error shape, one process per PORT, /readyz for scripts/services.ts-style
 * start-up, and SIGTERM closing the listener. They live under bench/ because they are the story's wrong turns,
 * not product code.
 */
import { createServer } from 'node:http';
import Koa, { type Context } from 'koa';
import { Router } from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import mysql from 'mysql2/promise';
import { isEventId, isUserId } from '../../src/domain/coupon.ts';

export function sendError(ctx: Context, status: number, error: string, message: string): void {
  ctx.status = status;
  ctx.body = { error, message };
}

export function sendIssued(ctx: Context, sequence: number): void {
  ctx.status = 202;
  ctx.body = { status: 'issued', sequence };
}

export interface ApplyRequest {
  eventId: string;
  userId: string;
}

/** The body and path checks every design does before deciding: a valid event id and a userId in the body. */
export function readApply(ctx: Context): ApplyRequest | undefined {
  const eventId = ctx.params.eventId as string;
  const userId = (ctx.request.body as { userId?: unknown } | undefined)?.userId;
  if (!isEventId(eventId) || typeof userId !== 'string' || !isUserId(userId)) {
    sendError(ctx, 400, 'invalid_request', 'eventId or userId is malformed');
    return undefined;
  }
  return { eventId, userId };
}

/** A Koa app with the product's middleware order: error path, JSON body parser, router. */
export function createBenchApp(route: (router: Router) => void, options: { parseBody?: boolean } = {}): Koa {
  const app = new Koa();
  app.silent = true;
  app.use(async (ctx, next) => {
    try {
      await next();
    } catch (error) {
      sendError(ctx, 503, 'unavailable', (error as Error).message);
    }
  });
  if (options.parseBody !== false) app.use(bodyParser({ enableTypes: ['json'], jsonLimit: '4kb' }));
  const router = new Router();
  router.get('/readyz', (ctx) => { ctx.body = { status: 'ready' }; });
  route(router);
  app.use(router.routes());
  app.use(router.allowedMethods());
  return app;
}

/** Listens on PORT and closes on SIGTERM, running `close` after the listener is gone. */
export function listen(app: Koa, close: () => Promise<unknown> = async () => {}): void {
  const server = createServer({ keepAliveTimeout: 65_000 }, app.callback());
  server.listen(Number(process.env.PORT ?? 8080), '127.0.0.1');
  const stop = () => {
    server.close(() => void close().finally(() => process.exit(0)));
    server.closeAllConnections();
  };
  process.once('SIGTERM', stop);
  process.once('SIGINT', stop);
}

/**
 * The apply route of a design that knows its events: the request checked and the event's total quantity read
 * (404 for an unknown event), then the design's own decision.
 */
export function routeApplyForEvent(
  router: Router, totals: EventTotals, decide: (ctx: Context, request: ApplyRequest, total: number) => Promise<void>,
): void {
  router.post('/v1/events/:eventId/apply', async (ctx) => {
    const request = readApply(ctx);
    if (!request) return;
    const total = await totals.get(request.eventId);
    if (total === undefined) return sendError(ctx, 404, 'event_not_found', 'no such event');
    await decide(ctx, request, total);
  });
}

/** A mysql2 pool sized like the product's MikroORM pool (10 connections per process). */
export function createPool(): mysql.Pool {
  const url = process.env.MYSQL_URL;
  if (!url) throw new Error('MYSQL_URL is required');
  return mysql.createPool({ uri: url, connectionLimit: 10, timezone: 'Z' });
}

/** Each event's total quantity, read from coupon_event once per process (the story's services load the event). */
export class EventTotals {
  readonly #pool: mysql.Pool;
  readonly #totals = new Map<string, Promise<number | undefined>>();

  constructor(pool: mysql.Pool) {
    this.#pool = pool;
  }

  get(eventId: string): Promise<number | undefined> {
    let total = this.#totals.get(eventId);
    if (!total) {
      total = this.#pool.query('select total_quantity from coupon_event where id = ?', [eventId]).then(([rows]) => {
        const row = (rows as Array<{ total_quantity: number }>)[0];
        return row ? Number(row.total_quantity) : undefined;
      });
      this.#totals.set(eventId, total);
    }
    return total;
  }
}
