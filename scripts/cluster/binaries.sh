#!/usr/bin/env bash
# Step 1: the cluster's server binaries, built from the Go module proxy in ONE Go module with ONE `go build`:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy, kubectl, CoreDNS (only the
# bind, errors, cache and kubernetes plugins), metrics-server, and a pause program for the pod sandbox image.
# Output: .tools/cluster/k8s-<version>/bin (kept; skipped when every binary is there). Cold: ~15 min at -p 1.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TARGETS=(etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl coredns metrics-server pause)

all_there() { local t; for t in "${TARGETS[@]}"; do [ -x "$BIN/$t" ] || return 1; done; }
if all_there; then say "binaries present in ${BIN#"$ROOT"/}"; exit 0; fi

command -v go >/dev/null || die "Go is needed (the Kubernetes binaries are built from the Go module proxy)"
mod="$CACHE/k8s-$K8S_VERSION/src"
mkdir -p "$mod/cmd/etcd" "$mod/cmd/coredns" "$mod/cmd/pause" "$BIN"

# k8s.io/kubernetes replaces every staging module with a local folder; as a dependency each needs a replace line
# naming its published version. Taken from its own go.mod so the list cannot drift.
kmod=$(cd "$mod" && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$K8S_VERSION" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
{
  echo 'module coupon.local/cluster-binaries'
  echo
  echo 'go 1.24.0'
  echo
  echo 'require ('
  echo "	k8s.io/kubernetes $K8S_VERSION"
  echo "	go.etcd.io/etcd/server/v3 $ETCD_VERSION"
  echo "	github.com/coredns/coredns $COREDNS_VERSION"
  echo "	sigs.k8s.io/metrics-server $METRICS_SERVER_VERSION"
  echo ')'
  echo
  grep -oE '^\s*k8s\.io/[a-z0-9-]+ => \./staging/src/k8s\.io/[a-z0-9-]+' "$kmod" |
    awk -v v="$K8S_STAGING_VERSION" '{print "replace " $1 " => " $1 " " v}'
} >"$mod/go.mod"

cat >"$mod/cmd/etcd/main.go" <<'EOF'
// etcd's own main package lives in a module that is not served at a matching version; etcdmain is its body.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
EOF

cat >"$mod/cmd/coredns/main.go" <<'EOF'
// CoreDNS with the four plugins the cluster needs: answers for cluster.local from the API, nothing forwarded.
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/cache"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
)

func init() {
	dnsserver.Directives = []string{"bind", "errors", "cache", "kubernetes"}
}

func main() { coremain.Run() }
EOF

cat >"$mod/cmd/pause/main.go" <<'EOF'
// The pod sandbox's process: holds the namespaces, reaps nothing, exits on SIGINT or SIGTERM.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	c := make(chan os.Signal, 1)
	signal.Notify(c, syscall.SIGINT, syscall.SIGTERM)
	<-c
	os.Exit(0)
}
EOF

# The main packages of other modules stay required through a tools file importing their app packages.
mkdir -p "$mod/tools"
cat >"$mod/tools/tools.go" <<'EOF'
//go:build tools

package tools

import (
	_ "k8s.io/kubectl/pkg/cmd"
	_ "k8s.io/kubernetes/cmd/kube-apiserver/app"
	_ "k8s.io/kubernetes/cmd/kube-controller-manager/app"
	_ "k8s.io/kubernetes/cmd/kube-proxy/app"
	_ "k8s.io/kubernetes/cmd/kube-scheduler/app"
	_ "k8s.io/kubernetes/cmd/kubelet/app"
	_ "sigs.k8s.io/metrics-server/cmd/metrics-server/app"
)
EOF

export GOFLAGS=-mod=mod CGO_ENABLED=0 GOTOOLCHAIN=${GOTOOLCHAIN:-auto}
say "resolving modules (go mod tidy, ~1 min cold)"
(cd "$mod" && heavy go mod tidy) >"$mod/tidy.log" 2>&1 || { tail -20 "$mod/tidy.log"; die "go mod tidy failed"; }
grep -q "k8s.io/kubernetes $K8S_VERSION" "$mod/go.mod" || die "go mod tidy moved k8s.io/kubernetes off $K8S_VERSION"

pkgs=(
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy
  k8s.io/kubernetes/cmd/kubectl sigs.k8s.io/metrics-server/cmd/metrics-server
  ./cmd/etcd ./cmd/coredns ./cmd/pause
)
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
ldflags="-s -w"
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  ldflags+=" -X $p.gitVersion=$K8S_VERSION -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done

total=$(cd "$mod" && go list -deps "${pkgs[@]}" 2>/dev/null | wc -l)
say "go build of ${#TARGETS[@]} binaries ($total packages; cold ~15 min at -p 1, progress every 30 s)"
log="$mod/build.log"
(cd "$mod" && heavy go build -p 1 -v -trimpath -ldflags "$ldflags" -o "$BIN/" "${pkgs[@]}") >"$log" 2>&1 &
build=$!
while kill -0 "$build" 2>/dev/null; do
  sleep 30
  kill -0 "$build" 2>/dev/null && say "  go build: $(grep -c . "$log") of ~$total packages compiled or checked"
done
wait "$build" || { tail -30 "$log"; die "go build failed (log: ${log#"$ROOT"/})"; }
all_there || die "go build finished but binaries are missing in $BIN"
say "binaries built: $(du -sh "$BIN" | cut -f1) in ${BIN#"$ROOT"/}"
