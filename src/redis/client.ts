import { readFileSync } from 'node:fs';
import { Redis, type RedisOptions } from 'ioredis';
import type { RedisTarget } from '../config.ts';
import type { ApplyOutcome } from '../domain/coupon.ts';
import type { ReplicaAcks } from './replica-acks.ts';
import { EVENT_REGISTRY_KEY, PERSIST_BUCKET_KEY, PERSIST_GROUP, eventKeys, parseUserEntry } from './keys.ts';

const script = (name: string): string => readFileSync(new URL(`./${name}.lua`, import.meta.url), 'utf8');

/** The scripts, loaded once per connection and then called by EVALSHA (ioredis falls back to EVAL on NOSCRIPT). */
const SCRIPTS = {
  gate: { numberOfKeys: 4, lua: script('gate') },
  installEvent: { numberOfKeys: 5, lua: script('install-event') },
  checkHolders: { numberOfKeys: 2, lua: script('check-holders') },
  updateEvent: { numberOfKeys: 2, lua: script('update-event') },
  reservePersistSlot: { numberOfKeys: 1, lua: script('persist-bucket') },
  removeConsumerIfIdle: { numberOfKeys: 1, lua: script('remove-consumer') },
} as const;

interface ScriptCommands {
  gate(meta: string, issued: string, users: string, outbox: string, eventId: string, userId: string, requestId: string): Promise<[number, number, number]>;
  installEvent(...keysAndArgs: string[]): Promise<number>;
  checkHolders(meta: string, users: string, ...userIds: string[]): Promise<Array<number | string | null>>;
  updateEvent(meta: string, issued: string, total: string, endsAt: string): Promise<[number, number]>;
  reservePersistSlot(bucket: string, rows: number, rate: number): Promise<number>;
  /** Removes a consumer from a group only if it holds no pending entries; 1 when removed. */
  removeConsumerIfIdle(stream: string, group: string, consumer: string): Promise<number>;
}

export type CouponRedis = Redis & ScriptCommands;

export interface RedisClientOptions {
  /** Fail commands at once while disconnected instead of queueing them (the api's gate must answer fast). */
  failFast?: boolean;
  commandTimeoutMs?: number;
  /**
   * A connection with a command outstanding that hears nothing for this long is destroyed and replaced: the cure
   * for a connection that went silent without FIN or RST (a vanished node, a hung proxy, a partition), which
   * the kernel would otherwise keep for many minutes. Must exceed the longest blocking wait sent on it.
   */
  socketTimeoutMs?: number;
  connectionName?: string;
  /** Send the commands of one event-loop tick in one write: under a burst, far fewer syscalls on both ends. */
  autoPipelining?: boolean;
}

/** A Redis URL, or a whole target from the configuration (a single server or Sentinel-discovered primary). */
export type RedisTargetLike = string | RedisTarget;

/**
 * The one way this project opens a Redis connection, whatever the topology: a single server named by URL, or
 * the primary the Sentinels name, followed across failovers by the client itself.
 */
export function createRedis(target: RedisTargetLike, options: RedisClientOptions = {}): CouponRedis {
  const resolved: RedisTarget = typeof target === 'string' ? { kind: 'standalone', url: target } : target;
  const redisOptions: RedisOptions = {
    connectionName: options.connectionName,
    connectTimeout: 2_000,
    // Reconnect forever, at most once a second: a Redis restart heals without restarting the process.
    retryStrategy: (attempt) => Math.min(attempt * 100, 1_000),
    // A primary demoted to a replica answers writes with READONLY: find the primary again. The failed command is
    // not re-sent: the caller decides (the gate answers 503 rather than issue on a server not yet checked).
    reconnectOnError: (error) => error.message.startsWith('READONLY'),
    keepAlive: 5_000,
    ...(options.failFast && { enableOfflineQueue: false, maxRetriesPerRequest: 0, autoResendUnfulfilledCommands: false }),
    ...(options.autoPipelining && { enableAutoPipelining: true }),
    ...(options.commandTimeoutMs !== undefined && { commandTimeout: options.commandTimeoutMs }),
    ...(options.socketTimeoutMs !== undefined && { socketTimeout: options.socketTimeoutMs }),
  };
  const redis = resolved.kind === 'standalone'
    ? new Redis(resolved.url, redisOptions)
    : new Redis({ ...redisOptions, ...sentinelOptions(resolved) });
  for (const [name, definition] of Object.entries(SCRIPTS)) {
    redis.defineCommand(name, definition);
  }
  return redis as CouponRedis;
}

/** Sentinel settings for ioredis; the primary's credentials, database and TLS come from REDIS_URL. */
function sentinelOptions(target: Extract<RedisTarget, { kind: 'sentinel' }>): RedisOptions {
  const url = new URL(target.url);
  const db = Number(url.pathname.slice(1) || 0);
  return {
    sentinels: target.sentinels.map(({ host, port }) => ({ host, port })),
    name: target.masterName,
    ...(target.sentinelPassword && { sentinelPassword: target.sentinelPassword }),
    ...(url.username && { username: decodeURIComponent(url.username) }),
    ...(url.password && { password: decodeURIComponent(url.password) }),
    ...(Number.isInteger(db) && db > 0 && { db }),
    ...(url.protocol === 'rediss:' && { tls: {}, enableTLSForSentinelMode: true }),
    // Sentinels tell of a failover at once (+switch-master), rather than the client learning it from a dead socket.
    failoverDetector: true,
    sentinelRetryStrategy: (attempt: number) => Math.min(attempt * 100, 1_000),
  };
}

const OUTCOMES: ApplyOutcome[] = [
  { kind: 'sold_out' }, { kind: 'not_started' }, { kind: 'ended' }, { kind: 'state_missing' },
];

export class GateTimeoutError extends Error {
  override name = 'GateTimeoutError';
  constructor() {
    super('Command timed out');
  }
}

/**
 * One round trip: window, per-user check, INCR, record the user, XADD the outbox.
 * `requestId` must be unique per request; it is how a timed-out call finds out what happened.
 */
export async function applyForCoupon(
  redis: CouponRedis, eventId: string, userId: string, requestId: string, timeoutMs = 500, replicas?: ReplicaAcks,
): Promise<ApplyOutcome> {
  const outcome = await runGate(redis, eventId, userId, requestId, timeoutMs);
  // GATE_MIN_REPLICAS: an issued coupon is answered only once replicas hold it (NotReplicatedError otherwise).
  if (outcome.kind === 'issued' && replicas) await replicas.confirm();
  return outcome;
}

async function runGate(redis: CouponRedis, eventId: string, userId: string, requestId: string, timeoutMs: number): Promise<ApplyOutcome> {
  const keys = eventKeys(eventId);
  let reply: [number, number, number];
  try {
    reply = await withTimeout(redis.gate(keys.meta, keys.issued, keys.users, keys.outbox, eventId, userId, requestId), timeoutMs);
  } catch (error) {
    // One deadline for both calls: the gate's wait, then half of it again to settle, so a hung Redis is
    // answered 503 in 1.5x REDIS_COMMAND_TIMEOUT_MS (750 ms by default), well within a second.
    if (error instanceof GateTimeoutError) return settleTimedOut(redis, keys.users, userId, requestId, timeoutMs / 2);
    throw error;
  }
  const [code, sequence, issuedAtMs] = reply;
  if (code === 0) return { kind: 'issued', sequence, issuedAtMs };
  if (code === 1) return { kind: 'already_applied', sequence };
  return OUTCOMES[code - 2] ?? { kind: 'state_missing' };
}

/**
 * The gate's reply did not arrive in time, but the script may have run. Redis runs one connection's commands
 * in order, so reading the user's entry now tells for certain: recorded with our request id, the coupon is
 * ours; recorded with another, an earlier request got it; not recorded, nothing was issued and the fault stands.
 */
async function settleTimedOut(redis: CouponRedis, usersKey: string, userId: string, requestId: string, timeoutMs: number): Promise<ApplyOutcome> {
  const entry = await withTimeout(redis.hget(usersKey, userId), timeoutMs);
  if (entry === null) throw new GateTimeoutError();
  const recorded = parseUserEntry(entry);
  return recorded.requestId === requestId
    ? { kind: 'issued', sequence: recorded.sequence, issuedAtMs: recorded.issuedAtMs }
    : { kind: 'already_applied', sequence: recorded.sequence };
}

/**
 * Rejects when the reply has not arrived after `ms`. The check is deferred to setImmediate, which runs after
 * the event loop's I/O phase: a reply already waiting in the socket of a busy process is read first, so a
 * slow event loop does not turn answered calls into timeouts; only a Redis that is really slow does.
 */
function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let done = false;
    const timer = setTimeout(() => setImmediate(() => {
      if (done) return;
      done = true;
      reject(new GateTimeoutError());
    }), ms);
    promise.then(
      (value) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(value);
      },
      (error: unknown) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        reject(error);
      },
    );
  });
}

export interface GateState {
  totalQuantity: number;
  startsAtMs: number;
  endsAtMs: number | null;
  /** the highest sequence already handed out (as far as MySQL knows) */
  issued: number;
  /** the event's gate epoch in MySQL (see check-holders.lua), 0 for a new event; never lowered in Redis */
  epoch?: number;
  /** users already holding a coupon: userId -> "sequence:issuedAtMs" */
  users?: Array<[string, string]>;
}

/** What installEventState did: wrote a missing state, merged into an existing one, or found nothing to do. */
export type InstallOutcome = 'installed' | 'merged' | 'unchanged';
const INSTALL_OUTCOMES: InstallOutcome[] = ['unchanged', 'merged', 'installed'];

/**
 * Writes an event's gate state if it is missing; otherwise merges in the users and the counter it lacks and
 * raises its epoch (see install-event.lua).
 */
export async function installEventState(redis: CouponRedis, eventId: string, state: GateState): Promise<InstallOutcome> {
  const keys = eventKeys(eventId);
  const args = [
    keys.meta, keys.issued, keys.users, keys.outbox, EVENT_REGISTRY_KEY,
    eventId, String(state.totalQuantity), String(state.startsAtMs), state.endsAtMs === null ? '' : String(state.endsAtMs),
    String(state.issued), PERSIST_GROUP, String(state.epoch ?? 0),
  ];
  for (const [userId, value] of state.users ?? []) args.push(userId, value);
  return INSTALL_OUTCOMES[await redis.installEvent(...args)]!;
}

/**
 * The gate's current word on coupons of one event about to be written: its epoch, and which of the coupons their
 * users' entries still carry. Null when the event's gate state is missing (it must be restored first).
 */
export async function checkHolders(
  redis: CouponRedis, eventId: string, coupons: ReadonlyArray<{ userId: string; sequence: number }>,
): Promise<{ epoch: number; current: boolean[] } | null> {
  const keys = eventKeys(eventId);
  const [epoch, ...entries] = await redis.checkHolders(keys.meta, keys.users, ...coupons.map((coupon) => coupon.userId));
  if (epoch === -1) return null;
  const current = coupons.map((coupon, i) => {
    const entry = entries[i];
    return typeof entry === 'string' && parseUserEntry(entry).sequence === coupon.sequence;
  });
  return { epoch: Number(epoch), current };
}

/**
 * Who this Redis server is: its run id (new on every start) and its replication id (new when a replica is
 * promoted). Neither is replicated, so a marker written on one server and copied to its replica does not match
 * the replica once it is promoted: that is how a server that may be older than MySQL is recognised.
 */
export async function serverIdentity(redis: Redis): Promise<string> {
  const [info, replication] = await Promise.all([redis.info('server'), redis.info('replication')]);
  const field = (text: string, name: string) => new RegExp(`^${name}:(\\S+)`, 'm').exec(text)?.[1] ?? '?';
  return `${field(info, 'run_id')}/${field(replication, 'master_replid')}`;
}

export type UpdateOutcome = { kind: 'updated'; issued: number } | { kind: 'quantity_below_issued'; issued: number } | { kind: 'state_missing' };

export async function updateEventState(
  redis: CouponRedis, eventId: string, change: { totalQuantity?: number; endsAtMs?: number | null },
): Promise<UpdateOutcome> {
  const keys = eventKeys(eventId);
  const total = change.totalQuantity === undefined ? '' : String(change.totalQuantity);
  const endsAt = change.endsAtMs === undefined ? '' : change.endsAtMs === null ? '-' : String(change.endsAtMs);
  const [code, issued] = await redis.updateEvent(keys.meta, keys.issued, total, endsAt);
  if (code === 0) return { kind: 'updated', issued };
  if (code === 1) return { kind: 'quantity_below_issued', issued };
  return { kind: 'state_missing' };
}

/** Reserves `rows` writes on the global timeline; resolves to the milliseconds to wait before writing them. */
export function reservePersistSlot(redis: CouponRedis, rows: number, ratePerSec: number): Promise<number> {
  return redis.reservePersistSlot(PERSIST_BUCKET_KEY, rows, ratePerSec);
}

/** Redis server time in epoch milliseconds: the clock the gate uses. */
export async function redisNowMs(redis: Redis): Promise<number> {
  const [seconds, micros] = await redis.time();
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
}
