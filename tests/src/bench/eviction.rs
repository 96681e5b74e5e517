//! Eviction reaction: on a node of its own whose root dir is a 400 MiB tmpfs, with evictionHard
//! nodefs.available 150Mi, a pod writes 300 MiB into an emptyDir. The bench watches that
//! filesystem itself (statvfs every 2 ms) for the moment its available bytes cross the threshold,
//! and the pod watch for the moment the pod is Failed with reason Evicted: the reaction is the
//! time between, measured outside both agents. Each run waits for DiskPressure to clear
//! (evictionPressureTransitionPeriod 10 s) before the next filler, which would be rejected at
//! admission otherwise.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams};

use super::pods::Tracker;
use super::scenario::{Agent, progress};
use crate::pod::{Container, PodBuilder};
use crate::{ClusterNode, NodeOptions, admin_client};

/// The nodefs.available threshold, bytes (150Mi).
const THRESHOLD_BYTES: u64 = 150 << 20;

/// Runs `runs` evictions on a new node run by `agent`; the reaction of each, ms.
pub async fn measure(agent: Agent, runs: usize) -> anyhow::Result<Vec<f64>> {
    let opts = NodeOptions {
        root_dir_size: Some("400m".into()),
        eviction_hard: Some(vec![
            ("nodefs.available".into(), "150Mi".into()),
            ("memory.available".into(), "100Mi".into()),
            ("imagefs.available".into(), "1%".into()),
        ]),
        extra_config: "evictionPressureTransitionPeriod: 10s\n".into(),
        ..Default::default()
    };
    let prefix = format!("bench-evict-{}", agent.name());
    let node =
        tokio::task::spawn_blocking(move || ClusterNode::with_options(&prefix, &opts)).await?;
    // The image present before the agent starts: nothing measured pulls.
    super::floor::prepare(&node.ctd).await?;
    let client = admin_client().await;
    let mut proc = agent.start_ready(&node, &client, 120).await;
    let result = evictions(&client, &node, runs).await;
    proc.stop();
    tokio::task::spawn_blocking(move || drop(node)).await?;
    result
}

async fn evictions(
    client: &kube::Client,
    node: &ClusterNode,
    runs: usize,
) -> anyhow::Result<Vec<f64>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let nodes: Api<Node> = Api::all(client.clone());
    let tracker = Tracker::start(pods.clone()).await?;
    let root = node.path().join("root");
    let mut reactions = Vec::with_capacity(runs);
    for i in 0..runs {
        // The last eviction's pressure gone, or a new filler is rejected at admission.
        wait_pressure(&nodes, &node.name, false).await?;
        let name = format!("{}-filler-{i}", node.name);
        let pod = PodBuilder::new(&name)
            .node(&node.name)
            .restart_policy("Never")
            .empty_dir("data")
            .container(
                Container::sh(
                    "main",
                    "dd if=/dev/zero of=/data/fill bs=1M count=300; exec sleep 3600",
                )
                .mount("data", "/data"),
            )
            .build();
        pods.create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("create pod {name}"))?;
        // Seen True (it may lag the eviction by a node status period) before it can clear.
        let seen_true = {
            let (nodes, node) = (nodes.clone(), node.name.clone());
            tokio::spawn(async move { wait_pressure(&nodes, &node, true).await })
        };
        let crossed = {
            let root = root.clone();
            tokio::task::spawn_blocking(move || crossing(&root, Duration::from_secs(120)))
        };
        let (failed, status) = tracker.failed(&name, Duration::from_secs(150)).await?;
        let crossed = crossed.await??;
        if !status.contains("The node was low on resource: ephemeral-storage") {
            bail!("pod {name} Failed, not evicted for disk pressure: {status}");
        }
        let ms = failed.saturating_duration_since(crossed).as_secs_f64() * 1000.0;
        progress(format_args!(
            "eviction {i}: {ms:.0} ms after the threshold was crossed"
        ));
        reactions.push(ms);
        pods.delete(&name, &DeleteParams::default()).await?;
        tracker
            .gone(std::slice::from_ref(&name), Duration::from_secs(120))
            .await?;
        seen_true.await??;
    }
    Ok(reactions)
}

/// Polls the filesystem at `root` until fewer than [`THRESHOLD_BYTES`] are available; when.
fn crossing(root: &Path, timeout: Duration) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + timeout;
    let root = PathBuf::from(root);
    loop {
        let s = nix::sys::statvfs::statvfs(&root).context("statvfs of the node's root dir")?;
        let available = s.blocks_available() as u64 * s.fragment_size() as u64;
        if available < THRESHOLD_BYTES {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            bail!("nodefs still {available} bytes available after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// Waits up to 120 s until the Node's DiskPressure condition is True (`want`) or not.
async fn wait_pressure(nodes: &Api<Node>, name: &str, want: bool) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let n = nodes.get(name).await?;
        let pressure = n
            .status
            .and_then(|s| s.conditions)
            .into_iter()
            .flatten()
            .any(|c| c.type_ == "DiskPressure" && c.status == "True");
        if pressure == want {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("DiskPressure not {want} on {name} after 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
