/**
 * The apply use case: decides one request for a coupon, without knowing HTTP. Who is applying (the token's
 * subject or the body's userId), the local sold-out flag (and whether the user holds a coupon all the same), the
 * gate (one Redis round trip), and, when Redis has no state for the event, whether the event exists at all.
 * Expected outcomes are returned; only faults (Redis unreachable or too slow, replicas not acknowledging) are
 * thrown. The route maps the outcome to HTTP.
 */
import type { ApplyOutcome } from './domain/coupon.ts';
import { type CouponRedis } from './redis/client.ts';
import { applyForCoupon, heldCoupon } from './redis/gate.ts';
import { GateBatcher } from './redis/gate-batcher.ts';
import { HolderReads } from './redis/holder-reads.ts';
import { missingStateCause } from './redis/event-state.ts';
import { eventKeys } from './redis/keys.ts';
import type { ReplicaAcks } from './redis/replica-acks.ts';

export type ApplyDecision =
  | Exclude<ApplyOutcome, { kind: 'state_missing' } | { kind: 'unchecked_server' } | { kind: 'issued' } | { kind: 'repeated' } | { kind: 'already_applied' }>
  | { kind: 'issued'; sequence: number }
  | { kind: 'already_applied'; sequence: number; userId: string }
  | { kind: 'event_not_found' }
  /** the event exists but its gate state is being restored, or the Redis server is not yet compared with MySQL */
  | { kind: 'restoring' }
  | { kind: 'unauthorized'; message: string }
  | { kind: 'user_mismatch' }
  | { kind: 'user_required' };

export interface ApplyRequest {
  eventId: string;
  /** the userId of the body, if any */
  userId: string | undefined;
  /** the Authorization header, if any */
  authorization: string | undefined;
  /** the client's Idempotency-Key, if any: a retry of the request that got the coupon gets the same answer */
  idempotencyKey?: string | undefined;
  /**
   * whether the route already looked at the local sold-out flag (soldOutHere) and what it found: looked at once
   * per request, since a look at an expired flag makes this request the one that asks the gate again
   */
  soldOutHere?: boolean;
}

export interface ApplyDeps {
  redis: CouponRedis;
  soldOut: {
    isSoldOut(eventId: string, nowMs: number): boolean; stamp(): number;
    markSoldOut(eventId: string, nowMs: number, stamp: number): void; stockSeen(eventId: string): void; forget(eventId: string): void;
  };
  /**
   * whether the Redis server holding a key (an event's shard) was compared with MySQL: nothing is issued on one that
   * was not; on a Cluster also the ids of those primaries, for the gate script to check where it runs
   */
  server: { checkedFor(key: string): boolean; readonly checkedNodes: string };
  /**
   * does the event exist in MySQL (asked only while Redis may have lost state), and the user's coupon of an
   * archived event (asked only for those: its gate state is gone)
   */
  events: {
    exists(eventId: string): Promise<boolean>;
    holder(eventId: string, userId: string): Promise<{ sequence: number; requestId: string | null } | null>;
    /** restores, in the background, an existing event whose gate state a checked server lacks */
    restoreLost(eventId: string): void;
  };
  identity?: { resolve(authorization: string | undefined): Promise<{ kind: 'user'; userId: string } | { kind: 'rejected'; message: string }> };
  metrics: { countGate(outcome: ApplyOutcome['kind'] | 'local_sold_out'): void };
  /** GATE_MIN_REPLICAS > 0: a 202 waits until replicas hold the coupon */
  replicas?: ReplicaAcks;
  /** how long the gate waits for Redis before the request is answered 503 */
  gateTimeoutMs?: number;
  /** how long a "does this event exist" answer is trusted when Redis has no state for it */
  existenceCacheMs?: number;
  /** GATE_BATCH=on: one gate script call for the applies of one event in one event-loop turn */
  gateBatch?: boolean;
}

export class ApplyForCoupon {
  readonly #deps: ApplyDeps;
  readonly #gateTimeoutMs: number;
  readonly #existence: ExistenceCache;
  readonly #batch: GateBatcher | undefined;
  /** the holder reads behind sold-out answers, one HMGET per event per turn */
  readonly #holders: HolderReads;
  readonly #requestIdPrefix = `~${process.pid.toString(36)}.${Date.now().toString(36)}.`;
  #requestCount = 0;

  constructor(deps: ApplyDeps) {
    this.#deps = deps;
    this.#gateTimeoutMs = deps.gateTimeoutMs ?? 500;
    this.#existence = new ExistenceCache(deps.events, deps.existenceCacheMs ?? 5_000);
    this.#batch = deps.gateBatch ? new GateBatcher(deps.redis) : undefined;
    this.#holders = new HolderReads(deps.redis);
  }

  /**
   * Sends the gate calls and holder reads that have waited in their batches for longer than MAX_AGE_MS: a turn of
   * the event loop can run for seconds under a burst, and the batches would otherwise wait for its end.
   */
  sendAgedBatches(now = performance.now()): void {
    this.#batch?.sendIfOlder(now);
    this.#holders.sendIfOlder(now);
  }

  /**
   * The fast lane: true when this process already knows the event is sold out, so the request needs no slot and
   * no gate (apply() with `soldOutHere` then only checks whether the user holds a coupon). Undefined with JWT
   * identity: the token is checked first, so an unauthenticated caller learns nothing.
   */
  soldOutHere(eventId: string, idempotencyKey: string | undefined): boolean | undefined {
    if (this.#deps.identity) return undefined;
    // A retry with a key may be the request that got a coupon before the sell-out: only the gate knows.
    return idempotencyKey === undefined && this.#deps.soldOut.isSoldOut(eventId, Date.now());
  }

  async apply(request: ApplyRequest): Promise<ApplyDecision> {
    const { redis, soldOut, server, identity, metrics, replicas } = this.#deps;
    let userId = request.userId;
    if (identity) {
      const who = await identity.resolve(request.authorization);
      if (who.kind === 'rejected') return { kind: 'unauthorized', message: who.message };
      if (userId !== undefined && userId !== who.userId) return { kind: 'user_mismatch' };
      userId = who.userId;
    }
    if (userId === undefined) return { kind: 'user_required' };

    const now = Date.now();
    // Without identity the route looked at the flag already; with it, the flag counts after the token.
    const soldOutHere = request.soldOutHere ?? (request.idempotencyKey === undefined && soldOut.isSoldOut(request.eventId, now));
    if (soldOutHere) {
      const answer = await this.#soldOutUnlessHolder(request.eventId, userId);
      if (answer) return answer;
      // The event's gate state is gone (a flush, a lost tail): the flag is dropped and the gate tells (503 while
      // it is restored, 404 for no such event); its next answer sets the flag again if the stock is gone.
    }
    // A server not yet compared with MySQL (just restarted, or a replica just promoted) may be older than it.
    if (!server.checkedFor(eventKeys(request.eventId).meta)) return { kind: 'restoring' };
    // Generated ids start with `~`, which a client's key cannot contain: the two never meet.
    const requestId = request.idempotencyKey ?? this.#requestIdPrefix + (++this.#requestCount).toString(36);
    const stamp = soldOut.stamp();
    const outcome = await applyForCoupon(redis, request.eventId, userId, requestId, {
      timeoutMs: this.#gateTimeoutMs, replicas, checkedNodes: server.checkedNodes, batch: this.#batch,
    });
    metrics.countGate(outcome.kind);
    switch (outcome.kind) {
      case 'issued':
        // A flag being re-checked (see SoldOutFlags) was stale: the event has stock again.
        soldOut.stockSeen(request.eventId);
        return { kind: 'issued', sequence: outcome.sequence };
      case 'repeated':
        return { kind: 'issued', sequence: outcome.sequence };
      case 'already_applied':
        return { ...outcome, userId };
      case 'sold_out':
        soldOut.markSoldOut(request.eventId, now, stamp);
        return outcome;
      case 'state_missing':
        return this.#missingState(request.eventId, userId, requestId);
      case 'unchecked_server':
        // The client followed a redirect to a primary not compared with MySQL yet: the script did nothing there.
        return { kind: 'restoring' };
      default:
        return outcome;
    }
  }

  /**
   * The flag says no stock is left, but a user who holds a coupon must hear so (409 with the sequence), never 410:
   * their first answer may have been lost, or been a 503 after the gate ran (a replica acknowledging too late). One
   * read of the user's entry, no script: a sold-out answer stays far cheaper than the gate, and the flag still
   * keeps the gate's script and its writes away from a sold-out burst. Undefined when the event's gate state is
   * missing: the flag was set before Redis lost it (with the coupons it held: their stock is back), so it goes.
   */
  async #soldOutUnlessHolder(eventId: string, userId: string): Promise<ApplyDecision | undefined> {
    const sequence = await heldCoupon(this.#holders, eventId, userId, this.#gateTimeoutMs);
    if (sequence === 'state_missing') {
      this.#deps.soldOut.forget(eventId);
      return undefined;
    }
    if (sequence === undefined) {
      this.#deps.metrics.countGate('local_sold_out');
      return { kind: 'sold_out' };
    }
    this.#deps.metrics.countGate('already_applied');
    return { kind: 'already_applied', sequence, userId };
  }

  /**
   * Redis has no gate state for the event: either no such event, or Redis lost it and it is being restored from
   * MySQL; nothing is issued until then, so a lost state can never cause over-issue. Redis tells a made-up id apart
   * without MySQL (missingStateCause); otherwise MySQL is asked, once per event id for a few seconds. An event
   * MySQL holds whose state was lost alone is restored by nothing else soon, so this process restores it, and
   * answers 503 meanwhile. An archived event left a tombstone: it
   * exists and has ended, and its holders are in MySQL only: a holder still hears its coupon (the first 202 again
   * for the key it was issued to, 409 with the sequence otherwise), as before the archive.
   */
  async #missingState(eventId: string, userId: string, requestId: string): Promise<ApplyDecision> {
    const { redis, events, server } = this.#deps;
    const keys = eventKeys(eventId);
    const [archived, cause] = await Promise.all([redis.exists(keys.archived), missingStateCause(redis, eventId)]);
    if (archived === 1) {
      const holder = await events.holder(eventId, userId);
      if (holder === null) return { kind: 'ended' };
      if (holder.requestId === requestId) return { kind: 'issued', sequence: holder.sequence };
      return { kind: 'already_applied', sequence: holder.sequence, userId };
    }
    // A failover or a restart since the gate was asked: the marker there may be a copy naming the server before it
    // (GateStateKeeper), and the new server is checked and restored before anything is issued or refused there.
    if (!server.checkedFor(keys.meta)) return { kind: 'restoring' };
    if (cause === 'unknown' || !(await this.#existence.exists(eventId))) return { kind: 'event_not_found' };
    // A whole server being checked restores it too (GateStateKeeper.checkPrimaries); a state lost alone, only this.
    if (cause === 'lost-alone') events.restoreLost(eventId);
    return { kind: 'restoring' };
  }
}

/** Remembers for a few seconds whether an event exists, so unknown ids cannot turn into a MySQL flood. */
class ExistenceCache {
  readonly #events: ApplyDeps['events'];
  readonly #ttlMs: number;
  readonly #answers = new Map<string, { exists: boolean; until: number }>();

  constructor(events: ApplyDeps['events'], ttlMs: number) {
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
