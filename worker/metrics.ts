import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { BACKLOG_GAUGES } from '../src/backlog-gauges.ts';

export class WorkerMetrics {
  readonly registry: Registry;
  readonly persisted: Counter;
  readonly persistFailures: Counter;
  readonly movedToRetry: Counter;
  readonly sequenceConflicts: Counter;
  readonly fencedCoupons: Counter;
  readonly batchSeconds: Histogram;
  readonly outboxLag: Gauge<'event'>;
  readonly outboxPending: Gauge<'event'>;
  readonly issuedMinusPersisted: Gauge<'event'>;
  readonly deadLetterJobs: Gauge;
  readonly presaleMinReplicas: Gauge;

  constructor(registry: Registry) {
    this.registry = registry;
    const registers = [registry];
    this.persisted = new Counter({ name: 'coupon_persisted_total', help: 'Coupon rows newly written to MySQL', registers });
    this.persistFailures = new Counter({ name: 'coupon_persist_failures_total', help: 'Multi-row inserts that failed', registers });
    this.movedToRetry = new Counter({
      name: 'coupon_moved_to_retry_total', help: 'Outbox entries moved to the pg-boss retry queue after MAX_DELIVERIES', registers,
    });
    this.sequenceConflicts = new Counter({
      name: 'coupon_sequence_conflicts_total', help: 'Coupons not written because another user holds their sequence (Redis lost data)', registers,
    });
    this.fencedCoupons = new Counter({
      name: 'coupon_fenced_total',
      help: 'Coupons not written because the gate state that issued them was lost (flush, failover) before they were persisted', registers,
    });
    this.batchSeconds = new Histogram({
      name: 'coupon_persist_batch_seconds', help: 'Time of one multi-row insert', registers,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5],
    });
    this.outboxLag = new Gauge({ ...BACKLOG_GAUGES.lag, labelNames: ['event'], registers });
    this.outboxPending = new Gauge({ ...BACKLOG_GAUGES.pending, labelNames: ['event'], registers });
    this.issuedMinusPersisted = new Gauge({ ...BACKLOG_GAUGES.issuedMinusPersisted, labelNames: ['event'], registers });
    this.deadLetterJobs = new Gauge({ name: 'coupon_dead_letter_jobs', help: 'Jobs waiting in the dead-letter queue', registers });
    this.presaleMinReplicas = new Gauge({
      name: 'coupon_presale_min_replicas', help: 'The api HPA minReplicas the pre-sale scaler wants now (PRESALE_REPLICAS while a sale is near or on)', registers,
    });
  }

  /** Drops every series of an event that is gone from Redis (archived): /metrics stays as long as the live events. */
  forgetEvent(event: string): void {
    for (const gauge of [this.outboxLag, this.outboxPending, this.issuedMinusPersisted]) gauge.remove({ event });
  }
}
