/**
 * The real topology the chaos schedules run on: Redis in one of two profiles (scripts/chaos/redis-topology.ts: a
 * primary and its replica watched by one Sentinel, or a 3-shard Cluster with a replica per shard; append-only
 * files on, as the chart deploys them), MariaDB, PostgreSQL, 2 apis and 2 workers, GATE_MIN_REPLICAS=1 (a 202 only
 * once a replica holds the coupon), all local processes under one folder; an ended event is archived 2 s after
 * its end. It is started once and serves many schedules (each on events of its own); `heal()` brings every part
 * back after a schedule, whatever the schedule did to it.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { existsSync } from 'node:fs';
import { cp, mkdir, readFile, rename, rm, rmdir } from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';
import { type LocalServer, freePort, startMariadb, startPostgres } from '../local-servers/index.ts';
import { redisCommand, redisPing } from '../local-servers/redis.ts';
import { type ServiceProcess, startApi, startWorker } from '../services.ts';
import { chaosPythonPath } from '../setup/tools.ts';
import { migrateUp } from '../../src/db/migrate.ts';
import { eventKeys } from '../../src/redis/keys.ts';
import { type ChaosRedis, type Profile, type Roles, moveSlot, startClusterRedis, startSentinelRedis } from './redis-topology.ts';

export const ADMIN_TOKEN = 'chaos-admin-token-0123456789';
/** the processes a schedule may kill or pause; `redis-primary`/`redis-replica` mean whichever is so at that moment */
export const TARGETS = ['api-0', 'api-1', 'worker-0', 'worker-1', 'redis-primary', 'redis-replica', 'mariadb', 'postgres'] as const;
export type Target = (typeof TARGETS)[number];
/** the links a schedule may cut, each between a process and a server it talks to (the api uses no PostgreSQL) */
export const CUTS = [
  ['api-0', 'redis-primary'], ['api-1', 'redis-primary'], ['api-0', 'mariadb'], ['api-1', 'mariadb'],
  ['worker-0', 'redis-primary'], ['worker-1', 'redis-primary'], ['worker-0', 'mariadb'], ['worker-1', 'mariadb'],
  ['worker-0', 'postgres'], ['worker-1', 'postgres'],
] as const;
export type CutClient = (typeof CUTS)[number][0];
export type CutServer = (typeof CUTS)[number][1];
/** which packets of a cut link are dropped: all, the client's requests only, or the server's answers only */
export type CutWay = 'both' | 'requests' | 'answers';

const HOST = '127.0.0.1';
/**
 * The cgroup v2 hierarchy (mounted beside the v1 controllers on this machine): each api and worker runs in a folder
 * of its own there from its first instruction, so that iptables' cgroup match tells its packets from the others'.
 */
const CGROUP_V2_ROOT = '/sys/fs/cgroup/unified';
/** the comment on every iptables rule a partition adds, so heal() finds and removes what a run left behind */
const RULE_COMMENT = `coupon-chaos-${process.pid}`;
const run = promisify(execFile);
const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DELAY_SCRIPT = join(ROOT, 'scripts', 'chaos', 'delay.py');

interface Service {
  readonly name: string;
  readonly port: number;
  /** where /readyz is: the api's OPS_PORT, the worker's own port */
  readonly opsPort: number;
  process: ServiceProcess | undefined;
  readonly start: () => Promise<ServiceProcess>;
}

export class ChaosTopology {
  readonly dir: string;
  readonly gateMinReplicas: number;
  readonly profile: Profile;
  #redis: ChaosRedis | undefined;
  #mysql: LocalServer | undefined;
  #postgres: LocalServer | undefined;
  #services: Service[] = [];
  /** pids stopped with SIGSTOP and not yet continued */
  readonly #paused = new Set<number>();
  /** the event the Redis targets mean (its primary, its replica): the schedule's first */
  #focusEvent = '';
  /** this run's folder under CGROUP_V2_ROOT, relative to it; undefined where none could be made (no cut then) */
  #cgroups: string | undefined;
  /** the connection mark of the last cut: each cut has its own, so a connection marked by an earlier one passes */
  #lastMark = 0;
  /** NFQUEUE queue numbers are the host's: this run's start at a number of its own */
  #lastQueue = (process.pid % 60) * 1_000;
  /** the delay processes running (scripts/chaos/delay.py): stopped by heal() if a step left one */
  readonly #delayers = new Set<ChildProcess>();

  constructor(dir: string, options: { gateMinReplicas?: number; profile?: Profile } = {}) {
    this.dir = dir;
    this.gateMinReplicas = options.gateMinReplicas ?? 1;
    this.profile = options.profile ?? 'sentinel';
  }

  get description(): string {
    const redis = this.profile === 'cluster' ? 'a Redis Cluster of 3 shards with a replica each' : 'a Redis primary + replica + Sentinel';
    return `${redis}, MariaDB, PostgreSQL, 2 apis, 2 workers`;
  }

  get apiUrls(): string[] {
    return this.#services.filter((service) => service.name.startsWith('api')).map((service) => `http://${HOST}:${service.port}`);
  }

  get mysqlUrl(): string {
    return this.#mysql!.url;
  }

  async start(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
    const [redis, mysql, postgres] = await Promise.all([
      this.profile === 'cluster' ? startClusterRedis(this.dir) : startSentinelRedis(this.dir),
      startMariadb({ dir: join(this.dir, 'mariadb') }),
      startPostgres({ dir: join(this.dir, 'postgres') }),
    ]);
    this.#redis = redis;
    this.#mysql = mysql;
    this.#postgres = postgres;
    await migrateUp(mysql.url);
    const env = {
      LOG_LEVEL: process.env.CHAOS_LOG_LEVEL ?? 'warn', ...redis.env,
      MYSQL_URL: mysql.url, POSTGRES_URL: postgres.url, ADMIN_TOKEN, GATE_MIN_REPLICAS: String(this.gateMinReplicas),
      GATE_REPLICA_TIMEOUT_MS: '300', RECONCILE_CRON: '* * * * *', RETRY_DELAY_SEC: '1',
      // an ended event is archived (its Redis state dropped, MySQL only) 2 s after its end, within the schedule
      EVENT_RETENTION: '2s',
    };
    this.#cgroups = await mkdir(join(CGROUP_V2_ROOT, RULE_COMMENT)).then(() => RULE_COMMENT, () => undefined);
    for (const [kind, count] of [['worker', 2], ['api', 2]] as const) {
      for (let index = 0; index < count; index++) {
        const port = await freePort();
        // A restarted api comes back on the same two ports, in the same cgroup.
        const opsPort = kind === 'api' ? await freePort() : port;
        const cgroup = this.#cgroups && join(CGROUP_V2_ROOT, this.#cgroups, `${kind}-${index}`);
        if (cgroup) await mkdir(cgroup);
        const options = { port, env, readyTimeoutMs: 60_000, ...(cgroup && { cgroup }) };
        const start = () => (kind === 'api' ? startApi({ ...options, opsPort }) : startWorker(options));
        const service: Service = { name: `${kind}-${index}`, port, opsPort, process: undefined, start };
        service.process = await start();
        this.#services.push(service);
      }
    }
  }

  /** The Redis targets of the schedule about to run: the primary that serves this event (on a Cluster, its shard). */
  focus(eventId: string): void {
    this.#focusEvent = eventId;
    this.#redis!.focus(eventKeys(eventId).meta);
  }

  /** The Redis node that is the (focused shard's) primary now, and its replica. */
  redisRoles(): Promise<Roles> {
    return this.#redis!.roles();
  }

  /** SIGKILL the target now; it comes back (same port, same files) `downMs` later. Resolves once it is back. */
  async kill(target: Target, downMs: number): Promise<void> {
    const service = this.#services.find((candidate) => candidate.name === target);
    if (service) {
      await service.process?.stop('SIGKILL');
      await sleep(downMs);
      service.process = await service.start();
      return;
    }
    const server = await this.#server(target);
    await server.kill();
    await sleep(downMs);
    await server.start();
  }

  /**
   * The Redis node's append-only files copied now; `agoMs` later it is killed and started again from that copy:
   * what a host crash does to an AOF fsynced once a second (its tail lost), stretched to `agoMs`. Restarted within Sentinel's down-after (a Cluster's node timeout), a primary stays
   * primary and its replica syncs from it again; later, the replica was promoted and the node comes back as its
   * replica. Resolves true when the node was the primary and still is once it is back.
   */
  async rewind(target: 'redis-primary' | 'redis-replica', agoMs: number): Promise<boolean> {
    const server = await this.#server(target);
    const files = join(server.dir, 'appendonlydir');
    const copy = join(server.dir, `appendonlydir-${Date.now()}`);
    await cp(files, copy, { recursive: true });
    await sleep(agoMs);
    await server.kill();
    await rm(files, { recursive: true, force: true });
    await rename(copy, files);
    await server.start();
    return target === 'redis-primary' && (await this.redisRoles()).primary === server;
  }

  /** SIGSTOP the target for `forMs`, then SIGCONT: a process that hangs (GC, a frozen VM, a stuck disk). */
  async pause(target: Target, forMs: number): Promise<void> {
    const pid = await this.#pid(target);
    if (pid === undefined) return;
    process.kill(pid, 'SIGSTOP');
    this.#paused.add(pid);
    await sleep(forMs);
    this.#continue(pid);
  }

  /** A server outage: stopped cleanly, started again `downMs` later (MySQL or PostgreSQL down for maintenance). */
  async outage(target: 'mariadb' | 'postgres', downMs: number): Promise<void> {
    const server = target === 'mariadb' ? this.#mysql! : this.#postgres!;
    await server.stop();
    await sleep(downMs);
    await server.start();
  }

  /**
   * The target cut off from every other process for `forMs` (as root, iptables on loopback): packets to and from
   * its port are dropped, so connections neither fail nor answer (a partition, or a host gone silent), then pass
   * again. heal() removes any rule a failed step left behind.
   */
  async partition(target: Target, forMs: number): Promise<void> {
    await this.#drop(target, ['to', 'from'], forMs);
  }

  /**
   * One way only, for `forMs`: `to` drops the packets sent to the target's port (requests never arrive), `from`
   * the ones it sends (it acts on a request and its answer is lost: a Redis that ran the gate, a MySQL that
   * committed a batch, whose callers time out).
   */
  async dropOneWay(target: Target, direction: 'to' | 'from', forMs: number): Promise<void> {
    await this.#drop(target, [direction], forMs);
  }

  /**
   * One link cut for `forMs`: the client process's connections to the server's port (as root: marked by iptables'
   * cgroup match on what the client sends), while every other process still reaches the server and the client
   * still reaches the others: one api that lost Redis while the other issues, a worker that lost MySQL while the
   * other writes. `way`: both (every packet of a marked connection dropped), `requests` (what the client sends
   * never arrives) or `answers` (the server acts on each request and its answer is lost). Resolves false where
   * there is no cgroup v2 to tell the client's packets by (nothing was cut).
   */
  async cut(client: CutClient, server: CutServer, forMs: number, way: CutWay = 'both'): Promise<boolean> {
    if (!this.#cgroups) return false;
    const { port } = await this.#server(server);
    const mark = String(++this.#lastMark);
    const comment = ['-m', 'comment', '--comment', RULE_COMMENT];
    const direction = way === 'both' ? [] : ['-m', 'conntrack', '--ctdir', way === 'requests' ? 'ORIGINAL' : 'REPLY'];
    await this.#holdRules([
      ['mangle', 'OUTPUT', '-o', 'lo', '-p', 'tcp', '--dport', String(port), '-m', 'cgroup', '--path', `${this.#cgroups}/${client}`, ...comment, '-j', 'CONNMARK', '--set-mark', mark],
      ['filter', 'INPUT', '-i', 'lo', '-m', 'connmark', '--mark', mark, ...direction, ...comment, '-j', 'DROP'],
    ], forMs);
    return true;
  }

  /**
   * The link between the (focused shard's) primary and its replica cut both ways for `forMs`, while both still
   * answer everyone else: replication stalls, so a replica acknowledgement (GATE_MIN_REPLICAS) cannot come, and a
   * failover meanwhile promotes a replica that missed what was written since. The replica's connection is found in
   * the primary's CLIENT LIST (flags S); a link opened again during the cut is not cut. Resolves false when there is
   * no such link (the replica is down or not synced: another step).
   */
  async cutReplication(forMs: number): Promise<boolean> {
    const { primary } = await this.redisRoles();
    // Asked up to three times: another step may be dropping the primary's packets (a CI trial of e577be1 lost this
    // read to 20% loss on the primary's port, and the schedule could not finish).
    const clients = await (async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          return await redisCommand(primary.port, 'CLIENT', 'LIST', 'TYPE', 'replica');
        } catch (error) {
          if (attempt === 3) throw error;
        }
      }
    })();
    const links = [...clients.matchAll(/(?:^| )addr=[\d.]+:(\d+)/gm)].map((match) => match[1]!);
    if (links.length === 0) return false;
    const comment = ['-m', 'comment', '--comment', RULE_COMMENT, '-j', 'DROP'];
    await this.#holdRules(links.flatMap((link) => [
      ['filter', 'INPUT', '-i', 'lo', '-p', 'tcp', '--sport', link, '--dport', String(primary.port), ...comment],
      ['filter', 'INPUT', '-i', 'lo', '-p', 'tcp', '--sport', String(primary.port), '--dport', link, ...comment],
    ]), forMs);
    return true;
  }

  /**
   * Every packet to and from the target's port held `ms` (each way) for `forMs`: iptables hands them to an NFQUEUE
   * queue that scripts/chaos/delay.py reads, holds and lets through in order (this kernel has no netem qdisc).
   * Connections stay up and answers come late: a slow link, a server far away, a congested switch. Resolves false
   * where the delay tool is not installed (nothing was delayed).
   */
  async delay(target: Target, ms: number, forMs: number): Promise<boolean> {
    const python = chaosPythonPath(ROOT);
    if (!existsSync(python)) return false;
    const { port } = this.#services.find((candidate) => candidate.name === target) ?? await this.#server(target);
    const queue = String(++this.#lastQueue);
    const delayer = spawn(python, [DELAY_SCRIPT, queue, String(ms)], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.#delayers.add(delayer);
    try {
      const lines = createInterface({ input: delayer.stdout! });
      const ready = await Promise.race([
        once(lines, 'line').then(([line]) => line === 'ready'), once(delayer, 'exit').then(() => false),
      ]);
      if (!ready) throw new Error(`scripts/chaos/delay.py did not start: ${delayer.stderr?.read()?.toString() ?? ''}`);
      // --queue-bypass: should the delayer die, packets pass instead of being dropped.
      await this.#holdRules((['--dport', '--sport'] as const).map((side) => [
        'filter', 'INPUT', '-i', 'lo', '-p', 'tcp', side, String(port), '-m', 'comment', '--comment', RULE_COMMENT,
        '-j', 'NFQUEUE', '--queue-num', queue, '--queue-bypass',
      ]), forMs);
    } finally {
      await this.#stopDelayer(delayer);
    }
    return true;
  }

  /** SIGTERM: the delayer lets through what it holds, then exits. */
  async #stopDelayer(delayer: ChildProcess): Promise<void> {
    if (delayer.exitCode === null && delayer.signalCode === null) {
      const exited = once(delayer, 'exit');
      delayer.kill('SIGTERM');
      await Promise.race([exited, sleep(2_000).then(() => delayer.kill('SIGKILL'))]);
    }
    this.#delayers.delete(delayer);
  }

  /**
   * `percent` of the packets to and from the target dropped at random for `forMs` (iptables' statistic match):
   * TCP sends them again after its retransmission timeout, so answers come late rather than not at all, the way a
   * lossy link behaves (this kernel has no netem qdisc for delay and loss: `tc qdisc add ... netem` answers
   * "Specified qdisc kind is unknown").
   */
  async loss(target: Target, percent: number, forMs: number): Promise<void> {
    await this.#drop(target, ['to', 'from'], forMs, percent / 100);
  }

  async #drop(target: Target, directions: Array<'to' | 'from'>, forMs: number, probability?: number): Promise<void> {
    const { port } = this.#services.find((candidate) => candidate.name === target) ?? await this.#server(target);
    const random = probability === undefined ? [] : ['-m', 'statistic', '--mode', 'random', '--probability', String(probability)];
    await this.#holdRules(directions.map((direction) => [
      'filter', 'INPUT', '-i', 'lo', '-p', 'tcp', direction === 'to' ? '--dport' : '--sport', String(port), ...random,
      '-m', 'comment', '--comment', RULE_COMMENT, '-j', 'DROP',
    ]), forMs);
  }

  /** iptables rules (each: table, chain, match and target) inserted for `forMs`, then deleted; heal() deletes any left behind. */
  async #holdRules(rules: string[][], forMs: number): Promise<void> {
    const iptables = (action: '-I' | '-D', [table, chain, ...rule]: string[]) => run('iptables', ['-t', table!, action, chain!, ...rule]);
    for (const rule of rules) await iptables('-I', rule);
    await sleep(forMs);
    for (const rule of rules) await iptables('-D', rule).catch(() => undefined);
  }

  /** FLUSHALL on the (focused shard's) primary, replicated to its replica: every key gone, the gate restored from MySQL. */
  async flush(): Promise<void> {
    const { primary } = await this.redisRoles();
    await redisCommand(primary.port, 'FLUSHALL');
  }

  /** An operator's failover (SENTINEL FAILOVER, or CLUSTER FAILOVER on the focused shard's replica). */
  async failover(): Promise<void> {
    await this.#redis!.failover();
  }

  /** Cluster only: the focused event's slot moved to another shard under traffic, keys `pauseMs` apart. */
  async move(pauseMs: number): Promise<void> {
    if (this.profile === 'cluster') await moveSlot(this.#redis!, eventKeys(this.#focusEvent).meta, pauseMs);
  }

  /**
   * Every part running and healthy again: paused processes continued, every service answering /readyz, Sentinel
   * naming a primary that has its replica in sync. Throws if that does not come within `timeoutMs`.
   */
  async heal(timeoutMs = 90_000): Promise<void> {
    for (const pid of this.#paused) this.#continue(pid);
    await this.#removePartitions();
    const deadline = Date.now() + timeoutMs;
    for (const service of this.#services) {
      if (!service.process || service.process.child.exitCode !== null || service.process.child.signalCode !== null) {
        service.process = await service.start();
      }
    }
    // A Redis node a step left down (its restart failed, say): started again, in the role its files say.
    for (const server of this.#redis!.servers) {
      const down = await redisPing(server.port).then(() => false, (error: NodeJS.ErrnoException) => error.code === 'ECONNREFUSED');
      if (down) await server.start().catch(() => undefined);
    }
    let unhealthy: string | undefined;
    while (Date.now() < deadline) {
      unhealthy = await this.#unhealthy();
      if (unhealthy === undefined) return;
      await sleep(250);
    }
    throw new Error(`the chaos topology did not heal in ${timeoutMs} ms: ${unhealthy}`);
  }

  /** what is not healthy yet, or undefined when everything is */
  async #unhealthy(): Promise<string | undefined> {
    try {
      const redis = await this.#redis!.unhealthy();
      if (redis !== undefined) return redis;
      for (const service of this.#services) {
        const response = await fetch(`http://${HOST}:${service.opsPort}/readyz`, { headers: { connection: 'close' }, signal: AbortSignal.timeout(1_000) });
        if (!response.ok) return `${service.name} /readyz ${response.status} ${await response.text()}`;
      }
      return undefined;
    } catch (error) {
      return String(error);
    }
  }

  async stop(): Promise<void> {
    for (const pid of this.#paused) this.#continue(pid);
    await this.#removePartitions();
    await Promise.allSettled(this.#services.map((service) => service.process?.stop('SIGKILL')));
    await Promise.allSettled([this.#redis?.stop(), this.#mysql?.stop(), this.#postgres?.stop()]);
    if (this.#cgroups) {
      const folder = join(CGROUP_V2_ROOT, this.#cgroups);
      await Promise.allSettled(this.#services.map((service) => rmdir(join(folder, service.name))));
      await rmdir(folder).catch(() => undefined);
    }
  }

  /** what each process wrote, for a failing schedule's report */
  logs(): Record<string, string> {
    return Object.fromEntries(this.#services.map((service) => [service.name, service.process?.output() ?? '']));
  }

  /** every iptables rule this run added that is still there (its drops, and its cuts' marks) */
  async #removePartitions(): Promise<void> {
    for (const [table, chain] of [['filter', 'INPUT'], ['mangle', 'OUTPUT']]) {
      const { stdout } = await run('iptables', ['-t', table!, '-S', chain!]).catch(() => ({ stdout: '' }));
      for (const line of stdout.split('\n').filter((rule) => rule.includes(RULE_COMMENT))) {
        const rule = line.replace(/^-A /, '').split(' ').filter(Boolean).map((word) => word.replace(/^"|"$/g, ''));
        await run('iptables', ['-t', table!, '-D', ...rule]).catch(() => undefined);
      }
    }
    // Only once no rule sends packets to them any more.
    await Promise.all([...this.#delayers].map((delayer) => this.#stopDelayer(delayer)));
  }

  #continue(pid: number): void {
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // gone meanwhile (killed by another step): nothing to continue
    }
    this.#paused.delete(pid);
  }

  async #server(target: Target): Promise<LocalServer> {
    if (target === 'redis-primary' || target === 'redis-replica') {
      const roles = await this.redisRoles();
      return target === 'redis-primary' ? roles.primary : roles.replica;
    }
    return target === 'mariadb' ? this.#mysql! : this.#postgres!;
  }

  async #pid(target: Target): Promise<number | undefined> {
    const service = this.#services.find((candidate) => candidate.name === target);
    if (service) return service.process?.child.pid;
    const server = await this.#server(target);
    const file = { redis: 'redis.pid', mariadb: 'mariadbd.pid', postgres: join('data', 'postmaster.pid') }[server.kind as 'redis' | 'mariadb' | 'postgres'];
    const pid = Number((await readFile(join(server.dir, file), 'utf8').catch(() => '')).split('\n')[0]);
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  }
}
