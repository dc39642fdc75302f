import { readFileSync } from 'node:fs';
import { settingsTable, withSettingsTable } from '../../src/config-docs.ts';
import { ConfigError, defaultFor, loadConfig, SETTINGS, type Setting } from '../../src/config.ts';

describe('configuration', () => {
  test('when nothing is set, then the documented defaults apply', () => {
    const config = loadConfig({});
    expect(config).toMatchObject({
      port: 8080,
      redisUrl: 'redis://127.0.0.1:6379',
      mysqlUrl: 'mysql://root@127.0.0.1:3306/coupon',
      postgresUrl: 'postgres://postgres@127.0.0.1:5432/coupon_jobs',
      adminToken: undefined,
      auth: undefined,
      persistRatePerSec: 500,
      persistBatchSize: 100,
      claimIdleMs: 30_000,
      maxDeliveries: 5,
      logLevel: 'info',
    });
    expect(Object.isFrozen(config)).toBe(true);
  });

  test('when the worker loads it, then its own default port applies', () => {
    expect(loadConfig({}, { port: 8081 }).port).toBe(8081);
  });

  test.each([
    ['PERSIST_RATE_PER_SEC', 'fast', /PERSIST_RATE_PER_SEC must be a whole number/],
    ['PERSIST_BATCH_SIZE', '0', /PERSIST_BATCH_SIZE must be between 1 and 5000/],
    ['MYSQL_URL', 'postgres://x@y/z', /MYSQL_URL must use mysql:/],
    ['REDIS_URL', 'not a url', /REDIS_URL is not a valid URL/],
    ['LOG_LEVEL', 'loud', /LOG_LEVEL must be one of/],
    ['ADMIN_TOKEN', 'short', /ADMIN_TOKEN must be at least 16 characters/],
    ['AUTH_JWT_SECRET', 'too-short-secret', /AUTH_JWT_SECRET must be at least 32 characters/],
    ['RECONCILE_CRON', 'every 5 minutes', /RECONCILE_CRON must be a five-field cron expression/],
    ['RECONCILE_CRON', '*/5 * * *', /RECONCILE_CRON must be a five-field cron expression/],
  ])('when %s is %p, then start-up fails naming it', (name, value, message) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [name]: value })).toThrow(message);
  });

  test('when a URL with a password is rejected, then the error does not repeat the password', () => {
    expect(() => loadConfig({ MYSQL_URL: 'redis://root:s3cret@db/coupon' })).toThrow(/^(?!.*s3cret)/s);
  });

  test('when both JWT settings are given, then start-up refuses the ambiguity', () => {
    expect(() => loadConfig({ AUTH_JWT_SECRET: 'x'.repeat(32), AUTH_JWKS_URL: 'https://id.example/jwks.json' })).toThrow(/choose one/);
  });

  test('when the api\'s OPS_PORT is its PORT, then start-up refuses: the probes and metrics need a port of their own', () => {
    expect(loadConfig({}, 'api').opsPort).toBe(9464);
    expect(() => loadConfig({ PORT: '9000', OPS_PORT: '9000' }, 'api')).toThrow(/OPS_PORT and PORT are both 9000/);
  });

  test('when a JWT secret is set, then identity comes from tokens with the configured audience', () => {
    expect(loadConfig({ AUTH_JWT_SECRET: 'x'.repeat(32), AUTH_JWT_AUDIENCE: 'coupon' }).auth)
      .toEqual({ kind: 'secret', secret: 'x'.repeat(32), audience: 'coupon' });
  });
});

describe('the settings table', () => {
  const settings = Object.entries(SETTINGS) as Array<[string, Setting]>;
  const camelCase = (env: string) => env.toLowerCase().replace(/_([a-z])/g, (_match, letter: string) => letter.toUpperCase());

  test('when nothing is set, then every setting takes the default of the table', () => {
    const config = loadConfig({}) as unknown as Record<string, unknown>;
    for (const [key, setting] of settings) {
      if (key in config) expect({ env: setting.env, value: config[key] }).toEqual({ env: setting.env, value: setting.default });
    }
    expect(config.redis).toEqual({ kind: 'standalone', url: SETTINGS.redisUrl.default });
  });

  test('when the worker loads it by name, then the table gives the worker its own port', () => {
    expect(loadConfig({}, 'worker').port).toBe(defaultFor(SETTINGS.port, 'worker'));
    expect(defaultFor(SETTINGS.port, 'worker')).toBe(8081);
    expect(loadConfig({}, 'api').port).toBe(8080);
  });

  test.each(settings.filter(([, setting]) => setting.default !== undefined))(
    'when %s is written back as the environment spells it, then it reads as its default',
    (_key, setting) => {
      expect(setting.kind.parse(setting.kind.format(setting.default), setting.env)).toEqual(setting.default);
    },
  );

  test('when the table is read, then every variable appears once, with a doc, its readers and a chart value named after it', () => {
    const names = settings.map(([, setting]) => setting.env);
    expect(new Set(names).size).toBe(names.length);
    for (const [, setting] of settings) {
      expect(setting.env).toMatch(/^[A-Z][A-Z0-9_]*$/);
      expect(setting.doc.length).toBeGreaterThan(5);
      expect(setting.readBy.length).toBeGreaterThan(0);
      // The chart's helper derives the variable from the value's name (config.persistRatePerSec -> PERSIST_RATE_PER_SEC).
      if (setting.env !== 'PORT' && setting.env !== 'OPS_PORT') expect(setting.chart).toMatch(new RegExp(`^(config|secrets)\\.${camelCase(setting.env)}$`));
      if (setting.default === undefined) expect(setting.unset).toBeDefined();
    }
  });

  test('when the README is compared with the table, then its configuration table is current (else run: node src/config-docs.ts)', () => {
    const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
    expect(readme).toContain(settingsTable());
    expect(withSettingsTable(readme)).toBe(readme);
  });

  test('when a setting of the table is set, then the process reads its value instead of the default', () => {
    const config = loadConfig({
      RETRY_LIMIT: '3', RETRY_DELAY_SEC: '10', SOLD_OUT_CACHE_MS: '0', REDIS_COMMAND_TIMEOUT_MS: '80', PORT: '0',
      PERSIST_RATE_PER_SEC: '1000000', CLAIM_IDLE_MS: '86400000', RECONCILE_CRON: '0 * * * *', SHUTDOWN_DRAIN_MS: ' 0 ',
    }, 'worker');
    expect(config).toMatchObject({
      retryLimit: 3, retryDelaySec: 10, soldOutCacheMs: 0, redisCommandTimeoutMs: 80, port: 0,
      persistRatePerSec: 1_000_000, claimIdleMs: 86_400_000, reconcileCron: '0 * * * *', shutdownDrainMs: 0,
    });
  });

  test('when a variable is blank, then it counts as unset', () => {
    expect(loadConfig({ ADMIN_TOKEN: '   ', PERSIST_BATCH_SIZE: '' })).toMatchObject({ adminToken: undefined, persistBatchSize: 100 });
  });
});

describe('Redis Cluster', () => {
  test('when seed nodes are named, then the target is the Cluster, with the credentials of REDIS_URL', () => {
    const config = loadConfig({ REDIS_URL: 'rediss://:pw@ignored:6379', REDIS_CLUSTER_NODES: 'r-0:6379, r-1:6380,[::1]:7000' });
    expect(config.redis).toEqual({
      kind: 'cluster', url: 'rediss://:pw@ignored:6379', nodes: [{ host: 'r-0', port: 6379 }, { host: 'r-1', port: 6380 }, { host: '::1', port: 7000 }],
    });
  });

  test.each([
    [{ REDIS_CLUSTER_NODES: 'r-0:6379', REDIS_SENTINELS: 's-0:26379', REDIS_SENTINEL_MASTER: 'coupon' }, /REDIS_CLUSTER_NODES and REDIS_SENTINELS are both set/],
    [{ REDIS_CLUSTER_NODES: 'r-0' }, /REDIS_CLUSTER_NODES must be host:port\[,host:port\.\.\.\], got "r-0"/],
    [{ REDIS_CLUSTER_NODES: 'r-0:6379', REDIS_URL: 'redis://r:6379/2' }, /a Redis Cluster has only database 0/],
  ])('when %p is set, then start-up fails naming what is wrong', (env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
  });
});

describe('Redis behind Sentinel', () => {
  test('when Sentinels and a master are named, then the target is the Sentinels with their password', () => {
    const config = loadConfig({
      REDIS_URL: 'redis://:pw@ignored:6379/2', REDIS_SENTINELS: 's-0:26379, [::1]:26380', REDIS_SENTINEL_MASTER: 'coupon', REDIS_SENTINEL_PASSWORD: 'sp',
    });
    expect(config.redis).toEqual({
      kind: 'sentinel', url: 'redis://:pw@ignored:6379/2', masterName: 'coupon', sentinelPassword: 'sp',
      sentinels: [{ host: 's-0', port: 26379 }, { host: '::1', port: 26380 }],
    });
  });

  test.each([
    [{ REDIS_SENTINELS: 's-0:26379' }, /REDIS_SENTINEL_MASTER must name the master too/],
    [{ REDIS_SENTINEL_MASTER: 'coupon' }, /REDIS_SENTINELS is not: name the Sentinels too/],
    [{ REDIS_SENTINELS: 's-0', REDIS_SENTINEL_MASTER: 'coupon' }, /REDIS_SENTINELS must be host:port\[,host:port\.\.\.\], got "s-0"/],
    [{ REDIS_SENTINELS: 's-0:70000', REDIS_SENTINEL_MASTER: 'coupon' }, /REDIS_SENTINELS must be host:port/],
    [{ GATE_MIN_REPLICAS: '1', GATE_REPLICA_TIMEOUT_MS: '3000' }, /GATE_REPLICA_TIMEOUT_MS must be below REDIS_SOCKET_TIMEOUT_MS/],
  ])('when %p is set, then start-up fails naming what is wrong', (env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
  });

  test('when the replicas are waited for within the socket timeout, then the gate settings are accepted', () => {
    expect(loadConfig({ GATE_MIN_REPLICAS: '1', GATE_REPLICA_TIMEOUT_MS: '2999' })).toMatchObject({ gateMinReplicas: 1, gateReplicaTimeoutMs: 2999 });
  });
});
