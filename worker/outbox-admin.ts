import type { CouponRedis } from '../src/redis/client.ts';
import { PERSIST_GROUP } from '../src/redis/keys.ts';
import { type GroupState, outboxGroupState, toRecord } from '../src/redis/outbox-state.ts';
import { OutboxStreams } from './outbox.ts';

/**
 * The housekeeping side of the outbox streams (the consumer's side is Outbox): the state of each stream's
 * group, trimming acked entries, and removing the consumers of gone processes.
 */
export class OutboxAdmin {
  readonly #redis: CouponRedis;
  readonly #registry: OutboxStreams;
  /** this process's own consumer name: never removed from under it */
  readonly #consumer: string;

  constructor(redis: CouponRedis, consumer: string) {
    this.#redis = redis;
    this.#consumer = consumer;
    this.#registry = new OutboxStreams(redis);
  }

  /** The outbox streams of every registered event. */
  streams(): Promise<string[]> {
    return this.#registry.streams();
  }

  /** Read the registry again on the next call: events were archived and their streams are gone. */
  forgetStreams(): void {
    this.#registry.forget();
  }

  /** Pending, undelivered and trimmable state of one stream's group; null when the stream or group is gone. */
  groupState(stream: string): Promise<GroupState | null> {
    return outboxGroupState(this.#redis, stream);
  }

  /**
   * Removes acked entries from the head of a stream so it stays bounded: everything older than both the
   * oldest pending entry and the last entry handed to the group. Nothing undelivered or unacked is touched.
   */
  async trim(stream: string): Promise<number> {
    const state = await this.groupState(stream);
    if (!state) return 0;
    const threshold = state.oldestPending !== null && compareIds(state.oldestPending, state.lastDelivered) < 0
      ? state.oldestPending
      : state.lastDelivered;
    if (threshold === '0-0') return 0;
    return this.#redis.xtrim(stream, 'MINID', threshold);
  }

  /** Removes consumers of other, gone processes once they hold nothing pending. */
  async removeIdleConsumers(stream: string, idleMs: number): Promise<void> {
    let consumers: unknown[][];
    try {
      consumers = (await this.#redis.xinfo('CONSUMERS', stream, PERSIST_GROUP)) as unknown[][];
    } catch {
      return;
    }
    for (const consumer of consumers.map(toRecord)) {
      if (consumer.name !== this.#consumer && Number(consumer.pending) === 0 && Number(consumer.idle) > idleMs) {
        await this.#redis.removeConsumerIfIdle(stream, PERSIST_GROUP, String(consumer.name));
      }
    }
  }
}

function compareIds(a: string, b: string): number {
  const [aMs, aSeq] = a.split('-').map(BigInt);
  const [bMs, bSeq] = b.split('-').map(BigInt);
  if (aMs !== bMs) return aMs! < bMs! ? -1 : 1;
  if (aSeq !== bSeq) return aSeq! < bSeq! ? -1 : 1;
  return 0;
}
