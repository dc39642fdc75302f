import { ConfigError, loadConfig } from '../../src/config.ts';

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

  test('when a JWT secret is set, then identity comes from tokens with the configured audience', () => {
    expect(loadConfig({ AUTH_JWT_SECRET: 'x'.repeat(32), AUTH_JWT_AUDIENCE: 'coupon' }).auth)
      .toEqual({ kind: 'secret', secret: 'x'.repeat(32), audience: 'coupon' });
  });
});
