import { pino, type Logger } from 'pino';

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
