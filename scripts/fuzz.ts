/**
 * Fuzzes a running api from docs/openapi.yaml with schemathesis (installed by scripts/install-fuzz-tools.sh into
 * .tools/fuzz-venv): schema-valid and schema-invalid requests to every operation, plus stateful sequences, and
 * every check schemathesis has (no 5xx, documented statuses, content types, headers and bodies, invalid data
 * rejected, valid data accepted, auth not ignored, 405 for undocumented methods). Exits non-zero on any failure.
 *
 * The api must run with AUTH_JWT_SECRET set (user tokens are minted from it, subject "fuzz-user") and ADMIN_TOKEN:
 *   AUTH_JWT_SECRET=$(openssl rand -hex 32) ADMIN_TOKEN=$(openssl rand -hex 16) npm run stack
 *   AUTH_JWT_SECRET=... ADMIN_TOKEN=... npm run fuzz -- --url http://127.0.0.1:8080 [--ops-url http://127.0.0.1:9464] [--max-examples 30] [--seed 1]
 * The operations tagged `operations` (/healthz, /readyz, /metrics) are served on the api's ops port (OPS_PORT),
 * the rest on its public port: one run each (OPS_TAG_ONLY / WITHOUT_OPS_TAG).
 * test/contract/fuzz.test.ts runs it on every `npm test`.
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { SignJWT } from 'jose';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
export const SCHEMATHESIS = join(ROOT, '.tools', 'fuzz-venv', 'bin', 'st');
export const OPENAPI_DOCUMENT = join(ROOT, 'docs', 'openapi.yaml');
export const SCHEMATHESIS_CONFIG = join(ROOT, 'test', 'contract', 'schemathesis.toml');
/** the seed CI uses, so a failure it reports can be replayed exactly */
export const DEFAULT_SEED = 20261125;
export const FUZZ_USER = 'fuzz-user';

/** Events in every state, which the generated requests pick half of the time (see schemathesis.toml). */
export interface FuzzEvents { open: string; soldOut: string; scheduled: string; closed: string }

export interface FuzzOptions {
  apiUrl: string;
  adminToken: string;
  /** a user JWT the api accepts (see userToken) */
  userToken: string;
  events: FuzzEvents;
  /** test cases per operation and phase */
  maxExamples?: number;
  seed?: number;
  /** another OpenAPI document (the self-check of the fuzz test feeds a broken one) */
  document?: string;
  /** extra schemathesis `run` arguments, e.g. ['--include-operation-id', 'getEvent'] */
  extraArgs?: string[];
  timeoutMs?: number;
}

export interface FuzzResult {
  code: number | null;
  /** schemathesis's report, without colours */
  output: string;
  /** "Test cases: N generated" of the report */
  generated: number;
}

/** A user token for the api under test: HS256 with its AUTH_JWT_SECRET, valid for an hour. */
export function userToken(jwtSecret: string, subject = FUZZ_USER): Promise<string> {
  return new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setSubject(subject).setIssuedAt().setExpirationTime('1h')
    .sign(new TextEncoder().encode(jwtSecret));
}

/**
 * Creates one event in each state through the api: open (with room), sold out (its one coupon went to the fuzz
 * user), scheduled (starts in a day) and closed (ended a minute ago).
 */
export async function prepareFuzzEvents(apiUrl: string, adminToken: string, token: string): Promise<FuzzEvents> {
  const prefix = `fuzz-${randomBytes(4).toString('hex')}`;
  const at = (offsetMs: number) => new Date(Date.now() + offsetMs).toISOString();
  const events: FuzzEvents = { open: `${prefix}-open`, soldOut: `${prefix}-sold-out`, scheduled: `${prefix}-scheduled`, closed: `${prefix}-closed` };
  const bodies = [
    { id: events.open, name: 'fuzz open', totalQuantity: 1_000 },
    { id: events.soldOut, name: 'fuzz sold out', totalQuantity: 1 },
    { id: events.scheduled, name: 'fuzz scheduled', totalQuantity: 10, startsAt: at(86_400_000) },
    { id: events.closed, name: 'fuzz closed', totalQuantity: 10, startsAt: at(-120_000), endsAt: at(-60_000) },
  ];
  for (const body of bodies) {
    const response = await fetch(`${apiUrl}/v1/events`, {
      method: 'POST', headers: { authorization: `Bearer ${adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify(body),
    });
    if (response.status !== 201) throw new Error(`creating ${body.id} answered ${response.status}: ${await response.text()}`);
  }
  const applied = await fetch(`${apiUrl}/v1/events/${events.soldOut}/apply`, { method: 'POST', headers: { authorization: `Bearer ${token}` } });
  if (applied.status !== 202) throw new Error(`the apply that sells ${events.soldOut} out answered ${applied.status}: ${await applied.text()}`);
  return events;
}

export async function runSchemathesis(options: FuzzOptions): Promise<FuzzResult> {
  if (!existsSync(SCHEMATHESIS)) {
    throw new Error(`schemathesis is not installed at ${SCHEMATHESIS}: run scripts/install-fuzz-tools.sh`);
  }
  // schemathesis keeps its example database and reports in the working directory: keep them out of the tree.
  const workDir = await mkdtemp(join(tmpdir(), 'coupon-fuzz-'));
  try {
    // The checked-in settings plus this run's ids (dictionary values cannot come from the environment).
    const { open, soldOut, scheduled, closed } = options.events;
    const config = join(workDir, 'schemathesis.toml');
    await writeFile(config, `${await readFile(SCHEMATHESIS_CONFIG, 'utf8')}
[dictionaries]
event-ids = { values = ${JSON.stringify([open, soldOut, scheduled, closed])} }
user-ids = { values = ${JSON.stringify([FUZZ_USER])} }
`);
    const args = [
      '--config-file', config, '--no-color',
      'run', options.document ?? OPENAPI_DOCUMENT,
      '--url', options.apiUrl,
      '--checks', 'all',
      '--max-examples', String(options.maxExamples ?? 30),
      '--seed', String(options.seed ?? DEFAULT_SEED),
      '--workers', '1',
      '--request-timeout', '10',
      ...(options.extraArgs ?? []),
    ];
    const child = spawn(SCHEMATHESIS, args, {
      cwd: workDir,
      env: { ...process.env, NO_COLOR: '1', FUZZ_ADMIN_TOKEN: options.adminToken, FUZZ_USER_TOKEN: options.userToken },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const chunks: string[] = [];
    child.stdout.on('data', (chunk: Buffer) => chunks.push(chunk.toString()));
    child.stderr.on('data', (chunk: Buffer) => chunks.push(chunk.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 240_000);
    const code = await new Promise<number | null>((resolve, reject) => {
      child.on('error', reject);
      child.on('close', (exitCode) => resolve(exitCode));
    }).finally(() => clearTimeout(timer));
    const output = chunks.join('');
    const generated = Number(/(\d+) generated/.exec(output)?.[1] ?? 0);
    return { code, output, generated };
  } finally {
    await rm(workDir, { recursive: true, force: true });
  }
}

/** schemathesis filters: the public port's operations, and the ops port's (docs/openapi.yaml tags them `operations`). */
export const WITHOUT_OPS_TAG = ['--exclude-tag', 'operations'];
export const OPS_TAG_ONLY = ['--include-tag', 'operations'];

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      url: { type: 'string', default: 'http://127.0.0.1:8080' },
      'ops-url': { type: 'string', default: 'http://127.0.0.1:9464' },
      'max-examples': { type: 'string', default: '30' },
      seed: { type: 'string', default: String(DEFAULT_SEED) },
    },
  });
  const adminToken = process.env.ADMIN_TOKEN;
  const jwtSecret = process.env.AUTH_JWT_SECRET;
  if (!adminToken || !jwtSecret) {
    console.error('set ADMIN_TOKEN and AUTH_JWT_SECRET to the values the api under test runs with');
    process.exit(2);
  }
  const token = await userToken(jwtSecret);
  const common = {
    adminToken, userToken: token, events: await prepareFuzzEvents(values.url, adminToken, token),
    maxExamples: Number(values['max-examples']), seed: Number(values.seed),
  };
  const api = await runSchemathesis({ ...common, apiUrl: values.url, extraArgs: WITHOUT_OPS_TAG });
  process.stdout.write(api.output);
  const ops = await runSchemathesis({ ...common, apiUrl: values['ops-url'], extraArgs: OPS_TAG_ONLY });
  process.stdout.write(ops.output);
  process.exit(api.code === 0 ? (ops.code ?? 1) : (api.code ?? 1));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await main();
