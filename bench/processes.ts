/**
 * Starting the processes under test. The product's api and worker come from scripts/services.ts; the bench-only
 * servers (hello, naive, incr-direct) are started the same way: `node <file>` with PORT in the environment,
 * ready once /readyz answers 200.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { freePort } from '../scripts/local-servers/index.ts';
import { startApi, startWorker, type ServiceProcess } from '../scripts/services.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));

export interface Running {
  urls: string[];
  /** CPU time (user + system, ms) the design's processes have used so far, from /proc */
  cpuMs(): number;
  stop(): Promise<void>;
}

export type ServerKind = 'hello' | 'naive' | 'incr-direct' | 'outbox';

/** `count` processes of one design, each on its own free port. The outbox design's worker is started separately. */
export async function startDesign(kind: ServerKind, count: number, env: Record<string, string>): Promise<Running> {
  const processes: Array<{ url: string; pid: number; stop(): Promise<unknown> }> = [];
  try {
    for (let i = 0; i < count; i += 1) {
      const port = await freePort();
      if (kind !== 'outbox') processes.push(await startBenchServer(`bench/servers/${kind}.ts`, port, env));
      else {
        const api = await startApi({ port, env });
        processes.push({ url: api.url, pid: api.child.pid!, stop: () => api.stop() });
      }
    }
  } catch (error) {
    await Promise.all(processes.map((p) => p.stop()));
    throw error;
  }
  return {
    urls: processes.map((p) => p.url),
    cpuMs: () => processes.reduce((sum, p) => sum + processCpuMs(p.pid), 0),
    stop: async () => { await Promise.all(processes.map((p) => p.stop())); },
  };
}

/** utime + stime of a process in ms (Linux clock ticks are 10 ms); 0 where /proc is not there. */
export function processCpuMs(pid: number): number {
  try {
    const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return 0;
  }
}

export async function startOutboxWorker(env: Record<string, string>): Promise<ServiceProcess> {
  return startWorker({ port: await freePort(), env });
}

async function startBenchServer(entry: string, port: number, env: Record<string, string>): Promise<{ url: string; pid: number; stop(): Promise<unknown> }> {
  const child = spawn(process.execPath, [entry], { cwd: ROOT, env: { ...process.env, ...env, PORT: String(port) }, stdio: ['ignore', 'pipe', 'pipe'] });
  const output: string[] = [];
  child.stdout.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => output.push(chunk.toString()));
  const exited = once(child, 'exit');
  let hasExited = false;
  void exited.then(() => { hasExited = true; });
  const url = `http://127.0.0.1:${port}`;
  const stop = async () => {
    if (!hasExited) child.kill('SIGTERM');
    await exited;
  };
  const deadline = Date.now() + 30_000;
  for (;;) {
    if (hasExited) throw new Error(`${entry} exited during start-up:\n${output.join('')}`);
    try {
      const response = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(1_000) });
      if (response.ok) return { url, pid: child.pid!, stop };
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`${entry} on port ${port} was not ready in time:\n${output.join('')}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
