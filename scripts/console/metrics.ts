/**
 * The few Prometheus figures the console reads from a process's /metrics (text exposition format): samples by
 * name with their labels. Enough for counters and gauges; no timestamps, no exemplars.
 */
export interface Sample { name: string; labels: Record<string, string>; value: number }

const LINE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

export function parseMetrics(text: string): Sample[] {
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = LINE.exec(line);
    if (!match) continue;
    const labels: Record<string, string> = {};
    for (const [, key, value] of (match[2] ?? '').matchAll(LABEL)) labels[key!] = value!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    samples.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return samples;
}

/** GET <base>/metrics, parsed; undefined when the process cannot be reached (the console shows "-"). */
export async function scrape(baseUrl: string): Promise<Sample[] | undefined> {
  try {
    const response = await fetch(new URL('/metrics', baseUrl), { signal: AbortSignal.timeout(3_000) });
    return response.ok ? parseMetrics(await response.text()) : undefined;
  } catch {
    return undefined;
  }
}

export const sum = (samples: Sample[], name: string, match: (labels: Record<string, string>) => boolean = () => true): number =>
  samples.filter((s) => s.name === name && match(s.labels)).reduce((total, s) => total + s.value, 0);
