/**
 * The three backlog gauges of an event, exported by the worker (as it drains the outbox) and by the api (read from
 * Redis when scraped, so the alerts on them can fire with every worker gone): one name and help for both.
 */
export const BACKLOG_GAUGES = {
  lag: { name: 'coupon_outbox_lag', help: 'Outbox entries not yet delivered to a worker' },
  pending: { name: 'coupon_outbox_pending', help: 'Outbox entries delivered but not yet acked' },
  issuedMinusPersisted: { name: 'coupon_issued_minus_persisted', help: 'Coupons issued by the gate and not yet in MySQL' },
} as const;
