/**
 * `npm run stack`: the whole service on this machine. Starts throwaway Redis, MariaDB and PostgreSQL under
 * .stack/dev (or reuses servers reachable at REDIS_URL / MYSQL_URL / POSTGRES_URL), migrates, runs one api and
 * one worker in the foreground, and prints the URL and admin token. Ctrl-C stops everything it started.
 * `npm run stack -- --cluster` runs them on a Redis Cluster instead: the one at REDIS_CLUSTER_NODES, or a fresh
 * local one of 3 primaries under .stack/dev/redis-cluster (the events in MySQL are restored into it at start).
 * First it installs the Debian packages of the servers it must start when they are missing (as root with apt;
 * scripts/setup/prerequisites.ts), or stops with the one line that says how.
 * Once up it writes its URLs and admin token to .stack/dev/stack.json (mode 0600; removed at stop), where
 * `npm run console` finds them (scripts/console/stack-state.ts).
 */
import { randomBytes } from 'node:crypto';
import { readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { loadConfig } from '../src/config.ts';
import { migrateUp } from '../src/db/migrate.ts';
import { removeStackState, stackStateFile, writeStackState } from './console/stack-state.ts';
import { type LocalStack, startLocalStack, stopLeftoverServer } from './local-servers/index.ts';
import { type LocalRedisCluster, startRedisCluster } from './local-servers/redis-cluster.ts';
import { startApi, startWorker, type ServiceProcess } from './services.ts';
import { ensureOrExit, serversToStart } from './setup/prerequisites.ts';

const root = fileURLToPath(new URL('..', import.meta.url));
const apiPort = Number(process.env.PORT ?? 8080);
const workerPort = Number(process.env.WORKER_PORT ?? 8081);
/** the api's /healthz, /readyz and /metrics (OPS_PORT): its PORT serves /v1 only */
const apiOpsPort = Number(process.env.OPS_PORT ?? 9464);
const adminToken = process.env.ADMIN_TOKEN ?? randomBytes(18).toString('base64url');
const { values: args } = parseArgs({ options: { cluster: { type: 'boolean', default: false } } });

const stateFile = stackStateFile(root);
const services: ServiceProcess[] = [];
let stack: LocalStack | undefined;
let cluster: LocalRedisCluster | undefined;
let stopping = false;

async function stopAll(code: number): Promise<never> {
  if (stopping) process.exit(code);
  stopping = true;
  console.log('\nstopping api, worker and the servers this stack started...');
  removeStackState(stateFile);
  await Promise.all(services.map((service) => service.stop('SIGTERM')));
  await cluster?.stop();
  await stack?.stop();
  process.exit(code);
}
// Before anything starts: a Ctrl-C while MariaDB initialises must still stop what was started.
process.on('SIGINT', () => void stopAll(0));
process.on('SIGTERM', () => void stopAll(0));
await ensureOrExit(await serversToStart(), { root, command: 'npm run stack' });
stack = await startLocalStack({ dir: `${root}.stack/dev` }).catch(async (error: unknown): Promise<never> => {
  // The server's own words (and its log's tail), not a stack trace.
  console.error(`npm run stack: ${error instanceof Error ? error.message : String(error)}`);
  return stopAll(1);
});

/**
 * A fresh local Cluster (its node tables name ports picked at start, so a folder from an earlier run is not
 * reused: any server left running there is stopped first, and the data comes back from MySQL).
 */
async function startDevCluster(): Promise<LocalRedisCluster> {
  const dir = `${root}.stack/dev/redis-cluster`;
  const nodes = await readdir(dir).catch(() => []);
  for (const node of nodes) await stopLeftoverServer(join(dir, node));
  await rm(dir, { recursive: true, force: true });
  return startRedisCluster({ dir });
}

let redisTarget: { REDIS_URL: string; REDIS_CLUSTER_NODES?: string } = { REDIS_URL: stack.redisUrl };
try {
  if (args.cluster) {
    const given = process.env.REDIS_CLUSTER_NODES;
    if (!given) cluster = await startDevCluster();
    const nodes = given ?? cluster!.nodes.join(',');
    redisTarget = { REDIS_URL: given ? stack.redisUrl : `redis://${cluster!.nodes[0]}`, REDIS_CLUSTER_NODES: nodes };
  }
  const applied = await migrateUp(stack.mysqlUrl);
  console.log(applied.length ? `migrated: ${applied.join(', ')}` : 'database is up to date');
  const env = {
    ...redisTarget, MYSQL_URL: stack.mysqlUrl, POSTGRES_URL: stack.postgresUrl, ADMIN_TOKEN: adminToken,
    SHUTDOWN_DRAIN_MS: process.env.SHUTDOWN_DRAIN_MS ?? '0',
  };
  services.push(await startWorker({ port: workerPort, env, inheritOutput: true }));
  services.push(await startApi({ port: apiPort, opsPort: apiOpsPort, env, inheritOutput: true }));
} catch (error) {
  console.error(error instanceof Error ? error.message : error);
  await stopAll(1);
}

writeStackState(stateFile, {
  pid: process.pid, apiUrl: `http://127.0.0.1:${apiPort}`, apiMetricsUrl: `http://127.0.0.1:${apiOpsPort}`,
  workerUrl: `http://127.0.0.1:${workerPort}`, adminToken,
  mysqlUrl: stack.mysqlUrl, postgresUrl: stack.postgresUrl, persistRatePerSec: loadConfig(process.env, 'worker').persistRatePerSec,
});
console.log(`
coupon stack is up
  api          http://127.0.0.1:${apiPort}  (/v1; /metrics, /readyz, /healthz on http://127.0.0.1:${apiOpsPort})
  worker       http://127.0.0.1:${workerPort}/metrics
  admin token  ${adminToken}   (in ${stateFile} for npm run console)
  redis        ${redisTarget.REDIS_CLUSTER_NODES ? `Cluster ${redisTarget.REDIS_CLUSTER_NODES}` : stack.redisUrl}
  mysql        ${stack.mysqlUrl}
  postgres     ${stack.postgresUrl}

try:
  curl -s -X POST http://127.0.0.1:${apiPort}/v1/events -H 'authorization: Bearer ${adminToken}' \\
    -H 'content-type: application/json' -d '{"id":"summer-2026","name":"Summer sale","totalQuantity":100}'
  curl -s -X POST http://127.0.0.1:${apiPort}/v1/events/summer-2026/apply -H 'content-type: application/json' -d '{"userId":"alice"}'

Ctrl-C stops everything this command started.`);

for (const service of services) {
  void service.exited.then(({ code, signal }) => {
    if (!stopping) {
      console.error(`${service.kind} exited (code ${code}, signal ${signal}); stopping the stack`);
      void stopAll(1);
    }
  });
}
