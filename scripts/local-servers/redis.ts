/** A throwaway Redis server, optionally a replica of another, and the bare RESP client its readiness checks use. */
import { writeFile } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { join } from 'node:path';
import { HOST } from './addresses.ts';
import type { ServerProcess } from './leftovers.ts';
import { type LocalServer, serverPlace, startManagedServer } from './managed-server.ts';
import { binary } from './processes.ts';

export const REDIS_PROCESS: ServerProcess = { pidFile: 'redis.pid', processName: 'redis-server', stopSignal: 'SIGTERM' };

/**
 * A Redis server. With `replicaOf` it is a replica of the server at that address (which may be a proxy in front
 * of the primary), announced as 127.0.0.1:<port> so a Sentinel can find and promote it; start() then resolves
 * only once the replica has completed its sync with the primary, which must be up.
 *
 * Its settings are in <dir>/redis.conf, not on its command line: a Sentinel that changes a node's role (promotes
 * it, or makes an old primary a replica) writes the role into that file (CONFIG REWRITE), so a node restarted
 * later comes back in the role it last had, as a deployed one does. Started with `--replicaof` on its command
 * line, a promoted replica killed and restarted within Sentinel's down-after came back as the replica of its own
 * replica: two replicas of each other, no primary, a chaos schedule that could not heal.
 */
export async function startRedis(opts: {
  dir: string;
  port?: number;
  appendonly?: boolean;
  replicaOf?: { host: string; port: number };
  /** a Redis Cluster node (cluster-enabled, its node table in <dir>/nodes.conf); startRedisCluster joins them */
  cluster?: boolean;
}): Promise<LocalServer> {
  const { dir, port } = await serverPlace(opts);
  const persistence = opts.appendonly
    ? ['--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '']
    : ['--save', '', '--appendonly', 'no'];
  // Any server may become a primary with a replica (or a promoted replica itself): ship the first sync at once
  // instead of waiting the default 5 s for more replicas to join it.
  const replication = ['--repl-diskless-sync-delay', '0'];
  if (opts.replicaOf) {
    replication.push(
      '--replicaof', opts.replicaOf.host, String(opts.replicaOf.port), '--replica-announce-ip', HOST,
      '--replica-announce-port', String(port), '--replica-priority', '100',
    );
  }
  const cluster = opts.cluster
    // As k8s/deps/redis-cluster/ runs it: while one shard has no primary, the other shards keep answering.
    ? ['--cluster-enabled', 'yes', '--cluster-config-file', join(dir, 'nodes.conf'), '--cluster-node-timeout', '2000',
      '--cluster-require-full-coverage', 'no', '--cluster-announce-ip', HOST]
    : [];
  const config = join(dir, 'redis.conf');
  await writeFile(config, configLines([
    '--port', String(port), '--bind', HOST, '--daemonize', 'no', '--pidfile', join(dir, REDIS_PROCESS.pidFile),
    '--dir', dir, '--logfile', '', ...persistence, ...replication, ...cluster,
  ]));
  return startManagedServer({
    kind: 'redis',
    url: `redis://${HOST}:${port}`,
    port,
    dir,
    logFile: join(dir, 'redis.log'),
    process: REDIS_PROCESS,
    command: binary('redis-server'),
    args: [config],
    // A Cluster node's replica waits for nobody (its primary may be the node that is down); any other replica,
    // first started so or made one since, is ready once it has synced.
    probe: opts.cluster ? () => redisPing(port) : () => redisReady(port),
  });
}

/** `--name value...` arguments as redis.conf lines (`name value...`, an empty value as ""). */
function configLines(args: string[]): string {
  const lines: string[][] = [];
  for (const arg of args) {
    if (arg.startsWith('--')) lines.push([arg.slice(2)]);
    else lines.at(-1)!.push(arg === '' ? '""' : arg);
  }
  return `${lines.map((line) => line.join(' ')).join('\n')}\n`;
}

export function redisPing(port: number): Promise<void> {
  return new Promise((resolvePing, reject) => {
    const socket = createConnection({ host: HOST, port });
    let reply = '';
    socket.setTimeout(1000, () => {
      socket.destroy();
      reject(new Error('PING timed out'));
    });
    socket.once('error', reject);
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString();
      if (!reply.includes('\r\n')) return;
      socket.destroy();
      // While loading its append-only file Redis answers -LOADING: not ready yet.
      if (reply.startsWith('+PONG')) resolvePing();
      else reject(new Error(reply.trim()));
    });
  });
}

/** One command to the Redis (or Sentinel) on port; resolves with the text of a simple or bulk string reply. */
export function redisCommand(port: number, ...args: string[]): Promise<string> {
  return new Promise((resolveReply, reject) => {
    const socket = createConnection({ host: HOST, port });
    let reply = Buffer.alloc(0);
    socket.setTimeout(1000, () => {
      socket.destroy();
      reject(new Error(`${args[0]} timed out`));
    });
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.write(`*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join('')}`);
    });
    socket.on('data', (chunk: Buffer) => {
      reply = Buffer.concat([reply, chunk]);
      const lineEnd = reply.indexOf('\r\n');
      if (lineEnd < 0) return;
      const head = reply.subarray(0, lineEnd).toString();
      if (head.startsWith('$')) {
        const length = Number(head.slice(1));
        if (length >= 0 && reply.length < lineEnd + 2 + length + 2) return;
        socket.destroy();
        resolveReply(length < 0 ? '' : reply.subarray(lineEnd + 2, lineEnd + 2 + length).toString());
      } else {
        socket.destroy();
        if (head.startsWith('+') || head.startsWith(':')) resolveReply(head.slice(1));
        else if (head.startsWith('*')) resolveReply(reply.subarray(lineEnd + 2).toString());
        else reject(new Error(head));
      }
    });
  });
}

/** A primary is ready once it answers; a replica once it has loaded its primary's data (the link is up after the first sync). */
async function redisReady(port: number): Promise<void> {
  await redisPing(port);
  const info = await redisCommand(port, 'INFO', 'replication');
  if (/^role:slave\r?$/m.test(info) && !/^master_link_status:up\r?$/m.test(info)) {
    throw new Error(`replica not in sync with its primary yet (${/^master_link_status:.*$/m.exec(info)?.[0]?.trim() ?? 'no link'})`);
  }
}
