import { PgBoss } from 'pg-boss';
import type { IssuedCoupon } from '../domain/coupon.ts';

/** Coupons the outbox could not persist within MAX_DELIVERIES: retried here with exponential backoff. */
export const PERSIST_RETRY_QUEUE = 'coupon-persist-retry';
/** Coupons that failed every retry: kept for an operator to inspect and redrive. */
export const PERSIST_DEAD_QUEUE = 'coupon-persist-dead';
/** Filled by the reconcile schedule: compare the Redis issued set with MySQL and re-enqueue any gap. */
export const RECONCILE_QUEUE = 'coupon-reconcile';

export interface PersistRetryJob {
  coupons: IssuedCoupon[];
  /** why the coupons left the outbox, for whoever reads the dead-letter queue */
  reason: string;
}

export interface QueueSettings {
  retryLimit: number;
  retryDelaySec: number;
}

/**
 * The worker's pg-boss. Its supervise and monitor passes run every 10 s, not pg-boss's 60: they refresh the queue
 * counts the dead-letter gauge (and the alert on it) reads, which otherwise lag a dead letter by up to a minute.
 */
export function createBoss(postgresUrl: string): PgBoss {
  return new PgBoss({ connectionString: postgresUrl, max: 4, application_name: 'coupon', monitorIntervalSeconds: 10, superviseIntervalSeconds: 10 });
}

/** Creates (or updates) the queues; createQueue must run before send or work. */
export async function ensureQueues(boss: PgBoss, settings: QueueSettings): Promise<void> {
  await boss.createQueue(PERSIST_DEAD_QUEUE, { retentionSeconds: 30 * 86_400, deleteAfterSeconds: 30 * 86_400 });
  const retry = { retryLimit: settings.retryLimit, retryDelay: settings.retryDelaySec, retryBackoff: true, retryDelayMax: 300 };
  await boss.createQueue(PERSIST_RETRY_QUEUE, { ...retry, deadLetter: PERSIST_DEAD_QUEUE });
  // createQueue leaves an existing queue alone; a changed RETRY_LIMIT or RETRY_DELAY_SEC still applies.
  await boss.updateQueue(PERSIST_RETRY_QUEUE, retry);
  await boss.createQueue(RECONCILE_QUEUE, { policy: 'singleton', retryLimit: 0 });
}
