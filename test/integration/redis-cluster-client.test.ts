/**
 * The service's Redis Cluster client, closed, must let its process exit. ioredis (6.0.0) re-arms its own slot-map
 * refresh timer when disconnect() meets a refresh in flight, and the timer then keeps the process alive for ever:
 * a CI run's jest process never exited. Here a child process opens the client on a real 1-primary Cluster, the
 * server is paused so that the client's periodic refresh is still waiting when the child disconnects, and the child
 * must then exit by itself.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type LocalRedisCluster, startRedisCluster } from '../../scripts/local-servers/redis-cluster.ts';
import { redisCommand } from '../../scripts/local-servers/redis.ts';
import { waitFor } from '../support/harness.ts';

const CLIENT = fileURLToPath(new URL('../../src/redis/client.ts', import.meta.url));

let dir: string;
let cluster: LocalRedisCluster;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'coupon-cluster-client-'));
  cluster = await startRedisCluster({ dir, primaries: 1 });
}, 60_000);
afterAll(async () => {
  await cluster?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('when a Cluster client is disconnected while its slot-map refresh is in flight, then its process exits by itself', async () => {
  const [host, port] = cluster.nodes[0]!.split(':');
  const child = spawn(process.execPath, ['--input-type=module', '-e', `
    import { createRedis } from ${JSON.stringify(CLIENT)};
    const redis = createRedis({ kind: 'cluster', url: 'redis://${host}:${port}', nodes: [{ host: '${host}', port: ${port} }] });
    redis.on('error', () => {});
    redis.once('ready', () => {
      console.log('ready');
      // The refresh of the first second is waiting on the paused server by now.
      setTimeout(() => { redis.disconnect(); console.log('disconnected'); }, 1_500);
    });
  `], { stdio: ['ignore', 'pipe', 'inherit'] });
  const exited = once(child, 'exit');
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  try {
    const printed = (line: string) => waitFor(() => output.split('\n').includes(line) || undefined, { timeoutMs: 10_000, intervalMs: 20, what: `the child to print "${line}"` });
    await printed('ready');
    await redisCommand(Number(port), 'CLIENT', 'PAUSE', '2500', 'ALL');
    await printed('disconnected');
    const exitedInTime = await Promise.race([exited.then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 8_000))]);
    expect({ exitedWithin8sOfDisconnect: exitedInTime }).toEqual({ exitedWithin8sOfDisconnect: true });
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await exited;
  }
}, 40_000);
