/**
 * The bystander: another service of the shop (orders) sharing the MySQL server. It runs a steady, open-loop
 * stream of small operations, alternating an "order" INSERT and a point SELECT of a recent order, `rate`
 * operations a second on a pool of its own, and records each one's latency measured from when it was due (so a
 * stalled database shows as latency, not as fewer samples). An operation that takes longer than `timeoutMs`
 * counts as an error, as it would time out in the real service.
 *
 * Run as a child process (fork): it starts at once, and on the message "stop" writes its samples to outFile and exits.
 */
import { writeFileSync } from 'node:fs';
import mysql from 'mysql2/promise';

export interface BystanderSpec {
  mysqlUrl: string;
  opsPerSec: number;
  timeoutMs: number;
  outFile: string;
}

export interface BystanderSamples {
  /** epoch ms when each operation was due */
  dueAtMs: number[];
  latencyMs: number[];
  /** 1 when the operation failed or timed out */
  failed: number[];
  kind: Array<'insert' | 'select'>;
}

export const BYSTANDER_TABLE_SQL = `create table if not exists bench_order (
  id bigint unsigned not null auto_increment,
  customer_id varchar(64) not null,
  amount_cents int unsigned not null,
  created_at datetime(3) not null default current_timestamp(3),
  primary key (id),
  key bench_order_customer (customer_id)
) engine = InnoDB`;

async function main(spec: BystanderSpec): Promise<void> {
  const pool = mysql.createPool({ uri: spec.mysqlUrl, connectionLimit: 8 });
  const samples: BystanderSamples = { dueAtMs: [], latencyMs: [], failed: [], kind: [] };
  const intervalMs = 1000 / spec.opsPerSec;
  const now = () => performance.timeOrigin + performance.now();
  let lastOrderId = 0;
  let n = 0;
  let stopping = false;
  const inFlight = new Set<Promise<void>>();

  const operate = (dueAtMs: number, kind: 'insert' | 'select') => {
    const sql = kind === 'insert'
      ? { sql: 'insert into bench_order (customer_id, amount_cents) values (?, ?)', values: [`c${n % 5000}`, 1000 + (n % 9000)] }
      : { sql: 'select id, customer_id, amount_cents, created_at from bench_order where id = ?', values: [lastOrderId] };
    const op = pool.query({ ...sql, timeout: spec.timeoutMs }).then(
      ([result]) => {
        if (kind === 'insert') lastOrderId = Math.max(lastOrderId, Number((result as { insertId: number }).insertId));
        return 0;
      },
      () => 1,
    ).then((failed) => {
      samples.dueAtMs.push(dueAtMs);
      samples.latencyMs.push(now() - dueAtMs);
      samples.failed.push(failed);
      samples.kind.push(kind);
    });
    inFlight.add(op);
    void op.finally(() => inFlight.delete(op));
  };

  const started = now();
  const tick = () => {
    if (stopping) return;
    const t = now();
    // Fire every operation that is due: if the event loop was late, catch up rather than drop the slot.
    while (started + n * intervalMs <= t) {
      operate(started + n * intervalMs, n % 2 === 0 ? 'insert' : 'select');
      n += 1;
    }
    setTimeout(tick, Math.max(0, started + n * intervalMs - now()));
  };
  tick();

  process.on('message', async (message) => {
    if (message !== 'stop') return;
    stopping = true;
    await Promise.allSettled([...inFlight]);
    writeFileSync(spec.outFile, JSON.stringify(samples));
    await pool.end().catch(() => {});
    process.exit(0);
  });
  process.send?.('started');
}

if (import.meta.main) await main(JSON.parse(process.argv[2] ?? '{}') as BystanderSpec);
