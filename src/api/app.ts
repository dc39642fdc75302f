import { createHash, timingSafeEqual } from 'node:crypto';
import Koa, { type Context, type Next } from 'koa';
import { Router } from '@koa/router';
import { bodyParser } from '@koa/bodyparser';
import type { Logger } from 'pino';
import { isEventId, isUserId } from '../domain/coupon.ts';
import type { EventService } from '../events.ts';
import { isDependencyFault } from '../faults.ts';
import { applyForCoupon, type CouponRedis } from '../redis/client.ts';
import type { ReplicaAcks } from '../redis/replica-acks.ts';
import { STATE_SENTINEL_KEY } from '../redis/keys.ts';
import { ERROR_STATUS, type ErrorCode, HttpError } from './errors.ts';
import type { Identity } from './identity.ts';
import type { ApiMetrics } from './metrics.ts';
import {
  type ApplyBody, type CreateEventBody, type UpdateEventBody, describeError, validateApply, validateCreateEvent, validateUpdateEvent,
} from './schemas.ts';
import type { SoldOutFlags } from './sold-out.ts';

export interface AppDeps {
  /** the gate's client: fails fast while Redis is unreachable */
  redis: CouponRedis;
  events: EventService;
  soldOut: SoldOutFlags;
  metrics: ApiMetrics;
  logger: Logger;
  adminToken: string | undefined;
  identity: Identity | undefined;
  /** true once SIGTERM arrived: /readyz fails so the load balancer stops sending */
  isDraining(): boolean;
  /** how long the gate waits for Redis before answering 503 */
  gateTimeoutMs?: number;
  /** how long a "does this event exist" answer is trusted when Redis has no state for it */
  existenceCacheMs?: number;
  /** whether the connected Redis server was compared with MySQL: nothing is issued on one that was not */
  server: { readonly checked: boolean; readonly everChecked: boolean };
  /** GATE_MIN_REPLICAS > 0: a 202 waits until replicas hold the coupon */
  replicas?: ReplicaAcks;
}

const MAX_BODY = '4kb';

/** The api as a Koa app, without listening: main.ts listens, tests boot it on port 0. */
export function createApp(deps: AppDeps): Koa {
  const app = new Koa();
  app.proxy = true;
  app.silent = true;
  app.use(errorMiddleware(deps));

  // Parsed per route, not for every request: a sold-out apply is answered before its body is read.
  const parseJson = bodyParser({
    enableTypes: ['json'],
    jsonLimit: MAX_BODY,
    jsonStrict: true,
    onError: (error) => {
      const tooLarge = (error as { status?: number }).status === 413;
      throw new HttpError('invalid_request', tooLarge ? `the body is larger than ${MAX_BODY}` : 'the body is not valid JSON');
    },
  });
  const router = new Router();
  router.get('/healthz', (ctx) => { ctx.body = { status: 'ok' }; });
  router.get('/readyz', (ctx) => readiness(ctx, deps));
  router.get('/metrics', async (ctx) => {
    ctx.type = deps.metrics.registry.contentType;
    ctx.body = await deps.metrics.registry.metrics();
  });
  router.post('/v1/events', requireAdmin(deps.adminToken), requireJson, parseJson, (ctx) => createEvent(ctx, deps));
  router.get('/v1/events/:eventId', (ctx) => getEvent(ctx, deps));
  router.patch('/v1/events/:eventId', requireAdmin(deps.adminToken), requireJson, parseJson, (ctx) => updateEvent(ctx, deps));
  router.post('/v1/events/:eventId/apply', answerLocallySoldOut(deps), parseJson, applyRoute(deps));
  router.get('/v1/events/:eventId/coupons/:userId', (ctx) => getCoupon(ctx, deps));
  app.use(router.routes());
  app.use(router.allowedMethods());
  return app;
}

export function sendError(ctx: Context, code: ErrorCode, message: string): void {
  ctx.status = ERROR_STATUS[code];
  ctx.body = { error: code, message };
}

/** The one error path: HttpErrors become their status; faults of Redis or MySQL become 503; the rest 500. */
function errorMiddleware(deps: AppDeps) {
  return async (ctx: Context, next: Next) => {
    const started = performance.now();
    try {
      await next();
      if (ctx.body === undefined || ctx.body === null) {
        if (ctx.status === 404) sendError(ctx, 'not_found', `no route for ${ctx.method} ${ctx.path}`);
        else if (ctx.status === 405 || ctx.status === 501) sendError(ctx, 'method_not_allowed', `${ctx.method} is not allowed on ${ctx.path}`);
      }
    } catch (error) {
      if (error instanceof HttpError) {
        sendError(ctx, error.code, error.message);
      } else if (isDependencyFault(error)) {
        deps.logger.warn({ err: error, route: ctx._matchedRoute }, 'dependency unavailable');
        sendError(ctx, 'unavailable', 'a backing service is unavailable; try again shortly');
      } else {
        deps.logger.error({ err: error, route: ctx._matchedRoute }, 'request failed');
        sendError(ctx, 'internal_error', 'internal error');
      }
    }
    deps.metrics.observeRequest(String(ctx._matchedRoute ?? 'unmatched'), ctx.status, (performance.now() - started) / 1000);
  };
}

async function readiness(ctx: Context, deps: AppDeps): Promise<void> {
  if (deps.isDraining()) return sendError(ctx, 'unavailable', 'draining');
  // A process that could not issue yet takes no traffic; later re-checks (after a failover) keep it in rotation.
  if (!deps.server.everChecked) return sendError(ctx, 'unavailable', 'redis has not been compared with mysql yet');
  try {
    await deps.redis.ping();
    ctx.body = { status: 'ready' };
  } catch {
    sendError(ctx, 'unavailable', 'redis is unreachable');
  }
}

function requireJson(ctx: Context, next: Next) {
  if (!ctx.is('application/json')) throw new HttpError('unsupported_media_type', 'send the body as application/json');
  return next();
}

function requireAdmin(adminToken: string | undefined) {
  const expected = adminToken === undefined ? undefined : digest(adminToken);
  return (ctx: Context, next: Next) => {
    const header = ctx.get('authorization');
    const given = header.startsWith('Bearer ') ? header.slice(7).trim() : '';
    // Both sides are hashed to equal length first, so the comparison takes the same time whatever was sent.
    if (expected === undefined || !timingSafeEqual(digest(given), expected)) {
      throw new HttpError('unauthorized', expected === undefined ? 'admin routes are disabled: ADMIN_TOKEN is not set' : 'a valid admin token is required');
    }
    return next();
  };
}

const digest = (value: string): Buffer => createHash('sha256').update(value).digest();

function eventIdParam(ctx: Context): string {
  const eventId = ctx.params.eventId as string;
  if (!isEventId(eventId)) throw new HttpError('invalid_request', 'eventId must match ^[a-z0-9][a-z0-9-]{0,63}$');
  return eventId;
}

function parseBody<T>(ctx: Context, validate: { (body: unknown): body is T; errors?: unknown }): T {
  const body: unknown = ctx.request.body;
  if (!validate(body)) throw new HttpError('invalid_request', describeError(validate as never));
  return body;
}

// MySQL's datetime holds years 1000-9999 only (year 0001 was stored as 2001, year 10000 broke reads with 500).
// The schemas ask for a four-digit year from 1000; an offset can still carry an instant past either end.
const EARLIEST_DATE_MS = Date.UTC(1000, 0, 1);
const LATEST_DATE_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

function parseDate(value: string, field: string): Date {
  const date = new Date(value);
  if (Number.isNaN(date.getTime())) throw new HttpError('invalid_request', `${field} is not a valid date-time`);
  if (date.getTime() < EARLIEST_DATE_MS || date.getTime() > LATEST_DATE_MS) {
    throw new HttpError('invalid_request', `${field} must be between 1000-01-01 and 9999-12-31 (UTC)`);
  }
  return date;
}

async function createEvent(ctx: Context, deps: AppDeps): Promise<void> {
  const body = parseBody<CreateEventBody>(ctx, validateCreateEvent);
  const startsAt = body.startsAt === undefined ? new Date() : parseDate(body.startsAt, 'startsAt');
  const endsAt = body.endsAt == null ? null : parseDate(body.endsAt, 'endsAt');
  if (endsAt && endsAt <= startsAt) throw new HttpError('invalid_request', 'endsAt must be after startsAt');
  const result = await deps.events.create({ id: body.id, name: body.name, totalQuantity: body.totalQuantity, startsAt, endsAt });
  if (result.kind === 'event_exists') return sendError(ctx, 'event_exists', `event ${body.id} already exists`);
  ctx.status = 201;
  ctx.set('Location', `/v1/events/${body.id}`);
  ctx.body = result.event;
}

async function getEvent(ctx: Context, deps: AppDeps): Promise<void> {
  const eventId = eventIdParam(ctx);
  const event = await deps.events.get(eventId);
  if (!event) return sendError(ctx, 'event_not_found', `event ${eventId} does not exist`);
  ctx.body = event;
}

async function updateEvent(ctx: Context, deps: AppDeps): Promise<void> {
  const eventId = eventIdParam(ctx);
  const body = parseBody<UpdateEventBody>(ctx, validateUpdateEvent);
  const endsAt = body.endsAt === undefined ? undefined : body.endsAt === null ? null : parseDate(body.endsAt, 'endsAt');
  const result = await deps.events.update(eventId, {
    ...(body.name !== undefined && { name: body.name }),
    ...(body.totalQuantity !== undefined && { totalQuantity: body.totalQuantity }),
    ...(endsAt !== undefined && { endsAt }),
  });
  switch (result.kind) {
    case 'updated':
      deps.soldOut.forget(eventId);
      ctx.body = result.event;
      return;
    case 'event_not_found':
      return sendError(ctx, 'event_not_found', `event ${eventId} does not exist`);
    case 'quantity_below_issued':
      return sendError(ctx, 'quantity_below_issued', `${result.issued} coupons are already issued`);
    case 'ends_before_start':
      return sendError(ctx, 'invalid_request', 'endsAt must be after startsAt');
    case 'state_missing':
      return sendError(ctx, 'unavailable', 'the event is being restored from the database; try again shortly');
  }
}

async function getCoupon(ctx: Context, deps: AppDeps): Promise<void> {
  const eventId = eventIdParam(ctx);
  const userId = ctx.params.userId as string;
  if (!isUserId(userId)) throw new HttpError('invalid_request', 'userId must be 1-64 of [A-Za-z0-9_-]');
  const coupon = await deps.events.findCoupon(eventId, userId);
  if (!coupon) return sendError(ctx, 'coupon_not_found', `user ${userId} holds no coupon of event ${eventId}`);
  ctx.body = coupon;
}

/**
 * I7's fast lane: once this process knows an event is sold out, answer before the body is read and parsed,
 * which is most of the cost of a request that has nothing left to decide. With JWT identity configured the
 * token is still checked first, so an unauthenticated caller learns nothing.
 */
function answerLocallySoldOut(deps: AppDeps) {
  const { identity, soldOut, metrics } = deps;
  return (ctx: Context, next: Next) => {
    if (identity || !soldOut.isSoldOut(ctx.params.eventId as string, Date.now())) return next();
    metrics.countGate('local_sold_out');
    sendError(ctx, 'sold_out', 'all coupons of this event are issued');
  };
}

/**
 * The hot path: one Redis round trip (or none, once the event is sold out here). Outcomes are values;
 * nothing is logged at info level and nothing throws unless something is broken.
 */
function applyRoute(deps: AppDeps) {
  const { redis, soldOut, metrics, identity, server, replicas } = deps;
  const gateTimeoutMs = deps.gateTimeoutMs ?? 500;
  const existence = new ExistenceCache(deps.events, deps.existenceCacheMs ?? 5_000);
  const requestIdPrefix = `${process.pid.toString(36)}.${Date.now().toString(36)}.`;
  let requestCount = 0;

  return async (ctx: Context): Promise<void> => {
    const eventId = ctx.params.eventId as string;
    if (!isEventId(eventId)) return sendError(ctx, 'invalid_request', 'eventId must match ^[a-z0-9][a-z0-9-]{0,63}$');
    if (ctx.request.length && !ctx.is('application/json')) return sendError(ctx, 'unsupported_media_type', 'send the body as application/json');
    const body = (ctx.request.body ?? {}) as ApplyBody;
    if (!validateApply(body)) return sendError(ctx, 'invalid_request', describeError(validateApply));

    let userId = body.userId;
    if (identity) {
      const who = await identity.resolve(ctx.get('authorization') || undefined);
      if (who.kind === 'rejected') return sendError(ctx, 'unauthorized', who.message);
      if (userId !== undefined && userId !== who.userId) return sendError(ctx, 'forbidden', 'userId does not match the token subject');
      userId = who.userId;
    }
    if (userId === undefined) return sendError(ctx, 'invalid_request', 'userId is required');

    const now = Date.now();
    // Without JWT identity answerLocallySoldOut has answered already; with it, the flag counts after the token.
    if (soldOut.isSoldOut(eventId, now)) {
      metrics.countGate('local_sold_out');
      return sendError(ctx, 'sold_out', 'all coupons of this event are issued');
    }
    // A server not yet compared with MySQL (just restarted, or a replica just promoted) may be older than it.
    if (!server.checked) return sendError(ctx, 'unavailable', 'the gate state is being checked; try again shortly');
    const outcome = await applyForCoupon(redis, eventId, userId, requestIdPrefix + (++requestCount).toString(36), gateTimeoutMs, replicas);
    metrics.countGate(outcome.kind);
    switch (outcome.kind) {
      case 'issued':
        ctx.status = 202;
        ctx.body = { status: 'issued', sequence: outcome.sequence };
        return;
      case 'already_applied':
        return sendError(ctx, 'already_applied', `user ${userId} already holds coupon ${outcome.sequence}`);
      case 'sold_out':
        soldOut.markSoldOut(eventId, now);
        return sendError(ctx, 'sold_out', 'all coupons of this event are issued');
      case 'not_started':
        return sendError(ctx, 'event_not_open', 'the event has not started yet');
      case 'ended':
        return sendError(ctx, 'event_not_open', 'the event has ended');
      case 'state_missing':
        // Redis has no gate state: either no such event, or Redis lost its data and a worker will rebuild it
        // from MySQL; nothing is issued until then, so a flush can never cause over-issue. The worker's
        // sentinel tells the two apart without MySQL: present, Redis has lost nothing since the worker last
        // compared it with MySQL, so the event does not exist. Only while it is absent (a flush, or no worker
        // has run yet) is MySQL asked, once per event id for a few seconds.
        if (await redis.exists(STATE_SENTINEL_KEY) || !(await existence.exists(eventId))) {
          return sendError(ctx, 'event_not_found', `event ${eventId} does not exist`);
        }
        return sendError(ctx, 'unavailable', 'the event is being restored; try again shortly');
    }
  };
}

/** Remembers for a few seconds whether an event exists, so unknown ids cannot turn into a MySQL flood. */
class ExistenceCache {
  readonly #events: EventService;
  readonly #ttlMs: number;
  readonly #answers = new Map<string, { exists: boolean; until: number }>();

  constructor(events: EventService, ttlMs: number) {
    this.#events = events;
    this.#ttlMs = ttlMs;
  }

  async exists(eventId: string): Promise<boolean> {
    const now = Date.now();
    const cached = this.#answers.get(eventId);
    if (cached && now < cached.until) return cached.exists;
    if (this.#answers.size >= 10_000) this.#answers.clear();
    const exists = await this.#events.exists(eventId);
    this.#answers.set(eventId, { exists, until: now + this.#ttlMs });
    return exists;
  }
}
