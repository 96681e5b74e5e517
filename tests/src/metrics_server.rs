//! metrics-server (built by `tests/cluster/build`) against the test cluster, for the tests that
//! check what it scrapes from a node.

use std::path::{Path, PathBuf};

/// metrics-server run by `tests/cluster/run-metrics-server`, killed (with its API registration
/// removed) on drop.
pub struct MetricsServer {
    child: std::process::Child,
    port: u16,
    log: PathBuf,
    registered: bool,
}

impl MetricsServer {
    /// Starts it for the nodes labelled `bosun.test/metrics=<node>`, state and log under `dir`,
    /// with `extra` flags (`--kubelet-certificate-authority=CA` verifies the kubelets' serving
    /// certificates against CA instead of skipping the check).
    pub fn start(node: &str, dir: &Path, extra: &[String]) -> MetricsServer {
        let env = crate::Env::cluster();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let log = dir.join("metrics-server.log");
        let out = std::fs::File::create(&log).expect("log");
        let child =
            std::process::Command::new(crate::repo_root().join("tests/cluster/run-metrics-server"))
                .arg(dir.join("metrics-server"))
                .arg(port.to_string())
                .arg(format!("--node-selector=bosun.test/metrics={node}"))
                .args(extra)
                .envs(env.vars())
                .stdin(std::process::Stdio::null())
                .stdout(out.try_clone().unwrap())
                .stderr(out)
                .spawn()
                .expect("run-metrics-server");
        MetricsServer {
            child,
            port,
            log,
            registered: false,
        }
    }

    /// What it logged so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Registers it with the API server's aggregation layer as `v1beta1.metrics.k8s.io` (through
    /// an ExternalName service: no kube-proxy here), so `kubectl top` reaches it.
    pub fn register(&mut self, dir: &Path) {
        let yaml = format!(
            "apiVersion: v1
kind: Service
metadata: {{name: bosun-test-metrics-server, namespace: kube-system}}
spec:
  type: ExternalName
  externalName: localhost
  ports: [{{port: {port}}}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: v1beta1.metrics.k8s.io}}
spec:
  group: metrics.k8s.io
  version: v1beta1
  service: {{namespace: kube-system, name: bosun-test-metrics-server, port: {port}}}
  insecureSkipTLSVerify: true
  groupPriorityMinimum: 100
  versionPriority: 100
",
            port = self.port
        );
        let file = dir.join("apiservice.yaml");
        std::fs::write(&file, yaml).unwrap();
        self.registered = true;
        crate::kubectl(&["apply", "-f", &file.display().to_string()]);
    }

    /// GET on its own API with the cluster admin's client certificate.
    pub fn get(&self, path: &str) -> Option<serde_json::Value> {
        let env = crate::Env::cluster();
        let pki = Path::new(env.var("CLUSTER_CA")).parent().unwrap();
        let out = std::process::Command::new("curl")
            .args(["-sf", "-k", "--max-time", "5", "--cert"])
            .arg(pki.join("admin.crt"))
            .arg("--key")
            .arg(pki.join("admin.key"))
            .arg(format!("https://127.0.0.1:{}{path}", self.port))
            .output()
            .ok()?;
        if !out.status.success() {
            return None;
        }
        serde_json::from_slice(&out.stdout).ok()
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        if self.registered {
            let env = crate::Env::cluster();
            for what in [
                "apiservice/v1beta1.metrics.k8s.io",
                "service/bosun-test-metrics-server",
            ] {
                let _ = std::process::Command::new(env.var("KUBECTL"))
                    .args(["delete", "-n", "kube-system", what, "--ignore-not-found"])
                    .env("KUBECONFIG", env.var("KUBECONFIG"))
                    .output();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
