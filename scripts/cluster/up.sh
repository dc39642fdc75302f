#!/usr/bin/env bash
# npm run cluster: a local single-node Kubernetes with the service installed, from a fresh clone (as root on
# Debian 12). Idempotent: a second run reuses the caches and what runs, rebuilds the app image if the sources
# changed, and upgrades the release. Steps (one file each in scripts/cluster/):
#   packages  Debian: containerd, runc, CNI plugins, iptables, conntrack, debootstrap, buildah, nginx-light
#   binaries  Kubernetes v1.34 + etcd + CoreDNS + metrics-server from the Go module proxy (one go build, cached)
#   images    rootfs, Node base, dependency images, pause, and the project's Dockerfile built by buildah
#   node      containerd, etcd, apiserver, controller-manager, scheduler, kubelet, kube-proxy, CoreDNS, metrics-server
#   ingress   the Ingress stand-in (nginx configured from the Ingress objects)
#   crds      ServiceMonitor, PrometheusRule, ScaledObject CRDs (controller-gen from the upstream Go API types)
#   deps      k8s/deps on hostPath volumes
#   install   helm upgrade --install --wait (the migrations hook included)
#   prometheus  a real Prometheus built from the Go module proxy, scraping the release and evaluating its alerts
#   env       .cluster/env and how to reach it
# Phase timings go to .cluster/timings and are printed at the end. Stop it all with npm run cluster:down.
set -euo pipefail
here=$(dirname "${BASH_SOURCE[0]}")
# shellcheck source=lib.sh
. "$here/lib.sh"
need_root
ensure_dirs
: >"$STATE/timings"
[ -x "$HELM" ] || { say "helm missing: bash scripts/install-k8s-tools.sh"; bash "$ROOT/scripts/install-k8s-tools.sh"; }
[ -x "$ROOT/node_modules/.bin/node" ] || die "run npm ci first (Node 24 runs the ingress stand-in)"

timed packages bash "$here/packages.sh"
# The rootfs and dependency images need no Go: they are made while the binaries build (both under nice).
images_log="$STATE/logs/images.log"; mkdir -p "$STATE/logs"
(timed images bash "$here/images.sh") >"$images_log" 2>&1 &
images_pid=$!
timed binaries bash "$here/binaries.sh"
say "waiting for the images (log: ${images_log#"$ROOT"/})"
if ! wait "$images_pid"; then cat "$images_log"; die "images failed"; fi
sed 's/^/  /' "$images_log"
# The pause image needs the pause binary.
timed images-pause bash "$here/images.sh" pause
timed node bash "$here/node.sh"
timed ingress bash "$here/ingress.sh"
# The CRDs of the production values (check 7 of test:cluster): not needed by the release itself.
timed crds bash "$here/crds.sh" || say "warning: the CRDs step failed; check 7 of npm run test:cluster will say so"
timed deps bash "$here/deps.sh"
timed install bash "$here/install.sh"
# Only the alert checks of npm run test:cluster need it: a failure here is said there too.
timed prometheus bash "$here/prometheus.sh" || say "warning: the prometheus step failed; the alert checks of npm run test:cluster will say so"
bash "$here/env.sh"
say "timings (s): $(tr '\n' ' ' <"$STATE/timings")"
