/**
 * Runs one schedule on the topology: creates its events, lets its clients apply while its steps run at their
 * offsets, heals the topology, lets every user ask once more (as a client whose answer was lost would), waits for
 * the worker to persist what was told, reads MySQL and the api's answers, and hands the history to the checker.
 */
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import mysql from 'mysql2/promise';
import {
  type Attempt, type EventOutcome, type FaultWindow, type LossRecord, type History, type PatchRecord, type Verdict, checkHistory, mayBeLostTo,
} from './check.ts';
import { type EventPlan, type Schedule, type Step } from './schedule.ts';
import { ADMIN_TOKEN, type ChaosTopology } from './topology.ts';

/** a client keeps asking again after a 503 or a lost answer until this long after the load */
const CLIENT_PATIENCE_MS = 15_000;
const REQUEST_TIMEOUT_MS = 5_000;
/** how long each user's last ask, after the topology healed, keeps asking again after a 503 or no answer */
const FINAL_PATIENCE_MS = 30_000;
/** the worker's time to persist every told coupon once the topology is healed */
const PERSIST_WAIT_MS = 60_000;

export interface RunResult {
  verdict: Verdict;
  history: History;
  eventIds: string[];
  durationMs: number;
}

interface Answer {
  status: number;
  body: Record<string, unknown>;
}

async function send(url: string, init: { method?: string; body?: unknown; key?: string; admin?: boolean } = {}): Promise<Answer> {
  const headers: Record<string, string> = { connection: 'close' };
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  if (init.key) headers['idempotency-key'] = init.key;
  if (init.admin) headers.authorization = `Bearer ${ADMIN_TOKEN}`;
  try {
    const response = await fetch(url, {
      method: init.method ?? (init.body === undefined ? 'GET' : 'POST'), headers,
      body: init.body === undefined ? undefined : JSON.stringify(init.body), signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const text = await response.text();
    let body: Record<string, unknown> = {};
    try {
      body = JSON.parse(text) as Record<string, unknown>;
    } catch {
      body = { text };
    }
    return { status: response.status, body };
  } catch {
    return { status: 0, body: {} };
  }
}

export async function runSchedule(topology: ChaosTopology, schedule: Schedule): Promise<RunResult> {
  const pool = mysql.createPool({ uri: topology.mysqlUrl, connectionLimit: 2, timezone: 'Z' });
  try {
    return await runOn(topology, schedule, pool);
  } finally {
    await pool.end();
  }
}

async function runOn(topology: ChaosTopology, schedule: Schedule, pool: mysql.Pool): Promise<RunResult> {
  const started = Date.now();
  const apis = topology.apiUrls;
  const tag = randomBytes(3).toString('hex');
  const eventIds = schedule.events.map((_, index) => `chaos-${tag}-${index}`);
  const attempts: Attempt[] = [];
  const patches: PatchRecord[] = [];
  const faults: FaultWindow[] = [];
  const losses: LossRecord[] = [];

  // Healed once more before it starts: the last heal may be a while ago (the final asks, the check), and a topology
  // can change by itself meanwhile (Sentinel acting on what a fault left: a node that went on as a primary of its
  // own); a schedule must start from a sound one, or it is judged for the one before.
  await topology.heal();
  for (const [index, plan] of schedule.events.entries()) {
    const created = await send(`${apis[0]}/v1/events`, { body: { id: eventIds[index], name: eventIds[index], totalQuantity: plan.quantity }, admin: true });
    if (created.status !== 201) throw new Error(`creating ${eventIds[index]} answered ${created.status} ${JSON.stringify(created.body)}`);
  }
  topology.focus(eventIds[0]!);
  const createdAt = Date.now();
  const loadStart = Date.now();
  const giveUpAt = loadStart + schedule.loadMs + CLIENT_PATIENCE_MS;

  const ask = async (event: number, userId: string, key: string | undefined, phase: Attempt['phase'], api: number): Promise<Attempt> => {
    const startedAt = Date.now();
    const answer = await send(`${apis[api % apis.length]}/v1/events/${eventIds[event]}/apply`, { body: { userId }, key });
    const attempt: Attempt = {
      event, userId, key, phase, startedAt, answeredAt: Date.now(), status: answer.status,
      error: typeof answer.body.error === 'string' ? answer.body.error : undefined,
      sequence: typeof answer.body.sequence === 'number' ? answer.body.sequence : undefined,
    };
    attempts.push(attempt);
    return attempt;
  };

  /** the Idempotency-Key a user's client sends on every ask (the first `withKey` share of the users have one) */
  const keyOf = (event: number, plan: EventPlan, user: number) => (user < plan.users * plan.withKey ? `key-${tag}-${event}-${user}` : undefined);

  /** one user's client: asks, asks again after a 503 or no answer (backing off), replays its key after a 202 */
  const client = async (event: number, plan: EventPlan, user: number) => {
    const userId = `u${user}`;
    const key = keyOf(event, plan, user);
    await sleep(((user * 7919) % plan.users) / plan.users * schedule.loadMs);
    for (let attempt = 0; ; attempt++) {
      const answer = await ask(event, userId, key, 'load', user + attempt);
      if (answer.status === 202 && key) {
        await sleep(300);
        await ask(event, userId, key, 'replay', user + attempt + 1);
      }
      if ((answer.status !== 503 && answer.status !== 0) || Date.now() > giveUpAt) return;
      await sleep(Math.min(2_000, 200 * 2 ** attempt) * (0.5 + ((user * 31 + attempt) % 10) / 20));
    }
  };

  /** each event's users with a row now; undefined while MySQL is away */
  const persistedUsers = () => Promise.all(eventIds.map(async (eventId) => {
    const [rows] = await pool.query('select user_id from coupon where event_id = ?', [eventId]) as unknown as [Array<{ user_id: string }>];
    return rows.map((row) => row.user_id);
  })).catch(() => undefined);

  const runStep = async (step: Step) => {
    await sleep(Math.max(0, loadStart + (step.at / 1000) * schedule.loadMs - Date.now()));
    const from = Date.now();
    const window = (what: string) => faults.push({ what, from, until: Date.now() });
    switch (step.kind) {
      case 'kill': await topology.kill(step.target, step.downMs); return window(`kill ${step.target}`);
      case 'pause': await topology.pause(step.target, step.forMs); return window(`pause ${step.target}`);
      case 'outage': await topology.outage(step.target, step.downMs); return window(`outage ${step.target}`);
      case 'partition': await topology.partition(step.target, step.forMs); return window(`partition ${step.target}`);
      case 'drop': await topology.dropOneWay(step.target, step.direction, step.forMs); return window(`drop ${step.direction} ${step.target}`);
      case 'cut': {
        const cut = await topology.cut(step.client, step.server, step.forMs, step.way);
        return window(`cut ${step.client} from ${step.server}${cut ? '' : ' (skipped: no cgroup v2 here)'}`);
      }
      case 'replication': {
        const cut = await topology.cutReplication(step.forMs);
        return window(`replication cut${cut ? '' : ' (skipped: no replica linked)'}`);
      }
      case 'delay': {
        const delayed = await topology.delay(step.target, step.ms, step.forMs);
        return window(`delay ${step.target}${delayed ? '' : ' (skipped: no delay tool here)'}`);
      }
      case 'loss': await topology.loss(step.target, step.percent, step.forMs); return window(`loss ${step.target}`);
      case 'flush': {
        // What MySQL holds just before: a coupon told and not in it may go with the flush (the documented loss).
        const persisted = await persistedUsers();
        if (!persisted) return; // MySQL away (another step): no flush, rather than one whose loss cannot be counted
        // FLUSHALL to a primary that is down (another step) fails, but may have run if only its answer was lost.
        const failed = await topology.flush().then(() => '', (error: unknown) => ` (failed: ${String(error)})`);
        // An apply that started before the flush returned may have been issued before it ran: it may be lost.
        losses.push({ at: Date.now(), persisted });
        await sleep(2_000); // the restore from MySQL: count it as the fault's time
        return window(`flush${failed}`);
      }
      case 'rewind': {
        // A primary back from older files before Sentinel's down-after stays primary, and its replica syncs from
        // it again, dropping what it had acknowledged (GATE_MIN_REPLICAS=1 cannot keep it): like a flush, the
        // coupons told and not in MySQL when the files were copied may be lost (docs/deploy.md, the documented
        // loss). Not so for a replica rewound, nor for a primary replaced meanwhile: nothing may be lost then.
        const persisted = await persistedUsers();
        if (!persisted) return; // MySQL away (another step): no rewind, rather than one whose loss cannot be counted
        const stayedPrimary = await topology.rewind(step.target, step.agoMs);
        if (stayedPrimary) losses.push({ at: Date.now(), persisted });
        return window(`rewind ${step.target}`);
      }
      case 'move': {
        // An operator's reshard meeting a node that is down (another step) stops half way, as redis-cli's would:
        // the slot is left half moved until heal() runs `redis-cli --cluster fix`.
        const failed = await topology.move(step.pauseMs).then(() => '', (error: unknown) => ` (cut short: ${String(error)})`);
        return window(`move${failed}`);
      }
      case 'failover': {
        await topology.failover();
        await sleep(3_000); // the promotion and the clients' switch take a few seconds: count them as the fault's time
        return window('failover');
      }
      case 'patch': return patches.push(await patch(step));
      case 'read': {
        const holder = attempts.find((attempt) => attempt.event === step.event && attempt.status === 202);
        await Promise.all([
          send(`${apis[0]}/v1/events/${eventIds[step.event]}`),
          holder ? send(`${apis[1]}/v1/events/${eventIds[step.event]}/coupons/${holder.userId}`) : undefined,
        ]);
      }
    }
  };

  const patch = async (step: Extract<Step, { kind: 'patch' }>): Promise<PatchRecord> => {
    const url = `${apis[step.at % apis.length]}/v1/events/${eventIds[step.event]}`;
    const current = await send(url);
    const total = typeof current.body.totalQuantity === 'number' ? current.body.totalQuantity : schedule.events[step.event]!.quantity;
    const body = {
      raise: { totalQuantity: total + step.by },
      lower: { totalQuantity: Math.max(1, total - step.by) },
      pause: { paused: true },
      resume: { paused: false },
      end: { endsAt: new Date(Date.now() + 500).toISOString() },
    }[step.change];
    const startedAt = Date.now();
    const answer = await send(url, { method: 'PATCH', body, admin: true });
    return {
      event: step.event, change: step.change, quantity: 'totalQuantity' in body ? body.totalQuantity : undefined, startedAt,
      answeredAt: Date.now(), status: answer.status, error: typeof answer.body.error === 'string' ? answer.body.error : undefined,
    };
  };

  await Promise.all([
    ...schedule.events.flatMap((plan, event) => Array.from({ length: plan.users }, (_, user) => client(event, plan, user))),
    ...schedule.steps.map(runStep),
  ]);
  await topology.heal();

  // Every user asks once more, with its key: a holder must hear its sequence (202 replayed or 409), whatever
  // it heard before; a client whose last answer was lost or 503 asks until it hears something definite.
  await Promise.all(schedule.events.flatMap((plan, event) => Array.from({ length: plan.users }, async (_, user) => {
    const key = keyOf(event, plan, user);
    // Up to FINAL_PATIENCE_MS: a process healed a moment ago may still be reconnecting or resyncing a replica.
    for (const giveUpAt = Date.now() + FINAL_PATIENCE_MS; ;) {
      const answer = await ask(event, `u${user}`, key, 'final', user);
      if ((answer.status !== 503 && answer.status !== 0) || Date.now() > giveUpAt) return;
      await sleep(500);
    }
  })));

  const events: EventOutcome[] = [];
  for (const [event, plan] of schedule.events.entries()) {
    // Coupons told before a flush and not in MySQL then may never come (the documented loss): not waited for.
    const mayBeLost = mayBeLostTo(losses, event);
    const rows = await settledRows(pool, eventIds[event]!, attempts.filter((attempt) => attempt.event === event && !mayBeLost(attempt)));
    const [[eventRow]] = await pool.query('select total_quantity from coupon_event where id = ?', [eventIds[event]]) as unknown as [[{ total_quantity: number }]];
    const eventReads = await Promise.all(apis.map(async (api) => {
      const read = await send(`${api}/v1/events/${eventIds[event]}`);
      return { status: read.status, totalQuantity: read.body.totalQuantity as number, issued: read.body.issued as number, persisted: read.body.persisted as number };
    }));
    const couponReads = await Promise.all(rows.map(async (row, index) => {
      const read = await send(`${apis[index % apis.length]}/v1/events/${eventIds[event]}/coupons/${row.userId}`);
      return { userId: row.userId, status: read.status, sequence: read.body.sequence as number | undefined };
    }));
    events.push({ initialQuantity: plan.quantity, createdAt, finalQuantity: Number(eventRow?.total_quantity), rows, eventReads, couponReads });
  }
  const history: History = { attempts, patches, faults, losses, events };
  return { verdict: checkHistory(history), history, eventIds, durationMs: Date.now() - started };
}

/** MySQL's rows of the event once every told coupon is there and the count held still for 2 s (or the wait ends). */
async function settledRows(pool: mysql.Pool, eventId: string, attempts: Attempt[]): Promise<EventOutcome['rows']> {
  const told = new Set(attempts.filter((attempt) => attempt.status === 202 || attempt.error === 'already_applied').map((attempt) => attempt.userId));
  const deadline = Date.now() + PERSIST_WAIT_MS;
  let last = -1;
  let stillSince = Date.now();
  while (true) {
    const [rows] = await pool.query(
      'select user_id, sequence, issued_at, created_at from coupon where event_id = ? order by sequence', [eventId],
    ) as unknown as [Array<{ user_id: string; sequence: number; issued_at: Date; created_at: Date }>];
    if (rows.length !== last) {
      last = rows.length;
      stillSince = Date.now();
    }
    const held = new Set(rows.map((row) => row.user_id));
    const complete = [...told].every((userId) => held.has(userId));
    if ((complete && Date.now() - stillSince >= 2_000) || Date.now() > deadline) {
      return rows.map((row) => ({ userId: row.user_id, sequence: row.sequence, issuedAt: row.issued_at.getTime(), createdAt: row.created_at.getTime() }));
    }
    await sleep(250);
  }
}
