/**
 * "Ensure prerequisites", shared by `npm run stack` (scripts/stack.ts), `npm test` (test/support/global-setup.ts,
 * and as a fallback the tests that run tools: test/deploy/tools.ts, test/contract/fuzz.test.ts) and
 * `node scripts/setup/cli.ts`. Given what the caller is about to run, it
 *   - finds the Debian packages missing for it (servers: redis-server, mariadb-server, postgresql; tool
 *     installers: unzip, python3-venv) and, as root with apt, installs them (scripts/setup/debian.ts);
 *   - installs the tool kits under .tools/ that are not there yet (scripts/setup/tools.ts), with Go for the
 *     deploy tools (the machine's: Debian's is too old);
 *   - prints one line per step, stamped with the time since it began, and nothing when all is there;
 *   - otherwise (not root, no apt, no Go, no network) throws SetupStopped with one line naming the command to
 *     run; ensureOrExit prints that line alone and exits 1.
 * Nothing found present is touched, so a second run does nothing.
 *
 * Environment: SETUP_ASSUME_MISSING=redis-server,deploy-tools,... treats those as missing (to watch the install
 * path on a machine that has them; apt-get install --no-upgrade then changes nothing); SETUP_NO_INSTALL=1 stops
 * with the command instead of running apt-get.
 *
 * No import.meta and no top-level await: jest loads this through its CommonJS transform (global-setup.ts).
 */
import { join } from 'node:path';
import { isReachable } from '../local-servers/index.ts';
import { type DebianPackage, aptInstall, assumedMissing, cannotInstall, missingPackages, type PackageCheck } from './debian.ts';
import { Progress, SetupStopped, type System, duration, realSystem } from './system.ts';
import { KITS, type KitName, goProblem, installKits, isInstalled, setupDir } from './tools.ts';

export { SetupStopped } from './system.ts';

export interface Needs {
  /** throwaway servers to be started from the Debian packages */
  redis?: boolean;
  mysql?: boolean;
  postgres?: boolean;
  /** tool kits under .tools/ */
  kits?: KitName[];
  /** other Debian packages the command runs (the benchmark's wrk) */
  packages?: DebianPackage[];
}

export interface EnsureOptions {
  /** the repository */
  root: string;
  /** the command to run again once the person fixed what is missing: 'npm run stack', 'npm test' */
  command: string;
  system?: System;
  env?: NodeJS.ProcessEnv;
  /** the package table (the unit tests put in their own paths) */
  checks?: Record<string, PackageCheck>;
}

export interface EnsureReport {
  /** Debian packages installed */
  installed: string[];
  /** tool kits installed */
  kits: KitName[];
  ms: number;
}

const SERVER_PACKAGES = { redis: 'redis-server', mysql: 'mariadb-server', postgres: 'postgresql' } as const;

export async function ensurePrerequisites(needs: Needs, options: EnsureOptions): Promise<EnsureReport> {
  const system = options.system ?? realSystem;
  const env = options.env ?? process.env;
  const assume = assumedMissing(env);
  const started = system.now();

  const kits = [...new Set(needs.kits ?? [])].map((name) => KITS[name]).filter((kit) => assume.has(kit.name) || !isInstalled(system, options.root, kit));
  const wanted = [
    ...(['redis', 'mysql', 'postgres'] as const).filter((server) => needs[server]).map((server) => SERVER_PACKAGES[server]),
    ...kits.flatMap((kit) => kit.debian),
    ...(needs.packages ?? []),
  ];
  const missing = await missingPackages(system, wanted, { assume, checks: options.checks });
  if (!missing.length && !kits.length) return { installed: [], kits: [], ms: system.now() - started };

  // Everything that would stop the set-up is found before anything is installed.
  if (missing.length) {
    const line = cannotInstall(system, missing, options.command, env);
    if (line) throw new SetupStopped(line);
  }
  if (kits.some((kit) => kit.needsGo)) {
    const line = await goProblem(system, options.command);
    if (line) throw new SetupStopped(line);
  }

  const progress = new Progress(system, started);
  if (missing.length) {
    progress.step(`installing Debian packages ${missing.join(' ')} (as root with apt-get; their services are kept stopped)`);
    await aptInstall(system, progress, missing, {
      command: options.command,
      logFile: join(setupDir(options.root), 'apt.log'),
      checks: options.checks,
    });
  }
  if (kits.length) await installKits(system, progress, options.root, kits, options.command);
  const ms = system.now() - started;
  progress.step(`set-up done in ${duration(ms)}; the next run finds everything in place and does nothing`);
  return { installed: missing, kits: kits.map((kit) => kit.name), ms };
}

/** ensurePrerequisites for a command-line entry point: a stop prints its one line and exits 1. */
export async function ensureOrExit(needs: Needs, options: EnsureOptions): Promise<EnsureReport> {
  try {
    return await ensurePrerequisites(needs, options);
  } catch (err) {
    const line = err instanceof SetupStopped ? err.line : `setup: ${err instanceof Error ? err.message : String(err)}`;
    process.stderr.write(`${line}\n`);
    process.exit(1);
  }
}

/**
 * The servers a stack must start itself: those whose URL (REDIS_URL, MYSQL_URL, POSTGRES_URL) is unset or does
 * not answer (scripts/local-servers reuses the ones that do).
 */
export async function serversToStart(env: NodeJS.ProcessEnv = process.env): Promise<Pick<Needs, 'redis' | 'mysql' | 'postgres'>> {
  const needed = async (url: string | undefined) => {
    if (!url) return true;
    try {
      return !(await isReachable(url));
    } catch {
      return true; // not a URL local-servers can reach: it will say so itself
    }
  };
  const [redis, mysql, postgres] = await Promise.all([needed(env.REDIS_URL), needed(env.MYSQL_URL), needed(env.POSTGRES_URL)]);
  return { redis, mysql, postgres };
}
