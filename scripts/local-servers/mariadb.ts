/** A throwaway MariaDB server, the local stand-in for MySQL, and the database it serves. */
import { mkdir } from 'node:fs/promises';
import { userInfo } from 'node:os';
import { join } from 'node:path';
import mysql from 'mysql2/promise';
import { HOST, databaseName, hostAndPort } from './addresses.ts';
import { type ServerProcess, initialiseOnce } from './leftovers.ts';
import { type LocalServer, serverPlace, startManagedServer } from './managed-server.ts';
import { binary, runToCompletion } from './processes.ts';

export const MARIADB_PROCESS: ServerProcess = { pidFile: 'mariadbd.pid', processName: 'mariadbd', stopSignal: 'SIGTERM' };

export async function startMariadb(opts: { dir: string; port?: number; database?: string }): Promise<LocalServer> {
  const { dir, port } = await serverPlace(opts);
  const database = opts.database ?? 'coupon';
  const dataDir = join(dir, 'data');
  // Its own folder for temporary tables, not the shared /tmp: a CI run failed when a temporary file of
  // mariadb-install-db vanished from /tmp under it ("Error on delete of '/tmp/#sql-temptable-...'").
  const tmpDir = join(dir, 'tmp');
  const logFile = join(dir, 'mariadb.log');
  // mariadbd refuses root unless told to run as root; as anyone else --user is only a no-op warning.
  const user = userInfo().username;
  await mkdir(tmpDir, { recursive: true });
  await initialiseOnce(dir, dataDir, 'mariadb', logFile, async () => {
    await mkdir(dataDir, { recursive: true });
    await runToCompletion('mariadb', binary('mariadb-install-db'), [
      '--no-defaults', `--user=${user}`, `--datadir=${dataDir}`, `--tmpdir=${tmpDir}`, '--auth-root-authentication-method=normal',
      '--skip-test-db',
    ], { logFile });
  });
  const url = `mysql://root@${HOST}:${port}/${encodeURIComponent(database)}`;
  return startManagedServer({
    kind: 'mariadb',
    url,
    port,
    dir,
    logFile,
    process: MARIADB_PROCESS,
    command: binary('mariadbd'),
    args: [
      '--no-defaults', `--user=${user}`, `--datadir=${dataDir}`, `--tmpdir=${tmpDir}`, `--socket=${join(dir, 'mariadbd.sock')}`,
      `--pid-file=${join(dir, MARIADB_PROCESS.pidFile)}`, `--port=${port}`, `--bind-address=${HOST}`, '--skip-name-resolve',
      '--max-connections=500', '--innodb-flush-log-at-trx-commit=2',
    ],
    probe: () => withMysql(url, async (connection) => { await connection.query('SELECT 1'); }),
    afterReady: () => ensureMysqlDatabase(url),
  });
}

/** Creates the database the URL names, if it names one and it is missing. */
export async function ensureMysqlDatabase(url: string): Promise<void> {
  const database = databaseName(url);
  if (!database) return;
  await withMysql(url, async (connection) => {
    await connection.query(`CREATE DATABASE IF NOT EXISTS \`${database.replaceAll('`', '``')}\``);
  });
}

/** One connection to the server (no database selected) for the length of `run`. */
async function withMysql(url: string, run: (connection: mysql.Connection) => Promise<void>): Promise<void> {
  const u = new URL(url);
  const { host, port } = hostAndPort(url);
  const connection = await mysql.createConnection({
    host,
    port,
    user: decodeURIComponent(u.username) || 'root',
    password: decodeURIComponent(u.password),
    connectTimeout: 2000,
  });
  try {
    await run(connection);
  } finally {
    await connection.end().catch(() => connection.destroy());
  }
}
