#!/usr/bin/env bash
# Step 6: the Ingress STAND-IN (scripts/cluster/ingress-stand-in.ts + Debian's nginx), serving the IngressClass
# coupon-stand-in on http://127.0.0.1:$INGRESS_PORT (loopback only). No Ingress controller builds from the package
# registries; if one becomes buildable, it replaces this step and the IngressClass below.
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
if ! running ingress-stand-in; then
  say "ingress stand-in (nginx from the Ingress objects) on 127.0.0.1:$INGRESS_PORT"
  start_daemon ingress-stand-in env KUBECTL="$KUBECTL" KUBECONFIG="$KUBECONFIG" STAND_IN_DIR="$STATE/ingress" \
    INGRESS_PORT="$INGRESS_PORT" INGRESS_CLASS=coupon-stand-in "$NODE" "$ROOT/scripts/cluster/ingress-stand-in.ts"
fi
wait_for 60 "the ingress stand-in on 127.0.0.1:$INGRESS_PORT" curl -s -o /dev/null "http://127.0.0.1:$INGRESS_PORT/"
