/**
 * `npm run setup [-- servers deploy-tools fuzz-tools prom-tools chaos-tools]` (node scripts/setup/cli.ts) (all when none is named): what
 * `npm run stack` and `npm test` install on first use, up front. Prints what it did, or that nothing was missing.
 */
import { fileURLToPath } from 'node:url';
import { ensureOrExit, type Needs } from './prerequisites.ts';

const parts = new Set(process.argv.slice(2));
const known = ['servers', 'deploy-tools', 'fuzz-tools', 'prom-tools', 'chaos-tools'];
const unknown = [...parts].filter((part) => !known.includes(part));
if (unknown.length) {
  process.stderr.write(`setup: unknown ${unknown.join(', ')}; usage: npm run setup -- [${known.join('] [')}]\n`);
  process.exit(2);
}
const all = parts.size === 0;
const servers = all || parts.has('servers');
const needs: Needs = {
  redis: servers,
  mysql: servers,
  postgres: servers,
  kits: (['deploy-tools', 'fuzz-tools', 'prom-tools', 'chaos-tools'] as const).filter((kit) => all || parts.has(kit)),
};
const report = await ensureOrExit(needs, { root: fileURLToPath(new URL('../..', import.meta.url)), command: 'npm run setup' });
if (!report.installed.length && !report.kits.length) {
  process.stderr.write(`setup: everything is in place (checked in ${Math.round(report.ms)} ms)\n`);
}
