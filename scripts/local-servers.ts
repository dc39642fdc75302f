/**
 * Throwaway Redis, MariaDB (the local MySQL stand-in) and PostgreSQL servers built from the machine's Debian
 * packages, for `npm run stack`, the test suite and CI.
 *
 * What must hold:
 * - Every server binds 127.0.0.1 only and keeps its data, log and pid files under one folder; a folder that
 *   was initialised before is reused as it is.
 * - Each server runs as a detached child (its own process group): a jest worker exiting or a Ctrl-C in the
 *   terminal does not take it down; whoever started it stops it. If that process exits without stopping it,
 *   an exit hook asks the server to shut down, and the next start() on the same folder ends a server left
 *   behind by a process that died harder than that.
 * - start() resolves only once a real client round trip succeeds; every wait is time-boxed and fails with
 *   the server's name and the tail of its log.
 *
 * Importing this module has no side effects.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { chmod, chown, mkdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createConnection, createServer } from 'node:net';
import { userInfo } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import mysql from 'mysql2/promise';

export type ServerKind = 'redis' | 'redis-sentinel' | 'mariadb' | 'postgres';

export interface LocalServer {
  readonly kind: ServerKind;
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  /** (Re)start on the same port and data dir; resolves when the server accepts connections. */
  start(): Promise<void>;
  /** Graceful stop; resolves when the port is closed. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL the server's process group (for fault tests); resolves when the port is closed. */
  kill(): Promise<void>;
}

export interface LocalStack {
  redisUrl: string;
  mysqlUrl: string;
  postgresUrl: string;
  /** Only the servers this stack started; stop() stops exactly these. */
  started: LocalServer[];
  stop(): Promise<void>;
}

export const DEFAULT_STACK_PORTS: Readonly<{ redis: number; mysql: number; postgres: number }> = Object.freeze({
  redis: 16379,
  mysql: 13306,
  postgres: 15432,
});

const HOST = '127.0.0.1';
const READY_TIMEOUT_MS = 30_000;
const INIT_TIMEOUT_MS = 60_000;
const STOP_TIMEOUT_MS = 30_000;
const POSTGRES_BIN = '/usr/lib/postgresql/15/bin';

// ---------------------------------------------------------------------------------------------------------------
// Public entry points

/**
 * A Redis server. With `replicaOf` it is a replica of the server at that address (which may be a proxy in front
 * of the primary), announced as 127.0.0.1:<port> so a Sentinel can find and promote it; start() then resolves
 * only once the replica has completed its sync with the primary, which must be up.
 */
export async function startRedis(opts: {
  dir: string;
  port?: number;
  appendonly?: boolean;
  replicaOf?: { host: string; port: number };
}): Promise<LocalServer> {
  const dir = resolve(opts.dir);
  const port = opts.port ?? (await freePort());
  await mkdir(dir, { recursive: true });
  const persistence = opts.appendonly
    ? ['--appendonly', 'yes', '--appendfsync', 'everysec', '--save', '']
    : ['--save', '', '--appendonly', 'no'];
  // Any server may become a primary with a replica (or a promoted replica itself): ship the first sync at once
  // instead of waiting the default 5 s for more replicas to join it.
  const replication = ['--repl-diskless-sync-delay', '0'];
  if (opts.replicaOf) {
    replication.push(
      '--replicaof', opts.replicaOf.host, String(opts.replicaOf.port), '--replica-announce-ip', HOST,
      '--replica-announce-port', String(port), '--replica-priority', '100',
    );
  }
  const server = new ManagedServer({
    kind: 'redis',
    url: `redis://${HOST}:${port}`,
    port,
    dir,
    logFile: join(dir, 'redis.log'),
    pidFile: join(dir, 'redis.pid'),
    processName: 'redis-server',
    stopSignal: 'SIGTERM',
    command: binary('redis-server'),
    args: [
      '--port', String(port), '--bind', HOST, '--daemonize', 'no', '--pidfile', join(dir, 'redis.pid'),
      '--dir', dir, '--logfile', '', ...persistence, ...replication,
    ],
    probe: opts.replicaOf ? () => redisReplicaInSync(port) : () => redisPing(port),
  });
  await server.start();
  return server;
}

/**
 * A Redis Sentinel watching the primary at `master` under `masterName`; a replica it learns of from the primary
 * is promoted once the primary has been unreachable for `downAfterMs` (quorum 1 by default: this Sentinel alone
 * decides). Each call writes a fresh `<dir>/sentinel.conf`; Sentinel rewrites that file as it learns (replicas,
 * epochs, a failover), and start() after a stop() reuses it as rewritten, as a restarted Sentinel would.
 */
export async function startRedisSentinel(opts: {
  dir: string;
  port?: number;
  masterName: string;
  master: { host: string; port: number };
  quorum?: number;
  downAfterMs?: number;
  failoverTimeoutMs?: number;
}): Promise<LocalServer> {
  const dir = resolve(opts.dir);
  const port = opts.port ?? (await freePort());
  if (!/^[A-Za-z0-9._-]+$/.test(opts.masterName)) throw new Error(`redis-sentinel: unusable master name "${opts.masterName}"`);
  await mkdir(dir, { recursive: true });
  const configFile = join(dir, 'sentinel.conf');
  const pidFile = join(dir, 'sentinel.pid');
  // A Sentinel left running on this folder by a dead process would rewrite the file under us: end it first.
  await claimDir(dir, 'redis-sentinel');
  await endLeftover(pidFile, 'redis-server', 'SIGTERM');
  const name = opts.masterName;
  await writeFile(configFile, [
    `port ${port}`,
    `bind ${HOST}`,
    'daemonize no',
    `pidfile "${pidFile}"`,
    'logfile ""',
    `dir "${dir}"`,
    // Every address here is an IP on loopback; announce this Sentinel as such so several can find one another.
    'sentinel resolve-hostnames no',
    `sentinel announce-ip ${HOST}`,
    `sentinel announce-port ${port}`,
    `sentinel monitor ${name} ${opts.master.host} ${opts.master.port} ${opts.quorum ?? 1}`,
    `sentinel down-after-milliseconds ${name} ${opts.downAfterMs ?? 1000}`,
    `sentinel failover-timeout ${name} ${opts.failoverTimeoutMs ?? 5000}`,
    `sentinel parallel-syncs ${name} 1`,
    '',
  ].join('\n'));
  const server = new ManagedServer({
    kind: 'redis-sentinel',
    url: `redis://${HOST}:${port}`,
    port,
    dir,
    logFile: join(dir, 'sentinel.log'),
    pidFile,
    processName: 'redis-server',
    stopSignal: 'SIGTERM',
    command: binary('redis-server'),
    args: [configFile, '--sentinel'],
    probe: () => sentinelKnowsMaster(port, name),
  });
  await server.start();
  return server;
}

export async function startMariadb(opts: { dir: string; port?: number; database?: string }): Promise<LocalServer> {
  const dir = resolve(opts.dir);
  const port = opts.port ?? (await freePort());
  const database = opts.database ?? 'coupon';
  const dataDir = join(dir, 'data');
  const logFile = join(dir, 'mariadb.log');
  // mariadbd refuses root unless told to run as root; as anyone else --user is only a no-op warning.
  const user = userInfo().username;
  await mkdir(dir, { recursive: true });
  await initialiseOnce(dir, dataDir, 'mariadb', logFile, async () => {
    await mkdir(dataDir, { recursive: true });
    await runToCompletion('mariadb', binary('mariadb-install-db'), [
      '--no-defaults', `--user=${user}`, `--datadir=${dataDir}`, '--auth-root-authentication-method=normal',
      '--skip-test-db',
    ], { logFile });
  });
  const url = `mysql://root@${HOST}:${port}/${encodeURIComponent(database)}`;
  const server = new ManagedServer({
    kind: 'mariadb',
    url,
    port,
    dir,
    logFile,
    pidFile: join(dir, 'mariadbd.pid'),
    processName: 'mariadbd',
    stopSignal: 'SIGTERM',
    command: binary('mariadbd'),
    args: [
      '--no-defaults', `--user=${user}`, `--datadir=${dataDir}`, `--socket=${join(dir, 'mariadbd.sock')}`,
      `--pid-file=${join(dir, 'mariadbd.pid')}`, `--port=${port}`, `--bind-address=${HOST}`, '--skip-name-resolve',
      '--max-connections=500', '--innodb-flush-log-at-trx-commit=2',
    ],
    probe: () => mysqlPing(url),
    afterReady: () => ensureMysqlDatabase(url),
  });
  await server.start();
  return server;
}

export async function startPostgres(opts: { dir: string; port?: number; database?: string }): Promise<LocalServer> {
  const dir = resolve(opts.dir);
  const port = opts.port ?? (await freePort());
  const database = opts.database ?? 'coupon_jobs';
  const dataDir = join(dir, 'data');
  const logFile = join(dir, 'postgres.log');
  await mkdir(dir, { recursive: true });
  // initdb and postgres refuse to run as root: as root, run them as the postgres user, which must own the data
  // dir and be able to reach it through every parent folder.
  const runAs = process.getuid?.() === 0 ? await systemUser('postgres') : undefined;
  if (runAs) await makeTraversable(dir);
  const prepareDataDir = async () => {
    await mkdir(dataDir, { recursive: true, mode: 0o700 });
    await chmod(dataDir, 0o700);
    if (runAs) await chown(dataDir, runAs.uid, runAs.gid);
  };
  await initialiseOnce(dir, dataDir, 'postgres', logFile, async () => {
    await prepareDataDir();
    await runToCompletion('postgres', join(POSTGRES_BIN, 'initdb'), [
      '-D', dataDir, '-U', 'postgres', '--auth=trust', '--no-sync', '-E', 'UTF8', '--locale=C',
    ], { logFile, runAs, cwd: dir });
  });
  await prepareDataDir();
  const url = `postgres://postgres@${HOST}:${port}/${encodeURIComponent(database)}`;
  const server = new ManagedServer({
    kind: 'postgres',
    url,
    port,
    dir,
    logFile,
    pidFile: join(dataDir, 'postmaster.pid'),
    processName: 'postgres',
    // SIGTERM is "smart" shutdown, which waits for every client to leave; SIGINT disconnects them.
    stopSignal: 'SIGINT',
    command: join(POSTGRES_BIN, 'postgres'),
    args: [
      '-D', dataDir, '-p', String(port), '-c', `listen_addresses=${HOST}`, '-k', dataDir, '-c', 'fsync=off',
      '-c', 'max_connections=200',
    ],
    runAs,
    cwd: dir,
    probe: () => postgresPing(url),
    afterReady: () => ensurePostgresDatabase(url),
  });
  await server.start();
  return server;
}

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const probe = createServer();
    probe.unref();
    probe.once('error', reject);
    probe.listen(0, HOST, () => {
      const address = probe.address();
      probe.close(() => {
        if (address && typeof address === 'object') resolvePort(address.port);
        else reject(new Error('freePort: no port assigned'));
      });
    });
  });
}

/** Whether a TCP connection to the URL's host and port succeeds within timeoutMs. */
export function isReachable(url: string, timeoutMs = 1000): Promise<boolean> {
  const { host, port } = hostAndPort(url);
  return new Promise((resolveReachable) => {
    const socket = createConnection({ host, port });
    const finish = (reachable: boolean) => {
      socket.destroy();
      resolveReachable(reachable);
    };
    socket.setTimeout(timeoutMs, () => finish(false));
    socket.once('connect', () => finish(true));
    socket.once('error', () => finish(false));
  });
}

/**
 * Redis, MySQL and PostgreSQL for the app: each given URL (or REDIS_URL / MYSQL_URL / POSTGRES_URL) that is
 * reachable is reused, with its database created if missing; for the others a throwaway server is started under
 * opts.dir/<kind> on opts.ports (default 16379, 13306, 15432).
 */
export async function startLocalStack(opts: {
  dir: string;
  redisUrl?: string;
  mysqlUrl?: string;
  postgresUrl?: string;
  ports?: { redis: number; mysql: number; postgres: number };
}): Promise<LocalStack> {
  const dir = resolve(opts.dir);
  const ports = opts.ports ?? DEFAULT_STACK_PORTS;
  const given = {
    redis: opts.redisUrl ?? process.env.REDIS_URL,
    mysql: opts.mysqlUrl ?? process.env.MYSQL_URL,
    postgres: opts.postgresUrl ?? process.env.POSTGRES_URL,
  };
  const outcomes = await Promise.allSettled([
    provide(given.redis, undefined, () => startRedis({ dir: join(dir, 'redis'), port: ports.redis })),
    provide(given.mysql, ensureMysqlDatabase, () =>
      startMariadb({ dir: join(dir, 'mariadb'), port: ports.mysql, database: databaseName(given.mysql) })),
    provide(given.postgres, ensurePostgresDatabase, () =>
      startPostgres({ dir: join(dir, 'postgres'), port: ports.postgres, database: databaseName(given.postgres) })),
  ]);
  const started = outcomes.flatMap((o) => (o.status === 'fulfilled' && o.value.server ? [o.value.server] : []));
  const stopStarted = async () => {
    const results = await Promise.allSettled(started.map((s) => s.stop()));
    const failed = results.find((r) => r.status === 'rejected');
    if (failed) throw failed.reason;
  };
  const failure = outcomes.find((o) => o.status === 'rejected');
  if (failure) {
    await stopStarted().catch(() => {});
    throw failure.reason;
  }
  const [redis, mysqlResult, postgres] = outcomes.map((o) => (o as PromiseFulfilledResult<Provided>).value.url);
  let stopping: Promise<void> | undefined;
  return {
    redisUrl: redis!,
    mysqlUrl: mysqlResult!,
    postgresUrl: postgres!,
    started,
    stop: () => (stopping ??= stopStarted()),
  };
}

/**
 * Ends a server that an earlier, now dead process started in dir (found through the pid file it left) and
 * releases dir. Throws if the process that started it is still alive.
 */
export async function stopLeftoverServer(dir: string): Promise<void> {
  const found = [
    { pidFile: join(dir, 'redis.pid'), processName: 'redis-server', signal: 'SIGTERM' as const },
    { pidFile: join(dir, 'sentinel.pid'), processName: 'redis-server', signal: 'SIGTERM' as const },
    { pidFile: join(dir, 'mariadbd.pid'), processName: 'mariadbd', signal: 'SIGTERM' as const },
    { pidFile: join(dir, 'data', 'postmaster.pid'), processName: 'postgres', signal: 'SIGINT' as const },
  ];
  await claimDir(dir, 'server');
  for (const f of found) await endLeftover(f.pidFile, f.processName, f.signal);
  await rm(join(dir, OWNER_FILE), { force: true });
}

// ---------------------------------------------------------------------------------------------------------------
// One server process

interface ServerSpec {
  kind: ServerKind;
  url: string;
  port: number;
  dir: string;
  logFile: string;
  /** Written by the server itself; names the process to end when a dead owner left it running. */
  pidFile: string;
  /** /proc/<pid>/comm of the server, so a recycled pid is never signalled. */
  processName: string;
  stopSignal: NodeJS.Signals;
  command: string;
  args: string[];
  runAs?: { uid: number; gid: number };
  cwd?: string;
  probe(): Promise<void>;
  afterReady?(): Promise<void>;
}

const OWNER_FILE = 'owner.pid';

class ManagedServer implements LocalServer {
  readonly kind: ServerKind;
  readonly url: string;
  readonly port: number;
  readonly dir: string;
  #spec: ServerSpec;
  #child: ChildProcess | undefined;
  #exited = true;
  #starting: Promise<void> | undefined;
  #stopping: Promise<void> | undefined;
  #onOwnerExit = () => {
    // Synchronous by necessity: the owner is exiting. The detached server finishes its shutdown on its own.
    if (this.#child?.pid && !this.#exited) signal(this.#child.pid, this.#spec.stopSignal);
  };

  constructor(spec: ServerSpec) {
    this.kind = spec.kind;
    this.url = spec.url;
    this.port = spec.port;
    this.dir = spec.dir;
    this.#spec = spec;
  }

  start(): Promise<void> {
    if (!this.#exited) return this.#starting ?? Promise.resolve();
    this.#starting = this.#start().finally(() => (this.#starting = undefined));
    return this.#starting;
  }

  stop(): Promise<void> {
    this.#stopping ??= this.#shutDown(this.#spec.stopSignal).finally(() => (this.#stopping = undefined));
    return this.#stopping;
  }

  kill(): Promise<void> {
    return this.#shutDown('SIGKILL');
  }

  async #start(): Promise<void> {
    const spec = this.#spec;
    await claimDir(spec.dir, spec.kind);
    await endLeftover(spec.pidFile, spec.processName, spec.stopSignal);
    if (await isReachable(spec.url, 500)) {
      throw new Error(`${spec.kind}: port ${spec.port} on ${HOST} is already in use by another process`);
    }
    await writeFile(join(spec.dir, OWNER_FILE), `${process.pid}\n`);

    const log = openSync(spec.logFile, 'a');
    let child: ChildProcess;
    try {
      child = spawn(spec.command, spec.args, {
        detached: true,
        stdio: ['ignore', log, log],
        cwd: spec.cwd ?? spec.dir,
        uid: spec.runAs?.uid,
        gid: spec.runAs?.gid,
      });
    } finally {
      closeSync(log);
    }
    this.#child = child;
    this.#exited = false;
    let exitReason = '';
    child.once('exit', (code, sig) => {
      this.#exited = true;
      exitReason = sig ? `was killed by ${sig}` : `exited with code ${code}`;
    });
    child.once('error', (err) => {
      this.#exited = true;
      exitReason = `could not be started: ${err.message}`;
    });
    // The server must not keep its owner alive; stop() keeps the event loop busy with its own timers.
    child.unref();
    process.on('exit', this.#onOwnerExit);

    const deadline = Date.now() + READY_TIMEOUT_MS;
    let lastError = '';
    for (;;) {
      if (this.#exited) {
        process.off('exit', this.#onOwnerExit);
        throw await this.#failure(exitReason);
      }
      try {
        await spec.probe();
        break;
      } catch (err) {
        lastError = (err as Error).message;
      }
      if (Date.now() > deadline) {
        await this.#shutDown('SIGKILL').catch(() => {});
        throw await this.#failure(`was not ready within ${READY_TIMEOUT_MS / 1000} s (last error: ${lastError})`);
      }
      await sleep(100);
    }
    await spec.afterReady?.();
  }

  async #shutDown(sig: NodeJS.Signals): Promise<void> {
    const child = this.#child;
    if (child?.pid && !this.#exited) {
      const pid = child.pid;
      // SIGKILL goes to the whole process group so no backend or forked child outlives the server.
      if (sig === 'SIGKILL') signal(-pid, 'SIGKILL');
      else signal(pid, sig);
      if (!(await waitFor(() => this.#exited, STOP_TIMEOUT_MS))) {
        signal(-pid, 'SIGKILL');
        if (!(await waitFor(() => this.#exited, 5_000))) {
          throw await this.#failure(`did not exit after ${sig} and SIGKILL`);
        }
      }
    }
    process.off('exit', this.#onOwnerExit);
    if (!(await waitFor(async () => !(await isReachable(this.url, 200)), 10_000))) {
      throw await this.#failure('stopped, but its port stayed open');
    }
    await rm(join(this.#spec.dir, OWNER_FILE), { force: true });
  }

  async #failure(reason: string): Promise<Error> {
    return new Error(`${this.kind} on ${HOST}:${this.port} ${reason}\n${await logTail(this.#spec.logFile)}`);
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Data dirs and leftovers

/** Runs init unless a previous run completed it; a half-initialised data dir is wiped and done again. */
async function initialiseOnce(
  dir: string,
  dataDir: string,
  kind: ServerKind,
  logFile: string,
  init: () => Promise<void>,
): Promise<void> {
  const marker = join(dir, 'initialised');
  if (existsSync(marker)) return;
  await claimDir(dir, kind);
  await rm(dataDir, { recursive: true, force: true });
  await writeFile(logFile, '');
  await init();
  await writeFile(marker, `${new Date().toISOString()}\n`);
}

/** Refuses a dir whose servers belong to another live process. */
async function claimDir(dir: string, kind: ServerKind | 'server'): Promise<void> {
  const owner = await readPid(join(dir, OWNER_FILE));
  if (owner && owner !== process.pid && isAlive(owner)) {
    throw new Error(
      `${kind}: ${dir} is in use by process ${owner}; stop it, or delete ${join(dir, OWNER_FILE)} if that pid is stale`,
    );
  }
}

async function endLeftover(pidFile: string, processName: string, sig: NodeJS.Signals): Promise<void> {
  const pid = await readPid(pidFile);
  if (!pid || !isAlive(pid)) return;
  const comm = await readFile(`/proc/${pid}/comm`, 'utf8').catch(() => '');
  if (comm.trim() !== processName) return;
  signal(pid, sig);
  if (!(await waitFor(() => !isAlive(pid), STOP_TIMEOUT_MS))) {
    signal(-pid, 'SIGKILL');
    signal(pid, 'SIGKILL');
    await waitFor(() => !isAlive(pid), 5_000);
  }
}

async function readPid(file: string): Promise<number | undefined> {
  const text = await readFile(file, 'utf8').catch(() => '');
  const pid = Number.parseInt(text.split('\n')[0] ?? '', 10);
  return Number.isInteger(pid) && pid > 0 ? pid : undefined;
}

async function systemUser(name: string): Promise<{ uid: number; gid: number }> {
  const passwd = await readFile('/etc/passwd', 'utf8');
  const fields = passwd.split('\n').find((line) => line.startsWith(`${name}:`))?.split(':');
  if (!fields) throw new Error(`postgres: running as root needs a system user "${name}" (apt-get install postgresql)`);
  return { uid: Number(fields[2]), gid: Number(fields[3]) };
}

/** Adds o+x to dir and every parent that lacks it, so an unprivileged server user can reach dir. */
async function makeTraversable(dir: string): Promise<void> {
  for (let current = dir; ; current = dirname(current)) {
    const { mode } = await stat(current);
    if ((mode & 0o001) === 0) await chmod(current, (mode & 0o7777) | 0o001);
    if (dirname(current) === current) return;
  }
}

// ---------------------------------------------------------------------------------------------------------------
// Readiness probes and databases

function redisPing(port: number): Promise<void> {
  return new Promise((resolvePing, reject) => {
    const socket = createConnection({ host: HOST, port });
    let reply = '';
    socket.setTimeout(1000, () => {
      socket.destroy();
      reject(new Error('PING timed out'));
    });
    socket.once('error', reject);
    socket.once('connect', () => socket.write('PING\r\n'));
    socket.on('data', (chunk) => {
      reply += chunk.toString();
      if (!reply.includes('\r\n')) return;
      socket.destroy();
      // While loading its append-only file Redis answers -LOADING: not ready yet.
      if (reply.startsWith('+PONG')) resolvePing();
      else reject(new Error(reply.trim()));
    });
  });
}

/** One command to the Redis (or Sentinel) on port; resolves with the text of a simple or bulk string reply. */
function redisCommand(port: number, ...args: string[]): Promise<string> {
  return new Promise((resolveReply, reject) => {
    const socket = createConnection({ host: HOST, port });
    let reply = Buffer.alloc(0);
    socket.setTimeout(1000, () => {
      socket.destroy();
      reject(new Error(`${args[0]} timed out`));
    });
    socket.once('error', reject);
    socket.once('connect', () => {
      socket.write(`*${args.length}\r\n${args.map((arg) => `$${Buffer.byteLength(arg)}\r\n${arg}\r\n`).join('')}`);
    });
    socket.on('data', (chunk: Buffer) => {
      reply = Buffer.concat([reply, chunk]);
      const lineEnd = reply.indexOf('\r\n');
      if (lineEnd < 0) return;
      const head = reply.subarray(0, lineEnd).toString();
      if (head.startsWith('$')) {
        const length = Number(head.slice(1));
        if (length >= 0 && reply.length < lineEnd + 2 + length + 2) return;
        socket.destroy();
        resolveReply(length < 0 ? '' : reply.subarray(lineEnd + 2, lineEnd + 2 + length).toString());
      } else {
        socket.destroy();
        if (head.startsWith('+') || head.startsWith(':')) resolveReply(head.slice(1));
        else if (head.startsWith('*')) resolveReply(reply.subarray(lineEnd + 2).toString());
        else reject(new Error(head));
      }
    });
  });
}

/** A replica is ready once it answers and has loaded its primary's data (the link is up after the first sync). */
async function redisReplicaInSync(port: number): Promise<void> {
  await redisPing(port);
  const info = await redisCommand(port, 'INFO', 'replication');
  if (!/^master_link_status:up\r?$/m.test(info)) {
    throw new Error(`replica not in sync with its primary yet (${/^master_link_status:.*$/m.exec(info)?.[0]?.trim() ?? 'no link'})`);
  }
}

/** A Sentinel is ready once it answers for the master it was told to monitor. */
async function sentinelKnowsMaster(port: number, masterName: string): Promise<void> {
  await redisPing(port);
  const reply = await redisCommand(port, 'SENTINEL', 'GET-MASTER-ADDR-BY-NAME', masterName);
  if (!reply.includes('$')) throw new Error(`Sentinel does not know master ${masterName} yet`);
}

function mysqlOptions(url: string) {
  const u = new URL(url);
  return {
    host: hostAndPort(url).host,
    port: hostAndPort(url).port,
    user: decodeURIComponent(u.username) || 'root',
    password: decodeURIComponent(u.password),
    connectTimeout: 2000,
  };
}

async function mysqlPing(url: string): Promise<void> {
  const connection = await mysql.createConnection(mysqlOptions(url));
  try {
    await connection.query('SELECT 1');
  } finally {
    await connection.end().catch(() => connection.destroy());
  }
}

async function ensureMysqlDatabase(url: string): Promise<void> {
  const database = databaseName(url);
  if (!database) return;
  const connection = await mysql.createConnection(mysqlOptions(url));
  try {
    await connection.query(`CREATE DATABASE IF NOT EXISTS \`${database.replaceAll('`', '``')}\``);
  } finally {
    await connection.end().catch(() => connection.destroy());
  }
}

/** The part of `pg` used here; pg ships no types and @types/pg is not a dependency. */
interface PgClient {
  connect(): Promise<void>;
  query(sql: string, params?: unknown[]): Promise<{ rowCount: number | null }>;
  end(): Promise<void>;
}
type PgClientConstructor = new (config: Record<string, unknown>) => PgClient;

let pgClient: Promise<PgClientConstructor> | undefined;
function loadPgClient(): Promise<PgClientConstructor> {
  const moduleName: string = 'pg';
  pgClient ??= import(moduleName).then((m: { default: { Client: PgClientConstructor } }) => m.default.Client);
  return pgClient;
}

async function withPostgres<T>(url: string, run: (client: PgClient) => Promise<T>): Promise<T> {
  const Client = await loadPgClient();
  const u = new URL(url);
  const { host, port } = hostAndPort(url);
  const client = new Client({
    host,
    port,
    user: decodeURIComponent(u.username) || 'postgres',
    password: decodeURIComponent(u.password) || undefined,
    database: 'postgres',
    connectionTimeoutMillis: 2000,
  });
  await client.connect();
  try {
    return await run(client);
  } finally {
    await client.end().catch(() => {});
  }
}

function postgresPing(url: string): Promise<void> {
  return withPostgres(url, async (client) => {
    await client.query('SELECT 1');
  });
}

function ensurePostgresDatabase(url: string): Promise<void> {
  const database = databaseName(url);
  if (!database) return Promise.resolve();
  return withPostgres(url, async (client) => {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    if (found.rowCount) return;
    try {
      await client.query(`CREATE DATABASE "${database.replaceAll('"', '""')}"`);
    } catch (err) {
      // Two starters racing for the same database: the loser finds it exists, which is what it wanted.
      if ((err as { code?: string }).code !== '42P04') throw err;
    }
  });
}

// ---------------------------------------------------------------------------------------------------------------
// Small helpers

interface Provided {
  url: string;
  server?: LocalServer;
}

async function provide(
  url: string | undefined,
  ensureDatabase: ((url: string) => Promise<void>) | undefined,
  startThrowaway: () => Promise<LocalServer>,
): Promise<Provided> {
  if (url && (await isReachable(url))) {
    await ensureDatabase?.(url);
    return { url };
  }
  const server = await startThrowaway();
  return { url: server.url, server };
}

function databaseName(url: string | undefined): string | undefined {
  if (!url) return undefined;
  const name = decodeURIComponent(new URL(url).pathname.replace(/^\//, ''));
  return name || undefined;
}

const DEFAULT_PORTS: Record<string, number> = { 'redis:': 6379, 'rediss:': 6379, 'mysql:': 3306, 'mariadb:': 3306, 'postgres:': 5432, 'postgresql:': 5432 };

function hostAndPort(url: string): { host: string; port: number } {
  const u = new URL(url);
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1') || HOST;
  const port = u.port ? Number(u.port) : DEFAULT_PORTS[u.protocol];
  if (!port) throw new Error(`no port in ${url} and no default for ${u.protocol}`);
  return { host, port };
}

/** Debian's path for a server binary; a PATH without /usr/sbin (a non-root shell) would miss mariadbd. */
function binary(name: string): string {
  return ['/usr/sbin', '/usr/bin'].map((dir) => join(dir, name)).find((path) => existsSync(path)) ?? name;
}

function runToCompletion(
  kind: ServerKind,
  command: string,
  args: string[],
  opts: { logFile: string; runAs?: { uid: number; gid: number }; cwd?: string },
): Promise<void> {
  const log = openSync(opts.logFile, 'a');
  return new Promise<void>((resolveRun, reject) => {
    const child = spawn(command, args, {
      stdio: ['ignore', log, log],
      cwd: opts.cwd,
      uid: opts.runAs?.uid,
      gid: opts.runAs?.gid,
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), INIT_TIMEOUT_MS);
    const fail = async (reason: string) =>
      reject(new Error(`${kind}: ${command} ${reason}\n${await logTail(opts.logFile)}`));
    child.once('error', (err) => {
      clearTimeout(timer);
      void fail(`could not be started: ${err.message}`);
    });
    child.once('exit', (code, sig) => {
      clearTimeout(timer);
      if (code === 0) resolveRun();
      else void fail(sig ? `was killed by ${sig} (time limit ${INIT_TIMEOUT_MS / 1000} s)` : `exited with code ${code}`);
    });
  }).finally(() => closeSync(log));
}

async function logTail(logFile: string, lines = 20): Promise<string> {
  const text = await readFile(logFile, 'utf8').catch(() => '');
  const tail = text.trimEnd().split('\n').slice(-lines).join('\n');
  return `--- last lines of ${logFile} ---\n${tail || '(empty)'}`;
}

/** Whether a process with this pid exists (EPERM: it exists but belongs to someone else). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function signal(pid: number, sig: NodeJS.Signals): void {
  try {
    process.kill(pid, sig);
  } catch {
    // Already gone.
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolveSleep) => setTimeout(resolveSleep, ms));
}

async function waitFor(condition: () => boolean | Promise<boolean>, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (!(await condition())) {
    if (Date.now() > deadline) return false;
    await sleep(50);
  }
  return true;
}
