import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Shed } from './admission.ts';
import { BACKLOG_GAUGES } from '../backlog-gauges.ts';
import type { ApplyOutcome } from '../domain/coupon.ts';
import type { EventBacklog } from '../event-reads.ts';

/** Request and gate metrics. Label children are cached so the hot path does no label hashing. */
export class ApiMetrics {
  readonly registry: Registry;
  readonly #requests: Counter<'route' | 'status'>;
  readonly #duration: Histogram<'route'>;
  readonly #gate: Counter<'outcome'>;
  /** route -> status -> counter */
  readonly #requestChildren = new Map<string, Map<number, Counter.Internal>>();
  readonly #durationChildren = new Map<string, Histogram.Internal<'route'>>();
  readonly #gateChildren = new Map<string, Counter.Internal>();
  readonly #shed: Record<Shed, Counter.Internal>;

  constructor(registry: Registry) {
    this.registry = registry;
    this.#requests = new Counter({
      name: 'coupon_http_requests_total', help: 'HTTP requests by route and status', labelNames: ['route', 'status'], registers: [registry],
    });
    this.#duration = new Histogram({
      name: 'coupon_http_request_duration_seconds', help: 'HTTP request latency by route', labelNames: ['route'], registers: [registry],
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
    });
    this.#gate = new Counter({
      name: 'coupon_gate_outcomes_total', help: 'Apply decisions by outcome (local_sold_out: answered without Redis)',
      labelNames: ['outcome'], registers: [registry],
    });
    const shed = new Counter({
      name: 'coupon_admission_shed_total', help: 'Applies answered 503 by admission control, before their body was read, by reason',
      labelNames: ['reason'], registers: [registry],
    });
    this.#shed = { queue_full: shed.labels('queue_full'), queue_timeout: shed.labels('queue_timeout') };
  }

  countShed(reason: Shed): void {
    this.#shed[reason].inc();
  }

  /** Gauges read when scraped: applies in flight and waiting, open connections and those refused. */
  observeLoad(load: { limit(): number; inFlight(): number; queued(): number; connections(): number; refusedConnections(): number }): void {
    const registers = [this.registry];
    new Gauge({ name: 'coupon_admission_limit', help: 'Applies admitted at once now (adapts to the event loop delay)', registers, collect() { this.set(load.limit()); } });
    new Gauge({ name: 'coupon_admission_in_flight', help: 'Applies admitted and not yet answered', registers, collect() { this.set(load.inFlight()); } });
    new Gauge({ name: 'coupon_admission_queued', help: 'Applies waiting for a slot', registers, collect() { this.set(load.queued()); } });
    new Gauge({ name: 'coupon_http_open_connections', help: 'Open client connections', registers, collect() { this.set(load.connections()); } });
    new Counter({
      name: 'coupon_http_refused_connections_total', help: 'Connections answered 503 and closed because API_MAX_CONNECTIONS were open',
      registers, collect() { this.reset(); this.inc(load.refusedConnections()); },
    });
  }

  /**
   * Each live event's outbox lag and issued-minus-persisted, read from Redis when scraped. The worker exports the
   * same series; the api does too so that the alerts on them fire when no worker is left to report (every worker
   * crashed, or scaled to 0). A failed read (Redis unreachable) leaves them out of that scrape, not the scrape.
   */
  observeBacklogs(read: () => Promise<EventBacklog[]>, onError: (error: unknown) => void): void {
    const registers = [this.registry];
    let last: Promise<EventBacklog[] | null> | undefined;
    // The gauges of one scrape share one read; null when it failed.
    const backlogs = (): Promise<EventBacklog[] | null> => {
      last ??= read().catch((error: unknown) => { onError(error); return null; }).finally(() => setImmediate(() => { last = undefined; }));
      return last;
    };
    new Gauge({
      name: 'coupon_redis_reachable', help: 'Whether this api read Redis when scraped (0: unreachable; its pods are then not ready, so its own 5xx count stops)',
      registers, async collect() { this.set((await backlogs()) === null ? 0 : 1); },
    });
    for (const field of ['lag', 'pending', 'issuedMinusPersisted'] as const) {
      new Gauge({
        ...BACKLOG_GAUGES[field], labelNames: ['event'], registers,
        async collect() {
          this.reset();
          for (const backlog of (await backlogs()) ?? []) this.set({ event: backlog.event }, backlog[field]);
        },
      });
    }
  }

  observeRequest(route: string, status: number, seconds: number): void {
    let byStatus = this.#requestChildren.get(route);
    if (!byStatus) this.#requestChildren.set(route, (byStatus = new Map()));
    let counter = byStatus.get(status);
    if (!counter) byStatus.set(status, (counter = this.#requests.labels(route, String(status))));
    counter.inc();
    let histogram = this.#durationChildren.get(route);
    if (!histogram) this.#durationChildren.set(route, (histogram = this.#duration.labels(route)));
    histogram.observe(seconds);
  }

  countGate(outcome: ApplyOutcome['kind'] | 'local_sold_out' | 'error'): void {
    let counter = this.#gateChildren.get(outcome);
    if (!counter) this.#gateChildren.set(outcome, (counter = this.#gate.labels(outcome)));
    counter.inc();
  }
}
