// The Ingress STAND-IN of the local cluster (not an Ingress controller you would run anywhere else): no real
// controller builds from the package registries, so this process routes the chart's real Ingress objects with
// Debian's nginx. It watches Ingresses, Services and EndpointSlices with kubectl, renders one nginx server per
// Ingress host of its IngressClass, proxying each path to the ready endpoints of the backend Service (as
// ingress-nginx does), reloads nginx on every change and writes the Ingress status (loadBalancer 127.0.0.1).
// It listens on loopback only. Run by scripts/cluster/ingress.sh; SIGTERM stops nginx and the stand-in.
//
// Environment: KUBECTL, KUBECONFIG, STAND_IN_DIR (config, pid, logs), INGRESS_PORT, INGRESS_CLASS.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';

const kubectl = process.env.KUBECTL ?? 'kubectl';
const dir = process.env.STAND_IN_DIR ?? '.cluster/ingress';
const port = Number(process.env.INGRESS_PORT ?? 18080);
const className = process.env.INGRESS_CLASS ?? 'coupon-stand-in';
const conf = join(dir, 'nginx.conf');
const pidFile = join(dir, 'nginx.pid');
mkdirSync(join(dir, 'tmp'), { recursive: true, mode: 0o1777 });

type Obj = { kind: string; metadata: { name: string; namespace: string; labels?: Record<string, string>; annotations?: Record<string, string> }; spec?: any; status?: any; endpoints?: any[]; ports?: any[] };

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
    'worker_processes 1;', `pid ${pidFile};`, `error_log ${join(dir, 'error.log')} warn;`,
    'events { worker_connections 4096; }',
    'http {',
    '  access_log off;',
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
    lines.push(`  upstream ${name} {`, ...eps.map((e) => `    server ${e} max_fails=1 fail_timeout=2s;`), '    keepalive 64;', '  }');
  }
  lines.push(`  server { listen 127.0.0.1:${port} default_server; return 404 '{"error":"not_found","message":"no Ingress rule for this host (stand-in)"}\\n'; }`);
  for (const [host, locs] of servers) {
    if (host === '_') continue;
    lines.push(`  server {`, `    listen 127.0.0.1:${port};`, `    server_name ${host};`, ...locs, '  }');
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

log(`class ${className}, listening on 127.0.0.1:${port}`);
sync();
for (const r of ['ingresses.networking.k8s.io', 'services', 'endpointslices.discovery.k8s.io']) watch(r);
setInterval(sync, 10_000); // a missed watch event is caught here
