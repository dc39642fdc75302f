import { createServer } from 'node:http';
import { loadConfig } from '../config.ts';
import { CouponStore } from '../db/store.ts';
import { createOrm } from '../db/orm.ts';
import { EventService } from '../event-service.ts';
import { createLogger, describeRedis, redactUrl } from '../logger.ts';
import { createRegistry } from '../metrics.ts';
import { CheckedServer } from '../checked-server.ts';
import { GateStateKeeper } from '../gate-state.ts';
import { createRedis } from '../redis/client.ts';
import { ReplicaAcks } from '../redis/replica-acks.ts';
import { sleep } from '../loop.ts';
import { closeAll, closeServer, onTermination } from '../shutdown.ts';
import { createApp } from './app.ts';
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

// The gate enforces REDIS_COMMAND_TIMEOUT_MS itself; the client's own timeout is a backstop for the other commands.
const redis = createRedis(config.redis, {
  failFast: true, autoPipelining: true, connectionName: 'coupon-api',
  commandTimeoutMs: 2 * config.redisCommandTimeoutMs + (config.gateMinReplicas > 0 ? config.gateReplicaTimeoutMs : 0),
  socketTimeoutMs: config.redisSocketTimeoutMs,
});
const subscriber = createRedis(config.redis, { connectionName: 'coupon-api-sub', socketTimeoutMs: config.redisSocketTimeoutMs });
for (const client of [redis, subscriber]) client.on('error', (error: Error) => logger.debug({ err: error }, 'redis connection error'));
const orm = await createOrm(config.mysqlUrl);
const store = new CouponStore(orm);
const soldOut = new SoldOutFlags(config.soldOutCacheMs);
const keeper = new GateStateKeeper(redis, store, logger);
const events = new EventService(redis, store, keeper);
// A change made through any api drops what the reads here share about that event.
subscriber.on('message', (_channel: string, eventId: string) => events.forget(eventId));
const redisServer = new CheckedServer(redis, keeper, logger);
let draining = false;

const app = createApp({
  redis,
  events,
  soldOut,
  metrics: new ApiMetrics(createRegistry('api')),
  logger,
  adminToken: config.adminToken,
  identity: createIdentity(config.auth),
  isDraining: () => draining,
  gateTimeoutMs: config.redisCommandTimeoutMs,
  server: redisServer,
  ...(config.gateMinReplicas > 0 && { replicas: new ReplicaAcks(redis, config.gateMinReplicas, config.gateReplicaTimeoutMs, (nodeId) => redisServer.nameOf(nodeId)) }),
});
app.on('error', (error: Error) => logger.error({ err: error }, 'koa error'));

redisServer.start();
soldOut.start(subscriber).catch((error: unknown) => logger.warn({ err: error }, 'sold-out invalidation not subscribed yet'));
const handle = app.callback();
const server = createServer({ keepAliveTimeout: 65_000 }, (req, res) => {
  // While draining, every answer closes its connection: no client sends its next request on a kept-alive
  // socket that the shutdown is about to close under it.
  if (draining) res.setHeader('connection', 'close');
  return handle(req, res);
});
server.listen(config.port, () => {
  logger.info({ port: config.port, redis: describeRedis(config.redis), mysql: redactUrl(config.mysqlUrl) }, 'api listening');
});

onTermination(logger, async () => {
  draining = true;
  // Let load balancers see /readyz fail before the listener goes away.
  await sleep(config.shutdownDrainMs);
  await closeServer(server, 10_000);
  await closeAll(logger, [
    ['server check', () => redisServer.stop()],
    ['subscriber', () => soldOut.close()],
    ['redis', () => redis.quit()],
    ['mysql', () => orm.close(true)],
  ]);
});
