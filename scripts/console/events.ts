/** Event commands, through the api's admin routes (API_URL, ADMIN_TOKEN): never Redis or MySQL directly. */
import type { Command } from 'commander';
import { ConsoleError, Progress, printJson, printTable } from './output.ts';

export interface ApiTarget { apiUrl: string; adminToken: string | undefined }

interface EventView {
  id: string; name: string; totalQuantity: number; issued: number; persisted: number; startsAt: string; endsAt: string | null; status: string;
}

async function callApi<T>(target: ApiTarget, path: string, init: { method?: string; body?: unknown } = {}): Promise<T> {
  if (!target.adminToken) throw new ConsoleError('set ADMIN_TOKEN (or --admin-token) to the api\'s admin token, or run `npm run stack` (its token is found by itself)');
  const url = new URL(path, target.apiUrl);
  let response: Response;
  try {
    response = await fetch(url, {
      method: init.method ?? 'GET',
      headers: { authorization: `Bearer ${target.adminToken}`, ...(init.body !== undefined && { 'content-type': 'application/json' }) },
      ...(init.body !== undefined && { body: JSON.stringify(init.body) }),
      signal: AbortSignal.timeout(15_000),
    });
  } catch (error) {
    throw new ConsoleError(`cannot reach the api at ${target.apiUrl}: ${(error as Error).message}`);
  }
  const body = await response.json().catch(() => ({})) as T & { error?: string; message?: string };
  if (!response.ok) throw new ConsoleError(`${init.method ?? 'GET'} ${url.pathname} answered ${response.status} ${body.error ?? ''}: ${body.message ?? ''}`.trim());
  return body;
}

const eventRow = (event: EventView) => [
  event.id, event.status, `${event.issued}/${event.totalQuantity}`, event.persisted, event.startsAt, event.endsAt ?? '-', event.name,
];
const EVENT_HEAD = ['id', 'status', 'issued/total', 'persisted', 'starts', 'ends', 'name'];

function printEvents(events: EventView[], json: boolean): void {
  if (json) printJson({ events });
  else printTable(EVENT_HEAD, events.map(eventRow));
}

export function eventCommands(program: Command, target: () => ApiTarget): void {
  const events = program.command('events').description('sale events, through the api (API_URL, ADMIN_TOKEN)');

  events.command('list')
    .description('every event (page by page), optionally of one status')
    .option('--status <status>', 'scheduled, open, paused, sold_out or closed')
    .option('--json', 'one JSON line instead of a table', false)
    .action(async (options: { status?: string; json: boolean }) => {
      const found: EventView[] = [];
      const progress = new Progress('events read');
      let cursor: string | null = null;
      do {
        const query = new URLSearchParams({ limit: '100', ...(options.status && { status: options.status }), ...(cursor && { cursor }) });
        const page: { events: EventView[]; nextCursor: string | null } = await callApi(target(), `/v1/events?${query}`);
        found.push(...page.events);
        progress.advance(page.events.length);
        cursor = page.nextCursor;
      } while (cursor !== null);
      progress.finish();
      printEvents(found, options.json);
    });

  events.command('status <eventId>')
    .description('one event: counts and status')
    .option('--json', 'one JSON line instead of a table', false)
    .action(async (eventId: string, options: { json: boolean }) => {
      printEvents([await callApi<EventView>(target(), `/v1/events/${encodeURIComponent(eventId)}`)], options.json);
    });

  events.command('pause <eventId>')
    .description('the kill switch: stop issuing on every api at once (holders keep their coupons)')
    .option('--json', 'one JSON line instead of a table', false)
    .action(async (eventId: string, options: { json: boolean }) => printEvents([await patch(target(), eventId, { paused: true })], options.json));

  events.command('resume <eventId>')
    .description('issue again after a pause')
    .option('--json', 'one JSON line instead of a table', false)
    .action(async (eventId: string, options: { json: boolean }) => printEvents([await patch(target(), eventId, { paused: false })], options.json));

  events.command('raise <eventId> <totalQuantity>')
    .description('raise the total quantity (never below what is issued); a sold-out event reopens everywhere')
    .option('--json', 'one JSON line instead of a table', false)
    .action(async (eventId: string, quantity: string, options: { json: boolean }) => {
      const totalQuantity = Number(quantity);
      if (!Number.isSafeInteger(totalQuantity) || totalQuantity < 1) throw new ConsoleError(`totalQuantity must be a positive integer, not ${quantity}`);
      printEvents([await patch(target(), eventId, { totalQuantity })], options.json);
    });
}

const patch = (target: ApiTarget, eventId: string, body: Record<string, unknown>) =>
  callApi<EventView>(target, `/v1/events/${encodeURIComponent(eventId)}`, { method: 'PATCH', body });
