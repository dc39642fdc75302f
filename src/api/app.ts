import Koa, { type Context, type Next } from 'koa';
import { Router } from '@koa/router';
import type { Logger } from 'pino';
import { ApplyForCoupon, type ApplyDeps } from '../apply.ts';
import { isDependencyFault } from '../dependency-faults.ts';
import type { Admission } from './admission.ts';
import type { EventService } from '../event-service.ts';
import type { CouponRedis } from '../redis/client.ts';
import type { ReplicaAcks } from '../redis/replica-acks.ts';
import { HttpError, sendError } from './errors.ts';
import type { Identity } from './identity.ts';
import type { ApiMetrics } from './metrics.ts';
import { applyRoutes } from './routes/apply.ts';
import { eventRoutes } from './routes/events.ts';
import { userRoutes } from './routes/users.ts';
import type { SoldOutFlags } from './sold-out.ts';

export interface AppDeps {
  /** the gate's client: fails fast while Redis is unreachable */
  redis: CouponRedis;
  events: EventService;
  soldOut: SoldOutFlags;
  metrics: ApiMetrics;
  logger: Logger;
  adminToken: string | undefined;
  identity: Identity | undefined;
  /** true once SIGTERM arrived: /readyz fails so the load balancer stops sending */
  isDraining(): boolean;
  /** whether the connected Redis server was compared with MySQL (see src/gate-state.ts) */
  server: ApplyDeps['server'] & { readonly everChecked: boolean };
  /** GATE_MIN_REPLICAS > 0: a 202 waits until replicas hold the coupon */
  replicas?: ReplicaAcks;
  /** how long the gate waits for Redis before answering 503 */
  gateTimeoutMs?: number;
  /** how long a "does this event exist" answer is trusted when Redis has no state for it */
  existenceCacheMs?: number;
  /** GATE_BATCH=on: the applies of one event in one event-loop turn share one gate script call */
  gateBatch?: boolean;
  /** the bound on applies in flight (API_MAX_IN_FLIGHT, API_MAX_QUEUED, API_QUEUE_TIMEOUT_MS) */
  admission: Admission;
}

/**
 * The api as a Koa app, without listening: main.ts listens, tests boot it on port 0. It serves /v1 only; the
 * probes and metrics are on the ops port (createOpsApp), which no Ingress exposes.
 */
export function createApp(deps: AppDeps): Koa {
  const app = new Koa();
  app.proxy = true;
  app.silent = true;
  app.use(errorMiddleware(deps));

  const router = new Router();
  eventRoutes(router, { events: deps.events, adminToken: deps.adminToken, onEventChanged: (id) => deps.soldOut.forget(id) });
  userRoutes(router, { events: deps.events, adminToken: deps.adminToken, identity: deps.identity });
  // The hot path is dispatched ahead of the router (see routes/apply.ts).
  app.use(applyRoutes(router, {
    apply: new ApplyForCoupon(deps), admission: deps.admission, onShed: (reason) => deps.metrics.countShed(reason),
  }));
  app.use(router.routes());
  app.use(router.allowedMethods());
  return app;
}

/**
 * /healthz, /readyz and /metrics, for the kubelet and Prometheus on OPS_PORT: per-event counters and the
 * readiness of each process are not for the internet, so they are not on the port the Ingress routes to.
 */
export function createOpsApp(deps: Pick<AppDeps, 'redis' | 'metrics' | 'logger' | 'isDraining' | 'server'>): Koa {
  const app = new Koa();
  app.silent = true;
  // Probes and scrapes are not the api's traffic: coupon_http_requests_total (and the 5xx alert on it) counts /v1.
  app.use(errorMiddleware(deps, { countRequests: false }));
  const router = new Router();
  router.get('/healthz', (ctx) => { ctx.body = { status: 'ok' }; });
  router.get('/readyz', (ctx) => readiness(ctx, deps));
  router.get('/metrics', async (ctx) => {
    ctx.type = deps.metrics.registry.contentType;
    ctx.body = await deps.metrics.registry.metrics();
  });
  app.use(router.routes());
  app.use(router.allowedMethods());
  return app;
}

/**
 * The one error path: HttpErrors become their status; faults of Redis or MySQL become 503; the rest 500. A fault
 * is logged once a second per route at most, with how many answers it stands for: during an outage under load
 * every request fails the same way, and a log line with a stack per request would cost more than the answers.
 */
function errorMiddleware(deps: Pick<AppDeps, 'logger' | 'metrics'>, { countRequests = true } = {}) {
  const lastLogged = new Map<string, { at: number; since: number }>();
  const shouldLog = (route: string): number | undefined => {
    const now = performance.now();
    const entry = lastLogged.get(route);
    if (entry && now - entry.at < 1_000) {
      entry.since++;
      return undefined;
    }
    lastLogged.set(route, { at: now, since: 0 });
    return (entry?.since ?? 0) + 1;
  };
  return async (ctx: Context, next: Next) => {
    const started = performance.now();
    try {
      await next();
      if (ctx.body === undefined || ctx.body === null) {
        if (ctx.status === 404) sendError(ctx, 'not_found', `no route for ${ctx.method} ${ctx.path}`);
        else if (ctx.status === 405 || ctx.status === 501) sendError(ctx, 'method_not_allowed', `${ctx.method} is not allowed on ${ctx.path}`);
      }
    } catch (error) {
      if (error instanceof HttpError) {
        sendError(ctx, error.code, error.message);
      } else if (isDependencyFault(error)) {
        const answers = shouldLog(`503 ${ctx._matchedRoute}`);
        if (answers) deps.logger.warn({ err: error, route: ctx._matchedRoute, answers }, 'dependency unavailable');
        sendError(ctx, 'unavailable', 'a backing service is unavailable; try again shortly');
      } else {
        const answers = shouldLog(`500 ${ctx._matchedRoute}`);
        if (answers) deps.logger.error({ err: error, route: ctx._matchedRoute, answers }, 'request failed');
        sendError(ctx, 'internal_error', 'internal error');
      }
    }
    if (countRequests) deps.metrics.observeRequest(String(ctx._matchedRoute ?? 'unmatched'), ctx.status, (performance.now() - started) / 1000);
  };
}

async function readiness(ctx: Context, deps: Pick<AppDeps, 'redis' | 'isDraining' | 'server'>): Promise<void> {
  if (deps.isDraining()) return sendError(ctx, 'unavailable', 'draining');
  // A process that could not issue yet takes no traffic; later re-checks (after a failover) keep it in rotation.
  if (!deps.server.everChecked) return sendError(ctx, 'unavailable', 'redis has not been compared with mysql yet');
  try {
    await deps.redis.ping();
    ctx.body = { status: 'ready' };
  } catch {
    sendError(ctx, 'unavailable', 'redis is unreachable');
  }
}
