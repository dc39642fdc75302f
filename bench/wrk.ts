/**
 * wrk (C, one thread, keep-alive connections) as the benchmarks run it: a POST with a JSON body per request, each
 * from a new user, and a JSON line of figures at the end; several runs sent at once add up with wrkTotals.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/** What the wrk runs of one case did together (wrkTotals). */
export interface WrkTotals {
  requests: number;
  rps: number;
  p50Us: number;
  p99Us: number;
  /** answers other than the case's expected status (202, or 410 for sold-out), and socket errors */
  unexpected: number;
}

/** One wrk run of `seconds` against url + path, each request from a new user (`label` keeps them unique). */
export async function wrkBurst(ctx: { workDir: string }, run: {
  url: string; path: string; seconds: number; connections: number; label: string; expectedStatus: number; pinned: boolean;
}): Promise<WrkResult> {
  const script = join(ctx.workDir, `wrk-${run.label}.lua`);
  await writeFile(script, wrkScript(`${run.label}-`, run.expectedStatus));
  const args = ['-t1', `-c${run.connections}`, `-d${run.seconds}s`, '--timeout', '2s', '-s', script, `${run.url}${run.path}`];
  // Pinned, wrk runs on core 0 with Redis; the servers have the other core.
  return runWrk(run.pinned ? ['taskset', '-c', '0', 'wrk', ...args] : ['wrk', ...args]);
}

/**
 * A wrk script: POST with a JSON body from a new user each time (the prefix keeps users unique across runs), and
 * a JSON line at the end. wrk counts non-2xx/3xx answers as status errors; for the sold-out case, where every
 * answer should be a 410, the unexpected ones are the requests that were not counted so.
 */
function wrkScript(userPrefix: string, expectedStatus: number): string {
  return `
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{"userId":"${userPrefix}' .. n .. '"}')
end
done = function(summary, latency, requests)
  local e = summary.errors
  local sockets = e.connect + e.read + e.write + e.timeout
  local unexpected = ${expectedStatus < 300 ? 'e.status' : 'summary.requests - e.status'} + sockets
  io.write(string.format('{"requests":%d,"us":%d,"p50":%d,"p99":%d,"unexpected":%d}\\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), unexpected))
end
`;
}

/** Runs sent at once, together: the sum of their rates, the worst of their percentiles (which cannot be merged). */
export function wrkTotals(results: WrkResult[]): WrkTotals {
  return {
    requests: results.reduce((sum, r) => sum + r.requests, 0),
    rps: Math.round(results.reduce((sum, r) => sum + r.requests / r.seconds, 0)),
    p50Us: Math.max(...results.map((r) => r.p50Us)),
    p99Us: Math.max(...results.map((r) => r.p99Us)),
    unexpected: results.reduce((sum, r) => sum + r.unexpected, 0),
  };
}

interface WrkResult {
  requests: number;
  seconds: number;
  p50Us: number;
  p99Us: number;
  unexpected: number;
}

async function runWrk(command: string[]): Promise<WrkResult> {
  const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'pipe', 'inherit'] });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => { output += chunk.toString(); });
  // 'close', not 'exit': the process may exit before the last of its stdout has been read.
  const [code] = await once(child, 'close');
  const line = output.split('\n').find((l) => l.startsWith('{"requests"'));
  if (code !== 0 || !line) throw new Error(`wrk failed (exit ${code}):\n${output}`);
  const parsed = JSON.parse(line) as { requests: number; us: number; p50: number; p99: number; unexpected: number };
  return { requests: parsed.requests, seconds: parsed.us / 1e6, p50Us: parsed.p50, p99Us: parsed.p99, unexpected: parsed.unexpected };
}
