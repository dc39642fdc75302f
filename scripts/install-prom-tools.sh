#!/usr/bin/env bash
# Installs promtool, which test/deploy/alerts.test.ts runs on the chart's PrometheusRule (`promtool check rules`,
# `promtool test rules`), into <repo>/.tools/bin/promtool (git-ignored), built with `go install` from the Go
# module proxy (github.com/prometheus/prometheus; module v0.316.0 is Prometheus 3.16.0).
# `install-prom-tools.sh prometheus` builds the server from the same module instead (.tools/bin/prometheus, static,
# stripped): the Prometheus that `npm run cluster` deploys (scripts/cluster/prometheus.sh).
# Idempotent: does nothing when the binary Go stamped with the pinned module version is already there.
# Needs: go (>= 1.21; it fetches the toolchain the module asks for). Reaches only the Go module proxy.
set -euo pipefail

PROMETHEUS_MODULE_VERSION=v0.316.0

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN="$ROOT/.tools/bin"
mkdir -p "$BIN"

say() { printf 'install-prom-tools: %s\n' "$*"; }

# Go's official tarball lives in /usr/local/go; a non-login shell may not have it on PATH.
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then export PATH="/usr/local/go/bin:$PATH"; fi
command -v go >/dev/null 2>&1 || { say "missing 'go' on PATH: install Go (the Go module proxy builds promtool)" >&2; exit 1; }
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto} GOFLAGS=-mod=mod CGO_ENABLED=0

TOOL=${1:-promtool}
case "$TOOL" in promtool | prometheus) ;; *) say "usage: install-prom-tools.sh [promtool|prometheus]" >&2; exit 2 ;; esac

# `$TOOL --version` prints Prometheus's version; the module version Go stamped into the binary is the pin.
tool_module() { go version -m "$BIN/$TOOL" 2>/dev/null | awk '$1 == "mod" { print $3 }'; }
if [[ -x "$BIN/$TOOL" && "$(tool_module)" == "$PROMETHEUS_MODULE_VERSION" ]]; then
  say "$TOOL present: $PROMETHEUS_MODULE_VERSION"
  exit 0
fi

say "building $TOOL from github.com/prometheus/prometheus $PROMETHEUS_MODULE_VERSION (a few minutes the first time)"
# v0.3MM.P is Prometheus 3.MM.P: stamp that, so `$TOOL --version` says which Prometheus it is.
release=$(sed -E 's/^v0\.3([0-9]{2})\.([0-9]+)$/3.\1.\2/; s/^3\.0([0-9])/3.\1/' <<<"$PROMETHEUS_MODULE_VERSION")
GOBIN="$BIN" nice go install \
  -ldflags "-s -w -X github.com/prometheus/common/version.Version=$release" \
  "github.com/prometheus/prometheus/cmd/$TOOL@$PROMETHEUS_MODULE_VERSION"
say "installed $BIN/$TOOL: $("$BIN/$TOOL" --version 2>&1 | head -n 1)"
