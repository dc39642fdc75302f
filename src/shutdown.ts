import type { Server } from 'node:http';
import type { Logger } from 'pino';

/** Runs each close step in its own try/catch, so one failing step cannot skip the rest. */
export async function closeAll(logger: Logger, steps: Array<[string, () => Promise<unknown> | unknown]>): Promise<void> {
  for (const [name, step] of steps) {
    try {
      await step();
    } catch (error) {
      logger.warn({ err: error, step: name }, 'close step failed');
    }
  }
}

/** Stops accepting connections and resolves once in-flight requests are answered, or after `timeoutMs`. */
export function closeServer(server: Server, timeoutMs: number): Promise<void> {
  return new Promise((resolve) => {
    const idle = setInterval(() => server.closeIdleConnections(), 50);
    const force = setTimeout(() => server.closeAllConnections(), timeoutMs);
    server.close(() => {
      clearInterval(idle);
      clearTimeout(force);
      resolve();
    });
    server.closeIdleConnections();
  });
}

/** Calls `shutdown` once on SIGTERM or SIGINT, then exits with its outcome. */
export function onTermination(logger: Logger, shutdown: () => Promise<void>): void {
  let stopping: Promise<void> | undefined;
  const handle = (signal: NodeJS.Signals) => {
    if (stopping) return;
    logger.info({ signal }, 'shutting down');
    // However a step hangs (a dependency gone mid-close), the process does not outlive its grace period.
    setTimeout(() => {
      logger.error({ signal }, 'shutdown did not finish in 30 s; exiting');
      process.exit(1);
    }, 30_000).unref();
    stopping = shutdown().then(
      () => process.exit(0),
      (error: unknown) => {
        logger.error({ err: error }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', handle);
  process.on('SIGINT', handle);
}
