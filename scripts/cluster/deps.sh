#!/usr/bin/env bash
# Step 4: k8s/deps (Redis, MySQL, PostgreSQL in namespace coupon-deps) applied unchanged, on hostPath
# PersistentVolumes under .cluster/volumes pre-bound to the StatefulSets' claims; waits for all three Ready.
# `kubectl apply -f k8s/deps/` takes the files in name order: 00-namespace.yaml comes first.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

# claim size: the StatefulSets' volumeClaimTemplates (data-<name>-0).
for pv in redis:1Gi mysql:2Gi postgres:1Gi; do
  name=${pv%%:*} size=${pv#*:}
  dir="$STATE/volumes/$DEPS_NAMESPACE-data-$name-0"
  install -d -o 999 -g 999 -m 0750 "$dir"
  kubectl apply -f - >/dev/null <<YAML
apiVersion: v1
kind: PersistentVolume
metadata:
  name: coupon-deps-data-$name-0
  labels: {app.kubernetes.io/part-of: coupon-cluster}
spec:
  capacity: {storage: $size}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: ""
  claimRef: {namespace: $DEPS_NAMESPACE, name: data-$name-0}
  hostPath: {path: $dir, type: Directory}
YAML
done

say "kubectl apply -f k8s/deps/"
kubectl apply -f "$ROOT/k8s/deps/" >/dev/null
# A new dependency image (same names, retagged by node.sh) reaches running pods only when they restart.
deps_tag=$(cat "$IMAGES/deps.tag")
if [ -f "$STATE/deps.tag" ] && [ "$(cat "$STATE/deps.tag")" != "$deps_tag" ]; then
  say "dependency image changed to $deps_tag: restarting its pods"
  kubectl -n "$DEPS_NAMESPACE" delete pod redis-0 mysql-0 postgres-0 --ignore-not-found --wait=false >/dev/null
  sleep 2
fi
echo "$deps_tag" >"$STATE/deps.tag"
for s in redis mysql postgres; do
  # A pod the scheduler saw before its claim (FailedScheduling "unbound immediate PersistentVolumeClaims. not
  # found") may wait for the scheduler's 5-minute sweep of unschedulable pods although its claim is bound by
  # then: such a pod, still Pending after 60 s, is deleted once and its StatefulSet makes it again.
  if ! kubectl -n "$DEPS_NAMESPACE" rollout status "statefulset/$s" --timeout=60s >/dev/null 2>&1; then
    if [ "$(kubectl -n "$DEPS_NAMESPACE" get pod "$s-0" -o jsonpath='{.status.phase}' 2>/dev/null)" = Pending ]; then
      say "pod $s-0 still Pending after 60 s ($(kubectl -n "$DEPS_NAMESPACE" get pvc "data-$s-0" -o jsonpath='{.status.phase}' 2>/dev/null) claim): deleting it once"
      kubectl -n "$DEPS_NAMESPACE" delete pod "$s-0" --wait=false >/dev/null
    fi
    kubectl -n "$DEPS_NAMESPACE" rollout status "statefulset/$s" --timeout=300s >/dev/null ||
      { kubectl -n "$DEPS_NAMESPACE" describe pod "$s-0" | tail -25; kubectl -n "$DEPS_NAMESPACE" logs "$s-0" --tail=30 || true
        die "statefulset $s did not become ready"; }
  fi
done
say "dependencies Ready: $(kubectl -n "$DEPS_NAMESPACE" get pods --no-headers | awk '{printf "%s %s; ", $1, $3}')"
