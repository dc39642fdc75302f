import type { Context } from 'koa';

/** Every error code the api answers with, and its HTTP status: the one table of the contract. */
export const ERROR_STATUS = {
  invalid_request: 400,
  unauthorized: 401,
  forbidden: 403,
  not_found: 404,
  event_not_found: 404,
  coupon_not_found: 404,
  method_not_allowed: 405,
  event_exists: 409,
  already_applied: 409,
  event_not_open: 409,
  event_paused: 409,
  quantity_below_issued: 409,
  sold_out: 410,
  payload_too_large: 413,
  unsupported_media_type: 415,
  internal_error: 500,
  unavailable: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** An answer other than success. Thrown from routes, turned into `{error, message}` by the error middleware. */
export class HttpError extends Error {
  override name = 'HttpError';
  readonly code: ErrorCode;
  readonly status: number;

  constructor(code: ErrorCode, message: string) {
    super(message);
    this.code = code;
    this.status = ERROR_STATUS[code];
  }
}

/**
 * How long a client told 503 waits before it asks again, in seconds (the header's value). A 503 never says what
 * became of a coupon: the client retries with the same Idempotency-Key and jittered backoff (README, Clients).
 */
export const RETRY_AFTER_SECONDS = '1';

/**
 * Writes an error answer: `{error, message}` with the code's status, and Retry-After on every 503. The error
 * middleware and the apply route use it.
 */
export function sendError(ctx: Context, code: ErrorCode, message: string): void {
  ctx.status = ERROR_STATUS[code];
  if (code === 'unavailable') ctx.set('retry-after', RETRY_AFTER_SECONDS);
  ctx.body = { error: code, message };
}
