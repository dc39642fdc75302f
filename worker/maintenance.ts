import type { Logger } from 'pino';
import type { CouponStore } from '../src/db/store.ts';
import type { GateStateKeeper } from '../src/gate-state.ts';
import type { CouponRedis } from '../src/redis/client.ts';
import { eventIdOfOutbox, eventKeys } from '../src/redis/keys.ts';
import { BackgroundLoop } from '../src/loop.ts';
import type { EventArchiver } from './archiver.ts';
import type { JobQueues } from './job-queues.ts';
import type { WorkerMetrics } from './metrics.ts';
import type { OutboxAdmin } from './outbox-admin.ts';
import type { PresaleScaler } from './presale.ts';

/**
 * Housekeeping beside the consumer loop, each task on its own period:
 * - compare the gate state with MySQL whenever Redis may have lost writes (a flush, a restart, a failover) and
 *   repair it from MySQL;
 * - trim acked entries so every outbox stays bounded, and drop consumers of gone processes;
 * - refresh the lag, pending, issued-minus-persisted and dead-letter gauges;
 * - archive ended events whose coupons are all persisted, EVENT_RETENTION after their end, and drop their series;
 * - with PRESALE_REPLICAS, raise the api's floor before each sale and give it back after (worker/presale.ts).
 */
export class Maintenance {
  readonly #deps: {
    redis: CouponRedis; store: CouponStore; keeper: GateStateKeeper; outbox: OutboxAdmin; jobQueues: JobQueues;
    archiver: EventArchiver; metrics: WorkerMetrics; logger: Logger; claimIdleMs: number; retentionMs: number;
    presale?: PresaleScaler | undefined;
  };
  readonly #tasks: Array<{ name: string; everyMs: number; run: () => Promise<void>; dueAt: number }>;
  readonly #loop: BackgroundLoop;

  constructor(deps: {
    redis: CouponRedis; store: CouponStore; keeper: GateStateKeeper; outbox: OutboxAdmin; jobQueues: JobQueues;
    archiver: EventArchiver; metrics: WorkerMetrics; logger: Logger; claimIdleMs: number; retentionMs: number;
    presale?: PresaleScaler | undefined;
  }) {
    this.#deps = deps;
    this.#tasks = [
      { name: 'check gate state', everyMs: 1_000, run: () => this.checkGateState(), dueAt: 0 },
      { name: 'trim outbox', everyMs: 5_000, run: () => this.trimOutbox(), dueAt: 0 },
      { name: 'outbox gauges', everyMs: 2_000, run: () => this.refreshOutboxGauges(), dueAt: 0 },
      { name: 'persisted gauges', everyMs: 10_000, run: () => this.refreshPersistedGauges(), dueAt: 0 },
      { name: 'dead-letter gauge', everyMs: 5_000, run: () => deps.jobQueues.refreshMetrics(), dueAt: 0 },
      // A short retention is looked at as often (tests); a retention of days once every half minute.
      { name: 'archive events', everyMs: Math.min(Math.max(deps.retentionMs, 1_000), 30_000), run: () => this.archiveEvents(), dueAt: 0 },
    ];
    const presale = deps.presale;
    if (presale) this.#tasks.push({ name: 'pre-sale scaling', everyMs: 5_000, run: async () => { await presale.step(); }, dueAt: 0 });
    this.#loop = new BackgroundLoop({ name: 'maintenance', step: (signal) => this.#runDueTasks(signal), logger: deps.logger });
  }

  start(): void {
    this.#loop.start();
  }

  stop(): Promise<void> {
    return this.#loop.stop();
  }

  /** Runs every task whose period is up; a failing task is retried next period without holding up the others. */
  async #runDueTasks(signal: AbortSignal): Promise<number> {
    const now = Date.now();
    for (const task of this.#tasks) {
      if (signal.aborted || now < task.dueAt) continue;
      task.dueAt = now + task.everyMs;
      try {
        await task.run();
      } catch (error) {
        this.#deps.logger.debug({ err: error, task: task.name }, 'maintenance task failed; retried next period');
      }
    }
    return 200;
  }

  /** the first sweep a minute after start: at start the marker check has just compared every event anyway */
  #lastSweep = Date.now();

  /**
   * Every second: is the connected Redis server the one last compared with MySQL (the marker names it)? A flush,
   * a restart or a failover says no, and the gate state is compared and repaired, fenced, before the api issues
   * on it again. Once a minute also: any single event whose state went missing is restored.
   */
  async checkGateState(): Promise<void> {
    const { keeper } = this.#deps;
    await keeper.ensureChecked();
    if (Date.now() - this.#lastSweep < 60_000) return;
    await keeper.restoreMissing();
    this.#lastSweep = Date.now();
  }

  async trimOutbox(): Promise<void> {
    const { outbox, claimIdleMs } = this.#deps;
    for (const stream of await outbox.streams()) {
      await outbox.trim(stream);
      await outbox.removeIdleConsumers(stream, Math.max(10 * claimIdleMs, 60_000));
    }
  }

  /** Events this process has series for: those no longer registered (archived, by any worker) lose them. */
  readonly #gauged = new Set<string>();

  async refreshOutboxGauges(): Promise<void> {
    const { outbox, metrics } = this.#deps;
    const registered = new Set<string>();
    for (const stream of await outbox.streams()) {
      const event = eventIdOfOutbox(stream);
      registered.add(event);
      const state = await outbox.groupState(stream);
      if (!state) continue;
      metrics.outboxLag.set({ event }, state.lag);
      metrics.outboxPending.set({ event }, state.pending);
      this.#gauged.add(event);
    }
    for (const event of this.#gauged) if (!registered.has(event)) this.#forget(event);
  }

  /**
   * Archives the events that are due (see EventArchiver), then forgets them here at once: their series, and the
   * registry as last read, so the next task sees the registry without them.
   */
  async archiveEvents(): Promise<void> {
    const archived = await this.#deps.archiver.archiveDue();
    if (archived.length === 0) return;
    for (const event of archived) this.#forget(event);
    this.#deps.outbox.forgetStreams();
  }

  #forget(event: string): void {
    this.#deps.metrics.forgetEvent(event);
    this.#gauged.delete(event);
    this.#behind.delete(event);
  }

  /** Events whose issued-minus-persisted gauge is above zero: counted again until it is back to zero. */
  readonly #behind = new Set<string>();

  /**
   * issued minus persisted, per event. MySQL is asked only about events whose outbox still has work, or that
   * were behind last time, so finished events of the past cost the shared database nothing.
   */
  async refreshPersistedGauges(): Promise<void> {
    const { outbox, redis, store, metrics } = this.#deps;
    for (const stream of await outbox.streams()) {
      const event = eventIdOfOutbox(stream);
      const state = await outbox.groupState(stream);
      const draining = state !== null && (state.lag > 0 || state.pending > 0);
      if (!draining && !this.#behind.has(event)) continue;
      const [issued, persisted] = await Promise.all([redis.get(eventKeys(event).issued), store.countPersisted(event)]);
      const behind = Math.max(0, Number(issued ?? 0) - persisted);
      metrics.issuedMinusPersisted.set({ event }, behind);
      if (behind > 0) this.#behind.add(event);
      else this.#behind.delete(event);
    }
  }
}
