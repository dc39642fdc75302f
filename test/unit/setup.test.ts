/**
 * scripts/setup on stand-in machines (no I/O but a temporary folder): what it installs, in which order, what it
 * prints, and the one line it stops with where it cannot install.
 */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { forgetAptUpdate } from '../../scripts/setup/debian.ts';
import { ensurePrerequisites, SetupStopped } from '../../scripts/setup/prerequisites.ts';
import type { RunOptions, RunResult, System } from '../../scripts/setup/system.ts';

const SERVER_FILES = [
  '/usr/bin/redis-server',
  '/usr/sbin/mariadbd',
  '/usr/bin/mariadb-install-db',
  '/usr/lib/postgresql/15/bin/postgres',
  '/usr/lib/postgresql/15/bin/initdb',
];
const PACKAGE_FILES: Record<string, string[]> = {
  'redis-server': ['/usr/bin/redis-server'],
  'mariadb-server': ['/usr/sbin/mariadbd', '/usr/bin/mariadb-install-db'],
  postgresql: ['/usr/lib/postgresql/15/bin/postgres', '/usr/lib/postgresql/15/bin/initdb'],
  unzip: ['/usr/bin/unzip'],
};

interface Machine extends System {
  files: Set<string>;
  calls: string[];
  lines: string[];
  running: Set<string>;
}

/** A machine with the given files; apt-get install "installs" a package's files, as a real one would. */
function machine(opts: { root?: boolean; files?: string[]; commands?: string[]; venv?: boolean; answer?: (command: string, args: string[]) => RunResult | undefined; startsServices?: boolean } = {}): Machine {
  let clock = 0;
  const files = new Set(opts.files ?? []);
  const commands = new Set(opts.commands ?? ['apt-get', 'service', 'python3', 'bash']);
  let venv = opts.venv ?? true;
  const m: Machine = {
    files,
    calls: [],
    lines: [],
    running: new Set(),
    isRoot: () => opts.root ?? true,
    exists: (path) => files.has(path),
    which: (command) => (commands.has(command) || files.has(`/usr/bin/${command}`) ? `/usr/bin/${command}` : undefined),
    async run(command: string, args: string[], options?: RunOptions): Promise<RunResult> {
      clock += 1_500;
      const call = [command, ...args.filter((arg) => !arg.startsWith('DPkg::') && arg !== '-o')].join(' ');
      m.calls.push(call);
      const answered = opts.answer?.(command, args);
      if (answered) return answered;
      if (command === 'python3') return { code: venv ? 0 : 1, tail: [] };
      if (command === 'service') return { code: m.running.has(args[0]!) && args[1] === 'status' ? 0 : 3, tail: [] };
      if (command === 'apt-get' && args.includes('install')) {
        for (const name of args.filter((arg) => !arg.startsWith('-') && arg !== 'install' && !arg.includes('='))) {
          for (const file of PACKAGE_FILES[name] ?? []) files.add(file);
          if (name === 'python3-venv') venv = true;
          if (opts.startsServices && name === 'redis-server') m.running.add('redis-server');
        }
      }
      if (command === 'apt-get') options?.onLine?.('Reading package lists...', 'stdout');
      return { code: 0, tail: ['Reading package lists...'] };
    },
    writeExecutable: (path) => {
      m.calls.push(`write ${path}`);
      files.add(path);
    },
    remove: (path) => {
      m.calls.push(`remove ${path}`);
      files.delete(path);
    },
    now: () => clock,
    print: (line) => m.lines.push(line),
  };
  return m;
}

let root: string;
beforeEach(() => {
  forgetAptUpdate();
  root = mkdtempSync(join(tmpdir(), 'coupon-setup-'));
  mkdirSync(join(root, 'scripts'));
  writeFileSync(join(root, 'scripts', 'install-fuzz-tools.sh'), 'echo install-fuzz-tools: installed\n');
  writeFileSync(join(root, 'scripts', 'install-k8s-tools.sh'), 'echo install-k8s-tools: installed\n');
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const servers = { redis: true, mysql: true, postgres: true };

async function stopLine(promise: Promise<unknown>): Promise<string> {
  const error = await promise.then(() => undefined, (err: unknown) => err);
  expect(error).toBeInstanceOf(SetupStopped);
  return (error as SetupStopped).line;
}

describe('the set-up of `npm run stack` and `npm test`', () => {
  test('when everything is there, then it runs nothing and prints nothing', async () => {
    const m = machine({ files: SERVER_FILES });
    const report = await ensurePrerequisites(servers, { root, command: 'npm run stack', system: m, env: {} });
    expect(report).toMatchObject({ installed: [], kits: [] });
    expect(m.calls).toEqual([]);
    expect(m.lines).toEqual([]);
  });

  test('when the servers are missing on a root machine with apt, then it installs them once, with services kept stopped, one timed line a step', async () => {
    const m = machine({ files: ['/usr/bin/redis-server'] });
    const report = await ensurePrerequisites(servers, { root, command: 'npm run stack', system: m, env: {} });
    expect(report.installed).toEqual(['mariadb-server', 'postgresql']);
    expect(m.calls.filter((call) => !call.startsWith('service'))).toEqual([
      'write /usr/sbin/policy-rc.d',
      'apt-get update -q',
      'apt-get install -y -q --no-install-recommends --no-upgrade mariadb-server postgresql',
      'remove /usr/sbin/policy-rc.d',
    ]);
    expect(m.lines.every((line) => /^setup \[ *\d+\.\ds\] /.test(line))).toBe(true);
    expect(m.lines.join('\n')).toMatch(/apt-get update done \(1\.5s\)[\s\S]*apt-get install done \(1\.5s\)[\s\S]*set-up done in/);

    // The second run finds them and does nothing; apt-get update runs once per process in any case.
    m.calls.length = 0;
    await ensurePrerequisites(servers, { root, command: 'npm run stack', system: m, env: {} });
    expect(m.calls).toEqual([]);
    await ensurePrerequisites(servers, { root, command: 'npm test', system: m, env: { SETUP_ASSUME_MISSING: 'redis-server' } });
    expect(m.calls.filter((call) => call.startsWith('apt-get'))).toEqual(['apt-get install -y -q --no-install-recommends --no-upgrade redis-server']);
  });

  test('when apt starts a service anyway, then it is stopped again, and one that ran before is left alone', async () => {
    const m = machine({ files: SERVER_FILES.filter((file) => !file.includes('redis')), startsServices: true });
    m.running.add('postgresql');
    await ensurePrerequisites(servers, { root, command: 'npm test', system: m, env: { SETUP_ASSUME_MISSING: 'postgresql' } });
    expect(m.calls).toContain('service redis-server stop');
    expect(m.calls).not.toContain('service postgresql stop');
  });

  test('when a package is missing and this is not root, then it stops with one line naming the sudo command, before anything runs', async () => {
    const m = machine({ root: false, files: SERVER_FILES.filter((file) => !file.includes('postgres')) });
    const line = await stopLine(ensurePrerequisites(servers, { root, command: 'npm run stack', system: m, env: {} }));
    expect(line).toBe('setup: missing Debian package postgresql (installing needs root): run `sudo apt-get install -y --no-install-recommends postgresql`, then `npm run stack` again');
    expect(m.calls).toEqual([]);
  });

  test('when the machine has no apt-get, then the one line says to use its package manager', async () => {
    const m = machine({ commands: ['python3'], files: [] });
    const line = await stopLine(ensurePrerequisites(servers, { root, command: 'npm test', system: m, env: {} }));
    expect(line).toMatch(/^setup: missing Debian packages redis-server, mariadb-server, postgresql, and this machine has no apt-get: .*`npm test` again$/);
    expect(line).not.toContain('\n');
  });

  test('when the network is down, then apt fails and the one line names the apt command to run once it is back', async () => {
    const m = machine({
      files: SERVER_FILES.filter((file) => !file.includes('redis')),
      answer: (command, args) => (command === 'apt-get' && args.includes('install')
        ? { code: 100, tail: ["W: Failed to fetch http://deb.example/dists/bookworm/InRelease  Temporary failure resolving 'deb.example'", 'E: Unable to locate package redis-server'] }
        : undefined),
    });
    const line = await stopLine(ensurePrerequisites(servers, { root, command: 'npm test', system: m, env: {} }));
    expect(line).toMatch(/^setup: apt-get install redis-server failed \(exit 100: E: Unable to locate package redis-server; log .*apt\.log\): run `apt-get update && apt-get install -y --no-install-recommends redis-server` to see why, then `npm test` again$/);
    expect(m.files.has('/usr/sbin/policy-rc.d')).toBe(false);
  });

  test('when a tool kit is missing, then its installer runs once, its steps are printed, and the next run does nothing', async () => {
    const m = machine({
      files: SERVER_FILES,
      answer: (command, args, ) => {
        if (command !== 'bash') return undefined;
        m.files.add(join(root, '.tools/fuzz-venv/bin/st'));
        return { code: 0, tail: [] };
      },
    });
    const report = await ensurePrerequisites({ kits: ['fuzz-tools'] }, { root, command: 'npm test', system: m, env: {} });
    expect(report.kits).toEqual(['fuzz-tools']);
    expect(m.calls).toEqual(['python3 -c import ensurepip, venv', `bash ${join(root, 'scripts/install-fuzz-tools.sh')}`]);
    expect(m.lines.join('\n')).toMatch(/fuzz tools: installing into \.tools\/[\s\S]*fuzz tools: ready \(1\.5s\)/);

    m.calls.length = 0;
    m.lines.length = 0;
    await ensurePrerequisites({ kits: ['fuzz-tools'] }, { root, command: 'npm test', system: m, env: {} });
    expect(m.calls).toEqual([]);
    expect(m.lines).toEqual([]);

    // A changed installer (a new pinned version) runs again.
    writeFileSync(join(root, 'scripts', 'install-fuzz-tools.sh'), 'echo install-fuzz-tools: newer\n');
    await ensurePrerequisites({ kits: ['fuzz-tools'] }, { root, command: 'npm test', system: m, env: {} });
    expect(m.calls).toContain(`bash ${join(root, 'scripts/install-fuzz-tools.sh')}`);
  });

  test('when the deploy tools are missing and there is no Go, then it stops with one line before installing anything', async () => {
    const m = machine({ files: SERVER_FILES, venv: false });
    const line = await stopLine(ensurePrerequisites({ ...servers, kits: ['deploy-tools'] }, { root, command: 'npm test', system: m, env: {} }));
    expect(line).toMatch(/^setup: the deploy tools in \.tools\/ are built with Go, and there is no go on PATH or in \/usr\/local\/go: install Go 1\.21 or newer .*`npm test` again$/);
    expect(m.calls.filter((call) => call.startsWith('apt-get'))).toEqual([]);
  });

  test('when an installer fails, then the one line names its last words, its log and the command to rerun', async () => {
    const m = machine({
      files: [...SERVER_FILES, '/usr/local/go/bin/go'],
      answer: (command) => {
        if (command === '/usr/local/go/bin/go') return { code: 0, tail: ['go1.19.8'] };
        return undefined;
      },
    });
    const line = await stopLine(ensurePrerequisites({ kits: ['deploy-tools'] }, { root, command: 'npm test', system: m, env: {} }));
    expect(line).toMatch(/need Go 1\.21 or newer, and \/usr\/local\/go\/bin\/go is go1\.19\.8/);

    const failing = machine({
      files: [...SERVER_FILES, '/usr/bin/unzip'],
      commands: ['apt-get', 'python3', 'bash', 'go'],
      answer: (command) => {
        if (command === '/usr/bin/go') return { code: 0, tail: ['go1.26.8'] };
        if (command === 'bash') return { code: 1, tail: ['go: github.com/yannh/kubeconform@v0.7.0: dial tcp: lookup proxy.golang.org: no such host'] };
        return undefined;
      },
    });
    const failed = await stopLine(ensurePrerequisites({ kits: ['deploy-tools'] }, { root, command: 'npm test', system: failing, env: {} }));
    expect(failed).toMatch(/^setup: scripts\/install-k8s-tools\.sh failed \(exit 1: go: .*no such host; log \.tools\/\.setup\/deploy-tools\.log\): run `bash scripts\/install-k8s-tools\.sh` to see why once the network is back, then `npm test` again$/);
  });
});
