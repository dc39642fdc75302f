/** The Cluster capacity bench's arithmetic (bench/cluster/): the model and the gate variants it measures. */
import { gateVariants } from '../../bench/cluster/gate.ts';
import { capacityModel } from '../../bench/cluster/model.ts';

const inputs = {
  gateUsPerCallUnbatched: 25, gateUsPerCallBatched: 12.5, apiUsPerRequest: 100,
  eventFixedBytes: 4_000, bytesPerCoupon: 100, bytesPerCouponInOutbox: 90,
};

test('when one shard costs 25 µs a call one by one and 12.5 µs pipelined, then it carries 40,000 to 80,000 calls/s, and K shards K times that', () => {
  const model = capacityModel(inputs, [1, 3, 12]);
  expect(model.shardCallsPerSec).toEqual({ unbatched: 40_000, batched: 80_000 });
  expect(model.byShards.map((s) => [s.shards, s.callsPerSec])).toEqual([
    [1, { unbatched: 40_000, batched: 80_000 }],
    [3, { unbatched: 120_000, batched: 240_000 }],
    [12, { unbatched: 480_000, batched: 960_000 }],
  ]);
});

test('when the api costs 100 µs a request, then a core carries 10,000 requests/s and a shard takes 4 to 8 api cores to keep busy', () => {
  const model = capacityModel(inputs, [1, 3]);
  expect(model.apiRequestsPerCore).toBe(10_000);
  expect(model.apiCoresPerShard).toEqual({ unbatched: 4, batched: 8 });
  expect(model.byShards[1]!.apiCores).toEqual({ unbatched: 12, batched: 24 });
});

test('when an event is 4,000 B plus 100 B a coupon, then a GiB holds 10,737,418 coupons and events by their size', () => {
  const model = capacityModel(inputs, [1], [0, 1_000, 100_000]);
  expect(model.couponsPerGiB).toBe(10_737_418);
  expect(model.eventsPerGiB).toEqual([
    { couponsPerEvent: 0, events: 268_435 },
    { couponsPerEvent: 1_000, events: 10_324 },
    { couponsPerEvent: 100_000, events: 107 },
  ]);
  expect(model.formula).toMatch(/K × that/);
});

test('when the gate phase has two pipeline depths, then every target runs at both and the 3 shards also on both cores at the first', () => {
  expect(gateVariants({ gatePipelines: [16, 1] }).map((v) => v.label)).toEqual([
    'standalone P16', 'cluster-1 P16', 'cluster-3 P16', 'cluster-3 P16 both cores', 'standalone P1', 'cluster-1 P1', 'cluster-3 P1',
  ]);
});
