import { randomUUID } from 'node:crypto';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';
import type { CouponEvent } from './domain/coupon.ts';
import type { CouponStore } from './db/store.ts';
import { type CouponRedis, serverIdentity } from './redis/client.ts';
import { installEventState, markBitmapComplete, markPersisted, restoreEventSettings } from './redis/event-state.ts';
import { encodeUserEntry } from './redis/formats.ts';
import { EVENT_CHANGED_CHANNEL, STATE_CHECK_LOCK_KEY, eventKeys } from './redis/keys.ts';
import { allPrimariesChecked, isCluster, markerKeyOf, nodeName, primaries, primaryOf } from './redis/topology.ts';

/**
 * Keeps the Redis gate state no older than MySQL. Redis can lose writes it acknowledged: a flush or an empty
 * replacement loses everything, a failover to a replica loses what the primary had not shipped yet, a restart
 * from an old AOF loses its tail. MySQL may then hold coupons the gate no longer knows, and a gate issuing from
 * such a state would hand their sequences out again. Every such loss either removes the marker
 * (STATE_SENTINEL_KEY, one per Cluster shard: topology.ts) or leaves one that names another server, so comparing
 * the marker with the identity of the server connected now tells when to check; the api issues nothing on a
 * server (a shard) until it has been checked.
 *
 * A check is fenced: the events' epochs are raised in MySQL first, which waits for inserts in flight and makes
 * any insert checked against the old state fail after; only then are MySQL's coupons read and merged into Redis.
 */
const RESTORE_CONCURRENCY = 8;
/** Sequences per MySQL query when an event's coupons are read back: a few Redis chunks (INSTALL_CHUNK_USERS). */
const RESTORE_PAGE_ROWS = 2_000;
/** Archive tombstones written per round trip when a restore puts them back. */
const TOMBSTONE_CHUNK = 1_000;
const RELEASE_LUA = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";

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
   * Checks and repairs every primary (the one server, or each Cluster shard) not checked since it last lost data.
   * One process works at a time (a lock); the others see what was checked so far and ask again shortly. Returns
   * the primaries checked: name (see topology.ts nodeName) -> Cluster node id (CLUSTER MYID; '' on one server).
   */
  async checkPrimaries(): Promise<Map<string, string>> {
    const redis = this.#redis;
    const states = await Promise.all(primaries(redis).map(async (node) => {
      const key = markerKeyOf(redis, node);
      const [identity, marker, id] = await Promise.all([
        serverIdentity(node), key === undefined ? null : node.get(key), isCluster(redis) ? node.call('CLUSTER', 'MYID') as Promise<string> : '',
      ]);
      return { node, key, identity, id, checked: marker === identity };
    }));
    const checked = new Map(states.filter((state) => state.checked).map((state) => [nodeName(state.node), state.id]));
    // A Cluster node that owns no slot (yet) holds no event: nothing to check there.
    const unchecked = states.filter((state) => !state.checked && state.key !== undefined);
    if (unchecked.length === 0) return checked;
    const token = await this.#lock(states);
    if (token === undefined) return checked;
    try {
      const started = Date.now();
      const changed = await this.restore('all');
      for (const { node, key, identity, id } of unchecked) {
        // A failover during the check leaves the new server unchecked: it is compared on the next round.
        if ((await serverIdentity(node)) !== identity) continue;
        await node.set(key!, identity);
        checked.set(nodeName(node), id);
        this.#logger.info({ server: identity, node: nodeName(node), changed, ms: Date.now() - started }, 'gate state compared with MySQL');
      }
      return checked;
    } finally {
      await this.#release(token);
    }
  }

  /** Checks and repairs what needs it (checkPrimaries); true once every primary is checked. */
  async ensureChecked(): Promise<boolean> {
    return allPrimariesChecked(this.#redis, await this.checkPrimaries());
  }

  /**
   * Restores events whose Redis epoch stayed behind MySQL's: a restore that died between raising the epochs and
   * writing Redis would otherwise leave their batches refused for ever. Skipped while another process holds
   * the lock (it is restoring). True when it ran.
   */
  async restoreBehind(eventIds: readonly string[]): Promise<boolean> {
    const token = await this.#lock();
    if (token === undefined) return false;
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
    // One command per event, sent together (each to its shard on a Cluster).
    const exists = await Promise.all(events.map((event) => this.#redis.exists(eventKeys(event.id).meta)));
    const missing = events.filter((_, index) => exists[index] !== 1).map((event) => event.id);
    return missing.length === 0 ? {} : this.restore(missing);
  }

  /**
   * Raises the events' epochs, then makes each event's gate state hold at least what MySQL holds: a missing
   * state is installed from the rows; an existing one gets the users it lacks and a counter no lower than the
   * highest persisted sequence; either way the settings MySQL records (quantity, end, pause) replace Redis's, which
   * may predate a PATCH Redis lost. Each holder's entry carries the request id MySQL kept, so an Idempotency-Key
   * retry is still recognised. Archived events are never written back: they live in MySQL only, and get only their
   * tombstone back (the reads and the gate then know they exist). Returns what changed, by event id.
   */
  async restore(eventIds: readonly string[] | 'all'): Promise<Record<string, string>> {
    const store = this.#store;
    await store.raiseEpochs(eventIds);
    const [events, summary, archived] = await Promise.all([
      eventIds === 'all' ? store.listLiveEvents() : Promise.all(eventIds.map((id) => store.findEvent(id))),
      store.persistedSummary(eventIds),
      eventIds === 'all' ? store.listArchivedIds().then((ids) => new Set(ids)) : store.archivedAmong(eventIds),
    ]);
    await this.#writeTombstones([...archived]);
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
    // Every event changed here is told to the apis, as after a PATCH: a state installed or merged again lost coupons
    // told and not yet in MySQL (their stock is back), a setting put back may raise the quantity; either way a
    // sold-out flag an api set before must go.
    await Promise.all(Object.keys(changed).map((id) => this.#redis.publish(EVENT_CHANGED_CHANNEL, id).catch(() => undefined)));
    if (failures.length > 0) throw failures[0];
    return changed;
  }

  async #restoreEvent(event: CouponEvent, known: { epoch: number; count: number; maxSequence: number }): Promise<string> {
    const keys = eventKeys(event.id);
    const [metaExists, issuedRaw, users, epochRaw] = await Promise.all([
      this.#redis.exists(keys.meta), this.#redis.get(keys.issued), this.#redis.hlen(keys.users), this.#redis.hget(keys.meta, 'epoch'),
    ]);
    const issued = Number(issuedRaw ?? 0);
    // Replication ships writes in order, so a replica holds every coupon up to its counter: only the rows above
    // it can be missing. Fewer users than rows (or no state at all) means something else was lost: read them all.
    // So does a state older than the restore before this one (its epoch behind the one raised before ours): Redis
    // came back from files written before that restore, and MySQL's rows since may be of users it never held (a
    // history of its own, not a prefix), whatever the counts say.
    const branched = Number(epochRaw ?? 0) < known.epoch - 1;
    const above = metaExists === 0 || branched || users < known.count ? 0 : issued < known.maxSequence ? issued : null;
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
    const settings = outcome === 'superseded' ? 'unchanged' : await this.#restoreSettings(event);
    return settings === 'unchanged' ? outcome : outcome === 'unchanged' ? 'settings' : `${outcome}+settings`;
  }

  /**
   * Puts the settings MySQL records (quantity, end, pause) back into the event's gate state when Redis holds others:
   * it may predate a PATCH it lost. Read and written again under the event's row lock: a PATCH holds the same lock
   * across its Redis and MySQL writes, so the record read there is the last one saved and no PATCH lands between
   * the read and the write. Redis equal to `event` (read before the lock) needs nothing: a PATCH saved since would
   * have written Redis first. restore() tells the api processes (event-changed) when a setting differed: a sold-out
   * flag set from a stale quantity must go.
   */
  async #restoreSettings(event: CouponEvent): Promise<'restored' | 'unchanged'> {
    const [total, endsAt, paused] = await this.#redis.hmget(eventKeys(event.id).meta, 'total', 'endsAt', 'paused');
    if (total === String(event.totalQuantity) && endsAt === (event.endsAt === null ? null : String(event.endsAt.getTime()))
      && (paused === '1') === event.paused) return 'unchanged';
    const outcome = await this.#store.withEventLocked(event.id, async (record, _save, archived) =>
      (record === null || archived ? 'unchanged' : restoreEventSettings(this.#redis, record)));
    if (outcome === 'state_missing') throw new Error(`the gate state of ${event.id} went missing while its settings were restored; restore it again`);
    return outcome;
  }

  /**
   * The archive tombstones of these events (see archive-event.lua), written again: a flush or a failover may have
   * lost them, and without one an archived event reads as one that never existed.
   */
  async #writeTombstones(eventIds: readonly string[]): Promise<void> {
    for (let start = 0; start < eventIds.length; start += TOMBSTONE_CHUNK) {
      // Sent together: auto-pipelined, each to the shard of its event on a Cluster.
      await Promise.all(eventIds.slice(start, start + TOMBSTONE_CHUNK).map((id) => this.#redis.set(eventKeys(id).archived, '1')));
    }
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

  /**
   * Takes the restore lock (one process checks and restores at a time) for up to a minute; undefined when another
   * process holds it. Its value names the server it was taken on (serverIdentity: the run id changes on a restart,
   * the replication id on a promotion), so a lock that came back with the server from an AOF written while a
   * restore held it (a crash mid-restore, a lost tail, a failover to a replica that has the key) is void: its
   * holder restored another server, or died with it. Without that, nothing would be checked, and the apis would
   * answer 503, until it expired. `known`: identities the caller just read, not asked again.
   */
  async #lock(known: ReadonlyArray<{ node: Redis; identity: string }> = []): Promise<string | undefined> {
    const redis = this.#redis;
    const node = primaryOf(redis, STATE_CHECK_LOCK_KEY);
    if (node === undefined) return undefined;
    const identity = known.find((state) => state.node === node)?.identity ?? await serverIdentity(node);
    const token = `${identity} ${randomUUID()}`;
    const take = async () => (await redis.set(STATE_CHECK_LOCK_KEY, token, 'PX', 60_000, 'NX')) === 'OK';
    if (await take()) return token;
    const held = await redis.get(STATE_CHECK_LOCK_KEY);
    if (held === null || held.startsWith(`${identity} `)) return undefined;
    this.#logger.warn({ server: identity, lock: held }, 'restore lock taken on another server (before a restart or a failover): void');
    await this.#release(held);
    return (await take()) ? token : undefined;
  }

  /** Deletes the lock if it still holds `token` (one script: never a lock another process took since). */
  async #release(token: string): Promise<void> {
    try {
      await this.#redis.eval(RELEASE_LUA, 1, STATE_CHECK_LOCK_KEY, token);
    } catch {
      // the lock expires by itself
    }
  }
}
