/**
 * What the code needs to know about where Redis keeps things: the primaries (one, or every shard of a Cluster),
 * which primary holds a key, and where each primary keeps its state marker. Everything else talks to the client
 * and lets it route.
 */
import calculateSlot from 'cluster-key-slot';
import { Cluster, type Redis } from 'ioredis';
import type { CouponRedis } from './client.ts';
import { STATE_SENTINEL_KEY } from './keys.ts';

export const isCluster = (redis: CouponRedis | Redis | Cluster): redis is Cluster & CouponRedis => redis instanceof Cluster;

/** The connection of every primary: the one server (or Sentinel's primary), or each master of the Cluster. */
export function primaries(redis: CouponRedis): Redis[] {
  return isCluster(redis) ? redis.nodes('master') : [redis as Redis];
}

/** A node's name as the Cluster's slot map writes it. */
export const nodeName = (node: Redis): string => `${node.options.host}:${node.options.port}`;

/** The primary that holds `key`, as the client's slot map has it now (undefined while a Cluster has no map yet). */
export function primaryOf(redis: CouponRedis, key: string): Redis | undefined {
  if (!isCluster(redis)) return redis as Redis;
  const owner = redis.slots[calculateSlot(key)]?.[0];
  return owner === undefined ? undefined : primaryNamed(redis, owner);
}

/** The connection to the primary named host:port (see nodeName); the one server when it is not a Cluster. */
export function primaryNamed(redis: CouponRedis, name: string): Redis | undefined {
  return isCluster(redis) ? redis.nodes('master').find((node) => nodeName(node) === name) : redis as Redis;
}

/**
 * The key of a primary's state marker (see gate-state.ts). A single server has one; each Cluster shard has its
 * own, hash-tagged into a slot that shard owns, so that a shard that loses its data loses its marker with it.
 * Undefined when the slot map names no slot for the node (it owns none, or the map is not read yet).
 */
export function markerKeyOf(redis: CouponRedis, node: Redis): string | undefined {
  if (!isCluster(redis)) return STATE_SENTINEL_KEY;
  const name = nodeName(node);
  const slot = redis.slots.findIndex((owners) => owners?.[0] === name);
  return slot === -1 ? undefined : `${STATE_SENTINEL_KEY}:{${tagForSlot(slot)}}`;
}

/** The state marker of the primary that holds `key`: present once that primary was compared with MySQL. */
export function markerKeyFor(redis: CouponRedis, key: string): string | undefined {
  const node = primaryOf(redis, key);
  return node && markerKeyOf(redis, node);
}

/** 1 when the state marker of the primary holding `key` is present; 0 without one (or no primary known). */
export function markerExists(redis: CouponRedis, key: string): Promise<number> {
  const markerKey = markerKeyFor(redis, key);
  return markerKey === undefined ? Promise.resolve(0) : redis.exists(markerKey);
}

/** Whether every primary that owns slots is among `checked` (false while a Cluster's nodes are not known yet). */
export function allPrimariesChecked(redis: CouponRedis, checked: { has(name: string): boolean }): boolean {
  const nodes = primaries(redis);
  return nodes.length > 0 && nodes.every((node) => checked.has(nodeName(node)) || markerKeyOf(redis, node) === undefined);
}

/** A short hash tag that maps to `slot`: the first of s0, s1, s2 ... that does (16,384 tries on average, once per slot). */
function tagForSlot(slot: number): string {
  let tag = tagsBySlot.get(slot);
  for (let i = 0; tag === undefined; i += 1) {
    if (calculateSlot(`s${i}`) === slot) tag = `s${i}`;
  }
  tagsBySlot.set(slot, tag);
  return tag;
}
const tagsBySlot = new Map<number, string>();
