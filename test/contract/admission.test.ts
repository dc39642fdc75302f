/**
 * Admission control and the connection cap as a client sees them, on real api processes (issue 19). An apply
 * holds its slot from admission to its answer, body read included, so a client that sends its headers and
 * withholds its body holds a slot for as long as it likes: that is how these tests fill the slots.
 */
import { connect, type Socket } from 'node:net';
import { once } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { ADMIN_TOKEN, closePool, spawnApi, uniqueEventId, waitFor, type ServiceProcess } from '../support/harness.ts';
import { call } from '../support/openapi.ts';
import { scrapeMetric } from '../support/observe.ts';

const started: ServiceProcess[] = [];
const sockets: Socket[] = [];

afterAll(async () => {
  for (const socket of sockets) socket.destroy();
  await Promise.all(started.map((service) => service.stop('SIGKILL')));
  await closePool();
});

async function spawn(env: Record<string, string>): Promise<ServiceProcess> {
  const service = await spawnApi({ API_LOOP_DELAY_TARGET_MS: '0', ...env });
  started.push(service);
  return service;
}

async function newEvent(api: ServiceProcess, totalQuantity = 100): Promise<string> {
  const id = uniqueEventId('adm');
  expect((await call(`${api.url}/v1/events`, { body: { id, name: 'admission', totalQuantity }, token: ADMIN_TOKEN })).status).toBe(201);
  return id;
}

/** A raw connection, and what it has received so far as text. */
async function open(api: ServiceProcess): Promise<{ socket: Socket; received: () => string; closed: Promise<unknown> }> {
  const socket = connect(api.port, '127.0.0.1');
  sockets.push(socket);
  let text = '';
  socket.on('data', (chunk: Buffer) => { text += chunk.toString(); });
  socket.on('error', () => undefined);
  const closed = once(socket, 'close');
  await once(socket, 'connect');
  return { socket, received: () => text, closed };
}

/**
 * Sends an apply's headers now and its body only when `send()` is called: resolves once the request holds a slot
 * (the api's only one, in these tests), which it keeps until then.
 */
async function heldApply(api: ServiceProcess, eventId: string, userId: string) {
  const connection = await open(api);
  const body = JSON.stringify({ userId });
  connection.socket.write(`POST /v1/events/${eventId}/apply HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n`);
  await waitFor(async () => (await scrapeMetric(api.opsUrl, 'coupon_admission_in_flight')) === 1 || undefined, { what: `${userId} holding the slot` });
  return {
    ...connection,
    send: async () => {
      connection.socket.write(body);
      await waitFor(() => /\r\n\r\n\{.*\}$/s.test(connection.received()) || undefined, { what: `the answer to ${userId}` });
      return parse(connection.received());
    },
  };
}

function parse(raw: string): { status: number; headers: string; body: Record<string, unknown> } {
  const [head = '', body = ''] = raw.split('\r\n\r\n');
  return { status: Number(head.slice(9, 12)), headers: head.toLowerCase(), body: JSON.parse(body) as Record<string, unknown> };
}

const queued = (api: ServiceProcess) => scrapeMetric(api.opsUrl, 'coupon_admission_queued');

describe('admission control of applies', () => {
  test('when every slot is taken and nobody may wait, then an apply is answered 503 with Retry-After at once, and nothing is issued for it', async () => {
    const api = await spawn({ API_MAX_IN_FLIGHT: '1', API_QUEUE_TIMEOUT_MS: '0' });
    const eventId = await newEvent(api);
    const holder = await heldApply(api, eventId, 'holder');

    const shed = await call(`${api.url}/v1/events/${eventId}/apply`, { body: { userId: 'shed' } });
    expect(shed.status).toBe(503);
    expect(shed.body).toMatchObject({ error: 'unavailable', message: expect.stringMatching(/capacity/) });
    expect(shed.headers.get('retry-after')).toBe('1');
    expect(await scrapeMetric(api.opsUrl, 'coupon_admission_shed_total')).toBe(1);

    expect(await holder.send()).toMatchObject({ status: 202, body: { status: 'issued', sequence: 1 } });
    // The shed request left no trace: its user holds nothing, and may apply again.
    expect((await call(`${api.url}/v1/events/${eventId}/coupons/shed`)).status).toBe(404);
    expect(await call(`${api.url}/v1/events/${eventId}/apply`, { body: { userId: 'shed' } })).toMatchObject({ status: 202, body: { sequence: 2 } });
  });

  test('when applies wait for a slot, then they are admitted in the order they came: their sequences follow it', async () => {
    const api = await spawn({ API_MAX_IN_FLIGHT: '1', API_QUEUE_TIMEOUT_MS: '10000' });
    const eventId = await newEvent(api);
    const holder = await heldApply(api, eventId, 'first');
    const waiting: Array<Promise<{ status: number; body: Record<string, unknown> }>> = [];
    for (const [index, userId] of ['second', 'third', 'fourth', 'fifth'].entries()) {
      waiting.push(call(`${api.url}/v1/events/${eventId}/apply`, { body: { userId } }));
      // each one in the queue before the next is sent
      await waitFor(async () => (await queued(api)) === index + 1 || undefined, { what: `${userId} queued` });
    }
    expect(await holder.send()).toMatchObject({ status: 202, body: { sequence: 1 } });
    const answers = await Promise.all(waiting);
    expect(answers.map((answer) => [answer.status, answer.body.sequence])).toEqual([[202, 2], [202, 3], [202, 4], [202, 5]]);
  });

  test('when a client gives up while its apply waits for a slot, then no coupon is issued for it', async () => {
    const api = await spawn({ API_MAX_IN_FLIGHT: '1', API_QUEUE_TIMEOUT_MS: '10000' });
    const eventId = await newEvent(api);
    const holder = await heldApply(api, eventId, 'holder');
    // Sent whole, body and all, then abandoned while it waits.
    const quitter = await open(api);
    const body = JSON.stringify({ userId: 'quitter' });
    quitter.socket.write(`POST /v1/events/${eventId}/apply HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
    await waitFor(async () => (await queued(api)) === 1 || undefined, { what: 'the quitter queued' });
    quitter.socket.destroy();
    await quitter.closed;
    await sleep(100);
    expect(await holder.send()).toMatchObject({ status: 202, body: { sequence: 1 } });
    await waitFor(async () => (await scrapeMetric(api.opsUrl, 'coupon_admission_in_flight')) === 0 || undefined, { what: 'the quitter decided' });
    expect((await call(`${api.url}/v1/events/${eventId}/coupons/quitter`)).status).toBe(404);
    expect(await call(`${api.url}/v1/events/${eventId}/apply`, { body: { userId: 'next' } })).toMatchObject({ status: 202, body: { sequence: 2 } });
  });

  test('when an apply waits past API_QUEUE_TIMEOUT_MS, then it is answered 503 with Retry-After, and nothing is issued for it', async () => {
    const api = await spawn({ API_MAX_IN_FLIGHT: '1', API_QUEUE_TIMEOUT_MS: '300' });
    const eventId = await newEvent(api);
    const holder = await heldApply(api, eventId, 'holder');
    const started = performance.now();
    const late = await call(`${api.url}/v1/events/${eventId}/apply`, { body: { userId: 'late' } });
    const waited = performance.now() - started;
    expect(late.status).toBe(503);
    expect(late.headers.get('retry-after')).toBe('1');
    // it waited for its deadline, not for the holder
    expect(waited).toBeGreaterThanOrEqual(250);
    expect(await holder.send()).toMatchObject({ status: 202, body: { sequence: 1 } });
    expect((await call(`${api.url}/v1/events/${eventId}/coupons/late`)).status).toBe(404);
  });

  test('when the event is sold out, then applies are answered 410 without a slot, however full the queue', async () => {
    const api = await spawn({ API_MAX_IN_FLIGHT: '1', API_QUEUE_TIMEOUT_MS: '0' });
    const eventId = await newEvent(api, 1);
    expect((await call(`${api.url}/v1/events/${eventId}/apply`, { body: { userId: 'winner' } })).status).toBe(202);
    expect((await call(`${api.url}/v1/events/${eventId}/apply`, { body: { userId: 'learns' } })).status).toBe(410);
    const holder = await heldApply(api, uniqueEventId('absent'), 'holder');
    expect((await call(`${api.url}/v1/events/${eventId}/apply`, { body: { userId: 'late' } })).status).toBe(410);
    holder.socket.destroy();
  });
});

describe('the connection cap', () => {
  const close = { connection: 'close' };

  test('when API_MAX_CONNECTIONS are open, then a new connection is answered 503 with Retry-After and closed, and served again once one closes', async () => {
    const api = await spawn({ API_MAX_CONNECTIONS: '3' });
    // Every call here closes its connection, so that only the ones this test holds count.
    const eventId = uniqueEventId('cap');
    expect((await call(`${api.url}/v1/events`, { body: { id: eventId, name: 'cap', totalQuantity: 10 }, token: ADMIN_TOKEN, headers: close })).status).toBe(201);
    const openConnections = async () => Number(/^coupon_http_open_connections\S* (\d+)/m.exec(
      await (await fetch(`${api.opsUrl}/metrics`, { headers: close })).text(),
    )?.[1]);
    // The scrape goes to the ops port, which the cap does not count.
    await waitFor(async () => (await openConnections()) === 0 || undefined, { what: 'no connection left open' });
    const held = [await open(api), await open(api), await open(api)];
    await waitFor(async () => (await rawApply(api, eventId, 'probe')).status === 503 || undefined, { what: 'the three held connections counted' });

    const refused = await rawApply(api, eventId, 'refused');
    expect(refused.status).toBe(503);
    expect(refused.headers).toContain('retry-after: 1');
    expect(refused.headers).toContain('connection: close');
    expect(refused.body).toMatchObject({ error: 'unavailable', message: expect.stringMatching(/connections/) });

    held[0]!.socket.destroy();
    await waitFor(async () => (await rawApply(api, eventId, 'served')).status === 202 || undefined, { what: 'a connection served again' });
    for (const connection of held) connection.socket.destroy();
    // Neither refused request issued anything.
    for (const userId of ['refused', 'probe']) expect((await call(`${api.url}/v1/events/${eventId}/coupons/${userId}`, { headers: close })).status).toBe(404);
  });
});

/** One apply on a new connection that asks to be closed after it; resolves with the parsed answer once closed. */
async function rawApply(api: ServiceProcess, eventId: string, userId: string): Promise<ReturnType<typeof parse>> {
  const connection = await open(api);
  const body = JSON.stringify({ userId });
  connection.socket.write(`POST /v1/events/${eventId}/apply HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
  await connection.closed;
  return parse(connection.received());
}
