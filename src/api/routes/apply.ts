import type { Context, Next } from 'koa';
import type { Router } from '@koa/router';
import type { ApplyDecision, ApplyForCoupon } from '../../apply.ts';
import type { Admission, Shed } from '../admission.ts';
import { IDEMPOTENCY_KEY_PATTERN, isEventId, isIdempotencyKey } from '../../domain/coupon.ts';
import { type ErrorCode, sendError } from '../errors.ts';
import { readJsonBody } from '../json-body.ts';
import { type ApplyBody, describeError, validateApply } from '../schemas.ts';

export const APPLY_ROUTE = '/v1/events/:eventId/apply';
const APPLY_PATH = /^\/v1\/events\/([^/]+)\/apply$/;

/** Each outcome of the use case other than success, as the error code and message the client gets. */
function refusal(decision: Exclude<ApplyDecision, { kind: 'issued' }>, eventId: string): [ErrorCode, string] {
  switch (decision.kind) {
    case 'already_applied': return ['already_applied', `user ${decision.userId} already holds coupon ${decision.sequence}`];
    case 'sold_out': return ['sold_out', SOLD_OUT_MESSAGE];
    case 'paused': return ['event_paused', 'issuing is paused for this event'];
    case 'not_started': return ['event_not_open', 'the event has not started yet'];
    case 'ended': return ['event_not_open', 'the event has ended'];
    case 'event_not_found': return ['event_not_found', `event ${eventId} does not exist`];
    case 'restoring': return ['unavailable', 'the event is being restored; try again shortly'];
    case 'unauthorized': return ['unauthorized', decision.message];
    case 'user_mismatch': return ['forbidden', 'userId does not match the token subject'];
    case 'user_required': return ['invalid_request', 'userId is required'];
  }
}
const SOLD_OUT_MESSAGE = 'all coupons of this event are issued';

/**
 * POST /v1/events/:eventId/apply, the hot path: one Redis round trip (or none, once the event is sold out
 * here). The use case decides; this only reads the request and writes the answer.
 *
 * A POST is dispatched by `fastLane`, mounted ahead of the router: one regular expression instead of the
 * router's per-request work (every route's pattern tried, a middleware chain composed, the params decoded),
 * which cost more than the rest of a sold-out answer. The route is registered in the router too, so that
 * other methods get 405 with `Allow: POST` like every other route.
 */
export interface ApplyRouteDeps {
  apply: ApplyForCoupon;
  /** the bound on applies in flight; a request it sheds is answered 503 before its body is read */
  admission: Admission;
  onShed(reason: Shed): void;
}

export function applyRoutes(router: Router, deps: ApplyRouteDeps): (ctx: Context, next: Next) => Promise<void> | void {
  router.post(APPLY_ROUTE, (ctx) => handleApply(ctx, deps, ctx.params.eventId as string));
  return (ctx, next) => {
    if (ctx.method !== 'POST') return next();
    const match = APPLY_PATH.exec(ctx.path);
    if (match === null) return next();
    ctx._matchedRoute = APPLY_ROUTE;
    const eventId = match[1]!;
    return handleApply(ctx, deps, eventId.includes('%') ? decodeOrKeep(eventId) : eventId);
  };
}

async function handleApply(ctx: Context, deps: ApplyRouteDeps, eventId: string): Promise<void> {
  // A turn of the event loop can run for seconds under a burst: batches filling for over 10 ms go now, not at its end.
  deps.apply.sendAgedBatches();
  const idempotencyKey = ctx.req.headers['idempotency-key'] as string | undefined;
  // A sold-out apply known here takes no slot and runs no gate: sold-out answers stay cheap however full the queue
  // is. Its body is still read: a holder of a coupon hears 409 with it, not 410 (one read of the user's entry).
  const soldOutHere = deps.apply.soldOutHere(eventId, idempotencyKey);
  if (soldOutHere) return applyAdmitted(ctx, deps.apply, eventId, idempotencyKey, true);
  if (!isEventId(eventId)) return sendError(ctx, 'invalid_request', 'eventId must match ^[a-z0-9][a-z0-9-]{0,63}$');
  let admitted = deps.admission.acquire();
  if (admitted instanceof Promise) admitted = await admitted;
  if (admitted !== true) {
    deps.onShed(admitted);
    // Nothing was read or decided: the client may ask again after Retry-After, and nothing was issued.
    return sendError(ctx, 'unavailable', 'the api is at capacity; try again shortly');
  }
  try {
    await applyAdmitted(ctx, deps.apply, eventId, idempotencyKey, soldOutHere);
  } finally {
    deps.admission.release();
  }
}

async function applyAdmitted(
  ctx: Context, apply: ApplyForCoupon, eventId: string, idempotencyKey: string | undefined, soldOutHere: boolean | undefined,
): Promise<void> {
  const body = (await readJsonBody(ctx)) as ApplyBody;
  // A client that gave up while its request waited for a slot hears nothing: no coupon is issued for it.
  if (ctx.req.socket.destroyed) return sendError(ctx, 'unavailable', 'the client closed the request before it was decided');
  if (!validateApply(body)) return sendError(ctx, 'invalid_request', describeError(validateApply));
  // A header sent empty is a malformed key, not a missing one.
  if (idempotencyKey !== undefined && !isIdempotencyKey(idempotencyKey)) {
    return sendError(ctx, 'invalid_request', `Idempotency-Key must match ${IDEMPOTENCY_KEY_PATTERN}`);
  }
  const decision = await apply.apply({
    eventId, userId: body.userId, authorization: ctx.req.headers.authorization || undefined, idempotencyKey, ...(soldOutHere !== undefined && { soldOutHere }),
  });
  if (decision.kind === 'issued') {
    ctx.status = 202;
    ctx.body = { status: 'issued', sequence: decision.sequence };
    return;
  }
  const [code, message] = refusal(decision, eventId);
  sendError(ctx, code, message);
}

/** The router's decoding of a path parameter: a malformed escape is kept as it is (and then refused as an id). */
function decodeOrKeep(segment: string): string {
  try {
    return decodeURIComponent(segment);
  } catch {
    return segment;
  }
}
