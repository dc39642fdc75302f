// The Ingress STAND-IN of the local cluster (not an Ingress controller you would run anywhere else): no real
// controller builds from the package registries, so this process routes the chart's real Ingress objects with
// Debian's nginx. It watches Ingresses, Services and EndpointSlices with kubectl, renders one nginx server per
// Ingress host of its IngressClass, proxying each path to the ready endpoints of the backend Service (as
// ingress-nginx does), reloads nginx on every change and writes the Ingress status (loadBalancer 127.0.0.1).
// It listens on loopback only. Run by scripts/cluster/ingress.sh; SIGTERM stops nginx and the stand-in.
//
// Two ports serve the same Ingress rules: INGRESS_PORT closes each client connection after its answer (a reload,
// on every endpoint change, closes idle client connections, racing a client that reuses one: the checks' own
// HTTP client reuses them), and INGRESS_KEEPALIVE_PORT keeps client connections open as a real controller does
// (75 s, ingress-nginx's default), for a load generator that holds thousands of them (test/cluster/overload).
// nginx's own counters (stub_status) answer at /.stand-in/nginx-status on both ports for a Host no Ingress names.
//
// Open files: each client connection proxied holds two sockets in its nginx worker (the client's and the
// upstream one), and a process may not open more than RLIMIT_NOFILE (20,000 on the machine this was made on, a
// hard limit the stand-in cannot raise). So nginx runs 2 workers, each allowed the whole hard limit
// (worker_rlimit_nofile) and as many connections less a reserve for its files and listening sockets, and the
// keep-alive port is bound with reuseport (one accept queue per worker, connections spread by the kernel):
// 10,000 client connections are ~5,000 per worker, ~10,000 sockets each with their upstreams.
//
// Environment: KUBECTL, KUBECONFIG, STAND_IN_DIR (config, pid, logs), INGRESS_PORT, INGRESS_KEEPALIVE_PORT,
// INGRESS_CLASS.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const kubectl = process.env.KUBECTL ?? 'kubectl';
const dir = process.env.STAND_IN_DIR ?? '.cluster/ingress';
const port = Number(process.env.INGRESS_PORT ?? 18080);
const keepAlivePort = Number(process.env.INGRESS_KEEPALIVE_PORT ?? port + 1);
const className = process.env.INGRESS_CLASS ?? 'coupon-stand-in';
const conf = join(dir, 'nginx.conf');
const pidFile = join(dir, 'nginx.pid');
mkdirSync(join(dir, 'tmp'), { recursive: true, mode: 0o1777 });

type Obj = { kind: string; metadata: { name: string; namespace: string; labels?: Record<string, string>; annotations?: Record<string, string> }; spec?: any; status?: any; endpoints?: any[]; ports?: any[] };

/** nginx workers: each holds its share of the client connections and one upstream socket per request in flight */
const WORKERS = 2;
/** files and sockets per worker that are not connections (logs, listening sockets, channels), kept free */
const RESERVED_FILES = 1_000;
/** the hard RLIMIT_NOFILE this process was started with: nginx (root, but without CAP_SYS_RESOURCE) cannot exceed it */
function openFilesLimit(): number {
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync('/proc/self/limits', 'utf8'));
  const hard = m?.[2] === 'unlimited' ? Infinity : Number(m?.[2] ?? 1024);
  return Math.min(hard, 65_536);
}
const nofile = openFilesLimit();
const workerConnections = Math.max(1_024, nofile - RESERVED_FILES);
/** the listen backlog of the keep-alive port: the kernel's cap (net.core.somaxconn), as ingress-nginx sets it */
const backlog = (() => { try { return Number(readFileSync('/proc/sys/net/core/somaxconn', 'utf8').trim()) || 511; } catch { return 511; } })();

const log = (msg: string) => console.log(`${new Date().toISOString()} ingress-stand-in: ${msg}`);

function get(): Obj[] {
  const r = spawnSync(kubectl, ['get', 'ingresses.networking.k8s.io,services,endpointslices.discovery.k8s.io', '-A', '-o', 'json'], {
    encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, timeout: 20_000,
  });
  if (r.status !== 0) throw new Error(`kubectl get failed: ${r.stderr || r.error}`);
  return JSON.parse(r.stdout).items;
}

const safe = (s: string) => s.replace(/[^A-Za-z0-9_.-]/g, '_');

/** Ready endpoint addresses "ip:port" of a Service's port (by number or name), from its EndpointSlices. */
function endpoints(items: Obj[], ns: string, svcName: string, want: { number?: number; name?: string }): string[] {
  const svc = items.find((o) => o.kind === 'Service' && o.metadata.namespace === ns && o.metadata.name === svcName);
  if (!svc) return [];
  const sp = (svc.spec.ports ?? []).find((p: any) => (want.number !== undefined ? p.port === want.number : p.name === want.name));
  if (!sp) return [];
  const out: string[] = [];
  for (const s of items) {
    if (s.kind !== 'EndpointSlice' || s.metadata.namespace !== ns) continue;
    if (s.metadata.labels?.['kubernetes.io/service-name'] !== svcName) continue;
    const p = (s.ports ?? []).find((x: any) => (x.name ?? '') === (sp.name ?? ''));
    const target = p?.port ?? (typeof sp.targetPort === 'number' ? sp.targetPort : undefined);
    if (!target) continue;
    for (const e of s.endpoints ?? []) {
      if (e.conditions?.ready === false) continue;
      for (const a of e.addresses ?? []) out.push(`${a}:${target}`);
    }
  }
  return [...new Set(out)].sort();
}

function render(items: Obj[]): { text: string; ingresses: Obj[] } {
  const ingresses = items.filter((o) => o.kind === 'Ingress' &&
    (o.spec?.ingressClassName ?? o.metadata.annotations?.['kubernetes.io/ingress.class']) === className);
  const upstreams = new Map<string, string[]>();
  const servers = new Map<string, string[]>();
  for (const ing of ingresses) {
    const ns = ing.metadata.namespace;
    for (const rule of ing.spec.rules ?? []) {
      const host = rule.host ?? '_';
      const locs = servers.get(host) ?? [];
      for (const path of rule.http?.paths ?? []) {
        const svc = path.backend?.service;
        if (!svc) continue;
        const want = svc.port?.number !== undefined ? { number: svc.port.number } : { name: svc.port?.name };
        const up = safe(`${ns}_${svc.name}_${svc.port?.number ?? svc.port?.name}`);
        const eps = endpoints(items, ns, svc.name, want);
        upstreams.set(up, eps);
        const p = path.path ?? '/';
        const body = eps.length
          ? `proxy_pass http://${up};`
          : `return 503 '{"error":"unavailable","message":"no ready endpoints behind the ingress stand-in"}\\n';`;
        const where = path.pathType === 'Exact' ? [`= ${p}`] : p === '/' ? ['/'] : [`= ${p.replace(/\/$/, '')}`, `${p.replace(/\/$/, '')}/`];
        for (const w of where) locs.push(`    location ${w} { ${body} }`);
      }
      servers.set(host, locs);
    }
  }
  const lines: string[] = [
    '# Written by scripts/cluster/ingress-stand-in.ts from the Ingress objects: do not edit.',
    `worker_processes ${WORKERS};`, `worker_rlimit_nofile ${nofile};`, `pid ${pidFile};`, `error_log ${join(dir, 'error.log')} warn;`,
    // multi_accept: a worker takes every pending connection at once (ingress-nginx's default), not one per loop.
    `events { worker_connections ${workerConnections}; multi_accept on; }`,
    'http {',
    '  access_log off;',
    // The keep-alive port logs each request's times (buffered): what nginx itself added to a burst's latency.
    // Fields apart by |: the upstream ones list every pod tried ("a, b").
    "  log_format timing '$msec|$status|$request_time|$upstream_connect_time|$upstream_response_time';",
    // Reloads (every endpoint change) close idle client connections, racing a client that reuses one: the
    // stand-in closes each client connection after its answer instead (loopback; upstreams keep theirs).
    '  keepalive_timeout 0;',
    `  client_body_temp_path ${dir}/tmp/body; proxy_temp_path ${dir}/tmp/proxy; fastcgi_temp_path ${dir}/tmp/fastcgi;`,
    `  uwsgi_temp_path ${dir}/tmp/uwsgi; scgi_temp_path ${dir}/tmp/scgi;`,
    '  proxy_http_version 1.1; proxy_set_header Connection "";',
    '  proxy_set_header Host $host; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;',
    '  proxy_set_header X-Forwarded-Proto $scheme; proxy_set_header X-Real-IP $remote_addr;',
    '  proxy_connect_timeout 2s; proxy_read_timeout 60s; proxy_next_upstream error timeout; proxy_next_upstream_tries 3;',
    '  client_max_body_size 1m;',
  ];
  for (const [name, eps] of upstreams) {
    if (!eps.length) continue;
    // Idle upstream connections kept per worker, and their reuse, as ingress-nginx's defaults (upstream-keepalive-*):
    // under a burst, fewer connections opened (and closed into TIME_WAIT) per request. max_fails=0: no endpoint is
    // taken out for a failed connect (ingress-nginx's balancer does not either); with nginx's default, one connect
    // that timed out under a burst took a pod out for fail_timeout, and with both out every request was a 502.
    lines.push(`  upstream ${name} {`, ...eps.map((e) => `    server ${e} max_fails=0;`),
      '    keepalive 320; keepalive_requests 10000; keepalive_timeout 60s;', '  }');
  }
  // The keep-alive port: client connections kept as a controller keeps them (75 s), one accept queue per worker
  // (reuseport) as long as the kernel allows (backlog), as ingress-nginx listens.
  const keepAliveServer = `    keepalive_timeout 75s; access_log ${join(dir, 'keepalive-access.log')} timing buffer=256k flush=1s;`;
  for (const [listen, options, keepAlive] of [[port, '', ''], [keepAlivePort, ` reuseport backlog=${backlog}`, keepAliveServer]] as const) {
    lines.push(`  server {`, `    listen 127.0.0.1:${listen} default_server${options};`, ...(keepAlive ? [keepAlive] : []),
      '    location = /.stand-in/nginx-status { stub_status; }',
      `    location / { return 404 '{"error":"not_found","message":"no Ingress rule for this host (stand-in)"}\\n'; }`, '  }');
    for (const [host, locs] of servers) {
      if (host === '_') continue;
      lines.push(`  server {`, `    listen 127.0.0.1:${listen};`, `    server_name ${host};`, ...(keepAlive ? [keepAlive] : []), ...locs, '  }');
    }
  }
  lines.push('}', '');
  return { text: lines.join('\n'), ingresses };
}

function nginxRunning(): boolean {
  if (!existsSync(pidFile)) return false;
  const pid = Number(readFileSync(pidFile, 'utf8').trim());
  if (!Number.isInteger(pid) || pid <= 0) return false; // `nginx -t` leaves an empty pid file
  try { process.kill(pid, 0); return true; } catch { return false; }
}

let current = '';
const statusDone = new Set<string>();
function sync(): void {
  let items: Obj[];
  try { items = get(); } catch (e) { log(String(e)); return; }
  const { text, ingresses } = render(items);
  if (text !== current || !nginxRunning()) {
    writeFileSync(conf, text);
    const test = spawnSync('nginx', ['-t', '-q', '-c', conf, '-p', dir], { encoding: 'utf8' });
    if (test.status !== 0) { log(`rendered config refused: ${test.stderr}`); return; }
    const args = nginxRunning() ? ['-s', 'reload', '-c', conf, '-p', dir] : ['-c', conf, '-p', dir];
    const r = spawnSync('nginx', args, { encoding: 'utf8' });
    if (r.status !== 0) { log(`nginx ${args.join(' ')} failed: ${r.stderr}`); return; }
    current = text;
    const ups = [...text.matchAll(/^ {4}server (\S+) /gm)].map((m) => m[1]);
    log(`nginx ${args[0] === '-s' ? 'reloaded' : 'started'}: ${ingresses.length} ingress(es), endpoints ${ups.join(' ') || 'none'}`);
  }
  for (const ing of ingresses) {
    const key = `${ing.metadata.namespace}/${ing.metadata.name}`;
    const has = (ing.status?.loadBalancer?.ingress ?? []).some((x: any) => x.ip === '127.0.0.1');
    if (has) { statusDone.add(key); continue; }
    const r = spawnSync(kubectl, ['-n', ing.metadata.namespace, 'patch', 'ingress', ing.metadata.name, '--subresource=status',
      '--type=merge', '-p', JSON.stringify({ status: { loadBalancer: { ingress: [{ ip: '127.0.0.1' }] } } })], { encoding: 'utf8' });
    if (r.status === 0) log(`status of ingress ${key}: 127.0.0.1:${port}`);
  }
}

let timer: NodeJS.Timeout | undefined;
const schedule = () => { if (!timer) timer = setTimeout(() => { timer = undefined; sync(); }, 200); };

const watchers: ChildProcess[] = [];
let stopping = false;
function watch(resource: string): void {
  const w = spawn(kubectl, ['get', resource, '-A', '--watch-only', '-o', 'name'], { stdio: ['ignore', 'pipe', 'ignore'] });
  watchers.push(w);
  w.stdout.on('data', schedule);
  w.on('exit', () => { if (!stopping) setTimeout(() => { watch(resource); schedule(); }, 1000); });
}

function stop(): void {
  stopping = true;
  for (const w of watchers) w.kill();
  if (nginxRunning()) spawnSync('nginx', ['-s', 'quit', '-c', conf, '-p', dir]);
  log('stopped');
  process.exit(0);
}
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

log(`class ${className}, listening on 127.0.0.1:${port} (a connection per request) and 127.0.0.1:${keepAlivePort} (keep-alive); ` +
  `nginx: ${WORKERS} workers, worker_rlimit_nofile ${nofile}, worker_connections ${workerConnections}, keep-alive port backlog ${backlog}`);
sync();
for (const r of ['ingresses.networking.k8s.io', 'services', 'endpointslices.discovery.k8s.io']) watch(r);
setInterval(sync, 10_000); // a missed watch event is caught here
