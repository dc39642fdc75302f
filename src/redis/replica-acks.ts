import type { Redis } from 'ioredis';
import type { CouponRedis } from './client.ts';
import { primaryNamed, primaryOf } from './topology.ts';

/**
 * Answered 503: either the gate's write was not acknowledged by enough replicas in time (`after`: its state is the
 * primary's), or the gate found too few good replicas and wrote nothing (`before`).
 */
export class NotReplicatedError extends Error {
  override name = 'NotReplicatedError';
  constructor(wanted: number, got: number, when: 'before' | 'after' = 'after') {
    super(when === 'after'
      ? `${got} of ${wanted} replicas acknowledged the write in time`
      : `${got} of ${wanted} replicas are online and current: refused before writing`);
  }
}

/**
 * GATE_MIN_REPLICAS: a 202 is answered only once that many replicas hold the gate's write, so a failover to one of
 * them cannot lose it. Redis WAIT covers every write the connection made before it, and blocks the connection
 * while it waits; so one WAIT at a time serves every request issued before it was sent (group commit), and the
 * requests issued meanwhile share the next one. Under a burst that is one WAIT per replication round trip, not
 * one per coupon. On a Cluster the WAIT goes to the primary that ran the gate (each shard's replicas count for
 * its own events), one group per primary.
 */
export class ReplicaAcks {
  readonly #redis: CouponRedis;
  readonly #replicas: number;
  /** GATE_MIN_REPLICAS: the gate writes only on a primary with this many good replicas (gate.lua ARGV[5]) */
  get wanted(): number {
    return this.#replicas;
  }

  readonly #timeoutMs: number;
  readonly #groups = new WeakMap<Redis, WaitGroup>();
  /** the host:port of a Cluster node id, among the primaries compared with MySQL (CheckedServer.nameOf) */
  readonly #nameOf: (nodeId: string) => string | undefined;

  constructor(redis: CouponRedis, replicas: number, timeoutMs: number, nameOf: (nodeId: string) => string | undefined = () => undefined) {
    this.#redis = redis;
    this.#replicas = replicas;
    this.#timeoutMs = timeoutMs;
    this.#nameOf = nameOf;
  }

  /**
   * Resolves once enough replicas hold every write made before the call on the connection to the primary that
   * wrote it: the node `ranOn` (a Cluster node id, as the gate script returns it), or else the primary that holds
   * `key` in the slot map. The two differ when the client followed ASK during a slot move. The script runs only on
   * checked primaries, so `ranOn` is one of them; one unchecked since counts as no acknowledgement. Throws otherwise.
   */
  async confirm(key: string, ranOn?: string): Promise<void> {
    const primary = ranOn === undefined ? primaryOf(this.#redis, key) : this.#primaryWithId(ranOn);
    if (!primary) throw new NotReplicatedError(this.#replicas, 0);
    let group = this.#groups.get(primary);
    if (!group) this.#groups.set(primary, (group = new WaitGroup(primary, this.#replicas, this.#timeoutMs)));
    const acked = await group.nextWait();
    if (acked < this.#replicas) throw new NotReplicatedError(this.#replicas, acked);
  }

  #primaryWithId(nodeId: string): Redis | undefined {
    const name = this.#nameOf(nodeId);
    return name === undefined ? undefined : primaryNamed(this.#redis, name);
  }
}

/** The WAITs of one connection: one in flight, and the one after it that later callers share. */
class WaitGroup {
  readonly #redis: Redis;
  readonly #replicas: number;
  readonly #timeoutMs: number;
  #inFlight: Promise<number> | undefined;
  #next: Promise<number> | undefined;

  constructor(redis: Redis, replicas: number, timeoutMs: number) {
    this.#redis = redis;
    this.#replicas = replicas;
    this.#timeoutMs = timeoutMs;
  }

  nextWait(): Promise<number> {
    if (!this.#inFlight) {
      const wait = this.#redis.wait(this.#replicas, this.#timeoutMs);
      this.#inFlight = wait.finally(() => { this.#inFlight = undefined; });
      return this.#inFlight;
    }
    // The WAIT on its way may have been sent before this caller's write: join the one after it.
    this.#next ??= this.#inFlight.then(this.#startNext, this.#startNext);
    return this.#next;
  }

  readonly #startNext = (): Promise<number> => {
    this.#next = undefined;
    return this.nextWait();
  };
}
