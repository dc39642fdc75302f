/**
 * One throwaway server process: spawned detached in its own folder, ready only once a real client round trip
 * succeeds, stopped or killed on request, and asked to shut down when its owner exits without stopping it.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { HOST, freePort, isReachable } from './addresses.ts';
import { type ServerProcess, claimDir, endLeftover, ownDir, releaseDir } from './leftovers.ts';
import { endProcess, logTail, signal, waitFor } from './processes.ts';

export type ServerKind = 'redis' | 'redis-sentinel' | 'mariadb' | 'postgres';

export interface LocalServer {
  readonly kind: ServerKind;
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  /** (Re)start on the same port and data dir; resolves when the server accepts connections. */
  start(): Promise<void>;
  /** Graceful stop; resolves when the port is closed. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL the server's process group (for fault tests); resolves when the port is closed. */
  kill(): Promise<void>;
}

export interface ServerSpec {
  kind: ServerKind;
  url: string;
  port: number;
  dir: string;
  logFile: string;
  process: ServerProcess;
  command: string;
  args: string[];
  runAs?: { uid: number; gid: number };
  cwd?: string;
  /** one client round trip; throws while the server is not ready */
  probe(): Promise<void>;
  /** once the probe passed (creating the database); tried again with the probe until the ready timeout while it throws */
  afterReady?(): Promise<void>;
}

const READY_TIMEOUT_MS = 30_000;

/** The absolute folder (created) and the port (a free one unless given) of a server about to start. */
export async function serverPlace(opts: { dir: string; port?: number }): Promise<{ dir: string; port: number }> {
  const dir = resolve(opts.dir);
  const port = opts.port ?? (await freePort());
  await mkdir(dir, { recursive: true });
  return { dir, port };
}

/** Starts the server the spec describes; resolves once it is ready. */
export async function startManagedServer(spec: ServerSpec): Promise<LocalServer> {
  const server = new ManagedServer(spec);
  await server.start();
  return server;
}

class ManagedServer implements LocalServer {
  readonly kind: ServerKind;
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  #spec: ServerSpec;
  #child: ChildProcess | undefined;
  #exited = true;
  #starting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #onOwnerExit = () => {
    // Synchronous by necessity: the owner is exiting. The detached server finishes its shutdown on its own.
    if (this.#child?.pid && !this.#exited) signal(this.#child.pid, this.#spec.process.stopSignal);
  };

  constructor(spec: ServerSpec) {
    this.kind = spec.kind;
    this.url = spec.url;
    this.port = spec.port;
    this.dir = spec.dir;
    this.#spec = spec;
  }

  start(): Promise<void> {
    if (!this.#exited) return this.#starting ?? Promise.resolve();
    this.#starting = this.#start().finally(() => (this.#starting = undefined));
    return this.#starting;
  }

  stop(): Promise<void> {
    this.#stopping ??= this.#shutDown(this.#spec.process.stopSignal).finally(() => (this.#stopping = undefined));
    return this.#stopping;
  }

  kill(): Promise<void> {
    return this.#shutDown('SIGKILL');
  }

  async #start(): Promise<void> {
    const spec = this.#spec;
    await claimDir(spec.dir, spec.kind);
    await endLeftover(spec.dir, spec.process);
    if (await isReachable(spec.url, 500)) {
      throw new Error(`${spec.kind}: port ${spec.port} on ${HOST} is already in use by another process`);
    }
    await ownDir(spec.dir);

    const log = openSync(spec.logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(spec.command, spec.args, {
        detached: true,
        stdio: ['ignore', log, log],
        cwd: spec.cwd ?? spec.dir,
        uid: spec.runAs?.uid,
        gid: spec.runAs?.gid,
      });
    } finally {
      closeSync(log);
    }
    this.#child = child;
    this.#exited = false;
    let exitReason = '';
    child.once('exit', (code, sig) => {
      this.#exited = true;
      exitReason = sig ? `was killed by ${sig}` : `exited with code ${code}`;
    });
    child.once('error', (err) => {
      this.#exited = true;
      exitReason = `could not be started: ${err.message}`;
    });
    // The server must not keep its owner alive; stop() keeps the event loop busy with its own timers.
    child.unref();
    process.on('exit', this.#onOwnerExit);

    const deadline = Date.now() + READY_TIMEOUT_MS;
    let lastError = '';
    for (;;) {
      if (this.#exited) {
        process.off('exit', this.#onOwnerExit);
        throw await this.#failure(exitReason);
      }
      try {
        await spec.probe();
        // In the loop: a round trip that fails once (a lost SYN on a lossy link outlives a 2 s connect timeout) is
        // tried again like the probe, rather than failing the start of a server that is up.
        await spec.afterReady?.();
        break;
      } catch (err) {
        lastError = (err as Error).message;
      }
      if (Date.now() > deadline) {
        await this.#shutDown('SIGKILL').catch(() => {});
        throw await this.#failure(`was not ready within ${READY_TIMEOUT_MS / 1000} s (last error: ${lastError})`);
      }
      await sleep(100);
    }
  }

  async #shutDown(sig: NodeJS.Signals): Promise<void> {
    const pid = this.#child?.pid;
    if (pid && !this.#exited && !(await endProcess(pid, sig, () => this.#exited))) {
      throw await this.#failure(`did not exit after ${sig} and SIGKILL`);
    }
    process.off('exit', this.#onOwnerExit);
    if (!(await waitFor(async () => !(await isReachable(this.url, 200)), 10_000))) {
      throw await this.#failure('stopped, but its port stayed open');
    }
    await releaseDir(this.#spec.dir);
  }

  async #failure(reason: string): Promise<Error> {
    return new Error(`${this.kind} on ${HOST}:${this.port} ${reason}\n${await logTail(this.#spec.logFile)}`);
  }
}
