/**
 * `npm run dlq -- list|redrive|reconcile [--limit N] [--json]`: the console's dead-letter and reconcile commands
 * under their old name (scripts/console/main.ts has the rest).
 */
import { runConsole } from './console/main.ts';

if (import.meta.main) {
  const [command, ...rest] = process.argv.slice(2);
  process.exitCode = await runConsole(command === 'reconcile' ? [command, ...rest] : ['dlq', ...(command === undefined ? [] : [command]), ...rest]);
}
