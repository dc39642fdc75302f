/** The capacity model: the costs measured on one shard turned into shards, events and requests per second. */
import { round } from '../stats.ts';

/** What the model is fed: costs measured on one shard, and the memory of an event. */
export interface CapacityInputs {
  /**
   * Redis CPU per gate call on one shard, µs, with the calls arriving in pipelined batches (a busy shard fed by
   * auto-pipelining api processes) and one call per read (the most each call can cost)
   */
  gateUsPerCallBatched: number;
  gateUsPerCallUnbatched: number;
  /** the api's CPU per apply request, µs */
  apiUsPerRequest: number;
  /** an event's keys just created, and what each coupon adds once persisted and while in the outbox, bytes */
  eventFixedBytes: number;
  bytesPerCoupon: number;
  bytesPerCouponInOutbox: number;
}

/** A figure at both ends of the gate's cost per call. */
export interface Bounds {
  unbatched: number;
  batched: number;
}

export interface CapacityModel {
  inputs: CapacityInputs;
  formula: string;
  /** one shard's ceiling: 1e6 / gate µs per call, one core of Redis per shard; one event's is the same */
  shardCallsPerSec: Bounds;
  /** what one core of api carries */
  apiRequestsPerCore: number;
  /** api cores it takes to keep one shard busy */
  apiCoresPerShard: Bounds;
  /** per GiB of a shard's memory used by events (MEMORY USAGE: leave headroom for fragmentation and buffers) */
  couponsPerGiB: number;
  eventsPerGiB: Array<{ couponsPerEvent: number; events: number }>;
  byShards: Array<{ shards: number; callsPerSec: Bounds; apiCores: Bounds }>;
}

const GIB = 2 ** 30;

export const CAPACITY_FORMULA = 'calls/s of one shard = 1e6 / gate µs per call (one core); of K shards = K × that, '
  + 'for load spread over events on every shard; of one event = one shard\'s, whatever K (its keys share the hash tag {eventId}); '
  + 'api cores = calls/s × api µs per request / 1e6; bytes of an event of C coupons = fixed + C × per coupon '
  + '(+ outbox bytes per coupon not yet persisted); events per shard = its memory / bytes per event';

/**
 * The model: a shard runs the gate on one core, so it carries 1e6 / (its Redis µs per call) calls a second; a
 * Cluster of K shards carries K times that when the load is spread over events on every shard, while one event
 * never gets more than one shard's (all its keys share the hash tag {eventId}). An event with C coupons holds
 * fixed + C × perCoupon bytes once persisted, so a shard's memory, not its CPU, bounds how many events it keeps.
 * The api tier scales on its own: 1e6 / (api µs per request) requests per core.
 */
export function capacityModel(inputs: CapacityInputs, shards: number[] = [1, 3, 6, 12], couponsPerEvent: number[] = [1_000, 10_000, 100_000]): CapacityModel {
  const shard = { unbatched: 1e6 / inputs.gateUsPerCallUnbatched, batched: 1e6 / inputs.gateUsPerCallBatched };
  const apiRequestsPerCore = 1e6 / inputs.apiUsPerRequest;
  const bounds = (f: (callsPerSec: number) => number): Bounds => ({ unbatched: f(shard.unbatched), batched: f(shard.batched) });
  return {
    inputs,
    formula: CAPACITY_FORMULA,
    shardCallsPerSec: bounds((calls) => Math.round(calls)),
    apiRequestsPerCore: Math.round(apiRequestsPerCore),
    apiCoresPerShard: bounds((calls) => round(calls / apiRequestsPerCore, 1)),
    couponsPerGiB: Math.round(GIB / inputs.bytesPerCoupon),
    eventsPerGiB: couponsPerEvent.map((c) => ({ couponsPerEvent: c, events: Math.floor(GIB / (inputs.eventFixedBytes + c * inputs.bytesPerCoupon)) })),
    byShards: shards.map((k) => ({
      shards: k,
      callsPerSec: bounds((calls) => Math.round(k * calls)),
      apiCores: bounds((calls) => round((k * calls) / apiRequestsPerCore, 1)),
    })),
  };
}
