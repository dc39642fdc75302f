/**
 * The only reader of process.env. Every setting is parsed and checked once at start-up; a bad value fails
 * fast with an error that names the variable. The result is frozen and passed to whoever needs it.
 */

export interface Config {
  readonly port: number;
  readonly redisUrl: string;
  /** where Redis is: REDIS_URL alone, or the Sentinels that name the current primary (credentials still from REDIS_URL) */
  readonly redis: RedisTarget;
  /** a connection that has a command outstanding and hears nothing for this long is torn down and replaced */
  readonly redisSocketTimeoutMs: number;
  /** 202 only once this many replicas acknowledged the gate's write (WAIT); 0 answers on the primary's word */
  readonly gateMinReplicas: number;
  readonly gateReplicaTimeoutMs: number;
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
}

export type RedisTarget =
  | { readonly kind: 'standalone'; readonly url: string }
  | {
    readonly kind: 'sentinel'; readonly url: string; readonly masterName: string;
    readonly sentinels: ReadonlyArray<{ readonly host: string; readonly port: number }>; readonly sentinelPassword?: string;
  };

export type AuthConfig =
  | { readonly kind: 'secret'; readonly secret: string; readonly audience?: string; readonly issuer?: string }
  | { readonly kind: 'jwks'; readonly jwksUrl: string; readonly audience?: string; readonly issuer?: string };

export class ConfigError extends Error {
  override name = 'ConfigError';
}

type Env = Record<string, string | undefined>;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export function loadConfig(env: Env = process.env, defaults: { port: number } = { port: 8080 }): Config {
  const read = new EnvReader(env);
  const auth = readAuth(read);
  const redisUrl = read.url('REDIS_URL', 'redis://127.0.0.1:6379', ['redis:', 'rediss:']);
  const config: Config = {
    port: read.integer('PORT', defaults.port, 0, 65535),
    redisUrl,
    redis: readRedisTarget(read, redisUrl),
    redisSocketTimeoutMs: read.integer('REDIS_SOCKET_TIMEOUT_MS', 3_000, 500, 60_000),
    gateMinReplicas: read.integer('GATE_MIN_REPLICAS', 0, 0, 16),
    gateReplicaTimeoutMs: read.integer('GATE_REPLICA_TIMEOUT_MS', 250, 10, 10_000),
    mysqlUrl: read.url('MYSQL_URL', 'mysql://root@127.0.0.1:3306/coupon', ['mysql:']),
    postgresUrl: read.url('POSTGRES_URL', 'postgres://postgres@127.0.0.1:5432/coupon_jobs', ['postgres:', 'postgresql:']),
    adminToken: read.optionalString('ADMIN_TOKEN', 16),
    auth,
    persistRatePerSec: read.integer('PERSIST_RATE_PER_SEC', 500, 1, 1_000_000),
    persistBatchSize: read.integer('PERSIST_BATCH_SIZE', 100, 1, 5_000),
    claimIdleMs: read.integer('CLAIM_IDLE_MS', 30_000, 100, 86_400_000),
    maxDeliveries: read.integer('MAX_DELIVERIES', 5, 1, 1_000),
    logLevel: read.oneOf('LOG_LEVEL', 'info', LOG_LEVELS),
    shutdownDrainMs: read.integer('SHUTDOWN_DRAIN_MS', 5_000, 0, 600_000),
    reconcileCron: read.cron('RECONCILE_CRON', '*/5 * * * *'),
    retryLimit: read.integer('RETRY_LIMIT', 8, 0, 1_000),
    retryDelaySec: read.integer('RETRY_DELAY_SEC', 5, 1, 86_400),
    soldOutCacheMs: read.integer('SOLD_OUT_CACHE_MS', 5_000, 0, 3_600_000),
    redisCommandTimeoutMs: read.integer('REDIS_COMMAND_TIMEOUT_MS', 500, 50, 10_000),
  };
  if (config.gateMinReplicas > 0 && config.gateReplicaTimeoutMs >= config.redisSocketTimeoutMs) {
    // WAIT keeps the connection silent while it waits: the socket timeout would tear it down first.
    throw new ConfigError('GATE_REPLICA_TIMEOUT_MS must be below REDIS_SOCKET_TIMEOUT_MS');
  }
  return Object.freeze(config);
}

function readRedisTarget(read: EnvReader, url: string): RedisTarget {
  const sentinels = read.optionalString('REDIS_SENTINELS');
  const masterName = read.optionalString('REDIS_SENTINEL_MASTER');
  if (sentinels === undefined) {
    if (masterName !== undefined) throw new ConfigError('REDIS_SENTINEL_MASTER is set but REDIS_SENTINELS is not: name the Sentinels too');
    return { kind: 'standalone', url };
  }
  if (masterName === undefined) throw new ConfigError('REDIS_SENTINELS is set: REDIS_SENTINEL_MASTER must name the master too');
  const parsed = sentinels.split(',').map((entry) => {
    const match = /^\s*([^\s:]+|\[[^\]]+\]):(\d{1,5})\s*$/.exec(entry);
    const port = Number(match?.[2]);
    if (!match || port < 1 || port > 65535) {
      throw new ConfigError(`REDIS_SENTINELS must be host:port[,host:port...], got "${sentinels}"`);
    }
    return { host: match[1]!.replace(/^\[|\]$/g, ''), port };
  });
  const sentinelPassword = read.optionalString('REDIS_SENTINEL_PASSWORD');
  return { kind: 'sentinel', url, masterName, sentinels: parsed, ...(sentinelPassword && { sentinelPassword }) };
}

function readAuth(read: EnvReader): AuthConfig | undefined {
  const secret = read.optionalString('AUTH_JWT_SECRET', 32);
  const jwksUrl = read.optionalString('AUTH_JWKS_URL');
  const audience = read.optionalString('AUTH_JWT_AUDIENCE');
  const issuer = read.optionalString('AUTH_JWT_ISSUER');
  if (secret !== undefined && jwksUrl !== undefined) {
    throw new ConfigError('AUTH_JWT_SECRET and AUTH_JWKS_URL are both set: choose one');
  }
  const claims = { ...(audience && { audience }), ...(issuer && { issuer }) };
  if (secret !== undefined) return { kind: 'secret', secret, ...claims };
  if (jwksUrl !== undefined) {
    read.url('AUTH_JWKS_URL', jwksUrl, ['http:', 'https:']);
    return { kind: 'jwks', jwksUrl, ...claims };
  }
  return undefined;
}

class EnvReader {
  readonly #env: Env;

  constructor(env: Env) {
    this.#env = env;
  }

  #raw(name: string): string | undefined {
    const value = this.#env[name];
    return value === undefined || value.trim() === '' ? undefined : value.trim();
  }

  string(name: string, fallback: string): string {
    return this.#raw(name) ?? fallback;
  }

  optionalString(name: string, minLength = 1): string | undefined {
    const value = this.#raw(name);
    if (value !== undefined && value.length < minLength) {
      throw new ConfigError(`${name} must be at least ${minLength} characters long`);
    }
    return value;
  }

  /** Five cron fields (minute hour day month weekday) of digits, `*`, `/`, `,` and `-`, as pg-boss's schedule takes. */
  cron(name: string, fallback: string): string {
    const value = this.#raw(name) ?? fallback;
    const fields = value.split(/\s+/);
    if (fields.length !== 5 || !fields.every((field) => /^[\d*/,-]+$/.test(field))) {
      throw new ConfigError(`${name} must be a five-field cron expression such as "*/5 * * * *", got "${value}"`);
    }
    return value;
  }

  integer(name: string, fallback: number, min: number, max: number): number {
    const raw = this.#raw(name);
    if (raw === undefined) return fallback;
    if (!/^\d+$/.test(raw)) throw new ConfigError(`${name} must be a whole number, got "${raw}"`);
    const value = Number(raw);
    if (value < min || value > max) throw new ConfigError(`${name} must be between ${min} and ${max}, got ${value}`);
    return value;
  }

  oneOf(name: string, fallback: string, allowed: string[]): string {
    const value = this.#raw(name) ?? fallback;
    if (!allowed.includes(value)) throw new ConfigError(`${name} must be one of ${allowed.join(', ')}, got "${value}"`);
    return value;
  }

  url(name: string, fallback: string, protocols: string[]): string {
    const value = this.#raw(name) ?? fallback;
    let parsed: URL;
    try {
      parsed = new URL(value);
    } catch {
      throw new ConfigError(`${name} is not a valid URL`);
    }
    if (!protocols.includes(parsed.protocol)) {
      throw new ConfigError(`${name} must use ${protocols.join(' or ')}, got ${parsed.protocol}`);
    }
    return value;
  }
}
