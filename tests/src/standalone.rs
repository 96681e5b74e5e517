//! A standalone bosun node (static pods only, no API server) with its own containerd, cgroupRoot,
//! kubelet port and directories: what the standalone and stats e2e tests run.

use std::path::{Path, PathBuf};

use bosun_cri::{CriClient, Timeouts};

use crate::{Bosun, Containerd};

/// A standalone node: `<dir>/manifests` is its staticPodPath (checked every second), `<dir>/root`
/// its root dir, `<dir>/pods` its pod logs dir.
pub struct StandaloneNode {
    /// The node name (`--hostname-override`).
    pub name: String,
    /// Its containerd.
    pub ctd: Containerd,
    dir: tempfile::TempDir,
    args: Vec<String>,
}

impl StandaloneNode {
    /// Starts the node's containerd and writes its config; bosun starts with [`Self::start`].
    pub fn new(name: &str) -> StandaloneNode {
        let ctd = Containerd::start(name);
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        for sub in ["manifests", "root", "pods", "containers"] {
            std::fs::create_dir_all(d.join(sub)).expect("node dirs");
        }
        std::fs::write(
            d.join("resolv.conf"),
            "nameserver 127.0.0.1\nsearch example.test\n",
        )
        .expect("resolv.conf");
        // Disk thresholds a shared machine's disk does not cross, as the cluster nodes': under the
        // defaults (nodefs 10%, imagefs 15%) a nearly full build disk means DiskPressure, whose
        // reclaim removes the containers of finished pods, as the kubelet's does.
        let config = format!(
            "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
staticPodPath: {d}/manifests
fileCheckFrequency: 1s
podLogsDir: {d}/pods
containerRuntimeEndpoint: {endpoint}
cgroupDriver: cgroupfs
cgroupRoot: {cgroup_root}
healthzPort: 0
port: {port}
resolvConf: {d}/resolv.conf
evictionHard:
{eviction_hard}",
            d = d.display(),
            endpoint = ctd.endpoint(),
            port = ctd.server_port(),
            cgroup_root = ctd.cgroup_root(),
            eviction_hard = crate::cluster::TEST_EVICTION_HARD,
        );
        std::fs::write(d.join("config.yaml"), config).expect("config.yaml");
        let args = vec![
            "--config".into(),
            d.join("config.yaml").display().to_string(),
            "--root-dir".into(),
            d.join("root").display().to_string(),
            "--container-logs-link-dir".into(),
            d.join("containers").display().to_string(),
            "--hostname-override".into(),
            name.into(),
        ];
        StandaloneNode {
            name: name.into(),
            ctd,
            dir,
            args,
        }
    }

    /// The node's directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Its root dir (`--root-dir`).
    pub fn root(&self) -> PathBuf {
        self.path().join("root")
    }

    /// Starts bosun on the node, logging to `<dir>/bosun.log`.
    pub fn start(&self) -> Bosun {
        Bosun::start(&self.args, &self.path().join("bosun.log"))
    }

    /// Puts manifest `file` in the static pod directory at once (written aside, then renamed).
    pub fn manifest(&self, file: &str, text: &str) {
        let tmp = self.path().join(format!(".{file}"));
        std::fs::write(&tmp, text).expect("write manifest");
        std::fs::rename(&tmp, self.path().join("manifests").join(file)).expect("rename manifest");
    }

    /// A CRI client on the node's containerd.
    pub async fn cri(&self) -> CriClient {
        CriClient::connect(&self.ctd.endpoint(), Timeouts::default())
            .await
            .expect("cri")
    }
}

impl Drop for StandaloneNode {
    fn drop(&mut self) {
        // Bosun bind-mounts the root dir rshared (as the kubelet does on a private mount).
        crate::cluster::unmount_under(self.dir.path());
    }
}
