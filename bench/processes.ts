/**
 * The processes a benchmark run starts, and the record of what is still running so that a failed or interrupted
 * run stops it all: the designs' api processes (the product's api and worker come from scripts/services.ts; the
 * bench-only servers hello, naive and incr-direct start the same way, `node <file>` with PORT, ready once /readyz
 * answers 200), the load generator and the bystander.
 */
import { fork, spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { freePort } from '../scripts/local-servers/index.ts';
import { type ServiceProcess, cpuTimeMs, startApi, startService, startWorker } from '../scripts/services.ts';
import type { BystanderSamples, BystanderSpec } from './bystander.ts';
import type { LoadResult, LoadSpec } from './load.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

interface Stoppable {
  stop(): Promise<unknown>;
}

/** Everything the run has started and not stopped yet (processes, the counter sampler); stopAll() ends it all. */
export class Running {
  readonly #running = new Set<Stoppable>();

  async track<T extends Stoppable>(started: T | Promise<T>): Promise<T> {
    const child = await started;
    this.#running.add(child);
    return child;
  }

  async stop(child: Stoppable): Promise<void> {
    this.#running.delete(child);
    await child.stop();
  }

  /** The child was ended another way: stopAll() leaves it alone. */
  forget(child: Stoppable): void {
    this.#running.delete(child);
  }

  async stopAll(): Promise<void> {
    const running = [...this.#running];
    this.#running.clear();
    await Promise.allSettled(running.map((child) => child.stop()));
  }
}

export interface Design {
  urls: string[];
  /** CPU time (user + system, ms) the design's processes have used so far, from /proc */
  cpuMs(): number;
  stop(): Promise<void>;
}

export type ServerKind = 'hello' | 'naive' | 'incr-direct' | 'outbox';

/** `count` processes of one design, each on its own free port. The outbox design's worker is started separately. */
export async function startDesign(kind: ServerKind, count: number, env: Record<string, string>): Promise<Design> {
  const processes: ServiceProcess[] = [];
  try {
    for (let i = 0; i < count; i += 1) {
      const options = { port: await freePort(), env };
      processes.push(await (kind === 'outbox' ? startApi(options) : startService(kind, `bench/servers/${kind}.ts`, options)));
    }
  } catch (error) {
    await Promise.all(processes.map((p) => p.stop()));
    throw error;
  }
  return {
    urls: processes.map((p) => p.url),
    cpuMs: () => processes.reduce((sum, p) => sum + cpuTimeMs(p.child.pid!), 0),
    stop: async () => { await Promise.all(processes.map((p) => p.stop())); },
  };
}

export async function startOutboxWorker(env: Record<string, string>): Promise<ServiceProcess> {
  return startWorker({ port: await freePort(), env });
}

/** One bounded burst from the load generator, a process of its own (bench/load.ts). */
export async function runLoadGenerator(spec: LoadSpec): Promise<LoadResult> {
  const child = spawn(process.execPath, [join(ROOT, 'bench', 'load.ts'), JSON.stringify(spec)], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  const [code] = await once(child, 'exit');
  if (code !== 0) throw new Error(`the load generator exited with code ${code}`);
  const result = JSON.parse(await readFile(spec.outFile, 'utf8')) as LoadResult;
  await rm(spec.outFile, { force: true });
  return result;
}

/** The bystander (bench/bystander.ts), running once this resolves; stop() ends it and returns its samples. */
export async function startBystander(spec: BystanderSpec, running: Running): Promise<{ pid: number; stop(): Promise<BystanderSamples> }> {
  const child = fork(join(ROOT, 'bench', 'bystander.ts'), [JSON.stringify(spec)], { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  // Until it is stopped properly, a failed run kills it.
  const killer = await running.track({ stop: async () => { child.kill('SIGKILL'); } });
  await once(child, 'message');
  return {
    pid: child.pid!,
    async stop() {
      const exited = once(child, 'exit');
      child.send('stop');
      await exited;
      running.forget(killer);
      return JSON.parse(await readFile(spec.outFile, 'utf8')) as BystanderSamples;
    },
  };
}
