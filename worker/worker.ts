import { hostname } from 'node:os';
import type { Logger } from 'pino';
import type { Config } from '../src/config.ts';
import { createOrm } from '../src/db/orm.ts';
import { CouponStore } from '../src/db/store.ts';
import { GateStateKeeper } from '../src/gate-state.ts';
import { createBoss } from '../src/jobs/queues.ts';
import { createRegistry } from '../src/metrics.ts';
import { createRedis } from '../src/redis/client.ts';
import { sleep } from '../src/loop.ts';
import { closeAll } from '../src/shutdown.ts';
import { OutboxConsumer } from './consumer.ts';
import { EventArchiver } from './archiver.ts';
import { JobQueues } from './job-queues.ts';
import { Maintenance } from './maintenance.ts';
import { WorkerMetrics } from './metrics.ts';
import { Outbox } from './outbox.ts';
import { OutboxAdmin } from './outbox-admin.ts';
import { Persister } from './persister.ts';
import { inClusterAutoscaler, PresaleScaler } from './presale.ts';
import { Reconciler } from './reconciler.ts';

/** how long one XREADGROUP waits for new entries */
const OUTBOX_BLOCK_MS = 1_000;

export type Worker = Awaited<ReturnType<typeof createWorker>>;

/** The worker's composition root: every part built with plain constructors, started and closed in order. */
export async function createWorker(config: Config, logger: Logger) {
  // One connection for the consumer loop (its XREADGROUP blocks up to OUTBOX_BLOCK_MS), one for everything else.
  // On a Cluster it reads each stream alone (no blocking read across slots): those reads go out auto-pipelined,
  // one write per node.
  // No command may wait for ever: ioredis keeps a command queued for a node that went away until that node's
  // connection is ready again, and a Cluster client that drops the node from its map (its replica promoted) stops
  // reconnecting it without failing the queue (ioredis 6.0.0). A worker whose read waited on such a queue stopped
  // persisting altogether (reliability.md, scenario 16). The command timeout fails it instead; the loop backs off
  // and reads again from the node that owns the stream now.
  const loopRedis = createRedis(config.redis, {
    connectionName: 'coupon-worker-loop', autoPipelining: config.redis.kind === 'cluster',
    socketTimeoutMs: OUTBOX_BLOCK_MS + config.redisSocketTimeoutMs, commandTimeoutMs: OUTBOX_BLOCK_MS + config.redisSocketTimeoutMs,
  });
  const redis = createRedis(config.redis, {
    connectionName: 'coupon-worker', socketTimeoutMs: config.redisSocketTimeoutMs, commandTimeoutMs: config.redisSocketTimeoutMs,
  });
  for (const client of [loopRedis, redis]) client.on('error', (error: Error) => logger.debug({ err: error }, 'redis connection error'));
  const orm = await createOrm(config.mysqlUrl);
  const store = new CouponStore(orm);
  const metrics = new WorkerMetrics(createRegistry('worker'));
  const consumerName = `${hostname()}-${process.pid}`;
  const outbox = new Outbox(loopRedis, consumerName);
  // The same streams seen from the other connection, for the reconciler and housekeeping.
  const adminOutbox = new OutboxAdmin(redis, consumerName);
  const keeper = new GateStateKeeper(redis, store, logger);
  const persister = new Persister({
    redis, store, metrics, logger, keeper, ratePerSec: config.persistRatePerSec, batchSize: config.persistBatchSize,
  });
  const reconciler = new Reconciler(redis, store, adminOutbox);
  const jobQueues = new JobQueues({
    createBoss: () => createBoss(config.postgresUrl), persister, reconciler, metrics, logger,
    settings: { retryLimit: config.retryLimit, retryDelaySec: config.retryDelaySec, reconcileCron: config.reconcileCron },
  });
  const consumer = new OutboxConsumer({
    outbox, persister, jobQueues, logger,
    settings: {
      batchSize: config.persistBatchSize, claimIdleMs: config.claimIdleMs, maxDeliveries: config.maxDeliveries, ratePerSec: config.persistRatePerSec,
      blockMs: OUTBOX_BLOCK_MS,
    },
  });
  const archiver = new EventArchiver({ redis, store, outbox: adminOutbox, logger, retentionMs: config.eventRetentionMs });
  const presale = config.presaleReplicas > 0 ? new PresaleScaler({
    store, redis, autoscaler: inClusterAutoscaler(config.presaleHpa!), replicas: config.presaleReplicas, metrics, logger,
    window: { leadMs: config.presaleLeadMs, holdMs: config.presaleHoldMs },
  }) : undefined;
  const maintenance = new Maintenance({
    redis, store, keeper, outbox: adminOutbox, jobQueues, archiver, metrics, logger,
    claimIdleMs: config.claimIdleMs, retentionMs: config.eventRetentionMs, presale,
  });

  let stopping = false;
  return {
    consumerName, metrics,
    start(): void {
      jobQueues.start();
      maintenance.start();
      consumer.start();
    },
    /** Reachable Redis is what the worker needs to make progress; MySQL outages are ridden out by backing off. */
    async ready(): Promise<{ ready: boolean; redis: boolean; mysql: boolean; jobs: boolean }> {
      // Time-boxed: this client queues commands while Redis is away, so an unbounded ping would hang the probe.
      const answers = (check: Promise<unknown>) => Promise.race([check.then(() => true, () => false), sleep(1_000).then(() => false)]);
      const [redisOk, mysqlOk] = await Promise.all([answers(redis.ping()), answers(store.ping())]);
      return { ready: !stopping && redisOk, redis: redisOk, mysql: mysqlOk, jobs: jobQueues.ready };
    },
    /** SIGTERM: finish the batch in hand and ack it, leave the group where nothing is pending, close. */
    async stop(): Promise<void> {
      stopping = true;
      await closeAll(logger, [
        ['consumer', () => consumer.stop()],
        ['maintenance', () => maintenance.stop()],
        ['leave group', () => outbox.leave()],
        ['pg-boss', () => jobQueues.stop()],
        ['redis', () => Promise.all([loopRedis.quit(), redis.quit()])],
        ['mysql', () => orm.close(true)],
      ]);
    },
  };
}
