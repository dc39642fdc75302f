/**
 * `npm run test:cluster` (node's runner takes the files in name order: this one after e2e.check.ts), overload
 * through the Ingress:
 *   9. A burst of 10,000 concurrent connections (two load-generator processes of 5,000, scripts/loadgen) through
 *      the Ingress stand-in to 2 api pods with the chart's default resources (memory limit 512Mi), for 8 s: each
 *      connection sends applies of new users back to back and, told 503 with Retry-After, waits as the README
 *      tells clients to. It must show: no api pod replaced, restarted or OOMKilled; every 503 with Retry-After;
 *      every coupon a client was told of (202 with a sequence) a MySQL row with that sequence, never more than N
 *      rows, exactly N once the event sold out. Every request answered within 2 s is NOT met yet through the
 *      stand-in (a connection storm at the pods, see below): printed as a figure, not asserted; issue 19 is open. It prints nginx's own figures
 *      (its limits, stub_status counters, its workers' CPU time and open files, its access log's times, its error
 *      log), the CPU time of everything on the machine during the burst, and each api pod's admission gauges,
 *      accepted connections and accept-queue drops: where the time went, and that the stand-in was not the limit.
 * The load goes to the stand-in's keep-alive port (the same Ingress rules; its other port closes every client
 * connection after one answer). The api HPA is held at 2 replicas during the check (a pod added or removed
 * mid-burst reloads nginx, which closes idle client connections) and given back its bounds after.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';
import { type LoadgenReport, loadgenBinary, runLoadgen } from '../../scripts/loadgen.ts';
import { MEMORY_CGROUP_ROOT, oomKillsIn } from '../../scripts/memory-cgroup.ts';
import { API_OPS_PORT, NS, RELEASE, createEvent, env, kubectl, kubectlJson, log, mysql, pods, request, root, sleep, unique, waitFor } from './cluster.ts';

const CLIENT_PROCESSES = 2;
const CONNECTIONS_PER_CLIENT = 5_000;
/** 8 s in CI; OVERLOAD_SECONDS for a longer burst, as the fault test takes it */
const SECONDS = Number(process.env.OVERLOAD_SECONDS ?? 8);
/** sold out within the burst on this machine, so that both the issuing and the sold-out path take the load */
const N = 3_000;
const REPLICAS = 2;
const STAND_IN = join(root, '.cluster', 'ingress');
const T = { timeout: 10 * 60_000 };

// --- nginx of the stand-in, read from /proc and its own counters -----------------------------------------------------
const CLK_TCK = Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout?.trim()) || 100;

function procStat(pid: number): { ppid: number; cpuSeconds: number } {
  const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' '); // fields from the 3rd (state) on
  return { ppid: Number(fields[1]), cpuSeconds: (Number(fields[11]) + Number(fields[12])) / CLK_TCK };
}

function nginxMaster(): number {
  return Number(readFileSync(join(STAND_IN, 'nginx.pid'), 'utf8').trim());
}

function nginxWorkers(master: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if (procStat(Number(entry)).ppid === master) out.push(Number(entry));
    } catch { /* gone */ }
  }
  return out.sort((a, b) => a - b);
}

const openFiles = (pid: number) => { try { return readdirSync(`/proc/${pid}/fd`).length; } catch { return -1; } };
function fileLimit(pid: number): string {
  try {
    const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(readFileSync(`/proc/${pid}/limits`, 'utf8'));
    return m ? `${m[1]}/${m[2]}` : '?';
  } catch { return 'gone'; }
}
const confValue = (conf: string, name: string) => new RegExp(`\\b${name}\\s+(\\S+?);`).exec(conf)?.[1] ?? '?';

interface StubStatus { active: number; accepts: number; handled: number; requests: number; reading: number; writing: number; waiting: number }
async function stubStatus(port: number): Promise<StubStatus> {
  // A Host no Ingress names: the stand-in's default server, which answers nginx's own counters there.
  const a = await request('GET', '/.stand-in/nginx-status', undefined, {}, { host: '127.0.0.1', port });
  const text = String(a.body);
  const n = (re: RegExp) => Number(re.exec(text)?.[1] ?? NaN);
  const totals = /\n\s*(\d+)\s+(\d+)\s+(\d+)\s*\n/.exec(text);
  if (a.status !== 200 || !totals) throw new Error(`stub_status answered ${a.status}: ${text.slice(0, 200)}`);
  return {
    active: n(/Active connections:\s*(\d+)/), accepts: Number(totals[1]), handled: Number(totals[2]), requests: Number(totals[3]),
    reading: n(/Reading:\s*(\d+)/), writing: n(/Writing:\s*(\d+)/), waiting: n(/Waiting:\s*(\d+)/),
  };
}

/**
 * CPU time by kind of process on the machine during the burst (every process, sampled: one that exits counts up
 * to its last sample): who had the 2 cores, the api pods or nginx or the load generators.
 */
class CpuByKind {
  readonly #base = new Map<number, number>();
  readonly #last = new Map<number, number>();
  readonly #kind = new Map<number, string>();
  readonly #command = new Map<number, string>();
  constructor() { this.sample(true); }
  static kindOf(pid: number): string {
    let cmd = '';
    try { cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' '); } catch { return 'other'; }
    if (/^nginx: (worker|master)/.test(cmd) && isStandIn(pid)) return 'nginx (stand-in)';
    if (/loadgen/.test(cmd)) return isOurs(pid) ? 'load generators' : 'other';
    if (/src\/api\/main\.ts/.test(cmd)) return inPod(pid) ? 'api pods' : 'other';
    if (/worker\/main\.ts/.test(cmd) && inPod(pid)) return 'worker pods';
    if (/redis-server|mariadbd|mysqld/.test(cmd) && inPod(pid)) return 'redis + mysql pods';
    if (/^(kube-|etcd|containerd|kubelet|coredns|metrics-server)|kubectl/.test(cmd)) return 'kubernetes';
    return 'other';
  }
  sample(base = false): void {
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      const pid = Number(entry);
      let cpu: number;
      try { cpu = procStat(pid).cpuSeconds; } catch { continue; }
      if (base) this.#base.set(pid, cpu);
      else if (!this.#base.has(pid)) this.#base.set(pid, 0); // started during the burst
      this.#last.set(pid, cpu);
      if (!this.#kind.has(pid)) {
        this.#kind.set(pid, CpuByKind.kindOf(pid));
        try { this.#command.set(pid, readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').slice(0, 2).join(' ').slice(0, 60)); } catch { /* gone */ }
      }
    }
  }
  /** the busiest processes counted as other (someone else's work on the machine, if it is busy) */
  topOther(n = 3): string {
    const byCommand = new Map<string, number>();
    for (const [pid, last] of this.#last) {
      if (this.#kind.get(pid) !== 'other') continue;
      const command = this.#command.get(pid) ?? '?';
      byCommand.set(command, (byCommand.get(command) ?? 0) + last - (this.#base.get(pid) ?? 0));
    }
    return [...byCommand].sort((a, b) => b[1] - a[1]).slice(0, n).filter(([, v]) => v >= 0.1)
      .map(([k, v]) => `${k} ${v.toFixed(1)} s`).join(', ');
  }
  totals(): Record<string, number> {
    const out: Record<string, number> = {};
    for (const [pid, last] of this.#last) {
      const kind = this.#kind.get(pid) ?? 'other';
      out[kind] = (out[kind] ?? 0) + last - (this.#base.get(pid) ?? 0);
    }
    return out;
  }
}
const cgroupOf = (pid: number) => { try { return readFileSync(`/proc/${pid}/cgroup`, 'utf8'); } catch { return ''; } };
const inPod = (pid: number) => cgroupOf(pid).includes('kubepods');
const isOurs = (pid: number) => { try { return procStat(pid).ppid === process.pid; } catch { return false; } };
const isStandIn = (pid: number) => {
  try {
    const master = nginxMaster();
    return pid === master || procStat(pid).ppid === master;
  } catch { return false; }
};

/** TIME_WAIT sockets of the host (nginx's upstream connections it closed end there) */
const timeWait = () => Number(/^TCP:.*\btw (\d+)/m.exec(readFileSync('/proc/net/sockstat', 'utf8'))?.[1] ?? NaN);

function readFrom(file: string, offset: number): string {
  if (!existsSync(file)) return '';
  const size = statSync(file).size;
  if (size <= offset) return '';
  const fd = openSync(file, 'r');
  try {
    const buffer = Buffer.alloc(Math.min(size - offset, 16 * 1024 * 1024));
    readSync(fd, buffer, 0, buffer.length, offset);
    return buffer.toString('utf8');
  } finally { closeSync(fd); }
}

// --- the api pods ----------------------------------------------------------------------------------------------------
interface ApiPod { name: string; uid: string; ip: string; ready: boolean; readySince: string; restarts: number; terminated: string[]; containerId: string; qos: string }
function apiPods(): ApiPod[] {
  const list = kubectlJson(['-n', NS, 'get', 'pods', '-l', `app.kubernetes.io/instance=${RELEASE},app.kubernetes.io/component=api`]);
  return list.items.filter((p: any) => !p.metadata.deletionTimestamp).map((p: any) => {
    const ready = (p.status.conditions ?? []).find((c: any) => c.type === 'Ready');
    const statuses: any[] = p.status.containerStatuses ?? [];
    return {
      name: p.metadata.name, uid: p.metadata.uid, ip: p.status.podIP ?? '', qos: p.status.qosClass ?? '',
      ready: ready?.status === 'True', readySince: ready?.lastTransitionTime ?? '',
      restarts: statuses.reduce((n, c) => n + (c.restartCount ?? 0), 0),
      // why a container ended, now or before its last restart (OOMKilled, Error, ...)
      terminated: statuses.flatMap((c) => [c.lastState?.terminated?.reason, c.state?.terminated?.reason]).filter(Boolean),
      containerId: String(statuses[0]?.containerID ?? '').replace(/^\w+:\/\//, ''),
    };
  });
}

/** The api container's memory cgroup folder (v1, the kubelet's cgroupfs driver). */
const containerCgroup = (pod: ApiPod) =>
  join(MEMORY_CGROUP_ROOT, 'kubepods', pod.qos.toLowerCase() === 'guaranteed' ? '' : pod.qos.toLowerCase(), `pod${pod.uid}`, pod.containerId);

/** The api container's memory cgroup: its peak usage and the OOM kills the kernel counted. */
function containerMemory(pod: ApiPod): { peakMiB?: number; oomKills?: number } {
  const dir = containerCgroup(pod);
  try {
    const peak = Number(readFileSync(join(dir, 'memory.max_usage_in_bytes'), 'utf8'));
    return { peakMiB: Math.round(peak / 2 ** 20), oomKills: oomKillsIn(dir) };
  } catch {
    return {};
  }
}

/**
 * TCP counters of the pod's network namespace (read through its process's /proc/<pid>/net): connections it
 * accepted (PassiveOpens: nginx's upstream connections) and those its full accept queue dropped (ListenOverflows).
 */
function podTcp(pod: ApiPod): { accepted: number; listenOverflows: number } | undefined {
  try {
    const pid = Number(readFileSync(join(containerCgroup(pod), 'cgroup.procs'), 'utf8').split('\n')[0]);
    const field = (file: string, prefix: string, name: string) => {
      const [head, values] = readFileSync(`/proc/${pid}/net/${file}`, 'utf8').split('\n').filter((l) => l.startsWith(`${prefix}:`));
      const i = head!.split(' ').indexOf(name);
      return Number(values!.split(' ')[i]);
    };
    return { accepted: field('snmp', 'Tcp', 'PassiveOpens'), listenOverflows: field('netstat', 'TcpExt', 'ListenOverflows') };
  } catch {
    return undefined;
  }
}

/** The api's load gauges (its /metrics): what its admission control saw during the burst, sampled. */
interface LoadSample { limit: number; inFlight: number; queued: number; connections: number; loopLagMaxMs: number }
async function apiLoad(pod: ApiPod): Promise<LoadSample | undefined> {
  const a = await request('GET', '/metrics', undefined, {}, { host: pod.ip, port: API_OPS_PORT });
  if (a.status !== 200) return undefined;
  const text = String(a.body);
  const g = (name: string) => Number(new RegExp(`^${name}\\{[^}]*\\} (\\S+)$`, 'm').exec(text)?.[1] ?? NaN);
  return {
    limit: g('coupon_admission_limit'), inFlight: g('coupon_admission_in_flight'), queued: g('coupon_admission_queued'),
    connections: g('coupon_http_open_connections'), loopLagMaxMs: Math.round(1000 * g('coupon_nodejs_eventloop_lag_max_seconds')),
  };
}

/** Sums of the api's own counters (its /metrics, read from the pod's address on this machine). */
async function apiCounters(pod: ApiPod): Promise<{ shed: number; refused: number }> {
  const a = await request('GET', '/metrics', undefined, {}, { host: pod.ip, port: API_OPS_PORT });
  const sum = (name: string) => String(a.body).split('\n')
    .filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `)).reduce((n, l) => n + Number(l.split(' ').pop()), 0);
  return { shed: sum('coupon_admission_shed_total'), refused: sum('coupon_http_refused_connections_total') };
}

test('9. overload through the Ingress: 10,000 connections on 2 api pods (512Mi): no restart, no OOM kill, every coupon told a row (every client answered within 2 s: printed, not met yet)', T, async () => {
  const keepAliveUrl = env.INGRESS_KEEPALIVE_URL;
  assert.ok(keepAliveUrl, '.cluster/env has no INGRESS_KEEPALIVE_URL: run `npm run cluster` again (it restarts the changed stand-in)');
  const keepAlivePort = Number(new URL(keepAliveUrl).port);
  await stubStatus(keepAlivePort).catch((e) => assert.fail(`the stand-in's keep-alive port: ${e}; run \`npm run cluster\` again`));
  const binary = loadgenBinary(); // built (once) while the cluster settles

  const hpaName = `${RELEASE}-api`;
  const hpa = kubectlJson(['-n', NS, 'get', 'hpa', '--ignore-not-found']).items.find((h: any) => h.metadata.name === hpaName);
  const maxBefore: number | undefined = hpa?.spec?.maxReplicas;
  if (hpa) {
    assert.ok(hpa.spec.minReplicas <= REPLICAS, `the HPA's minReplicas is ${hpa.spec.minReplicas}`);
    kubectl(['-n', NS, 'patch', 'hpa', hpaName, '--type=merge', '-p', JSON.stringify({ spec: { minReplicas: REPLICAS, maxReplicas: REPLICAS } })]);
  }
  try {
    await binary;
    kubectl(['-n', NS, 'rollout', 'status', `deployment/${RELEASE}-worker`, '--timeout=180s']);
    await waitFor(`exactly ${REPLICAS} ready api pods and none terminating`, 240_000, () => {
      const all = pods('api');
      return all.length === REPLICAS && all.every((p) => p.ready && !p.deleting);
    });
    const before = apiPods();
    const limits = kubectlJson(['-n', NS, 'get', 'deployment', `${RELEASE}-api`]).spec.template.spec.containers[0].resources;
    log(`api pods: ${before.map((p) => `${p.name} (restarts ${p.restarts})`).join(', ')}; resources ${JSON.stringify(limits)}`);

    const id = unique('overload');
    const created = await createEvent(id, N);
    assert.equal(created.status, 201, `POST /v1/events answered ${created.status}: ${JSON.stringify(created.body)}`);
    const countersBefore = await Promise.all(before.map(apiCounters));
    const tcpBefore = before.map(podTcp);

    // nginx before the burst
    const conf = readFileSync(join(STAND_IN, 'nginx.conf'), 'utf8');
    const master = nginxMaster();
    const workers = nginxWorkers(master);
    const cpuBefore = new Map(workers.map((w) => [w, procStat(w).cpuSeconds]));
    const workerFileLimits = workers.map(fileLimit);
    const errorLog = join(STAND_IN, 'error.log');
    const errorLogOffset = existsSync(errorLog) ? statSync(errorLog).size : 0;
    const accessLog = join(STAND_IN, 'keepalive-access.log');
    const accessLogOffset = existsSync(accessLog) ? statSync(accessLog).size : 0;
    const stubBefore = await stubStatus(keepAlivePort);
    const twBefore = timeWait();

    const cpuByKind = new CpuByKind();
    let sampling = true;
    // The api pods' gauges, once a second (a scrape is one more request to each pod).
    const loadSamples = new Map<string, LoadSample[]>(before.map((p) => [p.name, []]));
    const podSampler = (async () => {
      while (sampling) {
        await Promise.all(before.map(async (p) => {
          const sample = await apiLoad(p).catch(() => undefined);
          if (sample) loadSamples.get(p.name)!.push(sample);
        }));
        await sleep(1000);
      }
    })();
    // Sampled during the burst: nginx's client connections, its workers' open files, TIME_WAIT sockets, CPU time.
    const peak = { active: 0, writing: 0, tw: twBefore, files: new Map<number, number>(), samples: 0 };
    const sampler = (async () => {
      while (sampling) {
        try {
          const s = await stubStatus(keepAlivePort);
          peak.active = Math.max(peak.active, s.active);
          peak.writing = Math.max(peak.writing, s.writing);
        } catch { /* counted as a missing sample */ }
        for (const w of workers) peak.files.set(w, Math.max(peak.files.get(w) ?? 0, openFiles(w)));
        peak.tw = Math.max(peak.tw, timeWait());
        cpuByKind.sample();
        peak.samples++;
        await sleep(250);
      }
    })();

    const started = performance.now();
    let reports: LoadgenReport[];
    // When each process ended: each sends for SECONDS once its connections are open, so the ends show how far
    // apart their bursts ran.
    const ended: number[] = [];
    try {
      reports = await Promise.all(Array.from({ length: CLIENT_PROCESSES }, (_, i) => runLoadgen({
        url: keepAliveUrl, host: env.INGRESS_HOST, eventId: id, connections: CONNECTIONS_PER_CLIENT, seconds: SECONDS,
        timeoutSec: 2, users: `o${i}-`,
      }).finally(() => { ended[i] = (performance.now() - started) / 1000; })));
    } finally {
      sampling = false;
      await Promise.all([sampler, podSampler]);
    }
    const wall = (performance.now() - started) / 1000;
    cpuByKind.sample();
    const cpuTotals = Object.entries(cpuByKind.totals()).sort((a, b) => b[1] - a[1]);

    // nginx after
    const stubAfter = await stubStatus(keepAlivePort);
    const workersAfter = nginxWorkers(nginxMaster());
    const cpu = workers.map((w) => { try { return procStat(w).cpuSeconds - cpuBefore.get(w)!; } catch { return NaN; } });
    const errors = readFrom(errorLog, errorLogOffset).split('\n').filter(Boolean);
    const errorKinds: Record<string, number> = {};
    for (const line of errors) {
      const kind = line.replace(/^\S+ \S+ \[\w+\] \d+#\d+: (\*\d+ )?/, '').replace(/, client: .*$/, '').replace(/\d+/g, 'N');
      errorKinds[kind] = (errorKinds[kind] ?? 0) + 1;
    }

    // nginx's own times of each proxied request (its access log of the keep-alive port, flushed within 1 s): from
    // reading the request to sending the answer; of that, with the pods (connecting, each pod tried, its answer);
    // the rest is nginx's own part.
    await sleep(1500);
    const values = (field: string) => field.split(/[,:]/).map((v) => Number(v.trim())).filter((v) => Number.isFinite(v));
    const timings = readFrom(accessLog, accessLogOffset).split('\n').map((l) => l.split('|'))
      .filter((f) => f.length >= 5 && f[4] !== '-').map((f) => ({
        request: Number(f[2]), connect: Math.max(0, ...values(f[3]!)), upstream: values(f[4]!).reduce((a, b) => a + b, 0),
      }));
    const quantile = (xs: number[], q: number) => xs.length ? xs.sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(q * xs.length))]! : NaN;
    const ms = (x: number) => `${Math.round(1000 * x)} ms`;
    const nginxOwn = timings.map((t) => Math.max(0, t.request - t.upstream));

    // the clients
    const sum = (pick: (r: LoadgenReport) => number) => reports.reduce((n, r) => n + pick(r), 0);
    const byStatus: Record<string, number> = {};
    for (const r of reports) for (const [k, v] of Object.entries(r.byStatus)) byStatus[k] = (byStatus[k] ?? 0) + v;
    const told = reports.flatMap((r) => r.issued.map(([userId, sequence]) => ({ userId, sequence })));
    const f = {
      sent: sum((r) => r.sent), answered: sum((r) => r.answered), timeouts: sum((r) => r.timeouts), errors: sum((r) => r.errors),
      over2s: sum((r) => r.over2s), retryAfterOn503: sum((r) => r.retryAfterOn503), peakConnections: sum((r) => r.peakConnections),
      maxMs: Math.round(Math.max(...reports.map((r) => r.latencyMs.max))), p99Ms: Math.round(Math.max(...reports.map((r) => r.latencyMs.p99))),
      p50Ms: Math.round(Math.max(...reports.map((r) => r.latencyMs.p50))),
      errorKinds: Object.assign({}, ...reports.map((r) => r.errorKinds)) as Record<string, number>,
      decidedPerSecond: reports[0]!.perSecond.map((_, s) => sum((r) => r.perSecond[s]?.goodput ?? 0)),
      shedPerSecond: reports[0]!.perSecond.map((_, s) => sum((r) => r.perSecond[s]?.shed ?? 0)),
      unansweredPerSecond: reports[0]!.perSecond.map((_, s) => sum((r) => r.perSecond[s]?.unanswered ?? 0)),
    };
    const fmt = (o: Record<string, number>) => Object.entries(o).map(([k, v]) => `${k} x${v}`).join(', ') || 'none';
    log(`burst: ${CLIENT_PROCESSES} x ${CONNECTIONS_PER_CLIENT} connections (peak open ${f.peakConnections}) through ${keepAliveUrl} ` +
      `(Host ${env.INGRESS_HOST}), ${SECONDS} s of applies each, ended at ${ended.map((e) => `${e.toFixed(1)} s`).join(' and ')} ` +
      `(opening and proving 5,000 connections first); event ${id}, N ${N}`);
    log(`answers: ${f.answered} of ${f.sent}: ${fmt(byStatus)}; 503 with Retry-After ${f.retryAfterOn503}; ` +
      `timeouts (no answer in 2 s) ${f.timeouts}, errors ${f.errors}${f.errors ? ` (${fmt(f.errorKinds)})` : ''}, over 2 s ${f.over2s}; ` +
      `latency p50 ${f.p50Ms} ms, p99 ${f.p99Ms} ms, max ${f.maxMs} ms`);
    log(`per second: decided (202/410 within 2 s) ${f.decidedPerSecond.join(' ')}; shed (503) ${f.shedPerSecond.join(' ')}; ` +
      `unanswered ${f.unansweredPerSecond.join(' ')}`);
    log(`CPU time on the machine (2 cores) during the ${wall.toFixed(1)} s: ${cpuTotals.map(([k, v]) => `${k} ${v.toFixed(1)} s`).join(', ')}` +
      ` (other: ${cpuByKind.topOther() || 'nothing much'})`);

    // the api pods: restarts, OOM kills, readiness, and their own counters
    const after = apiPods();
    const countersAfter = await Promise.all(after.map((p) => apiCounters(p).catch(() => ({ shed: NaN, refused: NaN }))));
    const burstStart = Date.now() - wall * 1000;
    for (const [i, p] of after.entries()) {
      const was = before.find((b) => b.uid === p.uid);
      const mem = containerMemory(p);
      const c0 = countersBefore[before.findIndex((b) => b.uid === p.uid)];
      const tcp0 = tcpBefore[before.findIndex((b) => b.uid === p.uid)];
      const tcp1 = podTcp(p);
      log(`api pod ${p.name}: restarts ${p.restarts}${was ? ` (+${p.restarts - was.restarts})` : ' (new pod)'}, ` +
        `terminated reasons ${p.terminated.join(', ') || 'none'}, ${p.ready ? 'Ready' : 'NOT Ready'} since ${p.readySince}` +
        `${Date.parse(p.readySince) < burstStart ? ' (before the burst)' : ' (DURING/after the burst)'}; ` +
        `admission shed ${countersAfter[i]!.shed - (c0?.shed ?? 0)}, connections refused ${countersAfter[i]!.refused - (c0?.refused ?? 0)}` +
        (tcp0 && tcp1 ? `; TCP connections accepted ${tcp1.accepted - tcp0.accepted}, dropped by its full accept queue ${tcp1.listenOverflows - tcp0.listenOverflows}` : '') +
        (mem.peakMiB !== undefined ? `; container memory peak ${mem.peakMiB} MiB of 512, cgroup oom_kill ${mem.oomKills}` : ''));
      const samples = loadSamples.get(p.name) ?? [];
      if (samples.length) {
        const series = (pick: (x: LoadSample) => number) => samples.map(pick).join(' ');
        log(`  its gauges each second: admission limit ${series((x) => x.limit)}; queued ${series((x) => x.queued)}; ` +
          `open connections ${series((x) => x.connections)}; event-loop lag max ms ${series((x) => x.loopLagMaxMs)}`);
      }
    }

    // nginx's own figures
    const stub = (k: keyof StubStatus) => stubAfter[k] - stubBefore[k];
    log(`nginx (stand-in): worker_processes ${confValue(conf, 'worker_processes')}, worker_connections ${confValue(conf, 'worker_connections')}, ` +
      `worker_rlimit_nofile ${confValue(conf, 'worker_rlimit_nofile')}; workers' open-file limit (soft/hard) ${workerFileLimits.join(', ')}`);
    log(`nginx during the burst: accepts ${stub('accepts')}, handled ${stub('handled')}, requests ${stub('requests')} (the clients sent ${f.sent} applies + ` +
      `${f.peakConnections} warm-up GETs); peak active client connections ${peak.active}, peak writing ${peak.writing} (${peak.samples} samples)`);
    log(`nginx workers: CPU ${cpu.map((c) => `${c.toFixed(2)} s`).join(' + ')} over ${wall.toFixed(1)} s ` +
      `(${(100 * cpu.reduce((a, b) => a + b, 0) / wall).toFixed(0)}% of one core); peak open files ${workers.map((w) => peak.files.get(w)).join(' + ')}; ` +
      `reloaded during the burst: ${workersAfter.join(',') === workers.join(',') ? 'no' : `yes (workers ${workers} -> ${workersAfter})`}`);
    log(`nginx's own times (access log, ${timings.length} proxied requests): request read to answer sent p50 ${ms(quantile(timings.map((t) => t.request), 0.5))}, ` +
      `p99 ${ms(quantile(timings.map((t) => t.request), 0.99))}, max ${ms(quantile(timings.map((t) => t.request), 1))}, over 2 s ${timings.filter((t) => t.request > 2).length}; ` +
      `of it with the pods p99 ${ms(quantile(timings.map((t) => t.upstream), 0.99))} (connecting to one: max ${ms(quantile(timings.map((t) => t.connect), 1))}); ` +
      `nginx's own part (request time less the pod's) p99 ${ms(quantile(nginxOwn, 0.99))}, max ${ms(quantile(nginxOwn, 1))}`);
    log(`nginx error log during the burst: ${errors.length} lines${errors.length ? `: ${fmt(errorKinds)}` : ''}; ` +
      `host TIME_WAIT sockets ${twBefore} -> peak ${peak.tw}`);

    // History: every coupon told (202 with a sequence) is a row with that sequence. Once sold out, the rows are N;
    // every request answered means every coupon issued was told, so the coupons told are N too.
    const soldOut = (byStatus['410'] ?? 0) > 0;
    const persistStarted = Date.now();
    const readRows = () => new Map(mysql(`SELECT user_id, sequence FROM coupon WHERE event_id = '${id}'`).map(([u, q]) => [u!, Number(q)]));
    let rows = new Map<string, number>();
    await waitFor(`${soldOut ? N : told.length} rows of ${id} in MySQL`, 180_000, () => {
      rows = readRows();
      return rows.size >= (soldOut ? N : told.length);
    }).catch((e) => log(String(e)));
    if (!soldOut) { await sleep(3000); rows = readRows(); } // a coupon issued to a request left unanswered comes later
    const toldWithoutRow = told.filter((t) => rows.get(t.userId) !== t.sequence);
    const sequences = new Set(rows.values());
    log(`MySQL: ${rows.size} rows, ${sequences.size} distinct sequences ${sequences.size ? `${Math.min(...sequences)}..${Math.max(...sequences)}` : ''}; ` +
      `told ${told.length} (202 with a sequence)${soldOut ? ', sold out' : ', NOT sold out'}; told without a row of that sequence ` +
      `${toldWithoutRow.length}; read ${((Date.now() - persistStarted) / 1000).toFixed(0)} s after the burst`);

    // The pods again, later: a liveness failure during the burst restarts a container only after its threshold.
    const end = apiPods();
    log(`api pods at the end (${((performance.now() - started) / 1000).toFixed(0)} s after the clients started): ` +
      end.map((p) => `${p.name} restarts ${p.restarts}, ${p.ready ? 'Ready' : 'NOT Ready'}`).join('; '));
    const shed = countersAfter.reduce((n, c, i) => n + c.shed + c.refused - (countersBefore[i]?.shed ?? 0) - (countersBefore[i]?.refused ?? 0), 0);
    const unexpected = Object.entries(byStatus).filter(([k]) => !['202', '410', '503'].includes(k));

    // Not met yet, and so not asserted (issue 19 stays open on it): every request answered within 2 s. Through the
    // stand-in each pod takes thousands of new upstream connections in the burst's first second (nginx opens one
    // per request in flight beyond its idle pool), each already carrying a request: they wait in the pod's accept
    // queue and its late event loop, before admission control sees them, and some clients give up at 2 s (the
    // coupon a given-up request got is then a row its client was not told of: told < N). Printed, not asserted.
    const leftWithoutAnswerIn2s = f.timeouts + f.errors + f.over2s;
    log(`NOT MET (issue 19, open): ${leftWithoutAnswerIn2s} requests without an answer within 2 s of ${f.sent} sent; ` +
      `coupons told ${told.length} of ${rows.size} rows; api shed ${shed} (503 or refused connections)`);

    // One verdict, so that a failure shows every figure that is off, not only the first.
    const verdict = {
      apiPodsReplaced: end.filter((p) => !before.some((b) => b.uid === p.uid)).length + before.filter((b) => !end.some((p) => p.uid === b.uid)).length,
      apiRestarts: end.reduce((n, p) => n + p.restarts - (before.find((b) => b.uid === p.uid)?.restarts ?? 0), 0),
      apiOomKilled: end.filter((p) => p.terminated.includes('OOMKilled') || (containerMemory(p).oomKills ?? 0) > 0).length,
      // the stand-in kept up: every connection it accepted handled, never out of connections or files
      nginxConnectionsNotHandled: stub('accepts') - stub('handled'),
      nginxOutOfConnectionsOrFiles: errors.filter((l) => /worker_connections are not enough|Too many open files/.test(l)).length,
      answered503WithoutRetryAfter: (byStatus['503'] ?? 0) - f.retryAfterOn503,
      // every coupon a client was told of is a row with its sequence; never more than N rows, exactly N once sold out
      toldWithoutRow: toldWithoutRow.length,
      rowsOverN: Math.max(0, rows.size - N),
      rowsShortOfNWhenSoldOut: soldOut ? N - Math.min(N, rows.size) : 0,
      distinctSequencesShort: rows.size - sequences.size,
    };
    const expected = {
      apiPodsReplaced: 0, apiRestarts: 0, apiOomKilled: 0, nginxConnectionsNotHandled: 0, nginxOutOfConnectionsOrFiles: 0,
      answered503WithoutRetryAfter: 0, toldWithoutRow: 0, rowsOverN: 0, rowsShortOfNWhenSoldOut: 0, distinctSequencesShort: 0,
    };
    assert.deepEqual(verdict, expected, `the burst's verdict (unexpected answers: ${fmt(Object.fromEntries(unexpected))})`);
  } finally {
    if (hpa) {
      kubectl(['-n', NS, 'patch', 'hpa', hpaName, '--type=merge', '-p', JSON.stringify({ spec: { minReplicas: hpa.spec.minReplicas, maxReplicas: maxBefore } })]);
    }
  }
});
