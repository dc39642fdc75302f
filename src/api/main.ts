import { createServer } from 'node:http';
import { getHeapStatistics } from 'node:v8';
import { loadConfig } from '../config.ts';
import { CouponStore } from '../db/store.ts';
import { createOrm } from '../db/orm.ts';
import { EventService } from '../event-service.ts';
import { createLogger, describeRedis, redactUrl } from '../logger.ts';
import { createRegistry } from '../metrics.ts';
import { CheckedServer } from '../checked-server.ts';
import { GateStateKeeper } from '../gate-state.ts';
import { createRedis } from '../redis/client.ts';
import { EventReads } from '../event-reads.ts';
import { ReplicaAcks } from '../redis/replica-acks.ts';
import { sleep } from '../loop.ts';
import { closeAll, closeServer, onTermination } from '../shutdown.ts';
import { Admission, LoopDelayMonitor } from './admission.ts';
import { createApp, createOpsApp } from './app.ts';
import { CappedListener } from './listener.ts';
import { createIdentity } from './identity.ts';
import { ApiMetrics } from './metrics.ts';
import { SoldOutFlags } from './sold-out.ts';

/** The api's composition root: read config, build the parts, listen, and drain on SIGTERM. */
const config = loadConfig(process.env, 'api');
const logger = createLogger(config.logLevel, 'coupon-api');
if (!config.auth) {
  logger.warn('AUTH_JWT_SECRET and AUTH_JWKS_URL are unset: the userId in the request body is trusted as the user');
}
if (!config.adminToken) logger.warn('ADMIN_TOKEN is unset: admin routes answer 401');
// Node sizes its heap from the container's memory limit (cgroup v1 or v2) when it starts in it: about half of it.
// A heap sized for more than the container (a --max-old-space-size set too high) would be OOM-killed before it
// collects: say so at start, when it can still be fixed.
const containerBytes = process.constrainedMemory();
const heapBytes = getHeapStatistics().heap_size_limit;
if (containerBytes > 0 && containerBytes < Number.MAX_SAFE_INTEGER && heapBytes > 0.75 * containerBytes) {
  logger.warn({ heapLimitMiB: Math.round(heapBytes / 2 ** 20), containerLimitMiB: Math.round(containerBytes / 2 ** 20) },
    'the V8 heap limit is above 75% of the container memory limit: sockets and buffers outside the heap may push the process past it (check NODE_OPTIONS)');
}

// The gate enforces REDIS_COMMAND_TIMEOUT_MS itself; the client's own timeout is a backstop for the other commands.
const redis = createRedis(config.redis, {
  failFast: true, autoPipelining: true, connectionName: 'coupon-api',
  commandTimeoutMs: 2 * config.redisCommandTimeoutMs + (config.gateMinReplicas > 0 ? config.gateReplicaTimeoutMs : 0),
  socketTimeoutMs: config.redisSocketTimeoutMs,
});
const subscriber = createRedis(config.redis, { connectionName: 'coupon-api-sub', socketTimeoutMs: config.redisSocketTimeoutMs });
// The backlog gauges' reads when /metrics is scraped (several commands per live event): on a connection of their
// own, so that no gate call waits behind them (on the shared one, a sold-out burst on a fresh Redis Cluster got a
// 503 in a CI trial while Prometheus scraped every 5 s).
const metricsRedis = createRedis(config.redis, {
  failFast: true, connectionName: 'coupon-api-metrics', commandTimeoutMs: 2_000, socketTimeoutMs: config.redisSocketTimeoutMs,
});
for (const client of [redis, subscriber, metricsRedis]) client.on('error', (error: Error) => logger.debug({ err: error }, 'redis connection error'));
const orm = await createOrm(config.mysqlUrl);
const store = new CouponStore(orm);
const soldOut = new SoldOutFlags(config.soldOutCacheMs);
const keeper = new GateStateKeeper(redis, store, logger);
const redisServer = new CheckedServer(redis, keeper, logger);
// GATE_MIN_REPLICAS: a 202, and a PATCH's 200, only once that many replicas hold the write.
const replicas = config.gateMinReplicas > 0
  ? new ReplicaAcks(redis, config.gateMinReplicas, config.gateReplicaTimeoutMs, (nodeId) => redisServer.nameOf(nodeId)) : undefined;
const events = new EventService(redis, store, keeper, { replicas });
// A change made through any api drops what the reads here share about that event.
subscriber.on('message', (_channel: string, eventId: string) => events.forget(eventId));
let draining = false;
const admission = new Admission({
  maxInFlight: config.apiMaxInFlight, loopDelayTargetMs: config.apiLoopDelayTargetMs,
  maxQueued: config.apiMaxQueued, queueTimeoutMs: config.apiQueueTimeoutMs,
});
const loopDelay = new LoopDelayMonitor(admission);
const metrics = new ApiMetrics(createRegistry('api'));

const app = createApp({
  redis,
  events,
  soldOut,
  metrics,
  admission,
  logger,
  adminToken: config.adminToken,
  identity: createIdentity(config.auth),
  isDraining: () => draining,
  gateTimeoutMs: config.redisCommandTimeoutMs,
  gateBatch: config.gateBatch === 'on',
  server: redisServer,
  ...(replicas && { replicas }),
});
app.on('error', (error: Error) => logger.error({ err: error }, 'koa error'));

redisServer.start();
loopDelay.start();
soldOut.start(subscriber).catch((error: unknown) => logger.warn({ err: error }, 'sold-out invalidation not subscribed yet'));
const handle = app.callback();
const server = createServer({
  // Longer than a load balancer's idle timeout (60 s on most), so that it, not the api, closes an idle connection.
  keepAliveTimeout: 65_000,
  // A client gets this long to send its headers, and its whole request: a slow one cannot hold memory for minutes.
  headersTimeout: 10_000, requestTimeout: 15_000,
}, (req, res) => {
  // While draining, every answer closes its connection: no client sends its next request on a kept-alive
  // socket that the shutdown is about to close under it.
  if (draining) res.setHeader('connection', 'close');
  return handle(req, res);
});
const listener = new CappedListener(server, config.apiMaxConnections);
metrics.observeLoad({
  limit: () => admission.limit, inFlight: () => admission.inFlight, queued: () => admission.queued,
  connections: () => listener.connections, refusedConnections: () => listener.refused,
});
const backlogReads = new EventReads(metricsRedis, store);
metrics.observeBacklogs(() => backlogReads.backlogs(), (error) => logger.warn({ err: error }, 'backlog gauges not read'));
await listener.listen(config.port);
// Probes and metrics on a port of their own (OPS_PORT), which no Ingress routes to; opened once the public port
// listens (a 200 from /readyz means it can take traffic), closed after it (while draining /readyz says so).
const opsServer = createServer(createOpsApp({ redis, metrics, logger, isDraining: () => draining, server: redisServer }).callback());
await new Promise<void>((resolve, reject) => {
  opsServer.once('error', reject);
  opsServer.listen(config.opsPort, () => resolve());
});
logger.info({ port: config.port, opsPort: config.opsPort, redis: describeRedis(config.redis), mysql: redactUrl(config.mysqlUrl) }, 'api listening');

onTermination(logger, async () => {
  draining = true;
  // Let load balancers see /readyz fail before the listener goes away.
  await sleep(config.shutdownDrainMs);
  await listener.close(10_000);
  await closeServer(opsServer, 1_000);
  loopDelay.close();
  admission.close();
  await closeAll(logger, [
    ['server check', () => redisServer.stop()],
    ['subscriber', () => soldOut.close()],
    ['redis', () => Promise.all([redis.quit(), metricsRedis.quit()])],
    ['mysql', () => orm.close(true)],
  ]);
});
