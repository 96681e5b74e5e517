# Shared by tests/vm/*: the VM node's paths, host packages, ssh, qemu's accelerator.
# shellcheck shell=bash
source "$(dirname "${BASH_SOURCE[0]}")/../env/lib.sh"

say() { echo "vm: $*" >&2; }
die() { echo "vm: ERROR: $*" >&2; exit 1; }

VM_DIR=$BOSUN_ENV_DIR/vm               # the running VM: pid, console log, share, env file
VM_SHARE=$VM_DIR/share                 # mounted at /mnt/host in the guest (9p)
VM_ENV=$VM_DIR/env.sh                  # written by up, read by the tests
VM_SSH_CONTROL=$VM_DIR/ssh.sock        # one ssh connection shared by every command (down ends it)
VM_SSH_PORT=${BOSUN_VM_SSH_PORT:-2222} # host 127.0.0.1:PORT -> guest :22
VM_MEM=${BOSUN_VM_MEM:-2048}           # MiB
VM_CPUS=${BOSUN_VM_CPUS:-2}
# The host's loopback services as the guest sees them (qemu user-mode network's gateway).
VM_HOST_ADDR=10.0.2.2
VM_REGISTRY=$VM_HOST_ADDR:${REGISTRY_ADDR##*:}

# vm_image_dir: the cached image's directory; its name changes with the recipe (tests/vm/image)
# and the registry address baked into the guest's containerd config.
vm_image_dir() {
  local key
  key=$( (cat "$REPO/tests/vm/image"; echo "$VM_REGISTRY") | sha256sum | cut -c1-16)
  echo "$BOSUN_CACHE_DIR/vm/$key"
}

# ensure_vm_packages: installs the host's Debian packages for building and running the guest.
ensure_vm_packages() {
  local missing=() pair
  for pair in qemu-system-x86_64:qemu-system-x86 mmdebstrap:mmdebstrap mke2fs:e2fsprogs \
    ssh:openssh-client ssh-keygen:openssh-client strip:binutils; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  ((${#missing[@]} == 0)) && return 0
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  say "installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq || die "apt-get update failed"
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null ||
    die "apt-get install ${missing[*]} failed"
}

# vm_accel: kvm only when the CPU offers hardware virtualization (a /dev/kvm without vmx/svm,
# such as the kvm_pvm module, does not run a stock guest kernel), else tcg. BOSUN_VM_ACCEL overrides.
vm_accel() {
  if [[ -n ${BOSUN_VM_ACCEL:-} ]]; then echo "$BOSUN_VM_ACCEL"
  elif [[ -w /dev/kvm ]] && grep -qwE 'vmx|svm' /proc/cpuinfo; then echo kvm
  else echo tcg; fi
}

# vm_ssh KEY CMD...: runs CMD in the guest as root, over the shared connection (an ssh handshake
# costs about 3 s under TCG, a command on the open connection a tenth of that); a guest silent for
# a minute (hung) ends the command with status 255.
vm_ssh() {
  local key=$1; shift
  ssh -i "$key" -p "$VM_SSH_PORT" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
    -o LogLevel=ERROR -o ConnectTimeout=5 -o BatchMode=yes \
    -o ServerAliveInterval=10 -o ServerAliveCountMax=6 \
    -o ControlMaster=auto -o "ControlPath=$VM_SSH_CONTROL" -o ControlPersist=300 root@127.0.0.1 "$@"
}

# vm_ssh_close: ends the shared connection.
vm_ssh_close() {
  [[ -S $VM_SSH_CONTROL ]] || return 0
  ssh -o "ControlPath=$VM_SSH_CONTROL" -O exit root@127.0.0.1 2>/dev/null || true
}
