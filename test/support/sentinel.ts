/** What a Redis Sentinel says about the primary it watches and that primary's replicas, for the failover tests. */
import { Redis } from 'ioredis';
import type { LocalServer } from '../../scripts/local-servers/index.ts';

/** A plain client on a Sentinel, for asking it who the primary is and what it knows of the replicas. */
export function sentinelClient(sentinel: LocalServer): Redis {
  const client = new Redis(sentinel.url, { maxRetriesPerRequest: 1, retryStrategy: () => 200 });
  client.on('error', () => undefined);
  return client;
}

/** The port of the primary the Sentinel names for `masterName`, if it names one. */
export async function masterPort(sentinel: Redis, masterName: string): Promise<number | undefined> {
  const reply = (await sentinel.call('SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName)) as [string, string] | null;
  return reply ? Number(reply[1]) : undefined;
}

/** The replicas a Sentinel knows, as field maps (ip, port, flags, master-link-status, ...). */
export async function sentinelReplicas(sentinel: Redis, masterName: string): Promise<Array<Record<string, string>>> {
  const reply = (await sentinel.call('SENTINEL', 'REPLICAS', masterName)) as string[][];
  return reply.map((fields) => Object.fromEntries(fields.flatMap((value, i) => (i % 2 === 0 ? [[value, fields[i + 1]!]] : []))));
}

/** Whether the replica on `port` is among them, linked to its primary. */
export const replicaHealthy = (replicas: Array<Record<string, string>>, port: number): boolean =>
  replicas.some((r) => Number(r.port) === port && r.flags === 'slave' && r['master-link-status'] === 'ok');
