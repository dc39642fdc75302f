/** A throwaway Redis Sentinel that watches one primary and promotes its replica when the primary goes. */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { HOST } from './addresses.ts';
import { type ServerProcess, claimDir, endLeftover } from './leftovers.ts';
import { type LocalServer, serverPlace, startManagedServer } from './managed-server.ts';
import { binary } from './processes.ts';
import { redisCommand, redisPing } from './redis.ts';

export const SENTINEL_PROCESS: ServerProcess = { pidFile: 'sentinel.pid', processName: 'redis-server', stopSignal: 'SIGTERM' };

/**
 * A Redis Sentinel watching the primary at `master` under `masterName`; a replica it learns of from the primary
 * is promoted once the primary has been unreachable for `downAfterMs` (quorum 1 by default: this Sentinel alone
 * decides). Each call writes a fresh `<dir>/sentinel.conf`; Sentinel rewrites that file as it learns (replicas,
 * epochs, a failover), and start() after a stop() reuses it as rewritten, as a restarted Sentinel would.
 */
export async function startRedisSentinel(opts: {
  dir: string;
  port?: number;
  masterName: string;
  master: { host: string; port: number };
  quorum?: number;
  downAfterMs?: number;
  failoverTimeoutMs?: number;
}): Promise<LocalServer> {
  if (!/^[A-Za-z0-9._-]+$/.test(opts.masterName)) throw new Error(`redis-sentinel: unusable master name "${opts.masterName}"`);
  const { dir, port } = await serverPlace(opts);
  const configFile = join(dir, 'sentinel.conf');
  // A Sentinel left running on this folder by a dead process would rewrite the file under us: end it first.
  await claimDir(dir, 'redis-sentinel');
  await endLeftover(dir, SENTINEL_PROCESS);
  const name = opts.masterName;
  await writeFile(configFile, [
    `port ${port}`,
    `bind ${HOST}`,
    'daemonize no',
    `pidfile "${join(dir, SENTINEL_PROCESS.pidFile)}"`,
    'logfile ""',
    `dir "${dir}"`,
    // Every address here is an IP on loopback; announce this Sentinel as such so several can find one another.
    'sentinel resolve-hostnames no',
    `sentinel announce-ip ${HOST}`,
    `sentinel announce-port ${port}`,
    `sentinel monitor ${name} ${opts.master.host} ${opts.master.port} ${opts.quorum ?? 1}`,
    `sentinel down-after-milliseconds ${name} ${opts.downAfterMs ?? 1000}`,
    `sentinel failover-timeout ${name} ${opts.failoverTimeoutMs ?? 5000}`,
    `sentinel parallel-syncs ${name} 1`,
    '',
  ].join('\n'));
  return startManagedServer({
    kind: 'redis-sentinel',
    url: `redis://${HOST}:${port}`,
    port,
    dir,
    logFile: join(dir, 'sentinel.log'),
    process: SENTINEL_PROCESS,
    command: binary('redis-server'),
    args: [configFile, '--sentinel'],
    probe: () => sentinelKnowsMaster(port, name),
  });
}

/** A Sentinel is ready once it answers for the master it was told to monitor. */
async function sentinelKnowsMaster(port: number, masterName: string): Promise<void> {
  await redisPing(port);
  const reply = await redisCommand(port, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName);
  if (!reply.includes('$')) throw new Error(`Sentinel does not know master ${masterName} yet`);
}
