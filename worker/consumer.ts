import type { Logger } from 'pino';
import { isDependencyFault } from '../src/dependency-faults.ts';
import { BackgroundLoop } from '../src/loop.ts';
import type { JobQueues } from './job-queues.ts';
import type { Outbox, OutboxEntry } from './outbox.ts';
import type { Persister } from './persister.ts';
import type { WriteSlots } from './write-slots.ts';

export interface ConsumerSettings {
  batchSize: number;
  claimIdleMs: number;
  maxDeliveries: number;
  /** the global write cap: with CLAIM_IDLE_MS it bounds how many entries all workers together may hold */
  ratePerSec: number;
  /** how long one XREADGROUP waits for new entries */
  blockMs?: number;
}

/**
 * How long a read that holds write slots waits for entries when none are there: short, since the slots pass unused
 * meanwhile (Redis 7.0 times blocked reads out in steps of about 100 ms anyway).
 */
const SLOTTED_BLOCK_MS = 50;

/** While draining, a worker reads only entries it got write slots for that start within this share of CLAIM_IDLE_MS. */
const HOLD_SHARE_OF_CLAIM_IDLE = 1 / 2;

/**
 * An insert whose slots passed unused (this process stalled) takes later ones only if they start within this share
 * of CLAIM_IDLE_MS after its entries were read, and is written late otherwise: the rest is margin for the insert
 * and its ack before another worker may claim the entries.
 */
const WRITE_BY_SHARE_OF_CLAIM_IDLE = 3 / 4;
/** the longest a failed batch waits before it is tried again (the backoff doubles from 200 ms up to this) */
const UNFINISHED_MAX_BACKOFF_MS = 5_000;

/**
 * The outbox consumer loop: take over stale entries, read new ones, persist them under the global rate
 * limit, ack only after the commit. A failing MySQL leaves the entries pending and the loop backs off;
 * entries delivered more than MAX_DELIVERIES times move to the pg-boss retry queue.
 *
 * Everything read stays pending on this consumer until it is written, and other workers claim an entry idle for
 * CLAIM_IDLE_MS. So while draining, a worker first reserves write slots on the global timeline, only those that
 * start within half of CLAIM_IDLE_MS (slotsWithin), and then reads no more entries than it got slots for: what
 * all replicas together hold is bounded by the cap and CLAIM_IDLE_MS, however many run, and each entry is written
 * before any other worker could claim it. While the outbox is empty a worker waits for entries without slots (a
 * slot held through a blocking read would pass unused and hold up the others) and takes one insert's worth per
 * stream, which it reserves slots for once read.
 */
export class OutboxConsumer {
  readonly #outbox: Outbox;
  readonly #persister: Persister;
  readonly #jobQueues: JobQueues;
  readonly #settings: Required<ConsumerSettings>;
  readonly #loop: BackgroundLoop;
  #nextClaimAt = 0;
  /** the last read left entries behind: read again at once, with slots reserved first */
  #draining = true;
  /** how many streams the last read found entries in: the slots are shared among them */
  #activeStreams = 1;
  /** how many entries the next read while draining asks slots for */
  #readSize: number;
  /** entries of a batch that failed, still pending on this consumer: taken back first once due */
  #unfinished: OutboxEntry[] = [];
  /** when the unfinished entries are tried again: after a backoff that doubles with each failure in a row */
  #unfinishedDueAt = 0;
  #failuresInARow = 0;
  /** a step failed or the connection came back: entries may be pending on this consumer that it never got (a lost reply) */
  #lookAtOwnPending = false;

  constructor(deps: { outbox: Outbox; persister: Persister; jobQueues: JobQueues; logger: Logger; settings: ConsumerSettings }) {
    this.#outbox = deps.outbox;
    this.#persister = deps.persister;
    this.#jobQueues = deps.jobQueues;
    this.#settings = { blockMs: 1_000, ...deps.settings };
    this.#readSize = deps.persister.insertSize;
    deps.outbox.onReady(() => { this.#lookAtOwnPending = true; });
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

  async #step(): Promise<number> {
    try {
      return await this.#stepOnce();
    } catch (error) {
      this.#lookAtOwnPending = true;
      throw error;
    }
  }

  async #stepOnce(): Promise<number> {
    const { batchSize, claimIdleMs, blockMs, ratePerSec } = this.#settings;
    // A failed batch goes first, and nothing new is read before it (an outage is not hammered with new batches).
    if (this.#unfinished.length > 0 && Date.now() < this.#unfinishedDueAt) return this.#unfinishedDueAt - Date.now();
    // Stale entries can only appear after CLAIM_IDLE_MS, so looking for them twice per that period (at most once
    // a second) is enough, and keeps XAUTOCLAIM's round trips off the path of every batch.
    const claimDue = Date.now() >= this.#nextClaimAt;
    if (!this.#draining) {
      const insertSize = this.#persister.insertSize;
      let entries = await this.#takeBackUnfinished();
      if (entries.length === 0 && claimDue) entries = await this.#claimStale(insertSize);
      if (entries.length === 0) entries = await this.#readNew(insertSize, blockMs);
      const slots = this.#persister.slots();
      slots.writeBy(Date.now() + claimIdleMs * WRITE_BY_SHARE_OF_CLAIM_IDLE);
      await this.#persistAndAck(entries, slots);
      return 0;
    }

    const { slots, retryInMs } = await this.#persister.slotsWithin(this.#readSize, claimIdleMs * HOLD_SHARE_OF_CLAIM_IDLE);
    if (slots.rows === 0) return retryInMs;
    try {
      let entries = await this.#takeBackUnfinished();
      if (entries.length === 0 && claimDue) entries = await this.#claimStale(slots.rows);
      if (entries.length === 0) entries = await this.#readNew(slots.rows, SLOTTED_BLOCK_MS);
      slots.writeBy(Date.now() + claimIdleMs * WRITE_BY_SHARE_OF_CLAIM_IDLE);
      // A read that got all it had slots for may grow, up to PERSIST_BATCH_SIZE and a second of the cap (more would
      // only wait longer, pending, for its slots). Starting at one insert keeps what a process just started (slow
      // to warm up) holds small.
      if (entries.length >= this.#readSize) this.#readSize = Math.min(2 * this.#readSize, batchSize, ratePerSec);
      await this.#persistAndAck(entries, slots);
    } finally {
      await slots.release();
    }
    return 0;
  }

  /** The entries of the last failed batch, if any, claimed back with one more delivery each (see Outbox.reclaim). */
  async #takeBackUnfinished(): Promise<OutboxEntry[]> {
    // After a failed step, whatever is pending on this consumer (the failed batch among it): found by npm run chaos,
    // a read whose reply was lost in a failover left its entries waiting CLAIM_IDLE_MS (rows ~30 s late).
    if (this.#lookAtOwnPending) {
      this.#lookAtOwnPending = false;
      this.#unfinished = [];
      return this.#outbox.ownPending(this.#settings.batchSize);
    }
    if (this.#unfinished.length === 0) return [];
    return this.#outbox.reclaim(this.#unfinished.splice(0));
  }

  /** Up to `count` entries idle for CLAIM_IDLE_MS on any consumer; a full count means more may wait: look again next step. */
  async #claimStale(count: number): Promise<OutboxEntry[]> {
    const { claimIdleMs } = this.#settings;
    const entries = await this.#outbox.claimStale(claimIdleMs, count);
    this.#nextClaimAt = entries.length >= count ? 0 : Date.now() + Math.min(claimIdleMs / 2, 1_000);
    if (entries.length >= count) this.#draining = true;
    return entries;
  }

  /**
   * New entries, `count` in all, shared among the streams the last read found entries in. A stream that gave all
   * it was asked for has more: the next step reads again at once, with slots reserved first.
   */
  async #readNew(count: number, blockMs: number): Promise<OutboxEntry[]> {
    const streams = (await this.#outbox.streams()).length;
    const perStream = Math.max(1, Math.floor(count / this.#activeStreams));
    const entries = await this.#outbox.readNew(perStream, blockMs, perStream * Math.max(1, streams));
    const byStream = Map.groupBy(entries, (entry) => entry.stream);
    if (byStream.size > 0) this.#activeStreams = byStream.size;
    this.#draining = [...byStream.values()].some((read) => read.length >= perStream);
    return entries;
  }

  /** Writes the entries in the given slots (fitted to them first) and acks them; exhausted ones go to the retry queue. */
  async #persistAndAck(read: OutboxEntry[], slots: WriteSlots): Promise<void> {
    const { maxDeliveries } = this.#settings;
    let entries = read;
    const exhausted = entries.filter((entry) => entry.deliveries > maxDeliveries);
    if (exhausted.length > 0 && (await this.#jobQueues.moveToRetry(exhausted))) {
      await this.#outbox.ack(exhausted);
      entries = entries.filter((entry) => entry.deliveries <= maxDeliveries);
    }
    // Slots not needed are free for the other workers at once; entries beyond them (more streams had work than
    // the last read) get slots at the end of the timeline.
    await slots.fit(entries.length);
    if (entries.length === 0) return;
    // Each insert's entries are acked as soon as it is committed: they need not wait, pending, for the later ones.
    let acked = 0;
    try {
      await this.#persister.persist(entries.map((entry) => entry.coupon), slots, async (rows) => {
        await this.#outbox.ack(entries.slice(acked, acked + rows));
        acked += rows;
      });
      this.#failuresInARow = 0;
    } catch (error) {
      const rest = entries.slice(acked);
      if (rest.length <= 1 || isDependencyFault(error)) {
        // MySQL away, or a restore of the gate state raced the insert: the batch is tried again first after a
        // backoff (doubling, at most 5 s), one more delivery each, so an outage moves it to the retry queue
        // after MAX_DELIVERIES. Left pending instead, it waited CLAIM_IDLE_MS (30 s) for another worker to claim
        // it, long after MySQL was back (found by npm run chaos: rows 26 s after a 2.6 s outage).
        this.#unfinished = rest;
        this.#failuresInARow++;
        this.#unfinishedDueAt = Date.now() + Math.min(UNFINISHED_MAX_BACKOFF_MS, 100 * 2 ** this.#failuresInARow);
        throw error;
      }
      // The database answered but refused an insert: one bad entry must not hold back the rest. Persist them
      // one by one, ack those that succeed, and leave the bad ones pending for the delivery limit to catch.
      await slots.fit(rest.length);
      await this.#persistOneByOne(rest, slots);
    }
  }

  async #persistOneByOne(entries: OutboxEntry[], slots: WriteSlots): Promise<void> {
    let failure: unknown;
    for (const entry of entries) {
      try {
        await this.#persister.persist([entry.coupon], slots);
        await this.#outbox.ack([entry]);
      } catch (error) {
        failure ??= error;
      }
    }
    if (failure) throw failure;
  }
}
