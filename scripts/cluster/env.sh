#!/usr/bin/env bash
# Step 7: .cluster/env (shell lines: KUBECONFIG, INGRESS_URL, INGRESS_KEEPALIVE_URL, INGRESS_HOST, ADMIN_TOKEN;
# `. .cluster/env`) and how to reach the service.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

token=$(kubectl -n "$NAMESPACE" get secret "$RELEASE-secret" -o jsonpath='{.data.ADMIN_TOKEN}' | base64 -d)
[ -n "$token" ] || die "no ADMIN_TOKEN in secret $NAMESPACE/$RELEASE-secret"
url="http://127.0.0.1:$INGRESS_PORT"
{
  echo "# Written by scripts/cluster/env.sh; load with: . .cluster/env"
  printf 'export KUBECONFIG=%q\n' "$KUBECONFIG"
  printf 'export INGRESS_URL=%q\n' "$url"
  printf 'export INGRESS_KEEPALIVE_URL=%q\n' "http://127.0.0.1:$INGRESS_KEEPALIVE_PORT"
  printf 'export INGRESS_HOST=%q\n' "$INGRESS_HOST"
  printf 'export ADMIN_TOKEN=%q\n' "$token"
} >"$STATE/env"
chmod 600 "$STATE/env"
# The Ingress routes /v1/ only (the probes are on the api's ops port): GET /v1/events/no-such-event
# answers the api's 404 (nginx's own 404 would be HTML) once requests reach the api.
code=$(curl -s -o /dev/null -w '%{http_code}' -H "Host: $INGRESS_HOST" "$url/v1/events/no-such-event" || true)
cat <<MSG

The coupon service runs on a local Kubernetes $K8S_VERSION (node $NODE_NAME at $NODE_IP), reached through the
chart's Ingress, served by a stand-in (nginx configured from the Ingress objects) on $url
(GET /v1/events/no-such-event through it just answered $code; 404 is the api's answer for no such event):

  . .cluster/env                                  # KUBECONFIG, INGRESS_URL, INGRESS_HOST, ADMIN_TOKEN
  curl -H "Host: \$INGRESS_HOST" -H "authorization: Bearer \$ADMIN_TOKEN" -H 'content-type: application/json' \\
       -d '{"id":"demo","name":"Demo","totalQuantity":10}' \$INGRESS_URL/v1/events
  .tools/cluster/k8s-$K8S_VERSION/bin/kubectl -n $NAMESPACE get pods,hpa,ingress
  npm run test:cluster                            # the end-to-end checks
  npm run cluster:down                            # stops and removes all of it

MSG
