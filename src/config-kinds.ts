/**
 * The kinds of value a setting holds. A kind parses the variable's trimmed, non-empty text and refuses a bad one
 * with a ConfigError that names the variable (never its value when that may carry a password); it also says,
 * for the docs and the chart's tests, what it accepts and how a value is written back into the environment.
 */

export class ConfigError extends Error {
  override name = 'ConfigError';
}

/** What a kind accepts, as data: test/deploy holds the chart's values.schema.json to it. */
export type Bounds =
  | { readonly type: 'integer'; readonly minimum: number; readonly maximum: number }
  | { readonly type: 'enum'; readonly values: readonly string[] }
  | { readonly type: 'url'; readonly protocols: readonly string[] }
  | { readonly type: 'text'; readonly minLength: number }
  | { readonly type: 'cron' }
  | { readonly type: 'duration'; readonly minimumMs: number; readonly maximumMs: number; readonly pattern: string }
  | { readonly type: 'hostPorts' };

export interface Kind<T> {
  parse(raw: string, name: string): T;
  /** The value as the environment spells it. */
  format(value: T): string;
  /** What is accepted, in a few words for the README. */
  readonly allowed: string;
  readonly bounds: Bounds;
}

export interface HostPort {
  readonly host: string;
  readonly port: number;
}

export function integer(minimum: number, maximum: number): Kind<number> {
  return {
    parse(raw, name) {
      if (!/^\d+$/.test(raw)) throw new ConfigError(`${name} must be a whole number, got "${raw}"`);
      const value = Number(raw);
      if (value < minimum || value > maximum) throw new ConfigError(`${name} must be between ${minimum} and ${maximum}, got ${value}`);
      return value;
    },
    format: String,
    allowed: `${minimum}..${maximum}`,
    bounds: { type: 'integer', minimum, maximum },
  };
}

export function oneOf<const V extends string>(values: readonly V[]): Kind<V> {
  return {
    parse(raw, name) {
      if (!(values as readonly string[]).includes(raw)) throw new ConfigError(`${name} must be one of ${values.join(', ')}, got "${raw}"`);
      return raw as V;
    },
    format: String,
    allowed: values.join(', '),
    bounds: { type: 'enum', values },
  };
}

/** A URL of one of the protocols; the error never repeats the value, which may hold a password. */
export function url(protocols: readonly string[]): Kind<string> {
  return {
    parse(raw, name) {
      let parsed: URL;
      try {
        parsed = new URL(raw);
      } catch {
        throw new ConfigError(`${name} is not a valid URL`);
      }
      if (!protocols.includes(parsed.protocol)) throw new ConfigError(`${name} must use ${protocols.join(' or ')}, got ${parsed.protocol}`);
      return raw;
    },
    format: String,
    allowed: `${protocols.map((protocol) => `${protocol}//`).join(' or ')} URL`,
    bounds: { type: 'url', protocols },
  };
}

export function text(minLength = 1): Kind<string> {
  return {
    parse(raw, name) {
      if (raw.length < minLength) throw new ConfigError(`${name} must be at least ${minLength} characters long`);
      return raw;
    },
    format: String,
    allowed: minLength > 1 ? `${minLength}+ characters` : 'text',
    bounds: { type: 'text', minLength },
  };
}

/** Five cron fields (minute hour day month weekday) of digits, `*`, `/`, `,` and `-`, as pg-boss's schedule takes. */
export function cron(): Kind<string> {
  return {
    parse(raw, name) {
      const fields = raw.split(/\s+/);
      if (fields.length !== 5 || !fields.every((field) => /^[\d*/,-]+$/.test(field))) {
        throw new ConfigError(`${name} must be a five-field cron expression such as "*/5 * * * *", got "${raw}"`);
      }
      return raw;
    },
    format: String,
    allowed: 'five-field cron',
    bounds: { type: 'cron' },
  };
}

/** `host:port[,host:port...]`; an IPv6 host in brackets. */
export function hostPorts(): Kind<readonly HostPort[]> {
  return {
    parse(raw, name) {
      return raw.split(',').map((entry) => {
        const match = /^\s*([^\s:]+|\[[^\]]+\]):(\d{1,5})\s*$/.exec(entry);
        const port = Number(match?.[2]);
        if (!match || port < 1 || port > 65535) throw new ConfigError(`${name} must be host:port[,host:port...], got "${raw}"`);
        return { host: match[1]!.replace(/^\[|\]$/g, ''), port };
      });
    },
    format: (list) => list.map(({ host, port }) => `${host.includes(':') ? `[${host}]` : host}:${port}`).join(','),
    allowed: 'host:port[,host:port...]',
    bounds: { type: 'hostPorts' },
  };
}

const DURATION_UNITS = { d: 86_400_000, h: 3_600_000, m: 60_000, s: 1_000, ms: 1 } as const;

/** A whole number and a unit (ms, s, m, h, d), such as `3d` or `90s`; the value is in milliseconds. */
export function duration(minimumMs: number, maximumMs: number): Kind<number> {
  const format = (ms: number): string => {
    if (ms === 0) return '0s';
    const [unit, size] = Object.entries(DURATION_UNITS).find(([, size]) => ms % size === 0) ?? ['ms', 1];
    return `${ms / size}${unit}`;
  };
  return {
    parse(raw, name) {
      const match = /^(\d+)(ms|s|m|h|d)$/.exec(raw);
      if (!match) throw new ConfigError(`${name} must be a duration such as "3d", "12h", "90s" or "500ms", got "${raw}"`);
      const value = Number(match[1]) * DURATION_UNITS[match[2] as keyof typeof DURATION_UNITS];
      if (value < minimumMs || value > maximumMs) {
        throw new ConfigError(`${name} must be between ${format(minimumMs)} and ${format(maximumMs)}, got ${raw}`);
      }
      return value;
    },
    format,
    allowed: `duration ${format(minimumMs)}..${format(maximumMs)} (ms, s, m, h, d)`,
    bounds: { type: 'duration', minimumMs, maximumMs, pattern: '^\\d+(ms|s|m|h|d)$' },
  };
}
