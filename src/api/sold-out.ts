import type { Redis } from 'ioredis';
import { EVENT_CHANGED_CHANNEL } from '../redis/keys.ts';

/**
 * The local sold-out flag (I7): once the gate says an event is sold out, this process answers sold_out
 * without asking Redis again. A flag is dropped when an operator changes the event (pub/sub) and, in case
 * that message is missed, after `ttlMs` at the latest.
 */
export class SoldOutFlags {
  readonly #until = new Map<string, number>();
  readonly #ttlMs: number;
  #subscriber: Redis | undefined;

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
  async start(subscriber: Redis): Promise<void> {
    this.#subscriber = subscriber;
    subscriber.on('message', (_channel: string, eventId: string) => this.forget(eventId));
    // After a reconnect the subscription is renewed by ioredis, but changes made meanwhile were missed.
    subscriber.on('ready', () => this.#until.clear());
    await subscriber.subscribe(EVENT_CHANGED_CHANNEL);
  }

  async close(): Promise<void> {
    this.#subscriber?.disconnect();
  }
}
