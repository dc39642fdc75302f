/**
 * The read behind every sold-out answer, batched. A holder of a coupon must hear 409 with it, never 410 (its first
 * answer may have been lost), so a sold-out answer reads the user's entry, and whether the event's gate state is
 * there at all (a flag older than a flush must go). In a burst after a sell-out nearly every request is such a read:
 * the reads of one event that start in one turn of the event loop go to Redis as one HMGET of their users and one
 * HEXISTS of the meta hash (one slot, one auto-pipeline), instead of an HGET and an HEXISTS each. Each caller gets
 * what those two would have read for it; nothing waits on a timer (turn-batches.ts).
 */
import type { CouponRedis } from './client.ts';
import { eventKeys } from './keys.ts';
import { TurnBatches } from './turn-batches.ts';

/** The most users one HMGET asks for: bounds the command's run and its reply. */
const MAX_BATCH = 256;

export interface HolderRead {
  /** the user's entry in the event's users hash (formats.ts), null when the user holds no coupon */
  entry: string | null;
  /** false when the event has no gate state in Redis (no `total` in its meta hash) */
  state: boolean;
}

interface Pending {
  eventId: string;
  users: string[];
  callers: Array<PromiseWithResolvers<HolderRead>>;
}

export class HolderReads {
  readonly #redis: CouponRedis;
  /** the batch each event is filling this turn */
  readonly #batches = new TurnBatches<Pending>((batch) => this.#send(batch));
  /** commands sent and users they read, for tests and the bench */
  calls = 0;
  reads = 0;

  constructor(redis: CouponRedis) {
    this.#redis = redis;
  }

  read(eventId: string, userId: string): Promise<HolderRead> {
    const batch = this.#batches.current(eventId) ?? this.#batches.start(eventId, { eventId, users: [], callers: [] });
    const caller = Promise.withResolvers<HolderRead>();
    batch.users.push(userId);
    batch.callers.push(caller);
    if (batch.callers.length >= MAX_BATCH) this.#batches.send(eventId, batch);
    return caller.promise;
  }

  /** Sends the batches that have filled for longer than MAX_AGE_MS (turn-batches.ts). */
  sendIfOlder(now: number): void {
    this.#batches.sendIfOlder(now);
  }

  #send(batch: Pending): void {
    const { users, callers } = batch;
    const keys = eventKeys(batch.eventId);
    this.calls += 1;
    this.reads += users.length;
    Promise.all([this.#redis.hmget(keys.users, ...users), this.#redis.hexists(keys.meta, 'total')]).then(
      ([entries, state]) => {
        for (let i = 0; i < callers.length; i++) callers[i]!.resolve({ entry: entries[i] ?? null, state: state === 1 });
      },
      (error: unknown) => { for (const caller of callers) caller.reject(error); },
    );
  }
}
