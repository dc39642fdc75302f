import { createHash } from 'node:crypto';
import type { Logger } from 'pino';
import type { Job, PgBoss } from 'pg-boss';
import { isDependencyFault } from '../src/dependency-faults.ts';
import type { IssuedCoupon } from '../src/domain/coupon.ts';
import {
  PERSIST_DEAD_QUEUE, PERSIST_RETRY_QUEUE, type PersistRetryJob, type QueueSettings, RECONCILE_QUEUE, ensureQueues,
} from '../src/jobs/queues.ts';
import { sleep } from '../src/loop.ts';
import type { WorkerMetrics } from './metrics.ts';
import type { OutboxEntry } from './outbox.ts';
import type { Persister } from './persister.ts';
import type { Reconciler } from './reconciler.ts';

/**
 * The worker's pg-boss queues: the failure path (entries the outbox could not persist go to a retry queue with
 * exponential backoff, and from there to a dead-letter queue) and the scheduled reconcile (a cron schedule runs
 * the reconciler). PostgreSQL being down never stops the main path: the worker keeps persisting from the outbox
 * and connects here when it can.
 */
export class JobQueues {
  readonly #createBoss: () => PgBoss;
  #boss: PgBoss | undefined;
  readonly #persister: Persister;
  readonly #reconciler: Reconciler;
  readonly #metrics: WorkerMetrics;
  readonly #logger: Logger;
  readonly #settings: QueueSettings & { reconcileCron: string };
  readonly #stopping = new AbortController();
  #starting: Promise<void> | undefined;

  constructor(deps: {
    createBoss: () => PgBoss; persister: Persister; reconciler: Reconciler; metrics: WorkerMetrics; logger: Logger;
    settings: QueueSettings & { reconcileCron: string };
  }) {
    this.#createBoss = deps.createBoss;
    this.#persister = deps.persister;
    this.#reconciler = deps.reconciler;
    this.#metrics = deps.metrics;
    this.#logger = deps.logger;
    this.#settings = deps.settings;
  }

  get ready(): boolean {
    return this.#boss !== undefined;
  }

  /** Connects in the background, retrying until PostgreSQL answers; resolves at once. */
  start(): void {
    this.#starting ??= this.#connect();
  }

  async #connect(): Promise<void> {
    let delayMs = 500;
    while (!this.#stopping.signal.aborted) {
      // A fresh instance per attempt: one whose start() failed is not reused.
      const boss = this.#createBoss();
      boss.on('error', (error: Error) => this.#logger.warn({ err: error }, 'pg-boss error'));
      try {
        await boss.start();
        await ensureQueues(boss, this.#settings);
        await boss.work<PersistRetryJob>(PERSIST_RETRY_QUEUE, { batchSize: 1, pollingIntervalSeconds: 1 }, async ([job]) => {
          if (job) await this.#persistRetryJob(boss, job);
        });
        await boss.work(RECONCILE_QUEUE, { batchSize: 1, pollingIntervalSeconds: 1 }, async () => {
          await this.reconcile();
        });
        await boss.schedule(RECONCILE_QUEUE, this.#settings.reconcileCron);
        this.#boss = boss;
        this.#logger.info('failure path ready (pg-boss started)');
        return;
      } catch (error) {
        this.#logger.warn({ err: error, retryInMs: delayMs }, 'pg-boss unavailable; the outbox keeps persisting meanwhile');
        await boss.stop({ graceful: false, close: true }).catch(() => undefined);
        await sleep(delayMs, this.#stopping.signal);
        delayMs = Math.min(delayMs * 2, 10_000);
      }
    }
  }

  /**
   * Hands entries that exhausted their deliveries to the retry queue. Returns false (and the caller keeps
   * them pending in the outbox) when pg-boss cannot take them right now.
   */
  async moveToRetry(entries: readonly OutboxEntry[]): Promise<boolean> {
    if (!this.#boss) return false;
    try {
      await this.send(entries.map((entry) => entry.coupon), `delivered more than the limit (${entries[0]?.deliveries ?? 0} times)`);
      this.#metrics.movedToRetry.inc(entries.length);
      return true;
    } catch (error) {
      this.#logger.warn({ err: error }, 'could not move entries to the retry queue; they stay in the outbox');
      return false;
    }
  }

  async send(coupons: IssuedCoupon[], reason: string): Promise<void> {
    const boss = this.#boss;
    if (!boss) throw new Error('the failure path is not connected to PostgreSQL yet');
    for (let start = 0; start < coupons.length; start += 500) {
      const job: PersistRetryJob = { coupons: coupons.slice(start, start + 500), reason };
      await boss.send(PERSIST_RETRY_QUEUE, job);
    }
  }

  /**
   * Persists a retry job's coupons. When MySQL refuses the job but is there (a constraint, a trigger, a malformed
   * coupon: not a dependency fault), one coupon must not hold back the others: they are persisted one by one,
   * and only the refused ones go on, as a job of their own that starts its retries (and, after RETRY_LIMIT, its
   * way to the dead-letter queue) afresh. A job whose every coupon is refused fails as a whole, as before.
   */
  async #persistRetryJob(boss: PgBoss, job: Job<PersistRetryJob>): Promise<void> {
    const { coupons, reason } = job.data;
    try {
      await this.#persister.persist(coupons);
      return;
    } catch (error) {
      if (coupons.length <= 1 || isDependencyFault(error)) throw error;
    }
    const refused: IssuedCoupon[] = [];
    let refusal: unknown;
    for (const coupon of coupons) {
      try {
        await this.#persister.persist([coupon]);
      } catch (error) {
        // MySQL or Redis went away half-way: the whole job is retried later (rows already written are skipped).
        if (isDependencyFault(error)) throw error;
        refused.push(coupon);
        refusal ??= error;
      }
    }
    if (refused.length === 0) return;
    if (refused.length === coupons.length) throw refusal;
    // A fixed id: if this job runs again (the worker died before completing it), the split is not sent twice.
    await boss.send(PERSIST_RETRY_QUEUE, { coupons: refused, reason } satisfies PersistRetryJob, {
      id: uuidOf(`${job.id}:refused`), startAfter: this.#settings.retryDelaySec,
    });
    this.#logger.warn({
      job: job.id, persisted: coupons.length - refused.length, refused, err: refusal,
    }, 'retry job split: MySQL refused some of its coupons; the others are persisted, the refused ones retried on their own');
  }

  /**
   * Re-enqueues every coupon Redis issued that MySQL lacks, for events whose outbox is fully drained, except
   * those the dead-letter queue already holds: re-sending them would only add a copy there on every run.
   */
  async reconcile(): Promise<number> {
    const boss = this.#boss;
    // An event whose coupons wait in the retry queue (acked in the outbox, absent from MySQL) is skipped, not the
    // whole run: one event's long backoff must not keep the others' gaps open.
    const missing = await this.#reconciler.findMissing(
      boss ? (eventId) => deadLetteredUsers(boss, eventId) : undefined,
      boss ? (eventId) => waitingForRetry(boss, eventId) : undefined,
    );
    if (missing.length > 0) {
      this.#logger.warn({ count: missing.length }, 'reconcile found issued coupons missing from MySQL; re-enqueued');
      await this.send(missing, 'reconcile: issued in Redis, missing in MySQL');
    }
    return missing.length;
  }

  async refreshMetrics(): Promise<void> {
    if (!this.#boss) return;
    const queue = await this.#boss.getQueue(PERSIST_DEAD_QUEUE);
    this.#metrics.deadLetterJobs.set(queue?.queuedCount ?? 0);
  }

  async stop(): Promise<void> {
    this.#stopping.abort();
    await this.#starting;
    await this.#boss?.stop({ graceful: true, timeout: 5_000, close: true });
  }
}

/** Dead-letter jobs read per query when the reconciler asks what the queue holds of one event. */
const DEAD_LETTER_PAGE = 1_000;

/** The users of one event whose coupons wait in the dead-letter queue (jobs not yet redriven or deleted). */
async function deadLetteredUsers(boss: PgBoss, eventId: string): Promise<Set<string>> {
  const users = new Set<string>();
  for (let after: string | undefined; ;) {
    const jobs = await boss.findJobs<PersistRetryJob>(PERSIST_DEAD_QUEUE, {
      data: { coupons: [{ eventId }] }, queued: true, limit: DEAD_LETTER_PAGE, ...(after !== undefined && { after }),
    });
    for (const job of jobs) {
      for (const coupon of job.data.coupons ?? []) if (coupon.eventId === eventId) users.add(coupon.userId);
    }
    if (jobs.length < DEAD_LETTER_PAGE) return users;
    after = jobs[jobs.length - 1]!.id;
  }
}

/** Whether a retry job holding coupons of the event is queued, waiting out its backoff, or running. */
async function waitingForRetry(boss: PgBoss, eventId: string): Promise<boolean> {
  const data = { coupons: [{ eventId }] };
  if ((await boss.findJobs<PersistRetryJob>(PERSIST_RETRY_QUEUE, { data, queued: true, limit: 1 })).length > 0) return true;
  const recent = await boss.findJobs<PersistRetryJob>(PERSIST_RETRY_QUEUE, { data, limit: DEAD_LETTER_PAGE });
  return recent.some((job) => job.state === 'active');
}

/** A UUID (v4 layout) derived from text: the same text always names the same pg-boss job. */
function uuidOf(text: string): string {
  const hex = createHash('sha256').update(text).digest('hex');
  const variant = ((Number.parseInt(hex[16]!, 16) & 0x3) | 0x8).toString(16);
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-${variant}${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}
