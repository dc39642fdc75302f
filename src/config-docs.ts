/**
 * README.md's configuration table, written from SETTINGS in src/config.ts. `node src/config-docs.ts` rewrites it
 * between the two markers; test/unit/config.test.ts fails while the README differs from the table.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { SETTINGS, type Process, type Setting } from './config.ts';

export const TABLE_START = '<!-- settings: generated from src/config.ts by `node src/config-docs.ts`; edit the table there -->';
export const TABLE_END = '<!-- end of settings -->';

const CHART_DEFAULTS = {
  'k8s/deps': 'default: the k8s/deps Service and its password',
  generated: 'default: generated, kept across upgrades',
} as const;

function cell(value: string): string {
  return value.replaceAll('|', '\\|');
}

function code(value: string): string {
  return `\`${value}\``;
}

function defaultCell(setting: Setting): string {
  const processes = Object.keys(setting.byProcess ?? {}) as Process[];
  if (processes.length) {
    const own = setting.readBy.filter((reader) => !processes.includes(reader));
    return [
      `${setting.kind.format(setting.default)} ${own.join(', ')}`,
      ...processes.map((reader) => `${setting.kind.format(setting.byProcess![reader]!.default)} ${reader}`),
    ].join(', ');
  }
  if (setting.default === undefined) return `unset: ${setting.unset ?? 'off'}`;
  const value = setting.kind.format(setting.default);
  return /^\d+$/.test(value) ? value : code(value);
}

function chartCell(setting: Setting): string {
  const paths = [setting.chart, ...Object.values(setting.byProcess ?? {}).map((own) => own.chart)].map(code).join(', ');
  return setting.chartDefault ? `${paths} (${CHART_DEFAULTS[setting.chartDefault]})` : paths;
}

export function settingsTable(): string {
  const rows = Object.values(SETTINGS).map((setting: Setting) =>
    [code(setting.env), defaultCell(setting), setting.kind.allowed, setting.readBy.join(', '), chartCell(setting), setting.doc].map(cell),
  );
  return [
    '| variable | default | accepts | read by | chart value | for |',
    '| --- | --- | --- | --- | --- | --- |',
    ...rows.map((row) => `| ${row.join(' | ')} |`),
  ].join('\n');
}

/** The README with its table replaced by the current one. */
export function withSettingsTable(readme: string): string {
  const start = readme.indexOf(TABLE_START);
  const end = readme.indexOf(TABLE_END);
  if (start < 0 || end < start) throw new Error(`README.md lacks the markers ${TABLE_START} ... ${TABLE_END}`);
  return `${readme.slice(0, start + TABLE_START.length)}\n${settingsTable()}\n${readme.slice(end)}`;
}

if (import.meta.main) {
  const path = new URL('../README.md', import.meta.url);
  const before = readFileSync(path, 'utf8');
  const after = withSettingsTable(before);
  if (after !== before) writeFileSync(path, after);
  console.log(after === before ? 'README.md: the settings table is current' : 'README.md: settings table rewritten');
}
