import type { Redis } from 'ioredis';

/** The gate's write was not acknowledged by enough replicas in time: answered 503, its state is the primary's. */
export class NotReplicatedError extends Error {
  override name = 'NotReplicatedError';
  constructor(wanted: number, got: number) {
    super(`${got} of ${wanted} replicas acknowledged the write in time`);
  }
}

/**
 * GATE_MIN_REPLICAS: a 202 is answered only once that many replicas hold the gate's write, so a failover to one of
 * them cannot lose it. Redis WAIT covers every write the connection made before it, and blocks the connection
 * while it waits; so one WAIT at a time serves every request issued before it was sent (group commit), and the
 * requests issued meanwhile share the next one. Under a burst that is one WAIT per replication round trip, not
 * one per coupon.
 */
export class ReplicaAcks {
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

  /** Resolves once enough replicas hold every write this connection made before the call; throws otherwise. */
  async confirm(): Promise<void> {
    const acked = await this.#nextWait();
    if (acked < this.#replicas) throw new NotReplicatedError(this.#replicas, acked);
  }

  #nextWait(): Promise<number> {
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
    return this.#nextWait();
  };
}
