import { pino, type Logger } from 'pino';
import type { RedisTarget } from './config.ts';

export type { Logger };

/** pino, with every place a secret could appear redacted. */
export function createLogger(level: string, name: string): Logger {
  return pino({
    name,
    level,
    redact: {
      paths: ['req.headers.authorization', 'headers.authorization', 'authorization', 'token', 'adminToken', '*.password', 'url'],
      censor: '[redacted]',
    },
  });
}

/** A URL safe to log: the password, if any, is replaced. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = '***';
    return parsed.toString();
  } catch {
    return '[unparseable url]';
  }
}

/** Where Redis is, safe to log: the URL, the Sentinels and master name, or the Cluster's seed nodes. */
export function describeRedis(target: RedisTarget): string {
  const hosts = (nodes: ReadonlyArray<{ host: string; port: number }>) =>
    nodes.map(({ host, port }) => `${host}:${port}`).join(',');
  if (target.kind === 'sentinel') return `sentinel master ${target.masterName} via ${hosts(target.sentinels)}`;
  if (target.kind === 'cluster') return `cluster ${hosts(target.nodes)}`;
  return redactUrl(target.url);
}
