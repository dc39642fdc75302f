#!/usr/bin/env bash
# Installs schemathesis, the OpenAPI fuzzer test/contract/fuzz.test.ts runs, into <repo>/.tools/fuzz-venv
# (git-ignored). Idempotent: does nothing when the pinned version is already there. Reaches only PyPI.
# Needs: python3 with the venv module (Debian: python3-venv).
set -euo pipefail

SCHEMATHESIS_VERSION=4.32.5

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.tools/fuzz-venv"

say() { printf 'install-fuzz-tools: %s\n' "$*"; }

command -v python3 >/dev/null 2>&1 || { say "missing python3 (apt-get install python3 python3-venv)" >&2; exit 1; }

if [[ -x "$VENV/bin/st" ]] && [[ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("schemathesis"))' 2>/dev/null)" == "$SCHEMATHESIS_VERSION" ]]; then
  say "schemathesis $SCHEMATHESIS_VERSION present in $VENV"
  exit 0
fi

say "creating $VENV with schemathesis $SCHEMATHESIS_VERSION"
rm -rf "$VENV"
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
say "installed $("$VENV/bin/st" --version 2>/dev/null | head -n 1) in $VENV"
