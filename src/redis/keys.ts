/**
 * Redis key layout. Every key of one event shares the hash tag `{eventId}` so that the gate script, which
 * touches all of them in one call, also runs on Redis Cluster.
 */
export interface EventKeys {
  /** hash: total, startsAt (epoch ms), endsAt (epoch ms, absent when open-ended) */
  meta: string;
  /** string counter: coupons issued so far, also the last sequence handed out */
  issued: string;
  /** hash: userId -> "sequence:issuedAtMs[:requestId]" */
  users: string;
  /** stream: the outbox the worker drains into MySQL */
  outbox: string;
  /** bitmap: bit `sequence` set once that coupon is in MySQL (the public reads answer from it, not from MySQL) */
  persisted: string;
  /** string: left when the event is archived and its other keys deleted, so reads know to ask MySQL for it */
  archived: string;
}

/**
 * The keys of an event. Remembered for the most recent events (the apply path asks for them on every request,
 * and six new strings a request were a measurable part of its garbage); the objects are frozen, being shared.
 */
export function eventKeys(eventId: string): EventKeys {
  let keys = recentKeys.get(eventId);
  if (keys === undefined) {
    if (recentKeys.size >= RECENT_KEYS_LIMIT) recentKeys.clear();
    keys = Object.freeze({
      meta: `coupon:{${eventId}}:meta`,
      issued: `coupon:{${eventId}}:issued`,
      users: `coupon:{${eventId}}:users`,
      outbox: `coupon:{${eventId}}:outbox`,
      persisted: `coupon:{${eventId}}:persisted`,
      archived: `coupon:{${eventId}}:archived`,
    });
    recentKeys.set(eventId, keys);
  }
  return keys;
}
const RECENT_KEYS_LIMIT = 1_000;
const recentKeys = new Map<string, Readonly<EventKeys>>();

/** set of event ids whose outbox the worker drains */
export const EVENT_REGISTRY_KEY = 'coupon:events';
/** pub/sub channel: an event's quantity or window changed; api processes drop their sold-out flag for it */
export const EVENT_CHANGED_CHANNEL = 'coupon:event-changed';
/** the worker's consumer group on every outbox stream */
export const PERSIST_GROUP = 'persist';
/**
 * The identity (run id / replication id) of the Redis server whose gate state was last compared with MySQL and
 * repaired. Gone after a flush; wrong after a restart or a failover to a replica: either way, checked again.
 */
export const STATE_SENTINEL_KEY = 'coupon:state-sentinel';
/** held (SET NX PX) by the one process that compares and repairs the gate state, so others do not repeat it */
export const STATE_CHECK_LOCK_KEY = 'coupon:state-check-lock';
/** the global write-rate bucket shared by all worker replicas */
export const PERSIST_BUCKET_KEY = 'coupon:persist-bucket';

export const eventIdOfOutbox = (stream: string): string => stream.slice('coupon:{'.length, stream.length - '}:outbox'.length);
