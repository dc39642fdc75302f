import { Counter, Histogram, type Registry } from 'prom-client';
import type { ApplyOutcome } from '../domain/coupon.ts';

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
