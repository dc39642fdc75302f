/**
 * The checker: the whole history of one schedule (every answer a client got, every PATCH and read, every fault's
 * time) against what MySQL holds at the end, as the model of what may have happened. Pure: it reads the records
 * and returns the broken promises and the figures, so a unit test can feed it histories of its own.
 */

/** one HTTP exchange a client had; status 0 when no answer came (refused, reset, timed out) */
export interface Attempt {
  event: number;
  userId: string;
  key: string | undefined;
  /** first asks, the replay of a 202's key, the last ask of every user after the faults healed */
  phase: 'load' | 'replay' | 'final';
  startedAt: number;
  answeredAt: number;
  status: number;
  error: string | undefined;
  sequence: number | undefined;
}

export interface PatchRecord {
  event: number;
  change: string;
  /** the quantity asked for, when the change was one */
  quantity: number | undefined;
  startedAt: number;
  answeredAt: number;
  status: number;
  error: string | undefined;
}

/** a fault's time: from its start until the part it hit was back */
export interface FaultWindow {
  what: string;
  from: number;
  until: number;
}

export interface Row {
  userId: string;
  sequence: number;
  issuedAt: number;
  createdAt: number;
}

export interface EventOutcome {
  initialQuantity: number;
  createdAt: number;
  /** MySQL's event row at the end */
  finalQuantity: number;
  rows: Row[];
  /** GET of the event at the end from every api: status, totalQuantity, issued, persisted */
  eventReads: Array<{ status: number; totalQuantity?: number; issued?: number; persisted?: number }>;
  /** GET of each holder's coupon at the end */
  couponReads: Array<{ userId: string; status: number; sequence?: number }>;
}

/** a FLUSHALL: when it had run (returned), and the users each event had in MySQL just before it was sent */
export interface LossRecord {
  at: number;
  persisted: string[][];
}

export interface History {
  attempts: Attempt[];
  patches: PatchRecord[];
  faults: FaultWindow[];
  /**
   * the documented loss: coupons told before a flush, or before a primary came back from older files and kept its
   * role, and not yet in MySQL may be gone (docs/reliability.md, docs/deploy.md)
   */
  losses: LossRecord[];
  events: EventOutcome[];
}

/** a 202's row must exist this long after the last fault touching it ended */
export const PERSIST_AFTER_FAULT_MS = 10_000;
/** how long a raise may take to reach every api's sold-out flag (pub/sub, or the flag's own re-check) */
const RAISE_REACH_MS = 1_000;

export interface Verdict {
  violations: string[];
  figures: {
    answers: Record<string, number>;
    told: number;
    rows: number;
    /** coupons told before a flush or a primary's rewind, not in MySQL then, and gone: the documented loss, counted */
    lostToRedis: number;
    maxToRowMs: number;
    maxToRowAfterFaultMs: number;
  };
}

const toldSequence = (attempt: Attempt): number | undefined =>
  attempt.status === 202 || (attempt.status === 409 && attempt.error === 'already_applied') ? attempt.sequence : undefined;

/** whether the answer tells its user that it holds the coupon of that row (a 409 may leave the sequence out) */
const tellsHolder = (attempt: Attempt, row: Row): boolean =>
  (attempt.status === 202 && attempt.sequence === row.sequence)
  || (attempt.status === 409 && attempt.error === 'already_applied' && (attempt.sequence ?? row.sequence) === row.sequence);

export function checkHistory(history: History): Verdict {
  const violations: string[] = [];
  const answers: Record<string, number> = {};
  let told = 0;
  let rowCount = 0;
  let lostToRedis = 0;
  let maxToRowMs = 0;
  let maxToRowAfterFaultMs = 0;
  for (const attempt of history.attempts) {
    const label = `${attempt.status}${attempt.error ? ` ${attempt.error}` : ''}`;
    answers[label] = (answers[label] ?? 0) + 1;
    if (attempt.status >= 500 && attempt.status !== 503) violations.push(`${attempt.userId} (event ${attempt.event}) answered ${label}`);
    if (attempt.status === 404) violations.push(`${attempt.userId} (event ${attempt.event}): the event answered 404`);
  }

  history.events.forEach((outcome, event) => {
    const attempts = history.attempts.filter((attempt) => attempt.event === event);
    const rowOf = new Map(outcome.rows.map((row) => [row.userId, row]));
    rowCount += outcome.rows.length;
    const where = `event ${event}`;

    // Exactly N, one per user, one per sequence.
    if (outcome.rows.length > outcome.finalQuantity) violations.push(`${where}: ${outcome.rows.length} rows, quantity ${outcome.finalQuantity}`);
    const sequences = new Set(outcome.rows.map((row) => row.sequence));
    if (sequences.size !== outcome.rows.length) violations.push(`${where}: a sequence is held by two users`);
    const overN = outcome.rows.filter((row) => row.sequence < 1 || row.sequence > outcome.finalQuantity);
    if (overN.length) violations.push(`${where}: sequences beyond 1..${outcome.finalQuantity}: ${overN.map((row) => row.sequence).join(', ')}`);

    // A coupon told before a flush and not in MySQL then may be lost with Redis (the documented loss): its user may
    // hold no row, or a later one. Only when the schedule flushed, and counted.
    const mayBeLost = mayBeLostTo(history.losses, event);
    const lostUsers = new Set<string>();
    // Every answer that told a sequence is the row with that sequence.
    const toldUsers = new Set<string>();
    const firstTold = new Map<string, number>();
    for (const attempt of attempts) {
      // A replay of the key that was issued the coupon gets the 202 again.
      // (Not when that 202 may have been lost to a flush: then there is nothing left to replay.)
      if (attempt.key !== undefined && attempt.phase !== 'load' && attempt.status === 409) {
        const issuedWithKey = attempts.some((other) => other.userId === attempt.userId && other.status === 202 && other.key === attempt.key && !mayBeLost(other));
        if (issuedWithKey) violations.push(`${where}: ${attempt.userId} replayed the key of its 202 and heard 409 ${attempt.error}`);
      }
      const sequence = toldSequence(attempt);
      if (sequence === undefined) continue;
      toldUsers.add(attempt.userId);
      if (!firstTold.has(attempt.userId)) firstTold.set(attempt.userId, attempt.answeredAt);
      const row = rowOf.get(attempt.userId);
      if (row?.sequence !== sequence && mayBeLost(attempt)) {
        lostUsers.add(attempt.userId);
        continue;
      }
      if (!row) violations.push(`${where}: ${attempt.userId} was told ${attempt.status} #${sequence} (${attempt.phase}) and holds no row`);
      else if (row.sequence !== sequence) violations.push(`${where}: ${attempt.userId} was told #${sequence} (${attempt.phase}), its row is #${row.sequence}`);
    }
    told += toldUsers.size;
    lostToRedis += lostUsers.size;

    // Every holder was told so by the end: its last ask (after the faults) tells it the sequence.
    for (const row of outcome.rows) {
      const last = attempts.filter((attempt) => attempt.userId === row.userId).at(-1);
      if (!last || !tellsHolder(last, row)) {
        violations.push(`${where}: ${row.userId} holds #${row.sequence} but its last answer was ${last ? `${last.status} ${last.error ?? ''}`.trim() : 'none'}`);
      }
    }

    // A 410 only when the event had no stock: by its answer, as many coupons issued as the lowest quantity then.
    const patches = history.patches.filter((patch) => patch.event === event && patch.quantity !== undefined);
    // (Before a flush, coupons issued then lost are no rows: the count would be short. Those 410s are not judged.)
    const lastFlush = Math.max(-Infinity, ...history.losses.map((loss) => loss.at));
    for (const attempt of attempts.filter((candidate) => candidate.status === 410 && candidate.startedAt > lastFlush)) {
      const lowest = lowestQuantity(outcome.initialQuantity, patches, attempt.startedAt - RAISE_REACH_MS, attempt.answeredAt);
      const issuedBy = outcome.rows.filter((row) => row.issuedAt <= attempt.answeredAt).length;
      if (issuedBy < lowest) violations.push(`${where}: ${attempt.userId} heard 410 with ${issuedBy} of ${lowest} issued`);
    }

    // Reads agree with MySQL.
    for (const read of outcome.eventReads) {
      if (read.status !== 200 || read.totalQuantity !== outcome.finalQuantity || read.issued !== outcome.rows.length || read.persisted !== outcome.rows.length) {
        violations.push(`${where}: GET answered ${JSON.stringify(read)}; MySQL: quantity ${outcome.finalQuantity}, ${outcome.rows.length} rows`);
      }
    }
    for (const read of outcome.couponReads) {
      const row = rowOf.get(read.userId);
      if (read.status !== 200 || read.sequence !== row?.sequence) violations.push(`${where}: GET coupon of ${read.userId} answered ${read.status} #${read.sequence}, its row #${row?.sequence}`);
    }

    // From a 202 to its row: under PERSIST_AFTER_FAULT_MS once no fault holds it back.
    for (const [userId, answeredAt] of firstTold) {
      const row = rowOf.get(userId);
      if (!row || lostUsers.has(userId)) continue;
      const toRowMs = row.createdAt - answeredAt;
      const heldUntil = history.faults
        .filter((fault) => fault.from <= row.createdAt && fault.until >= answeredAt)
        .reduce((latest, fault) => Math.max(latest, fault.until), answeredAt);
      const afterFaultMs = row.createdAt - heldUntil;
      maxToRowMs = Math.max(maxToRowMs, toRowMs);
      maxToRowAfterFaultMs = Math.max(maxToRowAfterFaultMs, afterFaultMs);
      if (afterFaultMs > PERSIST_AFTER_FAULT_MS) violations.push(`${where}: ${userId}'s row came ${Math.round(afterFaultMs)} ms after its 202 (or the fault's end)`);
    }
  });
  return { violations, figures: { answers, told, rows: rowCount, lostToRedis, maxToRowMs: Math.round(maxToRowMs), maxToRowAfterFaultMs: Math.round(maxToRowAfterFaultMs) } };
}

/** Whether an answer of the event may have lost its coupon to a flush or a rewind: asked before it, not in MySQL then. */
export const mayBeLostTo = (losses: LossRecord[], event: number) => (attempt: Attempt): boolean =>
  losses.some((loss) => attempt.startedAt < loss.at && !loss.persisted[event]!.includes(attempt.userId));

/**
 * The lowest quantity the event may have had at some moment of [from, until]: the one set last before `from`
 * (a PATCH answered 200 by then), and any a PATCH may have set meanwhile (answered or not: an unanswered one may
 * have reached the gate).
 */
export function lowestQuantity(initial: number, patches: PatchRecord[], from: number, until: number): number {
  let settled = initial;
  for (const patch of patches) if (patch.status === 200 && patch.answeredAt <= from) settled = patch.quantity!;
  const meanwhile = patches.filter((patch) => (patch.status === 200 || patch.status === 0 || patch.status >= 500)
    && patch.startedAt <= until && !(patch.status === 200 && patch.answeredAt <= from));
  return Math.min(settled, ...meanwhile.map((patch) => patch.quantity!));
}
