/** What the benchmark reads from MySQL: the bench's own tables, the global insert counters, and the coupons' timestamps. */
import { setTimeout as sleep } from 'node:timers/promises';
import mysql from 'mysql2/promise';
import { BYSTANDER_TABLE_SQL } from './bystander.ts';

export type CouponTable = 'coupon' | 'bench_naive_coupon';

/** The naive design's table: the coupon table without unique (event_id, sequence), as the story's entity had none. */
const NAIVE_TABLE_SQL = [
  'create table if not exists bench_naive_coupon like coupon',
  'alter table bench_naive_coupon drop index if exists coupon_event_sequence_unique',
];

export async function prepareTables(pool: mysql.Pool): Promise<void> {
  for (const sql of [...NAIVE_TABLE_SQL, BYSTANDER_TABLE_SQL]) await pool.query(sql);
  // The servers are the benchmark's own: every run starts from empty tables so earlier runs do not weigh on it.
  for (const table of ['coupon', 'coupon_event', 'bench_naive_coupon', 'bench_order']) await pool.query(`truncate table ${table}`);
}

export async function createEventRow(pool: mysql.Pool, id: string, totalQuantity: number): Promise<void> {
  await pool.query('insert into coupon_event (id, name, total_quantity, starts_at) values (?, ?, ?, current_timestamp(3))', [id, `bench ${id}`, totalQuantity]);
}

/** Epoch ms at which each of the event's coupons was written (created_at is set by the database). */
export async function couponWriteTimes(pool: mysql.Pool, table: CouponTable, eventId: string): Promise<number[]> {
  const [rows] = await pool.query(`select unix_timestamp(created_at) * 1000 as t from ${table} where event_id = ?`, [eventId]);
  return (rows as Array<{ t: string }>).map((row) => Number(row.t));
}

export async function countCoupons(pool: mysql.Pool, table: CouponTable, eventId: string): Promise<number> {
  const [rows] = await pool.query(`select count(*) as n from ${table} where event_id = ?`, [eventId]);
  return Number((rows as Array<{ n: number }>)[0]!.n);
}

export interface CounterSample {
  atMs: number;
  rowsInserted: number;
  insertStatements: number;
}

/**
 * Samples MariaDB's global counters every `intervalMs`: Innodb_rows_inserted (rows written, every table) and
 * Com_insert (INSERT statements). Runs on a connection of its own for the whole benchmark.
 */
export class CounterSampler {
  readonly samples: CounterSample[] = [];
  readonly #connection: mysql.Connection;
  readonly #intervalMs: number;
  #timer: NodeJS.Timeout | undefined;
  #busy = false;

  private constructor(connection: mysql.Connection, intervalMs: number) {
    this.#connection = connection;
    this.#intervalMs = intervalMs;
  }

  static async start(mysqlUrl: string, intervalMs: number): Promise<CounterSampler> {
    const sampler = new CounterSampler(await mysql.createConnection({ uri: mysqlUrl }), intervalMs);
    await sampler.#sample();
    sampler.#timer = setInterval(() => void sampler.#sample(), intervalMs);
    return sampler;
  }

  async #sample(): Promise<void> {
    if (this.#busy) return;
    this.#busy = true;
    try {
      const [rows] = await this.#connection.query("show global status where variable_name in ('Innodb_rows_inserted', 'Com_insert')");
      const values = new Map((rows as Array<{ Variable_name: string; Value: string }>).map((row) => [row.Variable_name.toLowerCase(), Number(row.Value)]));
      this.samples.push({
        atMs: performance.timeOrigin + performance.now(),
        rowsInserted: values.get('innodb_rows_inserted') ?? 0,
        insertStatements: values.get('com_insert') ?? 0,
      });
    } finally {
      this.#busy = false;
    }
  }

  /** Rates per second between consecutive samples inside [fromMs, toMs], with t relative to fromMs. */
  rates(fromMs: number, toMs: number): Array<{ t: number; rowsPerSec: number; statementsPerSec: number }> {
    const out: Array<{ t: number; rowsPerSec: number; statementsPerSec: number }> = [];
    for (let i = 1; i < this.samples.length; i += 1) {
      const previous = this.samples[i - 1]!;
      const sample = this.samples[i]!;
      if (sample.atMs < fromMs || previous.atMs > toMs) continue;
      const seconds = (sample.atMs - previous.atMs) / 1000;
      out.push({
        t: Math.round(sample.atMs - fromMs) / 1000,
        rowsPerSec: Math.round((sample.rowsInserted - previous.rowsInserted) / seconds),
        statementsPerSec: Math.round((sample.insertStatements - previous.insertStatements) / seconds),
      });
    }
    return out;
  }

  /** The highest rate over any window of about a second inside [fromMs, toMs]. */
  peakPerSecond(fromMs: number, toMs: number): { rowsPerSec: number; statementsPerSec: number } {
    // A window shorter than a second is widened to one, so a burst of a few hundred ms still gets a rate.
    const widen = Math.max(this.#intervalMs, (1000 - (toMs - fromMs)) / 2 + this.#intervalMs);
    const inside = this.samples.filter((s) => s.atMs >= fromMs - widen && s.atMs <= toMs + widen);
    let rows = 0;
    let statements = 0;
    for (let i = 0, j = 0; i < inside.length; i += 1) {
      while (j < i && inside[i]!.atMs - inside[j + 1]!.atMs >= 1000) j += 1;
      const seconds = (inside[i]!.atMs - inside[j]!.atMs) / 1000;
      if (seconds < 0.9) continue;
      rows = Math.max(rows, (inside[i]!.rowsInserted - inside[j]!.rowsInserted) / seconds);
      statements = Math.max(statements, (inside[i]!.insertStatements - inside[j]!.insertStatements) / seconds);
    }
    return { rowsPerSec: Math.round(rows), statementsPerSec: Math.round(statements) };
  }

  async stop(): Promise<void> {
    clearInterval(this.#timer);
    await this.#connection.end().catch(() => {});
  }
}

/** Polls until the event has `expected` coupons in `table`; returns the count, or throws after timeoutMs. */
export async function waitForCount(pool: mysql.Pool, table: CouponTable, eventId: string, expected: number, timeoutMs = 120_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const count = await countCoupons(pool, table, eventId);
    if (count >= expected) return count;
    if (Date.now() > deadline) throw new Error(`${eventId}: ${count} of ${expected} coupons in ${table} after ${timeoutMs / 1000} s`);
    await sleep(100);
  }
}
