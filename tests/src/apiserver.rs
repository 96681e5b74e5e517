//! One more kube-apiserver of the test control plane (`tests/cluster/apiserver-replica`), on its
//! own loopback port against the same etcd: a node pointed at it can lose "the API server" while
//! every other test keeps the shared one on 6443.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::daemon;
use crate::env::{Env, env_dir, repo_root};
use crate::wait::wait_until_async;

/// A kube-apiserver replica that can be stopped and started again on the same port.
pub struct ApiServerReplica {
    port: u16,
    log: PathBuf,
    child: Option<Child>,
}

impl ApiServerReplica {
    /// Starts a replica on a free loopback port, logging to `log`, and waits until it is ready.
    pub async fn start(log: &Path) -> ApiServerReplica {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let mut replica = ApiServerReplica {
            port,
            log: log.to_path_buf(),
            child: None,
        };
        replica.resume().await;
        replica
    }

    /// Its URL (`https://127.0.0.1:<port>`), served with the shared API server's certificate.
    pub fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.port)
    }

    /// Starts it again (after [`ApiServerReplica::stop`]) on the same port; waits until ready.
    pub async fn resume(&mut self) {
        assert!(self.child.is_none(), "replica already running");
        let env = Env::cluster();
        let cache_dir = Path::new(env.var("KUBE_BIN_DIR"))
            .ancestors()
            .nth(3)
            .expect("KUBE_BIN_DIR is <cache>/k8s/<version>/bin")
            .to_path_buf();
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("replica log");
        let child = Command::new(repo_root().join("tests/cluster/apiserver-replica"))
            .arg(self.port.to_string())
            .env("BOSUN_ENV_DIR", env_dir())
            .env("BOSUN_CACHE_DIR", cache_dir)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn apiserver-replica");
        self.child = Some(child);
        let client = self.admin_client().await;
        let log = self.log.display().to_string();
        wait_until_async(
            &format!("API server replica on {} ready (log {log})", self.url()),
            Duration::from_secs(120),
            || async {
                let req = http::Request::get("/readyz")
                    .body(Vec::new())
                    .expect("request");
                let body = client.request_text(req).await.ok()?;
                (body.trim() == "ok").then_some(())
            },
        )
        .await;
    }

    /// Stops it (SIGTERM, SIGKILL after 20 s) and waits until the port refuses connections.
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        daemon::terminate(
            &mut child,
            Duration::from_secs(20),
            Duration::from_millis(100),
        );
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err(),
            "port {} still answers after the replica stopped",
            self.port
        );
    }

    /// A kube client with the cluster admin's credentials, talking to this replica.
    pub async fn admin_client(&self) -> kube::Client {
        let mut cfg = crate::cluster::admin_config().await;
        cfg.cluster_url = self.url().parse().expect("replica url");
        kube::Client::try_from(cfg).expect("admin client")
    }

    /// Rewrites the `server:` of the kubeconfig at `path` to this replica.
    pub fn point_kubeconfig(&self, path: &Path) {
        crate::proxy::point_kubeconfig(path, &self.url());
    }
}

impl Drop for ApiServerReplica {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            daemon::kill(&mut child);
        }
    }
}
