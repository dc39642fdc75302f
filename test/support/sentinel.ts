/** What a Redis Sentinel says about the primary it watches and that primary's replicas, for the failover tests. */
import { randomBytes } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Redis } from 'ioredis';
import type { LocalServer } from '../../scripts/local-servers/index.ts';
import type { TcpProxy } from './tcp-proxy.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

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

/**
 * The servers a Sentinel fault test starts beside its stack (a replica, a Sentinel, a node restarted on the old
 * primary's port), in a folder of its own, with the clients and the TCP proxy it opens on them. Call it in the
 * describe block before the tests: its afterAll runs before describeFault stops the stack's servers. Sentinel stops
 * first, so it reconfigures nothing while the rest goes; then the servers, then the proxy, then the folder.
 */
export interface ExtraServers {
  /** the folder for their data (set once beforeAll has run) */
  readonly dir: string;
  /** clients to disconnect at the end */
  readonly clients: Redis[];
  /** the proxy a replica replicates through, closed at the end */
  proxy: TcpProxy | undefined;
  track(server: LocalServer): LocalServer;
}

export function useExtraServers(name: string): ExtraServers {
  const servers: LocalServer[] = [];
  let dir = '';
  const extra: ExtraServers = {
    get dir() {
      return dir;
    },
    clients: [],
    proxy: undefined,
    track(server) {
      servers.push(server);
      return server;
    },
  };
  beforeAll(async () => {
    dir = join(ROOT, '.stack', 'faults', `${name}-extra-${process.pid}-${randomBytes(3).toString('hex')}`);
    await mkdir(dir, { recursive: true });
  });
  afterAll(async () => {
    for (const client of extra.clients) client.disconnect();
    for (const server of servers.filter((s) => s.kind === 'redis-sentinel')) await server.stop().catch(() => undefined);
    await Promise.allSettled(servers.filter((s) => s.kind !== 'redis-sentinel').map((server) => server.stop()));
    await extra.proxy?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  }, 120_000);
  return extra;
}
