# Shared by tests/env/*: paths, messages, package installs, waiting with a deadline.
# shellcheck shell=bash

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export BOSUN_ENV_DIR=${BOSUN_ENV_DIR:-$REPO/tests/env/run}
export BOSUN_CACHE_DIR=${BOSUN_CACHE_DIR:-/var/cache/bosun}
REGISTRY_ADDR=127.0.0.1:5000
# The same images behind htpasswd auth, for imagePullSecrets tests (loopback only, test credentials).
PRIVATE_REGISTRY_ADDR=127.0.0.1:5001
PRIVATE_REGISTRY_USER=bosun
PRIVATE_REGISTRY_PASSWORD=bosun-pull-test
# Pod network of the shared containerd (each test node gets its own bridge and /24, see containerd-config).
SHARED_BRIDGE=bosun0
SHARED_SUBNET=10.88.0.0/16

say() { echo "env: $*" >&2; }
die() { echo "env: ERROR: $*" >&2; exit 1; }

# wait_for DESCRIPTION SECONDS COMMAND...: polls COMMAND every 0.2 s until it succeeds or the deadline passes.
wait_for() {
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then return 1; fi
    sleep 0.2
  done
  say "$what ready"
}

# ensure_packages: installs the Debian packages the runtime environment needs, if any is missing.
ensure_packages() {
  local missing=() pair
  # binary-or-file:package
  for pair in containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
    /bin/busybox:busybox-static umoci:umoci skopeo:skopeo docker-registry:docker-registry \
    protoc:protobuf-compiler htpasswd:apache2-utils ip:iproute2 iptables:iptables curl:curl ss:iproute2 openssl:openssl \
    /usr/bin/dbus-daemon:dbus-daemon; do
    local probe=${pair%%:*} pkg=${pair#*:}
    if [[ $probe == /* ]]; then [[ -e $probe ]] && continue; else command -v "$probe" >/dev/null && continue; fi
    missing+=("$pkg")
  done
  if ! dpkg -s busybox-static >/dev/null 2>&1; then missing+=(busybox-static); fi
  ((${#missing[@]} == 0)) && return 0
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq "${missing[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
}

# pid_alive FILE MARK: true when FILE holds the pid of a running process whose command line
# contains MARK (a pid left from an earlier boot or run may belong to another process by now).
pid_alive() {
  local pid
  [[ -f $1 ]] || return 1
  pid=$(cat "$1")
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2"
}

# stop_if_unanswering FILE NAME MARK CMD...: a process left by an earlier run (FILE, MARK as
# pid_alive) that is alive but where CMD fails for 10 s is stopped, so it is started anew
# rather than waited on (CI once found a control plane process alive and deaf).
stop_if_unanswering() {
  local file=$1 name=$2 mark=$3; shift 3
  pid_alive "$file" "$mark" || return 0
  local deadline=$((SECONDS + 10))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      say "$name (pid $(cat "$file")) is alive but does not answer: restarting it"
      stop_pidfile "$file" "$name" "$mark"
      return 0
    fi
    sleep 0.2
  done
}

# stop_pidfile FILE NAME MARK: SIGTERM, then SIGKILL after 10 s, the process whose pid FILE holds,
# if its command line contains MARK.
stop_pidfile() {
  local file=$1 name=$2 mark=$3 pid state
  [[ -f $file ]] || return 0
  pid=$(cat "$file")
  if pid_alive "$file" "$mark"; then
    say "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
    # Gone, or a zombie with no thread left exiting (a multi-threaded process's leader is a
    # zombie while its other threads still exit, its sockets still open), so its ports and files
    # are free when this returns.
    for _ in $(seq 50); do
      state=$(sed -n 's/^State:[[:space:]]*\(.\).*/\1/p' "/proc/$pid/status" 2>/dev/null || true)
      [[ -z $state ]] && break
      [[ $state == Z && $(ls "/proc/$pid/task" 2>/dev/null | wc -l) -le 1 ]] && break
      sleep 0.2
    done
  fi
  rm -f "$file"
}
