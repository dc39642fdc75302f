/**
 * The gate as the api calls it: one round trip to gate.lua, a deadline, the settle after a timeout or a fault (the
 * attempt recorded as given up, then the user's entry read), and the replica acknowledgement when GATE_MIN_REPLICAS
 * asks for one.
 */
import { Command } from 'ioredis';
import type { ApplyOutcome } from '../domain/coupon.ts';
import type { CouponRedis } from './client.ts';
import { parseUserEntry } from './formats.ts';
import { eventKeys } from './keys.ts';
import { Deadlines } from './deadlines.ts';
import type { BatchAck, GateBatcher, GateReply } from './gate-batcher.ts';
import type { HolderReads } from './holder-reads.ts';
import { NotReplicatedError, type ReplicaAcks } from './replica-acks.ts';

/**
 * A replica whose last acknowledgement is older than this (whole seconds, as Redis counts `lag`) does not count
 * toward GATE_MIN_REPLICAS when the gate decides whether it may write. Replicas acknowledge every second, so a
 * healthy one shows 0 or 1 (or -1, see gate.lua), more only when starved of CPU. 10 is Redis's own
 * `min-replicas-max-lag` default (and k8s/deps'):
 * the check is for a replica that is gone (a promoted primary without one), and a replica that stalls while it
 * still counts is what the WAIT after the write is for.
 */
const REPLICA_MAX_LAG_S = 10;

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
  /** GATE_BATCH=on: the call joins this turn's batch for its event (gate-batch.lua) instead of a gate.lua call of its own */
  batch?: GateBatcher;
}

/**
 * One round trip: window, per-user check, INCR, record the user, XADD the outbox.
 * `requestId` must be unique per request (or be the client's Idempotency-Key, unique per user): it is how a
 * timed-out call finds out what happened, and how a retry is recognised.
 */
export async function applyForCoupon(
  redis: CouponRedis, eventId: string, userId: string, requestId: string, options: GateOptions = {},
): Promise<ApplyOutcome> {
  const { timeoutMs = 500, replicas, checkedNodes = '', batch } = options;
  const { outcome, ranOn, batchAck } = await runGate(redis, eventId, userId, requestId, timeoutMs, checkedNodes, replicas?.wanted ?? 0, batch);
  // GATE_MIN_REPLICAS: an issued coupon is answered only once replicas of the primary that wrote it hold it
  // (NotReplicatedError otherwise). A repeat wrote its entry again, so the acknowledgement covers the original too.
  // The requests of one batched call were all written before its reply came: the first to ask starts the one
  // acknowledgement they all share.
  if ((outcome.kind === 'issued' || outcome.kind === 'repeated') && replicas) {
    const key = eventKeys(eventId).meta;
    await (batchAck ? (batchAck.acked ??= replicas.confirm(key, ranOn)) : replicas.confirm(key, ranOn));
  }
  return outcome;
}

async function runGate(
  redis: CouponRedis, eventId: string, userId: string, requestId: string, timeoutMs: number, checkedNodes: string, minReplicas: number,
  batch?: GateBatcher,
): Promise<{ outcome: ApplyOutcome; ranOn?: string; batchAck?: BatchAck }> {
  const keys = eventKeys(eventId);
  const attemptId = attemptIdFor(requestId);
  let reply: GateReply;
  try {
    // Batched or not, the same reply (gate-batch.lua decides each request as gate.lua would) and the same deadline.
    reply = await withTimeout(batch
      ? batch.decide(keys, eventId, userId, requestId, checkedNodes, String(minReplicas), String(REPLICA_MAX_LAG_S), attemptId)
      : redis.gate(
        keys.meta, keys.issued, keys.users, keys.outbox, eventId, userId, requestId, checkedNodes, String(minReplicas), String(REPLICA_MAX_LAG_S),
        attemptId,
      ), timeoutMs);
  } catch (error) {
    // Timed out, or failed without a reply (a closed connection, too many redirections): the script may have run,
    // or may run yet (ioredis re-sends on its own timers). One deadline for both steps: the gate's wait, then half
    // of it again to settle, so a hung Redis is answered 503 in 1.5x REDIS_COMMAND_TIMEOUT_MS (750 ms by default),
    // well within a second. The settle does not tell which node wrote the entry: the WAIT goes to the one the slot
    // map names.
    return { outcome: await settleGivenUp(redis, eventId, userId, requestId, attemptId, timeoutMs / 2, error) };
  }
  const [code, sequence, issuedAtMs, node, batchAck] = reply;
  const ranOn = node || undefined;
  if (code === 0) return { outcome: { kind: 'issued', sequence, issuedAtMs }, ranOn, batchAck };
  if (code === 6) return { outcome: { kind: 'repeated', sequence, issuedAtMs }, ranOn, batchAck };
  if (code === 1) return { outcome: { kind: 'already_applied', sequence } };
  if (code === 7) return { outcome: { kind: 'paused' } };
  if (code === 8) return { outcome: { kind: 'unchecked_server' } };
  // Too few replicas could acknowledge a write: refused before issuing, so the 503 leaves nothing behind.
  if (code === 9) throw new NotReplicatedError(minReplicas, sequence, 'before');
  // The settle of this very attempt ran first (its reply came too late to be waited for): nothing was written.
  if (code === 10) throw new GateTimeoutError();
  return { outcome: OUTCOMES[code - 2] ?? { kind: 'state_missing' } };
}

/**
 * The gate's reply did not arrive in time (or its call failed without one), but the script may have run, or may
 * run later: the client sends a script again after TRYAGAIN, CLUSTERDOWN or a closed connection on timers of its
 * own, and a read could come before that (not on the same connection, nor in order). So the outcome is decided in
 * Redis, where the gate decides: first the attempt is recorded as given up (abandon-attempt.lua; gate.lua refuses
 * such an attempt in the same atomic step in which it would issue), then the user's entry is read. Recorded with
 * our request id, the coupon is ours; with another, an earlier request got it; not recorded, this attempt never
 * issues and the fault stands (503). Only if the settle gets no answer either is the outcome unknown: 503 all the
 * same, and the user's next request tells the truth (409 with the sequence if the script ran after all).
 */
async function settleGivenUp(
  redis: CouponRedis, eventId: string, userId: string, requestId: string, attemptId: string, timeoutMs: number, fault: unknown,
): Promise<ApplyOutcome> {
  let entry: string | null;
  try {
    entry = await withTimeout(giveUpThenRead(redis, eventId, userId, attemptId), timeoutMs);
  } catch {
    // No answer from the settle either: the outcome is unknown, and the gate's own fault is the one to report.
    throw fault;
  }
  if (entry === null) throw fault;
  const recorded = parseUserEntry(entry);
  return recorded.requestId === requestId
    ? { kind: 'issued', sequence: recorded.sequence, issuedAtMs: recorded.issuedAtMs }
    : { kind: 'already_applied', sequence: recorded.sequence };
}

/** In this order: once the record is in, nothing more is issued for the attempt, so the read is final. */
async function giveUpThenRead(redis: CouponRedis, eventId: string, userId: string, attemptId: string): Promise<string | null> {
  const keys = eventKeys(eventId);
  // One key each: both run even while the event's slot is half moved, when a script of several keys gets TRYAGAIN.
  await redis.abandonAttempt(keys.meta, userId, attemptId);
  // Not auto-pipelined (nor is the script, see client.ts): an auto-pipeline waits for the one before it on the same
  // node, and that may be the gate's own, re-sent on TRYAGAIN until the slot is whole again.
  return redis.sendCommand(new Command('hget', [keys.users, userId], { replyEncoding: 'utf8' })) as Promise<string | null>;
}

/**
 * The id of one gate call (gate.lua ARGV[7]), which the settle records as given up. A generated request id (`~`,
 * see apply.ts) is new on every call already; a client's Idempotency-Key is the same on every retry, and a retry
 * must still issue after an earlier call with that key was given up, so each such call gets an id of its own.
 * Unique among one user's calls is enough: the record is per user. No spaces (the record's separator).
 */
function attemptIdFor(requestId: string): string {
  return requestId.startsWith('~') && !requestId.includes(' ') ? requestId : `${ATTEMPT_PREFIX}${(++attempts).toString(36)}`;
}
const ATTEMPT_PREFIX = `~${process.pid.toString(36)}.${Date.now().toString(36)}:`;
let attempts = 0;

/**
 * The coupon `userId` holds, read with the gate's deadline: what the local sold-out flag asks before it answers
 * 410, so that a holder whose first answer was lost (or a 503 after the gate ran) hears 409 with their sequence.
 * 'state_missing' when the event has no gate state (a flush, a lost tail): the flag predates the loss, and the
 * stock of coupons lost with it is back. The reads of one event in one turn share one HMGET and one HEXISTS
 * (holder-reads.ts).
 */
export async function heldCoupon(reads: HolderReads, eventId: string, userId: string, timeoutMs = 500): Promise<number | undefined | 'state_missing'> {
  const { entry, state } = await withTimeout(reads.read(eventId, userId), timeoutMs);
  if (!state) return 'state_missing';
  return entry === null ? undefined : parseUserEntry(entry).sequence;
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
