/**
 * A server's folder and what a dead owner leaves in it: the owner file that claims the folder for one live
 * process, the pid file by which a server left running is found and ended, and a data dir initialised once.
 */
import { existsSync } from 'node:fs';
import { readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { endProcess, isAlive } from './processes.ts';

/** How a server's process is recognised and ended from what it leaves in its folder. */
export interface ServerProcess {
  /** written by the server itself, relative to its folder */
  pidFile: string;
  /** /proc/<pid>/comm of the server, so a recycled pid is never signalled */
  processName: string;
  /** its graceful shutdown signal */
  stopSignal: NodeJS.Signals;
}

const OWNER_FILE = 'owner.pid';

/** Refuses a dir whose servers belong to another live process. */
export async function claimDir(dir: string, kind: string): Promise<void> {
  const owner = await readPid(join(dir, OWNER_FILE));
  if (owner && owner !== process.pid && isAlive(owner)) {
    throw new Error(
      `${kind}: ${dir} is in use by process ${owner}; stop it, or delete ${join(dir, OWNER_FILE)} if that pid is stale`,
    );
  }
}

/** Marks dir as this process's, so no other process starts a server in it while this one lives. */
export async function ownDir(dir: string): Promise<void> {
  await writeFile(join(dir, OWNER_FILE), `${process.pid}\n`);
}

export async function releaseDir(dir: string): Promise<void> {
  await rm(join(dir, OWNER_FILE), { force: true });
}

/** Ends the server a dead owner left running in dir, if its pid file names one that is still that server. */
export async function endLeftover(dir: string, server: ServerProcess): Promise<void> {
  const pid = await readPid(join(dir, server.pidFile));
  if (!pid || !isAlive(pid)) return;
  const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
  if (comm.trim() !== server.processName) return;
  await endProcess(pid, server.stopSignal, () => !isAlive(pid));
}

/** Runs init unless a previous run completed it; a half-initialised data dir is wiped and done again. */
export async function initialiseOnce(
  dir: string,
  dataDir: string,
  kind: string,
  logFile: string,
  init: () => Promise<void>,
): Promise<void> {
  const marker = join(dir, 'initialised');
  if (existsSync(marker)) return;
  await claimDir(dir, kind);
  await rm(dataDir, { recursive: true, force: true });
  await writeFile(logFile, '');
  await init();
  await writeFile(marker, `${new Date().toISOString()}\n`);
}

async function readPid(file: string): Promise<number | undefined> {
  const text = await readFile(file, 'utf8').catch(() => '');
  const pid = Number.parseInt(text.split('\n')[0] ?? '', 10);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}
