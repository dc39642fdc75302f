#!/usr/bin/env bash
# Installs NetfilterQueue (Python bindings to libnetfilter_queue) into <repo>/.tools/chaos-venv (git-ignored), for
# the chaos schedules' delay fault (scripts/chaos/delay.py: this kernel has no netem qdisc). Idempotent: does nothing
# when the pinned version is already there. Reaches only PyPI; builds a C extension.
# Needs: python3 with venv and its headers, gcc, libnetfilter_queue's headers (Debian: python3-venv python3-dev gcc
# libnetfilter-queue-dev).
set -euo pipefail

NETFILTERQUEUE_VERSION=1.1.0

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.tools/chaos-venv"

say() { printf 'install-chaos-tools: %s\n' "$*"; }

command -v python3 >/dev/null 2>&1 || { say "missing python3 (apt-get install python3 python3-venv)" >&2; exit 1; }

if [[ "$("$VENV/bin/python" -c 'import importlib.metadata as m, netfilterqueue; print(m.version("NetfilterQueue"))' 2>/dev/null)" == "$NETFILTERQUEUE_VERSION" ]]; then
  say "NetfilterQueue $NETFILTERQUEUE_VERSION present in $VENV"
  exit 0
fi

say "creating $VENV with NetfilterQueue $NETFILTERQUEUE_VERSION"
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "NetfilterQueue==$NETFILTERQUEUE_VERSION"
"$VENV/bin/python" -c 'import netfilterqueue'
say "installed NetfilterQueue $NETFILTERQUEUE_VERSION in $VENV"
