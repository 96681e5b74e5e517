//! Hollow nodes for scale tests (issue #20): a real node agent against a fake CRI runtime, the
//! Kubernetes project's own (`k8s.io/cri-client/pkg/fake`, served by `tests/cluster/fake-cri`), so
//! that many nodes fit on one machine. Bosun runs as it would anywhere, on its own fake-cri; the
//! yardstick is kubemark's hollow node (`kubemark --morph=kubelet`), the kubelet's code on the same
//! fake runtime, which kubemark starts in-process.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::fcntl::Flock;

use crate::bosun::bosun_bin;
use crate::cluster::TEST_EVICTION_HARD;
use crate::daemon;
use crate::env::{Env, repo_root};

/// Label every hollow node registers with (value: the node's group); workloads select it.
pub const HOLLOW_LABEL: &str = "bosun.dev/hollow";
/// Taint every hollow node registers with (`bosun.dev/hollow=true:NoSchedule`), so that no other
/// test's pod lands on one; workloads meant for them tolerate it.
pub const HOLLOW_TAINT: &str = "bosun.dev/hollow";
/// The IP the fake runtime gives every sandbox.
pub const FAKE_POD_IP: &str = "192.168.192.168";

/// Machine-wide claims of hollow-node slots (slot N serves the kubelet port on 14000 + N).
const SLOTS_DIR: &str = "/run/bosun-tests/hollow-slots";
/// Most hollow nodes at once on the machine.
const MAX_SLOT: u32 = 999;
/// Below the ephemeral port range, clear of the containerd nodes' 11250 + N.
const PORT_BASE: u16 = 14000;

/// Which agent a hollow node runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HollowAgent {
    /// Bosun (`bosun_bin()`) on its own fake-cri.
    Bosun,
    /// kubemark's hollow kubelet (`$KUBEMARK_BIN`), its fake runtime in-process.
    Kubemark,
}

impl HollowAgent {
    /// `bosun` or `kubemark`.
    pub fn name(self) -> &'static str {
        match self {
            HollowAgent::Bosun => "bosun",
            HollowAgent::Kubemark => "kubemark",
        }
    }
}

/// One hollow node: name, credentials, directory and kubelet port; nothing runs until
/// [`HollowNode::start`]. The Node object is deleted on drop.
pub struct HollowNode {
    /// Node name.
    pub name: String,
    /// Value of its [`HOLLOW_LABEL`]: the nodes a workload selects.
    pub group: String,
    dir: tempfile::TempDir,
    /// Its kubeconfig (client cert for `system:node:<name>`).
    pub kubeconfig: PathBuf,
    /// The kubelet port it serves on, unique on the machine while the node lives.
    pub port: u16,
    _slot: Flock<File>,
}

/// A running hollow node's processes; killed on drop.
pub struct HollowProcess {
    agent: Child,
    fake_cri: Option<Child>,
    /// Where the agent's output goes.
    pub log: PathBuf,
}

impl HollowNode {
    /// Prepares hollow node `<prefix>-<pid>-<n>` of `group`: credentials and a directory (short:
    /// the fake runtime's socket path must stay under 108 bytes).
    pub fn new(prefix: &str, group: &str) -> HollowNode {
        let env = Env::cluster();
        let name = crate::cluster::fresh_node_name(prefix);
        let (slot, lock) = crate::node::claim_slot(Path::new(SLOTS_DIR), MAX_SLOT);
        let dir = tempfile::Builder::new()
            .prefix("hollow")
            .tempdir_in("/tmp")
            .expect("tempdir");
        let d = dir.path();
        for sub in ["manifests", "root", "pods", "containers", "pki"] {
            fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        let status = Command::new(repo_root().join("tests/cluster/mint-node-cred"))
            .arg(&name)
            .arg(d)
            .envs(env.vars())
            .stdout(Stdio::null())
            .status()
            .expect("run mint-node-cred");
        assert!(status.success(), "mint-node-cred {name} failed");
        fs::write(d.join("resolv.conf"), "nameserver 127.0.0.1\n").expect("resolv.conf");
        HollowNode {
            name,
            group: group.to_string(),
            kubeconfig: d.join("kubeconfig"),
            dir,
            port: PORT_BASE + slot as u16,
            _slot: lock,
        }
    }

    /// The node's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The fake runtime's socket (Bosun's hollow nodes).
    pub fn cri_socket(&self) -> PathBuf {
        self.path().join("cri.sock")
    }

    /// Bosun's KubeletConfiguration for a hollow node: kubemark's hollow kubelet settings where
    /// Bosun has them (pkg/kubemark GetHollowKubeletConfig: no per-QoS cgroups, 10 s sync and
    /// status update, 5 min status report, 110 pods, 20 s static pod check, no cluster DNS),
    /// the node registered with the hollow taint.
    pub fn bosun_config(&self) -> String {
        let d = self.path().display();
        format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: {d}/manifests
fileCheckFrequency: 20s
podLogsDir: {d}/pods
containerRuntimeEndpoint: unix://{sock}
cgroupDriver: cgroupfs
cgroupsPerQOS: false
enforceNodeAllocatable: []
healthzPort: 0
port: {port}
syncFrequency: 10s
nodeStatusUpdateFrequency: 10s
nodeStatusReportFrequency: 5m
maxPods: 110
resolvConf: {d}/resolv.conf
evictionHard:
{TEST_EVICTION_HARD}registerWithTaints:
- key: {HOLLOW_TAINT}
  value: \"true\"
  effect: NoSchedule
authentication:
  x509:
    clientCAFile: {ca}
",
            sock = self.cri_socket().display(),
            port = self.port,
            ca = Env::cluster().var("CLUSTER_CA"),
        )
    }

    /// Starts `agent` on this node (Bosun after its own fake-cri answers), logging to
    /// `<dir>/<agent>.log`.
    pub fn start(&self, agent: HollowAgent) -> HollowProcess {
        let fake_cri = (agent == HollowAgent::Bosun).then(|| {
            let log = self.path().join("fake-cri.log");
            spawn_fake_cri(&[self.cri_socket()], &log)
        });
        self.spawn(agent, fake_cri)
    }

    /// Starts Bosun on this node, its runtime served by a [`SharedFakeCri`] already listening.
    pub fn start_on_shared_runtime(&self) -> HollowProcess {
        self.spawn(HollowAgent::Bosun, None)
    }

    fn spawn(&self, agent: HollowAgent, fake_cri: Option<Child>) -> HollowProcess {
        let log = self.path().join(format!("{}.log", agent.name()));
        let out = File::create(&log).expect("create agent log");
        let mut cmd = match agent {
            HollowAgent::Bosun => self.bosun_command(),
            HollowAgent::Kubemark => self.kubemark_command(),
        };
        let agent = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn the hollow node's agent");
        HollowProcess {
            agent,
            fake_cri,
            log,
        }
    }

    fn bosun_command(&self) -> Command {
        let d = self.path();
        fs::write(d.join("config.yaml"), self.bosun_config()).expect("config");
        let mut cmd = Command::new(bosun_bin());
        cmd.arg("--config")
            .arg(d.join("config.yaml"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .arg("--root-dir")
            .arg(d.join("root"))
            .arg("--cert-dir")
            .arg(d.join("pki"))
            .arg("--container-logs-link-dir")
            .arg(d.join("containers"))
            .arg("--hostname-override")
            .arg(&self.name)
            .arg("--node-ip")
            .arg(Env::cluster().var("NODE_IP"))
            .arg(format!("--node-labels={HOLLOW_LABEL}={}", self.group))
            .env("RUST_LOG", "info");
        cmd
    }

    /// kubemark's flags (cmd/kubemark/app/hollow_node.go): the fake image service rather than a
    /// host containerd's, no read-only port. It makes its root dir under /tmp whatever TMPDIR says
    /// (test/utils MakeTempDirOrDie); [`HollowProcess`] removes it.
    fn kubemark_command(&self) -> Command {
        let mut cmd = Command::new(Env::cluster().var("KUBEMARK_BIN"));
        cmd.arg("--morph=kubelet")
            .arg(format!("--name={}", self.name))
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .arg(format!("--kubelet-port={}", self.port))
            .arg("--kubelet-read-only-port=0")
            .arg("--use-host-image-service=false")
            .arg(format!("--node-labels={HOLLOW_LABEL}={}", self.group))
            .arg(format!(
                "--register-with-taints={HOLLOW_TAINT}=true:NoSchedule"
            ));
        cmd
    }
}

/// One fake-cri process serving a runtime of its own on each of several hollow nodes' sockets,
/// so that many Bosun nodes do not each pay for a Go process (each node still has its own fake
/// runtime, state and socket). Killed on drop.
pub struct SharedFakeCri {
    child: Child,
}

impl SharedFakeCri {
    /// Starts one fake-cri for `nodes`, logging to the first node's `fake-cri.log`; returns
    /// once every socket listens.
    pub fn start(nodes: &[HollowNode]) -> SharedFakeCri {
        let first = nodes
            .first()
            .expect("a shared fake-cri serves at least one node");
        let sockets: Vec<PathBuf> = nodes.iter().map(HollowNode::cri_socket).collect();
        SharedFakeCri {
            child: spawn_fake_cri(&sockets, &first.path().join("fake-cri.log")),
        }
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for SharedFakeCri {
    fn drop(&mut self) {
        daemon::kill(&mut self.child);
    }
}

/// Spawns a fake-cri serving one runtime on each of `sockets`; returns once all listen.
fn spawn_fake_cri(sockets: &[PathBuf], log: &Path) -> Child {
    let list: Vec<String> = sockets.iter().map(|s| s.display().to_string()).collect();
    let out = File::create(log).expect("fake-cri log");
    let mut child = Command::new(Env::cluster().var("FAKE_CRI_BIN"))
        .arg("-socket")
        .arg(list.join(","))
        .stdin(Stdio::null())
        .stdout(out.try_clone().expect("dup"))
        .stderr(out)
        .spawn()
        .expect("spawn fake-cri");
    daemon::wait_ready(&mut child, "fake-cri", log, Duration::from_secs(30), || {
        sockets.iter().try_for_each(|sock| {
            std::os::unix::net::UnixStream::connect(sock)
                .map(drop)
                .map_err(|e| format!("{}: {e}", sock.display()))
        })
    });
    child
}

impl HollowProcess {
    /// The agent's process id.
    pub fn pid(&self) -> u32 {
        self.agent.id()
    }

    /// The fake-cri's process id (Bosun's nodes; kubemark's runtime is in its own process).
    pub fn fake_cri_pid(&self) -> Option<u32> {
        self.fake_cri.as_ref().map(Child::id)
    }

    /// The agent's exit status if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.agent.try_wait().ok().flatten()
    }

    /// SIGTERM to the agent (SIGKILL after `within`), then the fake-cri.
    pub fn stop(&mut self, within: Duration) {
        daemon::terminate(&mut self.agent, within, Duration::from_millis(50));
        if let Some(f) = self.fake_cri.as_mut() {
            daemon::terminate(f, within, Duration::from_millis(50));
        }
    }
}

impl Drop for HollowProcess {
    fn drop(&mut self) {
        daemon::kill(&mut self.agent);
        if let Some(f) = self.fake_cri.as_mut() {
            daemon::kill(f);
        }
        if let Some(root) = kubemark_root_dir(&fs::read_to_string(&self.log).unwrap_or_default()) {
            let _ = fs::remove_dir_all(root);
        }
    }
}

/// The root dir kubemark's hollow kubelet logged it made (`Using /tmp/hollow-kubelet.123 as root
/// dir for hollow-kubelet`); only a directory of that name under /tmp.
fn kubemark_root_dir(log: &str) -> Option<&str> {
    let line = log
        .lines()
        .find(|l| l.contains("as root dir for hollow-kubelet"))?;
    let dir = line.split("Using ").nth(1)?.split(" as root dir").next()?;
    dir.strip_prefix("/tmp/hollow-kubelet.")
        .is_some_and(|rest| !rest.is_empty() && !rest.contains('/'))
        .then_some(dir)
}

impl Drop for HollowNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            eprintln!(
                "hollow node {} kept for inspection: {}",
                self.name,
                dir.keep().display()
            );
        }
        crate::cluster::unmount_under(self.dir.path());
        let env = Env::cluster();
        let _ = Command::new(env.var("KUBECTL"))
            .args([
                "delete",
                "node",
                &self.name,
                "--ignore-not-found",
                "--wait=false",
            ])
            .env("KUBECONFIG", env.var("KUBECONFIG"))
            .output();
    }
}

/// A Deployment of `replicas` pods of the busybox image (`sleep 3600`) for hollow nodes only: it
/// selects the hollow nodes of `group` and tolerates the hollow taint; `node` pins it to one node.
pub fn deployment(
    name: &str,
    replicas: usize,
    group: &str,
    node: Option<&str>,
) -> serde_json::Value {
    let mut selector = serde_json::json!({ HOLLOW_LABEL: group });
    if let Some(n) = node {
        selector["kubernetes.io/hostname"] = n.into();
    }
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": {
                    "nodeSelector": selector,
                    "tolerations": [{
                        "key": HOLLOW_TAINT, "operator": "Equal", "value": "true",
                        "effect": "NoSchedule"
                    }],
                    "terminationGracePeriodSeconds": 1,
                    "containers": [{
                        "name": "c",
                        "image": Env::runtime().busybox_image(),
                        "command": ["sleep", "3600"],
                    }],
                },
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_kubemarks_root_dir_and_nothing_else() {
        let log = "I1203 hollow_kubelet.go:185] Using /tmp/hollow-kubelet.42 as root dir for hollow-kubelet\n";
        assert_eq!(kubemark_root_dir(log), Some("/tmp/hollow-kubelet.42"));
        for bad in [
            "Using / as root dir for hollow-kubelet",
            "Using /tmp/hollow-kubelet.1/../.. as root dir for hollow-kubelet",
            "nothing here",
        ] {
            assert_eq!(kubemark_root_dir(bad), None, "{bad}");
        }
    }
}
