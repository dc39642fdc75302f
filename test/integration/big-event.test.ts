/**
 * Issue 9, item 2: no Redis command blocks for long, however big an event. The reconcile job read every event's
 * user hash with one HGETALL and a rebuild wrote an event's users with one script call of two arguments per
 * user: with a big event, each held Redis (and so every gate call, every event) for as long as that took.
 *
 * An event of BIG_EVENT_USERS coupons (200,000 here; the 1M figure in docs/reliability.md comes from
 * `BIG_EVENT_USERS=1000000 npm test -- test/integration/big-event.test.ts`) on a Redis and a MariaDB of the
 * test's own, so nothing else runs on them. While the reconciler and the rebuild work, a separate process PINGs
 * Redis over and over (the client-side figure), and Redis's SLOWLOG records every command that ran 1 ms or more
 * (the server-side one). The assertion is the goal itself: no command held Redis for 10 ms (so no PING could
 * wait that long behind one), and PINGs answered within 10 ms of their time at rest (p99; the maximum is
 * reported).
 *
 * The test machine is shared (2 cores, other builds and suites beside this one): a Redis or a probe that the
 * kernel takes off the CPU for 20 ms would look like a blocking command. So both run, where the kernel allows it,
 * under SCHED_FIFO, as a Redis on cores of its own would in production; the figures say whether they did.
 */
import { type ChildProcessWithoutNullStreams, execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import mysql from 'mysql2/promise';
import { pino } from 'pino';
import { type LocalServer, startMariadb, startRedis } from '../../scripts/local-servers/index.ts';
import { migrateUp } from '../../src/db/migrate.ts';
import { createOrm, type Orm } from '../../src/db/orm.ts';
import { CouponStore } from '../../src/db/store.ts';
import { GateStateKeeper } from '../../src/gate-state.ts';
import { type CouponRedis, createRedis } from '../../src/redis/client.ts';
import { encodeUserEntry } from '../../src/redis/formats.ts';
import { applyForCoupon } from '../../src/redis/gate.ts';
import { EVENT_REGISTRY_KEY, PERSIST_GROUP, eventKeys } from '../../src/redis/keys.ts';
import { OutboxAdmin } from '../../worker/outbox-admin.ts';
import { Reconciler } from '../../worker/reconciler.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const USERS = Number(process.env.BIG_EVENT_USERS ?? 200_000);
const EVENT_ID = 'big-event';
const ISSUED_AT_MS = Date.UTC(2026, 11, 1, 9, 0, 0);
/** Redis time no command may take, and PING (p99) no more than this slower than at rest. */
const BUDGET_MS = 10;

const userId = (n: number) => `u${n}`;
const entryOf = (n: number) => encodeUserEntry({ sequence: n, issuedAtMs: ISSUED_AT_MS + n });

interface PhaseFigures {
  pings: number;
  pingP50Ms: number;
  pingP99Ms: number;
  pingMaxMs: number;
  /** the longest command Redis ran meanwhile (SLOWLOG, 1 ms and more), and which */
  slowestCommandMs: number;
  slowestCommand: string;
  durationMs: number;
}

/**
 * PINGs Redis from a process of its own, one at a time, about every millisecond, and keeps the round trips per
 * phase. Its own event loop does nothing else, so what it sees is Redis's answer time (plus scheduling).
 */
const PROBE = `
import { createConnection } from 'node:net';
const phases = {};
let phase = 'idle';
let sentAt = 0n;
const socket = createConnection({ host: '127.0.0.1', port: Number(process.argv[1]) });
socket.setNoDelay(true);
const ping = () => { sentAt = process.hrtime.bigint(); socket.write('PING\\r\\n'); };
socket.on('connect', ping);
socket.on('data', () => {
  (phases[phase] ??= []).push(Number(process.hrtime.bigint() - sentAt) / 1e6);
  setTimeout(ping, 1);
});
let input = '';
process.stdin.on('data', (chunk) => {
  input += chunk;
  for (let at = input.indexOf('\\n'); at >= 0; at = input.indexOf('\\n')) {
    const line = input.slice(0, at);
    input = input.slice(at + 1);
    if (line.startsWith('phase ')) phase = line.slice(6);
    if (line.startsWith('report ')) {
      const samples = (phases[line.slice(7)] ?? []).sort((a, b) => a - b);
      const at = (q) => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))] ?? 0;
      process.stdout.write(JSON.stringify({ pings: samples.length, p50: at(0.5), p99: at(0.99), max: samples.at(-1) ?? 0 }) + '\\n');
    }
  }
});
process.stdin.on('end', () => process.exit(0));
`;

class PingProbe {
  readonly #child: ChildProcessWithoutNullStreams;
  #output = '';

  constructor(port: number) {
    this.#child = spawn(process.execPath, ['--input-type=module', '-e', PROBE, String(port)]);
    this.#child.stdout.on('data', (chunk: Buffer) => (this.#output += chunk.toString()));
  }

  get pid(): number {
    return this.#child.pid!;
  }

  phase(name: string): void {
    this.#child.stdin.write(`phase ${name}\n`);
  }

  async report(name: string): Promise<{ pings: number; p50: number; p99: number; max: number }> {
    const before = this.#output.length;
    this.#child.stdin.write(`report ${name}\n`);
    for (let waited = 0; !this.#output.slice(before).includes('\n'); waited += 10) {
      if (waited > 5_000) throw new Error('the PING probe did not report');
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    return JSON.parse(this.#output.slice(before).split('\n')[0]!);
  }

  stop(): void {
    this.#child.stdin.end();
  }
}

describe(`an event of ${USERS.toLocaleString('en')} coupons`, () => {
  let dir: string;
  let redisServer: LocalServer | undefined;
  let mariadb: LocalServer | undefined;
  let sql: mysql.Pool | undefined;
  let orm: Orm | undefined;
  let redis: CouponRedis;
  let store: CouponStore;
  let probe: PingProbe | undefined;
  const figures: Record<string, PhaseFigures> = {};
  let realtime = false;

  beforeAll(async () => {
    dir = join(ROOT, '.stack', `big-event-${process.pid}-${randomBytes(3).toString('hex')}`);
    [redisServer, mariadb] = await Promise.all([startRedis({ dir: join(dir, 'redis') }), startMariadb({ dir: join(dir, 'mariadb') })]);
    await migrateUp(mariadb.url);
    sql = mysql.createPool({ uri: mariadb.url, connectionLimit: 2, timezone: 'Z' });
    orm = await createOrm(mariadb.url);
    store = new CouponStore(orm);
    redis = createRedis(redisServer.url);
    await fillEvent();
    await redis.config('SET', 'slowlog-log-slower-than', '1000');
    await redis.config('SET', 'slowlog-max-len', '100000');
    probe = new PingProbe(redisServer.port);
    const redisPid = Number((await readFile(join(redisServer.dir, 'redis.pid'), 'utf8')).trim());
    realtime = (await Promise.all([runRealtime(redisPid), runRealtime(probe.pid)])).every(Boolean);
    await measure('idle', async () => new Promise((resolve) => setTimeout(resolve, 2_000)));
  }, 600_000);

  afterAll(async () => {
    console.log(`[big-event figures] ${JSON.stringify({ users: USERS, realtime, ...figures })}`);
    probe?.stop();
    await redis?.quit();
    await orm?.close(true);
    await sql?.end();
    await Promise.all([redisServer?.stop(), mariadb?.stop()]);
    await rm(dir, { recursive: true, force: true });
  }, 60_000);

  /** The event as the gate and the worker leave it once every coupon is issued and persisted. */
  async function fillEvent(): Promise<void> {
    await sql!.query('insert into coupon_event (id, name, total_quantity, starts_at) values (?, ?, ?, ?)',
      [EVENT_ID, 'big event', USERS, new Date(ISSUED_AT_MS)]);
    // 100,000 rows per statement, numbered by a cross join of digits (MySQL 8 and MariaDB alike).
    const digits = '(select 0 d union all select 1 union all select 2 union all select 3 union all select 4 union all select 5 union all select 6 union all select 7 union all select 8 union all select 9)';
    for (let offset = 0; offset < USERS; offset += 100_000) {
      await sql!.query(
        `insert into coupon (event_id, user_id, sequence, issued_at)
         select ?, concat('u', n), n, date_add(?, interval n * 1000 microsecond)
         from (select ? + a.d + 10 * b.d + 100 * c.d + 1000 * d.d + 10000 * e.d + 1 as n
               from ${digits} a, ${digits} b, ${digits} c, ${digits} d, ${digits} e) numbers
         where n <= ?`,
        [EVENT_ID, new Date(ISSUED_AT_MS), offset, USERS],
      );
    }
    const keys = eventKeys(EVENT_ID);
    await redis.hset(keys.meta, 'total', String(USERS), 'startsAt', String(ISSUED_AT_MS), 'epoch', '0');
    await redis.set(keys.issued, String(USERS));
    await redis.xgroup('CREATE', keys.outbox, PERSIST_GROUP, '0', 'MKSTREAM');
    await redis.sadd(EVENT_REGISTRY_KEY, EVENT_ID);
    for (let start = 1; start <= USERS; start += 100_000) {
      const pipeline = redis.pipeline();
      for (let chunk = start; chunk < Math.min(start + 100_000, USERS + 1); chunk += 1_000) {
        const fields: string[] = [];
        for (let n = chunk; n < Math.min(chunk + 1_000, USERS + 1); n++) fields.push(userId(n), entryOf(n));
        pipeline.hset(keys.users, ...fields);
      }
      await pipeline.exec();
    }
  }

  /** Runs `work` while the probe PINGs and SLOWLOG records, and keeps the figures of the phase. */
  async function measure<T>(phase: string, work: () => Promise<T>): Promise<T> {
    await redis.slowlog('RESET');
    probe!.phase(phase);
    const started = performance.now();
    const result = await work();
    const durationMs = performance.now() - started;
    probe!.phase('between');
    const ping = await probe!.report(phase);
    // The probe's own SLOWLOG RESET (freeing the previous phase's entries) is not the work measured.
    const slow = ((await redis.slowlog('GET', 100_000)) as Array<[number, number, number, string[]]>)
      .filter((entry) => entry[3][0]?.toLowerCase() !== 'slowlog');
    const slowest = slow.reduce<[number, number, number, string[]] | undefined>((max, entry) => (!max || entry[2] > max[2] ? entry : max), undefined);
    figures[phase] = {
      pings: ping.pings, pingP50Ms: round(ping.p50), pingP99Ms: round(ping.p99), pingMaxMs: round(ping.max),
      slowestCommandMs: round((slowest?.[2] ?? 0) / 1000), slowestCommand: slowest ? slowest[3].slice(0, 2).join(' ').slice(0, 60) : '',
      durationMs: Math.round(durationMs),
    };
    return result;
  }

  const reconciler = () => new Reconciler(redis, store, new OutboxAdmin(redis, 'big-event-test'));
  const keeper = () => new GateStateKeeper(redis, store, pino({ level: 'silent' }));
  const commandCalls = async (command: string) => Number(/calls=(\d+)/.exec((await redis.info('commandstats')).split('\n').find((line) => line.startsWith(`cmdstat_${command}:`)) ?? '')?.[1] ?? 0);

  const overBudget = (phase: string) => figures[phase]!.slowestCommandMs >= BUDGET_MS
    || figures[phase]!.pingP99Ms >= figures.idle!.pingP99Ms + BUDGET_MS;

  /**
   * `measure`, run once more from the same state (`prepare`) when the first run went over the budget. A command
   * that holds Redis does so on every run; the shared machine taking Redis off the CPU once does not (seen in CI
   * under SCHED_FIFO: one HSCAN of 1,000 users at 16.7 ms, 0.5-3 ms in every other run). Both runs are reported.
   */
  async function measureSteady<T>(phase: string, prepare: () => Promise<unknown>, work: () => Promise<T>): Promise<T> {
    await prepare();
    const result = await measure(phase, work);
    if (!overBudget(phase)) return result;
    figures[`${phase}-first-run`] = figures[phase]!;
    await prepare();
    return measure(phase, work);
  }

  function expectWithinBudget(phase: string): void {
    const { slowestCommandMs, slowestCommand, pingP99Ms, pingMaxMs } = figures[phase]!;
    const idleP99Ms = figures.idle!.pingP99Ms;
    expect({ phase, slowestCommandMs, slowestCommand, pingP99Ms, pingMaxMs, idleP99Ms }).toMatchObject({
      // Server side, exact: no command held Redis for the budget, so none made a PING wait that long.
      slowestCommandMs: slowestCommandMs < BUDGET_MS ? slowestCommandMs : `below ${BUDGET_MS}`,
      // Client side: PINGs answered as at rest, within the budget. Its maximum is reported, not asserted: on the
      // shared test machine one PING in thousands can wait 20 ms with no Redis command above 3 ms (the kernel).
      pingP99Ms: pingP99Ms < idleP99Ms + BUDGET_MS ? pingP99Ms : `below ${idleP99Ms + BUDGET_MS}`,
    });
  }

  test('when MySQL holds every coupon of the drained event, then reconcile compares the counts, finds nothing missing and scans nothing', async () => {
    const missing = await measureSteady('reconcile-counts-equal', () => redis.config('RESETSTAT'), () => reconciler().findMissing());
    expect(missing).toEqual([]);
    expect({ hscan: await commandCalls('hscan'), hgetall: await commandCalls('hgetall') }).toEqual({ hscan: 0, hgetall: 0 });
    expectWithinBudget('reconcile-counts-equal');
  }, 300_000);

  test('when MySQL lost three coupons of the event, then reconcile finds exactly those three, scanning the users in chunks without holding Redis', async () => {
    const lost = [17, Math.floor(USERS / 2), USERS - 1];
    const missing = await measureSteady('reconcile-gap',
      () => sql!.query('delete from coupon where event_id = ? and sequence in (?)', [EVENT_ID, lost]),
      () => reconciler().findMissing());
    // Put them back, as the retry queue would, so the next tests start from a whole event whatever happens here.
    await store.persistCoupons(missing, new Map([[EVENT_ID, Number(await redis.hget(eventKeys(EVENT_ID).meta, 'epoch'))]]));

    expect(missing.sort((a, b) => a.sequence - b.sequence)).toEqual(
      lost.map((n) => ({ eventId: EVENT_ID, userId: userId(n), sequence: n, issuedAtMs: ISSUED_AT_MS + n })),
    );
    expectWithinBudget('reconcile-gap');
  }, 300_000);

  test('when Redis lost the event, then the rebuild installs its holders in chunks without holding Redis, and the gate issues only from the whole state', async () => {
    const keys = eventKeys(EVENT_ID);
    const changed = await measureSteady('rebuild',
      () => redis.unlink(keys.meta, keys.issued, keys.users, keys.outbox),
      () => keeper().restore([EVENT_ID]));

    expect(changed).toEqual({ [EVENT_ID]: 'installed' });
    expect(await redis.hlen(keys.users)).toBe(USERS);
    expect(await redis.get(keys.issued)).toBe(String(USERS));
    expect(await redis.hmget(keys.users, userId(1), userId(USERS), ':restoring')).toEqual([entryOf(1), entryOf(USERS), null]);
    expect(await applyForCoupon(redis, EVENT_ID, userId(USERS - 1), 'again')).toEqual({ kind: 'already_applied', sequence: USERS - 1 });
    expectWithinBudget('rebuild');
  }, 300_000);

  test('when Redis came back without some holders of the event, then the repair merges them in chunks without holding Redis', async () => {
    const keys = eventKeys(EVENT_ID);
    const dropped = [1, 2, Math.floor(USERS / 3), USERS];
    const changed = await measureSteady('repair',
      () => Promise.all([redis.hdel(keys.users, ...dropped.map(userId)), redis.set(keys.issued, String(USERS - 1))]),
      () => keeper().restore([EVENT_ID]));

    expect(changed).toEqual({ [EVENT_ID]: 'merged' });
    expect(await redis.hlen(keys.users)).toBe(USERS);
    expect(await redis.get(keys.issued)).toBe(String(USERS));
    expect(await redis.hmget(keys.users, ...dropped.map(userId))).toEqual(dropped.map(entryOf));
    expectWithinBudget('repair');
  }, 300_000);
});

const round = (ms: number) => Math.round(ms * 100) / 100;

/** Every thread of the process under SCHED_FIFO; false where the kernel or the user may not (then as it is). */
const runRealtime = (pid: number) => new Promise<boolean>((resolve) => {
  execFile('chrt', ['-a', '-f', '-p', '10', String(pid)], (error) => resolve(!error));
});

