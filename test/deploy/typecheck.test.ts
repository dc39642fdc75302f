/**
 * The image's build stage runs `tsc --noEmit -p tsconfig.build.json` (Node 24 then runs the TypeScript itself).
 * No Docker engine runs here, so the same step runs in the suite: a type error fails CI, not a later image build.
 * The second run covers everything else the project type-checks: tests, scripts and the benchmark.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from './tools.ts';

const tsc = join(repoRoot, 'node_modules', '.bin', 'tsc');

test.each([
  ['tsconfig.build.json', 'the image build step (src and worker)'],
  ['tsconfig.json', 'the whole project (tests, scripts, bench too)'],
])('when %s is type-checked, as for %s, then tsc reports no error', (project) => {
  const result = spawnSync(tsc, ['--noEmit', '-p', project], { cwd: repoRoot, encoding: 'utf8', timeout: 120_000 });
  expect(`${result.stdout}${result.stderr}`).toBe('');
  expect(result.status).toBe(0);
}, 130_000);
