#!/usr/bin/env bash
# Step 0: the Debian packages the cluster runs on, installed only when missing (~1 min cold):
# containerd 1.6, runc, the CNI plugins, iptables and conntrack (kube-proxy), debootstrap and buildah (images),
# nginx-light (the Ingress stand-in). apt is kept from starting any service it installs.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root

declare -A want=(
  [/usr/bin/containerd]=containerd [/usr/sbin/runc]=runc [/usr/lib/cni/bridge]=containernetworking-plugins
  [/usr/sbin/iptables]=iptables [/usr/sbin/conntrack]=conntrack [/usr/sbin/debootstrap]=debootstrap
  [/usr/bin/buildah]=buildah [/usr/sbin/nginx]=nginx-light [/usr/sbin/ipset]=ipset
)
missing=()
for f in "${!want[@]}"; do [ -x "$f" ] || missing+=("${want[$f]}"); done
if ((${#missing[@]} == 0)); then say "Debian packages present"; exit 0; fi

say "installing ${missing[*]} (apt-get, ~1 min)"
export DEBIAN_FRONTEND=noninteractive
policy=/usr/sbin/policy-rc.d own_policy=0
if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && own_policy=1; fi
trap '((own_policy)) && rm -f "$policy"' EXIT
# The package lists may be missing or stale on a fresh machine.
if ! apt-get install -y -q --no-install-recommends "${missing[@]}" >"$CACHE/apt.log" 2>&1; then
  heavy apt-get update -q >>"$CACHE/apt.log" 2>&1
  heavy apt-get install -y -q --no-install-recommends "${missing[@]}" >>"$CACHE/apt.log" 2>&1 ||
    { tail -20 "$CACHE/apt.log"; die "apt-get install failed"; }
fi
# A service started anyway (no policy honoured): stop the ones the cluster runs itself.
for s in containerd nginx; do
  if [ -d /run/systemd/system ]; then systemctl disable --now "$s" >/dev/null 2>&1 || true
  else service "$s" stop >/dev/null 2>&1 || true; fi
done
say "installed ${missing[*]}"
