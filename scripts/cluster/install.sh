#!/usr/bin/env bash
# Step 5: the chart, installed (or upgraded, on a second run) with `helm upgrade --install --wait`: the migrations
# hook Job first, then the api and worker Deployments Ready. Values: the chart's defaults (they reach k8s/deps),
# scripts/cluster/values.yaml, the image tag images.sh built, and any extra helm arguments given to this script.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ -x "$HELM" ] || die "no helm in .tools/bin: run bash scripts/install-k8s-tools.sh"
tag=$(cat "$IMAGES/app.tag")
action=install; "$HELM" status "$RELEASE" -n "$NAMESPACE" >/dev/null 2>&1 && action=upgrade
say "helm $action $RELEASE (image ${tag}; --wait, hooks included; ~1-2 min)"
log="$STATE/logs/helm-$action.log"
mkdir -p "$STATE/logs"
if ! "$HELM" upgrade --install "$RELEASE" "$ROOT/charts/coupon" --namespace "$NAMESPACE" --create-namespace \
    -f "$ROOT/scripts/cluster/values.yaml" --set "image.repository=${tag%:*}" --set "image.tag=${tag##*:}" \
    --wait --timeout 10m "$@" >"$log" 2>&1; then
  cat "$log"
  kubectl -n "$NAMESPACE" get pods -o wide || true
  kubectl -n "$NAMESPACE" get events --sort-by=.lastTimestamp | tail -20 || true
  die "helm $action failed (log: ${log#"$ROOT"/})"
fi
say "helm $action done: $(kubectl -n "$NAMESPACE" get pods --no-headers | awk '{printf "%s %s; ", $1, $3}')"
