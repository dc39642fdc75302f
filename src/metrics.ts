import { Registry, collectDefaultMetrics } from 'prom-client';

/** One registry per process, with the Node.js defaults, so api and worker expose the same basics. */
export function createRegistry(component: 'api' | 'worker'): Registry {
  const registry = new Registry();
  registry.setDefaultLabels({ component });
  collectDefaultMetrics({ register: registry, prefix: 'coupon_' });
  return registry;
}
