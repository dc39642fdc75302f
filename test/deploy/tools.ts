/**
 * Runs the Kubernetes tool chain that scripts/install-k8s-tools.sh puts under .tools/ (helm, kubeconform, helm-docs,
 * helm-unittest, hadolint, yamllint, check-jsonschema and the offline schemas). `npm test` installs it before the
 * tests that use it run (test/support/global-setup.ts, through scripts/setup: a test that imports run, toolPath,
 * kubeconformArgs or skaffoldSchemaPath from here is one). A missing tool is a test failure with the command that
 * installs it, never a skip: CI must not pass without these checks.
 * promtool (scripts/install-prom-tools.sh) is a kit of its own: only a test that imports runPromtool installs it.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type DeployTool, deployToolPath, promtoolPath, toolsDir as toolsDirOf } from '../../scripts/setup/tools.ts';

export const repoRoot = fileURLToPath(new URL('../..', import.meta.url));
export const chartDir = join(repoRoot, 'charts', 'coupon');
const toolsDir = toolsDirOf(repoRoot);

/** Kubernetes version whose schemas kubeconform validates against (the installer's K8S_SCHEMA_VERSION). */
export const kubernetesVersion = '1.37.0';
/** skaffold.yaml's apiVersion; the installer fetches its published JSON schema. */
export const skaffoldSchemaVersion = 'v4beta13';

const INSTALL_HINT = 'run `npm run setup -- deploy-tools` (it installs the deploy tool chain into .tools/)';

export type Tool = DeployTool;

export function toolPath(name: Tool): string {
  const path = deployToolPath(repoRoot, name);
  if (!existsSync(path)) throw new Error(`${name} is missing at ${path}: ${INSTALL_HINT}`);
  return path;
}

function requirePath(path: string, what: string): string {
  if (!existsSync(path)) throw new Error(`${what} is missing at ${path}: ${INSTALL_HINT}`);
  return path;
}

export interface RunResult {
  status: number | null;
  stdout: string;
  stderr: string;
  /** stdout and stderr together, for assertion messages. */
  output: string;
}

export function run(tool: Tool, args: string[], options: { input?: string; cwd?: string } = {}): RunResult {
  const result = spawnSync(toolPath(tool), args, {
    cwd: options.cwd ?? repoRoot,
    input: options.input,
    encoding: 'utf8',
    maxBuffer: 64 * 1024 * 1024,
    // helm keeps its caches and config out of $HOME, so the tests need nothing but the repository.
    env: {
      ...process.env,
      HELM_CACHE_HOME: join(toolsDir, 'helm', 'cache'),
      HELM_CONFIG_HOME: join(toolsDir, 'helm', 'config'),
      HELM_DATA_HOME: join(toolsDir, 'helm', 'data'),
      NO_COLOR: '1',
    },
  });
  if (result.error) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr, output: result.stdout + result.stderr };
}

/** promtool (the alert rules' checks), run like the deploy tools. */
export function runPromtool(args: string[], options: { cwd?: string } = {}): RunResult {
  const path = promtoolPath(repoRoot);
  if (!existsSync(path)) throw new Error(`promtool is missing at ${path}: run \`npm run setup -- prom-tools\` (it builds promtool into .tools/bin)`);
  const result = spawnSync(path, args, { cwd: options.cwd ?? repoRoot, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, env: { ...process.env, NO_COLOR: '1' } });
  if (result.error) throw result.error;
  return { status: result.status, stdout: result.stdout, stderr: result.stderr, output: result.stdout + result.stderr };
}

/** kubeconform -strict against the offline Kubernetes schemas and the CRD schemas in test/deploy/schemas. */
export function kubeconformArgs(): string[] {
  const k8sSchemas = requirePath(
    join(toolsDir, 'schemas', 'k8s', `v${kubernetesVersion}-standalone-strict`),
    `Kubernetes ${kubernetesVersion} JSON schemas`,
  );
  return [
    '-strict',
    '-summary',
    '-kubernetes-version',
    kubernetesVersion,
    '-schema-location',
    join(k8sSchemas, '..', '{{ .NormalizedKubernetesVersion }}-standalone{{ .StrictSuffix }}', '{{ .ResourceKind }}{{ .KindSuffix }}.json'),
    '-schema-location',
    join(repoRoot, 'test', 'deploy', 'schemas', 'crds', '{{ .Group }}', '{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json'),
  ];
}

export function skaffoldSchemaPath(): string {
  return requirePath(join(toolsDir, 'schemas', 'skaffold', `${skaffoldSchemaVersion}.json`), 'skaffold JSON schema');
}

/** The values files the chart must accept: charts/coupon/ci/*.yaml. */
export function ciValuesFiles(): string[] {
  return readdirSync(join(chartDir, 'ci'))
    .filter((name) => name.endsWith('.yaml'))
    .sort()
    .map((name) => join(chartDir, 'ci', name));
}

/** kubeconform's closing line, e.g. "Summary: 16 resources found in 1 file - Valid: 16, Invalid: 0, ...". */
export function summaryCounts(output: string): { found: number; valid: number; invalid: number; errors: number; skipped: number } {
  const match = /Summary: (\d+) resources? found.*Valid: (\d+), Invalid: (\d+), Errors: (\d+), Skipped: (\d+)/.exec(output);
  if (!match) throw new Error(`no kubeconform summary in:\n${output}`);
  const [found, valid, invalid, errors, skipped] = match.slice(1).map(Number) as [number, number, number, number, number];
  return { found, valid, invalid, errors, skipped };
}
