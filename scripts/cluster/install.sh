#!/usr/bin/env bash
# Step 5: the chart, installed (or upgraded, on a second run) with `helm upgrade --install --wait`: the migrations
# hook Job first, then the api and worker Deployments Ready. Values: the chart's defaults (they reach k8s/deps),
# scripts/cluster/values.yaml, the image tag images.sh built, and any extra helm arguments given to this script.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ -x "$HELM" ] || die "no helm in .tools/bin: run bash scripts/install-k8s-tools.sh"
tag=$(cat "$IMAGES/app.tag")
# A release whose first install failed, or a helm that was interrupted, leaves nothing to upgrade from: such a
# release is removed (or rolled back to its last deployed revision) first.
status=$("$HELM" history "$RELEASE" -n "$NAMESPACE" -o json 2>/dev/null | python3 -c 'import json,sys
h = json.load(sys.stdin)
last = h[-1]["status"] if h else "none"
deployed = [r["revision"] for r in h if r["status"] in ("deployed", "superseded")]
print(last, deployed[-1] if deployed else 0)' 2>/dev/null || echo "none 0")
read -r last deployed <<<"$status"
if [ "$last" != none ] && [ "$last" != deployed ]; then
  if [ "$deployed" != 0 ]; then
    say "release $RELEASE is $last: rolling back to revision $deployed"
    "$HELM" rollback "$RELEASE" "$deployed" -n "$NAMESPACE" --wait --timeout 5m >/dev/null
  else
    say "release $RELEASE is $last and was never deployed: uninstalling it"
    "$HELM" uninstall "$RELEASE" -n "$NAMESPACE" --wait --timeout 5m >/dev/null
  fi
fi
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
