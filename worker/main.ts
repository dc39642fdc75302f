import { createServer } from 'node:http';
import { loadConfig } from '../src/config.ts';
import { createLogger, describeRedis, redactUrl } from '../src/logger.ts';
import { closeServer, onTermination } from '../src/shutdown.ts';
import { createWorker } from './worker.ts';

const config = loadConfig(process.env, 'worker');
const logger = createLogger(config.logLevel, 'coupon-worker');
const worker = await createWorker(config, logger);

/** /healthz, /readyz and /metrics on the worker's own port. */
const server = createServer(async (req, res) => {
  const reply = (status: number, body: unknown, type = 'application/json') => {
    res.writeHead(status, { 'content-type': type });
    res.end(typeof body === 'string' ? body : JSON.stringify(body));
  };
  try {
    if (req.method !== 'GET') return reply(405, { error: 'method_not_allowed', message: `${req.method} is not allowed` });
    if (req.url === '/healthz') return reply(200, { status: 'ok' });
    if (req.url === '/readyz') {
      const state = await worker.ready();
      return reply(state.ready ? 200 : 503, state);
    }
    if (req.url === '/metrics') return reply(200, await worker.metrics.registry.metrics(), worker.metrics.registry.contentType);
    return reply(404, { error: 'not_found', message: `no route for ${req.url}` });
  } catch (error) {
    logger.error({ err: error }, 'worker http request failed');
    return reply(500, { error: 'internal_error', message: 'internal error' });
  }
});

worker.start();
server.listen(config.port, () => {
  logger.info({
    port: config.port, consumer: worker.consumerName, ratePerSec: config.persistRatePerSec, batchSize: config.persistBatchSize,
    redis: describeRedis(config.redis), mysql: redactUrl(config.mysqlUrl), postgres: redactUrl(config.postgresUrl),
  }, 'worker started');
});

onTermination(logger, async () => {
  await worker.stop();
  await closeServer(server, 2_000);
});
