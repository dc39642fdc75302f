/**
 * The failure path, on pg-boss in POSTGRES_URL: the dead-letter queue (list, redrive) and a reconcile run now.
 * A short-lived pg-boss client (no maintenance, no cron); never touches Redis or MySQL.
 */
import type { Command } from 'commander';
import { PgBoss } from 'pg-boss';
import { loadConfig } from '../../src/config.ts';
import { redactUrl } from '../../src/logger.ts';
import { PERSIST_DEAD_QUEUE, PERSIST_RETRY_QUEUE, type PersistRetryJob, RECONCILE_QUEUE } from '../../src/jobs/queues.ts';
import { ConsoleError, Progress, printJson, printTable } from './output.ts';

export interface DeadLetterJob {
  id: string;
  deadLetteredAt: string;
  /** retries the job used in the retry queue before it was dead-lettered */
  retries: number | null;
  coupons: number;
  events: string[];
  reason: string;
  lastError: string | null;
}

export async function listDeadLetters(boss: PgBoss, limit: number): Promise<DeadLetterJob[]> {
  const jobs = await boss.findJobs<PersistRetryJob>(PERSIST_DEAD_QUEUE, { queued: true, limit });
  return jobs.map((job) => ({
    id: job.id,
    deadLetteredAt: job.createdOn.toISOString(),
    retries: job.sourceRetryCount,
    coupons: job.data.coupons?.length ?? 0,
    events: [...new Set((job.data.coupons ?? []).map((coupon) => coupon.eventId))].sort(),
    reason: job.data.reason ?? '',
    lastError: describeOutput(job.sourceOutput),
  }));
}

/** Jobs moved per pg-boss call: a long redrive shows its progress batch by batch. */
const REDRIVE_BATCH = 100;

/** Moves up to `limit` dead-lettered jobs, oldest first, back to the retry queue they came from. */
export async function redriveDeadLetters(boss: PgBoss, limit: number, onBatch: (moved: number) => void = () => undefined): Promise<number> {
  let moved = 0;
  while (moved < limit) {
    const batch = await boss.redrive(PERSIST_DEAD_QUEUE, { limit: Math.min(REDRIVE_BATCH, limit - moved), destination: PERSIST_RETRY_QUEUE });
    if (batch === 0) break;
    moved += batch;
    onBatch(batch);
  }
  return moved;
}

function describeOutput(output: object | null): string | null {
  if (!output) return null;
  const message = (output as { message?: unknown }).message;
  return typeof message === 'string' ? message : JSON.stringify(output);
}

async function withBoss<T>(work: (boss: PgBoss) => Promise<T>): Promise<T> {
  const { postgresUrl } = loadConfig(process.env);
  const boss = new PgBoss({ connectionString: postgresUrl, max: 2, application_name: 'coupon-console', supervise: false, schedule: false });
  boss.on('error', (error: Error) => console.error(`pg-boss: ${error.message}`));
  try {
    await boss.start();
  } catch (error) {
    throw new ConsoleError(`cannot reach PostgreSQL at ${redactUrl(postgresUrl)}: ${(error as Error).message}`);
  }
  try {
    return await work(boss);
  } finally {
    await boss.stop({ graceful: false, close: true }).catch(() => undefined);
  }
}

function parseLimit(text: string): number {
  const limit = Number(text);
  if (!Number.isInteger(limit) || limit < 1 || limit > 100_000) throw new ConsoleError(`--limit must be an integer from 1 to 100000, not ${text}`);
  return limit;
}

export function deadLetterCommands(program: Command): void {
  const dlq = program.command('dlq').description('the dead-letter queue of persist jobs (POSTGRES_URL)');

  dlq.command('list')
    .description('dead-lettered persist jobs, oldest first, and what failed them')
    .option('--limit <n>', 'at most this many jobs', '1000')
    .option('--json', 'one JSON line instead of a table', false)
    .action(async (options: { limit: string; json: boolean }) => {
      const limit = parseLimit(options.limit);
      const jobs = await withBoss((boss) => listDeadLetters(boss, limit));
      if (options.json) return printJson({ queue: PERSIST_DEAD_QUEUE, jobs });
      const coupons = jobs.reduce((sum, job) => sum + job.coupons, 0);
      console.log(`${jobs.length} job(s), ${coupons} coupon(s) in ${PERSIST_DEAD_QUEUE}${jobs.length === limit ? ` (first ${limit})` : ''}`);
      if (jobs.length > 0) {
        printTable(['job', 'dead-lettered', 'coupons', 'events', 'retries', 'reason', 'last error'], jobs.map((job) => [
          job.id, job.deadLetteredAt, job.coupons, job.events.join(','), job.retries ?? '-', job.reason, job.lastError ?? '',
        ]));
      }
    });

  dlq.command('redrive')
    .description('moves dead-lettered jobs back to the retry queue; a running worker persists them (rows already in MySQL are skipped)')
    .option('--limit <n>', 'at most this many jobs', '1000')
    .option('--json', 'one JSON line', false)
    .action(async (options: { limit: string; json: boolean }) => {
      const limit = parseLimit(options.limit);
      const moved = await withBoss(async (boss) => {
        const progress = new Progress('jobs redriven');
        const total = await redriveDeadLetters(boss, limit, (batch) => progress.advance(batch));
        progress.finish();
        return total;
      });
      if (options.json) printJson({ redriven: moved, to: PERSIST_RETRY_QUEUE });
      else console.log(`moved ${moved} job(s) from ${PERSIST_DEAD_QUEUE} to ${PERSIST_RETRY_QUEUE}`);
    });
}

export function reconcileCommand(program: Command): void {
  program.command('reconcile')
    .description('asks the workers to compare Redis with MySQL now instead of waiting for RECONCILE_CRON (POSTGRES_URL)')
    .option('--json', 'one JSON line', false)
    .action(async (options: { json: boolean }) => {
      const id = await withBoss((boss) => boss.send(RECONCILE_QUEUE, {}));
      if (options.json) printJson({ reconcileJob: id });
      else console.log(id ? `reconcile queued (job ${id})` : 'a reconcile is already queued');
    });
}
