/**
 * The only reader of process.env, and the one table of the service's settings: for every variable its default,
 * what it accepts, one line of documentation, the processes that read it and the chart value that sets it.
 * README.md's configuration table is generated from SETTINGS (src/config-docs.ts), and test/deploy holds the
 * chart to it (values, schema bounds, rendered environment). Every setting is parsed and checked once at
 * start-up; a bad value fails fast with an error that names the variable. The result is frozen and passed to
 * whoever needs it.
 */
import { ConfigError, cron, duration, hostPorts, integer, oneOf, text, url, type HostPort, type Kind } from './config-kinds.ts';

export { ConfigError } from './config-kinds.ts';

export interface Config {
  readonly port: number;
  /** the api's /healthz, /readyz and /metrics: a port of their own, not the public one */
  readonly opsPort: number;
  readonly redisUrl: string;
  /** where Redis is: REDIS_URL alone, or the Sentinels that name the current primary (credentials still from REDIS_URL) */
  readonly redis: RedisTarget;
  /** a connection that has a command outstanding and hears nothing for this long is torn down and replaced */
  readonly redisSocketTimeoutMs: number;
  /** 202 only once this many replicas acknowledged the gate's write (WAIT); 0 answers on the primary's word */
  readonly gateMinReplicas: number;
  readonly gateReplicaTimeoutMs: number;
  /** GATE_BATCH=on: the applies of one event in one event-loop turn share one gate script call (gate-batch.lua) */
  readonly gateBatch: 'on' | 'off';
  readonly mysqlUrl: string;
  readonly postgresUrl: string;
  readonly adminToken: string | undefined;
  readonly auth: AuthConfig | undefined;
  readonly persistRatePerSec: number;
  readonly persistBatchSize: number;
  readonly claimIdleMs: number;
  readonly maxDeliveries: number;
  readonly logLevel: string;
  readonly shutdownDrainMs: number;
  readonly reconcileCron: string;
  readonly retryLimit: number;
  readonly retryDelaySec: number;
  readonly soldOutCacheMs: number;
  readonly redisCommandTimeoutMs: number;
  /** admission control of the apply route: applies at once, waiting, and how long one may wait (src/api/admission.ts) */
  readonly apiMaxInFlight: number;
  readonly apiLoopDelayTargetMs: number;
  readonly apiMaxQueued: number;
  readonly apiQueueTimeoutMs: number;
  /** open connections per api process; past it a new one is answered 503 and closed (src/api/listener.ts) */
  readonly apiMaxConnections: number;
  /** how long after its end an event whose coupons are all persisted keeps its Redis state before it is archived */
  readonly eventRetentionMs: number;
  /** capacity before the sale (worker/presale.ts): 0 is off */
  readonly presaleReplicas: number;
  readonly presaleLeadMs: number;
  readonly presaleHoldMs: number;
  readonly presaleHpa: string | undefined;
}

export type RedisTarget =
  | { readonly kind: 'standalone'; readonly url: string }
  | {
    readonly kind: 'sentinel'; readonly url: string; readonly masterName: string;
    readonly sentinels: ReadonlyArray<{ readonly host: string; readonly port: number }>; readonly sentinelPassword?: string;
  }
  | { readonly kind: 'cluster'; readonly url: string; readonly nodes: ReadonlyArray<{ readonly host: string; readonly port: number }> };

export type AuthConfig =
  | { readonly kind: 'secret'; readonly secret: string; readonly audience?: string; readonly issuer?: string }
  | { readonly kind: 'jwks'; readonly jwksUrl: string; readonly audience?: string; readonly issuer?: string };

/** The processes the chart runs from the one image. */
export type Process = 'api' | 'worker' | 'migrations';

export interface Setting<T = unknown, D extends T | undefined = T | undefined> {
  readonly env: string;
  readonly kind: Kind<T>;
  /** Applies when the variable is unset or blank; undefined means the feature is off. */
  readonly default: D;
  /** What leaving it unset means, for a setting without a default. */
  readonly unset?: string;
  readonly doc: string;
  readonly readBy: readonly Process[];
  /** The chart value that renders the variable (config.* into the ConfigMap, secrets.* into the Secret). */
  readonly chart: string;
  /** Where the chart's default is not the process's: the dev dependencies of k8s/deps, or a generated token. */
  readonly chartDefault?: 'k8s/deps' | 'generated';
  /** A process that reads it with a default and chart value of its own (the worker's PORT). */
  readonly byProcess?: Partial<Record<Process, { readonly default: T; readonly chart: string }>>;
}

function setting<T, const D extends T | undefined>(definition: Setting<T, D>): Setting<T, D> {
  return definition;
}

const API: Process[] = ['api'];
const WORKER: Process[] = ['worker'];
const BOTH: Process[] = ['api', 'worker'];
const NO_JWT = 'userId from the body, with a warning at start-up';

/** Every setting, keyed like the Config field (or the part of one) it fills. The README lists them in this order. */
export const SETTINGS = {
  port: setting({
    env: 'PORT', kind: integer(0, 65535), default: 8080, readBy: BOTH, chart: 'api.port',
    byProcess: { worker: { default: 8081, chart: 'worker.port' } },
    doc: "HTTP port: the api's serves /v1 only; the worker's serves its /healthz, /readyz and /metrics",
  }),
  opsPort: setting({
    env: 'OPS_PORT', kind: integer(0, 65535), default: 9464, readBy: API, chart: 'api.opsPort',
    doc: "the api's /healthz, /readyz and /metrics (probes, Prometheus), apart from `PORT`, which an Ingress exposes",
  }),
  logLevel: setting({
    env: 'LOG_LEVEL', kind: oneOf(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']), default: 'info',
    readBy: BOTH, chart: 'config.logLevel', doc: 'pino level',
  }),
  redisUrl: setting({
    env: 'REDIS_URL', kind: url(['redis:', 'rediss:']), default: 'redis://127.0.0.1:6379', readBy: BOTH,
    chart: 'secrets.redisUrl', chartDefault: 'k8s/deps',
    doc: "gate and outbox; with Sentinels or a Cluster only its credentials, database and TLS apply, they name the hosts",
  }),
  redisClusterNodes: setting({
    env: 'REDIS_CLUSTER_NODES', kind: hostPorts(), default: undefined, unset: 'no Redis Cluster', readBy: BOTH,
    chart: 'config.redisClusterNodes',
    doc: 'seed nodes of a Redis Cluster: events spread over its shards by hash slot; credentials and TLS from `REDIS_URL`',
  }),
  redisSentinels: setting({
    env: 'REDIS_SENTINELS', kind: hostPorts(), default: undefined, unset: 'the one Redis at `REDIS_URL`', readBy: BOTH,
    chart: 'config.redisSentinels', doc: 'find the primary through these Sentinels and follow failovers; needs `REDIS_SENTINEL_MASTER`',
  }),
  redisSentinelMaster: setting({
    env: 'REDIS_SENTINEL_MASTER', kind: text(), default: undefined, unset: 'no Sentinels', readBy: BOTH,
    chart: 'config.redisSentinelMaster', doc: 'the master name the Sentinels monitor; needs `REDIS_SENTINELS`',
  }),
  redisSentinelPassword: setting({
    env: 'REDIS_SENTINEL_PASSWORD', kind: text(), default: undefined, unset: 'Sentinels without a password', readBy: BOTH,
    chart: 'secrets.redisSentinelPassword', doc: "the Sentinels' own password (the primary's is in `REDIS_URL`)",
  }),
  redisSocketTimeoutMs: setting({
    env: 'REDIS_SOCKET_TIMEOUT_MS', kind: integer(500, 60_000), default: 3_000, readBy: BOTH, chart: 'config.redisSocketTimeoutMs',
    doc: 'a Redis connection with a command outstanding that hears nothing this long is torn down and replaced',
  }),
  redisCommandTimeoutMs: setting({
    env: 'REDIS_COMMAND_TIMEOUT_MS', kind: integer(50, 10_000), default: 500, readBy: API, chart: 'config.redisCommandTimeoutMs',
    doc: "the gate's wait for Redis; a timed-out call gets half as long again to settle, then 503",
  }),
  gateMinReplicas: setting({
    env: 'GATE_MIN_REPLICAS', kind: integer(0, 16), default: 0, readBy: API, chart: 'config.gateMinReplicas',
    doc: "202 only once this many replicas acknowledged the gate's write (`WAIT`), else 503; with fewer replicas online (or lagging over 10 s) nothing is issued (503); a PATCH waits for them too",
  }),
  gateReplicaTimeoutMs: setting({
    env: 'GATE_REPLICA_TIMEOUT_MS', kind: integer(10, 10_000), default: 250, readBy: API, chart: 'config.gateReplicaTimeoutMs',
    doc: 'how long the api waits for those acknowledgements; below `REDIS_SOCKET_TIMEOUT_MS`',
  }),
  gateBatch: setting({
    env: 'GATE_BATCH', kind: oneOf(['on', 'off']), default: 'off', readBy: API, chart: 'config.gateBatch',
    doc: "`on`: the applies of one event that arrive in one event-loop turn are decided by one gate script call, each as it would be alone (no added wait); `off`: one gate.lua call per apply",
  }),
  soldOutCacheMs: setting({
    env: 'SOLD_OUT_CACHE_MS', kind: integer(0, 3_600_000), default: 5_000, readBy: API, chart: 'config.soldOutCacheMs',
    doc: 'how long an api process answers sold_out without asking Redis',
  }),
  apiMaxInFlight: setting({
    env: 'API_MAX_IN_FLIGHT', kind: integer(1, 100_000), default: 2_048, readBy: API, chart: 'config.apiMaxInFlight',
    doc: 'applies one api process works on at once, at most (the bound on their memory); the others wait in first-come order',
  }),
  apiLoopDelayTargetMs: setting({
    env: 'API_LOOP_DELAY_TARGET_MS', kind: integer(0, 10_000), default: 100, readBy: API, chart: 'config.apiLoopDelayTargetMs',
    doc: 'while the event loop runs later than this, fewer applies are admitted at once (at least 128); 0 keeps `API_MAX_IN_FLIGHT`',
  }),
  apiMaxQueued: setting({
    env: 'API_MAX_QUEUED', kind: integer(0, 1_000_000), default: 2_048, readBy: API, chart: 'config.apiMaxQueued',
    doc: 'applies that may wait for one of those slots; one more is answered 503 with Retry-After at once, its body unread',
  }),
  apiQueueTimeoutMs: setting({
    env: 'API_QUEUE_TIMEOUT_MS', kind: integer(0, 10_000), default: 250, readBy: API, chart: 'config.apiQueueTimeoutMs',
    doc: 'the longest an apply waits for a slot before it is answered 503 with Retry-After (0: never waits)',
  }),
  apiMaxConnections: setting({
    env: 'API_MAX_CONNECTIONS', kind: integer(1, 1_000_000), default: 10_000, readBy: API, chart: 'config.apiMaxConnections',
    doc: 'open connections per api process; past it a new connection is answered 503 with Retry-After and closed',
  }),
  shutdownDrainMs: setting({
    env: 'SHUTDOWN_DRAIN_MS', kind: integer(0, 600_000), default: 5_000, readBy: API, chart: 'config.shutdownDrainMs',
    doc: 'on SIGTERM, how long /readyz fails before the api stops listening',
  }),
  mysqlUrl: setting({
    env: 'MYSQL_URL', kind: url(['mysql:']), default: 'mysql://root@127.0.0.1:3306/coupon', readBy: ['api', 'worker', 'migrations'],
    chart: 'secrets.mysqlUrl', chartDefault: 'k8s/deps', doc: 'MySQL 8: coupons and events',
  }),
  postgresUrl: setting({
    env: 'POSTGRES_URL', kind: url(['postgres:', 'postgresql:']), default: 'postgres://postgres@127.0.0.1:5432/coupon_jobs',
    readBy: WORKER, chart: 'secrets.postgresUrl', chartDefault: 'k8s/deps', doc: 'pg-boss (retry, dead letter, reconcile)',
  }),
  adminToken: setting({
    env: 'ADMIN_TOKEN', kind: text(16), default: undefined, unset: 'admin routes answer 401', readBy: API,
    chart: 'secrets.adminToken', chartDefault: 'generated', doc: 'bearer token of the event admin routes',
  }),
  authJwtSecret: setting({
    env: 'AUTH_JWT_SECRET', kind: text(32), default: undefined, unset: NO_JWT, readBy: API, chart: 'secrets.authJwtSecret',
    doc: "HS256 secret of user JWTs (the user is the token's `sub`); not with `AUTH_JWKS_URL`",
  }),
  authJwksUrl: setting({
    env: 'AUTH_JWKS_URL', kind: url(['http:', 'https:']), default: undefined, unset: NO_JWT, readBy: API, chart: 'secrets.authJwksUrl',
    doc: "the identity provider's key set (RS256/ES256 user JWTs); not with `AUTH_JWT_SECRET`",
  }),
  authJwtAudience: setting({
    env: 'AUTH_JWT_AUDIENCE', kind: text(), default: undefined, unset: 'any', readBy: API, chart: 'config.authJwtAudience',
    doc: 'required `aud` of user JWTs',
  }),
  authJwtIssuer: setting({
    env: 'AUTH_JWT_ISSUER', kind: text(), default: undefined, unset: 'any', readBy: API, chart: 'config.authJwtIssuer',
    doc: 'required `iss` of user JWTs',
  }),
  persistRatePerSec: setting({
    env: 'PERSIST_RATE_PER_SEC', kind: integer(1, 1_000_000), default: 500, readBy: WORKER, chart: 'config.persistRatePerSec',
    doc: 'global cap on coupon inserts per second, all workers together',
  }),
  persistBatchSize: setting({
    env: 'PERSIST_BATCH_SIZE', kind: integer(1, 5_000), default: 100, readBy: WORKER, chart: 'config.persistBatchSize',
    doc: 'rows one read takes while draining; one insert writes at most this many and 1/20 s of the cap',
  }),
  claimIdleMs: setting({
    env: 'CLAIM_IDLE_MS', kind: integer(100, 86_400_000), default: 30_000, readBy: WORKER, chart: 'config.claimIdleMs',
    doc: 'a pending outbox entry idle this long is claimed by another worker',
  }),
  maxDeliveries: setting({
    env: 'MAX_DELIVERIES', kind: integer(1, 1_000), default: 5, readBy: WORKER, chart: 'config.maxDeliveries',
    doc: 'deliveries of one entry before it moves to the pg-boss retry queue',
  }),
  retryLimit: setting({
    env: 'RETRY_LIMIT', kind: integer(0, 1_000), default: 8, readBy: WORKER, chart: 'config.retryLimit',
    doc: 'pg-boss retries before the dead-letter queue',
  }),
  retryDelaySec: setting({
    env: 'RETRY_DELAY_SEC', kind: integer(1, 86_400), default: 5, readBy: WORKER, chart: 'config.retryDelaySec',
    doc: 'first pg-boss retry delay (doubling, at most 300 s)',
  }),
  reconcileCron: setting({
    env: 'RECONCILE_CRON', kind: cron(), default: '*/5 * * * *', readBy: WORKER, chart: 'config.reconcileCron',
    doc: 'when the reconcile job runs',
  }),
  eventRetentionMs: setting({
    env: 'EVENT_RETENTION', kind: duration(1_000, 365 * 86_400_000), default: 3 * 86_400_000, readBy: WORKER, chart: 'config.eventRetention',
    doc: 'how long after its end an event whose coupons are all persisted keeps its Redis state; then it is archived (MySQL only)',
  }),
  presaleReplicas: setting({
    env: 'PRESALE_REPLICAS', kind: integer(0, 1_000), default: 0, readBy: WORKER, chart: 'config.presaleReplicas',
    doc: 'capacity before the sale: the api HPA\'s minReplicas from PRESALE_LEAD before an event starts until it sells out, ends or PRESALE_HOLD passes (0: off; in Kubernetes only)',
  }),
  presaleLeadMs: setting({
    env: 'PRESALE_LEAD', kind: duration(0, 86_400_000), default: 5 * 60_000, readBy: WORKER, chart: 'config.presaleLead',
    doc: 'how long before an event\'s start the api is raised to PRESALE_REPLICAS',
  }),
  presaleHoldMs: setting({
    env: 'PRESALE_HOLD', kind: duration(1_000, 7 * 86_400_000), default: 15 * 60_000, readBy: WORKER, chart: 'config.presaleHold',
    doc: 'how long after its start an event not sold out keeps PRESALE_REPLICAS at most',
  }),
  presaleHpa: setting({
    env: 'PRESALE_HPA', kind: text(), default: undefined, unset: 'the chart names its api HPA when PRESALE_REPLICAS > 0', readBy: WORKER,
    chart: 'config.presaleHpa', doc: 'the HorizontalPodAutoscaler (in the worker\'s namespace) whose minReplicas PRESALE_REPLICAS raises',
  }),
};

type Env = Record<string, string | undefined>;

/** The default of a setting in one process (the worker's PORT is not the api's). */
export function defaultFor<T, D extends T | undefined>(setting: Setting<T, D>, reader: Process): T | D {
  return setting.byProcess?.[reader]?.default ?? setting.default;
}

/** The value of a setting: the variable's, checked, or else its default. */
function read<T, D extends T | undefined>(env: Env, setting: Setting<T, D>, fallback: T | D = setting.default): T | D {
  const raw = env[setting.env]?.trim();
  return raw ? setting.kind.parse(raw, setting.env) : fallback;
}

/**
 * Reads the settings of one process (its own defaults, e.g. the worker's PORT). `{ port }` still names the
 * default port directly, as callers did before the table.
 */
export function loadConfig(env: Env = process.env, reader: Process | { port: number } = 'api'): Config {
  const S = SETTINGS;
  const defaultPort = typeof reader === 'object' ? reader.port : defaultFor(S.port, reader);
  const redisUrl = read(env, S.redisUrl);
  const config: Config = {
    port: read(env, S.port, defaultPort),
    opsPort: read(env, S.opsPort),
    redisUrl,
    redis: readRedisTarget(env, redisUrl),
    redisSocketTimeoutMs: read(env, S.redisSocketTimeoutMs),
    gateMinReplicas: read(env, S.gateMinReplicas),
    gateReplicaTimeoutMs: read(env, S.gateReplicaTimeoutMs),
    gateBatch: read(env, S.gateBatch),
    mysqlUrl: read(env, S.mysqlUrl),
    postgresUrl: read(env, S.postgresUrl),
    adminToken: read(env, S.adminToken),
    auth: readAuth(env),
    persistRatePerSec: read(env, S.persistRatePerSec),
    persistBatchSize: read(env, S.persistBatchSize),
    claimIdleMs: read(env, S.claimIdleMs),
    maxDeliveries: read(env, S.maxDeliveries),
    logLevel: read(env, S.logLevel),
    shutdownDrainMs: read(env, S.shutdownDrainMs),
    reconcileCron: read(env, S.reconcileCron),
    retryLimit: read(env, S.retryLimit),
    retryDelaySec: read(env, S.retryDelaySec),
    soldOutCacheMs: read(env, S.soldOutCacheMs),
    redisCommandTimeoutMs: read(env, S.redisCommandTimeoutMs),
    apiMaxInFlight: read(env, S.apiMaxInFlight),
    apiLoopDelayTargetMs: read(env, S.apiLoopDelayTargetMs),
    apiMaxQueued: read(env, S.apiMaxQueued),
    apiQueueTimeoutMs: read(env, S.apiQueueTimeoutMs),
    apiMaxConnections: read(env, S.apiMaxConnections),
    eventRetentionMs: read(env, S.eventRetentionMs),
    presaleReplicas: read(env, S.presaleReplicas),
    presaleLeadMs: read(env, S.presaleLeadMs),
    presaleHoldMs: read(env, S.presaleHoldMs),
    presaleHpa: read(env, S.presaleHpa),
  };
  if (reader === 'api' && config.opsPort === config.port && config.port !== 0) {
    throw new ConfigError(`OPS_PORT and PORT are both ${config.port}: the probes and metrics need a port of their own`);
  }
  if (config.gateMinReplicas > 0 && config.gateReplicaTimeoutMs >= config.redisSocketTimeoutMs) {
    // WAIT keeps the connection silent while it waits: the socket timeout would tear it down first.
    throw new ConfigError('GATE_REPLICA_TIMEOUT_MS must be below REDIS_SOCKET_TIMEOUT_MS');
  }
  if (reader === 'worker' && config.presaleReplicas > 0 && !config.presaleHpa) {
    throw new ConfigError('PRESALE_REPLICAS > 0 needs PRESALE_HPA, the api HorizontalPodAutoscaler to raise (the chart sets it)');
  }
  return Object.freeze(config);
}

function readRedisTarget(env: Env, url: string): RedisTarget {
  const sentinels: readonly HostPort[] | undefined = read(env, SETTINGS.redisSentinels);
  const masterName = read(env, SETTINGS.redisSentinelMaster);
  const clusterNodes: readonly HostPort[] | undefined = read(env, SETTINGS.redisClusterNodes);
  if (clusterNodes !== undefined) {
    if (sentinels !== undefined) throw new ConfigError('REDIS_CLUSTER_NODES and REDIS_SENTINELS are both set: choose one topology');
    if (!/^\/?0?$/.test(new URL(url).pathname)) throw new ConfigError('REDIS_URL names a database, but a Redis Cluster has only database 0: drop the /N');
    return { kind: 'cluster', url, nodes: clusterNodes };
  }
  if (sentinels === undefined) {
    if (masterName !== undefined) throw new ConfigError('REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS is not: name the Sentinels too');
    return { kind: 'standalone', url };
  }
  if (masterName === undefined) throw new ConfigError('REDIS_SENTINELS is set: REDIS_SENTINEL_MASTER must name the master too');
  const sentinelPassword = read(env, SETTINGS.redisSentinelPassword);
  return { kind: 'sentinel', url, masterName, sentinels, ...(sentinelPassword && { sentinelPassword }) };
}

function readAuth(env: Env): AuthConfig | undefined {
  const secret = read(env, SETTINGS.authJwtSecret);
  const jwksUrl = read(env, SETTINGS.authJwksUrl);
  const audience = read(env, SETTINGS.authJwtAudience);
  const issuer = read(env, SETTINGS.authJwtIssuer);
  if (secret !== undefined && jwksUrl !== undefined) {
    throw new ConfigError('AUTH_JWT_SECRET and AUTH_JWKS_URL are both set: choose one');
  }
  const claims = { ...(audience && { audience }), ...(issuer && { issuer }) };
  if (secret !== undefined) return { kind: 'secret', secret, ...claims };
  if (jwksUrl !== undefined) return { kind: 'jwks', jwksUrl, ...claims };
  return undefined;
}
