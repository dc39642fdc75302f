/**
 * Issue 20: generated fault schedules against a model. `npm run chaos` (scripts/chaos/) on a budget: every kept
 * regression schedule (scripts/chaos/regressions/) first, then schedules generated from a seed for
 * CHAOS_MINUTES (2 here; `npm run chaos -- --minutes 60` for a long run), each on the real topology (Redis
 * primary + replica + Sentinel, MariaDB, PostgreSQL, 2 apis, 2 workers) and checked against the whole history;
 * then the same for CHAOS_CLUSTER_MINUTES (1 here) on the Cluster profile (`npm run chaos -- --cluster`: 3 shards
 * with a replica each, slot moves among the faults).
 * The seeds are fixed (CHAOS_SEED, default below) so a failure here replays with `npm run chaos -- --seed S`;
 * fresh seeds are for `npm run chaos`, which prints its own.
 * A schedule that breaks is run once more here (rerunFailures): it fails the test if it breaks again; one that then
 * holds is printed and kept in .chaos/ (look into it with `npm run chaos -- --replay FILE`), not failed on. On CI's
 * 2 shared cores, timings the schedule does not set (how long a replica stays away against how long the clients
 * keep asking) broke schedules that then held on every replay. The price: a break that shows one run in four (as
 * the sold-out flag's did, docs/reliability.md) fails CI about one run in sixteen, and is printed in every other.
 */
import { type ChaosOptions, runChaos } from '../../scripts/chaos/main.ts';

const SEED = Number(process.env.CHAOS_SEED ?? 20_261_206);
const MINUTES = Number(process.env.CHAOS_MINUTES ?? 2);
const CLUSTER_MINUTES = Number(process.env.CHAOS_CLUSTER_MINUTES ?? 1);

async function holds(options: Omit<ChaosOptions, 'log' | 'shrink' | 'regressions'>): Promise<void> {
  const lines: string[] = [];
  const summary = await runChaos({ ...options, regressions: true, shrink: false, rerunFailures: true, log: (line) => lines.push(line) });
  console.log(lines.join('\n'));
  console.log(`[chaos figures] ${JSON.stringify({ profile: options.profile ?? 'sentinel', ...summary, failures: summary.failures.length, unreproduced: summary.unreproduced.length })}`);
  for (const once of summary.unreproduced) console.warn(`[chaos] broke once, held when run again: ${once.source} (${once.file}): ${once.violations.slice(0, 3).join('; ')}`);
  expect(summary.schedules).toBeGreaterThan(1);
  expect(summary.failures.map((failure) => ({ source: failure.source, violations: failure.violations.slice(0, 5) }))).toEqual([]);
}

test(`generated fault schedules (seed ${SEED}, ${MINUTES} min) and the kept regressions keep every promise`, async () => {
  await holds({ seed: SEED, minutes: MINUTES });
}, (MINUTES * 2 + 6) * 60_000);

test(`on a Redis Cluster: generated fault schedules with slot moves (seed ${SEED}, ${CLUSTER_MINUTES} min) keep every promise`, async () => {
  await holds({ seed: SEED, minutes: CLUSTER_MINUTES, profile: 'cluster' });
}, (CLUSTER_MINUTES * 2 + 6) * 60_000);
