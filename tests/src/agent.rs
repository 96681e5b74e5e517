//! The agent running a test node, Bosun or the upstream kubelet, behind one type: tests that must
//! show identical results on both (and the benchmark) start either through [`Agent::start`].

use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::Api;

use crate::{Bosun, ClusterNode, Kubelet, NodeOptions};

/// Which agent runs the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Agent {
    /// This project's agent (`bosun_bin()`, `$BOSUN_BIN` for the release build).
    Bosun,
    /// The upstream kubelet (`$KUBELET_BIN`).
    Kubelet,
}

impl Agent {
    /// `bosun` or `kubelet`.
    pub fn name(self) -> &'static str {
        match self {
            Agent::Bosun => "bosun",
            Agent::Kubelet => "kubelet",
        }
    }

    /// Starts this agent for `node` (Bosun at its default log level, as the kubelet runs at its
    /// default verbosity).
    pub fn start(self, node: &ClusterNode) -> AgentProcess {
        match self {
            Agent::Bosun => AgentProcess::Bosun(Bosun::start_with_env(
                &node.args,
                &node.path().join("bosun.log"),
                &[("RUST_LOG", "info")],
            )),
            Agent::Kubelet => AgentProcess::Kubelet(node.start_kubelet()),
        }
    }

    /// A new node named `<prefix>-<agent>` with `opts`, and this agent started on it and Ready
    /// within 120 s: the opening of every side-by-side test.
    pub async fn on_new_node(
        self,
        prefix: &str,
        opts: NodeOptions,
        client: &kube::Client,
    ) -> (ClusterNode, AgentProcess) {
        let prefix = format!("{prefix}-{}", self.name());
        let node = tokio::task::spawn_blocking(move || ClusterNode::with_options(&prefix, &opts))
            .await
            .expect("node");
        let proc = self.start_ready(&node, client, 120).await;
        (node, proc)
    }

    /// Starts this agent for `node` and waits up to `secs` for the Node's Ready condition.
    pub async fn start_ready(
        self,
        node: &ClusterNode,
        client: &kube::Client,
        secs: u64,
    ) -> AgentProcess {
        let mut proc = self.start(node);
        if let Err(e) = proc.wait_ready(node, client, secs).await {
            panic!("{e}");
        }
        proc
    }
}

/// `(fact, value)` pairs as owned strings: what a side-by-side test expects of both agents.
pub fn facts(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Whether the Node's Ready condition is True.
pub fn node_ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// A running agent process; killed on drop (by the wrapped type).
pub enum AgentProcess {
    /// Bosun.
    Bosun(Bosun),
    /// The upstream kubelet.
    Kubelet(Kubelet),
}

impl AgentProcess {
    /// The process id.
    pub fn pid(&self) -> u32 {
        match self {
            AgentProcess::Bosun(b) => b.pid(),
            AgentProcess::Kubelet(k) => k.pid(),
        }
    }

    /// The exit status if it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        match self {
            AgentProcess::Bosun(b) => b.try_exit(),
            AgentProcess::Kubelet(k) => k.try_exit(),
        }
    }

    /// Where its output goes.
    pub fn log(&self) -> &Path {
        match self {
            AgentProcess::Bosun(b) => &b.log,
            AgentProcess::Kubelet(k) => &k.log,
        }
    }

    /// Waits up to `secs` for `node`'s Ready condition; an error when this agent exits first or
    /// the time runs out (naming its log).
    pub async fn wait_ready(
        &mut self,
        node: &ClusterNode,
        client: &kube::Client,
        secs: u64,
    ) -> Result<(), String> {
        let who = match self {
            AgentProcess::Bosun(_) => Agent::Bosun.name(),
            AgentProcess::Kubelet(_) => Agent::Kubelet.name(),
        };
        let nodes: Api<Node> = Api::all(client.clone());
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(status) = self.exited() {
                return Err(format!(
                    "{who} exited ({status}); log: {}",
                    self.log().display()
                ));
            }
            if let Ok(Some(n)) = nodes.get_opt(&node.name).await
                && node_ready(&n)
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "node {} not Ready under {who} after {secs} s; log: {}",
                    node.name,
                    self.log().display()
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL (no chance to clean up), reaped; what it mounted stays, as after a crash.
    pub fn kill(&mut self) {
        match self {
            AgentProcess::Bosun(b) => b.kill(),
            AgentProcess::Kubelet(k) => k.kill(),
        }
    }

    /// SIGTERM, SIGKILL after 15 s.
    pub fn stop(&mut self) {
        match self {
            AgentProcess::Bosun(b) => {
                if b.try_exit().is_none() {
                    b.terminate(Duration::from_secs(15));
                }
            }
            AgentProcess::Kubelet(k) => k.terminate(Duration::from_secs(15)),
        }
    }
}
