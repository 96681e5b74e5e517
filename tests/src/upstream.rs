//! The upstream kubelet (`$KUBELET_BIN`) as a test node: the yardstick, started with the same
//! config file, credentials, containerd and flags as bosun on a [`ClusterNode`].

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::cluster::{ClusterNode, unmount_under};
use crate::daemon;
use crate::env::Env;

/// Flags of bosun's that the kubelet does not have, each followed by its value.
const BOSUN_ONLY_FLAGS: &[&str] = &["--container-logs-link-dir"];

/// A running upstream kubelet; on drop it is killed and the mounts it left under the node's
/// directory are undone (it bind-mounts its root dir onto itself, rshared).
pub struct Kubelet {
    child: Option<Child>,
    dir: Option<PathBuf>,
    /// Where its output goes.
    pub log: PathBuf,
}

impl Kubelet {
    /// Starts the kubelet for `node`, logging to `<node dir>/kubelet.log`.
    pub fn start(node: &ClusterNode) -> Kubelet {
        let env = Env::cluster();
        // The kubelet refuses a cgroup root that does not exist.
        ensure_cgroup_root(&node.ctd.cgroup_root());
        let log = node.path().join("kubelet.log");
        let out = std::fs::File::create(&log).expect("create kubelet log");
        let child = Command::new(env.var("KUBELET_BIN"))
            .args(kubelet_args(&node.args))
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn kubelet");
        Kubelet {
            child: Some(child),
            dir: Some(node.path().to_path_buf()),
            log,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The exit status if it has exited.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// SIGKILLs the kubelet and reaps it; the node's mounts stay (as after a crash) for the next
    /// kubelet on the node, which cleans them up when dropped.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            daemon::kill(&mut c);
        }
        self.dir = None;
    }

    /// Sends SIGTERM and waits up to `within` for the exit (SIGKILL after that).
    pub fn terminate(&mut self, within: Duration) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        daemon::terminate(&mut child, within, Duration::from_millis(50));
    }
}

impl Drop for Kubelet {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            daemon::kill(&mut c);
        }
        if let Some(dir) = &self.dir {
            unmount_under(dir);
        }
    }
}

/// Bosun's flags for a node without the ones only bosun has.
fn kubelet_args(args: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if BOSUN_ONLY_FLAGS.contains(&a.as_str()) {
            it.next();
        } else if !BOSUN_ONLY_FLAGS
            .iter()
            .any(|f| a.starts_with(&format!("{f}=")))
        {
            out.push(a.clone());
        }
    }
    out
}

/// Creates `root` in every cgroup v1 hierarchy, with cpuset.cpus/mems copied from the parent
/// (as `ensure_cgroup_root` in tests/cluster/lib.sh).
pub fn ensure_cgroup_root(root: &str) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for mnt in mounts.lines().filter_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 2 && f[2] == "cgroup").then(|| f[1].to_string())
    }) {
        let mut dir = PathBuf::from(&mnt);
        for part in root.split('/').filter(|p| !p.is_empty()) {
            let parent = dir.clone();
            dir.push(part);
            if !dir.exists() {
                std::fs::create_dir(&dir)
                    .unwrap_or_else(|e| panic!("cannot create cgroup {}: {e}", dir.display()));
            }
            for file in ["cpuset.cpus", "cpuset.mems"] {
                let own = dir.join(file);
                let empty = std::fs::read_to_string(&own)
                    .map(|v| v.trim().is_empty())
                    .unwrap_or(false);
                if empty {
                    let from_parent =
                        std::fs::read_to_string(parent.join(file)).unwrap_or_default();
                    let _ = std::fs::write(&own, from_parent.trim());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_bosun_only_flags_and_their_values() {
        let args: Vec<String> = [
            "--config",
            "c.yaml",
            "--container-logs-link-dir",
            "/x",
            "--node-ip",
            "1.2.3.4",
            "--container-logs-link-dir=/y",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            kubelet_args(&args),
            ["--config", "c.yaml", "--node-ip", "1.2.3.4"]
        );
    }
}
