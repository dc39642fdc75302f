/**
 * Starts the Redis, MariaDB and PostgreSQL servers the whole suite shares, migrates MySQL once, and hands the
 * URLs to the test workers through process.env (workers are forked after this runs and inherit it).
 *
 * Each run gets its own folder, .stack/test/run-<jest pid>, and free ports, so a running `npm run stack` or a
 * second `npm test` in the same tree never collides with it. Folders left by runs that died are cleaned here.
 * TEST_REUSE_SERVERS=1 reuses REDIS_URL / MYSQL_URL / POSTGRES_URL where they are reachable;
 * TEST_REDIS_PORT / TEST_MYSQL_PORT / TEST_POSTGRES_PORT pin the ports of the servers started here.
 */
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { freePort, isAlive, startLocalStack, stopLeftoverServer, type LocalStack } from '../../scripts/local-servers/index.ts';

export interface TestStackHandle {
  stack: LocalStack;
  runDir: string;
}

declare global {
  var __couponTestStack: TestStackHandle | undefined;
}

export default async function globalSetup(globalConfig: { rootDir: string }): Promise<void> {
  const testDir = join(globalConfig.rootDir, '.stack', 'test');
  await mkdir(testDir, { recursive: true });
  await removeDeadRuns(testDir);

  const runDir = join(testDir, `run-${process.pid}`);
  if (process.env.TEST_REUSE_SERVERS !== '1') {
    // The tests own their servers: URLs from the environment (say, a running `npm run stack`) are not used.
    delete process.env.REDIS_URL;
    delete process.env.MYSQL_URL;
    delete process.env.POSTGRES_URL;
  }
  const stack = await startLocalStack({
    dir: runDir,
    ports: {
      redis: await portFromEnv('TEST_REDIS_PORT'),
      mysql: await portFromEnv('TEST_MYSQL_PORT'),
      postgres: await portFromEnv('TEST_POSTGRES_PORT'),
    },
  });
  globalThis.__couponTestStack = { stack, runDir };
  try {
    const { migrateUp } = await importNative<typeof import('../../src/db/migrate.ts')>(
      join(globalConfig.rootDir, 'src', 'db', 'migrate.ts'),
    );
    await migrateUp(stack.mysqlUrl);
  } catch (err) {
    await stack.stop().catch(() => {});
    throw err;
  }
  process.env.REDIS_URL = stack.redisUrl;
  process.env.MYSQL_URL = stack.mysqlUrl;
  process.env.POSTGRES_URL = stack.postgresUrl;
}

/**
 * Jest compiles this file to CommonJS, which turns `import()` into `require()`; the app's modules are ESM (some
 * with top-level await, as is MikroORM), so they must go through Node's own ESM loader instead.
 */
function importNative<T>(file: string): Promise<T> {
  const url = pathToFileURL(file).href;
  return (new Function('url', 'return import(url)') as (url: string) => Promise<T>)(url);
}

async function portFromEnv(name: string): Promise<number> {
  const value = process.env[name];
  if (!value) return freePort();
  const port = Number(value);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw new Error(`${name} must be a TCP port, got "${value}"`);
  return port;
}

/** Ends servers a killed jest run left behind and deletes their folders. */
async function removeDeadRuns(testDir: string): Promise<void> {
  for (const entry of await readdir(testDir)) {
    const pid = Number(/^run-(\d+)$/.exec(entry)?.[1]);
    if (!pid || pid === process.pid || isAlive(pid)) continue;
    const runDir = join(testDir, entry);
    try {
      for (const kind of ['redis', 'mariadb', 'postgres']) await stopLeftoverServer(join(runDir, kind));
      await rm(runDir, { recursive: true, force: true });
    } catch (err) {
      console.warn(`could not clean ${runDir}: ${(err as Error).message}`);
    }
  }
}
