/**
 * The operator console (issue 11.6) run as an operator runs it, as a separate process against a real api, worker
 * and PostgreSQL: event list and status, pause, resume and raise through the api's URL, the dead-letter queue and
 * a reconcile through POSTGRES_URL; `npm run dlq` keeps working as its old name.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { ADMIN_TOKEN, apply, closePool, createEvent, serverUrls, spawnApi, spawnWorker, uniqueEventId, type ServiceProcess } from '../support/harness.ts';
import { runDlq } from '../support/observe.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
let api: ServiceProcess;
let worker: ServiceProcess;

beforeAll(async () => {
  [api, worker] = await Promise.all([spawnApi(), spawnWorker()]);
}, 60_000);

afterAll(async () => {
  await Promise.all([api, worker].filter(Boolean).map((service) => service.stop()));
  await closePool();
});

interface Run { code: number; stdout: string; stderr: string }

/** `npm run console -- ...args` as a process of its own, given only the deployment's URLs and token. */
function runConsole(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['scripts/console/main.ts', ...args], {
      cwd: ROOT, timeout: 30_000,
      env: { PATH: process.env.PATH ?? '', API_URL: api.url, ADMIN_TOKEN, POSTGRES_URL: serverUrls().POSTGRES_URL, ...env },
    }, (error, stdout, stderr) => resolve({ code: error ? Number((error as { code?: number }).code ?? 1) : 0, stdout, stderr }));
  });
}
const json = (run: Run) => JSON.parse(run.stdout.trim().split('\n').pop()!) as Record<string, unknown>;

test('when an operator pauses, resumes and raises an event, then the api shows each change and the table says so', async () => {
  const eventId = uniqueEventId('cons');
  await createEvent(api.url, { id: eventId, totalQuantity: 1 });
  expect((await apply(api.url, eventId, 'first')).status).toBe(202);

  const paused = await runConsole(['events', 'pause', eventId]);
  expect(paused.code).toBe(0);
  expect(paused.stdout).toMatch(new RegExp(`${eventId}.*paused.*1/1`));
  expect((await apply(api.url, eventId, 'second')).body.error).toBe('event_paused');

  const status = json(await runConsole(['events', 'status', eventId, '--json']));
  expect(status.events).toEqual([expect.objectContaining({ id: eventId, status: 'paused' })]);

  const resumed = json(await runConsole(['events', 'resume', eventId, '--json']));
  expect(resumed.events).toEqual([expect.objectContaining({ status: 'sold_out' })]);
  const raised = json(await runConsole(['events', 'raise', eventId, '3', '--json']));
  expect(raised.events).toEqual([expect.objectContaining({ totalQuantity: 3, status: 'open' })]);
  expect((await apply(api.url, eventId, 'second')).status).toBe(202);

  const below = await runConsole(['events', 'raise', eventId, '1']);
  expect(below.code).toBe(1);
  expect(below.stderr).toMatch(/409 quantity_below_issued/);
});

test('when an operator lists events, then every event is read page by page, with progress on stderr', async () => {
  const eventId = uniqueEventId('cons');
  await createEvent(api.url, { id: eventId, totalQuantity: 2 });
  const listed = await runConsole(['events', 'list', '--json']);
  expect(listed.code).toBe(0);
  expect((json(listed).events as Array<{ id: string }>).map((event) => event.id)).toContain(eventId);
  expect(listed.stderr).toMatch(/events read: \d+/);
  const table = await runConsole(['events', 'list', '--status', 'open']);
  expect(table.stdout).toMatch(/id.*status.*issued\/total/);
  expect(table.stdout).toContain(eventId);
});

test('when an operator asks for the dead-letter queue, a redrive and a reconcile, then each answers from PostgreSQL, also under the old dlq name', async () => {
  const list = await runConsole(['dlq', 'list']);
  expect(list.code).toBe(0);
  expect(list.stdout).toMatch(/job\(s\), \d+ coupon\(s\) in /);
  expect(json(await runConsole(['dlq', 'redrive', '--json']))).toMatchObject({ redriven: expect.any(Number) });
  expect(json(await runConsole(['reconcile', '--json']))).toHaveProperty('reconcileJob');
  expect(await runDlq({}, 'list')).toHaveProperty('jobs');
});

test('when the token is wrong, the api is unreachable or the usage is wrong, then it says so in one line and exits 1 or 2', async () => {
  const wrong = await runConsole(['events', 'list'], { ADMIN_TOKEN: 'not-the-token' });
  expect(wrong.code).toBe(1);
  expect(wrong.stderr.trim()).toMatch(/^GET \/v1\/events answered 401 unauthorized/);
  const gone = await runConsole(['events', 'status', 'x'], { API_URL: 'http://127.0.0.1:9' });
  expect(gone.code).toBe(1);
  expect(gone.stderr).toMatch(/cannot reach the api/);
  expect((await runConsole(['events', 'raise', 'x'])).code).toBe(2);
  expect((await runConsole(['dlq', 'list', '--limit', '0'])).code).toBe(1);
});
