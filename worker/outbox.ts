import type { IssuedCoupon } from '../src/domain/coupon.ts';
import type { CouponRedis } from '../src/redis/client.ts';
import { parseOutboxFields } from '../src/redis/formats.ts';
import { EVENT_REGISTRY_KEY, PERSIST_GROUP, eventKeys } from '../src/redis/keys.ts';
import { isCluster } from '../src/redis/topology.ts';

/** One outbox entry as read from a stream: where it lives, how often it was delivered, and the coupon. */
export interface OutboxEntry {
  stream: string;
  id: string;
  deliveries: number;
  coupon: IssuedCoupon;
}

type RawEntry = [id: string, fields: string[] | null];

/**
 * The worker's side of the outbox streams: one consumer group (`persist`) per event stream, this process
 * one consumer in each. Entries stay pending until acked, so a crash hands them to another consumer.
 */
export class Outbox {
  readonly #redis: CouponRedis;
  readonly consumer: string;
  readonly #registry: OutboxStreams;
  /** XAUTOCLAIM's cursor per stream, carried between calls so every pending entry is visited in turn */
  readonly #claimCursors = new Map<string, string>();

  constructor(redis: CouponRedis, consumer: string) {
    this.#redis = redis;
    this.consumer = consumer;
    this.#registry = new OutboxStreams(redis);
  }

  /** The outbox streams of every registered event, re-read at most once a second. */
  streams(): Promise<string[]> {
    return this.#registry.streams();
  }

  /**
   * Entries never delivered to the group: up to `count` from each stream, but never more in all than `maxHeld`:
   * everything read is pending on this consumer until it is written, so it must be writable (under the rate cap)
   * before CLAIM_IDLE_MS passes. Waits up to `blockMs` while there are none.
   */
  async readNew(count: number, blockMs: number, maxHeld = count): Promise<OutboxEntry[]> {
    const streams = await this.streams();
    if (streams.length === 0) {
      await sleep(Math.min(blockMs, 200));
      return [];
    }
    const perStream = Math.max(1, Math.min(count, Math.floor(maxHeld / streams.length)));
    try {
      return isCluster(this.#redis) ? await this.#readEachStream(streams, perStream, blockMs) : await this.#readAllStreams(streams, perStream, blockMs);
    } catch (error) {
      // A stream without its group (an event registered and not installed yet, or Redis flushed and the event not
      // yet rebuilt): leave such streams out until the registry is read again.
      if (error instanceof Error && /^(NOGROUP|UNBLOCKED)/.test(error.message)) {
        await this.#registry.dropMissing();
        return [];
      }
      throw error;
    }
  }

  /** One server: one XREADGROUP over every stream, blocking until any of them has an entry. */
  async #readAllStreams(streams: string[], perStream: number, blockMs: number): Promise<OutboxEntry[]> {
    const reply = (await this.#redis.xreadgroup(
      // COUNT applies to each stream.
      'GROUP', PERSIST_GROUP, this.consumer, 'COUNT', perStream, 'BLOCK', blockMs, 'STREAMS', ...streams, ...streams.map(() => '>'),
    )) as Array<[string, RawEntry[]]> | null;
    return (reply ?? []).flatMap(([stream, rawEntries]) => entriesOf(stream, rawEntries));
  }

  /**
   * A Cluster: a command may name the keys of one slot only, and a blocking read would hold its node's connection.
   * So each stream is read without blocking, all of them sent at once (auto-pipelined: one write per node, and
   * MOVED/ASK followed per stream), and the whole read waits CLUSTER_POLL_MS when none had an entry.
   */
  async #readEachStream(streams: string[], perStream: number, blockMs: number): Promise<OutboxEntry[]> {
    const replies = await Promise.all(streams.map(async (stream) => {
      try {
        return (await this.#redis.xreadgroup('GROUP', PERSIST_GROUP, this.consumer, 'COUNT', perStream, 'STREAMS', stream, '>')) as Array<[string, RawEntry[]]> | null;
      } catch (error) {
        if (error instanceof Error && error.message.startsWith('NOGROUP')) {
          this.#registry.drop(stream);
          return null;
        }
        throw error;
      }
    }));
    const entries = replies.flatMap((reply) => (reply ?? []).flatMap(([stream, rawEntries]) => entriesOf(stream, rawEntries)));
    if (entries.length === 0) await sleep(Math.min(blockMs, CLUSTER_POLL_MS));
    return entries;
  }

  /**
   * Takes over entries other consumers (or this one) hold pending for longer than `idleMs`: the way a
   * crashed worker's batch gets persisted. Each entry comes with its delivery count.
   */
  async claimStale(idleMs: number, count: number): Promise<OutboxEntry[]> {
    const entries: OutboxEntry[] = [];
    const streams = await this.streams();
    // Cursors of streams no longer registered (archived events) are dropped, so none is kept for ever.
    const live = new Set(streams);
    for (const stream of this.#claimCursors.keys()) if (!live.has(stream)) this.#claimCursors.delete(stream);
    for (const stream of streams) {
      if (entries.length >= count) break;
      const cursor = this.#claimCursors.get(stream) ?? '0-0';
      let reply: [string, RawEntry[], string[]];
      try {
        reply = (await this.#redis.xautoclaim(stream, PERSIST_GROUP, this.consumer, idleMs, cursor, 'COUNT', count - entries.length)) as [string, RawEntry[], string[]];
      } catch (error) {
        if (error instanceof Error && error.message.startsWith('NOGROUP')) continue;
        throw error;
      }
      const [next, claimed, deleted] = reply;
      this.#claimCursors.set(stream, next);
      if (deleted?.length) await this.#redis.xack(stream, PERSIST_GROUP, ...deleted);
      entries.push(...(await this.#withDeliveries(stream, claimed)));
    }
    return entries;
  }

  /**
   * Takes back at once entries this consumer failed to write (MySQL refused or was away, a gate-state restore
   * raced the insert), counting one more delivery each, as a claim would after CLAIM_IDLE_MS: a failed batch is
   * tried again after the loop's backoff, and one that keeps failing still reaches the retry queue.
   */
  async reclaim(failed: readonly OutboxEntry[]): Promise<OutboxEntry[]> {
    const entries: OutboxEntry[] = [];
    for (const [stream, ofStream] of Map.groupBy(failed, (entry) => entry.stream)) {
      let claimed: RawEntry[];
      try {
        claimed = (await this.#redis.call('XCLAIM', stream, PERSIST_GROUP, this.consumer, '0', ...ofStream.map((entry) => entry.id))) as RawEntry[];
      } catch (error) {
        if (error instanceof Error && error.message.startsWith('NOGROUP')) continue;
        throw error;
      }
      entries.push(...(await this.#withDeliveries(stream, claimed)));
    }
    return entries;
  }

  /**
   * Calls `listener` each time the connection is ready (again): a read in flight when it was lost is sent again by
   * the client, but its first reply, with the entries Redis delivered, is gone.
   */
  onReady(listener: () => void): void {
    this.#redis.on('ready', listener);
  }

  /**
   * Entries pending on this consumer, whatever it holds in hand: after a read whose reply was lost (a connection
   * closed or timed out as the primary failed over or restarted) Redis has delivered them to it, and only this
   * consumer knows to look before CLAIM_IDLE_MS lets another claim them. Claimed back with one more delivery each.
   */
  async ownPending(count: number): Promise<OutboxEntry[]> {
    const entries: OutboxEntry[] = [];
    for (const stream of await this.streams()) {
      const pending = (await this.#redis.xpending(stream, PERSIST_GROUP, '-', '+', count - entries.length, this.consumer)
        .catch((error: unknown) => {
          if (error instanceof Error && error.message.startsWith('NOGROUP')) return [];
          throw error;
        })) as Array<[string, string, number, number]>;
      if (pending.length === 0) continue;
      const claimed = (await this.#redis.call('XCLAIM', stream, PERSIST_GROUP, this.consumer, '0', ...pending.map(([id]) => id))) as RawEntry[];
      entries.push(...(await this.#withDeliveries(stream, claimed)));
      if (entries.length >= count) break;
    }
    return entries;
  }

  async #withDeliveries(stream: string, claimed: RawEntry[]): Promise<OutboxEntry[]> {
    const live = claimed.filter((entry): entry is [string, string[]] => entry[1] !== null);
    if (live.length === 0) return [];
    const deliveries = await this.#deliveryCounts(stream, live[0]![0], live[live.length - 1]![0], live.length);
    return live.map(([id, fields]) => ({ stream, id, deliveries: deliveries.get(id) ?? 1, coupon: parseOutboxFields(fields) }));
  }

  async #deliveryCounts(stream: string, first: string, last: string, count: number): Promise<Map<string, number>> {
    // The claimed entries are this consumer's now; filtering by it keeps other consumers' entries in the same
    // id range from crowding them out of the reply.
    const pending = (await this.#redis.xpending(stream, PERSIST_GROUP, first, last, count, this.consumer)) as Array<[string, string, number, number]>;
    return new Map(pending.map(([id, , , deliveries]) => [id, deliveries]));
  }

  /** Acknowledges entries, grouped by stream: only ever called after their rows are committed. */
  async ack(entries: readonly OutboxEntry[]): Promise<void> {
    const byStream = new Map<string, string[]>();
    for (const entry of entries) {
      const ids = byStream.get(entry.stream) ?? [];
      ids.push(entry.id);
      byStream.set(entry.stream, ids);
    }
    // Sent together, each to the shard of its stream on a Cluster.
    await Promise.all([...byStream].map(([stream, ids]) => this.#redis.xack(stream, PERSIST_GROUP, ...ids)));
  }

  /** On shutdown: leave the group, but only from streams where this consumer holds nothing pending. */
  async leave(): Promise<void> {
    for (const stream of await this.#registry.streams()) {
      try {
        await this.#redis.removeConsumerIfIdle(stream, PERSIST_GROUP, this.consumer);
      } catch {
        // the stream or group is gone: nothing to leave
      }
    }
  }
}

/**
 * The outbox streams of every registered event, as the registry set names them; re-read at most once a second.
 * Streams found without their consumer group are left out until then.
 */
export class OutboxStreams {
  readonly #redis: CouponRedis;
  #streams: string[] = [];
  #readAt = 0;

  constructor(redis: CouponRedis) {
    this.#redis = redis;
  }

  async streams(): Promise<string[]> {
    if (Date.now() - this.#readAt > 1_000) {
      const eventIds = await this.#redis.smembers(EVENT_REGISTRY_KEY);
      this.#streams = eventIds.sort().map((eventId) => eventKeys(eventId).outbox);
      this.#readAt = Date.now();
    }
    return this.#streams;
  }

  /** Read the registry again on the next call (events were archived and their streams are gone). */
  forget(): void {
    this.#readAt = 0;
  }

  /** Leaves one stream out until the registry is read again. */
  drop(stream: string): void {
    this.#streams = this.#streams.filter((known) => known !== stream);
  }

  /**
   * Leaves out every stream without its consumer group (no state installed yet, or lost) until the registry is
   * read again, so that one such stream does not fail the read of all the others.
   */
  async dropMissing(): Promise<void> {
    const grouped = await Promise.all(this.#streams.map(async (stream) => {
      try {
        const groups = (await this.#redis.xinfo('GROUPS', stream)) as unknown[][];
        return groups.some((group) => group[1] === PERSIST_GROUP);
      } catch {
        return false;
      }
    }));
    this.#streams = this.#streams.filter((_, index) => grouped[index]);
  }
}

/**
 * How long a Cluster read that found no entry waits before the next (a single server blocks on its read instead):
 * an idle worker asks every stream this often, so its cost grows with the live events (10 reads a second each).
 */
const CLUSTER_POLL_MS = 100;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

function entriesOf(stream: string, rawEntries: RawEntry[]): OutboxEntry[] {
  const entries: OutboxEntry[] = [];
  for (const [id, fields] of rawEntries) {
    if (fields) entries.push({ stream, id, deliveries: 1, coupon: parseOutboxFields(fields) });
  }
  return entries;
}
