/**
 * The rest of the deploy artefacts, checked offline: k8s/ through kubeconform -strict, skaffold.yaml against
 * skaffold's published JSON schema, the Dockerfile through hadolint, and the YAML through yamllint.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parse, parseAllDocuments } from 'yaml';
import { kubeconformArgs, repoRoot, run, skaffoldSchemaPath, skaffoldSchemaVersion, summaryCounts } from './tools.ts';

/** A parsed manifest; its shape is kubeconform's business, these tests only read a few fields. */
type Manifest = { kind: string; metadata: { name: string; namespace?: string }; [key: string]: any };

let scratch: string;
beforeAll(() => {
  scratch = mkdtempSync(join(tmpdir(), 'coupon-manifests-'));
});
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

/** skaffold.yaml holds several configs; check-jsonschema validates one document per file. */
function skaffoldDocuments(text: string): string[] {
  return text.split(/^---$/m).filter((doc) => /^apiVersion:/m.test(doc));
}

describe('k8s/ dev dependencies', () => {
  const depsDir = join(repoRoot, 'k8s', 'deps');

  test('When validated, then every object is valid for Kubernetes under kubeconform -strict', () => {
    const result = run('kubeconform', [...kubeconformArgs(), depsDir]);
    expect({ status: result.status, output: result.output }).toMatchObject({ status: 0 });
    expect(summaryCounts(result.output)).toMatchObject({ invalid: 0, errors: 0, skipped: 0 });
  });

  test.each(['redis', 'mysql', 'postgres'])('When %s is deployed, then it is a StatefulSet with a PVC, a Service, probes and a Secret', (name) => {
    const text = readFileSync(join(depsDir, `${name}.yaml`), 'utf8');
    for (const kind of ['Secret', 'Service', 'StatefulSet']) expect(text).toMatch(new RegExp(`^kind: ${kind}$`, 'm'));
    expect(text).toContain('volumeClaimTemplates:');
    expect(text).toContain('readinessProbe:');
    expect(text).toContain('livenessProbe:');
    expect(text).toMatch(/namespace: coupon-deps/);
  });

  test('When Redis restarts, then its AOF on a volume keeps what was issued', () => {
    const text = readFileSync(join(depsDir, 'redis.yaml'), 'utf8');
    expect(text).toMatch(/image: redis:7\./);
    expect(text).toContain('appendonly yes');
    expect(text).toContain('maxmemory-policy noeviction');
  });

  describe('the optional Redis behind Sentinel (k8s/deps/redis-sentinel/)', () => {
    const sentinelDir = join(depsDir, 'redis-sentinel');
    const docs = ['redis-ha.yaml', 'sentinel.yaml', 'network-policies.yaml'].flatMap((file) =>
      parseAllDocuments(readFileSync(join(sentinelDir, file), 'utf8')).map((doc) => doc.toJS() as Manifest),
    );
    const find = (kind: string, name: string) => {
      const found = docs.find((doc) => doc.kind === kind && doc.metadata.name === name);
      expect({ kind, name, found: found !== undefined }).toEqual({ kind, name, found: true });
      return found as Manifest;
    };
    const envOf = (set: Manifest) =>
      Object.fromEntries(set.spec.template.spec.containers[0].env.map((e: { name: string; value?: string }) => [e.name, e.value]));

    test('When validated alone, then every object is valid under kubeconform -strict', () => {
      const result = run('kubeconform', [...kubeconformArgs(), sentinelDir]);
      expect({ status: result.status, output: result.output }).toMatchObject({ status: 0 });
      expect(summaryCounts(result.output)).toMatchObject({ found: docs.length, invalid: 0, errors: 0, skipped: 0 });
    });

    test('When deployed, then a primary and two replicas on PVCs with AOF run beside three Sentinels with a quorum of two', () => {
      for (const doc of docs) expect(doc.metadata.namespace).toBe('coupon-deps');
      const redis = find('StatefulSet', 'redis-ha');
      const sentinel = find('StatefulSet', 'redis-sentinel');
      expect(redis.spec.replicas).toBe(3);
      expect(redis.spec.volumeClaimTemplates).toHaveLength(1);
      expect(sentinel.spec.replicas).toBe(3);
      for (const set of [redis, sentinel]) {
        expect(set.spec.template.spec.containers[0].image).toMatch(/^redis:7\./);
        expect(set.spec.template.spec.containers[0].readinessProbe).toBeDefined();
        expect(set.spec.template.spec.containers[0].livenessProbe).toBeDefined();
        expect(envOf(set)).toMatchObject({ MASTER_NAME: 'coupon', REDIS_COUNT: String(redis.spec.replicas), SENTINEL_COUNT: String(sentinel.spec.replicas) });
      }
      expect(Number(envOf(sentinel).QUORUM)).toBe(2);
      const config = find('ConfigMap', 'redis-ha').data as Record<string, string>;
      for (const line of ['appendonly yes', 'appendfsync everysec', 'maxmemory-policy noeviction']) expect(config['redis.conf']).toContain(line);
      // Pod IPs change on restart: nodes announce DNS names, and the Sentinels resolve and hand out names.
      expect(config['start-redis.sh']).toContain('replica-announce-ip');
      expect(config['start-redis.sh']).toContain('masterauth');
      const start = find('ConfigMap', 'redis-sentinel').data['start-sentinel.sh'] as string;
      for (const line of ['sentinel resolve-hostnames yes', 'sentinel announce-hostnames yes', 'sentinel monitor $MASTER_NAME', 'requirepass']) {
        expect(start).toContain(line);
      }
      for (const name of ['redis-ha', 'redis-sentinel']) {
        const service = find('Service', name);
        expect(service.spec).toMatchObject({ clusterIP: 'None', publishNotReadyAddresses: true });
      }
    });

    test('When the chart is pointed at it, then k8s/values/redis-sentinel.yaml names these Sentinels, master and passwords', () => {
      const values = parse(readFileSync(join(repoRoot, 'k8s', 'values', 'redis-sentinel.yaml'), 'utf8')) as {
        secrets: { redisUrl: string; redisSentinelPassword: string };
        config: { redisSentinels: string[]; redisSentinelMaster: string; gateMinReplicas: number };
      };
      const sentinel = find('StatefulSet', 'redis-sentinel');
      const template = envOf(sentinel).SENTINEL_HOST_TEMPLATE as string;
      const expected = Array.from({ length: sentinel.spec.replicas as number }, (_, i) => `${template.replace('%d', String(i))}:26379`);
      expect(values.config.redisSentinels).toEqual(expected);
      expect(values.config.redisSentinelMaster).toBe(envOf(sentinel).MASTER_NAME);
      expect(values.config.gateMinReplicas).toBe(1);
      const secret = find('Secret', 'redis-ha').stringData as Record<string, string>;
      expect(values.secrets.redisSentinelPassword).toBe(secret.SENTINEL_PASSWORD);
      expect(new URL(values.secrets.redisUrl).password).toBe(secret.REDIS_PASSWORD);
    });
  });

  describe('the optional Redis Cluster (k8s/deps/redis-cluster/)', () => {
    const clusterDir = join(depsDir, 'redis-cluster');
    const docs = ['redis-cluster.yaml', 'setup-job.yaml', 'network-policies.yaml'].flatMap((file) =>
      parseAllDocuments(readFileSync(join(clusterDir, file), 'utf8')).map((doc) => doc.toJS() as Manifest),
    );
    const find = (kind: string, name: string) => {
      const found = docs.find((doc) => doc.kind === kind && doc.metadata.name === name);
      expect({ kind, name, found: found !== undefined }).toEqual({ kind, name, found: true });
      return found as Manifest;
    };
    const envOf = (spec: Manifest) =>
      Object.fromEntries(spec.template.spec.containers[0].env.map((e: { name: string; value?: string }) => [e.name, e.value]));
    /** The DNS names of the StatefulSet's pods (host:port), as its headless Service publishes them. */
    const podAddresses = (set: Manifest, service: Manifest) =>
      Array.from({ length: set.spec.replicas as number }, (_, i) =>
        `${set.metadata.name}-${i}.${service.metadata.name}.${set.metadata.namespace}.svc.cluster.local:${service.spec.ports[0].port}`);

    test('When validated alone, then every object is valid under kubeconform -strict', () => {
      const result = run('kubeconform', [...kubeconformArgs(), clusterDir]);
      expect({ status: result.status, output: result.output }).toMatchObject({ status: 0 });
      expect(summaryCounts(result.output)).toMatchObject({ found: docs.length, invalid: 0, errors: 0, skipped: 0 });
    });

    test('When deployed, then six cluster-enabled nodes with AOF and nodes.conf on PVCs announce their DNS names', () => {
      for (const doc of docs) expect(doc.metadata.namespace).toBe('coupon-deps');
      const set = find('StatefulSet', 'redis-cluster');
      const service = find('Service', 'redis-cluster');
      expect(set.spec.replicas).toBe(6);
      expect(set.spec.serviceName).toBe(service.metadata.name);
      expect(set.spec.volumeClaimTemplates).toHaveLength(1);
      const container = set.spec.template.spec.containers[0];
      expect(container.image).toMatch(/^redis:7\./);
      expect(container.readinessProbe).toBeDefined();
      expect(container.livenessProbe).toBeDefined();
      expect(container.volumeMounts).toEqual(expect.arrayContaining([{ name: set.spec.volumeClaimTemplates[0].metadata.name, mountPath: '/data' }]));
      expect(envOf(set.spec)).toMatchObject({ REDIS_COUNT: String(set.spec.replicas), REDIS_PORT: String(service.spec.ports[0].port) });
      // Pod IPs change on restart: a headless Service publishing names before readiness, nodes announcing them.
      expect(service.spec).toMatchObject({ clusterIP: 'None', publishNotReadyAddresses: true });
      expect(service.spec.ports.map((port: { port: number }) => port.port)).toEqual([6379, 16379]);
      const config = find('ConfigMap', 'redis-cluster').data as Record<string, string>;
      for (const line of [
        'cluster-enabled yes', 'cluster-config-file /data/nodes.conf', 'cluster-preferred-endpoint-type hostname',
        'appendonly yes', 'appendfsync everysec', 'maxmemory-policy noeviction',
      ]) expect(config['redis.conf']).toContain(line);
      for (const line of ['cluster-announce-hostname $self', 'requirepass', 'masterauth']) expect(config['start-redis.sh']).toContain(line);
      const secret = find('Secret', 'redis-cluster').stringData as Record<string, string>;
      expect(secret.REDIS_PASSWORD).toBeTruthy();
    });

    test('When first applied, then a Job forms three primaries with one replica each, and only if not yet formed', () => {
      const set = find('StatefulSet', 'redis-cluster');
      const job = find('Job', 'redis-cluster-create');
      expect(envOf(job.spec)).toEqual(expect.objectContaining({
        REDIS_HOST_TEMPLATE: envOf(set.spec).REDIS_HOST_TEMPLATE,
        REDIS_COUNT: String(set.spec.replicas),
        REDIS_PORT: envOf(set.spec).REDIS_PORT,
      }));
      expect(job.spec.template.spec.containers[0].command).toEqual(['sh', '/etc/redis/create-cluster.sh']);
      const create = find('ConfigMap', 'redis-cluster').data['create-cluster.sh'] as string;
      expect(create).toMatch(/redis-cli --cluster create \$addresses --cluster-replicas 1 --cluster-yes/);
      // Idempotent: a node that reports cluster_state:ok, knows other nodes or serves slots ends the Job untouched.
      for (const check of ['cluster_state)" = ok', 'cluster_known_nodes', 'cluster_slots_assigned']) expect(create).toContain(check);
      expect(create.indexOf('cluster_state)" = ok')).toBeLessThan(create.indexOf('--cluster create'));
    });

    test('When the chart is pointed at it, then k8s/values/redis-cluster.yaml names every node, the password and one replica to wait for', () => {
      const values = parse(readFileSync(join(repoRoot, 'k8s', 'values', 'redis-cluster.yaml'), 'utf8')) as {
        secrets: { redisUrl: string };
        config: { redisClusterNodes: string[]; gateMinReplicas: number; redisSentinels?: unknown };
      };
      const set = find('StatefulSet', 'redis-cluster');
      const service = find('Service', 'redis-cluster');
      const expected = podAddresses(set, service);
      expect(values.config.redisClusterNodes).toEqual(expected);
      const template = envOf(set.spec).REDIS_HOST_TEMPLATE as string;
      expect(expected).toEqual(expected.map((_, i) => `${template.replace('%d', String(i))}:${envOf(set.spec).REDIS_PORT}`));
      expect(values.config.redisSentinels).toBeUndefined();
      expect(values.config.gateMinReplicas).toBe(1);
      const secret = find('Secret', 'redis-cluster').stringData as Record<string, string>;
      expect(new URL(values.secrets.redisUrl).password).toBe(secret.REDIS_PASSWORD);
    });
  });

  test('When the versions are read, then they are MySQL 8.4 and PostgreSQL 16', () => {
    expect(readFileSync(join(depsDir, 'mysql.yaml'), 'utf8')).toMatch(/image: mysql:8\.4/);
    expect(readFileSync(join(depsDir, 'postgres.yaml'), 'utf8')).toMatch(/image: postgres:16/);
  });

  test('When k8s/deps names an image, then it is an exact version, one the local cluster tags its stand-in with (scripts/cluster/node.sh)', () => {
    // The local cluster has no registry: node.sh tags one dependency image with these exact names, so a manifest
    // pinned to another tag or a digest would fail to start there. Pin k8s/deps and node.sh together.
    const tagged = [...readFileSync(join(repoRoot, 'scripts', 'cluster', 'node.sh'), 'utf8').matchAll(/docker\.io\/library\/([a-z0-9.:-]+)/g)]
      .map((match) => match[1]);
    expect(tagged.length).toBeGreaterThan(0);
    const files = ['redis.yaml', 'mysql.yaml', 'postgres.yaml', 'redis-sentinel/redis-ha.yaml', 'redis-sentinel/sentinel.yaml',
      'redis-cluster/redis-cluster.yaml', 'redis-cluster/setup-job.yaml'];
    for (const file of files) {
      for (const [, image] of readFileSync(join(depsDir, file), 'utf8').matchAll(/^\s+image: (\S+)$/gm)) {
        // Pinned to an exact version (no registry here to read digests from): major.minor.patch, or major.minor
        // for PostgreSQL, whose versions have two parts.
        const exact = image!.startsWith('postgres:') ? /:\d+\.\d+(-[a-z]+)?$/ : /:\d+\.\d+\.\d+(-[a-z]+)?$/;
        expect({ file, image, tagged: tagged.includes(image!), exact: exact.test(image!) })
          .toEqual({ file, image, tagged: true, exact: true });
      }
    }
  });

  describe('launch readiness (issue 23): every Redis bounded, protected and spread; the stores reachable only by the service', () => {
    const load = (...parts: string[]) => parseAllDocuments(readFileSync(join(depsDir, ...parts), 'utf8')).map((doc) => doc.toJS() as Manifest);
    const all = [
      ...load('00-namespace.yaml'), ...load('redis.yaml'), ...load('mysql.yaml'), ...load('postgres.yaml'), ...load('network-policies.yaml'),
      ...['redis-ha.yaml', 'sentinel.yaml', 'network-policies.yaml'].flatMap((file) => load('redis-sentinel', file)),
      ...['redis-cluster.yaml', 'setup-job.yaml', 'network-policies.yaml'].flatMap((file) => load('redis-cluster', file)),
    ];
    const get = (kind: string, name: string) => {
      const found = all.find((doc) => doc.kind === kind && doc.metadata.name === name);
      expect({ kind, name, found: found !== undefined }).toEqual({ kind, name, found: true });
      return found as Manifest;
    };
    /** bytes of a Kubernetes quantity (512Mi) or a redis.conf size (192mb: Redis reads mb as 1024 * 1024) */
    const bytes = (size: string): number => {
      const match = /^(\d+)(Ki|Mi|Gi|kb|mb|gb)?$/i.exec(size.trim());
      expect({ size, parsed: match !== null }).toEqual({ size, parsed: true });
      const unit = { ki: 2 ** 10, kb: 2 ** 10, mi: 2 ** 20, mb: 2 ** 20, gi: 2 ** 30, gb: 2 ** 30 }[(match![2] ?? '').toLowerCase() as 'mb'] ?? 1;
      return Number(match![1]) * unit;
    };
    const conf = (configMap: string) => {
      const text = get('ConfigMap', configMap).data['redis.conf'] as string;
      return Object.fromEntries(text.split('\n').map((line) => line.trim()).filter((line) => line && !line.startsWith('#'))
        .map((line) => [line.split(/\s+/)[0], line.split(/\s+/).slice(1).join(' ')]));
    };
    // [StatefulSet, ConfigMap of its redis.conf or undefined for the Sentinels, has replicas]
    const redisSets: Array<[string, string | undefined, boolean]> = [
      ['redis', 'redis', false], ['redis-ha', 'redis-ha', true], ['redis-cluster', 'redis-cluster', true], ['redis-sentinel', undefined, false],
    ];

    test.each(redisSets.filter(([, configMap]) => configMap))('When %s fills up, then it refuses writes (noeviction) at a maxmemory that leaves the fork headroom under its limit', (set, configMap) => {
      const settings = conf(configMap!);
      const limit = bytes(get('StatefulSet', set).spec.template.spec.containers[0].resources.limits.memory);
      expect(settings['maxmemory-policy']).toBe('noeviction');
      expect(settings.maxmemory).toBeDefined();
      // A fork (AOF rewrite, full resync) can copy every page of the data: twice maxmemory, plus the backlog, must fit.
      const backlog = settings['repl-backlog-size'] ? bytes(settings['repl-backlog-size']) : 0;
      expect(2 * bytes(settings.maxmemory!) + backlog).toBeLessThan(limit);
    });

    test.each(redisSets.filter(([, , replicated]) => replicated))('When %s has replicas, then a primary writes only with a replica in reach, and the backlog covers a burst', (_set, configMap) => {
      const settings = conf(configMap!);
      expect(Number(settings['min-replicas-to-write'])).toBeGreaterThanOrEqual(1);
      expect(Number(settings['min-replicas-max-lag'])).toBeGreaterThan(0);
      // ~400 bytes replicated per issued coupon, 10,000 issued/s, a replica away for 10 s: 40 MB at least.
      expect(bytes(settings['repl-backlog-size']!)).toBeGreaterThanOrEqual(400 * 10_000 * 10);
    });

    test.each(redisSets)('When %s runs, then its memory is reserved (request = limit), its CPU requested and not throttled by a limit, and it has the data priority class, above the api', (set) => {
      const pod = get('StatefulSet', set).spec.template.spec;
      for (const container of [...(pod.initContainers ?? []), ...pod.containers]) {
        expect(container.resources.limits.memory).toBe(container.resources.requests.memory);
        expect(container.resources.requests.cpu).toBeDefined();
        expect(container.resources.limits.cpu).toBeUndefined();
      }
      expect(pod.priorityClassName).toBe('coupon-data');
      // It exists before any pod names it: 00-namespace.yaml is applied first.
      const priority = get('PriorityClass', 'coupon-data');
      expect(load('00-namespace.yaml').some((doc) => doc.kind === 'PriorityClass')).toBe(true);
      expect(priority.value).toBeGreaterThan(0);
      expect(priority.globalDefault).toBe(false);
    });

    test.each(redisSets.filter(([set]) => set !== 'redis'))('When %s is scheduled, then its pods keep off each other\'s nodes', (set) => {
      const pod = get('StatefulSet', set).spec.template.spec;
      const terms = [
        ...(pod.affinity?.podAntiAffinity?.requiredDuringSchedulingIgnoredDuringExecution ?? []),
        ...(pod.affinity?.podAntiAffinity?.preferredDuringSchedulingIgnoredDuringExecution ?? []).map((term: { podAffinityTerm: unknown }) => term.podAffinityTerm),
      ];
      expect(terms).toContainEqual({ topologyKey: 'kubernetes.io/hostname', labelSelector: { matchLabels: { 'app.kubernetes.io/name': set } } });
    });

    // The stores, their ports, and who besides the service's pods may connect.
    const stores: Array<[string, number[], string[]]> = [
      ['redis', [6379], ['keda-operator']], ['mysql', [3306], []], ['postgres', [5432], []],
      ['redis-ha', [6379], ['redis-ha', 'redis-sentinel', 'keda-operator']],
      ['redis-sentinel', [26379], ['redis-ha', 'redis-sentinel', 'keda-operator']],
      ['redis-cluster', [6379, 16379], ['redis-cluster', 'redis-cluster-create', 'keda-operator']],
    ];
    test.each(stores)('When anything connects to %s, then a NetworkPolicy lets in only the api, worker and migrations pods (and its own peers)', (name, ports, peers) => {
      const policy = get('NetworkPolicy', name).spec;
      expect(policy.podSelector).toEqual({ matchLabels: { 'app.kubernetes.io/name': name } });
      expect(policy.policyTypes).toEqual(['Ingress']);
      const selected = get('StatefulSet', name).spec.template.metadata.labels['app.kubernetes.io/name'];
      expect(selected).toBe(name);
      for (const rule of policy.ingress) {
        // A rule without `from` would admit everyone.
        expect(rule.from?.length).toBeGreaterThan(0);
        expect(rule.ports.map((port: { port: number }) => port.port)).toEqual(ports);
      }
      const from = policy.ingress.flatMap((rule: { from: unknown[] }) => rule.from) as Array<{ podSelector?: any; namespaceSelector?: any }>;
      expect(from[0]).toEqual({
        namespaceSelector: {},
        podSelector: {
          matchLabels: { 'app.kubernetes.io/part-of': 'coupon' },
          matchExpressions: [{ key: 'app.kubernetes.io/component', operator: 'In', values: ['api', 'worker', 'migrations'] }],
        },
      });
      // Every other peer is one named pod kind: no namespace-wide or label-less selector.
      const others = from.slice(1).map((peer) => peer.podSelector?.matchLabels?.['app.kubernetes.io/name'] ?? peer.podSelector?.matchLabels?.app);
      expect(others).toEqual(peers);
    });
  });
});

describe('skaffold.yaml', () => {
  const text = readFileSync(join(repoRoot, 'skaffold.yaml'), 'utf8');

  test(`When validated, then every config matches skaffold's ${skaffoldSchemaVersion} schema`, () => {
    const docs = skaffoldDocuments(text);
    expect(docs.length).toBeGreaterThanOrEqual(1);
    const files = docs.map((doc, index) => {
      expect(doc).toContain(`apiVersion: skaffold/${skaffoldSchemaVersion}`);
      const file = join(scratch, `skaffold-${index}.yaml`);
      writeFileSync(file, doc);
      return file;
    });
    const result = run('check-jsonschema', ['--schemafile', skaffoldSchemaPath(), ...files]);
    expect({ status: result.status, output: result.output }).toMatchObject({ status: 0 });
  });

  test('When a field is misspelt, then the schema check fails', () => {
    const broken = join(scratch, 'skaffold-broken.yaml');
    const doc = skaffoldDocuments(text).find((d) => d.includes('setValueTemplates'));
    expect(doc).toBeDefined();
    writeFileSync(broken, (doc as string).replace('setValueTemplates', 'setValueTemplate'));
    const result = run('check-jsonschema', ['--schemafile', skaffoldSchemaPath(), broken]);
    expect(result.status).not.toBe(0);
    expect(result.output).toContain("'setValueTemplate' was unexpected");
  });

  test('When skaffold deploys, then the image is set by setValueTemplates and the api is port-forwarded', () => {
    expect(text).toContain('image.repository: "{{.IMAGE_REPO_coupon}}"');
    expect(text).toContain('image.tag: "{{.IMAGE_TAG_coupon}}@{{.IMAGE_DIGEST_coupon}}"');
    expect(text).toMatch(/resourceName: coupon-api/);
    expect(text).toMatch(/name: production-like/);
  });

  test('When skaffold reads its paths, then every referenced file exists', () => {
    const paths = [...text.matchAll(/^\s*(?:-\s+)?(?:dockerfile: |chartPath: |value: )?((?:k8s|charts)\/[\w./-]+|Dockerfile)\s*$/gm)].map((m) => m[1] as string);
    expect(paths.length).toBeGreaterThanOrEqual(5);
    for (const path of paths) expect({ path, exists: existsSync(join(repoRoot, path)) }).toEqual({ path, exists: true });
  });
});

describe('Dockerfile', () => {
  const text = readFileSync(join(repoRoot, 'Dockerfile'), 'utf8');

  test('When hadolint lints it, then nothing is reported at warning level or above', () => {
    const result = run('hadolint', ['--failure-threshold', 'warning', '--no-color', join(repoRoot, 'Dockerfile')]);
    expect({ status: result.status, output: result.output }).toMatchObject({ status: 0 });
  });

  test('When a Dockerfile has warning-level problems, then hadolint fails it', () => {
    const broken = join(scratch, 'Dockerfile');
    writeFileSync(broken, 'FROM node:latest\nRUN cd /app && npm install\nCMD node src/api/main.ts\n');
    const result = run('hadolint', ['--failure-threshold', 'warning', '--no-color', broken]);
    expect(result.status).not.toBe(0);
    expect(result.output).toContain('DL3007'); // :latest
    expect(result.output).toContain('DL3025'); // shell-form CMD
  });

  test('When built, then it is a multi-stage Node 24 slim image running node as a non-root user', () => {
    expect(text).toMatch(/^ARG NODE_IMAGE=node:24\.\d+\.\d+-[a-z]+-slim$/m);
    expect(text.match(/^FROM /gm)?.length).toBeGreaterThanOrEqual(2);
    expect(text).toMatch(/^RUN npm ci --omit=dev/m);
    expect(text).toMatch(/^ENV NODE_ENV=production$/m);
    expect(text).toMatch(/^USER (?!0\b|root\b)\S+$/m);
    expect(text).toMatch(/^ENTRYPOINT \["node"\]$/m);
    expect(text).toMatch(/^CMD \["src\/api\/main\.ts"\]$/m);
    expect(text).not.toMatch(/^(ENTRYPOINT|CMD) .*npm/m);
  });

  test('When the build context is sent, then .dockerignore keeps node_modules and the tools out', () => {
    const ignore = readFileSync(join(repoRoot, '.dockerignore'), 'utf8');
    for (const entry of ['**/node_modules', '.git', '.tools', 'test']) expect(ignore.split('\n')).toContain(entry);
  });
});

describe('YAML', () => {
  test('When yamllint checks k8s/, skaffold.yaml and the chart values and suites, then it is clean', () => {
    const chartYaml = ['Chart.yaml', 'values.yaml', 'ci', 'tests'].map((p) => join(repoRoot, 'charts', 'coupon', p));
    const result = run('yamllint', ['--strict', '-c', join(repoRoot, '.yamllint.yaml'), join(repoRoot, 'k8s'), join(repoRoot, 'skaffold.yaml'), ...chartYaml]);
    expect({ status: result.status, output: result.output }).toMatchObject({ status: 0 });
  });

  test('When yamllint meets broken YAML, then it fails', () => {
    const broken = join(scratch, 'broken.yaml');
    writeFileSync(broken, 'key: value\nkey: again\n  bad-indent: [\n');
    const result = run('yamllint', ['-c', join(repoRoot, '.yamllint.yaml'), broken]);
    expect(result.status).not.toBe(0);
  });
});
