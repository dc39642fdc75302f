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

/** Writes an error answer: `{error, message}` with the code's status. The error middleware and the apply route use it. */
export function sendError(ctx: Context, code: ErrorCode, message: string): void {
  ctx.status = ERROR_STATUS[code];
  ctx.body = { error: code, message };
}
