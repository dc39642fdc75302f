/**
 * Starts the api and worker as child processes (the same `node src/api/main.ts` and `node worker/main.ts`
 * a container runs) and waits until they answer. Used by `npm run stack`, the tests and the benchmark, whose
 * own servers (bench/servers/) start the same way.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { freePort } from './local-servers/addresses.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

export interface ServiceProcess {
  /** what runs: api, worker, or the entry file of another HTTP server */
  readonly kind: string;
  readonly url: string;
  readonly port: number;
  /** where /healthz, /readyz and /metrics are: the api's OPS_PORT; the worker and bench servers serve them on `url` */
  readonly opsUrl: string;
  readonly child: ChildProcess;
  /** everything the process wrote so far (pino JSON lines) */
  output(): string;
  /** sends the signal and resolves once the process has exited */
  stop(signal?: NodeJS.Signals): Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface ServiceOptions {
  port: number;
  /** OPS_PORT, the port of /healthz, /readyz and /metrics, for a process that has one apart from `port` (the api) */
  opsPort?: number;
  env: Record<string, string | undefined>;
  /** pipe the child's output through to this process (the stack does; tests keep it) */
  inheritOutput?: boolean;
  readyTimeoutMs?: number;
  /** what start-up waits for: ready for traffic (default), or only alive (/healthz) */
  waitFor?: 'ready' | 'alive';
  /**
   * a cgroup folder (v1 or v2, e.g. /sys/fs/cgroup/memory/<name>) the process runs in from its first instruction,
   * as in a container: it enters the cgroup in a shell that then execs node, so the pid is node's
   */
  cgroup?: string;
}

/** The api, with its probes and metrics on a free port of their own unless `opsPort` names one. */
export const startApi = async (options: ServiceOptions) =>
  startService('api', 'src/api/main.ts', { ...options, opsPort: options.opsPort ?? await freePort() });
export const startWorker = (options: ServiceOptions) => startService('worker', 'worker/main.ts', options);

/**
 * `node <entry>` (relative to the repository) with PORT (and OPS_PORT) in its environment; resolves once it
 * answers /readyz (or /healthz) with 2xx, fails with its output if it exits or is not ready in time.
 */
export async function startService(kind: string, entry: string, options: ServiceOptions): Promise<ServiceProcess> {
  const env: NodeJS.ProcessEnv = {
    ...process.env, ...options.env, PORT: String(options.port), ...(options.opsPort !== undefined && { OPS_PORT: String(options.opsPort) }),
  };
  const [command, args] = options.cgroup === undefined
    ? [process.execPath, [entry]]
    : ['/bin/sh', ['-c', 'echo $$ > "$0/cgroup.procs" && exec "$1" "$2"', options.cgroup, process.execPath, entry]];
  const child = spawn(command, args, {
    cwd: ROOT, env, stdio: ['ignore', options.inheritOutput ? 'inherit' : 'pipe', options.inheritOutput ? 'inherit' : 'pipe'],
  });
  const chunks: string[] = [];
  child.stdout?.on('data', (chunk: Buffer) => chunks.push(chunk.toString()));
  child.stderr?.on('data', (chunk: Buffer) => chunks.push(chunk.toString()));
  const exited = once(child, 'exit').then(([code, signal]) => ({ code: code as number | null, signal: signal as NodeJS.Signals | null }));
  const url = `http://127.0.0.1:${options.port}`;
  const opsUrl = options.opsPort === undefined ? url : `http://127.0.0.1:${options.opsPort}`;
  const service: ServiceProcess = {
    kind, url, port: options.port, opsUrl, child, exited,
    output: () => chunks.join(''),
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      return exited;
    },
  };
  const deadline = Date.now() + (options.readyTimeoutMs ?? 30_000);
  let exitedEarly = false;
  void exited.then(() => { exitedEarly = true; });
  while (true) {
    if (exitedEarly) throw new Error(`${kind} exited during start-up:\n${service.output()}`);
    try {
      // Connection: close, so that no probe stays open in a pool and counts against the process's connection cap.
      const response = await fetch(`${opsUrl}/${options.waitFor === 'alive' ? 'healthz' : 'readyz'}`, {
        headers: { connection: 'close' }, signal: AbortSignal.timeout(1_000),
      });
      if (response.ok) return service;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      await service.stop('SIGKILL');
      throw new Error(`${kind} on port ${options.port} was not ready in time:\n${service.output()}`);
    }
    await sleep(100);
  }
}

/** CPU time (user + system) a process has used so far, in ms, from /proc/<pid>/stat; 0 where that cannot be read. */
export function cpuTimeMs(pid: number): number {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return 0;
  }
  // Fields after the command name, which is in parentheses and may contain spaces.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  // USER_HZ, the unit of those times, is 100 on every Linux this runs on (x86-64 and arm64).
  return ticks * 10;
}
