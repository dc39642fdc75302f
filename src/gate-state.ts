import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { CouponEvent } from './domain/coupon.ts';
import type { CouponStore } from './db/store.ts';
import { type CouponRedis, serverIdentity } from './redis/client.ts';
import { installEventState, markBitmapComplete, markPersisted } from './redis/event-state.ts';
import { encodeUserEntry } from './redis/formats.ts';
import { STATE_CHECK_LOCK_KEY, STATE_SENTINEL_KEY, eventKeys } from './redis/keys.ts';

/**
 * Keeps the Redis gate state no older than MySQL. Redis can lose writes it acknowledged: a flush or an empty
 * replacement loses everything, a failover to a replica loses what the primary had not shipped yet, a restart
 * from an old AOF loses its tail. MySQL may then hold coupons the gate no longer knows, and a gate issuing from
 * such a state would hand their sequences out again. Every such loss either removes the marker
 * (STATE_SENTINEL_KEY) or leaves one that names another server, so comparing the marker with the identity of the
 * server connected now tells when to check; the api issues nothing on a server until it has been checked.
 *
 * A check is fenced: the events' epochs are raised in MySQL first, which waits for inserts in flight and makes
 * any insert checked against the old state fail after; only then are MySQL's coupons read and merged into Redis.
 */
const RESTORE_CONCURRENCY = 8;
/** Sequences per MySQL query when an event's coupons are read back: a few Redis chunks (INSTALL_CHUNK_USERS). */
const RESTORE_PAGE_ROWS = 2_000;

export class GateStateKeeper {
  readonly #redis: CouponRedis;
  readonly #store: CouponStore;
  readonly #logger: Logger;

  constructor(redis: CouponRedis, store: CouponStore, logger: Logger) {
    this.#redis = redis;
    this.#store = store;
    this.#logger = logger;
  }

  /**
   * Checks and repairs the connected server unless that was done already. One process works at a time (a lock);
   * the others return false and ask again shortly. True once the server is checked.
   */
  async ensureChecked(): Promise<boolean> {
    const redis = this.#redis;
    const identity = await serverIdentity(redis);
    if ((await redis.get(STATE_SENTINEL_KEY)) === identity) return true;
    const token = randomUUID();
    if ((await redis.set(STATE_CHECK_LOCK_KEY, token, 'PX', 60_000, 'NX')) !== 'OK') return false;
    try {
      const started = Date.now();
      const changed = await this.restore('all');
      // A failover during the check leaves the new server unchecked: it is compared on the next round.
      if ((await serverIdentity(redis)) !== identity) return false;
      await redis.set(STATE_SENTINEL_KEY, identity);
      this.#logger.info({ server: identity, changed, ms: Date.now() - started }, 'gate state compared with MySQL');
      return true;
    } finally {
      await this.#release(token);
    }
  }

  /**
   * Restores events whose Redis epoch stayed behind MySQL's: a restore that died between raising the epochs and
   * writing Redis would otherwise leave their batches refused for ever. Skipped while another process holds
   * the lock (it is restoring). True when it ran.
   */
  async restoreBehind(eventIds: readonly string[]): Promise<boolean> {
    const token = randomUUID();
    if ((await this.#redis.set(STATE_CHECK_LOCK_KEY, token, 'PX', 60_000, 'NX')) !== 'OK') return false;
    try {
      await this.restore(eventIds);
      return true;
    } finally {
      await this.#release(token);
    }
  }

  /** Restores, fenced, the events whose gate state is missing altogether (deleted keys, a failed create). */
  async restoreMissing(): Promise<Record<string, string>> {
    const events = await this.#store.listLiveEvents();
    if (events.length === 0) return {};
    const pipeline = this.#redis.pipeline();
    for (const event of events) pipeline.exists(eventKeys(event.id).meta);
    const exists = (await pipeline.exec()) ?? [];
    const missing = events.filter((_, index) => exists[index]?.[1] !== 1).map((event) => event.id);
    return missing.length === 0 ? {} : this.restore(missing);
  }

  /**
   * Raises the events' epochs, then makes each event's gate state hold at least what MySQL holds: a missing
   * state is installed from the rows; an existing one gets the users it lacks and a counter no lower than the
   * highest persisted sequence. Archived events are never written back: they live in MySQL only. Returns what
   * changed, by event id.
   */
  async restore(eventIds: readonly string[] | 'all'): Promise<Record<string, string>> {
    const store = this.#store;
    await store.raiseEpochs(eventIds);
    const [events, summary, archived] = await Promise.all([
      eventIds === 'all' ? store.listLiveEvents() : Promise.all(eventIds.map((id) => store.findEvent(id))),
      store.persistedSummary(eventIds),
      eventIds === 'all' ? new Set<string>() : store.archivedAmong(eventIds),
    ]);
    const changed: Record<string, string> = {};
    const queue = events.filter((event): event is CouponEvent => event !== null && !archived.has(event.id));
    const failures: unknown[] = [];
    // A few events at a time: a fresh Redis beside a MySQL with many events is restored in one pass, not serially.
    // One event failing does not stop the others, and the call returns only once none is being written.
    await Promise.all(Array.from({ length: Math.min(RESTORE_CONCURRENCY, queue.length) }, async () => {
      for (let event = queue.shift(); event; event = queue.shift()) {
        try {
          const outcome = await this.#restoreEvent(event, summary.get(event.id) ?? { epoch: 0, count: 0, maxSequence: 0 });
          if (outcome !== 'unchanged') changed[event.id] = outcome;
        } catch (error) {
          failures.push(error);
        }
      }
    }));
    if (Object.keys(changed).length > 0) this.#logger.warn({ changed }, 'gate state was behind MySQL; restored from it');
    if (failures.length > 0) throw failures[0];
    return changed;
  }

  async #restoreEvent(event: CouponEvent, known: { epoch: number; count: number; maxSequence: number }): Promise<string> {
    const keys = eventKeys(event.id);
    const [metaExists, issuedRaw, users] = await Promise.all([
      this.#redis.exists(keys.meta), this.#redis.get(keys.issued), this.#redis.hlen(keys.users),
    ]);
    const issued = Number(issuedRaw ?? 0);
    // Replication ships writes in order, so a replica holds every coupon up to its counter: only the rows above
    // it can be missing. Fewer users than rows (or no state at all) means something else was lost: read them all.
    const above = metaExists === 0 || users < known.count ? 0 : issued < known.maxSequence ? issued : null;
    const outcome = await installEventState(this.#redis, event.id, {
      totalQuantity: event.totalQuantity,
      startsAtMs: event.startsAt.getTime(),
      endsAtMs: event.endsAt?.getTime() ?? null,
      issued: known.maxSequence,
      epoch: known.epoch,
      paused: event.paused,
      users: above === null ? [] : this.#persistedUsers(event.id, above, known.maxSequence),
    });
    // Every row was read, and its bit set on the way: the reads may count persisted coupons from the bitmap.
    if (above === 0) await markBitmapComplete(this.#redis, event.id);
    return outcome;
  }

  /**
   * The event's persisted holders with a sequence in (above, through], as user entries: read from MySQL a range
   * of RESTORE_PAGE_ROWS sequences at a time, the next range while the current one is written to Redis.
   */
  async *#persistedUsers(eventId: string, above: number, through: number): AsyncGenerator<[string, string]> {
    const read = (after: number) => this.#store.persistedCouponRange(eventId, after, Math.min(after + RESTORE_PAGE_ROWS, through));
    let next = above < through ? read(above) : undefined;
    try {
      for (let after = above; next; after += RESTORE_PAGE_ROWS) {
        const page = await next;
        next = after + RESTORE_PAGE_ROWS < through ? read(after + RESTORE_PAGE_ROWS) : undefined;
        await markPersisted(this.#redis, eventId, page.map((coupon) => coupon.sequence));
        for (const coupon of page) yield [coupon.userId, encodeUserEntry(coupon)];
      }
    } finally {
      // The writer stopped early (another restorer took over): the read ahead is not wanted, nor its failure.
      next?.catch(() => undefined);
    }
  }

  async #release(token: string): Promise<void> {
    try {
      if ((await this.#redis.get(STATE_CHECK_LOCK_KEY)) === token) await this.#redis.del(STATE_CHECK_LOCK_KEY);
    } catch {
      // the lock expires by itself
    }
  }
}

/**
 * The api's side: issue only on a server that has been checked. The flag drops the moment the connection closes
 * (the next server may be a promoted replica or a restarted one) and rises once the keeper has checked the
 * server now connected: within about a second, or as long as a repair takes.
 */
export class CheckedServer {
  readonly #redis: CouponRedis;
  readonly #keeper: GateStateKeeper;
  readonly #logger: Logger;
  #checked = false;
  #everChecked = false;
  /** bumped on every close, so a check that began on the previous connection cannot vouch for the next */
  #connection = 0;
  #polling = false;
  #stopped = false;

  constructor(redis: CouponRedis, keeper: GateStateKeeper, logger: Logger) {
    this.#redis = redis;
    this.#keeper = keeper;
    this.#logger = logger;
  }

  get checked(): boolean {
    return this.#checked;
  }

  /** Whether any server was checked since this process started: until then it is not ready for traffic. */
  get everChecked(): boolean {
    return this.#everChecked;
  }

  start(): void {
    this.#redis.on('close', () => {
      this.#connection += 1;
      this.#checked = false;
    });
    this.#redis.on('ready', () => void this.#poll());
    if (this.#redis.status === 'ready') void this.#poll();
  }

  stop(): void {
    this.#stopped = true;
  }

  async #poll(): Promise<void> {
    if (this.#polling) return;
    this.#polling = true;
    try {
      while (!this.#checked && !this.#stopped) {
        const connection = this.#connection;
        try {
          if ((await this.#keeper.ensureChecked()) && connection === this.#connection) {
            this.#checked = true;
            this.#everChecked = true;
          }
        } catch (error) {
          this.#logger.debug({ err: error }, 'gate state check failed; retrying');
        }
        if (!this.#checked) await new Promise((resolve) => setTimeout(resolve, 200));
      }
    } finally {
      this.#polling = false;
    }
  }
}
