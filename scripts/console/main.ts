/**
 * The operator's console against a running deployment (`npm run console -- --help`):
 *
 *   events list [--status S] | status ID | pause ID | resume ID | raise ID N   through the api: API_URL, ADMIN_TOKEN
 *   dlq list [--limit N] | dlq redrive [--limit N]                            pg-boss in POSTGRES_URL
 *   reconcile                                                                 pg-boss in POSTGRES_URL
 *
 * Tables for people, `--json` (one line on stdout) for programs; progress of long operations on stderr.
 * Exit code 0 on success, 1 on a fault, 2 on a usage error.
 */
import { Command, CommanderError, Option } from 'commander';
import { deadLetterCommands, reconcileCommand } from './dead-letters.ts';
import { eventCommands } from './events.ts';
import { ConsoleError } from './output.ts';

export function buildConsole(): Command {
  const program = new Command('console')
    .description('operator console of the coupon service')
    .addOption(new Option('--api <url>', 'the api to manage events through').env('API_URL').default('http://127.0.0.1:8080'))
    .addOption(new Option('--admin-token <token>', 'the api\'s admin token').env('ADMIN_TOKEN'))
    .exitOverride()
    .showHelpAfterError();
  const target = () => {
    const options = program.opts<{ api: string; adminToken?: string }>();
    return { apiUrl: options.api, adminToken: options.adminToken };
  };
  eventCommands(program, target);
  deadLetterCommands(program);
  reconcileCommand(program);
  // subcommands report usage errors the same way as the program
  for (const command of program.commands) {
    command.exitOverride();
    for (const sub of command.commands) sub.exitOverride();
  }
  return program;
}

export async function runConsole(argv: string[]): Promise<number> {
  try {
    await buildConsole().parseAsync(argv, { from: 'user' });
    return 0;
  } catch (error) {
    if (error instanceof CommanderError) return error.exitCode === 0 ? 0 : 2;
    console.error(error instanceof ConsoleError ? error.message : `failed: ${(error as Error).message}`);
    return 1;
  }
}

if (import.meta.main) process.exitCode = await runConsole(process.argv.slice(2));
