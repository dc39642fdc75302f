/** Where the throwaway servers listen and what a server URL names: loopback, free ports, host, port and database. */
import { createConnection, createServer } from 'node:net';

/** Every throwaway server binds this address only. */
export const HOST = '127.0.0.1';

/** Ports this process handed out: asked twice in a row, the kernel may give the same free port again. */
const given = new Set<number>();

/** A TCP port on 127.0.0.1 that was free a moment ago, and not handed out by this process before. */
export async function freePort(): Promise<number> {
  for (;;) {
    const port = await probePort();
    if (given.has(port)) continue;
    given.add(port);
    return port;
  }
}

function probePort(): Promise<number> {
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

const DEFAULT_PORTS: Record<string, number> = { 'redis:': 6379, 'rediss:': 6379, 'mysql:': 3306, 'mariadb:': 3306, 'postgres:': 5432, 'postgresql:': 5432 };

export function hostAndPort(url: string): { host: string; port: number } {
  const u = new URL(url);
  const host = u.hostname.replace(/^\[(.*)\]$/, '$1') || HOST;
  const port = u.port ? Number(u.port) : DEFAULT_PORTS[u.protocol];
  if (!port) throw new Error(`no port in ${url} and no default for ${u.protocol}`);
  return { host, port };
}

/** The database a MySQL or PostgreSQL URL names (its path), if any. */
export function databaseName(url: string | undefined): string | undefined {
  if (!url) return undefined;
  const name = decodeURIComponent(new URL(url).pathname.replace(/^\//, ''));
  return name || undefined;
}
