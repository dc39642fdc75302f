/** An event's gate state as whole: installed or merged from MySQL, changed by an admin, checked by the worker. */
import { randomUUID } from 'node:crypto';
import type { CouponEvent } from '../domain/coupon.ts';
import type { CouponRedis } from './client.ts';
import { type UserEntry, parseUserEntry } from './formats.ts';
import { EVENT_REGISTRY_KEY, PERSIST_GROUP, eventKeys } from './keys.ts';
import { markerExists } from './topology.ts';

export interface GateState {
  totalQuantity: number;
  startsAtMs: number;
  endsAtMs: number | null;
  /** the highest sequence already handed out (as far as MySQL knows) */
  issued: number;
  /** the event's gate epoch in MySQL (see check-holders.lua), 0 for a new event; never lowered in Redis */
  epoch?: number;
  /** the kill switch as MySQL records it: written into a missing state; an existing state keeps its own (see restoreEventSettings) */
  paused?: boolean;
  /**
   * users already holding a coupon: userId -> user entry (formats.ts). Any number: they are read as they come (a
   * rebuild hands over MySQL's rows page by page) and written a chunk at a time.
   */
  users?: Iterable<readonly [string, string]> | AsyncIterable<readonly [string, string]>;
}

/**
 * What installEventState did: wrote a missing state, merged into an existing one, found nothing to do, or gave
 * way to another restorer that began installing the same missing state after it (that one finishes it).
 */
export type InstallOutcome = 'installed' | 'merged' | 'unchanged' | 'superseded';
const INSTALL_OUTCOMES: InstallOutcome[] = ['unchanged', 'merged', 'installed'];

/** Users per script call: well under a millisecond of Redis time each, however big the event. */
export const INSTALL_CHUNK_USERS = 500;

/**
 * Writes an event's gate state if it is missing; otherwise merges in the users and the counter it lacks and
 * raises its epoch (see install-event.lua). A state of up to INSTALL_CHUNK_USERS users is one atomic call. A
 * bigger one is written in chunks: a missing state is staged under a token and its meta hash written with the
 * last chunk, so the gate never issues from part of it; an existing one has its counter raised with the first
 * chunk (never a sequence MySQL holds handed out again), its users merged, and its epoch raised with the last.
 */
export async function installEventState(redis: CouponRedis, eventId: string, state: GateState): Promise<InstallOutcome> {
  const keys = eventKeys(eventId);
  // Registered first, so the worker drains whatever the gate issues from the state written next (on a Cluster the
  // registry is a key on some other shard: it cannot be written in the same script). A registered event without
  // its state yet is harmless: the worker skips a stream without its group.
  await redis.sadd(EVENT_REGISTRY_KEY, eventId);
  const call = (mode: InstallMode, pairs: readonly string[], token = ''): Promise<number> => redis.installEvent(
    keys.meta, keys.issued, keys.users, keys.outbox,
    mode, eventId, String(state.totalQuantity), String(state.startsAtMs), state.endsAtMs === null ? '' : String(state.endsAtMs),
    String(state.issued), PERSIST_GROUP, String(state.epoch ?? 0), token, state.paused ? '1' : '0', ...pairs,
  );
  const chunks = chunked(state.users ?? [], INSTALL_CHUNK_USERS);
  const first = await chunks.next();
  const second = first.done ? first : await chunks.next();
  if (second.done) return INSTALL_OUTCOMES[await call('install', first.done ? [] : first.value)]!;

  // Each chunk is sent once the next one is known, so the last goes with commit or merge-last, once every other
  // chunk is in. The chunks between go CALLS_IN_FLIGHT at a time: Redis runs them one after the other, each short.
  const token = randomUUID();
  const installing = (await call('begin', first.value!, token)) !== -1;
  let changed = 0;
  /** false when another restorer took the state over; throws when a merged state vanished (a flush) meanwhile */
  const accept = (result: number): boolean => {
    if (installing) return result !== -2;
    if (result < 0) throw new Error(`the gate state of ${eventId} went missing while MySQL's coupons were merged into it; restore it again`);
    changed += result;
    return true;
  };
  // An existing state gets its counter raised with the first chunk, before any other is sent.
  if (!installing) accept(await call('merge', first.value!, token));
  const inFlight: Array<Promise<number>> = [];
  let pending = second.value;
  for await (const chunk of chunks) {
    const sent = call(installing ? 'stage' : 'merge', pending, token);
    // Awaited below; this only keeps a failure of a call still in flight when an earlier one failed from going unhandled.
    sent.catch(() => undefined);
    inFlight.push(sent);
    if (inFlight.length >= CALLS_IN_FLIGHT && !accept(await inFlight.shift()!)) return 'superseded';
    pending = chunk;
  }
  for (const sent of inFlight) if (!accept(await sent)) return 'superseded';
  if (!accept(await call(installing ? 'commit' : 'merge-last', pending, token))) return 'superseded';
  return installing ? 'installed' : changed > 0 ? 'merged' : 'unchanged';
}

/** Chunk calls of one state sent before the oldest has answered. */
const CALLS_IN_FLIGHT = 2;

type InstallMode = 'install' | 'begin' | 'stage' | 'commit' | 'merge' | 'merge-last';

/** userId/value pairs, flattened, `size` users at a time. */
async function* chunked(pairs: Iterable<readonly [string, string]> | AsyncIterable<readonly [string, string]>, size: number): AsyncGenerator<string[]> {
  let chunk: string[] = [];
  for await (const [userId, value] of pairs) {
    chunk.push(userId, value);
    if (chunk.length >= size * 2) {
      yield chunk;
      chunk = [];
    }
  }
  if (chunk.length > 0) yield chunk;
}

/**
 * The gate's current word on coupons of one event about to be written: its epoch, and for each coupon its user's
 * entry when that entry still carries the coupon's sequence (undefined otherwise): the entry's request id goes to
 * MySQL with the row. Null when the event's gate state is missing (it must be restored first).
 */
export async function checkHolders(
  redis: CouponRedis, eventId: string, coupons: ReadonlyArray<{ userId: string; sequence: number }>,
): Promise<{ epoch: number; current: Array<UserEntry | undefined> } | null> {
  const keys = eventKeys(eventId);
  const [epoch, ...entries] = await redis.checkHolders(keys.meta, keys.users, ...coupons.map((coupon) => coupon.userId));
  if (epoch === -1) return null;
  const current = coupons.map((coupon, i) => {
    const entry = entries[i];
    const parsed = typeof entry === 'string' ? parseUserEntry(entry) : undefined;
    return parsed?.sequence === coupon.sequence ? parsed : undefined;
  });
  return { epoch: Number(epoch), current };
}

export type UpdateOutcome = { kind: 'updated'; issued: number } | { kind: 'quantity_below_issued'; issued: number } | { kind: 'state_missing' };

export async function updateEventState(
  redis: CouponRedis, eventId: string, change: { totalQuantity?: number; endsAtMs?: number | null; paused?: boolean },
): Promise<UpdateOutcome> {
  const keys = eventKeys(eventId);
  const total = change.totalQuantity === undefined ? '' : String(change.totalQuantity);
  const endsAt = change.endsAtMs === undefined ? '' : change.endsAtMs === null ? '-' : String(change.endsAtMs);
  const paused = change.paused === undefined ? '' : change.paused ? '1' : '0';
  const [code, issued] = await redis.updateEvent(keys.meta, keys.issued, total, endsAt, paused);
  if (code === 0) return { kind: 'updated', issued };
  if (code === 1) return { kind: 'quantity_below_issued', issued };
  return { kind: 'state_missing' };
}

/**
 * Writes the settings MySQL records for an event (quantity, end, pause) into its gate state, whatever is issued:
 * how a restore puts back a PATCH that Redis lost (update-event.lua, ARGV[4]). The caller holds the event's row
 * lock (CouponStore.withEventLocked), as a PATCH does, so the two never interleave. Returns whether a setting differed.
 */
export async function restoreEventSettings(
  redis: CouponRedis, event: Pick<CouponEvent, 'id' | 'totalQuantity' | 'endsAt' | 'paused'>,
): Promise<'restored' | 'unchanged' | 'state_missing'> {
  const keys = eventKeys(event.id);
  const endsAt = event.endsAt === null ? '-' : String(event.endsAt.getTime());
  const [code, , changed] = await redis.updateEvent(keys.meta, keys.issued, String(event.totalQuantity), endsAt, event.paused ? '1' : '0', '1');
  if (code === 2) return 'state_missing';
  return changed > 0 ? 'restored' : 'unchanged';
}

/**
 * Records that these coupons of one event are in MySQL: one BITFIELD per thousand sequences. Called by the worker
 * after each committed insert and by a restore for the rows it reads, so the public reads never ask MySQL.
 */
export async function markPersisted(redis: CouponRedis, eventId: string, sequences: readonly number[]): Promise<void> {
  const key = eventKeys(eventId).persisted;
  for (let start = 0; start < sequences.length; start += 1_000) {
    await redis.call('BITFIELD', key, ...sequences.slice(start, start + 1_000).flatMap((sequence) => ['SET', 'u1', String(sequence), '1']));
  }
}

/** Marks the event's persisted bitmap complete (every persisted coupon has its bit): the reads may trust it. */
export async function markBitmapComplete(redis: CouponRedis, eventId: string): Promise<void> {
  await redis.hset(eventKeys(eventId).meta, 'bitmap', '1');
}

/**
 * What Redis can tell of an event whose gate state is missing, without MySQL: 'unknown' when it is no event at all
 * (not in the registry, and the markers of its server and of the registry's say neither lost anything since it was
 * compared with MySQL: a made-up id costs MySQL nothing); 'lost-alone' when its server lost nothing else (its
 * marker is there: on a Cluster, a slot moved off a flushed shard before that shard's restore reached the event);
 * 'server-unchecked' when its server lost data and is being checked as a whole. Only MySQL tells the last two
 * from no event.
 */
export async function missingStateCause(redis: CouponRedis, eventId: string): Promise<'unknown' | 'lost-alone' | 'server-unchecked'> {
  const [marker, registered, registryMarker] = await Promise.all([
    markerExists(redis, eventKeys(eventId).meta), redis.sismember(EVENT_REGISTRY_KEY, eventId), markerExists(redis, EVENT_REGISTRY_KEY),
  ]);
  if (marker === 1 && registryMarker === 1 && registered === 0) return 'unknown';
  return marker === 1 ? 'lost-alone' : 'server-unchecked';
}
