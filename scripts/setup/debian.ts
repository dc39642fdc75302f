/**
 * The Debian packages the project runs: the three servers scripts/local-servers starts, and what the tool
 * installers need. Each package is known present by the files scripts/local-servers runs (or a command on PATH);
 * missing ones are installed with apt-get when running as root: `apt-get update` once per process, `install
 * --no-upgrade` (nothing already installed is touched), with a policy-rc.d that keeps apt from starting the
 * services it installs, and any service that started anyway stopped again.
 */
import { join } from 'node:path';
import { type Progress, SetupStopped, type System, duration } from './system.ts';

export interface PackageCheck {
  /** what the package is for, in a sentence's words */
  purpose: string;
  /** every group must be satisfied: by one of its paths existing, or (a bare name) a command on PATH */
  requires: string[][];
  /** or: a command that exits 0 when the package's part is there */
  probe?: [string, ...string[]];
  /** system services the package may start, stopped again after the install */
  services?: string[];
}

const POSTGRES_BIN = '/usr/lib/postgresql/15/bin';

/** The packages, checked the way scripts/local-servers and the installers use them. */
export const DEBIAN_PACKAGES: Record<string, PackageCheck> = {
  'redis-server': {
    purpose: 'Redis',
    requires: [['/usr/sbin/redis-server', '/usr/bin/redis-server', 'redis-server']],
    services: ['redis-server'],
  },
  'mariadb-server': {
    purpose: 'MariaDB (the local MySQL)',
    requires: [['/usr/sbin/mariadbd', '/usr/bin/mariadbd', 'mariadbd'], ['/usr/sbin/mariadb-install-db', '/usr/bin/mariadb-install-db', 'mariadb-install-db']],
    services: ['mariadb'],
  },
  postgresql: {
    purpose: 'PostgreSQL 15',
    requires: [[join(POSTGRES_BIN, 'postgres')], [join(POSTGRES_BIN, 'initdb')]],
    services: ['postgresql'],
  },
  unzip: { purpose: 'unzip', requires: [['unzip']] },
  'python3-venv': { purpose: "Python's venv", requires: [], probe: ['python3', '-c', 'import ensurepip, venv'] },
  wrk: { purpose: "wrk (the benchmark's hot-path load generator)", requires: [['wrk']] },
  iptables: { purpose: 'iptables (the chaos schedules\' partitions and drops)', requires: [['/usr/sbin/iptables', 'iptables']] },
  'python3-dev': {
    purpose: "Python's headers (a C extension of the chaos tools)", requires: [],
    probe: ['python3', '-c', "import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()['include'], 'Python.h')))"],
  },
  gcc: { purpose: 'a C compiler (a C extension of the chaos tools)', requires: [['gcc']] },
  'libnetfilter-queue-dev': {
    purpose: "libnetfilter_queue's headers (the chaos schedules' delay)", requires: [['/usr/include/libnetfilter_queue/libnetfilter_queue.h']],
  },
};

export type DebianPackage = keyof typeof DEBIAN_PACKAGES & string;

/**
 * SETUP_ASSUME_MISSING=redis-server,deploy-tools,... treats those as missing whatever is installed: the way to
 * watch the install path on a machine that has everything (apt-get install --no-upgrade then changes nothing).
 */
export function assumedMissing(env: NodeJS.ProcessEnv = process.env): Set<string> {
  return new Set((env.SETUP_ASSUME_MISSING ?? '').split(',').map((name) => name.trim()).filter(Boolean));
}

export async function isPresent(system: System, name: string, checks = DEBIAN_PACKAGES): Promise<boolean> {
  const check = checks[name];
  if (!check) throw new Error(`unknown Debian package ${name}`);
  const found = (candidate: string) => (candidate.includes('/') ? system.exists(candidate) : system.which(candidate) !== undefined);
  if (!check.requires.every((group) => group.some(found))) return false;
  if (check.probe) {
    const [command, ...args] = check.probe;
    if ((await system.run(command, args)).code !== 0) return false;
  }
  return true;
}

export async function missingPackages(
  system: System,
  names: string[],
  options: { assume?: Set<string>; checks?: Record<string, PackageCheck> } = {},
): Promise<string[]> {
  const unique = [...new Set(names)];
  const present = await Promise.all(unique.map((name) => (options.assume?.has(name) ? false : isPresent(system, name, options.checks))));
  return unique.filter((_, index) => !present[index]);
}

/** The command a person runs to get the packages, with sudo when not root. */
export function aptCommand(packages: string[], root: boolean): string {
  return `${root ? '' : 'sudo '}apt-get install -y --no-install-recommends ${packages.join(' ')}`;
}

/**
 * Why these packages cannot be installed here, as the one line to print; undefined when they can (root, apt).
 * `command` is the npm command to run again afterwards.
 */
export function cannotInstall(system: System, packages: string[], command: string, env: NodeJS.ProcessEnv = process.env): string | undefined {
  const what = `missing Debian package${packages.length > 1 ? 's' : ''} ${packages.join(', ')}`;
  if (!system.which('apt-get')) {
    return `setup: ${what}, and this machine has no apt-get: install ${packages.length > 1 ? 'them' : 'it'} with its package manager, then run \`${command}\` again`;
  }
  if (!system.isRoot()) {
    return `setup: ${what} (installing needs root): run \`${aptCommand(packages, false)}\`, then \`${command}\` again`;
  }
  if (env.SETUP_NO_INSTALL === '1') {
    return `setup: ${what} (SETUP_NO_INSTALL=1): run \`${aptCommand(packages, true)}\`, then \`${command}\` again`;
  }
  return undefined;
}

const POLICY_RC_D = '/usr/sbin/policy-rc.d';
let updated = false;

/** For the unit tests: forget that apt-get update already ran in this process. */
export function forgetAptUpdate(): void {
  updated = false;
}

export async function aptInstall(
  system: System,
  progress: Progress,
  packages: string[],
  options: { command: string; logFile: string; checks?: Record<string, PackageCheck> },
): Promise<void> {
  const checks = options.checks ?? DEBIAN_PACKAGES;
  const services = packages.flatMap((name) => checks[name]?.services ?? []);
  const runningBefore = new Set(await runningServices(system, services));
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const fail = (step: string, tail: string[], code: number) => {
    const reason = tail.filter((line) => /^(E|Err):/.test(line.trim())).at(-1)?.trim() ?? tail.at(-1)?.trim() ?? '';
    return new SetupStopped(
      `setup: ${step} failed (exit ${code}${reason ? `: ${reason}` : ''}; log ${options.logFile}): ` +
        `run \`apt-get update && ${aptCommand(packages, true)}\` to see why${/resolv|fetch|connect/i.test(reason) ? ' once the network is back' : ''}, then \`${options.command}\` again`,
    );
  };

  // Keep apt from starting the services it installs: only the project's throwaway servers should run.
  const ownPolicy = !system.exists(POLICY_RC_D);
  // A Ctrl-C (npm run stack exits from its signal handler) must not leave the policy behind.
  const removePolicy = () => system.remove(POLICY_RC_D);
  if (ownPolicy) {
    system.writeExecutable(POLICY_RC_D, '#!/bin/sh\n# written by scripts/setup while it runs apt-get\nexit 101\n');
    process.once('exit', removePolicy);
  }
  try {
    const lockWait = ['-o', 'DPkg::Lock::Timeout=600'];
    if (!updated) {
      const started = system.now();
      progress.step('apt-get update');
      const result = await system.run('apt-get', [...lockWait, 'update', '-q'], { env, logFile: options.logFile });
      if (result.code !== 0) throw fail('apt-get update', result.tail, result.code);
      updated = true;
      progress.step(`apt-get update done (${duration(system.now() - started)})`);
    }
    const started = system.now();
    progress.step(`apt-get install ${packages.join(' ')}`);
    const result = await system.run(
      'apt-get',
      [...lockWait, 'install', '-y', '-q', '--no-install-recommends', '--no-upgrade', ...packages],
      { env, logFile: options.logFile },
    );
    if (result.code !== 0) throw fail(`apt-get install ${packages.join(' ')}`, result.tail, result.code);
    progress.step(`apt-get install done (${duration(system.now() - started)})`);
  } finally {
    if (ownPolicy) {
      removePolicy();
      process.removeListener('exit', removePolicy);
    }
  }

  // A service apt started anyway (a policy-rc.d that allows it, systemd's presets) is stopped and kept from boot.
  for (const service of await runningServices(system, services)) {
    if (runningBefore.has(service)) continue;
    progress.step(`stopping the ${service} service apt started (the project runs its own servers)`);
    if (system.exists('/run/systemd/system')) await system.run('systemctl', ['disable', '--now', service]);
    else await system.run('service', [service, 'stop']);
  }
  const still = await missingPackages(system, packages, { checks });
  if (still.length) {
    throw new SetupStopped(
      `setup: apt-get installed ${packages.join(' ')} but ${still.join(', ')} still looks missing (log ${options.logFile}): ` +
        `run \`${aptCommand(still, true)}\` and check, then \`${options.command}\` again`,
    );
  }
}

async function runningServices(system: System, services: string[]): Promise<string[]> {
  const systemd = system.exists('/run/systemd/system');
  if (!systemd && !system.which('service')) return [];
  const running = await Promise.all(
    services.map(async (service) =>
      systemd
        ? (await system.run('systemctl', ['is-active', '--quiet', service])).code === 0
        : (await system.run('service', [service, 'status'])).code === 0),
  );
  return services.filter((_, index) => running[index]);
}
