//! The one fixture for "a node running Bosun": the opening (a fresh node, Bosun started on it,
//! an admin client and the default namespace's pods) and the closing (Bosun still running, then
//! stopped by SIGTERM with exit code 0) that most end-to-end tests share.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Api;

use crate::{Bosun, ClusterNode, NodeOptions, admin_client};

/// A test node with Bosun running on it, and the clients a test drives it with.
pub struct BosunNode {
    /// The node: its name, containerd, directories and flags.
    pub node: ClusterNode,
    /// The Bosun process running the node.
    pub bosun: Bosun,
    /// An admin client of the test cluster.
    pub client: kube::Client,
    /// Pods in the `default` namespace.
    pub pods: Api<Pod>,
}

impl BosunNode {
    /// A new node named after `prefix` with the default test options, Bosun started on it.
    pub async fn start(prefix: &str) -> BosunNode {
        Self::start_with(prefix, &NodeOptions::default()).await
    }

    /// A new node named after `prefix` with `opts`, Bosun started on it.
    pub async fn start_with(prefix: &str, opts: &NodeOptions) -> BosunNode {
        let node = ClusterNode::with_options(prefix, opts);
        let bosun = node.start();
        let client = admin_client().await;
        let pods = Api::namespaced(client.clone(), "default");
        BosunNode {
            node,
            bosun,
            client,
            pods,
        }
    }

    /// The closing every test shares: Bosun never exited on its own during the test, and it
    /// stops within 10 s of SIGTERM with exit code 0 (the node is then cleaned up on drop).
    pub fn finish(mut self) {
        if let Some(status) = self.bosun.try_exit() {
            panic!(
                "bosun exited during the test ({status}):\n{}",
                self.bosun.log_text()
            );
        }
        let (took, code) = self.bosun.terminate(Duration::from_secs(10));
        assert_eq!(
            code,
            Some(0),
            "bosun exited with {code:?} {took:?} after SIGTERM:\n{}",
            self.bosun.log_text()
        );
    }
}
