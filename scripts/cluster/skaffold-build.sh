#!/usr/bin/env bash
# skaffold's custom builder for `skaffold dev -p local-cluster` (skaffold.yaml): the app image of npm run cluster
# (scripts/cluster/images.sh: this Dockerfile built by buildah on the local Node base), imported into the running
# local cluster's containerd and tagged with the name skaffold asks for ($IMAGE). Needs `npm run cluster` first.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
: "${IMAGE:?skaffold sets IMAGE}"
running containerd || die "the local cluster is not running: npm run cluster"
bash "$ROOT/scripts/cluster/images.sh"
app=$(cat "$IMAGES/app.tag")
c() { ctr --address "$CONTAINERD_ADDRESS" -n k8s.io "$@"; }
c images ls -q | grep -qx "$app" || heavy ctr --address "$CONTAINERD_ADDRESS" -n k8s.io images import "$IMAGES/app.tar" >/dev/null
# The kubelet asks containerd for the normalized name: docker.io/library/<name> for a name without a registry.
name=$IMAGE
first=${name%%/*}
if [[ "$name" != */* ]]; then name="docker.io/library/$name"
elif [[ "$first" != *.* && "$first" != *:* && "$first" != localhost ]]; then name="docker.io/$name"; fi
c images tag --force "$app" "$name" >/dev/null
say "skaffold image $IMAGE = $app"
