import type { Logger } from 'pino';

/** Resolves after `ms`, or at once when `signal` aborts: a stop never waits out a backoff. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  if (signal?.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });
}

/**
 * One background loop, the way pg-boss runs its workers: `while (!stopping) { step; on error log and back off }`.
 * A step returns how long to wait before the next one (0 for at once); a failing step backs off exponentially,
 * from 100 ms up to `maxBackoffMs`, and a step that succeeds resets the backoff. `stop()` cuts the current wait
 * short, lets the step in hand finish, and gives up waiting for it after `timeoutMs`.
 */
export class BackgroundLoop {
  readonly #name: string;
  readonly #step: (signal: AbortSignal) => Promise<number | void>;
  readonly #logger: Logger;
  readonly #maxBackoffMs: number;
  readonly #stopping = new AbortController();
  #running: Promise<void> | undefined;

  constructor(options: { name: string; step: (signal: AbortSignal) => Promise<number | void>; logger: Logger; maxBackoffMs?: number }) {
    this.#name = options.name;
    this.#step = options.step;
    this.#logger = options.logger;
    this.#maxBackoffMs = options.maxBackoffMs ?? 5_000;
  }

  /** The signal that aborts when stop() is called, for steps that wait on something of their own. */
  get signal(): AbortSignal {
    return this.#stopping.signal;
  }

  start(): void {
    this.#running ??= this.#run();
  }

  async stop(timeoutMs = 10_000): Promise<void> {
    this.#stopping.abort();
    if (!this.#running) return;
    let timer: NodeJS.Timeout | undefined;
    const gaveUp = new Promise<void>((resolve) => {
      timer = setTimeout(() => {
        this.#logger.warn({ loop: this.#name, timeoutMs }, 'loop did not stop in time');
        resolve();
      }, timeoutMs);
    });
    await Promise.race([this.#running, gaveUp]);
    clearTimeout(timer);
  }

  async #run(): Promise<void> {
    const signal = this.#stopping.signal;
    let backoffMs = 0;
    while (!signal.aborted) {
      let waitMs: number;
      try {
        waitMs = (await this.#step(signal)) ?? 0;
        backoffMs = 0;
      } catch (error) {
        backoffMs = Math.min(Math.max(backoffMs * 2, 100), this.#maxBackoffMs);
        waitMs = backoffMs;
        this.#logger.warn({ err: error, loop: this.#name, backoffMs }, 'background step failed; backing off');
      }
      if (waitMs > 0) await sleep(waitMs, signal);
    }
  }
}
