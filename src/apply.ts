/**
 * The apply use case: decides one request for a coupon, without knowing HTTP. Who is applying (the token's
 * subject or the body's userId), the local sold-out flag, the gate (one Redis round trip), and, when Redis has no
 * state for the event, whether the event exists at all. Expected outcomes are returned; only faults (Redis
 * unreachable or too slow, replicas not acknowledging) are thrown. The route maps the outcome to HTTP.
 */
import type { ApplyOutcome } from './domain/coupon.ts';
import { type CouponRedis } from './redis/client.ts';
import { applyForCoupon } from './redis/gate.ts';
import { eventKeys } from './redis/keys.ts';
import { markerKeyFor } from './redis/topology.ts';
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
}

export interface ApplyDeps {
  redis: CouponRedis;
  soldOut: { isSoldOut(eventId: string, nowMs: number): boolean; markSoldOut(eventId: string, nowMs: number): void };
  /**
   * whether the Redis server holding a key (an event's shard) was compared with MySQL: nothing is issued on one that
   * was not; on a Cluster also the ids of those primaries, for the gate script to check where it runs
   */
  server: { checkedFor(key: string): boolean; readonly checkedNodes: string };
  /** does the event exist in MySQL (asked only while Redis may have lost state) */
  events: { exists(eventId: string): Promise<boolean> };
  identity?: { resolve(authorization: string | undefined): Promise<{ kind: 'user'; userId: string } | { kind: 'rejected'; message: string }> };
  metrics: { countGate(outcome: ApplyOutcome['kind'] | 'local_sold_out'): void };
  /** GATE_MIN_REPLICAS > 0: a 202 waits until replicas hold the coupon */
  replicas?: ReplicaAcks;
  /** how long the gate waits for Redis before the request is answered 503 */
  gateTimeoutMs?: number;
  /** how long a "does this event exist" answer is trusted when Redis has no state for it */
  existenceCacheMs?: number;
}

export class ApplyForCoupon {
  readonly #deps: ApplyDeps;
  readonly #gateTimeoutMs: number;
  readonly #existence: ExistenceCache;
  readonly #requestIdPrefix = `~${process.pid.toString(36)}.${Date.now().toString(36)}.`;
  #requestCount = 0;

  constructor(deps: ApplyDeps) {
    this.#deps = deps;
    this.#gateTimeoutMs = deps.gateTimeoutMs ?? 500;
    this.#existence = new ExistenceCache(deps.events, deps.existenceCacheMs ?? 5_000);
  }

  /**
   * The fast lane: true when this process already knows the event is sold out, so the request can be answered
   * before its body is read. Only without JWT identity: with it, the token is checked first, so an
   * unauthenticated caller learns nothing.
   */
  answeredLocally(eventId: string, idempotencyKey: string | undefined): boolean {
    // A retry with a key may be the request that got a coupon before the sell-out: only the gate knows.
    if (this.#deps.identity || idempotencyKey !== undefined || !this.#deps.soldOut.isSoldOut(eventId, Date.now())) return false;
    this.#deps.metrics.countGate('local_sold_out');
    return true;
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
    // Without identity answeredLocally() has answered already; with it, the flag counts after the token.
    if (request.idempotencyKey === undefined && soldOut.isSoldOut(request.eventId, now)) {
      metrics.countGate('local_sold_out');
      return { kind: 'sold_out' };
    }
    // A server not yet compared with MySQL (just restarted, or a replica just promoted) may be older than it.
    if (!server.checkedFor(eventKeys(request.eventId).meta)) return { kind: 'restoring' };
    // Generated ids start with `~`, which a client's key cannot contain: the two never meet.
    const requestId = request.idempotencyKey ?? this.#requestIdPrefix + (++this.#requestCount).toString(36);
    const outcome = await applyForCoupon(redis, request.eventId, userId, requestId, {
      timeoutMs: this.#gateTimeoutMs, replicas, checkedNodes: server.checkedNodes,
    });
    metrics.countGate(outcome.kind);
    switch (outcome.kind) {
      case 'issued':
      case 'repeated':
        return { kind: 'issued', sequence: outcome.sequence };
      case 'already_applied':
        return { ...outcome, userId };
      case 'sold_out':
        soldOut.markSoldOut(request.eventId, now);
        return outcome;
      case 'state_missing':
        return this.#missingState(request.eventId);
      case 'unchecked_server':
        // The client followed a redirect to a primary not compared with MySQL yet: the script did nothing there.
        return { kind: 'restoring' };
      default:
        return outcome;
    }
  }

  /**
   * Redis has no gate state for the event: either no such event, or Redis lost its data and it is being
   * restored from MySQL; nothing is issued until then, so a flush can never cause over-issue. The marker tells the
   * two apart without MySQL: present, Redis has lost nothing since it was compared with MySQL, so the event does
   * not exist. Only while it is absent is MySQL asked, once per event id for a few seconds. An archived event left
   * a tombstone: it exists and has ended.
   */
  async #missingState(eventId: string): Promise<ApplyDecision> {
    const { redis } = this.#deps;
    // An archived event left a tombstone: it exists, and it has ended.
    const keys = eventKeys(eventId);
    const markerKey = markerKeyFor(redis, keys.meta);
    const [marker, archived] = await Promise.all([markerKey === undefined ? 0 : redis.exists(markerKey), redis.exists(keys.archived)]);
    if (archived === 1) return { kind: 'ended' };
    if (marker === 1 || !(await this.#existence.exists(eventId))) return { kind: 'event_not_found' };
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
