//! A bosun node in the test cluster: its own name, credentials (minted by the cluster CA),
//! containerd, directories and config; the Node object is deleted when it is dropped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::bosun::Bosun;
use crate::env::{Env, repo_root};
use crate::node::Containerd;
use crate::upstream::Kubelet;

/// What a test node's config sets beyond the defaults every test node gets.
#[derive(Debug, Clone, Default)]
pub struct NodeOptions {
    /// `maxPods` (unset: the kubelet's default, 110).
    pub max_pods: Option<u32>,
    /// More KubeletConfiguration lines (YAML at the top level), appended as they are; a key
    /// the defaults already set must not be repeated (YAML forbids duplicate keys): evictionHard
    /// has its own option.
    pub extra_config: String,
    /// `evictionHard` (signal -> threshold) in place of the test nodes' default block (1% disk
    /// thresholds and memory.available 100Mi).
    pub eviction_hard: Option<Vec<(String, String)>>,
    /// Size of a tmpfs mounted as the node's containerd root (`64Mi`), so that the image
    /// filesystem is small and the test's own; unset: the containerd root is a plain directory.
    pub containerd_root_size: Option<String>,
    /// Size of a tmpfs mounted as the node's root dir (`400m`, as mount -o size takes it): nodefs (pod directories,
    /// emptyDirs) small and the test's own; unset: a plain directory.
    pub root_dir_size: Option<String>,
    /// The inodes of that tmpfs (mount -o nr_inodes): few, for inode pressure; unset: the
    /// kernel's default (half the RAM pages).
    pub root_dir_inodes: Option<u32>,
    /// Size of a tmpfs mounted as the node's `podLogsDir` (`8m`): a container log disk of the
    /// test's own that it can fill; unset: a plain directory.
    pub pod_logs_dir_size: Option<String>,
    /// `healthzPort` (on 127.0.0.1); unset: 0, no healthz port.
    pub healthz_port: Option<u16>,
    /// Run the node's containerd from this bin dir (`CONTAINERD2_BIN_DIR`: containerd 2, which
    /// mounts image volumes); unset: the machine's containerd 1.6.
    pub containerd_bin_dir: Option<std::path::PathBuf>,
}

/// One cluster node run by bosun (or by the upstream kubelet: the config and flags suit both).
pub struct ClusterNode {
    /// Node name (unique per test process and call).
    pub name: String,
    /// Its private containerd.
    pub ctd: Containerd,
    dir: tempfile::TempDir,
    /// Its kubeconfig (client cert for `system:node:<name>`).
    pub kubeconfig: PathBuf,
    /// The flags bosun is started with.
    pub args: Vec<String>,
}

/// The test nodes' `evictionHard` entries: disk thresholds a shared machine's nearly full disk
/// does not cross (at 11% free the kubelet's default imagefs.available 15% made it reject every
/// pod with DiskPressure, failing a benchmark run).
pub const TEST_EVICTION_HARD: &str = "  memory.available: 100Mi\n  nodefs.available: 1%\n  \
    nodefs.inodesFree: 1%\n  imagefs.available: 1%\n  imagefs.inodesFree: 1%\n";

/// Size of the shared API server's audit log: where a count of requests starts.
pub fn audit_len() -> u64 {
    std::fs::metadata(Env::cluster().var("AUDIT_LOG"))
        .map(|m| m.len())
        .unwrap_or(0)
}

/// Requests of `user` completed in the audit log after byte `from`: (verb, resource[/sub]).
pub fn audit_requests(from: u64, user: &str) -> Vec<(String, String)> {
    use std::io::{BufRead, Seek};
    let mut f = std::fs::File::open(Env::cluster().var("AUDIT_LOG")).expect("audit log");
    f.seek(std::io::SeekFrom::Start(from)).expect("seek");
    std::io::BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(&l).ok())
        .filter(|e| e["user"]["username"] == user && e["stage"] == "ResponseComplete")
        .map(|e| {
            let o = &e["objectRef"];
            let mut res = o["resource"].as_str().unwrap_or("").to_string();
            if let Some(s) = o["subresource"].as_str() {
                res = format!("{res}/{s}");
            }
            (e["verb"].as_str().unwrap_or("").to_string(), res)
        })
        .collect()
}

/// A node name `<prefix>-<pid>-<n>` unique in this process, with any Node of that name left in
/// the API deleted: names repeat once test pids wrap around on a long-lived machine, and a Node
/// left by an earlier run (killed before its drop ran) would be taken for the new one, Ready and
/// all.
pub fn fresh_node_name(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let env = Env::cluster();
    let name = format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    );
    let _ = Command::new(env.var("KUBECTL"))
        .args(["delete", "node", &name, "--ignore-not-found"])
        .env("KUBECONFIG", env.var("KUBECONFIG"))
        .output();
    name
}

impl ClusterNode {
    /// A CRI client of this node's containerd.
    pub async fn cri(&self) -> bosun_cri::CriClient {
        bosun_cri::CriClient::connect(&self.ctd.endpoint(), Default::default())
            .await
            .expect("connect to the node's containerd")
    }

    /// The containers of pod `uid` in this node's containerd, by the pod UID label: (id, state).
    pub async fn containers_of(&self, uid: &str) -> Vec<(String, i32)> {
        let cri = self.cri().await;
        let filter = bosun_cri::types::ContainerFilter {
            label_selector: [("io.kubernetes.pod.uid".to_string(), uid.to_string())].into(),
            ..Default::default()
        };
        cri.list_containers(Some(filter))
            .await
            .expect("list containers")
            .into_iter()
            .map(|c| (c.id, c.state))
            .collect()
    }

    /// Prepares node `<prefix>-<pid>-<n>`: credentials, containerd, dirs and a KubeletConfiguration.
    pub fn new(prefix: &str) -> ClusterNode {
        ClusterNode::with_options(prefix, &NodeOptions::default())
    }

    /// As [`ClusterNode::new`], with `opts` in the config.
    pub fn with_options(prefix: &str, opts: &NodeOptions) -> ClusterNode {
        let env = Env::cluster();
        let name = fresh_node_name(prefix);
        let ctd = Containerd::start_from(
            &name,
            opts.containerd_root_size.as_deref(),
            opts.containerd_bin_dir.as_deref(),
        );
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for sub in ["manifests", "root", "pods", "containers", "pki"] {
            std::fs::create_dir_all(d.join(sub)).expect("mkdir");
        }
        if let Some(size) = &opts.root_dir_size {
            // Unmounted with everything else under the node's directory when it is dropped.
            let mut options = format!("size={size}");
            if let Some(n) = opts.root_dir_inodes {
                options += &format!(",nr_inodes={n}");
            }
            let status = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &options, "tmpfs"])
                .arg(d.join("root"))
                .status()
                .expect("run mount");
            assert!(status.success(), "mount a tmpfs on the root dir");
        }
        if let Some(size) = &opts.pod_logs_dir_size {
            let status = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(d.join("pods"))
                .status()
                .expect("run mount");
            assert!(status.success(), "mount a tmpfs on the pod logs dir");
        }
        let status = Command::new(repo_root().join("tests/cluster/mint-node-cred"))
            .arg(&name)
            .arg(d)
            .envs(env.vars())
            .status()
            .expect("run mint-node-cred");
        assert!(status.success(), "mint-node-cred {name} failed");
        let kubeconfig = d.join("kubeconfig");
        std::fs::write(d.join("resolv.conf"), "nameserver 127.0.0.1\n").expect("resolv.conf");
        let max_pods = opts
            .max_pods
            .map(|n| format!("maxPods: {n}\n"))
            .unwrap_or_default();
        // What the upstream kubelet needs here too (tests/cluster/README.md): cgroupfs, cgroup v1
        // allowed, no swap check, its own cgroup root; and disk eviction thresholds that a shared
        // machine's disk does not cross (at 11% free the kubelet's default imagefs.available 15%
        // made it reject every pod with DiskPressure, failing a benchmark run).
        let eviction_hard: String = match &opts.eviction_hard {
            Some(thresholds) => thresholds
                .iter()
                .map(|(signal, value)| format!("  {signal}: {value:?}\n"))
                .collect(),
            None => TEST_EVICTION_HARD.into(),
        };
        let eviction_hard = format!("evictionHard:\n{eviction_hard}");
        let config = format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: {d}/manifests
fileCheckFrequency: 2s
podLogsDir: {d}/pods
containerRuntimeEndpoint: {endpoint}
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
failCgroupV1: false
failSwapOn: false
healthzPort: {healthz_port}
port: {port}
resolvConf: {d}/resolv.conf
clusterDNS: [10.96.0.10]
clusterDomain: cluster.local
{eviction_hard}authentication:
  x509:
    clientCAFile: {ca}
{max_pods}{extra}",
            d = d.display(),
            endpoint = ctd.endpoint(),
            cgroup_root = ctd.cgroup_root(),
            ca = env.var("CLUSTER_CA"),
            port = ctd.server_port(),
            healthz_port = opts.healthz_port.unwrap_or(0),
            extra = opts.extra_config,
            eviction_hard = eviction_hard,
        );
        std::fs::write(d.join("config.yaml"), config).expect("config");
        let args = vec![
            "--config".into(),
            d.join("config.yaml").display().to_string(),
            "--kubeconfig".into(),
            kubeconfig.display().to_string(),
            "--root-dir".into(),
            d.join("root").display().to_string(),
            "--cert-dir".into(),
            d.join("pki").display().to_string(),
            "--container-logs-link-dir".into(),
            d.join("containers").display().to_string(),
            "--hostname-override".into(),
            name.clone(),
            "--node-ip".into(),
            env.var("NODE_IP").to_string(),
        ];
        ClusterNode {
            name,
            ctd,
            dir,
            kubeconfig,
            args,
        }
    }

    /// The node's directory (config, manifests, logs).
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The port bosun serves HTTPS on (the kubelet's `port`), unique per test node.
    pub fn server_port(&self) -> u16 {
        self.ctd.server_port()
    }

    /// The kubelet port's address and the serving certificate to trust, once the agent has
    /// written it (waited for up to 30 s).
    pub fn serving_endpoint(&self) -> (std::net::SocketAddr, PathBuf) {
        let ip = Env::cluster().var("NODE_IP").parse().expect("NODE_IP");
        let crt = self.path().join("pki/kubelet.crt");
        crate::wait_until(
            "serving certificate",
            std::time::Duration::from_secs(30),
            || crt.exists().then_some(()),
        );
        (std::net::SocketAddr::new(ip, self.server_port()), crt)
    }

    /// A client of this node's kubelet port as the cluster admin (a client certificate of
    /// group system:masters), trusting the node's serving certificate once it is written.
    pub fn admin_kubelet(&self) -> crate::KubeletClient {
        let (addr, crt) = self.serving_endpoint();
        let certs = tempfile::tempdir().expect("tempdir");
        let (admin_crt, admin_key) =
            crate::mint_client_cert(certs.path(), "bosun-test-admin", &["system:masters"]);
        crate::KubeletClient::new(addr, &crt, Some((&admin_crt, &admin_key)))
    }

    /// Starts bosun for this node, logging to `<dir>/bosun.log`.
    pub fn start(&self) -> Bosun {
        self.start_with_env(&[])
    }

    /// Starts bosun for this node with extra environment variables.
    pub fn start_with_env(&self, envs: &[(&str, &str)]) -> Bosun {
        Bosun::start_with_env(&self.args, &self.path().join("bosun.log"), envs)
    }

    /// Starts the upstream kubelet for this node (same config file and flags), logging to
    /// `<dir>/kubelet.log`.
    pub fn start_kubelet(&self) -> Kubelet {
        Kubelet::start(self)
    }

    /// Runs kubectl as the cluster admin; returns stdout, panicking with stderr on failure.
    pub fn kubectl(&self, args: &[&str]) -> String {
        kubectl(args)
    }
}

/// Runs kubectl as the cluster admin; returns stdout, panicking with stderr on failure.
pub fn kubectl(args: &[&str]) -> String {
    let env = Env::cluster();
    let out = Command::new(env.var("KUBECTL"))
        .args(args)
        .env("KUBECONFIG", env.var("KUBECONFIG"))
        .output()
        .expect("run kubectl");
    assert!(
        out.status.success(),
        "kubectl {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A kube client with the cluster admin's credentials.
pub async fn admin_client() -> kube::Client {
    kube::Client::try_from(admin_config().await).expect("admin client")
}

/// The cluster admin's client config (from the admin kubeconfig).
pub async fn admin_config() -> kube::Config {
    let env = Env::cluster();
    let kc = kube::config::Kubeconfig::read_from(env.var("KUBECONFIG")).expect("admin kubeconfig");
    kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .expect("admin config")
}

impl Drop for ClusterNode {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // Keep the node's directory (bosun.log, config, pod logs) for the post-mortem.
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            eprintln!(
                "node {} kept for inspection: {}",
                self.name,
                dir.keep().display()
            );
        }
        // Volumes an agent left mounted would keep the directory from being removed.
        unmount_under(self.dir.path());
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

/// Unmounts everything mounted under `dir`, deepest first, each mount of a point that holds
/// several (a root dir an agent bind-mounted rshared over a test's tmpfs).
pub(crate) fn unmount_under(dir: &Path) {
    let prefix = format!("{}/", dir.display());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut mounts: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .filter(|m| format!("{m}/").starts_with(&prefix))
        .collect();
    mounts.sort_unstable_by(|a, b| b.cmp(a));
    for m in mounts {
        let _ = Command::new("umount").arg("-l").arg(m).status();
    }
}
