/**
 * Starts the Redis, MariaDB and PostgreSQL servers the whole suite shares, migrates MySQL once, and hands the
 * URLs to the test workers through process.env (workers are forked after this runs and inherit it).
 *
 * First it ensures what the selected tests need (scripts/setup/prerequisites.ts): the servers' Debian packages
 * (installed as root with apt when missing), the deploy tools under .tools/ when a selected test runs them
 * (imports run/toolPath/... from test/deploy/tools.ts), promtool when one imports runPromtool from there, and
 * schemathesis when one fuzzes (runSchemathesis).
 * What cannot be installed here stops the run with one line naming the command to run.
 *
 * Each run gets its own folder, .stack/test/run-<jest pid>, and free ports, so a running `npm run stack` or a
 * second `npm test` in the same tree never collides with it. Folders left by runs that died are cleaned here.
 * TEST_REUSE_SERVERS=1 reuses REDIS_URL / MYSQL_URL / POSTGRES_URL where they are reachable;
 * TEST_REDIS_PORT / TEST_MYSQL_PORT / TEST_POSTGRES_PORT pin the ports of the servers started here.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { pathToFileURL } from 'node:url';
import { freePort, isAlive, startLocalStack, stopLeftoverServer, type LocalStack } from '../../scripts/local-servers/index.ts';
import { ensureOrExit, serversToStart } from '../../scripts/setup/prerequisites.ts';
import type { KitName } from '../../scripts/setup/tools.ts';
import type { DebianPackage } from '../../scripts/setup/debian.ts';

export interface TestStackHandle {
  stack: LocalStack;
  runDir: string;
}

declare global {
  var __couponTestStack: TestStackHandle | undefined;
}

/** The parts of jest's global config that say which test files run. */
interface JestGlobalConfig {
  rootDir: string;
  testPathPatterns?: { toExecutor?: (options: { rootDir: string }) => { isMatch(path: string): boolean }; patterns?: string[] } | string[];
  findRelatedTests?: boolean;
  onlyChanged?: boolean;
  onlyFailures?: boolean;
  lastCommit?: boolean;
  changedSince?: string;
}

export default async function globalSetup(globalConfig: JestGlobalConfig): Promise<void> {
  if (process.env.TEST_REUSE_SERVERS !== '1') {
    // The tests own their servers: URLs from the environment (say, a running `npm run stack`) are not used.
    delete process.env.REDIS_URL;
    delete process.env.MYSQL_URL;
    delete process.env.POSTGRES_URL;
  }
  await ensureOrExit(
    { ...(await serversToStart()), kits: kitsForSelectedTests(globalConfig), packages: packagesForSelectedTests(globalConfig) },
    { root: globalConfig.rootDir, command: 'npm test' },
  );

  const testDir = join(globalConfig.rootDir, '.stack', 'test');
  await mkdir(testDir, { recursive: true });
  await removeDeadRuns(testDir);
  const runDir = join(testDir, `run-${process.pid}`);
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

/**
 * The tool kits the tests about to run use: the deploy tools for a test that imports run, toolPath,
 * kubeconformArgs or skaffoldSchemaPath from test/deploy/tools.ts, promtool for one that imports runPromtool from
 * it, schemathesis for one that uses
 * runSchemathesis. Jest does not tell a global setup its test files, so they are found again here from the
 * path patterns; where jest picks them otherwise (--onlyChanged, --findRelatedTests, ...) every test counts.
 */
export function kitsForSelectedTests(config: JestGlobalConfig): KitName[] {
  const kits = new Set<KitName>();
  for (const file of selectedTestFiles(config)) {
    const text = readFileSync(file, 'utf8');
    for (const match of text.matchAll(/import\s*(\{[^}]*\}|\*\s*as\s+\w+)\s*from\s*'(?:\.\/|[^']*\/deploy\/)tools\.ts'/g)) {
      if (/\*|\b(run|toolPath|kubeconformArgs|skaffoldSchemaPath)\b/.test(match[1] ?? '')) kits.add('deploy-tools');
      if (/\*|\brunPromtool\b/.test(match[1] ?? '')) kits.add('prom-tools');
    }
    if (/\brunSchemathesis\b/.test(text)) kits.add('fuzz-tools');
    if (/\brunChaos\b/.test(text)) kits.add('chaos-tools');
  }
  return [...kits].sort();
}

/** The Debian packages the selected files run beyond the servers: iptables for the chaos schedules' partitions. */
export function packagesForSelectedTests(config: JestGlobalConfig): DebianPackage[] {
  return selectedTestFiles(config).some((file) => /\brunChaos\b/.test(readFileSync(file, 'utf8'))) ? ['iptables'] : [];
}

/** The test files this run selects (by path patterns), the unit tests left out: they start nothing. */
function selectedTestFiles(config: JestGlobalConfig): string[] {
  const testDir = join(config.rootDir, 'test');
  let files = readdirSync(testDir, { recursive: true, encoding: 'utf8' })
    .filter((file) => file.endsWith('.test.ts') && !file.startsWith('unit/'))
    .map((file) => join(testDir, file));
  const pickedOtherwise = config.findRelatedTests || config.onlyChanged || config.onlyFailures || config.lastCommit || config.changedSince;
  const patterns = config.testPathPatterns;
  if (!pickedOtherwise && patterns) {
    if (!Array.isArray(patterns) && typeof patterns.toExecutor === 'function') {
      const executor = patterns.toExecutor({ rootDir: config.rootDir });
      files = files.filter((file) => executor.isMatch(file));
    } else {
      const list = Array.isArray(patterns) ? patterns : (patterns.patterns ?? []);
      if (list.length) {
        files = files.filter((file) =>
          list.some((pattern) => {
            try {
              const regex = new RegExp(pattern.replace(/^\.\//, '^'), 'i');
              return regex.test(relative(config.rootDir, file)) || regex.test(file);
            } catch {
              return true;
            }
          }));
      }
    }
  }
  return files;
}
