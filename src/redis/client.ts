import { readFileSync } from 'node:fs';
import { Cluster, Redis, type RedisOptions } from 'ioredis';
import type { RedisTarget } from '../config.ts';
import { PERSIST_BUCKET_KEY } from './keys.ts';

const script = (name: string): string => readFileSync(new URL(`./${name}.lua`, import.meta.url), 'utf8');

/** The scripts, loaded once per connection and then called by EVALSHA (ioredis falls back to EVAL on NOSCRIPT). */
const SCRIPTS = {
  gate: { numberOfKeys: 4, lua: script('gate') },
  gateBatch: { numberOfKeys: 4, lua: script('gate-batch') },
  abandonAttempt: { numberOfKeys: 1, lua: script('abandon-attempt') },
  installEvent: { numberOfKeys: 4, lua: script('install-event') },
  checkHolders: { numberOfKeys: 2, lua: script('check-holders') },
  updateEvent: { numberOfKeys: 2, lua: script('update-event') },
  reservePersistSlot: { numberOfKeys: 1, lua: script('persist-bucket') },
  removeConsumerIfIdle: { numberOfKeys: 1, lua: script('remove-consumer') },
} as const;

interface ScriptCommands {
  gate(
    meta: string, issued: string, users: string, outbox: string, eventId: string, userId: string, requestId: string, checkedNodes: string,
    minReplicas: string, replicaMaxLagS: string, attemptId: string,
  ): Promise<[number, number, number, string?]>;
  /** GATE_BATCH=on: gate-batch.lua, then per request userId, requestId, attempt id (see gate-batcher.ts). */
  gateBatch(
    meta: string, issued: string, users: string, outbox: string, eventId: string, checkedNodes: string, minReplicas: string,
    replicaMaxLagS: string, ...requests: string[]
  ): Promise<Array<string | number>>;
  /** Records a gate call given up (abandon-attempt.lua): the gate never issues for it after; 0 when no state. */
  abandonAttempt(meta: string, userId: string, attemptId: string): Promise<number>;
  installEvent(...keysAndArgs: string[]): Promise<number>;
  checkHolders(meta: string, users: string, ...userIds: string[]): Promise<Array<number | string | null>>;
  updateEvent(meta: string, issued: string, total: string, endsAt: string, paused: string, ofRecord?: string): Promise<[number, number, number]>;
  reservePersistSlot(bucket: string, rows: number, rate: number, horizonMs: number, step: number, end: string): Promise<[number, number, string]>;
  /** Removes a consumer from a group only if it holds no pending entries; 1 when removed. */
  removeConsumerIfIdle(stream: string, group: string, consumer: string): Promise<number>;
}

/**
 * Sent on their own, never auto-pipelined: an auto-pipeline waits for the one before it to the same node, and on a
 * Cluster that may hold gate calls re-sent on TRYAGAIN (their slot half moved) for longer than the gate's deadline.
 * The settle after a deadline must not wait behind the very call it gives up (see gate.ts).
 * EXISTS too: the reads ask for an event's keys and a shard's state marker at once, keys of two slots on one node,
 * and a Cluster client does not follow a MOVED met inside such a pipeline: the reads answered 503 after a slot
 * move until the next refresh of the slot map (the chaos schedules' Cluster profile). On its own it is followed.
 * SISMEMBER of the event registry is asked beside them (an event whose state is missing): the same.
 */
const SETTLE_COMMANDS = ['abandonAttempt', 'exists', 'sismember'];

/** A client of any topology: one server, a Sentinel-followed primary, or a Redis Cluster (see topology.ts). */
export type CouponRedis = (Redis | Cluster) & ScriptCommands;

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

/** A Redis URL, or a whole target from the configuration (a single server, a Sentinel-discovered primary, a Cluster). */
export type RedisTargetLike = string | RedisTarget;

/**
 * The one way this project opens a Redis connection, whatever the topology: a single server named by URL, the
 * primary the Sentinels name (followed across failovers by the client itself), or a Redis Cluster found from its
 * seed nodes (each command sent to the shard that owns its keys' slot, MOVED/ASK/TRYAGAIN followed by the client).
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
    ...(options.autoPipelining && { enableAutoPipelining: true, autoPipeliningIgnoredCommands: SETTLE_COMMANDS }),
    ...(options.commandTimeoutMs !== undefined && { commandTimeout: options.commandTimeoutMs }),
    ...(options.socketTimeoutMs !== undefined && { socketTimeout: options.socketTimeoutMs }),
  };
  const redis = resolved.kind === 'standalone'
    ? new Redis(resolved.url, redisOptions)
    : resolved.kind === 'sentinel'
      ? new Redis({ ...redisOptions, ...sentinelOptions(resolved) })
      : clusterClient(resolved, redisOptions, options);
  for (const [name, definition] of Object.entries(SCRIPTS)) {
    redis.defineCommand(name, definition);
  }
  if (redis instanceof Redis && resolved.kind === 'sentinel') keepConnecting(redis);
  return redis as CouponRedis;
}

/**
 * ioredis ends a client for good when its Sentinel connector fails once while resolving the primary (during a
 * failover a Sentinel can name a server that is not ready yet): every command then fails with "Connection is
 * closed" and the process would need a restart. A client that ended without being closed here connects again.
 */
function keepConnecting(redis: Redis): void {
  let closing = false;
  const quit = redis.quit.bind(redis);
  const disconnect = redis.disconnect.bind(redis);
  redis.quit = ((...args: Parameters<Redis['quit']>) => {
    closing = true;
    return quit(...args);
  }) as Redis['quit'];
  redis.disconnect = (reconnect?: boolean) => {
    if (!reconnect) closing = true;
    disconnect(reconnect);
  };
  redis.on('end', () => {
    if (closing) return;
    setTimeout(() => {
      if (!closing && redis.status === 'end') redis.connect().catch(() => undefined);
    }, 1_000).unref();
  });
}

/**
 * A Cluster client. Each node connection gets the same options as a single server's (timeouts, keepalive); the
 * slot map is re-read every second, and the client follows MOVED at once and TRYAGAIN (a script whose keys
 * are mid-migration) after 50 ms, for at most 16 redirections: the gate's own deadline bounds the wait.
 */
function clusterClient(target: Extract<RedisTarget, { kind: 'cluster' }>, redisOptions: RedisOptions, options: RedisClientOptions): Cluster {
  const url = new URL(target.url);
  // The Cluster pipelines by itself (enableAutoPipelining below). A node connection that auto-pipelined too would
  // send the ASKING of a redirect a tick after the command it is for (ioredis calls node.asking(), then sends the
  // command): every command sent on its own (see SETTLE_COMMANDS) would meet ASK again until too many redirections.
  const { retryStrategy: _single, enableOfflineQueue: _queue, enableAutoPipelining: _own, autoPipeliningIgnoredCommands: _ignored, ...nodeOptions } = redisOptions;
  const cluster = new Cluster(target.nodes.map(({ host, port }) => ({ host, port })), {
    redisOptions: {
      ...nodeOptions,
      ...(url.username && { username: decodeURIComponent(url.username) }),
      ...(url.password && { password: decodeURIComponent(url.password) }),
      ...(url.protocol === 'rediss:' && { tls: {} }),
    },
    ...(options.failFast && { enableOfflineQueue: false }),
    ...(options.autoPipelining && { enableAutoPipelining: true, autoPipeliningIgnoredCommands: SETTLE_COMMANDS }),
    clusterRetryStrategy: (attempt) => Math.min(attempt * 100, 1_000),
    // A node that restarts keeps its slots: reconnect to it rather than wait for a MOVED to name it again.
    clusterNodeRetryStrategy: (attempt) => Math.min(attempt * 100, 1_000),
    retryDelayOnTryAgain: 50,
    retryDelayOnFailover: 100,
    // Re-read by the timer below instead: ioredis's own (6.0.0) re-arms itself when disconnect() meets a refresh in
    // flight, and then keeps a closed client's process alive for ever (a jest run that never exited).
    slotsRefreshInterval: 0,
    slotsRefreshTimeout: 1_000,
  });
  const refresh = setInterval(() => cluster.refreshSlotsCache(), SLOTS_REFRESH_MS).unref();
  cluster.once('end', () => clearInterval(refresh));
  return cluster;
}

/** How often a Cluster client re-reads the slot map (besides on every MOVED and connection error). */
const SLOTS_REFRESH_MS = 1_000;

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

/**
 * Who this Redis server is: its run id (new on every start) and its replication id (new when a replica is
 * promoted). Neither is replicated, so a marker written on one server and copied to its replica does not match
 * the replica once it is promoted: that is how a server that may be older than MySQL is recognised.
 */
export async function serverIdentity(redis: Redis | Cluster): Promise<string> {
  const [info, replication] = await Promise.all([redis.info('server'), redis.info('replication')]);
  const field = (text: string, name: string) => new RegExp(`^${name}:(\\S+)`, 'm').exec(text)?.[1] ?? '?';
  return `${field(info, 'run_id')}/${field(replication, 'master_replid')}`;
}

/** A reply of the global write timeline (persist-bucket.lua). */
export interface PersistSlotGrant {
  /** rows granted (or given back) */
  rows: number;
  /** ms until the first granted slot starts; when none were granted, until a step would fit within the horizon */
  waitMs: number;
  /** the end of the timeline after this reservation: what a give-back names */
  end: string;
}

/**
 * Reserves `rows` write slots at the end of the global timeline, 1/ratePerSec s apart. With `withinMs`, only the
 * slots that start within that many ms of now, in whole multiples of `step` rows, or none. A negative `rows`
 * gives that many slots back from the end of the reservation that ended at `end`, if none came after it.
 */
export async function reservePersistSlot(
  redis: CouponRedis, rows: number, ratePerSec: number, options: { withinMs?: number; step?: number; end?: string } = {},
): Promise<PersistSlotGrant> {
  const [granted, waitUs, end] = await redis.reservePersistSlot(
    PERSIST_BUCKET_KEY, rows, ratePerSec, Math.max(0, Math.ceil(options.withinMs ?? 0)), options.step ?? 1, options.end ?? '',
  );
  return { rows: Number(granted), waitMs: Number(waitUs) / 1000, end: String(end) };
}

/** Redis server time in epoch milliseconds: the clock the gate uses. */
export async function redisNowMs(redis: Redis | Cluster): Promise<number> {
  const [seconds, micros] = await redis.time();
  return Number(seconds) * 1000 + Math.floor(Number(micros) / 1000);
}
