/** Stops the servers global-setup started (and only those) and deletes this run's folder. */
import { rm } from 'node:fs/promises';
import type { TestStackHandle } from './global-setup.ts';

export default async function globalTeardown(): Promise<void> {
  const handle: TestStackHandle | undefined = globalThis.__couponTestStack;
  if (!handle) return;
  globalThis.__couponTestStack = undefined;
  await handle.stack.stop();
  await rm(handle.runDir, { recursive: true, force: true });
}
