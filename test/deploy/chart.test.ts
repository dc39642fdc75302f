/**
 * The Helm chart, checked offline with the real tools: helm lint --strict and helm template with no values, with
 * every values file under charts/coupon/ci/ and with the skaffold dev values (alone, and with the Sentinel or the
 * Cluster deps of k8s/values), every rendered object through kubeconform -strict against the schemas of a current
 * Kubernetes, the helm-unittest suites in charts/coupon/tests/, and the chart's README as helm-docs generates it
 * from values.yaml.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { chartDir, ciValuesFiles, kubeconformArgs, repoRoot, run, summaryCounts } from './tools.ts';

const valuesFiles = ciValuesFiles();
const skaffoldValues = [join(repoRoot, 'k8s', 'values', 'dev.yaml'), join(repoRoot, 'k8s', 'values', 'production-like.yaml')];

function template(values: string[], extra: string[] = []) {
  return run('helm', ['template', 'coupon', chartDir, '--namespace', 'shop', ...values.flatMap((file) => ['-f', file]), ...extra]);
}

function kindsOf(manifests: string): string[] {
  return [...manifests.matchAll(/^kind: (\w+)$/gm)].map((match) => match[1] as string);
}

let scratch: string;
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'coupon-chart-'));
});
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

describe('charts/coupon', () => {
  test('When the chart is released, then its appVersion equals package.json version', () => {
    const chart = readFileSync(join(chartDir, 'Chart.yaml'), 'utf8');
    const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
    expect(/^apiVersion: v2$/m.test(chart)).toBe(true);
    expect(/^appVersion: "?([^"\n]+)"?$/m.exec(chart)?.[1]).toBe(pkg.version);
  });

  test('When CI runs, then there are defaults, production-like, minimal, Redis Sentinel and Redis Cluster values files', () => {
    expect(valuesFiles.map((file) => basename(file))).toEqual(
      expect.arrayContaining(['default-values.yaml', 'production-values.yaml', 'minimal-values.yaml', 'redis-sentinel-values.yaml', 'redis-cluster-values.yaml']),
    );
  });

  test('When the Sentinel values are rendered, then the api and worker read the Sentinel settings from the ConfigMap and Secret', () => {
    const rendered = template([join(chartDir, 'ci', 'redis-sentinel-values.yaml')]);
    expect({ status: rendered.status, stderr: rendered.stderr }).toMatchObject({ status: 0 });
    for (const line of [
      'REDIS_SENTINELS: "redis-sentinel-0.redis-sentinel.data.svc.cluster.local:26379,redis-sentinel-1.redis-sentinel.data.svc.cluster.local:26379,'
        + 'redis-sentinel-2.redis-sentinel.data.svc.cluster.local:26379"',
      'REDIS_SENTINEL_MASTER: "coupon"',
      'REDIS_SOCKET_TIMEOUT_MS: "5000"',
      'GATE_MIN_REPLICAS: "1"',
      'GATE_REPLICA_TIMEOUT_MS: "500"',
      `REDIS_SENTINEL_PASSWORD: "${Buffer.from('sentinel-secret').toString('base64')}"`,
    ]) expect(rendered.stdout).toContain(`  ${line}\n`);
  });

  test('When the Cluster values are rendered, then the api and worker read the seed nodes from the ConfigMap and KEDA reads the lag per shard', () => {
    const rendered = template([join(chartDir, 'ci', 'redis-cluster-values.yaml')]);
    expect({ status: rendered.status, stderr: rendered.stderr }).toMatchObject({ status: 0 });
    const nodes = [0, 1, 2].map((i) => `redis-cluster-${i}.redis-cluster.data.svc.cluster.local:6379`).join(',');
    for (const line of [`REDIS_CLUSTER_NODES: "${nodes}"`, 'GATE_MIN_REPLICAS: "1"', 'GATE_REPLICA_TIMEOUT_MS: "500"']) {
      expect(rendered.stdout).toContain(`  ${line}\n`);
    }
    expect(rendered.stdout).not.toMatch(/REDIS_SENTINEL/);
    // REDIS_URL stays: its password and TLS apply to every node.
    expect(rendered.stdout).toMatch(/^ {2}REDIS_URL: "/m);
    expect(rendered.stdout).toContain('- type: redis-cluster-streams\n');
    expect(rendered.stdout).toContain(`addresses: "${nodes}"\n`);
    expect(rendered.stdout).not.toContain('- type: redis-streams\n');
  });

  test('When both Redis Cluster nodes and Sentinels are set, then the schema makes lint and template fail', () => {
    const both = join(scratch, 'cluster-and-sentinel-values.yaml');
    writeFileSync(both, [
      'config:',
      '  redisClusterNodes: [redis-cluster-0.redis-cluster.data.svc:6379]',
      '  redisSentinels: [redis-sentinel-0.redis-sentinel.data.svc:26379]',
      '  redisSentinelMaster: coupon',
      // Redis nodes outside k8s/deps make the release production: it names its own URLs.
      'secrets:',
      '  redisUrl: redis://:secret@redis.data.svc:6379',
      '  mysqlUrl: mysql://coupon:secret@mysql.data.svc:3306/coupon',
      '  postgresUrl: postgres://coupon:secret@postgres.data.svc:5432/coupon_jobs',
      '',
    ].join('\n'));
    const lint = run('helm', ['lint', '--strict', chartDir, '-f', both]);
    expect(lint.status).not.toBe(0);
    expect(lint.output).toContain('/config/redisSentinels');
    const rendered = template([both]);
    expect(rendered.status).not.toBe(0);
    expect(rendered.output).toContain('/config/redisSentinels');
    // Either one alone is accepted.
    for (const drop of [/^ {2}redisClusterNodes.*\n/m, /^ {2}redisSentinel.*\n/gm]) {
      const one = join(scratch, 'one-topology-values.yaml');
      writeFileSync(one, readFileSync(both, 'utf8').replace(drop, ''));
      expect(template([one]).status).toBe(0);
    }
  });

  describe.each(valuesFiles.map((file) => [basename(file), file]))('with ci/%s', (_name, file) => {
    test('When linted strictly, then helm reports no error or warning', () => {
      const result = run('helm', ['lint', '--strict', chartDir, '-f', file]);
      expect({ status: result.status, output: result.output }).toMatchObject({ status: 0 });
      expect(result.output).toContain('0 chart(s) failed');
    });

    test('When rendered, then every object is valid for Kubernetes under kubeconform -strict', () => {
      const rendered = template([file]);
      expect({ status: rendered.status, stderr: rendered.stderr }).toMatchObject({ status: 0 });
      const checked = run('kubeconform', kubeconformArgs(), { input: rendered.stdout });
      expect({ status: checked.status, output: checked.output }).toMatchObject({ status: 0 });
      const counts = summaryCounts(checked.output);
      expect(counts.found).toBe(kindsOf(rendered.stdout).length);
      expect(counts).toMatchObject({ invalid: 0, errors: 0, skipped: 0 });
    });
  });

  test('When the production-like values are rendered, then Ingress, HPA, KEDA and the monitoring objects are all there', () => {
    const rendered = template([join(chartDir, 'ci', 'production-values.yaml')]);
    expect(rendered.status).toBe(0);
    expect(kindsOf(rendered.stdout)).toEqual(
      expect.arrayContaining(['Ingress', 'HorizontalPodAutoscaler', 'ScaledObject', 'TriggerAuthentication', 'ServiceMonitor', 'PrometheusRule', 'PodDisruptionBudget', 'Job']),
    );
    // existingSecret: the chart renders no Secret of its own.
    expect(kindsOf(rendered.stdout)).not.toContain('Secret');
  });

  describe('the production values keep the launch promises (issue 23)', () => {
    type Doc = { kind: string; metadata: { name: string; namespace?: string; annotations?: Record<string, string> }; spec: any; data?: Record<string, string> };
    const rendered = () => {
      const result = template([join(chartDir, 'ci', 'production-values.yaml')]);
      expect({ status: result.status, stderr: result.stderr }).toMatchObject({ status: 0 });
      return parseAllDocuments(result.stdout).map((doc) => doc.toJS() as Doc).filter(Boolean);
    };
    const only = (docs: Doc[], kind: string, name?: string) => {
      const found = docs.filter((doc) => doc.kind === kind && (name === undefined || doc.metadata.name === name));
      expect({ kind, name, count: found.length }).toEqual({ kind, name, count: 1 });
      return found[0]!;
    };

    test('When rendered, then Redis is found through three Sentinels and every 202 waits for a replica, and KEDA asks the Sentinels too', () => {
      const docs = rendered();
      const config = only(docs, 'ConfigMap', 'coupon-config').data!;
      expect(config.REDIS_SENTINELS!.split(',')).toHaveLength(3);
      expect(config.REDIS_SENTINEL_MASTER).toBe('coupon');
      expect(config.GATE_MIN_REPLICAS).toBe('1');
      const scaled = only(docs, 'ScaledObject');
      for (const trigger of scaled.spec.triggers) {
        expect(trigger.type).toBe('redis-sentinel-streams');
        expect(trigger.metadata).toMatchObject({ addresses: config.REDIS_SENTINELS, sentinelMaster: 'coupon' });
        expect(trigger.metadata.address).toBeUndefined();
      }
      const auth = only(docs, 'TriggerAuthentication');
      expect(auth.spec.secretTargetRef.map((ref: { parameter: string }) => ref.parameter)).toEqual(['password', 'sentinelPassword']);
    });

    test('When rendered, then only /v1/ is public, the probes and metrics are on the ops port and Prometheus finds it', () => {
      const docs = rendered();
      const ingress = only(docs, 'Ingress');
      const paths = ingress.spec.rules.flatMap((rule: { http: { paths: unknown[] } }) => rule.http.paths);
      expect(paths).toEqual([{ path: '/v1/', pathType: 'Prefix', backend: { service: { name: 'coupon-api', port: { name: 'http' } } } }]);
      // No per-client-IP limits that would turn away buyers behind one address with a 503 like the api's.
      expect(Object.keys(ingress.metadata.annotations ?? {}).filter((key) => /limit-(rps|rpm|connections|burst)/.test(key))).toEqual([]);
      const api = only(docs, 'Deployment', 'coupon-api').spec.template.spec.containers[0];
      expect(api.readinessProbe.httpGet.port).toBe('ops');
      expect(api.livenessProbe.httpGet.port).toBe('ops');
      const monitor = only(docs, 'ServiceMonitor');
      const selected = docs.filter((doc) => doc.kind === 'Service' && ['api', 'worker'].includes((doc.metadata as any).labels['app.kubernetes.io/component']));
      expect(selected).toHaveLength(2);
      for (const endpoint of monitor.spec.endpoints) {
        for (const service of selected) expect(service.spec.ports.map((port: { name: string }) => port.name)).toContain(endpoint.port);
        expect(endpoint.port).toBe('ops');
      }
    });

    test('When rendered, then NetworkPolicies admit the Ingress controller to /v1, Prometheus to the ops ports, and only the service to the data stores', () => {
      const docs = rendered();
      const policies = docs.filter((doc) => doc.kind === 'NetworkPolicy');
      const api = policies.find((doc) => doc.metadata.name === 'coupon-api')!;
      expect(api.spec.ingress.map((rule: { ports: Array<{ port: string }> }) => rule.ports[0]!.port)).toEqual(['http', 'ops']);
      for (const rule of api.spec.ingress) expect(rule.from.length).toBeGreaterThan(0);
      for (const store of ['redis', 'redis-sentinel', 'mysql', 'postgres']) {
        const policy = policies.find((doc) => doc.metadata.name === `coupon-${store}-clients`)!;
        expect({ store, namespace: policy?.metadata.namespace }).toEqual({ store, namespace: 'data' });
        expect(policy.spec.ingress[0].from[0]).toEqual({
          namespaceSelector: { matchLabels: { 'kubernetes.io/metadata.name': 'shop' } },
          podSelector: {
            matchLabels: { 'app.kubernetes.io/name': 'coupon', 'app.kubernetes.io/instance': 'coupon' },
            matchExpressions: [{ key: 'app.kubernetes.io/component', operator: 'In', values: ['api', 'worker', 'migrations'] }],
          },
        });
      }
    });

    test('When rendered, then the worker raises the api above its HPA floor before each sale, allowed to patch that HPA alone', () => {
      const docs = rendered();
      const config = only(docs, 'ConfigMap', 'coupon-config').data!;
      const hpa = only(docs, 'HorizontalPodAutoscaler', 'coupon-api');
      expect(Number(config.PRESALE_REPLICAS)).toBeGreaterThan(hpa.spec.minReplicas);
      expect(Number(config.PRESALE_REPLICAS)).toBeLessThanOrEqual(hpa.spec.maxReplicas);
      expect(config.PRESALE_HPA).toBe('coupon-api');
      expect(hpa.metadata.annotations?.['coupon.dev/base-min-replicas']).toBe(String(hpa.spec.minReplicas));
      // What comes beyond the floor: scale-up at once, no stabilization window.
      expect(hpa.spec.behavior.scaleUp.stabilizationWindowSeconds).toBe(0);
      const role = only(docs, 'Role', 'coupon-presale');
      expect((role as unknown as { rules: unknown }).rules).toEqual([
        { apiGroups: ['autoscaling'], resources: ['horizontalpodautoscalers'], resourceNames: ['coupon-api'], verbs: ['get', 'patch'] },
      ]);
      expect(only(docs, 'Deployment', 'coupon-worker').spec.template.spec.automountServiceAccountToken).toBe(true);
      expect(only(docs, 'Deployment', 'coupon-api').spec.template.spec.automountServiceAccountToken).toBe(false);
    });

    test('When rendered, then the api spreads over untainted nodes per rollout, and its grace period covers preStop + 35 s', () => {
      const docs = rendered();
      for (const name of ['coupon-api', 'coupon-worker']) {
        const spread = only(docs, 'Deployment', name).spec.template.spec.topologySpreadConstraints[0];
        expect(spread).toMatchObject({ nodeTaintsPolicy: 'Honor', matchLabelKeys: ['pod-template-hash'], whenUnsatisfiable: 'DoNotSchedule' });
      }
      const api = only(docs, 'Deployment', 'coupon-api').spec.template.spec;
      expect(api.terminationGracePeriodSeconds).toBeGreaterThanOrEqual(api.containers[0].lifecycle.preStop.sleep.seconds + 35);
    });
  });

  test('When skaffold deploys the chart (dev and production-like values), then it lints and validates too', () => {
    for (const values of [skaffoldValues.slice(0, 1), skaffoldValues]) {
      const lint = run('helm', ['lint', '--strict', chartDir, ...values.flatMap((file) => ['-f', file])]);
      expect({ status: lint.status, output: lint.output }).toMatchObject({ status: 0 });
      const rendered = template(values, ['--set', 'image.repository=coupon', '--set', 'image.tag=dev']);
      expect(rendered.status).toBe(0);
      const checked = run('kubeconform', kubeconformArgs(), { input: rendered.stdout });
      expect({ status: checked.status, output: checked.output }).toMatchObject({ status: 0 });
    }
  });

  const clusterNodes = [0, 1, 2, 3, 4, 5].map((i) => `redis-cluster-${i}.redis-cluster.coupon-deps.svc.cluster.local:6379`).join(',');
  test.each([
    ['Sentinel', 'redis-sentinel.yaml', (manifests: string) => {
      expect(manifests).toMatch(/^ {2}REDIS_SENTINELS: "redis-sentinel-0\.redis-sentinel\.coupon-deps\.svc\.cluster\.local:26379,redis-sentinel-1\..*,redis-sentinel-2\..*:26379"$/m);
      expect(manifests).toMatch(/^ {2}REDIS_SENTINEL_MASTER: "coupon"$/m);
      expect(manifests).toMatch(/^ {2}REDIS_SENTINEL_PASSWORD: "/m);
    }],
    ['Cluster', 'redis-cluster.yaml', (manifests: string) => {
      expect(manifests).toContain(`\n  REDIS_CLUSTER_NODES: "${clusterNodes}"\n`);
      expect(manifests).not.toMatch(/REDIS_SENTINEL/);
    }],
  ])('When the chart uses the %s deps (dev values plus k8s/values/%s), then it lints, validates and wires them', (_topology, file, wired) => {
    const values = [skaffoldValues[0] as string, join(repoRoot, 'k8s', 'values', file)];
    const lint = run('helm', ['lint', '--strict', chartDir, ...values.flatMap((path) => ['-f', path])]);
    expect({ status: lint.status, output: lint.output }).toMatchObject({ status: 0 });
    const rendered = template(values, ['--set', 'image.repository=coupon', '--set', 'image.tag=dev']);
    expect({ status: rendered.status, stderr: rendered.stderr }).toMatchObject({ status: 0 });
    const checked = run('kubeconform', kubeconformArgs(), { input: rendered.stdout });
    expect({ status: checked.status, output: checked.output }).toMatchObject({ status: 0 });
    expect(rendered.stdout).toMatch(/^ {2}GATE_MIN_REPLICAS: "1"$/m);
    wired(rendered.stdout);
  });

  test('When the helm-unittest suites run, then all pass', () => {
    const result = run('helm-unittest', ['--color=false', chartDir]);
    expect({ status: result.status, output: result.output }).toMatchObject({ status: 0 });
    expect(result.output).toMatch(/Tests:\s+\d+ passed, \d+ total/);
    expect(result.output).not.toMatch(/\bfailed\b/);
  });

  test('When a values file misspells a key, then the schema makes lint and template fail naming it', () => {
    const broken = join(scratch, 'typo-values.yaml');
    writeFileSync(broken, 'api:\n  autoscalling:\n    enabled: true\n');
    const lint = run('helm', ['lint', '--strict', chartDir, '-f', broken]);
    expect(lint.status).not.toBe(0);
    expect(lint.output).toContain("additional properties 'autoscalling' not allowed");
    const rendered = template([broken]);
    expect(rendered.status).not.toBe(0);
    expect(rendered.output).toContain('autoscalling');
  });

  test('When installed with no values at all, then it lints strictly and every rendered object is valid', () => {
    const lint = run('helm', ['lint', '--strict', chartDir]);
    expect({ status: lint.status, output: lint.output }).toMatchObject({ status: 0 });
    expect(lint.output).toContain('0 chart(s) failed');
    const rendered = run('helm', ['template', 'coupon', chartDir, '--namespace', 'coupon']);
    expect({ status: rendered.status, stderr: rendered.stderr }).toMatchObject({ status: 0 });
    const checked = run('kubeconform', kubeconformArgs(), { input: rendered.stdout });
    expect({ status: checked.status, output: checked.output }).toMatchObject({ status: 0 });
    expect(summaryCounts(checked.output)).toMatchObject({ invalid: 0, errors: 0, skipped: 0 });
  });

  describe('secrets and heap across renders (issue 23, item 6)', () => {
    const annotation = (manifests: string, component: string, key: string) => {
      const doc = parseAllDocuments(manifests).map((d) => d.toJS() as { kind: string; metadata: { name: string }; spec: any })
        .find((d) => d.kind === 'Deployment' && d.metadata.name === `coupon-${component}`);
      return doc?.spec.template.metadata.annotations?.[key] as string | undefined;
    };
    const secretToken = (manifests: string) => /^ {2}ADMIN_TOKEN: "([^"]+)"$/m.exec(manifests)?.[1];

    test('When the chart is rendered twice without the cluster (helm template, GitOps) and a generated token, then no pod would roll', () => {
      const [first, second] = [template([]), template([])];
      expect([first.status, second.status]).toEqual([0, 0]);
      // The Secret cannot be kept stable without the cluster (docs/deploy.md says to set secrets.adminToken there)...
      expect(secretToken(first.stdout)).not.toBe(secretToken(second.stdout));
      // ...but the pods' checksum does not follow the random token, so a sync does not restart every pod.
      for (const component of ['api', 'worker']) {
        expect(annotation(first.stdout, component, 'checksum/secret')).toMatch(/^[0-9a-f]{64}$/);
        expect(annotation(second.stdout, component, 'checksum/secret')).toBe(annotation(first.stdout, component, 'checksum/secret'));
      }
    });

    test('When secrets.adminToken changes, then the pods roll', () => {
      const [a, b] = ['a', 'b'].map((x) => template([], ['--set', `secrets.adminToken=admin-token-0123456789-${x}`]));
      expect(annotation(a!.stdout, 'api', 'checksum/secret')).not.toBe(annotation(b!.stdout, 'api', 'checksum/secret'));
    });

    test('When whoever rotates the existing Secret bumps secretRevision, then the api and worker pods roll', () => {
      const [one, two] = ['1', '2'].map((revision) => template([join(chartDir, 'ci', 'production-values.yaml')], ['--set-string', `secretRevision=${revision}`]));
      expect([one!.status, two!.status]).toEqual([0, 0]);
      for (const component of ['api', 'worker']) {
        expect(annotation(one!.stdout, component, 'checksum/secret')).toMatch(/^[0-9a-f]{64}$/);
        expect(annotation(two!.stdout, component, 'checksum/secret')).not.toBe(annotation(one!.stdout, component, 'checksum/secret'));
      }
    });

    test('When the production values are rendered with the development URLs, then the chart refuses, naming the value', () => {
      const rendered = template([join(chartDir, 'ci', 'production-values.yaml')], ['--set', 'secrets.existingSecret=']);
      expect(rendered.status).not.toBe(0);
      expect(rendered.stderr).toContain('a production release (production: true) must not use the development default of secrets.redisUrl');
    });

    test('When a container has a memory limit, then its heap flag is sized from it: the migrations Job gets 40% of its 256Mi', () => {
      const rendered = template([]);
      const heapOf = (kind: string, name: string) => {
        const doc = parseAllDocuments(rendered.stdout).map((d) => d.toJS() as { kind: string; metadata: { name: string }; spec: any })
          .find((d) => d.kind === kind && d.metadata.name === name);
        const env = doc?.spec.template.spec.containers[0].env as { name: string; value: string }[];
        return env.find((e) => e.name === 'NODE_OPTIONS')?.value;
      };
      expect(heapOf('Deployment', 'coupon-api')).toBe('--max-old-space-size=204');
      expect(heapOf('Deployment', 'coupon-worker')).toBe('--max-old-space-size=204');
      expect(heapOf('Job', 'coupon-migrations')).toBe('--max-old-space-size=102');
    });
  });

  test('When a required URL is emptied without an existing Secret, then the chart refuses to render naming it', () => {
    const rendered = run('helm', ['template', 'coupon', chartDir, '--set', 'secrets.mysqlUrl=']);
    expect(rendered.status).not.toBe(0);
    expect(rendered.output).toContain('/secrets/mysqlUrl');
  });

  test("When helm-docs regenerates the chart's README from values.yaml, then it is the committed one, every value described", () => {
    // On failure: .tools/bin/helm-docs --chart-search-root charts/coupon
    const generated = run('helm-docs', ['--dry-run', '--chart-search-root', chartDir, '--log-level', 'warning']);
    expect({ status: generated.status, stderr: generated.stderr }).toMatchObject({ status: 0, stderr: '' });
    expect(generated.stdout).toBe(readFileSync(join(chartDir, 'README.md'), 'utf8'));
    const rows = generated.stdout.split('\n').filter((line) => /^\| [a-zA-Z]/.test(line) && !line.startsWith('| Key '));
    expect(rows.length).toBeGreaterThan(100);
    expect(rows.filter((row) => /\|\s*\|$/.test(row))).toEqual([]);
  });

  test('When a free-form value renders an invalid object, then kubeconform -strict rejects it', () => {
    // podSecurityContext is passed through as is; the schema cannot catch this typo, kubeconform does.
    const broken = join(scratch, 'bad-security-context.yaml');
    writeFileSync(broken, 'podSecurityContext:\n  runAsNonRot: true\n');
    const rendered = template([broken]);
    expect(rendered.status).toBe(0);
    const checked = run('kubeconform', kubeconformArgs(), { input: rendered.stdout });
    expect(checked.status).not.toBe(0);
    expect(checked.output).toContain("additional properties 'runAsNonRot' not allowed");
  });

  test('When a KEDA trigger lacks its stream, then the ScaledObject schema rejects it', () => {
    const manifest = [
      'apiVersion: keda.sh/v1alpha1',
      'kind: ScaledObject',
      'metadata:',
      '  name: worker',
      'spec:',
      '  scaleTargetRef:',
      '    name: worker',
      '  triggers:',
      '    - type: redis-streams',
      '      metadata:',
      '        address: redis:6379',
      '        lagCount: "10"',
      '',
    ].join('\n');
    const checked = run('kubeconform', kubeconformArgs(), { input: manifest });
    expect(checked.status).not.toBe(0);
    expect(summaryCounts(checked.output)).toMatchObject({ invalid: 1 });
  });
});
