//! The VM node: a qemu guest with systemd as PID 1 and cgroup v2 only (`tests/vm/up`), driven over
//! ssh, with bosun installed in it as systemd/README.md tells an operator.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::env::{env_dir, parse_exports, repo_root};
use crate::wait::wait_until;

/// The guest's static pod directory (the kubeadm layout).
pub const MANIFESTS: &str = "/etc/kubernetes/manifests";

/// The running guest: the variables of `$BOSUN_ENV_DIR/vm/env.sh`.
#[derive(Debug)]
pub struct Vm {
    vars: HashMap<String, String>,
    /// Bosun is installed in the running guest (a new boot starts from the clean image).
    installed: AtomicBool,
}

impl Vm {
    /// The VM node, booted once per test process (`tests/vm/up` is idempotent and leaves it
    /// running; `tests/vm/down` stops it). None, with the reason printed, where qemu cannot run.
    pub fn get() -> Option<&'static Vm> {
        static VM: OnceLock<Option<Vm>> = OnceLock::new();
        let vm = VM.get_or_init(Vm::up).as_ref();
        if vm.is_none() {
            eprintln!("SKIPPED: {}", Vm::skip_reason());
        }
        vm
    }

    fn skip_reason() -> String {
        let text = std::fs::read_to_string(env_dir().join("vm/env.sh")).unwrap_or_default();
        let reason = parse_exports(&text).remove("BOSUN_VM_SKIP");
        format!(
            "no VM node: {}",
            reason.unwrap_or_else(|| "tests/vm/up gave no reason".into())
        )
    }

    fn up() -> Option<Vm> {
        Vm::run_up();
        let text = std::fs::read_to_string(env_dir().join("vm/env.sh")).expect("vm/env.sh");
        let vars = parse_exports(&text);
        if vars.contains_key("BOSUN_VM_SKIP") {
            return None;
        }
        Some(Vm {
            vars,
            installed: AtomicBool::new(false),
        })
    }

    /// Boots the guest again after it powered off (`tests/vm/up` boots a guest whose qemu has
    /// exited), from the clean image: bosun is installed again by the next [`Vm::install_bosun`].
    pub fn boot_again(&self) {
        Vm::run_up();
        self.installed.store(false, Ordering::SeqCst);
    }

    /// True while the guest's qemu process runs (its pid file names a live qemu).
    pub fn is_running(&self) -> bool {
        let pid = std::fs::read_to_string(env_dir().join("vm/qemu.pid")).unwrap_or_default();
        let cmdline = std::fs::read(format!("/proc/{}/cmdline", pid.trim())).unwrap_or_default();
        !pid.trim().is_empty() && String::from_utf8_lossy(&cmdline).contains("qemu")
    }

    /// True when the guest's sshd runs a command (two tries, each with ssh's 10 s connect
    /// timeout): false for a guest that hung or powered off.
    pub fn answers(&self) -> bool {
        (0..2).any(|_| self.try_sh("true").status.success())
    }

    /// The last `lines` lines of the guest's serial console (kernel messages, systemd's).
    pub fn console_tail(&self, lines: usize) -> String {
        let text = std::fs::read(env_dir().join("vm/console.log")).unwrap_or_default();
        let text = String::from_utf8_lossy(&text);
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Boots a guest that stopped answering again (`tests/vm/up` restarts a guest whose sshd
    /// does not answer), first printing the end of its console: why it hung stays on record.
    pub fn restart_hung(&self) {
        eprintln!(
            "the guest does not answer ssh; its console (last 60 lines):\n{}\nbooting it again",
            self.console_tail(60)
        );
        self.boot_again();
    }

    /// Runs `tests/vm/up`; panics with its output when it fails.
    fn run_up() {
        let script = repo_root().join("tests/vm/up");
        let out = Command::new(&script)
            .env("BOSUN_ENV_DIR", env_dir())
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", script.display()));
        assert!(
            out.status.success(),
            "{} failed ({}):\n{}{}",
            script.display(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// One variable of the VM's env file.
    pub fn var(&self, name: &str) -> &str {
        self.vars
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from the VM's env.sh"))
    }

    /// `10.0.2.2:5000/busybox:1`: the host's registry as the guest reaches it.
    pub fn busybox_image(&self) -> &str {
        self.var("BOSUN_VM_BUSYBOX_IMAGE")
    }

    /// The host directory mounted at /mnt/host in the guest.
    pub fn share(&self) -> PathBuf {
        PathBuf::from(self.var("BOSUN_VM_SHARE"))
    }

    /// Runs `script` with bash in the guest as root; its exit status and output.
    pub fn try_sh(&self, script: &str) -> Output {
        Command::new("ssh")
            .args(["-i", self.var("BOSUN_VM_SSH_KEY")])
            .args(["-p", self.var("BOSUN_VM_SSH_PORT")])
            .args([
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
            ])
            .args([
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=10",
                "-o",
                "BatchMode=yes",
            ])
            // A guest that hangs with a command running (its TCP connection to qemu's port
            // forward stays open) ends the command after a minute without an answer, instead of
            // never: ssh exits 255, as for a guest that cannot be reached.
            .args([
                "-o",
                "ServerAliveInterval=10",
                "-o",
                "ServerAliveCountMax=6",
            ])
            // One connection shared by every command (tests/vm/lib.sh's vm_ssh uses the same
            // socket): a handshake costs about 3 s under TCG, a command on the open connection
            // about 0.4 s.
            .args(["-o", "ControlMaster=auto", "-o", "ControlPersist=300"])
            .arg("-o")
            .arg(format!("ControlPath={}", self.var("BOSUN_VM_SSH_CONTROL")))
            .args(["root@127.0.0.1", "bash", "-c"])
            .arg(shell_quote(&format!("set -euo pipefail\n{script}")))
            .stdin(Stdio::null())
            .output()
            .expect("run ssh")
    }

    /// Runs `script` in the guest and returns its trimmed stdout; panics with its output when it fails.
    pub fn sh(&self, script: &str) -> String {
        let out = self.try_sh(script);
        assert!(
            out.status.success(),
            "in the guest: `{script}` failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Polls `script` in the guest until it succeeds with a non-empty stdout, which it returns.
    pub fn wait_sh(&self, what: &str, timeout: Duration, script: &str) -> String {
        wait_until(what, timeout, || {
            let out = self.try_sh(script);
            let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
            (out.status.success() && !stdout.is_empty()).then_some(stdout)
        })
    }

    /// Installs bosun as systemd/README.md says (once per boot of the guest), from copies in the
    /// share: the README's own `install` commands for the binary under test, systemd/bosun.service
    /// and the kubeadm drop-in systemd/10-kubeadm.conf (no kubelet unit to disable in the guest);
    /// then daemon-reload and enable. The binary goes without its debug info (a fifth of the size
    /// through the emulated 9p).
    pub fn install_bosun(&self) {
        if !self.installed.load(Ordering::SeqCst) {
            self.install();
            self.installed.store(true, Ordering::SeqCst);
        }
    }

    /// Installs bosun as systemd/README.md says again (after a test replaced or removed it).
    pub fn reinstall_bosun(&self) {
        self.install();
        self.installed.store(true, Ordering::SeqCst);
    }

    fn install(&self) {
        let share = self.share();
        std::fs::create_dir_all(share.join("systemd")).expect("share/systemd");
        let tmp = share.join(".bosun");
        if !strip_bosun(&tmp) {
            std::fs::copy(crate::bosun_bin(), &tmp).expect("copy bosun into the share");
        }
        std::fs::rename(&tmp, share.join("bosun")).expect("rename bosun");
        for f in ["bosun.service", "10-kubeadm.conf"] {
            std::fs::copy(
                repo_root().join("systemd").join(f),
                share.join("systemd").join(f),
            )
            .expect("copy the unit files into the share");
        }
        let g = self.var("BOSUN_VM_GUEST_SHARE");
        let readme = std::fs::read_to_string(repo_root().join("systemd/README.md"))
            .expect("systemd/README.md");
        self.sh(&format!(
            "{}\nsystemctl daemon-reload && systemctl enable bosun 2>/dev/null",
            readme_install_commands(&readme, g)
        ));
    }

    /// Removes pod containers an earlier test or run left in the guest (behind the CRI plugin's
    /// back, so containerd restarts to forget them).
    pub fn remove_pod_containers(&self) {
        self.sh(
            "if [ -n \"$(ctr -n k8s.io containers ls -q)\" ]; then
               for c in $(ctr -n k8s.io containers ls -q); do ctr -n k8s.io tasks kill -s KILL $c 2>/dev/null || true; done
               for c in $(ctr -n k8s.io containers ls -q); do ctr -n k8s.io tasks delete -f $c 2>/dev/null || true; ctr -n k8s.io containers delete $c 2>/dev/null || true; done
               systemctl restart containerd
             fi",
        );
    }

    /// Gives the guest the credentials of node `node` in the host's test cluster, where the
    /// kubeadm drop-in looks for them: /etc/kubernetes/kubelet.conf (the API server as the guest
    /// reaches it, 10.0.2.2, its certificate checked against its name `kubernetes`: it has no SAN
    /// for 10.0.2.2) and the cluster CA as /etc/kubernetes/pki/ca.crt (kubeadm's clientCAFile).
    pub fn join_cluster(&self, node: &str) {
        let env = crate::Env::cluster();
        let cred = self.share().join(node);
        let out = Command::new(repo_root().join("tests/cluster/mint-node-cred"))
            .arg(node)
            .arg(&cred)
            .envs(env.vars())
            .output()
            .expect("run mint-node-cred");
        assert!(
            out.status.success(),
            "mint-node-cred: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kubeconfig = std::fs::read_to_string(cred.join("kubeconfig")).expect("kubeconfig");
        self.write(
            "/etc/kubernetes/kubelet.conf",
            &self.as_guest_sees_it(&kubeconfig),
        );
        self.write(
            "/etc/kubernetes/pki/ca.crt",
            &std::fs::read_to_string(env.var("CLUSTER_CA")).expect("cluster CA"),
        );
    }

    /// Lays out what `kubeadm join` leaves for a node that has yet to bootstrap, in the files the
    /// kubeadm drop-in names, with kubeadm's modes: the host cluster's bootstrap-token kubeconfig
    /// as /etc/kubernetes/bootstrap-kubelet.conf (0600) and the cluster CA as
    /// /etc/kubernetes/pki/ca.crt (0644); no /etc/kubernetes/kubelet.conf and no client
    /// certificate, so bosun's TLS bootstrap writes them.
    pub fn kubeadm_join_files(&self) {
        let env = crate::Env::cluster();
        let boot =
            std::fs::read_to_string(env.var("BOOTSTRAP_KUBECONFIG")).expect("bootstrap kubeconfig");
        self.sh("rm -rf /etc/kubernetes/kubelet.conf /var/lib/kubelet/pki");
        self.write(
            "/etc/kubernetes/bootstrap-kubelet.conf",
            &self.as_guest_sees_it(&boot),
        );
        self.write(
            "/etc/kubernetes/pki/ca.crt",
            &std::fs::read_to_string(env.var("CLUSTER_CA")).expect("cluster CA"),
        );
        self.sh(
            "chown root:root /etc/kubernetes/bootstrap-kubelet.conf /etc/kubernetes/pki/ca.crt
             chmod 0600 /etc/kubernetes/bootstrap-kubelet.conf
             chmod 0644 /etc/kubernetes/pki/ca.crt",
        );
    }

    /// A host kubeconfig for the test cluster made to work in the guest: the API server as the
    /// guest reaches it, 10.0.2.2, its certificate checked against its name `kubernetes` (it has
    /// no SAN for 10.0.2.2).
    fn as_guest_sees_it(&self, kubeconfig: &str) -> String {
        let apiserver = crate::Env::cluster().var("APISERVER").to_string();
        let port = apiserver.rsplit(':').next().expect("APISERVER port");
        let text = kubeconfig.replace(
            &format!("server: {apiserver}"),
            &format!(
                "server: https://{}:{port}\n    tls-server-name: kubernetes",
                self.var("BOSUN_VM_HOST_ADDR")
            ),
        );
        assert!(text.contains("tls-server-name"), "{text}");
        text
    }

    /// Installs the upstream kubelet (the control plane's build, `$KUBELET_BIN`) as
    /// /usr/local/bin/kubelet, without its debug info (a fifth of the copy through the emulated
    /// 9p).
    pub fn install_kubelet(&self) {
        let env = crate::Env::cluster();
        let share = self.share();
        let status = Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(share.join("kubelet"))
            .arg(env.var("KUBELET_BIN"))
            .status()
            .expect("run strip");
        assert!(status.success(), "strip the kubelet into the share");
        let g = self.var("BOSUN_VM_GUEST_SHARE");
        self.sh(&format!(
            "install -m 0755 {g}/kubelet /usr/local/bin/kubelet && rm {g}/kubelet"
        ));
    }

    /// Writes `text` to `path` in the guest at once (written aside, then renamed).
    pub fn write(&self, path: &str, text: &str) {
        let share = self.share();
        let name = format!(".write-{}", std::process::id());
        std::fs::write(share.join(&name), text).expect("write into the share");
        let g = self.var("BOSUN_VM_GUEST_SHARE");
        self.sh(&format!(
            "mkdir -p \"$(dirname {path})\" && cp {g}/{name} {path}.tmp && mv {path}.tmp {path} && rm {g}/{name}"
        ));
    }

    /// The guest's journal of bosun.service since its last start (for failure messages).
    pub fn bosun_journal(&self) -> String {
        let out = self.try_sh("journalctl -u bosun --no-pager -n 200 -o cat");
        String::from_utf8_lossy(&out.stdout).to_string()
    }
}

/// The `install` commands of systemd/README.md (its indented lines starting with `install`), with
/// the repository's paths replaced by the share's copies under `guest_share`: the files land in
/// the guest with the modes the README gives an operator.
fn readme_install_commands(readme: &str, guest_share: &str) -> String {
    let lines: Vec<String> = readme
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("install "))
        .map(|l| {
            l.replace("target/release/bosun", &format!("{guest_share}/bosun"))
                .replace(" systemd/", &format!(" {guest_share}/systemd/"))
        })
        .collect();
    assert!(
        lines.len() >= 3,
        "systemd/README.md: expected the install commands of the binary, the unit and the drop-in:\n{readme}"
    );
    lines.join("\n")
}

/// `s` as one single-quoted shell word.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes the binary under test without its debug info to `dest` (the share is slow for the
/// 130 MB debug build); false when `strip` failed.
pub fn strip_bosun(dest: &Path) -> bool {
    Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(dest)
        .arg(crate::bosun_bin())
        .status()
        .is_ok_and(|s| s.success())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_readmes_install_commands_take_the_share_copies() {
        let readme = "intro\n\n    install -m 0755 target/release/bosun /usr/bin/bosun\n    \
                      install -m 0600 systemd/bosun.service /etc/systemd/system/bosun.service\n    \
                      install -D -m 0600 systemd/10-kubeadm.conf /etc/x/10-kubeadm.conf\n    \
                      systemctl enable bosun\n";
        assert_eq!(
            readme_install_commands(readme, "/mnt/host"),
            "install -m 0755 /mnt/host/bosun /usr/bin/bosun\n\
             install -m 0600 /mnt/host/systemd/bosun.service /etc/systemd/system/bosun.service\n\
             install -D -m 0600 /mnt/host/systemd/10-kubeadm.conf /etc/x/10-kubeadm.conf"
        );
    }

    #[test]
    fn quotes_single_quotes() {
        assert_eq!(shell_quote("a 'b' c"), r"'a '\''b'\'' c'");
    }
}
