import { createHash, timingSafeEqual } from 'node:crypto';
import type { Context, Next } from 'koa';
import type { Router } from '@koa/router';
import { EVENT_ID_PATTERN, EVENT_STATUSES, type EventStatus, isEventId, isUserId } from '../../domain/coupon.ts';
import type { EventService } from '../../event-service.ts';
import { HttpError } from '../errors.ts';
import { jsonBody } from '../json-body.ts';
import {
  type CreateEventBody, type UpdateEventBody, describeError, validateCreateEvent, validateUpdateEvent,
} from '../schemas.ts';

/**
 * Event management (admin) and the public reads. None of this is on the apply hot path; every refusal is
 * thrown as an HttpError and answered by the one error middleware.
 */
export function eventRoutes(
  router: Router, deps: { events: EventService; adminToken: string | undefined; onEventChanged(eventId: string): void },
): void {
  const admin = requireAdmin(deps.adminToken);
  router.get('/v1/events', admin, (ctx) => listEvents(ctx, deps.events));
  router.post('/v1/events', admin, jsonBody, (ctx) => createEvent(ctx, deps.events));
  router.get('/v1/events/:eventId', (ctx) => getEvent(ctx, deps.events));
  router.patch('/v1/events/:eventId', admin, jsonBody, (ctx) => updateEvent(ctx, deps));
  router.get('/v1/events/:eventId/coupons/:userId', (ctx) => getCoupon(ctx, deps.events));
}

export function requireAdmin(adminToken: string | undefined) {
  const isAdmin = adminCheck(adminToken);
  return (ctx: Context, next: Next) => {
    if (!isAdmin(ctx)) {
      throw new HttpError('unauthorized', adminToken === undefined ? 'admin routes are disabled: ADMIN_TOKEN is not set' : 'a valid admin token is required');
    }
    return next();
  };
}

/** Whether a request carries the admin token (never, while ADMIN_TOKEN is unset). */
export function adminCheck(adminToken: string | undefined): (ctx: Context) => boolean {
  const expected = adminToken === undefined ? undefined : digest(adminToken);
  return (ctx: Context) => {
    const header = ctx.get('authorization');
    const given = header.startsWith('Bearer ') ? header.slice(7).trim() : '';
    // Both sides are hashed to equal length first, so the comparison takes the same time whatever was sent.
    return expected !== undefined && timingSafeEqual(digest(given), expected);
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

/** 201 when this request created the event (or completed a half-made one of the same body), 200 when it was there as asked. */
async function createEvent(ctx: Context, events: EventService): Promise<void> {
  const body = parseBody<CreateEventBody>(ctx, validateCreateEvent);
  const startsAt = body.startsAt === undefined ? undefined : parseDate(body.startsAt, 'startsAt');
  const endsAt = body.endsAt == null ? null : parseDate(body.endsAt, 'endsAt');
  if (endsAt && endsAt <= (startsAt ?? new Date())) throw new HttpError('invalid_request', 'endsAt must be after startsAt');
  const result = await events.create({ id: body.id, name: body.name, totalQuantity: body.totalQuantity, startsAt, endsAt });
  if (result.kind === 'event_exists') throw new HttpError('event_exists', `event ${body.id} already exists with other fields`);
  ctx.status = result.kind === 'created' ? 201 : 200;
  ctx.set('Location', `/v1/events/${body.id}`);
  ctx.body = result.event;
}

const DEFAULT_PAGE = 20;
const MAX_PAGE = 100;

/** GET /v1/events?status=&cursor=&limit=: a page of events in id order; `nextCursor` continues it. */
async function listEvents(ctx: Context, events: EventService): Promise<void> {
  const unknown = Object.keys(ctx.query).find((name) => !['status', 'cursor', 'limit'].includes(name));
  if (unknown) throw new HttpError('invalid_request', `unknown query parameter "${unknown}"`);
  const { status, cursor, limit: limitText } = ctx.query;
  if (Array.isArray(status) || Array.isArray(cursor) || Array.isArray(limitText)) throw new HttpError('invalid_request', 'give each query parameter once');
  if (status !== undefined && !(EVENT_STATUSES as readonly string[]).includes(status)) {
    throw new HttpError('invalid_request', `status must be one of ${EVENT_STATUSES.join(', ')}`);
  }
  const limit = limitText === undefined ? DEFAULT_PAGE : /^[0-9]{1,3}$/.test(limitText) ? Number(limitText) : NaN;
  if (!(limit >= 1 && limit <= MAX_PAGE)) throw new HttpError('invalid_request', `limit must be an integer from 1 to ${MAX_PAGE}`);
  // The cursor is the last event id looked at: any well-formed id is a place to go on from, ids being in order.
  if (cursor !== undefined && !isEventId(cursor)) throw new HttpError('invalid_request', `cursor must match ${EVENT_ID_PATTERN}`);
  const page = await events.list({ afterId: cursor ?? null, limit, ...(status !== undefined && { status: status as EventStatus }) });
  ctx.body = { events: page.events, nextCursor: page.nextCursor };
}

async function getEvent(ctx: Context, events: EventService): Promise<void> {
  const eventId = eventIdParam(ctx);
  const event = await events.get(eventId);
  if (!event) throw new HttpError('event_not_found', `event ${eventId} does not exist`);
  ctx.body = event;
}

async function updateEvent(ctx: Context, deps: { events: EventService; onEventChanged(eventId: string): void }): Promise<void> {
  const eventId = eventIdParam(ctx);
  const body = parseBody<UpdateEventBody>(ctx, validateUpdateEvent);
  const endsAt = body.endsAt === undefined ? undefined : body.endsAt === null ? null : parseDate(body.endsAt, 'endsAt');
  const result = await deps.events.update(eventId, {
    ...(body.name !== undefined && { name: body.name }),
    ...(body.totalQuantity !== undefined && { totalQuantity: body.totalQuantity }),
    ...(endsAt !== undefined && { endsAt }),
    ...(body.paused !== undefined && { paused: body.paused }),
  });
  switch (result.kind) {
    case 'updated':
      deps.onEventChanged(eventId);
      ctx.body = result.event;
      return;
    case 'event_not_found':
      throw new HttpError('event_not_found', `event ${eventId} does not exist`);
    case 'quantity_below_issued':
      throw new HttpError('quantity_below_issued', `${result.issued} coupons are already issued`);
    case 'ends_before_start':
      throw new HttpError('invalid_request', 'endsAt must be after startsAt');
    case 'event_archived':
      throw new HttpError('event_not_open', `event ${eventId} has ended and is archived: it can no longer be changed`);
    case 'state_missing':
      throw new HttpError('unavailable', 'the event is being restored from the database; try again shortly');
  }
}

async function getCoupon(ctx: Context, events: EventService): Promise<void> {
  const eventId = eventIdParam(ctx);
  const userId = ctx.params.userId as string;
  if (!isUserId(userId)) throw new HttpError('invalid_request', 'userId must be 1-64 of [A-Za-z0-9_-]');
  const coupon = await events.findCoupon(eventId, userId);
  if (!coupon) throw new HttpError('coupon_not_found', `user ${userId} holds no coupon of event ${eventId}`);
  ctx.body = coupon;
}
