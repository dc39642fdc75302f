#!/usr/bin/env bash
# npm run cluster:down: stops and removes everything scripts/cluster started, and nothing else:
# the pods (deleted through the API while it runs, so the kubelet tears their sandboxes and networks down), the
# host processes of .cluster/pids (and the containerd shims of that containerd), kube-proxy's iptables rules,
# the no-egress FORWARD rules, the bridge and the node's link, the sysctls it changed (restored), every mount
# under .cluster, then .cluster itself. The caches under .tools/cluster (binaries, rootfs, images) stay.
set -uo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
[ -d "$STATE" ] || { say "nothing to stop (.cluster does not exist)"; exit 0; }

# 1. The stand-in, then the workloads, gracefully while the API answers (bounded: a stuck pod is killed below).
stop_daemon ingress-stand-in 10
if [ -f "$STATE/ingress/nginx.pid" ]; then
  p=$(cat "$STATE/ingress/nginx.pid"); kill -QUIT "$p" 2>/dev/null; sleep 1; kill -KILL "$p" 2>/dev/null
fi
if running kube-apiserver && running kubelet && kubectl get --raw /readyz >/dev/null 2>&1; then
  say "deleting the workloads (namespaces $NAMESPACE, $DEPS_NAMESPACE)"
  kubectl delete namespace "$NAMESPACE" "$DEPS_NAMESPACE" --ignore-not-found --wait=false >/dev/null 2>&1
  for _ in $(seq 1 45); do
    n=$(kubectl get pods -A --no-headers 2>/dev/null | wc -l)
    [ "$n" = 0 ] && break
    sleep 2
  done
  kubectl delete pods -A --all --grace-period=0 --force >/dev/null 2>&1
  sleep 3
fi

# 2. Host processes, newest first. containerd's shims outlive it: found by the socket address on their command line.
for d in metrics-server coredns kube-proxy kubelet kube-scheduler kube-controller-manager kube-apiserver etcd; do
  running "$d" && say "stopping $d"
  stop_daemon "$d" 15
done
shims=()
if [ -d "$STATE/run/containerd" ]; then
  for p in $(pgrep -x containerd-shim-runc-v2 2>/dev/null; pgrep -f containerd-shim 2>/dev/null); do
    grep -qaF "$CONTAINERD_ADDRESS" "/proc/$p/cmdline" 2>/dev/null && shims+=("$p")
  done
fi
if running containerd && ((${#shims[@]})); then
  # Whatever pod the API could not delete: its containers killed through containerd.
  for t in $(ctr --address "$CONTAINERD_ADDRESS" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr --address "$CONTAINERD_ADDRESS" -n k8s.io tasks kill -s SIGKILL "$t" >/dev/null 2>&1
  done
  sleep 2
fi
# Network namespaces of our sandboxes (their paths are in containerd's container specs).
netns=()
if running containerd; then
  for c in $(ctr --address "$CONTAINERD_ADDRESS" -n k8s.io containers ls -q 2>/dev/null); do
    n=$(ctr --address "$CONTAINERD_ADDRESS" -n k8s.io containers info "$c" 2>/dev/null |
      python3 -c 'import json,sys
try:
  for ns in json.load(sys.stdin)["Spec"]["linux"]["namespaces"]:
    if ns.get("type") == "network" and ns.get("path", "").startswith("/var/run/netns/"): print(ns["path"])
except Exception: pass' 2>/dev/null)
    [ -n "$n" ] && netns+=("$n")
  done
fi
stop_daemon containerd 15
for p in "${shims[@]}"; do kill -KILL "$p" 2>/dev/null; done
for n in $(printf '%s\n' "${netns[@]}" | sort -u); do
  umount "$n" 2>/dev/null; rm -f "$n"
done

# 3. iptables: kube-proxy's chains, then our own rules.
if [ -x "$BIN/kube-proxy" ]; then "$BIN/kube-proxy" --cleanup >/dev/null 2>&1; fi
# The kubelet's own chains (kube-proxy --cleanup leaves them), IPv4 and IPv6.
for ipt in iptables ip6tables; do
  for c in INPUT OUTPUT; do while "$ipt" -D "$c" -j KUBE-FIREWALL 2>/dev/null; do :; done; done
  for tc in filter:KUBE-FIREWALL filter:KUBE-KUBELET-CANARY nat:KUBE-KUBELET-CANARY mangle:KUBE-KUBELET-CANARY mangle:KUBE-IPTABLES-HINT; do
    "$ipt" -t "${tc%%:*}" -F "${tc#*:}" 2>/dev/null && "$ipt" -t "${tc%%:*}" -X "${tc#*:}" 2>/dev/null
  done
done
up=$(cat "$STATE/uplink" 2>/dev/null || uplink)
for t in filter mangle; do
  while iptables -t "$t" -D FORWARD -o "$up" -m comment --comment coupon-cluster-no-egress -j DROP 2>/dev/null; do :; done
done

# 4. Links, sysctls.
ip link del "$BRIDGE" 2>/dev/null
ip link del "$NODE_LINK" 2>/dev/null
if [ -f "$STATE/sysctl.orig" ]; then
  while IFS='=' read -r k v; do [ -n "$v" ] && sysctl -qw "$k=$v" 2>/dev/null; done <"$STATE/sysctl.orig"
fi

# 5. Every mount under .cluster (volumes, overlay snapshots, shm), deepest first; then the folder.
for _ in 1 2 3; do
  mapfile -t mounts < <(awk -v s="$STATE/" 'index($2, s) == 1 {print $2}' /proc/self/mounts | sort -r)
  ((${#mounts[@]})) || break
  for m in "${mounts[@]}"; do umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null; done
done
rm -rf "$STATE" 2>/dev/null || { sleep 2; rm -rf "$STATE"; }
[ -d "$STATE" ] && die "could not remove $STATE (a mount left?)"
say "cluster stopped and removed (caches kept in ${CACHE#"$ROOT"/})"
