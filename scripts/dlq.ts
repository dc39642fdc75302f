/**
 * The operator's view of the failure path, on pg-boss in POSTGRES_URL:
 *
 *   npm run dlq -- list [--limit N] [--json]     dead-lettered persist jobs, oldest first, and what failed them
 *   npm run dlq -- redrive [--limit N] [--json]  moves them back to the retry queue, where a running worker
 *                                                persists them (rows already in MySQL are skipped)
 *   npm run dlq -- reconcile [--json]            asks the workers to compare Redis with MySQL now instead of
 *                                                waiting for RECONCILE_CRON; any gap goes to the retry queue
 *
 * Exit code 0 on success, 1 on a fault, 2 on a usage error. Never touches Redis or MySQL itself.
 */
import { parseArgs } from 'node:util';
import { PgBoss } from 'pg-boss';
import { loadConfig } from '../src/config.ts';
import { redactUrl } from '../src/logger.ts';
import {
  PERSIST_DEAD_QUEUE, PERSIST_RETRY_QUEUE, type PersistRetryJob, RECONCILE_QUEUE,
} from '../src/jobs/queues.ts';

const USAGE = 'usage: npm run dlq -- list|redrive|reconcile [--limit N] [--json]';

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

/** Moves up to `limit` dead-lettered jobs, oldest first, back to the retry queue they came from. */
export function redriveDeadLetters(boss: PgBoss, limit: number): Promise<number> {
  return boss.redrive(PERSIST_DEAD_QUEUE, { limit, destination: PERSIST_RETRY_QUEUE });
}

function describeOutput(output: object | null): string | null {
  if (!output) return null;
  const message = (output as { message?: unknown }).message;
  return typeof message === 'string' ? message : JSON.stringify(output);
}

async function main(argv: string[]): Promise<number> {
  let parsed;
  try {
    parsed = parseArgs({
      args: argv, allowPositionals: true,
      options: { limit: { type: 'string', default: '1000' }, json: { type: 'boolean', default: false } },
    });
  } catch (error) {
    console.error(`${(error as Error).message}\n${USAGE}`);
    return 2;
  }
  const [command] = parsed.positionals;
  const limit = Number(parsed.values.limit);
  if (!['list', 'redrive', 'reconcile'].includes(command ?? '') || parsed.positionals.length !== 1
    || !Number.isInteger(limit) || limit < 1 || limit > 100_000) {
    console.error(USAGE);
    return 2;
  }
  const json = parsed.values.json;
  const config = loadConfig(process.env);
  // A short-lived client: no maintenance, no cron, just the queries below.
  const boss = new PgBoss({
    connectionString: config.postgresUrl, max: 2, application_name: 'coupon-dlq', supervise: false, schedule: false,
  });
  boss.on('error', (error: Error) => console.error(`pg-boss: ${error.message}`));
  try {
    await boss.start();
  } catch (error) {
    console.error(`cannot reach PostgreSQL at ${redactUrl(config.postgresUrl)}: ${(error as Error).message}`);
    return 1;
  }
  try {
    if (command === 'list') {
      const jobs = await listDeadLetters(boss, limit);
      if (json) {
        console.log(JSON.stringify({ queue: PERSIST_DEAD_QUEUE, jobs }));
      } else {
        const coupons = jobs.reduce((sum, job) => sum + job.coupons, 0);
        console.log(`${jobs.length} job(s), ${coupons} coupon(s) in ${PERSIST_DEAD_QUEUE}${jobs.length === limit ? ` (first ${limit})` : ''}`);
        for (const job of jobs) {
          console.log([
            job.id, job.deadLetteredAt, `coupons=${job.coupons}`, `events=${job.events.join(',')}`,
            `retries=${job.retries ?? '-'}`, `reason="${job.reason}"`, `error="${job.lastError ?? ''}"`,
          ].join('  '));
        }
      }
    } else if (command === 'redrive') {
      const moved = await redriveDeadLetters(boss, limit);
      console.log(json ? JSON.stringify({ redriven: moved, to: PERSIST_RETRY_QUEUE }) : `moved ${moved} job(s) from ${PERSIST_DEAD_QUEUE} to ${PERSIST_RETRY_QUEUE}`);
    } else {
      const id = await boss.send(RECONCILE_QUEUE, {});
      console.log(json ? JSON.stringify({ reconcileJob: id }) : id ? `reconcile queued (job ${id})` : 'a reconcile is already queued');
    }
    return 0;
  } catch (error) {
    console.error(`${command} failed: ${(error as Error).message}`);
    return 1;
  } finally {
    await boss.stop({ graceful: false, close: true }).catch(() => undefined);
  }
}

if (import.meta.main) process.exitCode = await main(process.argv.slice(2));
