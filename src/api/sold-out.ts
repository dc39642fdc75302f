import type { Cluster, Redis } from 'ioredis';
import { EVENT_CHANGED_CHANNEL } from '../redis/keys.ts';

/** how often the idle subscriber connection is pinged, so that its socket timeout can notice it went silent */
const PING_INTERVAL_MS = 1_000;

/**
 * The local sold-out flag: once the gate says an event is sold out, this process answers sold_out
 * without asking Redis again. A flag is dropped when an operator changes the event (pub/sub) and, in case
 * that message is missed, after `ttlMs` at the latest.
 */
export class SoldOutFlags {
  readonly #until = new Map<string, number>();
  readonly #ttlMs: number;
  #subscriber: Redis | Cluster | undefined;
  #pinger: NodeJS.Timeout | undefined;

  constructor(ttlMs: number) {
    this.#ttlMs = ttlMs;
  }

  isSoldOut(eventId: string, nowMs: number): boolean {
    const until = this.#until.get(eventId);
    if (until === undefined) return false;
    if (nowMs < until) return true;
    this.#until.delete(eventId);
    return false;
  }

  markSoldOut(eventId: string, nowMs: number): void {
    if (this.#ttlMs > 0) this.#until.set(eventId, nowMs + this.#ttlMs);
  }

  forget(eventId: string): void {
    this.#until.delete(eventId);
  }

  /** Listens for event changes on a connection of its own (a subscribed connection can do nothing else). */
  async start(subscriber: Redis | Cluster): Promise<void> {
    this.#subscriber = subscriber;
    subscriber.on('message', (_channel: string, eventId: string) => this.forget(eventId));
    // After a reconnect the subscription is renewed by ioredis, but changes made meanwhile were missed.
    subscriber.on('ready', () => this.#until.clear());
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
