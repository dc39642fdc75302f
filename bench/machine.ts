/** Facts about the machine and the software under test, recorded with every report. */
import { createRequire } from 'node:module';
import { cpus, loadavg, release, totalmem } from 'node:os';
import type { Cluster, Redis } from 'ioredis';
import type mysql from 'mysql2/promise';

export interface MachineFacts {
  cpus: number;
  cpuModel: string;
  memoryGiB: number;
  os: string;
  node: string;
  redis: string;
  mariadb: string;
  autocannon: string;
  loadAverage1mAtStart: number;
  note: string;
}

const require = createRequire(import.meta.url);

export async function machineFacts(redis: Redis | Cluster, pool: mysql.Pool): Promise<MachineFacts> {
  const info = await redis.info('server');
  const [rows] = await pool.query('select version() as version');
  return {
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    memoryGiB: Math.round(totalmem() / 2 ** 30),
    os: `${process.platform} ${release()}`,
    node: process.version,
    redis: /redis_version:(\S+)/.exec(info)?.[1] ?? 'unknown',
    mariadb: String((rows as Array<{ version: string }>)[0]?.version ?? 'unknown'),
    autocannon: (require('autocannon/package.json') as { version: string }).version,
    loadAverage1mAtStart: Math.round(loadavg()[0]! * 100) / 100,
    note: process.env.BENCH_MACHINE_NOTE ?? '',
  };
}
