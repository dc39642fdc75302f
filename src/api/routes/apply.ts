import type { Context, Middleware, Next } from 'koa';
import type { Router } from '@koa/router';
import type { ApplyDecision, ApplyForCoupon } from '../../apply.ts';
import { IDEMPOTENCY_KEY_PATTERN, isEventId, isIdempotencyKey } from '../../domain/coupon.ts';
import { type ErrorCode, sendError } from '../errors.ts';
import { type ApplyBody, describeError, validateApply } from '../schemas.ts';

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
 */
export function applyRoutes(router: Router, apply: ApplyForCoupon, parseJson: Middleware): void {
  router.post('/v1/events/:eventId/apply', answerLocallySoldOut(apply), parseJson, async (ctx: Context) => {
    const eventId = ctx.params.eventId as string;
    if (!isEventId(eventId)) return sendError(ctx, 'invalid_request', 'eventId must match ^[a-z0-9][a-z0-9-]{0,63}$');
    if (ctx.request.length && !ctx.is('application/json')) return sendError(ctx, 'unsupported_media_type', 'send the body as application/json');
    const body = (ctx.request.body ?? {}) as ApplyBody;
    if (!validateApply(body)) return sendError(ctx, 'invalid_request', describeError(validateApply));

    // A header sent empty is a malformed key, not a missing one.
    const idempotencyKey = ctx.headers['idempotency-key'] === undefined ? undefined : ctx.get('idempotency-key');
    if (idempotencyKey !== undefined && !isIdempotencyKey(idempotencyKey)) {
      return sendError(ctx, 'invalid_request', `Idempotency-Key must match ${IDEMPOTENCY_KEY_PATTERN}`);
    }
    const decision = await apply.apply({ eventId, userId: body.userId, authorization: ctx.get('authorization') || undefined, idempotencyKey });
    if (decision.kind === 'issued') {
      ctx.status = 202;
      ctx.body = { status: 'issued', sequence: decision.sequence };
      return;
    }
    const [code, message] = refusal(decision, eventId);
    sendError(ctx, code, message);
  });
}

/** A sold-out apply known here is answered before its body is read and parsed: most of such a request's cost. */
function answerLocallySoldOut(apply: ApplyForCoupon) {
  return (ctx: Context, next: Next) => {
    if (!apply.answeredLocally(ctx.params.eventId as string, ctx.headers['idempotency-key'] as string | undefined)) return next();
    sendError(ctx, 'sold_out', SOLD_OUT_MESSAGE);
  };
}
