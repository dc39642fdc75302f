/** Operating-system processes: pids, signals, bounded waits, one-shot commands and the log tails their errors quote. */
import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/** How long a server gets to exit after its stop signal before its process group is SIGKILLed. */
export const STOP_TIMEOUT_MS = 30_000;
const INIT_TIMEOUT_MS = 60_000;

/** Whether a process with this pid exists (EPERM: it exists but belongs to someone else). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone.
  }
}

/** Polls condition every 50 ms; false if it did not hold within timeoutMs. */
export async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}

/**
 * Sends `sig` to the server process `pid` (SIGKILL to its whole process group, so no backend or forked child
 * outlives it) and waits until `gone()`; one that outlasts STOP_TIMEOUT_MS gets SIGKILL after all. False if it
 * was still there 5 s after that.
 */
export async function endProcess(pid: number, sig: NodeJS.Signals, gone: () => boolean): Promise<boolean> {
  signal(sig === 'SIGKILL' ? -pid : pid, sig);
  if (await waitFor(gone, STOP_TIMEOUT_MS)) return true;
  signal(-pid, 'SIGKILL');
  signal(pid, 'SIGKILL');
  return waitFor(gone, 5_000);
}

/** Debian's path for a server binary; a PATH without /usr/sbin (a non-root shell) would miss mariadbd. */
export function binary(name: string): string {
  return ['/usr/sbin', '/usr/bin'].map((dir) => join(dir, name)).find((path) => existsSync(path)) ?? name;
}

/** Runs an initialisation command (initdb, mariadb-install-db) to completion, its output appended to logFile. */
export function runToCompletion(
  kind: string,
  command: string,
  args: string[],
  opts: { logFile: string; runAs?: { uid: number; gid: number }; cwd?: string },
): Promise<void> {
  const log = openSync(opts.logFile, 'a');
  return new Promise<void>((resolveRun, reject) => {
    const child = spawn(command, args, {
      stdio: ['ignore', log, log],
      cwd: opts.cwd,
      uid: opts.runAs?.uid,
      gid: opts.runAs?.gid,
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), INIT_TIMEOUT_MS);
    const fail = async (reason: string) =>
      reject(new Error(`${kind}: ${command} ${reason}\n${await logTail(opts.logFile)}`));
    child.once('error', (err) => {
      clearTimeout(timer);
      void fail(`could not be started: ${err.message}`);
    });
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      if (code === 0) resolveRun();
      else void fail(sig ? `was killed by ${sig} (time limit ${INIT_TIMEOUT_MS / 1000} s)` : `exited with code ${code}`);
    });
  }).finally(() => closeSync(log));
}

export async function logTail(logFile: string, lines = 20): Promise<string> {
  const text = await readFile(logFile, 'utf8').catch(() => '');
  const tail = text.trimEnd().split('\n').slice(-lines).join('\n');
  return `--- last lines of ${logFile} ---\n${tail || '(empty)'}`;
}
