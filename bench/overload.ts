/**
 * The overload benchmark (`npm run bench -- --overload`, docs/bench/overload.md): one api process, the product's
 * `src/api/main.ts` started as the other benches start it (scripts/services.ts) and, where the machine has a v1
 * memory cgroup, held to 512 MiB like a pod of the chart, under offered load far past what it answers: with the
 * shipped admission control (src/api/admission.ts, src/api/listener.ts) and without it (every bound set so high it
 * never acts), step by step in the same run.
 *
 *   closed loop  C connections (64 .. 10,000), each sending its next apply as soon as it has its answer (like wrk);
 *                with admission control twice: clients that ignore Retry-After (wrk-like) and clients that wait
 *                it out as the README tells them (from 2,500 connections, where the 503s become many)
 *   open loop    a constant arrival rate (like wrk2), from half the capacity up to 50 times it, on at most 10,000
 *                connections; latency counts from when each request was due, and a request that finds no free
 *                connection within 2 s is "not sent"; what reached the api is counted by the api
 *
 * The load is scripts/loadgen (Go), one process: applies of new users to one open event, 2 s client timeout.
 * Capacity is the decided answers per second (202/409/410 within 2 s) at 64 connections with admission control,
 * measured first in the same run; the open loop's rates are multiples of it. Every step gets a fresh api process
 * (its peak RSS is VmHWM from /proc/<pid>/status), a fresh event, a 1 s warm-up of 64 connections, then the step.
 * Beside each step's figures: the api's, the generator's, Redis's and the rest of the machine's CPU, and the
 * kernel's accept-queue overflows, since on a shared 2-core machine those decide much of what a step shows.
 */
import { existsSync, readFileSync, readdirSync, rmdirSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { freePort } from '../scripts/local-servers/index.ts';
import { type LoadgenOptions, type LoadgenReport, loadgenBinary, runLoadgen } from '../scripts/loadgen.ts';
import { MEMORY_CGROUP_ROOT, chartHeapFlag, createMemoryCgroup, residentBytes } from '../scripts/memory-cgroup.ts';
import { type ServiceProcess, cpuTimeMs, startApi } from '../scripts/services.ts';
import type { CouponRedis } from '../src/redis/client.ts';
import { eventKeys } from '../src/redis/keys.ts';
import { pidFromFile } from './layout.ts';
import type { MachineFacts } from './machine.ts';
import type { Running } from './processes.ts';
import { round } from './stats.ts';

export interface OverloadSettings {
  mode: 'full' | 'quick';
  /** seconds of load per closed-loop step (after its warm-up) */
  seconds: number;
  /**
   * seconds of load per open-loop step: shorter, since past about twice the capacity the generator needs far
   * longer than this to get through its schedule (about 100 µs of its CPU per request on this machine)
   */
  openSeconds: number;
  warmupSeconds: number;
  /** closed loop: connections per step; the first is the uncongested point that defines capacity */
  connections: number[];
  /** closed loop: the clients that honor Retry-After run from this many connections (below it nothing is shed) */
  honorFrom: number;
  /** open loop: rates as multiples of the capacity measured in the same run */
  rateFactors: number[];
  /** open loop: most connections the generator opens */
  maxConnections: number;
  /** the api's memory cgroup limit, as the chart's pod limit */
  memoryLimitMiB: number;
}

/** what runs in a step: the shipped admission control (clients wrk-like or backing off), or none */
export type Variant = 'admission' | 'admission-backoff' | 'none';
export const VARIANT_LABELS: Record<Variant, string> = {
  admission: 'admission control',
  'admission-backoff': 'admission control, clients honor Retry-After',
  none: 'no admission control',
};

/** The api's environment "without admission control": every bound far past anything one process can reach. */
export const UNBOUNDED: Record<string, string> = {
  API_MAX_IN_FLIGHT: '100000', API_MAX_QUEUED: '100000', API_LOOP_DELAY_TARGET_MS: '0', API_MAX_CONNECTIONS: '100000',
};

const TIMEOUT_SEC = 2;

export interface OverloadStep {
  loop: 'closed' | 'open';
  variant: Variant;
  honorRetryAfter: boolean;
  /** closed loop */
  connections: number | null;
  /** open loop: the rate asked of the generator, and as a multiple of the capacity */
  rate: number | null;
  factor: number | null;
  seconds: number;
  /** requests the generator sent or meant to send (open loop: rate x seconds) */
  due: number;
  /** closed loop: requests sent per second of load */
  sentPerSec: number;
  /**
   * apply requests the api read and answered in the step, whatever their status and whether or not the client
   * was still there (coupon_http_requests_total of the route), and per second of the generator's wall time: the
   * load that reached the api
   */
  apiAnswered: number;
  apiAnsweredPerSec: number;
  /** per second of load (answers that came in while it lasted): decided answers (202/409/410) within 2 s */
  goodputPerSec: number;
  /** every answer (within 2 s: the client gives up then), 503s included */
  answeredPerSec: number;
  shedPerSec: number;
  /** every answer of the step, the tail after the seconds of load included */
  byStatus: Record<string, number>;
  /** sent, no answer within 2 s */
  timeouts: number;
  /** open loop: no connection free within 2 s of being due */
  notSent: number;
  /** other failures by kind (connect, reset) */
  otherErrors: Record<string, number>;
  latencyMs: { p50: number; p99: number; max: number };
  issuedLatencyMs: { p50: number; p99: number; max: number };
  peakConnections: number;
  perSecond: LoadgenReport['perSecond'];
  api: {
    alive: boolean;
    oomKills: number;
    rssBeforeMiB: number;
    peakRssMiB: number;
    cpuSec: number;
    /** api CPU over the step's wall time, in cores */
    cores: number;
    shed: { queueFull: number; queueTimeout: number; refusedConnections: number };
    /** the adaptive bound on applies in flight when the step ended (API_MAX_IN_FLIGHT at most, 16 at least) */
    admissionLimitAtEnd: number | null;
  };
  /** the generator's CPU and wall time for the step: the schedule, then up to 2 s for the last answers */
  loadgen: { cpuSec: number; cores: number; wallSec: number };
  machine: {
    /** all cores busy over the step (from /proc/stat), in cores */
    busyCores: number;
    /** busy cores not used by the api, the generator, Redis or this process: the machine's other tenants */
    othersCores: number;
    loadAverage1m: number;
    /**
     * connections the kernel dropped because the api's accept queue was full (TcpExt ListenOverflows), and SYNs
     * the clients sent again (TCPSynRetrans, 1 s then 3 s later): a queue in front of the api that it never sees
     */
    listenOverflows: number;
    synRetransmits: number;
  };
}

export interface OverloadReport {
  schemaVersion: 1;
  mode: 'full' | 'quick';
  startedAt: string;
  finishedAt: string;
  runSeconds: number;
  machine: MachineFacts & { loadAverage1mAtEnd: number; openFilesLimit: string; somaxconn: number | null; tcpMaxSynBacklog: number | null };
  settings: OverloadSettings;
  /** the cgroup the api ran in, or why it ran without one */
  cgroup: { path: string | null; limitMiB: number | null; note: string };
  capacity: { goodputPerSec: number; withoutAdmissionPerSec: number };
  steps: OverloadStep[];
}

export interface OverloadContext {
  env: Record<string, string>;
  redis: CouponRedis;
  redisDir: string;
  adminToken: string;
  running: Running;
  log(message: string): void;
}

/** Runs every step; returns them with the capacity and the cgroup used (the caller adds the machine). */
export async function measureOverload(ctx: OverloadContext, settings: OverloadSettings): Promise<Omit<OverloadReport, 'machine' | 'startedAt' | 'finishedAt' | 'runSeconds' | 'mode'>> {
  await loadgenBinary();
  const cgroup = memoryCgroup(`${CGROUP_PREFIX}${process.pid}`, settings.memoryLimitMiB);
  ctx.log(cgroup.path ? `api in memory cgroup ${cgroup.path} (${settings.memoryLimitMiB} MiB)` : `api without a memory cgroup: ${cgroup.note}`);
  const steps: OverloadStep[] = [];
  let n = 0;
  const run = async (spec: StepSpec) => {
    n += 1;
    const step = await runStep(ctx, settings, spec, cgroup, n);
    steps.push(step);
    ctx.log(`overload ${describe(step)}: goodput ${step.goodputPerSec}/s, answers ${step.answeredPerSec}/s, 503 ${step.shedPerSec}/s, `
      + `no answer ${step.timeouts + step.notSent}, p99 ${step.latencyMs.p99} ms (202 ${step.issuedLatencyMs.p99} ms), `
      + `RSS ${step.api.peakRssMiB} MiB${step.api.alive ? '' : ' (api died)'}, api ${step.api.cores} cores, others ${step.machine.othersCores} cores`);
    return step;
  };
  try {
    // Closed loop, each level with and without admission control back to back, so drift touches them alike.
    for (const connections of settings.connections) {
      await run({ loop: 'closed', variant: 'admission', connections });
      await run({ loop: 'closed', variant: 'none', connections });
      if (connections >= settings.honorFrom) await run({ loop: 'closed', variant: 'admission-backoff', connections });
    }
    const at = (variant: Variant) => steps.find((s) => s.loop === 'closed' && s.variant === variant && s.connections === settings.connections[0])!.goodputPerSec;
    const capacity = { goodputPerSec: at('admission'), withoutAdmissionPerSec: at('none') };
    ctx.log(`capacity at ${settings.connections[0]} connections: ${capacity.goodputPerSec} decided answers/s (${capacity.withoutAdmissionPerSec} without admission control)`);
    for (const factor of settings.rateFactors) {
      const rate = Math.max(1, Math.round(capacity.goodputPerSec * factor));
      await run({ loop: 'open', variant: 'admission', rate, factor });
      await run({ loop: 'open', variant: 'none', rate, factor });
    }
    return {
      schemaVersion: 1, settings, capacity, steps,
      cgroup: { path: cgroup.path, limitMiB: cgroup.path ? settings.memoryLimitMiB : null, note: cgroup.note },
    };
  } finally {
    cgroup.remove();
  }
}

export function describe(step: Pick<OverloadStep, 'loop' | 'variant' | 'connections' | 'rate' | 'factor'>): string {
  const load = step.loop === 'closed' ? `closed ${step.connections} conns` : `open ${step.rate}/s (${step.factor}x)`;
  return `${load}, ${VARIANT_LABELS[step.variant]}`;
}

interface StepSpec {
  loop: 'closed' | 'open';
  variant: Variant;
  connections?: number;
  rate?: number;
  factor?: number;
}

interface Cgroup {
  path: string | null;
  limitBytes: number;
  note: string;
  oomKills(): number;
  remove(): void;
}

const CGROUP_PREFIX = 'coupon-bench-overload-';

/** A v1 memory cgroup with the pod's limit, as test/faults/api-overload.test.ts makes; or why there is none. */
function memoryCgroup(name: string, limitMiB: number): Cgroup {
  removeStaleCgroups();
  const limitBytes = limitMiB * 2 ** 20;
  try {
    const cgroup = createMemoryCgroup(name, limitBytes);
    return { path: cgroup.path, limitBytes, note: `v1 memory cgroup, memory.limit_in_bytes ${limitMiB} MiB`, oomKills: cgroup.oomKills, remove: cgroup.remove };
  } catch (error) {
    return { path: null, limitBytes, note: `no v1 memory cgroup could be made (${(error as Error).message.split('\n')[0]})`, oomKills: () => 0, remove: () => {} };
  }
}

/** The cgroups of earlier runs that were interrupted (their bench process is gone), if empty. */
function removeStaleCgroups(): void {
  let names: string[];
  try {
    names = readdirSync(MEMORY_CGROUP_ROOT).filter((name) => name.startsWith(CGROUP_PREFIX));
  } catch {
    return;
  }
  for (const name of names) {
    if (existsSync(`/proc/${name.slice(CGROUP_PREFIX.length)}`)) continue;
    try {
      rmdirSync(join(MEMORY_CGROUP_ROOT, name));
    } catch {
      // a process still runs in it
    }
  }
}

async function runStep(ctx: OverloadContext, settings: OverloadSettings, spec: StepSpec, cgroup: Cgroup, n: number): Promise<OverloadStep> {
  const honorRetryAfter = spec.variant === 'admission-backoff';
  const env = { ...ctx.env, LOG_LEVEL: 'warn', SHUTDOWN_DRAIN_MS: '0', ...(spec.variant === 'none' ? UNBOUNDED : {}) };
  const api = await ctx.running.track(startOverloadApi(ctx, env, cgroup));
  const pid = api.child.pid!;
  const eventId = `overload-${Date.now().toString(36)}-${n}`;
  try {
    await createEvent(api.url, ctx.adminToken, eventId);
    const seconds = spec.loop === 'closed' ? settings.seconds : settings.openSeconds;
    const base: LoadgenOptions = { url: api.url, eventId, seconds, timeoutSec: TIMEOUT_SEC, users: `s${n}-` };
    await runLoadgen({ ...base, connections: 64, seconds: settings.warmupSeconds, users: `w${n}-`, honorRetryAfter: false });
    const answeredBefore = (await scrape(api.opsUrl)).answered;

    const rssBefore = residentBytes(pid)?.now ?? 0;
    let peakSampled = rssBefore;
    const sampler = setInterval(() => { peakSampled = Math.max(peakSampled, residentBytes(pid)?.now ?? 0); }, 100);
    const oomBefore = cgroup.oomKills();
    const before = { api: cpuTimeMs(pid), redis: redisCpuMs(ctx), self: selfCpuMs(), children: childrenCpuMs(), machine: machineTicks(), tcp: tcpCounters(), at: performance.now() };
    let report: LoadgenReport;
    try {
      report = await runLoadgen(spec.loop === 'closed'
        ? { ...base, connections: spec.connections!, honorRetryAfter }
        : { ...base, rate: spec.rate!, maxConnections: settings.maxConnections, honorRetryAfter });
    } finally {
      clearInterval(sampler);
    }
    const wallMs = performance.now() - before.at;
    const alive = api.child.exitCode === null && api.child.signalCode === null;
    const apiCpuMs = alive ? cpuTimeMs(pid) - before.api : 0;
    const peakRss = Math.max(peakSampled, (alive && residentBytes(pid)?.peak) || 0);
    const redisMs = redisCpuMs(ctx) - before.redis;
    const selfMs = selfCpuMs() - before.self;
    const loadgenMs = childrenCpuMs() - before.children;
    const machine = machineTicks();
    const tcp = tcpCounters();
    const busyCores = ((machine.busy - before.machine.busy) / Math.max(machine.total - before.machine.total, 1)) * cpus().length;
    const after = alive ? await scrape(api.opsUrl) : undefined;

    const errorKinds = { ...report.errorKinds };
    delete errorKinds['no connection free'];
    const perSec = (count: number) => round(count / seconds);
    // Answers by the second they came in, within the seconds of load only: the answers to what was still in flight
    // when sending stopped (up to one per connection) would otherwise inflate a short step's rates.
    const window = report.perSecond.slice(0, seconds);
    const inWindow = (pick: (s: LoadgenReport['perSecond'][number]) => number) => window.reduce((sum, s) => sum + pick(s), 0);
    const apiAnswered = after ? after.answered - answeredBefore : 0;
    return {
      loop: spec.loop, variant: spec.variant, honorRetryAfter,
      connections: spec.connections ?? null, rate: spec.rate ?? null, factor: spec.factor ?? null,
      seconds,
      due: report.sent, sentPerSec: perSec(report.sent - report.notSent - (errorKinds.connect ?? 0)),
      apiAnswered, apiAnsweredPerSec: round(apiAnswered / (wallMs / 1000)),
      goodputPerSec: perSec(inWindow((s) => s.goodput)),
      answeredPerSec: perSec(inWindow((s) => s.answered)),
      shedPerSec: perSec(inWindow((s) => s.shed)),
      byStatus: report.byStatus,
      timeouts: report.timeouts, notSent: report.notSent, otherErrors: errorKinds,
      latencyMs: roundQuantiles(report.latencyMs), issuedLatencyMs: roundQuantiles(report.issuedLatencyMs),
      peakConnections: report.peakConnections,
      perSecond: report.perSecond,
      api: {
        alive, oomKills: cgroup.oomKills() - oomBefore,
        rssBeforeMiB: mib(rssBefore), peakRssMiB: mib(peakRss),
        cpuSec: round(apiCpuMs / 1000, 2), cores: round(apiCpuMs / wallMs, 2),
        shed: after?.shed ?? { queueFull: 0, queueTimeout: 0, refusedConnections: 0 }, admissionLimitAtEnd: after?.limit ?? null,
      },
      loadgen: { cpuSec: round(loadgenMs / 1000, 2), cores: round(loadgenMs / wallMs, 2), wallSec: round(wallMs / 1000, 2) },
      machine: {
        busyCores: round(busyCores, 2),
        othersCores: round(Math.max(0, busyCores - (apiCpuMs + loadgenMs + redisMs + selfMs) / wallMs), 2),
        loadAverage1m: round(loadavg()[0]!, 2),
        listenOverflows: tcp.listenOverflows - before.tcp.listenOverflows,
        synRetransmits: tcp.synRetransmits - before.tcp.synRetransmits,
      },
    };
  } finally {
    await stopApi(ctx, api);
    await ctx.redis.del(...Object.values(eventKeys(eventId))).catch(() => {});
  }
}

/**
 * A fresh api process (in the cgroup when there is one, with the heap flag the chart gives a pod of that limit). On a shared machine a start can fail for reasons of the
 * machine's (a port taken between freePort() and listen): tried three times, with what it printed and how it ended.
 */
async function startOverloadApi(ctx: OverloadContext, env: Record<string, string>, cgroup: Cgroup): Promise<ServiceProcess> {
  for (let attempt = 1; ; attempt += 1) {
    try {
      return await startApi({
        port: await freePort(), env: cgroup.path ? { NODE_OPTIONS: chartHeapFlag(cgroup.limitBytes), ...env } : env, ...(cgroup.path && { cgroup: cgroup.path }),
      });
    } catch (error) {
      if (attempt === 3) throw error;
      ctx.log(`api start failed (attempt ${attempt}), starting another: ${(error as Error).message.split('\n').slice(0, 3).join(' ')}`);
    }
  }
}

/** SIGTERM, then SIGKILL if it has not exited within 15 s (an api stuck under what it was sent). */
async function stopApi(ctx: OverloadContext, api: ServiceProcess): Promise<void> {
  ctx.running.forget(api);
  const stopped = api.stop();
  const late = await Promise.race([stopped.then(() => false), sleep(15_000).then(() => true)]);
  if (late) await api.stop('SIGKILL');
}

async function createEvent(apiUrl: string, adminToken: string, id: string): Promise<void> {
  const response = await fetch(`${apiUrl}/v1/events`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${adminToken}` },
    body: JSON.stringify({ id, name: 'overload bench', totalQuantity: 10_000_000 }),
  });
  if (response.status >= 300) throw new Error(`creating event ${id}: ${response.status} ${await response.text()}`);
}

const APPLY_ROUTE = '/v1/events/:eventId/apply';

/** The api's counters: apply requests answered (any status), shed by reason, connections refused; the limit. */
async function scrape(opsUrl: string): Promise<{ answered: number; shed: OverloadStep['api']['shed']; limit: number | null }> {
  try {
    const text = await (await fetch(`${opsUrl}/metrics`, { signal: AbortSignal.timeout(10_000) })).text();
    const sum = (name: string, label?: string) => {
      let total = 0;
      for (const line of text.split('\n')) {
        const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)/.exec(line);
        if (match?.[1] === name && (label === undefined || match[2]?.includes(label))) total += Number(match[3]);
      }
      return total;
    };
    const limit = /^coupon_admission_limit(?:\{[^}]*\})?\s+(\S+)/m.exec(text)?.[1];
    return {
      answered: sum('coupon_http_requests_total', `route="${APPLY_ROUTE}"`),
      shed: {
        queueFull: sum('coupon_admission_shed_total', 'reason="queue_full"'),
        queueTimeout: sum('coupon_admission_shed_total', 'reason="queue_timeout"'),
        refusedConnections: sum('coupon_http_refused_connections_total'),
      },
      limit: limit === undefined ? null : Number(limit),
    };
  } catch {
    return { answered: 0, shed: { queueFull: 0, queueTimeout: 0, refusedConnections: 0 }, limit: null };
  }
}

const mib = (bytes: number) => Math.round(bytes / 2 ** 20);
const roundQuantiles = (q: LoadgenReport['latencyMs']) => ({ p50: round(q.p50, 1), p99: round(q.p99, 1), max: round(q.max, 1) });

function redisCpuMs(ctx: OverloadContext): number {
  try {
    return cpuTimeMs(pidFromFile(join(ctx.redisDir, 'redis.pid')));
  } catch {
    return 0;
  }
}

const selfCpuMs = () => {
  const usage = process.cpuUsage();
  return (usage.user + usage.system) / 1000;
};

/**
 * CPU time of this process's children that have exited and been waited for (cutime + cstime of /proc/self/stat),
 * in ms: across a step, exactly the load generator's (the api is stopped, and so reaped, only after).
 */
function childrenCpuMs(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[13]) + Number(fields[14])) * 10;
}

/** All cores' ticks from /proc/stat: in all, and busy (neither idle nor iowait). */
function machineTicks(): { total: number; busy: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith('cpu '))!;
  const ticks = line.trim().split(/\s+/).slice(1).map(Number);
  const total = ticks.reduce((a, b) => a + b, 0);
  return { total, busy: total - ticks[3]! - ticks[4]! };
}

/** The kernel's TCP counters of interest (/proc/net/netstat, TcpExt), for this network namespace. */
function tcpCounters(): { listenOverflows: number; synRetransmits: number } {
  try {
    const lines = readFileSync('/proc/net/netstat', 'utf8').split('\n').filter((line) => line.startsWith('TcpExt:'));
    const names = lines[0]!.split(/\s+/);
    const values = lines[1]!.split(/\s+/).map(Number);
    const value = (name: string) => values[names.indexOf(name)] ?? 0;
    return { listenOverflows: value('ListenOverflows'), synRetransmits: value('TCPSynRetrans') };
  } catch {
    return { listenOverflows: 0, synRetransmits: 0 };
  }
}

/** The kernel's queues in front of a listening socket: the accept queue's cap and the SYN queue's. */
export function listenQueueLimits(): { somaxconn: number | null; tcpMaxSynBacklog: number | null } {
  const read = (path: string) => {
    try {
      return Number(readFileSync(path, 'utf8').trim());
    } catch {
      return null;
    }
  };
  return { somaxconn: read('/proc/sys/net/core/somaxconn'), tcpMaxSynBacklog: read('/proc/sys/net/ipv4/tcp_max_syn_backlog') };
}
