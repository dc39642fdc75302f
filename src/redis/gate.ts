/**
 * The gate as the api calls it: one round trip to gate.lua, a deadline, the settle read after a timeout, and the
 * replica acknowledgement when GATE_MIN_REPLICAS asks for one.
 */
import type { ApplyOutcome } from '../domain/coupon.ts';
import type { CouponRedis } from './client.ts';
import { parseUserEntry } from './formats.ts';
import { eventKeys } from './keys.ts';
import { Deadlines } from './deadlines.ts';
import type { ReplicaAcks } from './replica-acks.ts';

const OUTCOMES: ApplyOutcome[] = [
  { kind: 'sold_out' }, { kind: 'not_started' }, { kind: 'ended' }, { kind: 'state_missing' },
];

export class GateTimeoutError extends Error {
  override name = 'GateTimeoutError';
  constructor() {
    super('Command timed out');
  }
}

export interface GateOptions {
  /** how long the gate waits for Redis (500 ms by default) */
  timeoutMs?: number;
  /** GATE_MIN_REPLICAS > 0: a coupon is answered only once replicas hold it */
  replicas?: ReplicaAcks;
  /** on a Cluster: the ids of the primaries compared with MySQL; the script runs on no other (see gate.lua) */
  checkedNodes?: string;
}

/**
 * One round trip: window, per-user check, INCR, record the user, XADD the outbox.
 * `requestId` must be unique per request (or be the client's Idempotency-Key, unique per user): it is how a
 * timed-out call finds out what happened, and how a retry is recognised.
 */
export async function applyForCoupon(
  redis: CouponRedis, eventId: string, userId: string, requestId: string, options: GateOptions = {},
): Promise<ApplyOutcome> {
  const { timeoutMs = 500, replicas, checkedNodes = '' } = options;
  const { outcome, ranOn } = await runGate(redis, eventId, userId, requestId, timeoutMs, checkedNodes);
  // GATE_MIN_REPLICAS: an issued coupon is answered only once replicas of the primary that wrote it hold it
  // (NotReplicatedError otherwise). A repeat wrote its entry again, so the acknowledgement covers the original too.
  if ((outcome.kind === 'issued' || outcome.kind === 'repeated') && replicas) await replicas.confirm(eventKeys(eventId).meta, ranOn);
  return outcome;
}

async function runGate(
  redis: CouponRedis, eventId: string, userId: string, requestId: string, timeoutMs: number, checkedNodes: string,
): Promise<{ outcome: ApplyOutcome; ranOn?: string }> {
  const keys = eventKeys(eventId);
  let reply: [number, number, number, string?];
  try {
    reply = await withTimeout(redis.gate(keys.meta, keys.issued, keys.users, keys.outbox, eventId, userId, requestId, checkedNodes), timeoutMs);
  } catch (error) {
    // One deadline for both calls: the gate's wait, then half of it again to settle, so a hung Redis is
    // answered 503 in 1.5x REDIS_COMMAND_TIMEOUT_MS (750 ms by default), well within a second.
    // The settle read does not tell which node wrote the entry: the WAIT goes to the one the slot map names.
    if (error instanceof GateTimeoutError) return { outcome: await settleTimedOut(redis, keys.users, userId, requestId, timeoutMs / 2) };
    throw error;
  }
  const [code, sequence, issuedAtMs, node] = reply;
  const ranOn = node || undefined;
  if (code === 0) return { outcome: { kind: 'issued', sequence, issuedAtMs }, ranOn };
  if (code === 6) return { outcome: { kind: 'repeated', sequence, issuedAtMs }, ranOn };
  if (code === 1) return { outcome: { kind: 'already_applied', sequence } };
  if (code === 7) return { outcome: { kind: 'paused' } };
  if (code === 8) return { outcome: { kind: 'unchecked_server' } };
  return { outcome: OUTCOMES[code - 2] ?? { kind: 'state_missing' } };
}

/**
 * The gate's reply did not arrive in time, but the script may have run. Redis runs one connection's commands
 * in order, so reading the user's entry now tells for certain: recorded with our request id, the coupon is
 * ours; recorded with another, an earlier request got it; not recorded, nothing was issued and the fault stands.
 */
async function settleTimedOut(redis: CouponRedis, usersKey: string, userId: string, requestId: string, timeoutMs: number): Promise<ApplyOutcome> {
  const entry = await withTimeout(redis.hget(usersKey, userId), timeoutMs);
  if (entry === null) throw new GateTimeoutError();
  const recorded = parseUserEntry(entry);
  return recorded.requestId === requestId
    ? { kind: 'issued', sequence: recorded.sequence, issuedAtMs: recorded.issuedAtMs }
    : { kind: 'already_applied', sequence: recorded.sequence };
}

/** One deadline queue per length (the gate's, and half of it to settle); a call's state is how to reject it. */
const deadlines = new Map<number, Deadlines<(error: unknown) => void>>();

/** Rejects with GateTimeoutError when the reply has not arrived after `ms` (see deadlines.ts). */
function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let queue = deadlines.get(ms);
  if (!queue) deadlines.set(ms, (queue = new Deadlines(ms, (reject) => reject(new GateTimeoutError()))));
  const { promise: answer, resolve, reject } = Promise.withResolvers<T>();
  const call = queue.start(reject);
  promise.then(
    (value) => { if (call.settle()) resolve(value); },
    (error: unknown) => { if (call.settle()) reject(error); },
  );
  return answer;
}
