import type { Cluster, Redis } from 'ioredis';
import { EVENT_CHANGED_CHANNEL } from '../redis/keys.ts';

/** how often the idle subscriber connection is pinged, so that its socket timeout can notice it went silent */
const PING_INTERVAL_MS = 1_000;
/** once a flag has expired, how long the other requests keep it while one request asks the gate again */
export const RECHECK_MS = 1_000;

/**
 * The local sold-out flag: once the gate says an event is sold out, this process answers sold_out
 * without asking Redis again. A flag is dropped when an operator changes the event (pub/sub) and, in case
 * that message is missed, after `ttlMs` at the latest.
 */
export class SoldOutFlags {
  readonly #until = new Map<string, number>();
  /** counts the changes heard (a flag forgotten, all cleared): a sold_out decided before one must not set a flag after it */
  #changes = 0;
  readonly #ttlMs: number;
  #subscriber: Redis | Cluster | undefined;
  #pinger: NodeJS.Timeout | undefined;

  constructor(ttlMs: number) {
    this.#ttlMs = ttlMs;
  }

  /**
   * Whether this process answers sold_out by itself. When a flag expires, the request that finds it so asks the
   * gate, and the others keep the flag for RECHECK_MS meanwhile: under a burst, an expiry sends one request to
   * Redis, not every request in flight (at 10,000 connections that herd was answered 503 by the gate's deadline).
   * The gate's answer then renews the flag (sold_out) or drops it (a coupon issued: the quantity was raised).
   */
  isSoldOut(eventId: string, nowMs: number): boolean {
    const until = this.#until.get(eventId);
    if (until === undefined) return false;
    if (nowMs < until) return true;
    this.#until.set(eventId, nowMs + RECHECK_MS);
    return false;
  }

  /** Taken before a gate call; given back to markSoldOut with its answer. */
  stamp(): number {
    return this.#changes;
  }

  /**
   * Sets the flag on the gate's sold_out, unless a change was heard since the call's stamp: a raise's message
   * that arrives before the reply of a call the gate decided earlier would otherwise be undone by it, and the
   * process would answer 410 for SOLD_OUT_CACHE_MS while coupons remain.
   */
  markSoldOut(eventId: string, nowMs: number, stamp = this.#changes): void {
    if (this.#ttlMs > 0 && stamp === this.#changes) this.#until.set(eventId, nowMs + this.#ttlMs);
  }

  /** An operator changed the event (the event-changed channel): drop its flag. */
  forget(eventId: string): void {
    this.#changes++;
    this.#until.delete(eventId);
  }

  /** The gate issued a coupon of an event flagged sold out (the flag was being re-checked): drop the flag. */
  stockSeen(eventId: string): void {
    this.#until.delete(eventId);
  }

  /** Listens for event changes on a connection of its own (a subscribed connection can do nothing else). */
  async start(subscriber: Redis | Cluster): Promise<void> {
    this.#subscriber = subscriber;
    subscriber.on('message', (_channel: string, eventId: string) => this.forget(eventId));
    // After a reconnect the subscription is renewed by ioredis, but changes made meanwhile were missed.
    subscriber.on('ready', () => {
      this.#changes++;
      this.#until.clear();
    });
    await subscriber.subscribe(EVENT_CHANGED_CHANNEL);
    // A subscribed connection waits for messages with no command outstanding, so the client's socket timeout
    // would never see it go silent (a vanished node, a partition): a PING every second gives it something to
    // wait for. An unanswered PING gets the connection replaced, and 'ready' above clears the flags it missed.
    this.#pinger = setInterval(() => {
      if (subscriber.status === 'ready') subscriber.ping().catch(() => undefined);
    }, PING_INTERVAL_MS).unref();
  }

  async close(): Promise<void> {
    clearInterval(this.#pinger);
    this.#subscriber?.disconnect();
  }
}
