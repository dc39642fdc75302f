import type { Logger } from 'pino';
import { isDependencyFault } from '../src/dependency-faults.ts';
import { BackgroundLoop } from '../src/loop.ts';
import type { JobQueues } from './job-queues.ts';
import type { Outbox, OutboxEntry } from './outbox.ts';
import type { Persister } from './persister.ts';

export interface ConsumerSettings {
  batchSize: number;
  claimIdleMs: number;
  maxDeliveries: number;
  /** the global write cap: with CLAIM_IDLE_MS it bounds how many entries one read may take */
  ratePerSec: number;
  /** how long one XREADGROUP waits for new entries */
  blockMs?: number;
}

/**
 * The outbox consumer loop: take over stale entries, read new ones, persist them under the global rate
 * limit, ack only after the commit. A failing MySQL leaves the entries pending and the loop backs off;
 * entries delivered more than MAX_DELIVERIES times move to the pg-boss retry queue.
 */
export class OutboxConsumer {
  readonly #outbox: Outbox;
  readonly #persister: Persister;
  readonly #jobQueues: JobQueues;
  readonly #settings: Required<ConsumerSettings>;
  readonly #loop: BackgroundLoop;
  #nextClaimAt = 0;

  constructor(deps: { outbox: Outbox; persister: Persister; jobQueues: JobQueues; logger: Logger; settings: ConsumerSettings }) {
    this.#outbox = deps.outbox;
    this.#persister = deps.persister;
    this.#jobQueues = deps.jobQueues;
    this.#settings = { blockMs: 1_000, ...deps.settings };
    // A failing batch (MySQL away) leaves its entries pending and the loop backs off, up to 5 s.
    this.#loop = new BackgroundLoop({ name: `outbox consumer ${deps.outbox.consumer}`, step: () => this.#step(), logger: deps.logger });
  }

  start(): void {
    this.#loop.start();
  }

  /** Finishes the batch in hand (persist and ack), then stops; a backoff in progress is cut short. */
  stop(): Promise<void> {
    return this.#loop.stop();
  }

  async #step(): Promise<void> {
    const { batchSize, claimIdleMs, maxDeliveries, blockMs, ratePerSec } = this.#settings;
    let entries: OutboxEntry[] = [];
    // Stale entries can only appear after CLAIM_IDLE_MS, so looking for them twice per that period (at most once
    // a second) is enough, and keeps XAUTOCLAIM's round trips off the path of every batch. A full batch of
    // stale entries means more may wait: look again at once.
    if (Date.now() >= this.#nextClaimAt) {
      entries = await this.#outbox.claimStale(claimIdleMs, batchSize);
      this.#nextClaimAt = entries.length >= batchSize ? 0 : Date.now() + Math.min(claimIdleMs / 2, 1_000);
    }
    if (entries.length === 0) {
      // What one read takes must be written within half of CLAIM_IDLE_MS at the cap, or other workers would
      // claim entries this one is about to write.
      const maxHeld = Math.max(batchSize, Math.floor((ratePerSec * claimIdleMs) / 2_000));
      entries = await this.#outbox.readNew(batchSize, blockMs, maxHeld);
    }
    if (entries.length === 0) return;

    const exhausted = entries.filter((entry) => entry.deliveries > maxDeliveries);
    if (exhausted.length > 0 && (await this.#jobQueues.moveToRetry(exhausted))) {
      await this.#outbox.ack(exhausted);
      entries = entries.filter((entry) => entry.deliveries <= maxDeliveries);
    }
    await this.#persistAndAck(entries);
  }

  async #persistAndAck(entries: OutboxEntry[]): Promise<void> {
    if (entries.length === 0) return;
    try {
      await this.#persister.persist(entries.map((entry) => entry.coupon));
    } catch (error) {
      if (entries.length === 1 || isDependencyFault(error)) throw error;
      // The database answered but refused the batch: one bad entry must not hold back the rest. Persist them
      // one by one, ack those that succeed, and leave the bad ones pending for the delivery limit to catch.
      await this.#persistOneByOne(entries);
      return;
    }
    await this.#outbox.ack(entries);
  }

  async #persistOneByOne(entries: OutboxEntry[]): Promise<void> {
    let failure: unknown;
    for (const entry of entries) {
      try {
        await this.#persister.persist([entry.coupon]);
        await this.#outbox.ack([entry]);
      } catch (error) {
        failure ??= error;
      }
    }
    if (failure) throw failure;
  }
}
