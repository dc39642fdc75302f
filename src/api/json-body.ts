import type { Context, Next } from 'koa';
import getRawBody from 'raw-body';
import { HttpError } from './errors.ts';

declare module 'koa' {
  interface Request {
    /** the request's JSON body, once readJsonBody has read it */
    body?: unknown;
  }
}

/** the largest request body any route accepts, in bytes, and as the error message says it */
const MAX_BODY_BYTES = 4096;
const MAX_BODY = '4kb';

/** `application/json`, any case, with or without parameters (`; charset=utf-8`) */
const JSON_TYPE = /^application\/json[\t ]*(;|$)/i;

/**
 * Reads a request's JSON body into ctx.request.body: a JSON object or array, or `{}` when there is no body.
 * A body of another type is refused (415), one over MAX_BODY a 413, one that is not valid JSON a 400. The hot path's reader:
 * raw-body and JSON.parse, without the content-type negotiation, decompression and charset handling of a
 * general body parser, which nothing here needs (a JSON body is UTF-8).
 */
export async function readJsonBody(ctx: Context): Promise<unknown> {
  const headers = ctx.req.headers;
  const length = headers['content-length'];
  if (headers['transfer-encoding'] === undefined && (length === undefined || length === '0')) return (ctx.request.body = {});
  if (!JSON_TYPE.test(headers['content-type'] ?? '')) throw new HttpError('unsupported_media_type', 'send the body as application/json');
  let text: string;
  try {
    // As bytes, decoded here: raw-body's own decoding sets up a charset decoder for every body.
    text = (await getRawBody(ctx.req, { length, limit: MAX_BODY_BYTES })).toString('utf8');
  } catch (error) {
    const { type, status } = error as { type?: string; status?: number };
    if (type === 'entity.too.large') throw new HttpError('payload_too_large', `the body is larger than ${MAX_BODY}`);
    // The client went away while its request waited (for a slot, say): nobody is left to answer, and it is no fault.
    if (type === 'stream.not.readable' || ctx.req.socket.destroyed) throw new HttpError('invalid_request', 'the request was closed before its body was read');
    // A body cut short or longer than its Content-Length: the client's fault, said as such.
    if (status !== undefined && status < 500) throw new HttpError('invalid_request', `the body could not be read: ${(error as Error).message}`);
    throw error;
  }
  let body: unknown = {};
  try {
    if (text !== '') body = JSON.parse(text);
  } catch {
    throw new HttpError('invalid_request', 'the body is not valid JSON');
  }
  // Strict like co-body: a bare string, number or null is not a request body.
  if (typeof body !== 'object' || body === null) throw new HttpError('invalid_request', 'the body is not valid JSON');
  return (ctx.request.body = body);
}

/** readJsonBody as a middleware, for the routes that take a body. */
export async function jsonBody(ctx: Context, next: Next): Promise<void> {
  await readJsonBody(ctx);
  await next();
}
