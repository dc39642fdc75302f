/**
 * schemathesis fuzzes a real api (with JWT identity) and a worker from docs/openapi.yaml: no 5xx, every
 * response as documented, invalid input refused, valid input accepted. schemathesis comes from .tools/fuzz-venv:
 * npm test's global setup installs it before this runs (scripts/setup), and beforeAll makes sure of it.
 */
import { writeFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FUZZ_USER, OPS_TAG_ONLY, SCHEMATHESIS, WITHOUT_OPS_TAG, prepareFuzzEvents, runSchemathesis, userToken, type FuzzEvents } from '../../scripts/fuzz.ts';
import { ensurePrerequisites } from '../../scripts/setup/prerequisites.ts';
import { schemathesisPath } from '../../scripts/setup/tools.ts';
import { ADMIN_TOKEN, closePool, spawnApi, spawnWorker, type ServiceProcess } from '../support/harness.ts';
import { call, openapi } from '../support/openapi.ts';

const JWT_SECRET = 'fuzz-test-jwt-secret-0123456789abcdef';
const started: ServiceProcess[] = [];
let api: ServiceProcess;
let token: string;
let events: FuzzEvents;

// schemathesis is installed already (a no-op here) unless this file was picked in a way the global setup cannot see.
beforeAll(async () => {
  const root = fileURLToPath(new URL('../..', import.meta.url));
  await ensurePrerequisites({ kits: ['fuzz-tools'] }, { root, command: 'npm test' });
  expect(SCHEMATHESIS).toBe(schemathesisPath(root));
}, 15 * 60_000);

beforeAll(async () => {
  api = await spawnApi({ AUTH_JWT_SECRET: JWT_SECRET });
  started.push(api, await spawnWorker());
  token = await userToken(JWT_SECRET);
  events = await prepareFuzzEvents(api.url, ADMIN_TOKEN, token);
});

afterAll(async () => {
  await Promise.all(started.map((service) => service.stop()));
  await closePool();
});

test('when schemathesis fuzzes every operation with all its checks, then it finds no failure', async () => {
  // The /v1 operations on the public port, the probes and metrics (tag `operations`) on the ops port.
  const result = await runSchemathesis({ apiUrl: api.url, adminToken: ADMIN_TOKEN, userToken: token, events, maxExamples: 30, extraArgs: WITHOUT_OPS_TAG });
  if (result.code !== 0) throw new Error(`schemathesis failed (exit ${result.code}):\n${result.output}`);
  const ops = await runSchemathesis({ apiUrl: api.opsUrl, adminToken: ADMIN_TOKEN, userToken: token, events, maxExamples: 30, extraArgs: OPS_TAG_ONLY });
  if (ops.code !== 0) throw new Error(`schemathesis failed on the ops port (exit ${ops.code}):\n${ops.output}`);
  expect(result.generated).toBeGreaterThan(200);
  // Every operation the document names was fuzzed, on one port or the other.
  const methods = (item: Record<string, unknown>) => Object.keys(item).filter((key) => ['get', 'post', 'patch', 'put', 'delete'].includes(key)).length;
  const paths = Object.values(openapi.paths as Record<string, Record<string, unknown>>);
  const operations = paths.reduce((count, item) => count + methods(item), 0);
  const opsOperations = paths.filter((item) => item.servers).reduce((count, item) => count + methods(item), 0);
  expect(opsOperations).toBe(3);
  expect(result.output).toMatch(new RegExp(`Operations:\\s+${operations - opsOperations} selected / ${operations} total`));
  expect(ops.output).toMatch(new RegExp(`Operations:\\s+${opsOperations} selected / ${operations} total`));
  // The api is still healthy and logged no failed request.
  expect((await call(`${api.opsUrl}/readyz`)).status).toBe(200);
  expect(api.output()).not.toMatch(/request failed|koa error/);
  expect((await call(`${api.url}/v1/events/${events.soldOut}/coupons/${FUZZ_USER}`)).body).toMatchObject({ sequence: 1 });
  // Generated requests got past validation and identity to the gate, with more than one outcome (how many depends
  // on the seed and on the settings file; at least ten shows the gate is reached, not just the validators).
  const metrics = (await call<string>(`${api.opsUrl}/metrics`)).body;
  const outcomes = [...metrics.matchAll(/^coupon_gate_outcomes_total\{[^}]*outcome="(\w+)"[^}]*\} (\d+)/gm)].map((match) => [match[1], Number(match[2])] as const);
  expect(outcomes.reduce((sum, [, count]) => sum + count, 0)).toBeGreaterThanOrEqual(10);
  expect(outcomes.length).toBeGreaterThanOrEqual(3);
}, 180_000);

test('when the document disagrees with the api, then the same run fails and names the mismatch', async () => {
  // The error message documented as a number: every error response now breaks the document.
  const broken = structuredClone(openapi) as unknown as { components: { schemas: { Error: { properties: { message: unknown } } } } };
  broken.components.schemas.Error.properties.message = { type: 'integer' };
  const dir = await mkdtemp(join(tmpdir(), 'coupon-fuzz-doc-'));
  try {
    const document = join(dir, 'openapi.json');
    await writeFile(document, JSON.stringify(broken));
    const result = await runSchemathesis({
      apiUrl: api.url, adminToken: ADMIN_TOKEN, userToken: token, events, document, maxExamples: 5,
      extraArgs: ['--include-operation-id', 'getEvent', '--phases', 'fuzzing'],
    });
    expect(result.code).not.toBe(0);
    expect(result.output).toMatch(/Response violates schema/);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}, 120_000);
