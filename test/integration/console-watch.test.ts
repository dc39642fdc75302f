/**
 * The console as an operator uses it against `npm run stack` (issue 22.3): the real scripts/stack.ts, on this run's
 * servers and free ports, with a random admin token and a write cap of 40/s. The console, given nothing but where
 * the stack keeps its state file, finds the api and the token; `watch` follows a sale (one line per refresh on a
 * pipe, the block redrawn in place on a pseudo-terminal) until it is sold out and persisted; `report` writes the
 * sale's picture and summary from MySQL.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { StackState } from '../../scripts/console/stack-state.ts';
import type { LocalServer } from '../../scripts/local-servers/index.ts';
import { closePool, freePort, jobsUrlFor, request, serverUrls, startOwnRedis, uniqueEventId, waitFor } from '../support/harness.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const CAP = 40;
let scratch: string;
let stateFile: string;
let stack: ChildProcess;
let stackOutput = '';
let state: StackState;
let redis: LocalServer;

beforeAll(async () => {
  scratch = mkdtempSync(join(tmpdir(), 'coupon-console-'));
  stateFile = join(scratch, 'stack.json');
  const [port, workerPort, opsPort] = [await freePort(), await freePort(), await freePort()];
  // A Redis of its own: workers of other files on the shared one would share this stack's write timeline (their own
  // caps) and its consumer group, and the 40/s this test watches would not be the stack's alone. In one CI run the
  // stack's worker wrote nothing for 60 s while other files' workers ran on the shared Redis.
  redis = await startOwnRedis('console');
  const own = { ...serverUrls(), REDIS_URL: redis.url, POSTGRES_URL: await jobsUrlFor(redis.url) };
  stack = spawn(process.execPath, ['scripts/stack.ts'], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? '', ...own, PORT: String(port), WORKER_PORT: String(workerPort), OPS_PORT: String(opsPort),
      STACK_STATE_FILE: stateFile, PERSIST_RATE_PER_SEC: String(CAP), LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  stack.stdout!.on('data', (chunk: Buffer) => { stackOutput += chunk.toString(); });
  stack.stderr!.on('data', (chunk: Buffer) => { stackOutput += chunk.toString(); });
  await waitFor(() => existsSync(stateFile) || stack.exitCode !== null, { timeoutMs: 60_000, what: 'the stack to write its state file' });
  if (!existsSync(stateFile)) throw new Error(`the stack exited:\n${stackOutput}`);
  state = JSON.parse(readFileSync(stateFile, 'utf8')) as StackState;
}, 90_000);

afterAll(async () => {
  if (stack && stack.exitCode === null) {
    stack.kill('SIGINT');
    await once(stack, 'exit');
  }
  await closePool();
  await redis?.stop();
  rmSync(scratch, { recursive: true, force: true });
});

interface Run { code: number; stdout: string; stderr: string }

/** `npm run console -- ...args` with no API_URL and no ADMIN_TOKEN: only where the stack keeps its state. */
function runConsole(args: string[], env: Record<string, string> = {}, timeoutMs = 90_000): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['scripts/console/main.ts', ...args], {
      cwd: ROOT, timeout: timeoutMs, env: { PATH: process.env.PATH ?? '', STACK_STATE_FILE: stateFile, ...env },
    }, (error, stdout, stderr) => resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}

async function createSale(total: number): Promise<string> {
  const id = uniqueEventId('sale');
  const created = await request(`${state.apiUrl}/v1/events`, { body: { id, name: `sale ${id}`, totalQuantity: total }, token: state.adminToken });
  expect(created.status).toBe(201);
  return id;
}

/** `users` apply at once, 32 at a time, then each of the first `again` asks again (409 already_applied). */
async function burst(eventId: string, users: number, again = 0): Promise<Record<number, number>> {
  const statuses: Record<number, number> = {};
  const ids = [...Array.from({ length: users }, (_, i) => `u${i}`), ...Array.from({ length: again }, (_, i) => `u${i}`)];
  for (let i = 0; i < ids.length; i += 32) {
    const answers = await Promise.all(ids.slice(i, i + 32).map((userId) => request(`${state.apiUrl}/v1/events/${eventId}/apply`, { body: { userId } })));
    for (const answer of answers) statuses[answer.status] = (statuses[answer.status] ?? 0) + 1;
  }
  return statuses;
}

/** A line of `watch` on a pipe, as key=value pairs. */
function fields(line: string): Record<string, string> {
  return Object.fromEntries(line.split(' ').map((pair) => pair.split('=') as [string, string]).filter(([, value]) => value !== undefined));
}

test('When npm run stack is up, then its URLs and admin token are in a file only its owner reads, and the console needs nothing exported', async () => {
  expect(statSync(stateFile).mode & 0o777).toBe(0o600);
  expect(state).toMatchObject({ pid: stack.pid, persistRatePerSec: CAP, apiUrl: expect.stringMatching(/^http:\/\/127\.0\.0\.1:\d+$/) });
  expect(state.adminToken).toMatch(/^[\w-]{16,}$/);
  const eventId = await createSale(3);
  const status = await runConsole(['events', 'status', eventId, '--json']);
  expect(status).toMatchObject({ code: 0 });
  expect(JSON.parse(status.stdout)).toEqual({ events: [expect.objectContaining({ id: eventId, totalQuantity: 3, status: 'open' })] });

  // Another api than the stack's: its token is not handed out there.
  const elsewhere = await runConsole(['events', 'status', eventId], { API_URL: 'http://127.0.0.1:9' });
  expect(elsewhere.code).toBe(1);
  expect(elsewhere.stderr).toMatch(/set ADMIN_TOKEN \(or --admin-token\)/);
});

test('When a sale runs, then watch prints a line per refresh (issued, persisted, lag, answers/s, writes/s against the cap) and exits 0 once sold out and persisted; report draws it', async () => {
  const total = 300;
  const eventId = await createSale(total);
  const samples = join(scratch, `${eventId}.jsonl`);
  const watching = runConsole(['watch', eventId, '--interval', '0.5', '--timeout', '60', '--record', samples]);
  await new Promise((resolve) => setTimeout(resolve, 1_200));
  const statuses = await burst(eventId, total + 60, 20);
  expect(statuses).toEqual({ 202: total, 410: 60, 409: 20 });
  const watched = await watching;
  expect({ code: watched.code, stderr: watched.stderr }).toEqual({ code: 0, stderr: '' });

  const lines = watched.stdout.trim().split('\n');
  expect(lines.at(-1)).toBe(`${eventId}: sold out and persisted: ${total}/${total} in MySQL`);
  const refreshes = lines.slice(0, -1).map(fields);
  expect(refreshes.length).toBeGreaterThanOrEqual(5);
  for (const line of refreshes) expect(Object.keys(line)).toEqual(['t', 'status', 'issued', 'persisted', 'lag', 'pending', 'applies/s', 'writes/s', 'cap']);
  expect(refreshes[0]).toMatchObject({ status: 'open', issued: `0/${total}`, persisted: '0', cap: String(CAP) });
  // At 40 writes/s the 300 coupons trail the gate: seen sold out with some not yet in MySQL, then all in it.
  const trailing = refreshes.find((line) => line.issued === `${total}/${total}` && Number(line.persisted) < total);
  expect(trailing).toMatchObject({ status: 'sold_out' });
  expect(refreshes.at(-1)).toMatchObject({ status: 'sold_out', issued: `${total}/${total}`, persisted: String(total) });
  expect(refreshes.some((line) => Number(line.lag) > 0 || Number(line.pending) > 0)).toBe(true);
  const answered = refreshes.map((line) => line['applies/s']!).join(',');
  expect(answered).toMatch(/issued:[1-9]\d*/);
  expect(answered).toMatch(/sold_out:[1-9]\d*/);
  expect(answered).toMatch(/conflict:[1-9]\d*/);
  // writes/s is the persisted count's rise between refreshes: never far above the cap (refreshes jitter)
  const writes = refreshes.map((line) => Number(line['writes/s'])).filter((rate) => Number.isFinite(rate));
  expect(Math.max(...writes)).toBeGreaterThan(0);
  expect(Math.max(...writes)).toBeLessThanOrEqual(CAP * 1.5);

  const out = join(scratch, 'report');
  const reported = await runConsole(['report', eventId, '--out', out, '--samples', samples, '--json']);
  expect({ code: reported.code, stderr: reported.stderr }).toEqual({ code: 0, stderr: '' });
  const summary = JSON.parse(reported.stdout) as Record<string, number | string | null>;
  expect(summary).toMatchObject({ eventId, totalQuantity: total, issued: total, persisted: total, cap: CAP });
  expect(summary.sellOutMs).toEqual(expect.any(Number));
  // 300 rows at 40/s take 7 s or more from the first coupon to the last row
  expect(summary.persistAllMs as number).toBeGreaterThanOrEqual(((total - CAP) / CAP) * 1000);
  expect(summary.peakWritesPerSec as number).toBeLessThanOrEqual(CAP * 1.25);
  expect(summary.gateP99Ms).toEqual(expect.any(Number));

  const svg = readFileSync(join(out, 'sale-report.svg'), 'utf8');
  expect(svg).toMatch(/^<svg[\s\S]*<\/svg>$/);
  for (const text of [`Sale ${eventId}`, 'issued (issued_at, Redis gate)', 'persisted (created_at, MySQL row)', `cap ${CAP}/s`, 'Apply answers per second by outcome']) {
    expect(svg).toContain(text);
  }
  const markdown = readFileSync(join(out, 'sale-report.md'), 'utf8');
  expect(markdown).toContain(`| coupons | ${total} issued of ${total} (sold out), ${total} persisted |`);
  expect(markdown).toMatch(/\| time to sell out \| \d+\.\d\d s/);
  expect(markdown).toMatch(/\| time to persist \| \d+\.\d\d s after the last coupon was issued/);
  expect(markdown).toContain('![coupons issued and persisted over time, writes per second against the cap](sale-report.svg)');
}, 120_000);

test('When watch runs on a terminal, then it redraws its block in place with bars, and exits 0 once the sale is done', async () => {
  const total = 40;
  const eventId = await createSale(total);
  await burst(eventId, total);
  // script(1) gives the console a pseudo-terminal; its output is what the terminal received
  const command = `${process.execPath} scripts/console/main.ts watch ${eventId} --interval 0.3 --timeout 30`;
  const run = await new Promise<Run>((resolve) => {
    execFile('script', ['-qefc', command, '/dev/null'], { cwd: ROOT, timeout: 45_000, env: { PATH: process.env.PATH ?? '', STACK_STATE_FILE: stateFile, TERM: 'xterm' } },
      (error, stdout, stderr) => resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
  expect(run.code).toBe(0);
  expect(run.stdout).toMatch(new RegExp(`${eventId}  (open|sold_out)  \\d+\\.\\d s`));
  expect(run.stdout).toMatch(/issued {5}\[#{24}\] 40\/40 \(100\.0%\)/);
  expect(run.stdout).toMatch(/writes\/s {3}\[[#.]{24}\] \S+ of cap 40/);
  expect(run.stdout).toContain(`${eventId}: sold out and persisted: ${total}/${total} in MySQL`);
  // after the first block, each refresh moves the cursor back up over the 6 lines it drew
  const redraws = run.stdout.split('\x1b[6A').length - 1;
  const blocks = run.stdout.split(`${eventId}  `).length - 1;
  expect(redraws).toBe(blocks - 1);
  expect(redraws).toBeGreaterThanOrEqual(1);
}, 60_000);

test('When the stack stops, then its state file is gone and the console asks for ADMIN_TOKEN again', async () => {
  stack.kill('SIGINT');
  await once(stack, 'exit');
  expect(existsSync(stateFile)).toBe(false);
  const run = await runConsole(['events', 'list']);
  expect(run.code).toBe(1);
  expect(run.stderr).toMatch(/set ADMIN_TOKEN \(or --admin-token\)/);
}, 60_000);
