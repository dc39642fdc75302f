#!/usr/bin/env bash
# Step 6: the Ingress STAND-IN (scripts/cluster/ingress-stand-in.ts + Debian's nginx), serving the IngressClass
# coupon-stand-in on http://127.0.0.1:$INGRESS_PORT, and with client keep-alive on :$INGRESS_KEEPALIVE_PORT (loopback
# only). No Ingress controller builds from the package registries; if one becomes buildable, it replaces this step
# and the IngressClass below.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

kubectl apply -f - >/dev/null <<YAML
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata:
  name: coupon-stand-in
  labels: {app.kubernetes.io/part-of: coupon-cluster}
  annotations:
    description: "Served by scripts/cluster/ingress-stand-in.ts (nginx configured from the Ingress objects): a stand-in, not a controller"
spec:
  controller: coupon.local/ingress-stand-in
YAML
mkdir -p "$STATE/ingress"
# A stand-in started from an older source (a second `npm run cluster` after it changed) is restarted with its nginx.
source_hash=$(sha256sum "$ROOT/scripts/cluster/ingress-stand-in.ts" | cut -c1-16)
if running ingress-stand-in && [ "$(cat "$STATE/ingress/source.sha" 2>/dev/null || true)" != "$source_hash" ]; then
  say "the ingress stand-in's source changed: restarting it and its nginx"
  nginx_pid=$(cat "$STATE/ingress/nginx.pid" 2>/dev/null || true)
  stop_daemon ingress-stand-in 10   # its SIGTERM handler quits nginx gracefully
  if [ -n "$nginx_pid" ]; then
    for ((i = 0; i < 75; i++)); do kill -0 "$nginx_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$nginx_pid" 2>/dev/null || true
  fi
fi
if ! running ingress-stand-in; then
  say "ingress stand-in (nginx from the Ingress objects) on 127.0.0.1:$INGRESS_PORT and :$INGRESS_KEEPALIVE_PORT (keep-alive)"
  start_daemon ingress-stand-in env KUBECTL="$KUBECTL" KUBECONFIG="$KUBECONFIG" STAND_IN_DIR="$STATE/ingress" \
    INGRESS_PORT="$INGRESS_PORT" INGRESS_KEEPALIVE_PORT="$INGRESS_KEEPALIVE_PORT" INGRESS_CLASS=coupon-stand-in \
    "$NODE" "$ROOT/scripts/cluster/ingress-stand-in.ts"
  echo "$source_hash" >"$STATE/ingress/source.sha"
fi
wait_for 60 "the ingress stand-in on 127.0.0.1:$INGRESS_PORT" curl -s -o /dev/null "http://127.0.0.1:$INGRESS_PORT/"
wait_for 60 "the ingress stand-in on 127.0.0.1:$INGRESS_KEEPALIVE_PORT" curl -s -o /dev/null "http://127.0.0.1:$INGRESS_KEEPALIVE_PORT/"
