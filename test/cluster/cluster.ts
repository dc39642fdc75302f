/**
 * Helpers of the end-to-end checks against the local cluster of `npm run cluster` (scripts/cluster/): its
 * .cluster/env, kubectl and helm, HTTP through the Ingress stand-in, MySQL read inside its pod, bounded bursts.
 * Traffic goes only to loopback (the stand-in) and to the cluster's own pod addresses on this machine.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import http from 'node:http';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = fileURLToPath(new URL('../..', import.meta.url));
const K8S_VERSION = 'v1.34.4';
export const kubectlPath = join(root, '.tools', 'cluster', `k8s-${K8S_VERSION}`, 'bin', 'kubectl');
export const helmPath = join(root, '.tools', 'bin', 'helm');
export const NS = 'coupon';
export const DEPS_NS = 'coupon-deps';
export const RELEASE = 'coupon';

export interface ClusterEnv {
  KUBECONFIG: string; INGRESS_URL: string; INGRESS_HOST: string; ADMIN_TOKEN: string;
  /** the same Ingress rules with client keep-alive (the overload check's load generator); written since it exists */
  INGRESS_KEEPALIVE_URL?: string;
}

export function loadEnv(): ClusterEnv {
  const file = join(root, '.cluster', 'env');
  if (!existsSync(file)) throw new Error(`${file} is missing: start the cluster first with \`npm run cluster\``);
  const env: Record<string, string> = {};
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const m = /^export ([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m?.[1] && m[2] !== undefined) env[m[1]] = m[2].replace(/^'(.*)'$/, '$1').replace(/\\(.)/g, '$1');
  }
  for (const k of ['KUBECONFIG', 'INGRESS_URL', 'INGRESS_HOST', 'ADMIN_TOKEN']) {
    if (!env[k]) throw new Error(`${file} has no ${k}: run \`npm run cluster\` again`);
  }
  return env as unknown as ClusterEnv;
}

export const env = loadEnv();
process.env.KUBECONFIG = env.KUBECONFIG;

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
export const log = (msg: string) => console.log(`    ${msg}`);

export function kubectl(args: string[], input?: string): string {
  const r = spawnSync(kubectlPath, args, { input, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: 120_000 });
  if (r.status !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.status}): ${r.stderr || r.error}`);
  return r.stdout;
}
export const kubectlJson = <T = any>(args: string[]): T => JSON.parse(kubectl([...args, '-o', 'json']));

/** Runs helm asynchronously (so a burst can go on meanwhile); resolves with its exit code and output. */
export function helmAsync(args: string[]): Promise<{ code: number; output: string }> {
  return new Promise((resolve) => {
    const p = spawn(helmPath, args, { env: { ...process.env, KUBECONFIG: env.KUBECONFIG } });
    let output = '';
    p.stdout.on('data', (d) => (output += d));
    p.stderr.on('data', (d) => (output += d));
    p.on('exit', (code) => resolve({ code: code ?? -1, output }));
  });
}

/** SQL run by the mysql client inside the MySQL pod, as the service's own user; rows of tab-separated values. */
export function mysql(sql: string): string[][] {
  const out = kubectl(['-n', DEPS_NS, 'exec', '-i', 'mysql-0', '--', 'sh', '-c',
    'MYSQL_PWD="$MYSQL_PASSWORD" mysql -N -B -u "$MYSQL_USER" "$MYSQL_DATABASE"'], sql);
  return out.split('\n').filter(Boolean).map((l) => l.split('\t'));
}

export interface Pod { name: string; ip: string; ready: boolean; deleting: boolean; uid: string; phase: string }
export function pods(component: string, ns = NS): Pod[] {
  const list = kubectlJson(['-n', ns, 'get', 'pods', '-l', `app.kubernetes.io/instance=${RELEASE},app.kubernetes.io/component=${component}`]);
  return list.items.map((p: any) => ({
    name: p.metadata.name, ip: p.status.podIP ?? '', uid: p.metadata.uid, phase: p.status.phase,
    deleting: Boolean(p.metadata.deletionTimestamp),
    ready: (p.status.conditions ?? []).some((c: any) => c.type === 'Ready' && c.status === 'True'),
  }));
}

/** Waits until check() returns a truthy value; fails with what after limitMs, naming the last state seen. */
export async function waitFor<T>(what: string, limitMs: number, check: () => T | Promise<T>, everyMs = 2000): Promise<T> {
  const start = Date.now();
  let last: unknown;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
      last = v;
    } catch (e) { last = e; }
    if (Date.now() - start > limitMs) throw new Error(`timed out after ${Math.round(limitMs / 1000)}s waiting for ${what} (last: ${String(last)})`);
    await sleep(everyMs);
  }
}

// --- HTTP through the Ingress stand-in -----------------------------------------------------------------------------
const ingress = new URL(env.INGRESS_URL);
const agent = new http.Agent({ keepAlive: true, maxSockets: 64 });

export interface Answer { status: number; body: any; error?: string; ms: number; retried?: string }

type Target = { host: string; port: number; hostHeader?: string };
const viaIngress: Target = { host: ingress.hostname, port: Number(ingress.port), hostHeader: env.INGRESS_HOST };

/**
 * One HTTP request. Like Go's http.Transport, a GET or a request carrying an Idempotency-Key that fails on a
 * reused keep-alive connection before any answer (the server closed it as the request went out) is sent once
 * more on a new connection, with the same key; `retried` says why. (The stand-in closes client connections after
 * each answer, so this should not happen through it.)
 */
export async function request(method: string, path: string, body?: unknown, headers: Record<string, string> = {},
  target: Target = viaIngress): Promise<Answer> {
  const first = await requestOnce(method, path, body, headers, target);
  if (first.status === 0 && first.reused && (method === 'GET' || headers['idempotency-key'])) {
    const again = await requestOnce(method, path, body, headers, target, false);
    return { ...again, retried: first.error };
  }
  return first;
}

function requestOnce(method: string, path: string, body: unknown, headers: Record<string, string>, target: Target,
  reuse = true): Promise<Answer & { reused?: boolean }> {
  const started = performance.now();
  return new Promise((resolve) => {
    const data = body === undefined ? undefined : JSON.stringify(body);
    const req = http.request({
      host: target.host, port: target.port, path, method, agent: reuse ? agent : false, timeout: 15_000,
      headers: { ...(target.hostHeader ? { host: target.hostHeader } : {}), ...(data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) } : {}), ...headers },
    }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c) => (text += c));
      res.on('end', () => {
        let parsed: any = text;
        try { parsed = JSON.parse(text); } catch { /* not JSON */ }
        resolve({ status: res.statusCode ?? 0, body: parsed, ms: performance.now() - started });
      });
    });
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', (e) => resolve({ status: 0, body: undefined, error: e.message, ms: performance.now() - started, reused: req.reusedSocket }));
    if (data) req.write(data);
    req.end();
  });
}

export const admin = { authorization: `Bearer ${env.ADMIN_TOKEN}` };

export async function createEvent(id: string, totalQuantity: number): Promise<Answer> {
  return request('POST', '/v1/events', { id, name: `cluster check ${id}`, totalQuantity }, admin);
}

export interface BurstResult { answers: Map<string, Answer>; byStatus: Record<string, number>; seconds: number; retried: number }

/**
 * Applies once for each user, `concurrency` at a time, paced to at most `ratePerSec` (bounded by the user count).
 * `at` callbacks run once the given share of requests has been sent (mid-burst actions); `until` ends it early.
 */
export async function burst(eventId: string, users: string[], opts: { concurrency: number; ratePerSec?: number;
  at?: Array<{ share: number; run: () => unknown }>; until?: () => boolean }): Promise<BurstResult> {
  const answers = new Map<string, Answer>();
  const start = performance.now();
  let next = 0;
  const pending = [...(opts.at ?? [])].sort((a, b) => a.share - b.share);
  const gap = opts.ratePerSec ? 1000 / opts.ratePerSec : 0;
  const actions: Promise<unknown>[] = [];
  async function lane(): Promise<void> {
    for (;;) {
      if (opts.until?.()) return;
      const i = next++;
      if (i >= users.length) return;
      while (pending.length && i >= pending[0]!.share * users.length) actions.push(Promise.resolve(pending.shift()!.run()));
      if (gap) {
        const due = start + i * gap;
        const wait = due - performance.now();
        if (wait > 0) await sleep(wait);
      }
      const user = users[i]!;
      answers.set(user, await request('POST', `/v1/events/${eventId}/apply`, { userId: user }, { 'idempotency-key': `k-${user}` }));
    }
  }
  await Promise.all(Array.from({ length: opts.concurrency }, lane));
  await Promise.all(actions);
  const byStatus: Record<string, number> = {};
  for (const a of answers.values()) {
    const k = a.status ? String(a.status) : `error:${a.error}`;
    byStatus[k] = (byStatus[k] ?? 0) + 1;
  }
  const retried = [...answers.values()].filter((a) => a.retried).length;
  return { answers, byStatus, seconds: (performance.now() - start) / 1000, retried };
}

export const issuedUsers = (r: BurstResult) => [...r.answers].filter(([, a]) => a.status === 202).map(([u]) => u);

/** The api pods' /metrics, /readyz and /healthz: the chart's api.opsPort (OPS_PORT), apart from the /v1 port. */
export const API_OPS_PORT = 9464;

/** Per api pod: requests its /metrics counts on apply routes (read from the pod's own address on this machine). */
export async function applyCountsByPod(): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const p of pods('api')) {
    if (!p.ip || p.deleting) continue;
    const a = await request('GET', '/metrics', undefined, {}, { host: p.ip, port: API_OPS_PORT });
    let n = 0;
    if (typeof a.body === 'string') {
      for (const line of a.body.split('\n')) {
        if (line.startsWith('coupon_http_requests_total{') && line.includes('apply')) n += Number(line.split(' ').pop());
      }
    }
    out.set(p.name, n);
  }
  return out;
}

/** Rows in MySQL for an event, and the users holding them. */
export function persisted(eventId: string): { count: number; users: Set<string> } {
  const rows = mysql(`SELECT user_id FROM coupon WHERE event_id = '${eventId.replace(/'/g, "''")}'`);
  return { count: rows.length, users: new Set(rows.map((r) => r[0] ?? '')) };
}

/** Waits until MySQL holds `expected` rows for the event (the worker writes at its own pace). */
export async function waitPersisted(eventId: string, expected: number, limitMs = 180_000): Promise<{ count: number; users: Set<string>; seconds: number }> {
  const start = Date.now();
  let last = { count: -1, users: new Set<string>() };
  await waitFor(`${expected} rows of ${eventId} in MySQL`, limitMs, () => {
    last = persisted(eventId);
    if (last.count > expected) throw new Error(`${last.count} rows for ${eventId}, more than ${expected}`);
    return last.count === expected ? last : undefined;
  }, 2000).catch((e) => { throw new Error(`${e.message}; rows seen: ${last.count}`); });
  return { ...last, seconds: (Date.now() - start) / 1000 };
}

export const users = (prefix: string, n: number) => Array.from({ length: n }, (_, i) => `${prefix}-${String(i).padStart(5, '0')}`);
export const unique = (name: string) => `${name}-${Date.now().toString(36)}`;
