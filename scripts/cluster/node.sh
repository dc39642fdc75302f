#!/usr/bin/env bash
# Step 3: the single-node cluster, every part a host process under .cluster/ (pid files in .cluster/pids, logs in
# .cluster/logs): containerd (own root, state and socket), etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kubelet, kube-proxy (iptables), CoreDNS (cluster.local only, nothing forwarded) and
# metrics-server (registered as an APIService, for the HPA). Idempotent: what runs is left running.
#
# Network: the node's address is 10.254.254.1 on a portless bridge link the cluster creates (the machine's uplink is never
# listened on); pods live on the bridge cni-coupon0 (10.244.0.0/24, no masquerading). Before anything can start a
# pod, `iptables -I FORWARD 1 -o <uplink> -j DROP` (and the same in the mangle table, which kube-proxy never
# touches) keep every packet of a pod from leaving the machine; down.sh removes both.
set -euo pipefail
# shellcheck source=lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
need_root
ensure_dirs
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl coredns metrics-server; do
  [ -x "$BIN/$b" ] || die "missing $BIN/$b: run scripts/cluster/binaries.sh"
done
for f in pause deps app; do [ -f "$IMAGES/$f.tar" ] || die "missing image $f: run scripts/cluster/images.sh"; done

PKI="$STATE/pki"
RUN="$STATE/run"
mkdir -p "$PKI" "$RUN" "$PIDS" "$LOGS" "$STATE/cni/net.d" "$STATE/etc"
ETCD_PORT=12379
APISERVER="https://$NODE_IP:6443"

# --- network: node address, sysctls, the FORWARD rules -----------------------------------------------------------
up=$(uplink)
[ -n "$up" ] || die "no default route: cannot tell the uplink to block"
# A bridge of ours with no containerd of ours running was left by a cluster that was killed, not taken down
# (another clone, a stopped session): its pods' addresses would clash with the new ones on the same bridge.
if ! running containerd && ip link show "$BRIDGE" >/dev/null 2>&1; then
  say "removing the bridge $BRIDGE left by a cluster that was not taken down"
  ip link del "$BRIDGE"
fi
if ! ip link show "$NODE_LINK" >/dev/null 2>&1; then
  # A bridge without ports holds the address (this kernel has no dummy links).
  ip link add "$NODE_LINK" type bridge
  ip addr add "$NODE_IP/32" dev "$NODE_LINK"
  ip link set "$NODE_LINK" up
fi
echo "$up" >"$STATE/uplink"
for rule in "filter FORWARD" "mangle FORWARD"; do
  set -- $rule
  if ! iptables -t "$1" -C "$2" -o "$up" -m comment --comment coupon-cluster-no-egress -j DROP 2>/dev/null; then
    iptables -t "$1" -I "$2" 1 -o "$up" -m comment --comment coupon-cluster-no-egress -j DROP
  fi
done
say "pods cannot leave the machine: FORWARD -o $up DROP (filter and mangle)"
if [ ! -f "$STATE/sysctl.orig" ]; then
  for k in net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables; do
    printf '%s=%s\n' "$k" "$(sysctl -n "$k" 2>/dev/null || echo)" >>"$STATE/sysctl.orig"
  done
fi
sysctl -qw net.ipv4.ip_forward=1
sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || say "warning: bridge-nf-call-iptables not settable"
sysctl -qw net.bridge.bridge-nf-call-ip6tables=1 2>/dev/null || true

# --- certificates ---------------------------------------------------------------------------------------------
# cert NAME CN O [SANS] [CA]: a key and a certificate signed by CA (default ca), for client and server use.
cert() {
  local name=$1 cn=$2 o=$3 sans=${4:-} ca=${5:-ca} subj
  [ -f "$PKI/$name.crt" ] && return 0
  subj="/CN=$cn"; [ -n "$o" ] && subj="/O=$o$subj"
  openssl genrsa -out "$PKI/$name.key" 2048 2>/dev/null
  openssl req -new -key "$PKI/$name.key" -subj "$subj" -out "$PKI/$name.csr" 2>/dev/null
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    [ -n "$sans" ] && echo "subjectAltName=$sans"
  } >"$PKI/$name.ext"
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial -days 365 \
    -extfile "$PKI/$name.ext" -out "$PKI/$name.crt" 2>/dev/null
  rm -f "$PKI/$name.csr" "$PKI/$name.ext"
}
ca() {
  [ -f "$PKI/$1.crt" ] && return 0
  openssl req -x509 -newkey rsa:2048 -nodes -keyout "$PKI/$1.key" -out "$PKI/$1.crt" -days 365 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}
if [ ! -f "$PKI/sa.key" ]; then
  say "certificates (openssl)"
  ca ca coupon-cluster-ca
  ca front-proxy-ca coupon-front-proxy-ca
  cert apiserver kube-apiserver "" "IP:$NODE_IP,IP:127.0.0.1,IP:$APISERVER_SVC_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$DNS_DOMAIN"
  cert admin coupon-admin system:masters
  cert apiserver-kubelet-client kube-apiserver-kubelet-client system:masters
  cert kubelet "system:node:$NODE_NAME" system:nodes "IP:$NODE_IP,DNS:$NODE_NAME"
  cert front-proxy-client front-proxy-client "" "" front-proxy-ca
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
fi
kubeconfig() { # kubeconfig FILE CERTNAME USER
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: coupon
    cluster:
      server: $APISERVER
      certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
  - name: $3
    user:
      client-certificate-data: $(base64 -w0 "$PKI/$2.crt")
      client-key-data: $(base64 -w0 "$PKI/$2.key")
contexts:
  - name: coupon
    context: {cluster: coupon, user: $3}
current-context: coupon
EOF
  chmod 600 "$1"
}
[ -f "$STATE/kubeconfig" ] || kubeconfig "$STATE/kubeconfig" admin coupon-admin
[ -f "$STATE/etc/kubelet.kubeconfig" ] || kubeconfig "$STATE/etc/kubelet.kubeconfig" kubelet "system:node:$NODE_NAME"
ADMIN_KC="$STATE/kubeconfig"

# --- containerd and the images ------------------------------------------------------------------------------------
write_if_changed "$STATE/etc/containerd.toml" <<EOF
version = 2
root = "$STATE/containerd"
state = "$RUN/containerd"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$CONTAINERD_ADDRESS"
[ttrpc]
  address = "$RUN/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$STATE/containerd-opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$(cat "$IMAGES/pause.tag")"
  # The sandbox lacks CAP_SYS_RESOURCE: runc must not raise oom_score_adj above its own.
  restrict_oom_score_adj = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$STATE/cni/net.d"
EOF
write_if_changed "$STATE/cni/net.d/10-coupon.conflist" <<EOF
{
  "cniVersion": "0.4.0",
  "name": "coupon",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$STATE/cni/ipam", "ranges": [[{"subnet": "$CLUSTER_CIDR"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
EOF
mkdir -p "$RUN/containerd"
if ! running containerd; then
  say "containerd"
  start_daemon containerd containerd --config "$STATE/etc/containerd.toml"
fi
wait_for 60 "containerd's socket" ctr --address "$CONTAINERD_ADDRESS" version
ctr_() { ctr --address "$CONTAINERD_ADDRESS" -n k8s.io "$@"; }
present=$(ctr_ images ls -q)
for f in pause deps app; do
  ref=$(cat "$IMAGES/$f.tag")
  if ! grep -qx "$ref" <<<"$present"; then
    say "importing $ref into containerd"
    heavy ctr --address "$CONTAINERD_ADDRESS" -n k8s.io images import "$IMAGES/$f.tar" >/dev/null
  fi
done
# The dependency image under the names k8s/deps uses (the manifests run unchanged).
for name in docker.io/library/redis:7.4.2-bookworm docker.io/library/mysql:8.4.3 docker.io/library/postgres:16.6-bookworm; do
  ctr_ images tag --force "$(cat "$IMAGES/deps.tag")" "$name" >/dev/null
done

# --- etcd ----------------------------------------------------------------------------------------------------------
if ! running etcd; then
  say "etcd"
  start_daemon etcd etcd --name "$NODE_NAME" --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls http://127.0.0.1:12380 --initial-advertise-peer-urls http://127.0.0.1:12380 \
    --initial-cluster "$NODE_NAME=http://127.0.0.1:12380" --listen-metrics-urls http://127.0.0.1:12381 \
    --quota-backend-bytes 2147483648 --log-level warn
fi
wait_for 60 "etcd" curl -fsS "http://127.0.0.1:$ETCD_PORT/health"

# --- kube-apiserver ---------------------------------------------------------------------------------------------
if ! running kube-apiserver; then
  say "kube-apiserver on $APISERVER"
  start_daemon kube-apiserver kube-apiserver --advertise-address "$NODE_IP" --bind-address "$NODE_IP" --secure-port 6443 \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" --allow-privileged=true \
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction \
    --client-ca-file "$PKI/ca.crt" --tls-cert-file "$PKI/apiserver.crt" --tls-private-key-file "$PKI/apiserver.key" \
    --kubelet-client-certificate "$PKI/apiserver-kubelet-client.crt" --kubelet-client-key "$PKI/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types InternalIP \
    --service-account-issuer "https://kubernetes.default.svc.$DNS_DOMAIN" \
    --service-account-key-file "$PKI/sa.pub" --service-account-signing-key-file "$PKI/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --requestheader-client-ca-file "$PKI/front-proxy-ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-extra-headers-prefix X-Remote-Extra- --requestheader-group-headers X-Remote-Group \
    --requestheader-username-headers X-Remote-User \
    --proxy-client-cert-file "$PKI/front-proxy-client.crt" --proxy-client-key-file "$PKI/front-proxy-client.key" \
    --enable-aggregator-routing=true --profiling=false --v=1
fi
wait_for 120 "kube-apiserver /readyz" kubectl get --raw /readyz

# --- controller-manager and scheduler ------------------------------------------------------------------------------
if ! running kube-controller-manager; then
  say "kube-controller-manager, kube-scheduler"
  start_daemon kube-controller-manager kube-controller-manager --kubeconfig "$ADMIN_KC" \
    --authentication-kubeconfig "$ADMIN_KC" --authorization-kubeconfig "$ADMIN_KC" --bind-address 127.0.0.1 \
    --cluster-signing-cert-file "$PKI/ca.crt" --cluster-signing-key-file "$PKI/ca.key" --root-ca-file "$PKI/ca.crt" \
    --service-account-private-key-file "$PKI/sa.key" --use-service-account-credentials=true \
    --service-cluster-ip-range "$SERVICE_CIDR" --allocate-node-cidrs=false --leader-elect=false \
    --horizontal-pod-autoscaler-sync-period 10s --profiling=false --v=1
fi
if ! running kube-scheduler; then
  start_daemon kube-scheduler kube-scheduler --kubeconfig "$ADMIN_KC" --authentication-kubeconfig "$ADMIN_KC" \
    --authorization-kubeconfig "$ADMIN_KC" --bind-address 127.0.0.1 --leader-elect=false --profiling=false --v=1
fi

# --- kubelet --------------------------------------------------------------------------------------------------------
: >"$STATE/etc/resolv.conf"   # pods ask CoreDNS only; nothing is forwarded off the machine
write_if_changed "$STATE/etc/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
containerRuntimeEndpoint: unix://$CONTAINERD_ADDRESS
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
clusterDNS: [$DNS_IP]
clusterDomain: $DNS_DOMAIN
resolvConf: $STATE/etc/resolv.conf
# Images are imported, never pulled: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
# A busy shared disk: evict only when really short.
evictionHard: {memory.available: 200Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2%}
serializeImagePulls: false
maxPods: 110
rotateCertificates: false
serverTLSBootstrap: false
EOF
if ! running kubelet; then
  say "kubelet"
  mkdir -p "$STATE/kubelet"
  start_daemon kubelet kubelet --config "$STATE/etc/kubelet.yaml" --kubeconfig "$STATE/etc/kubelet.kubeconfig" \
    --root-dir "$STATE/kubelet" --cert-dir "$STATE/kubelet/pki" --node-ip "$NODE_IP" --hostname-override "$NODE_NAME" --v=1
fi

# --- kube-proxy -----------------------------------------------------------------------------------------------------
write_if_changed "$STATE/etc/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $ADMIN_KC}
mode: iptables
clusterCIDR: $CLUSTER_CIDR
hostnameOverride: $NODE_NAME
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [$NODE_IP/32]
conntrack: {maxPerCore: 0}
EOF
if ! running kube-proxy; then
  say "kube-proxy (iptables)"
  start_daemon kube-proxy kube-proxy --config "$STATE/etc/kube-proxy.yaml"
fi

# --- CoreDNS on the node address (cluster.local only) ------------------------------------------------------------------
write_if_changed "$STATE/etc/Corefile" <<EOF
$DNS_DOMAIN:53 in-addr.arpa:53 ip6.arpa:53 {
    bind $DNS_IP
    errors
    cache 5
    kubernetes $DNS_DOMAIN in-addr.arpa ip6.arpa {
        kubeconfig $ADMIN_KC coupon
        pods insecure
    }
}
EOF
if ! running coredns; then
  say "CoreDNS on $DNS_IP:53"
  start_daemon coredns coredns -conf "$STATE/etc/Corefile"
fi

wait_for 120 "node $NODE_NAME Ready" sh -c "'$KUBECTL' get node '$NODE_NAME' -o jsonpath='{.status.conditions[?(@.type==\"Ready\")].status}' | grep -qx True"
# kube-proxy inserts its own jumps at the top of FORWARD: keep the no-egress rule first.
sleep 2
if ! iptables -S FORWARD 1 | grep -q coupon-cluster-no-egress; then
  iptables -D FORWARD -o "$up" -m comment --comment coupon-cluster-no-egress -j DROP
  iptables -I FORWARD 1 -o "$up" -m comment --comment coupon-cluster-no-egress -j DROP
fi

# --- metrics-server, registered as v1beta1.metrics.k8s.io ----------------------------------------------------------------
if ! running metrics-server; then
  say "metrics-server on $NODE_IP:4443"
  start_daemon metrics-server metrics-server --kubeconfig "$ADMIN_KC" --authentication-kubeconfig "$ADMIN_KC" \
    --authorization-kubeconfig "$ADMIN_KC" --bind-address "$NODE_IP" --secure-port 4443 \
    --cert-dir "$STATE/metrics-server" --kubelet-insecure-tls --kubelet-preferred-address-types InternalIP \
    --metric-resolution 15s
fi
kubectl apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Service
metadata: {name: metrics-server, namespace: kube-system, labels: {app.kubernetes.io/part-of: coupon-cluster}}
spec:
  ports: [{name: https, port: 443, targetPort: 4443, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: metrics-server-host
  namespace: kube-system
  labels: {kubernetes.io/service-name: metrics-server, app.kubernetes.io/part-of: coupon-cluster}
addressType: IPv4
endpoints: [{addresses: ["$NODE_IP"], conditions: {ready: true}}]
ports: [{name: https, port: 4443, protocol: TCP}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: v1beta1.metrics.k8s.io, labels: {app.kubernetes.io/part-of: coupon-cluster}}
spec:
  group: metrics.k8s.io
  version: v1beta1
  service: {name: metrics-server, namespace: kube-system, port: 443}
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
EOF
say "node $NODE_NAME Ready ($K8S_VERSION); kubeconfig: ${KUBECONFIG#"$ROOT"/}"
