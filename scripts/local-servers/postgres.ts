/**
 * A throwaway PostgreSQL server and the database it serves. As root, initdb and postgres run as the system user
 * `postgres`, which must own the data dir and be able to reach it.
 */
import { chmod, chown, mkdir, readFile, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { HOST, databaseName, hostAndPort } from './addresses.ts';
import { type ServerProcess, initialiseOnce } from './leftovers.ts';
import { type LocalServer, serverPlace, startManagedServer } from './managed-server.ts';
import { runToCompletion } from './processes.ts';

const POSTGRES_BIN = '/usr/lib/postgresql/15/bin';

// SIGTERM is "smart" shutdown, which waits for every client to leave; SIGINT disconnects them.
export const POSTGRES_PROCESS: ServerProcess = { pidFile: join('data', 'postmaster.pid'), processName: 'postgres', stopSignal: 'SIGINT' };

export async function startPostgres(opts: { dir: string; port?: number; database?: string }): Promise<LocalServer> {
  const { dir, port } = await serverPlace(opts);
  const database = opts.database ?? 'coupon_jobs';
  const dataDir = join(dir, 'data');
  const logFile = join(dir, 'postgres.log');
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
  return startManagedServer({
    kind: 'postgres',
    url,
    port,
    dir,
    logFile,
    process: POSTGRES_PROCESS,
    command: join(POSTGRES_BIN, 'postgres'),
    args: [
      '-D', dataDir, '-p', String(port), '-c', `listen_addresses=${HOST}`, '-k', dataDir, '-c', 'fsync=off',
      '-c', 'max_connections=200',
    ],
    runAs,
    cwd: dir,
    probe: () => withPostgres(url, async (client) => { await client.query('SELECT 1'); }),
    afterReady: () => ensurePostgresDatabase(url),
  });
}

/** Creates the database the URL names, if it names one and it is missing. */
export function ensurePostgresDatabase(url: string): Promise<void> {
  const database = databaseName(url);
  if (!database) return Promise.resolve();
  return withPostgres(url, async (client) => {
    const found = await client.query('SELECT 1 FROM pg_database WHERE datname = $1', [database]);
    if (found.rowCount) return;
    try {
      await client.query(`CREATE DATABASE "${database.replaceAll('"', '""')}"`);
    } catch (err) {
      // Two starters racing for the same database: the loser finds it exists, which is what it wanted.
      // (PostgreSQL says so as 42P04, or, when both got past the check at once, as a unique violation, 23505.)
      if (!['42P04', '23505'].includes((err as { code?: string }).code ?? '')) throw err;
    }
  });
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

/** One client on the server's `postgres` database for the length of `run`. */
async function withPostgres(url: string, run: (client: PgClient) => Promise<void>): Promise<void> {
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
    await run(client);
  } finally {
    await client.end().catch(() => {});
  }
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
