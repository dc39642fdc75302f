/**
 * What a running `npm run stack` tells the console about itself: its URLs, its admin token and the write cap, in
 * .stack/dev/stack.json (mode 0600: it holds the token; STACK_STATE_FILE puts it elsewhere). The stack writes it
 * once it is up and removes it when it stops; the console reads it when ADMIN_TOKEN (or --admin-token) is not
 * given, so `npm run console -- events list` works against the local stack with nothing exported. A file left
 * by a stack that died (its pid is gone) is not used.
 */
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface StackState {
  /** the stack's process: the file counts only while it lives */
  pid: number;
  apiUrl: string;
  /** the api's /metrics (its OPS_PORT) */
  apiMetricsUrl: string;
  /** the worker's /metrics */
  workerUrl: string;
  adminToken: string;
  mysqlUrl: string;
  postgresUrl: string;
  /** PERSIST_RATE_PER_SEC the worker runs with */
  persistRatePerSec: number;
}

export function stackStateFile(root: string, env: NodeJS.ProcessEnv = process.env): string {
  return env.STACK_STATE_FILE || join(root, '.stack', 'dev', 'stack.json');
}

export function writeStackState(file: string, state: StackState): void {
  rmSync(file, { force: true }); // a file left by another user keeps its mode otherwise
  writeFileSync(file, `${JSON.stringify(state, null, 2)}\n`, { mode: 0o600 });
}

export function removeStackState(file: string): void {
  try {
    if ((readStackStateFile(file)?.pid ?? process.pid) === process.pid) rmSync(file, { force: true });
  } catch {
    // never in the way of a stop
  }
}

function readStackStateFile(file: string): StackState | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const state = JSON.parse(text) as Partial<StackState>;
  if (typeof state.pid !== 'number' || typeof state.apiUrl !== 'string' || typeof state.adminToken !== 'string') return undefined;
  return state as StackState;
}

/** The state of a stack that is running now, or undefined (no file, a bad one, or its stack is gone). */
export function readStackState(file: string): StackState | undefined {
  let state: StackState | undefined;
  try {
    state = readStackStateFile(file);
  } catch {
    return undefined;
  }
  if (!state) return undefined;
  try {
    process.kill(state.pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EPERM') return undefined;
  }
  return state;
}
