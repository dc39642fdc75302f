#!/usr/bin/env bash
# Step 7: a real Prometheus in the cluster (namespace coupon-monitoring), evaluating the chart's own alert rules on
# the release's pods; test/cluster/prometheus.check.ts fires and resolves each alert and queries every dashboard
# panel through it (issue 22).
#   binary  prometheus from github.com/prometheus/prometheus (the module promtool comes from), built with Go by
#           scripts/install-prom-tools.sh into .tools/bin/prometheus (cached; ~2 min cold, shared with promtool's
#           module downloads)
#   image   that one static binary in an image of its own (buildah, no registry), imported into containerd
#   config  scrapes /metrics on the `ops` port of the api and worker Services (Kubernetes service discovery,
#           endpoint slices of namespace coupon), as the chart's ServiceMonitor does, every 5 s; the rules are the
#           chart's PrometheusRule rendered with scripts/cluster/values.yaml (short `for:`s for the checks)
# Idempotent: a changed config restarts the pod (a checksum on the pod template).
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=lib.sh
. "$here/lib.sh"
need_root

MON_NAMESPACE=coupon-monitoring
bash "$ROOT/scripts/install-prom-tools.sh" prometheus
PROM_BIN="$ROOT/.tools/bin/prometheus"
version=$("$PROM_BIN" --version 2>&1 | head -n1 | awk '{ print $3 }')
PROM_IMAGE=localhost/coupon-prometheus:$version

B=(buildah --root "$CACHE/buildah/storage" --runroot "$CACHE/buildah/run" --storage-driver overlay)
ctr_() { ctr --address "$CONTAINERD_ADDRESS" -n k8s.io "$@"; }
if ! ctr_ images ls -q | grep -qx "$PROM_IMAGE"; then
  if [ "$(cat "$IMAGES/prometheus.tag" 2>/dev/null)" != "$PROM_IMAGE" ] || [ ! -f "$IMAGES/prometheus.tar" ]; then
    say "prometheus image $PROM_IMAGE (the static binary of .tools/bin/prometheus)"
    c=$("${B[@]}" from scratch)
    "${B[@]}" copy "$c" "$PROM_BIN" /bin/prometheus >/dev/null
    "${B[@]}" config --entrypoint '["/bin/prometheus"]' --user 65534:65534 "$c"
    "${B[@]}" rmi -f "$PROM_IMAGE" >/dev/null 2>&1 || true
    heavy "${B[@]}" commit -q --rm "$c" "$PROM_IMAGE" >/dev/null
    rm -f "$IMAGES/prometheus.tar.tmp"
    heavy "${B[@]}" push -q "$PROM_IMAGE" "docker-archive:$IMAGES/prometheus.tar.tmp:$PROM_IMAGE" >/dev/null
    mv "$IMAGES/prometheus.tar.tmp" "$IMAGES/prometheus.tar"
    echo "$PROM_IMAGE" >"$IMAGES/prometheus.tag"
  fi
  say "importing $PROM_IMAGE into containerd"
  heavy ctr --address "$CONTAINERD_ADDRESS" -n k8s.io images import "$IMAGES/prometheus.tar" >/dev/null
fi

# The chart's rules as the release would render them (the lab's values), the PrometheusRule's spec as a rule file.
conf=$(mktemp -d)
trap 'rm -rf "$conf"' EXIT
"$HELM" template "$RELEASE" "$ROOT/charts/coupon" -n "$NAMESPACE" -f "$here/values.yaml" \
  --set metrics.prometheusRule.enabled=true --show-only templates/observability/prometheusrule.yaml >"$conf/rule.yaml"
(cd "$ROOT" && node -e '
  const { parse } = require("yaml");
  const rule = parse(require("fs").readFileSync(process.argv[1], "utf8"));
  process.stdout.write(JSON.stringify(rule.spec, null, 1));
' "$conf/rule.yaml") >"$conf/rules.yml"
cat >"$conf/prometheus.yml" <<YAML
global: {scrape_interval: 5s, scrape_timeout: 4s, evaluation_interval: 5s}
rule_files: [/etc/prometheus/rules.yml]
scrape_configs:
  # The chart's ServiceMonitor, by hand: /metrics on the ops port of the api and worker Services of the release;
  # job = the Service's name, namespace and pod from the target.
  - job_name: coupon
    kubernetes_sd_configs:
      - role: endpointslice
        namespaces: {names: [$NAMESPACE]}
    relabel_configs:
      - {source_labels: [__meta_kubernetes_service_label_app_kubernetes_io_instance], regex: $RELEASE, action: keep}
      - {source_labels: [__meta_kubernetes_service_label_app_kubernetes_io_component], regex: api|worker, action: keep}
      - {source_labels: [__meta_kubernetes_endpointslice_port_name], regex: ops, action: keep}
      - {source_labels: [__meta_kubernetes_namespace], target_label: namespace}
      - {source_labels: [__meta_kubernetes_pod_name], target_label: pod}
      - {source_labels: [__meta_kubernetes_service_name], target_label: job}
YAML
sum=$(cat "$conf/prometheus.yml" "$conf/rules.yml" | sha256sum | cut -c1-12)

kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: $MON_NAMESPACE, labels: {app.kubernetes.io/part-of: coupon-cluster}}
---
apiVersion: v1
kind: ServiceAccount
metadata: {name: prometheus, namespace: $MON_NAMESPACE}
---
# Service discovery of the release's namespace only.
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: coupon-prometheus, namespace: $NAMESPACE}
rules:
  - {apiGroups: [""], resources: [services, endpoints, pods], verbs: [get, list, watch]}
  - {apiGroups: [discovery.k8s.io], resources: [endpointslices], verbs: [get, list, watch]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: coupon-prometheus, namespace: $NAMESPACE}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: coupon-prometheus}
subjects: [{kind: ServiceAccount, name: prometheus, namespace: $MON_NAMESPACE}]
YAML
kubectl -n "$MON_NAMESPACE" create configmap prometheus --from-file="$conf/prometheus.yml" --from-file="$conf/rules.yml" \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null
kubectl apply -f - >/dev/null <<YAML
apiVersion: apps/v1
kind: Deployment
metadata: {name: prometheus, namespace: $MON_NAMESPACE, labels: {app.kubernetes.io/name: prometheus}}
spec:
  replicas: 1
  strategy: {type: Recreate}
  selector: {matchLabels: {app.kubernetes.io/name: prometheus}}
  template:
    metadata:
      labels: {app.kubernetes.io/name: prometheus}
      annotations: {checksum/config: "$sum"}
    spec:
      serviceAccountName: prometheus
      securityContext: {runAsUser: 65534, runAsGroup: 65534, runAsNonRoot: true, fsGroup: 65534}
      containers:
        - name: prometheus
          image: $PROM_IMAGE
          imagePullPolicy: Never
          args: [--config.file=/etc/prometheus/prometheus.yml, --storage.tsdb.path=/prometheus, --storage.tsdb.retention.time=2h]
          ports: [{name: http, containerPort: 9090}]
          readinessProbe: {httpGet: {path: /-/ready, port: http}, periodSeconds: 2}
          # No CPU request: the lab node's CPU is spoken for by the release and its dependencies.
          resources: {requests: {memory: 128Mi}, limits: {memory: 512Mi}}
          securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
          volumeMounts:
            - {name: config, mountPath: /etc/prometheus}
            - {name: data, mountPath: /prometheus}
      volumes:
        - {name: config, configMap: {name: prometheus}}
        - {name: data, emptyDir: {}}
YAML
say "waiting for Prometheus ($PROM_IMAGE) in namespace $MON_NAMESPACE"
kubectl -n "$MON_NAMESPACE" rollout status deployment/prometheus --timeout=180s >/dev/null ||
  die "Prometheus did not become ready (kubectl -n $MON_NAMESPACE describe pod)"
ip=$(kubectl -n "$MON_NAMESPACE" get pods -l app.kubernetes.io/name=prometheus -o jsonpath='{.items[0].status.podIP}')
say "Prometheus ready at http://$ip:9090 (targets: /api/v1/targets, alerts: /api/v1/alerts)"
