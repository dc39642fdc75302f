/**
 * WIP for issue 10 (Redis Cluster): the local Cluster the tests will run on, and the gate script running on it
 * per event slot. The service itself does not speak Cluster yet (no REDIS_CLUSTER_NODES, a global registry key).
 */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Cluster } from 'ioredis';
import { type LocalRedisCluster, startRedisCluster } from '../../scripts/local-servers/redis-cluster.ts';
import { eventKeys } from '../../src/redis/keys.ts';

const GATE_LUA = readFileSync(new URL('../../src/redis/gate.lua', import.meta.url), 'utf8');

describe('a local Redis Cluster (issue 10, groundwork)', () => {
  let dir: string;
  let cluster: LocalRedisCluster;
  let client: Cluster & { gate(...args: string[]): Promise<[number, number, number]> };

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'coupon-redis-cluster-'));
    cluster = await startRedisCluster({ dir });
    client = new Cluster(cluster.nodes.map((node) => ({ host: node.split(':')[0]!, port: Number(node.split(':')[1]) }))) as typeof client;
    client.defineCommand('gate', { numberOfKeys: 4, lua: GATE_LUA });
  }, 60_000);
  afterAll(async () => {
    client?.disconnect();
    await cluster?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  test('when 9 events are gated on a 3-primary Cluster, then they spread over every node and each issues exactly N', async () => {
    const owners = new Set<string>();
    for (let i = 0; i < 9; i += 1) {
      const eventId = `cluster-${i}`;
      const keys = eventKeys(eventId);
      await client.hset(keys.meta, 'total', '5', 'startsAt', '0');
      const answers = await Promise.all(Array.from({ length: 8 }, (_, u) =>
        client.gate(keys.meta, keys.issued, keys.users, keys.outbox, eventId, `user-${u}`, `request-${u}`)));
      expect(answers.filter(([code]) => code === 0).map(([, sequence]) => sequence).sort()).toEqual([1, 2, 3, 4, 5]);
      expect(answers.filter(([code]) => code === 2)).toHaveLength(3);
      expect(await client.xlen(keys.outbox)).toBe(5);
      const slot = Number(await client.cluster('KEYSLOT', keys.meta));
      owners.add(String(client.slots[slot]?.[0]));
    }
    expect(owners.size).toBe(3);
  });
});
