/**
 * The chart against SETTINGS in src/config.ts, the one table of the service's settings: every setting has a chart
 * value with the table's default and no wider bounds, the chart renders it into the environment of every process
 * that reads it, and the chart's defaults reach the development dependencies of k8s/deps as they are.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { defaultFor, SETTINGS, type Process, type Setting } from '../../src/config.ts';
import { chartDir, repoRoot, run } from './tools.ts';

type Doc = { kind: string; metadata: { name: string; namespace?: string }; [key: string]: any };
type Env = Record<string, string | undefined>;

const settings = Object.values(SETTINGS) as Setting[];
const values = parse(readFileSync(join(chartDir, 'values.yaml'), 'utf8')) as Record<string, any>;
const schema = JSON.parse(readFileSync(join(chartDir, 'values.schema.json'), 'utf8')) as Record<string, any>;
const RELEASE = 'coupon';
const WORKLOADS: Record<Process, { kind: string; name: string }> = {
  api: { kind: 'Deployment', name: `${RELEASE}-api` },
  worker: { kind: 'Deployment', name: `${RELEASE}-worker` },
  migrations: { kind: 'Job', name: `${RELEASE}-migrations` },
};

let scratch: string;
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'coupon-chart-settings-'));
});
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

function at(root: Record<string, any>, path: string): any {
  return path.split('.').reduce((node, key) => node?.[key], root);
}

function schemaAt(path: string): Record<string, any> | undefined {
  return path.split('.').reduce<any>((node, key) => node?.properties?.[key], schema);
}

/** `helm template` with the values given as a file (as `-f` reads them: numbers become floats). */
function render(overrides: Record<string, unknown> = {}): Doc[] {
  const file = join(scratch, `values-${Math.random().toString(36).slice(2)}.json`);
  writeFileSync(file, JSON.stringify(overrides));
  const result = run('helm', ['template', RELEASE, chartDir, '--namespace', 'coupon', '-f', file]);
  expect({ status: result.status, stderr: result.stderr }).toMatchObject({ status: 0 });
  return parseAllDocuments(result.stdout).map((doc) => doc.toJS() as Doc).filter(Boolean);
}

/** What the first container of a process sees: its ConfigMap and Secret (decoded), then its own env. */
function envOf(docs: Doc[], reader: Process): Env {
  const find = (kind: string, name: string) => docs.find((doc) => doc.kind === kind && doc.metadata.name === name);
  const workload = find(WORKLOADS[reader].kind, WORKLOADS[reader].name);
  expect({ reader, rendered: workload !== undefined }).toEqual({ reader, rendered: true });
  const container = workload!.spec.template.spec.containers[0];
  const env: Env = {};
  for (const source of container.envFrom ?? []) {
    if (source.configMapRef) Object.assign(env, find('ConfigMap', source.configMapRef.name)?.data);
    if (source.secretRef) {
      const data = find('Secret', source.secretRef.name)?.data as Record<string, string> | undefined;
      for (const [key, value] of Object.entries(data ?? {})) env[key] = Buffer.from(value, 'base64').toString('utf8');
    }
  }
  for (const entry of container.env ?? []) env[entry.name] = entry.value;
  return env;
}

/** The chart paths of a setting, per process that reads it (the worker's PORT is worker.port). */
function chartPathFor(setting: Setting, reader: Process): string {
  return setting.byProcess?.[reader]?.chart ?? setting.chart;
}

/** A value other than the default, as the chart takes it and as the environment must then spell it. */
function example(setting: Setting): { chart: unknown; env: string } {
  const bounds = setting.kind.bounds;
  switch (bounds.type) {
    case 'integer': return { chart: bounds.maximum, env: String(bounds.maximum) };
    case 'enum': {
      const value = bounds.values.find((candidate) => candidate !== setting.default) as string;
      return { chart: value, env: value };
    }
    case 'url': {
      const value = `${bounds.protocols.at(-1)}//example-user:example-password@${setting.env.toLowerCase().replaceAll('_', '-')}.example.test:1234/db`;
      return { chart: value, env: value };
    }
    case 'text': {
      const value = `${setting.env.toLowerCase()}-`.padEnd(Math.max(bounds.minLength, 24), 'x');
      return { chart: value, env: value };
    }
    case 'cron': return { chart: '0 3 * * 1', env: '0 3 * * 1' };
    case 'duration': return { chart: setting.kind.format(bounds.maximumMs), env: setting.kind.format(bounds.maximumMs) };
    case 'hostPorts': {
      const list = ['sentinel-0.example.test:26379', 'sentinel-1.example.test:26380'];
      return { chart: list, env: list.join(',') };
    }
  }
}

/** The default as the chart holds it: "" or [] for "unset", a list for host:port lists, numbers as numbers. */
function chartForm(setting: Setting, value: unknown): unknown {
  if (value === undefined) return setting.kind.bounds.type === 'hostPorts' ? [] : '';
  if (setting.kind.bounds.type === 'hostPorts') return setting.kind.format(value).split(',');
  if (setting.kind.bounds.type === 'duration') return setting.kind.format(value);
  return value;
}

function withValue(tree: Record<string, any>, path: string, value: unknown): void {
  const keys = path.split('.');
  let node = tree;
  for (const key of keys.slice(0, -1)) node = node[key] ??= {};
  node[keys.at(-1)!] = value;
}

describe('charts/coupon against the settings table of src/config.ts', () => {
  test('When rendered with no values, then every process gets every setting it reads with the table default', () => {
    const docs = render();
    const wrong: string[] = [];
    for (const setting of settings) {
      for (const reader of setting.readBy) {
        const actual = envOf(docs, reader)[setting.env];
        const fallback = defaultFor(setting, reader);
        if (setting.chartDefault === 'k8s/deps') {
          if (!actual || !new URL(actual).hostname.endsWith('.coupon-deps.svc.cluster.local')) wrong.push(`${reader} ${setting.env}=${actual}: not a k8s/deps Service`);
        } else if (setting.chartDefault === 'generated') {
          if (!actual || actual.length < 32) wrong.push(`${reader} ${setting.env}: no generated value`);
        } else {
          const expected = fallback === undefined ? undefined : setting.kind.format(fallback);
          if (actual !== expected) wrong.push(`${reader} ${setting.env}=${actual}, the table says ${expected}`);
        }
      }
    }
    expect(wrong).toEqual([]);
  });

  test('When every setting has a value of its own, then each reaches its variable in every process that reads it', () => {
    // AUTH_JWT_SECRET and AUTH_JWKS_URL exclude each other (the chart refuses both), as do the Sentinels and
    // REDIS_CLUSTER_NODES: one render each.
    const second = new Set(['AUTH_JWKS_URL', 'REDIS_CLUSTER_NODES']);
    // Redis nodes outside k8s/deps make a release production, which must name its own URLs: both renders set them.
    const urls = new Set(['REDIS_URL', 'MYSQL_URL', 'POSTGRES_URL']);
    const groups = [settings.filter((s) => !second.has(s.env)), settings.filter((s) => second.has(s.env) || urls.has(s.env))];
    const wrong: string[] = [];
    for (const group of groups) {
      // The longest drain must still fit in the api's grace period.
      // The largest PRESALE_REPLICAS needs an HPA that may have as many.
      const overrides: Record<string, any> = { api: { terminationGracePeriodSeconds: 700, autoscaling: { enabled: true, maxReplicas: 1000 } } };
      for (const setting of group) {
        for (const reader of setting.readBy) withValue(overrides, chartPathFor(setting, reader), example(setting).chart);
      }
      const docs = render(overrides);
      for (const setting of group) {
        for (const reader of setting.readBy) {
          const actual = envOf(docs, reader)[setting.env];
          if (actual !== example(setting).env) wrong.push(`${reader} ${setting.env}=${actual}, set to ${example(setting).env}`);
        }
      }
    }
    expect(wrong).toEqual([]);
  });

  test('When values.yaml is read, then every setting has its value with the table default, and config/secrets hold nothing else', () => {
    const wrong: string[] = [];
    const paths = new Set<string>();
    for (const setting of settings) {
      for (const reader of setting.readBy) {
        const path = chartPathFor(setting, reader);
        paths.add(path);
        if (at(values, path) === undefined) wrong.push(`${setting.env}: no value ${path}`);
        else if (!setting.chartDefault && JSON.stringify(at(values, path)) !== JSON.stringify(chartForm(setting, defaultFor(setting, reader)))) {
          wrong.push(`${path}: ${JSON.stringify(at(values, path))}, the table says ${JSON.stringify(chartForm(setting, defaultFor(setting, reader)))}`);
        }
      }
    }
    // Anything else under config.* or secrets.* would be a knob no process reads.
    const own = (section: string, except: string) => Object.keys(values[section]).filter((key) => key !== except).map((key) => `${section}.${key}`);
    for (const path of [...own('config', 'extraEnv'), ...own('secrets', 'existingSecret')]) {
      if (!paths.has(path)) wrong.push(`${path}: no setting of src/config.ts`);
    }
    expect(wrong).toEqual([]);
  });

  test('When values.schema.json is read, then it accepts nothing a process would refuse', () => {
    const wrong: string[] = [];
    const accepts = (property: Record<string, any>, value: string) =>
      (property.pattern === undefined || new RegExp(property.pattern, 'u').test(value)) && value.length >= (property.minLength ?? 0);
    for (const setting of settings) {
      for (const reader of setting.readBy) {
        const path = chartPathFor(setting, reader);
        const property = schemaAt(path);
        const bounds = setting.kind.bounds;
        if (!property) {
          wrong.push(`${path}: not in values.schema.json`);
          continue;
        }
        const refuse = (value: string) => accepts(property, value) && wrong.push(`${path} accepts ${JSON.stringify(value)}`);
        const accept = (value: string) => !accepts(property, value) && wrong.push(`${path} refuses ${JSON.stringify(value)}`);
        switch (bounds.type) {
          case 'integer':
            if (property.type !== 'integer' || property.minimum < bounds.minimum || property.maximum > bounds.maximum) {
              wrong.push(`${path}: ${property.type} ${property.minimum}..${property.maximum}, the table says integer ${bounds.minimum}..${bounds.maximum}`);
            }
            break;
          case 'enum':
            if (JSON.stringify(property.enum) !== JSON.stringify(bounds.values)) wrong.push(`${path}: enum ${property.enum}, the table says ${bounds.values}`);
            break;
          case 'url':
            for (const protocol of bounds.protocols) accept(`${protocol}//host.example:1/x`);
            refuse('ftp://host.example/x');
            refuse('not a url');
            break;
          case 'text':
            if (bounds.minLength > 1) refuse('x'.repeat(bounds.minLength - 1));
            accept('x'.repeat(bounds.minLength));
            break;
          case 'cron':
            accept(String(setting.default));
            refuse('every 5 minutes');
            refuse('*/5 * * *');
            break;
          case 'duration':
            accept(setting.kind.format(setting.default));
            for (const ok of ['90s', '12h']) accept(ok);
            for (const bad of ['3', '3 days', '-1d', '1w']) refuse(bad);
            break;
          case 'hostPorts':
            if (property.type !== 'array' || !property.items?.pattern) wrong.push(`${path}: not a list of host:port`);
            else {
              for (const ok of ['s-0.example:26379', '[::1]:26379']) if (!new RegExp(property.items.pattern).test(ok)) wrong.push(`${path} refuses ${ok}`);
              for (const bad of ['s-0.example', 's-0.example:70000']) if (new RegExp(property.items.pattern).test(bad)) wrong.push(`${path} accepts ${bad}`);
            }
            break;
        }
      }
    }
    expect(wrong).toEqual([]);
  });

  test('When installed with no values, then the URLs reach the k8s/deps Services with the credentials of their Secrets', () => {
    const deps = ['redis', 'mysql', 'postgres'].flatMap((name) =>
      parseAllDocuments(readFileSync(join(repoRoot, 'k8s', 'deps', `${name}.yaml`), 'utf8')).map((doc) => doc.toJS() as Doc),
    );
    const host = (name: string) => {
      const service = deps.find((doc) => doc.kind === 'Service' && doc.metadata.name === name) as Doc;
      return `${name}.${service.metadata.namespace}.svc.cluster.local:${service.spec.ports[0].port}`;
    };
    const secret = (name: string) => (deps.find((doc) => doc.kind === 'Secret' && doc.metadata.name === name) as Doc).stringData as Record<string, string>;
    const { REDIS_PASSWORD } = secret('redis');
    const { MYSQL_USER, MYSQL_PASSWORD, MYSQL_DATABASE } = secret('mysql');
    const { POSTGRES_USER, POSTGRES_PASSWORD, POSTGRES_DB } = secret('postgres');
    const docs = render();
    for (const reader of ['api', 'worker'] as const) {
      expect(envOf(docs, reader)).toMatchObject({
        REDIS_URL: `redis://:${REDIS_PASSWORD}@${host('redis')}`,
        MYSQL_URL: `mysql://${MYSQL_USER}:${MYSQL_PASSWORD}@${host('mysql')}/${MYSQL_DATABASE}`,
        POSTGRES_URL: `postgres://${POSTGRES_USER}:${POSTGRES_PASSWORD}@${host('postgres')}/${POSTGRES_DB}`,
      });
    }
    expect(envOf(docs, 'migrations').MYSQL_URL).toBe(envOf(docs, 'api').MYSQL_URL);
  });

  test('When an admin token is generated, then one render agrees on it everywhere and the next install gets another', () => {
    const first = render();
    const second = render();
    const token = envOf(first, 'api').ADMIN_TOKEN as string;
    expect(token).toMatch(/^[A-Za-z0-9]{40}$/);
    expect(envOf(first, 'migrations').ADMIN_TOKEN).toBe(token);
    const checksums = first.filter((doc) => doc.kind === 'Deployment').map((doc) => doc.spec.template.metadata.annotations['checksum/secret']);
    expect(new Set(checksums).size).toBe(1);
    expect(envOf(second, 'api').ADMIN_TOKEN).not.toBe(token);
  });
});
