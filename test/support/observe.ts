/**
 * What the fault tests read from outside the processes: Prometheus metrics, /readyz, the operator's
 * dead-letter CLI, the coupon rows an event ended with, the record of measured figures that docs/reliability.md
 * is filled from (.stack/faults/figures/<scenario>.json), and the logs a scenario leaves (.stack/faults/logs/).
 */
import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LocalServer } from '../../scripts/local-servers/index.ts';
import type { ServiceProcess } from '../../scripts/services.ts';
import { describeNetworkError } from './load.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

/** Runs SQL against the MySQL an event's coupons are in (a FaultStack's `query`, or the harness's). */
export type Query = <T = Record<string, unknown>>(sql: string, params?: unknown[]) => Promise<T[]>;

/** Sum of every sample of a Prometheus metric (all label sets) on a /metrics endpoint. */
export async function scrapeMetric(serviceUrl: string, name: string): Promise<number> {
  const text = await (await fetch(`${serviceUrl}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  let sum = 0;
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (match && match[1] === name) sum += Number(match[3]);
  }
  return sum;
}

export async function readyz(serviceUrl: string): Promise<{ status: number; body: Record<string, unknown> }> {
  try {
    const response = await fetch(`${serviceUrl}/readyz`, { signal: AbortSignal.timeout(2_000) });
    return { status: response.status, body: (await response.json()) as Record<string, unknown> };
  } catch (error) {
    return { status: 0, body: { error: describeNetworkError(error) } };
  }
}

/** Runs the operator's dead-letter CLI (`npm run dlq -- ...`) against a stack; resolves with its parsed JSON. */
export function runDlq(env: Record<string, string>, ...args: string[]): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['scripts/dlq.ts', ...args, '--json'], { cwd: ROOT, env: { ...process.env, ...env }, timeout: 30_000 },
      (error, stdout, stderr) => {
        if (error) return reject(new Error(`dlq ${args.join(' ')} failed: ${error.message}\n${stderr}`));
        try {
          resolve(JSON.parse(stdout.trim().split('\n').pop()!) as Record<string, unknown>);
        } catch {
          reject(new Error(`dlq ${args.join(' ')} printed no JSON:\n${stdout}\n${stderr}`));
        }
      });
  });
}

export interface PersistedCheck {
  rows: number;
  distinctUsers: number;
  distinctSequences: number;
  minSequence: number;
  maxSequence: number;
  /** 202 answers whose user has no row, or a row with another sequence */
  issuedButMissing: string[];
}

/**
 * The coupon an apply answer tells its client of: a 202's sequence, or the one a 409 already_applied names
 * ("user u already holds coupon 7"); undefined for any other answer.
 */
export function toldSequence(status: number, body: { sequence?: number; error?: string; message?: string }): number | undefined {
  if (status === 202) return body.sequence;
  const held = status === 409 && body.error === 'already_applied' ? /holds coupon (\d+)/.exec(body.message ?? '') : null;
  return held ? Number(held[1]) : undefined;
}

/** Compares the coupon rows of an event with the 202 answers the clients saw. */
export async function checkPersisted(
  query: Query, eventId: string, issued: Array<{ userId: string; sequence: number }>,
): Promise<PersistedCheck> {
  const rows = await query<{ user_id: string; sequence: number }>('select user_id, sequence from coupon where event_id = ?', [eventId]);
  const byUser = new Map(rows.map((row) => [row.user_id, Number(row.sequence)]));
  const sequences = rows.map((row) => Number(row.sequence));
  return {
    rows: rows.length,
    distinctUsers: byUser.size,
    distinctSequences: new Set(sequences).size,
    minSequence: sequences.length ? Math.min(...sequences) : 0,
    maxSequence: sequences.length ? Math.max(...sequences) : 0,
    issuedButMissing: issued.filter((coupon) => byUser.get(coupon.userId) !== coupon.sequence).map((coupon) => coupon.userId),
  };
}

export async function countRows(query: Query, eventId: string): Promise<number> {
  const [row] = await query<{ n: number }>('select count(*) as n from coupon where event_id = ?', [eventId]);
  return Number(row?.n ?? 0);
}

/** Prints the figures a scenario measured and keeps them under .stack/faults/figures for docs/reliability.md. */
export async function recordFigures(scenario: string, figures: Record<string, unknown>): Promise<void> {
  const record = { scenario, at: new Date().toISOString(), ...figures };
  console.log(`[fault figures] ${JSON.stringify(record)}`);
  const dir = join(ROOT, '.stack', 'faults', 'figures');
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, `${scenario}.json`), `${JSON.stringify(record, null, 2)}\n`);
}

/** Keeps the output of a scenario's processes and servers under .stack/faults/logs/<scenario> (the stack's folder goes). */
export async function keepLogs(scenario: string, sources: Array<[string, ServiceProcess | LocalServer]>): Promise<void> {
  const dir = join(ROOT, '.stack', 'faults', 'logs', scenario);
  await mkdir(dir, { recursive: true });
  for (const [name, source] of sources) {
    const text = 'output' in source
      ? source.output()
      : await readFile(join(source.dir, source.kind === 'redis-sentinel' ? 'sentinel.log' : 'redis.log'), 'utf8').catch(() => '');
    await writeFile(join(dir, `${name}.log`), text);
  }
}
