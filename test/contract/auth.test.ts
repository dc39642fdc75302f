/**
 * Who may do what: the admin token, and user identity from JWTs (a shared HS256 secret, or RS256/ES256 keys
 * from a JWKS served by a real HTTP server), with real tokens signed by jose. Secrets never reach the logs.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWTPayload } from 'jose';
import { ADMIN_TOKEN, closePool, freePort, spawnApi, uniqueEventId, type ServiceProcess } from '../support/harness.ts';
import { call } from '../support/openapi.ts';

const SECRET = 'contract-test-jwt-secret-0123456789abcdef';
const AUDIENCE = 'coupon-api';
const ISSUER = 'https://id.shop.test';

const started: ServiceProcess[] = [];
/** every credential a test sent: none may appear in any log line of the api processes */
const sentSecrets = new Set<string>([SECRET, ADMIN_TOKEN]);
let jwksServer: Server | undefined;

afterAll(async () => {
  await Promise.all(started.map((service) => service.stop()));
  await new Promise<void>((resolve) => (jwksServer ? jwksServer.close(() => resolve()) : resolve()));
  await closePool();
});

async function spawn(env: Record<string, string>): Promise<ServiceProcess> {
  const service = await spawnApi({ LOG_LEVEL: 'trace', ...env });
  started.push(service);
  return service;
}

async function openEvent(apiUrl: string, totalQuantity = 10): Promise<string> {
  const id = uniqueEventId('auth');
  const response = await call(`${apiUrl}/v1/events`, { body: { id, name: id, totalQuantity }, token: ADMIN_TOKEN });
  expect(response.status).toBe(201);
  return id;
}

/** `expiresAt: null` leaves `exp` out */
interface TokenOptions { sub?: string; aud?: string; iss?: string; expiresAt?: number | string | null; alg?: string; kid?: string; claims?: JWTPayload }

async function sign(key: Uint8Array | CryptoKey, options: TokenOptions = {}): Promise<string> {
  let jwt = new SignJWT(options.claims ?? {})
    .setProtectedHeader({ alg: options.alg ?? 'HS256', ...(options.kid && { kid: options.kid }) })
    .setIssuedAt();
  if (options.expiresAt !== null) jwt = jwt.setExpirationTime(options.expiresAt ?? '5m');
  if (options.sub !== '') jwt = jwt.setSubject(options.sub ?? 'jwt-user');
  if (options.aud !== '') jwt = jwt.setAudience(options.aud ?? AUDIENCE);
  if (options.iss !== '') jwt = jwt.setIssuer(options.iss ?? ISSUER);
  const token = await jwt.sign(key);
  sentSecrets.add(token);
  return token;
}

let plain: Promise<ServiceProcess> | undefined;
/** one api with an admin token and no JWT configuration, shared by the tests that need no other */
const plainApi = (): Promise<ServiceProcess> => (plain ??= spawn({}));

const applyWith = (apiUrl: string, eventId: string, init: { token?: string; body?: unknown } = {}) =>
  call(`${apiUrl}/v1/events/${eventId}/apply`, { method: 'POST', ...init });

describe('admin token', () => {
  test('when ADMIN_TOKEN is unset, then admin routes answer 401 whatever is sent, and start-up warns', async () => {
    const api = await spawn({ ADMIN_TOKEN: '' });
    for (const token of [undefined, ADMIN_TOKEN, '']) {
      const response = await call(`${api.url}/v1/events`, { body: { id: uniqueEventId('auth'), name: 'x', totalQuantity: 1 }, ...(token !== undefined && { token }) });
      expect(response.status).toBe(401);
      expect(response.body).toMatchObject({ error: 'unauthorized', message: expect.stringMatching(/ADMIN_TOKEN is not set/) });
    }
    const patch = await call(`${api.url}/v1/events/some-event`, { method: 'PATCH', body: { totalQuantity: 2 }, token: ADMIN_TOKEN });
    expect(patch.status).toBe(401);
    expect(api.output()).toMatch(/ADMIN_TOKEN is unset/);
  });

  test('when tokens differ from the admin token only slightly, then each is refused and the exact token is accepted', async () => {
    const api = await plainApi();
    const eventId = await openEvent(api.url);
    const near = [ADMIN_TOKEN.slice(0, -1), `${ADMIN_TOKEN}x`, ADMIN_TOKEN.toUpperCase(), `x${ADMIN_TOKEN.slice(1)}`, `${ADMIN_TOKEN}${ADMIN_TOKEN}`];
    for (const token of near) {
      sentSecrets.add(token);
      const response = await call(`${api.url}/v1/events/${eventId}`, { method: 'PATCH', body: { totalQuantity: 2 }, headers: { authorization: `Bearer ${token}` } });
      expect(response.status).toBe(401);
    }
    const exact = await call(`${api.url}/v1/events/${eventId}`, { method: 'PATCH', body: { totalQuantity: 2 }, token: ADMIN_TOKEN });
    expect(exact.status).toBe(200);
  });
});

describe('without JWT configuration', () => {
  test('when the api starts, then it warns that the body userId is trusted, and applies take the body userId', async () => {
    const api = await plainApi();
    expect(api.output()).toMatch(/AUTH_JWT_SECRET and AUTH_JWKS_URL are unset/);
    const eventId = await openEvent(api.url);
    expect((await applyWith(api.url, eventId, { body: { userId: 'plain-user' } })).status).toBe(202);
    expect((await call(`${api.url}/v1/events/${eventId}/coupons/plain-user`)).status).toBe(200);
  });
});

describe('JWT with a shared secret (HS256)', () => {
  let api: ServiceProcess;
  const key = new TextEncoder().encode(SECRET);

  beforeAll(async () => {
    api = await spawn({ AUTH_JWT_SECRET: SECRET, AUTH_JWT_AUDIENCE: AUDIENCE, AUTH_JWT_ISSUER: ISSUER });
  });

  test('when the api starts with a secret, then it does not warn about trusting the body', () => {
    expect(api.output()).not.toMatch(/AUTH_JWT_SECRET and AUTH_JWKS_URL are unset/);
  });

  test('when a valid token comes without a body, then the coupon goes to the token subject', async () => {
    const eventId = await openEvent(api.url);
    const response = await applyWith(api.url, eventId, { token: await sign(key, { sub: 'subject-1' }) });
    expect(response).toMatchObject({ status: 202, body: { status: 'issued', sequence: 1 } });
    expect((await call(`${api.url}/v1/events/${eventId}/coupons/subject-1`)).body).toMatchObject({ userId: 'subject-1', sequence: 1 });
  });

  test('when the body userId equals the subject, then it is accepted, and a second apply is 409 already_applied', async () => {
    const eventId = await openEvent(api.url);
    const token = await sign(key, { sub: 'subject-2' });
    expect((await applyWith(api.url, eventId, { token, body: { userId: 'subject-2' } })).status).toBe(202);
    const again = await applyWith(api.url, eventId, { token, body: {} });
    expect(again.status).toBe(409);
    expect(again.body.error).toBe('already_applied');
  });

  test('when the body userId differs from the subject, then it answers 403 forbidden and issues nothing', async () => {
    const eventId = await openEvent(api.url);
    const response = await applyWith(api.url, eventId, { token: await sign(key, { sub: 'subject-3' }), body: { userId: 'someone-else' } });
    expect(response.status).toBe(403);
    expect(response.body.error).toBe('forbidden');
    expect((await call(`${api.url}/v1/events/${eventId}`)).body).toMatchObject({ issued: 0 });
  });

  const bad: Array<[string, () => Promise<string | undefined>]> = [
    ['no token (only a body userId)', async () => undefined],
    ['an expired token', () => sign(key, { expiresAt: Math.floor(Date.now() / 1000) - 120 })],
    ['a token without an expiry (no exp claim)', () => sign(key, { expiresAt: null })],
    ['a token signed with another secret', () => sign(new TextEncoder().encode(`${SECRET}-but-another-one`))],
    ['a token for another audience', () => sign(key, { aud: 'some-other-api' })],
    ['a token without an audience', () => sign(key, { aud: '' })],
    ['a token from another issuer', () => sign(key, { iss: 'https://evil.test' })],
    ['a token without a subject', () => sign(key, { sub: '' })],
    ['a token whose subject is no valid user id', () => sign(key, { sub: 'has spaces/and slashes' })],
    ['an unsigned token (alg none)', async () => {
      const encode = (value: object) => Buffer.from(JSON.stringify(value)).toString('base64url');
      const token = `${encode({ alg: 'none', typ: 'JWT' })}.${encode({ sub: 'jwt-user', aud: AUDIENCE, iss: ISSUER, exp: Math.floor(Date.now() / 1000) + 300 })}.`;
      sentSecrets.add(token);
      return token;
    }],
    ['the admin token', async () => ADMIN_TOKEN],
    ['garbage', async () => 'not.a.jwt'],
  ];
  test.each(bad)('when the request carries %s, then it answers 401 unauthorized and issues nothing', async (_what, makeToken) => {
    const eventId = await openEvent(api.url);
    const token = await makeToken();
    const response = await applyWith(api.url, eventId, { body: { userId: 'jwt-user' }, ...(token !== undefined && { token }) });
    expect(response.status).toBe(401);
    expect(response.body.error).toBe('unauthorized');
    expect((await call(`${api.url}/v1/events/${eventId}`)).body).toMatchObject({ issued: 0 });
  });
});

describe('JWT with keys from a JWKS URL (ES256 and RS256)', () => {
  let api: ServiceProcess;
  let es: { privateKey: CryptoKey; publicKey: CryptoKey };
  let rs: { privateKey: CryptoKey; publicKey: CryptoKey };
  let jwksRequests = 0;

  beforeAll(async () => {
    es = await generateKeyPair('ES256');
    rs = await generateKeyPair('RS256');
    const keys = [
      { ...(await exportJWK(es.publicKey)), kid: 'es-1', alg: 'ES256', use: 'sig' },
      { ...(await exportJWK(rs.publicKey)), kid: 'rs-1', alg: 'RS256', use: 'sig' },
    ];
    jwksServer = createServer((req, res) => {
      jwksRequests += 1;
      if (req.url !== '/.well-known/jwks.json') {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys }));
    });
    await new Promise<void>((resolve) => jwksServer!.listen(0, '127.0.0.1', resolve));
    const { port } = jwksServer.address() as AddressInfo;
    api = await spawn({ AUTH_JWKS_URL: `http://127.0.0.1:${port}/.well-known/jwks.json`, AUTH_JWT_AUDIENCE: AUDIENCE });
  });

  test('when tokens are signed by either key of the JWKS, then their subjects get coupons', async () => {
    const eventId = await openEvent(api.url);
    const byEs = await applyWith(api.url, eventId, { token: await sign(es.privateKey, { alg: 'ES256', kid: 'es-1', sub: 'es-user' }) });
    const byRs = await applyWith(api.url, eventId, { token: await sign(rs.privateKey, { alg: 'RS256', kid: 'rs-1', sub: 'rs-user' }) });
    expect([byEs.status, byRs.status]).toEqual([202, 202]);
    expect((await call(`${api.url}/v1/events/${eventId}/coupons/es-user`)).status).toBe(200);
    expect((await call(`${api.url}/v1/events/${eventId}/coupons/rs-user`)).status).toBe(200);
    expect(jwksRequests).toBeGreaterThanOrEqual(1);
  });

  test('when a token is signed by a key that is not in the JWKS, then it answers 401', async () => {
    const eventId = await openEvent(api.url);
    const stranger = await generateKeyPair('ES256');
    const response = await applyWith(api.url, eventId, { token: await sign(stranger.privateKey, { alg: 'ES256', kid: 'es-1' }) });
    expect(response.status).toBe(401);
  });

  test('when a token is HMAC-signed with the public key as secret (algorithm confusion), then it answers 401', async () => {
    const eventId = await openEvent(api.url);
    const publicJwk = JSON.stringify(await exportJWK(rs.publicKey));
    const response = await applyWith(api.url, eventId, { token: await sign(new TextEncoder().encode(publicJwk), { alg: 'HS256', kid: 'rs-1' }) });
    expect(response.status).toBe(401);
  });

  test('when a JWKS token is expired, has no expiry or is for another audience, then it answers 401', async () => {
    const eventId = await openEvent(api.url);
    const expired = await sign(es.privateKey, { alg: 'ES256', kid: 'es-1', expiresAt: Math.floor(Date.now() / 1000) - 120 });
    const noExpiry = await sign(es.privateKey, { alg: 'ES256', kid: 'es-1', expiresAt: null });
    const otherAudience = await sign(es.privateKey, { alg: 'ES256', kid: 'es-1', aud: 'another' });
    expect((await applyWith(api.url, eventId, { token: expired })).status).toBe(401);
    expect((await applyWith(api.url, eventId, { token: noExpiry })).status).toBe(401);
    expect((await applyWith(api.url, eventId, { token: otherAudience })).status).toBe(401);
    expect((await call(`${api.url}/v1/events/${eventId}`)).body).toMatchObject({ issued: 0 });
  });
});

describe('JWT with a JWKS that cannot be fetched', () => {
  type Mode = 'ok' | 'status-500' | 'not-json' | 'not-a-key-set' | 'hang';
  let api: ServiceProcess;
  let es: { privateKey: CryptoKey; publicKey: CryptoKey };
  let server: Server;
  let mode: Mode = 'status-500';
  let requests = 0;

  beforeAll(async () => {
    es = await generateKeyPair('ES256');
    const keys = [{ ...(await exportJWK(es.publicKey)), kid: 'es-1', alg: 'ES256', use: 'sig' }];
    server = createServer((_req, res) => {
      requests += 1;
      switch (mode) {
        case 'ok': res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ keys })); return;
        case 'status-500': res.writeHead(500).end('oops'); return;
        case 'not-json': res.writeHead(200, { 'content-type': 'application/json' }).end('<html>maintenance</html>'); return;
        case 'not-a-key-set': res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ hello: 'world' })); return;
        case 'hang': return; // never answers: the api's fetch times out
      }
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const { port } = server.address() as AddressInfo;
    api = await spawn({ AUTH_JWKS_URL: `http://127.0.0.1:${port}/jwks.json`, AUTH_JWT_AUDIENCE: AUDIENCE });
  });

  afterAll(async () => {
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  });

  const token = (sub: string, kid = 'es-1') => sign(es.privateKey, { alg: 'ES256', kid, sub });

  test.each<[string, Mode]>([
    ['answers 500', 'status-500'],
    ['answers a body that is no JSON', 'not-json'],
    ['answers JSON that is no key set', 'not-a-key-set'],
    ['does not answer within the 2 s timeout', 'hang'],
  ])('when the JWKS server %s, then a valid token gets 503 unavailable and nothing is issued', async (_what, failure) => {
    mode = failure;
    const eventId = await openEvent(api.url);
    const before = requests;
    const response = await applyWith(api.url, eventId, { token: await token('jwks-user') });
    expect(response.status).toBe(503);
    expect(response.body.error).toBe('unavailable');
    expect(requests).toBeGreaterThan(before);
    expect((await call(`${api.url}/v1/events/${eventId}`)).body).toMatchObject({ issued: 0 });
  });

  test('when nothing listens at AUTH_JWKS_URL, then a valid token gets 503 unavailable, and a malformed token still 401', async () => {
    const down = await spawn({ AUTH_JWKS_URL: `http://127.0.0.1:${await freePort()}/jwks.json`, AUTH_JWT_AUDIENCE: AUDIENCE });
    const eventId = await openEvent(down.url);
    const response = await applyWith(down.url, eventId, { token: await token('jwks-user') });
    expect(response.status).toBe(503);
    expect(response.body.error).toBe('unavailable');
    expect((await applyWith(down.url, eventId, { token: 'not.a.jwt' })).status).toBe(401);
    expect((await call(`${down.url}/v1/events/${eventId}`)).body).toMatchObject({ issued: 0 });
  });

  test('when the JWKS server answers again, then tokens are accepted; the keys stay cached while it fails, and an unknown kid does not refetch within the cooldown', async () => {
    mode = 'ok';
    const eventId = await openEvent(api.url);
    expect((await applyWith(api.url, eventId, { token: await token('back-1') })).status).toBe(202);
    const fetched = requests;
    mode = 'status-500';
    expect((await applyWith(api.url, eventId, { token: await token('back-2') })).status).toBe(202);
    const unknownKid = await applyWith(api.url, eventId, { token: await token('back-3', 'rotated-key') });
    expect(unknownKid.status).toBe(401);
    expect(requests).toBe(fetched);
  });
});

describe('logs', () => {
  test('when all the above has run, then no token, secret or admin token appears in any log line of any api', async () => {
    expect(started.length).toBeGreaterThanOrEqual(3);
    for (const service of started) {
      const output = service.output();
      expect(output.length).toBeGreaterThan(0);
      for (const secret of sentSecrets) {
        if (output.includes(secret)) throw new Error(`a credential (${secret.slice(0, 12)}...) appears in the ${service.kind} log:\n${output}`);
      }
    }
  });
});
