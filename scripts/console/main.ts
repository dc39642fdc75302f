/**
 * The operator's console against a running deployment (`npm run console -- --help`):
 *
 *   events list [--status S] | status ID | pause ID | resume ID | raise ID N   through the api: API_URL, ADMIN_TOKEN
 *   dlq list [--limit N] | dlq redrive [--limit N]                            pg-boss in POSTGRES_URL
 *   reconcile                                                                 pg-boss in POSTGRES_URL
 *   watch ID                 a sale live: the api, the api's and the worker's /metrics
 *   report ID [--out DIR]    after a sale: SVG and markdown from MySQL (MYSQL_URL)
 *
 * Without ADMIN_TOKEN (or --admin-token) it uses a running `npm run stack` (its URLs, token and write cap, from
 * .stack/dev/stack.json: scripts/console/stack-state.ts).
 *
 * Tables for people, `--json` (one line on stdout) for programs; progress of long operations on stderr.
 * Exit code 0 on success, 1 on a fault, 2 on a usage error.
 */
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Option } from 'commander';
import { deadLetterCommands, reconcileCommand } from './dead-letters.ts';
import { eventCommands } from './events.ts';
import { ConsoleError } from './output.ts';
import { reportCommand } from './report.ts';
import { readStackState, stackStateFile } from './stack-state.ts';
import { watchCommand } from './watch.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DEFAULTS = { api: 'http://127.0.0.1:8080', apiMetrics: 'http://127.0.0.1:9464', worker: 'http://127.0.0.1:8081', persistRatePerSec: 500 };

export function buildConsole(): Command {
  const program = new Command('console')
    .description('operator console of the coupon service')
    .addOption(new Option('--api <url>', `the api to manage events through (default: the local stack's, or ${DEFAULTS.api})`).env('API_URL'))
    .addOption(new Option('--admin-token <token>', 'the api\'s admin token (default: the local stack\'s)').env('ADMIN_TOKEN'))
    .addOption(new Option('--api-metrics <url>', `the api's /metrics port, OPS_PORT (watch; default: the local stack's, or ${DEFAULTS.apiMetrics})`).env('API_METRICS_URL'))
    .addOption(new Option('--worker <url>', `a worker's /metrics (watch; default: the local stack's, or ${DEFAULTS.worker})`).env('WORKER_URL'))
    .addOption(new Option('--mysql <url>', 'the MySQL the workers write to (report; default: the local stack\'s)').env('MYSQL_URL'))
    .addOption(new Option('--cap <perSec>', 'the write cap, PERSIST_RATE_PER_SEC (watch, report; default: the local stack\'s, or 500)').env('PERSIST_RATE_PER_SEC'))
    .exitOverride()
    .showHelpAfterError();
  interface Options { api?: string; adminToken?: string; apiMetrics?: string; worker?: string; mysql?: string; cap?: string }
  /** The local stack fills in what is not given, as long as the api is its own. */
  const resolved = () => {
    const options = program.opts<Options>();
    const stack = readStackState(stackStateFile(ROOT));
    const local = stack && (options.api === undefined || options.api.replace(/\/$/, '') === stack.apiUrl) ? stack : undefined;
    const cap = options.cap === undefined ? (local?.persistRatePerSec ?? DEFAULTS.persistRatePerSec) : Number(options.cap);
    if (!Number.isSafeInteger(cap) || cap < 1) throw new ConsoleError(`--cap (PERSIST_RATE_PER_SEC) must be a positive integer, not ${options.cap}`);
    return {
      apiUrl: options.api ?? local?.apiUrl ?? DEFAULTS.api,
      adminToken: options.adminToken ?? local?.adminToken,
      apiMetricsUrl: options.apiMetrics ?? local?.apiMetricsUrl ?? DEFAULTS.apiMetrics,
      workerUrl: options.worker ?? local?.workerUrl ?? DEFAULTS.worker,
      mysqlUrl: options.mysql ?? local?.mysqlUrl,
      persistRatePerSec: cap,
    };
  };
  const target = () => {
    const { apiUrl, adminToken } = resolved();
    return { apiUrl, adminToken };
  };
  eventCommands(program, target);
  deadLetterCommands(program);
  reconcileCommand(program);
  watchCommand(program, resolved);
  reportCommand(program, resolved);
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
