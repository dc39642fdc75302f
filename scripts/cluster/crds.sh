#!/usr/bin/env bash
# Step (optional, `npm run cluster` runs it after the node is up): the CRDs that charts/coupon/ci/production-values.yaml
# needs (prometheus-operator's ServiceMonitor and PrometheusRule, KEDA's ScaledObject and TriggerAuthentication), installed in the cluster so
# that the production values can be checked against the API server (test:cluster, check 7).
# The upstream projects generate their CRD manifests from their Go API types with controller-gen; so does this
# step, from the same Go modules at pinned versions (Go module proxy), into .tools/cluster/crds/ (cached).
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CONTROLLER_TOOLS_VERSION=v0.23.0
PROM_OPERATOR_APIS_VERSION=v0.95.2   # github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring
KEDA_VERSION=v2.17.2

out="$CACHE/crds/prom-$PROM_OPERATOR_APIS_VERSION-keda-$KEDA_VERSION"
if [ ! -f "$out/.complete" ]; then
  mod="$CACHE/crds/src"
  mkdir -p "$mod" "$out"
  cat >"$mod/go.mod" <<EOF
module coupon.local/crds

go 1.24.0

require (
	sigs.k8s.io/controller-tools $CONTROLLER_TOOLS_VERSION
	github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring $PROM_OPERATOR_APIS_VERSION
	github.com/kedacore/keda/v2 $KEDA_VERSION
)
EOF
  cat >"$mod/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "github.com/kedacore/keda/v2/apis/keda/v1alpha1"
	_ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	_ "sigs.k8s.io/controller-tools/cmd/controller-gen"
)
EOF
  export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
  say "CRDs: go mod tidy, go build of controller-gen $CONTROLLER_TOOLS_VERSION (~3 min cold at -p 1)"
  (cd "$mod" && heavy go mod tidy && heavy go build -p 1 -trimpath -o "$CACHE/crds/controller-gen" sigs.k8s.io/controller-tools/cmd/controller-gen) \
    >"$CACHE/crds/build.log" 2>&1 || { tail -20 "$CACHE/crds/build.log"; die "building controller-gen failed"; }
  say "CRDs: generating ServiceMonitor, PrometheusRule (prometheus-operator $PROM_OPERATOR_APIS_VERSION) and ScaledObject (KEDA $KEDA_VERSION)"
  for p in github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1 github.com/kedacore/keda/v2/apis/keda/v1alpha1; do
    (cd "$mod" && heavy "$CACHE/crds/controller-gen" crd:crdVersions=v1,maxDescLen=0 paths="$p" output:crd:dir="$out") \
      >>"$CACHE/crds/build.log" 2>&1 || { tail -20 "$CACHE/crds/build.log"; die "controller-gen failed for $p"; }
  done
  touch "$out/.complete"
fi
files=()
for f in monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml keda.sh_scaledobjects.yaml keda.sh_triggerauthentications.yaml; do
  [ -f "$out/$f" ] || die "controller-gen wrote no $f (see $CACHE/crds/build.log)"
  files+=(-f "$out/$f")
done
kubectl apply --server-side "${files[@]}" >/dev/null
kubectl wait --for condition=established --timeout=60s crd/servicemonitors.monitoring.coreos.com \
  crd/prometheusrules.monitoring.coreos.com crd/scaledobjects.keda.sh crd/triggerauthentications.keda.sh >/dev/null
say "CRDs established: servicemonitors and prometheusrules (monitoring.coreos.com), scaledobjects and triggerauthentications (keda.sh)"
