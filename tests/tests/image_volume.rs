//! Image volumes (`volumes[].image`): an OCI image mounted read-only into a container, pulled
//! by the volume's pullPolicy. On containerd 2 (built by tests/cluster/build: the machine's
//! containerd 1.6 cannot mount images) Bosun and the upstream kubelet show the container the
//! same files, read-only; on containerd 1.6 Bosun refuses the pod's container with a
//! CreateContainerConfigError naming the runtime and the version needed.

use std::time::Duration;

use bosun_tests::pod::{Container, PodBuilder, container_output, create, running_uid};
use bosun_tests::{
    Agent, BosunNode, ClusterNode, Env, NodeOptions, admin_client, facts, wait_until_async,
};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::ListParams;
use serde_json::json;

/// A pod mounting the busybox image at /tools (IfNotPresent) in a container that looks at it.
fn pod(node: &ClusterNode, name: &str) -> PodBuilder {
    let image = Env::runtime().busybox_image().to_string();
    PodBuilder::new(name)
        .node(&node.name)
        .grace(1)
        .container(
            Container::sh(
                "app",
                "test -x /tools/bin/busybox && echo found-busybox; \
                 (touch /tools/x 2>/dev/null && echo writable) || echo read-only; sleep 3600",
            )
            .mount("tools", "/tools"),
        )
        .volume(
            json!({"name": "tools", "image": {"reference": image, "pullPolicy": "IfNotPresent"}}),
        )
}

/// What a user sees of the pod on `agent`'s node run by containerd 2: its phase, what the
/// container found in the image, and whether it could write there.
async fn observe(agent: Agent) -> Vec<(String, String)> {
    let client = admin_client().await;
    let dir = Env::cluster().var("CONTAINERD2_BIN_DIR").to_string();
    let opts = NodeOptions {
        containerd_bin_dir: Some(dir.into()),
        ..Default::default()
    };
    let (node, _proc) = agent.on_new_node("imgvol", opts, &client).await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let name = format!("tools-{}", node.name);
    create(&pods, &pod(&node, &name).build()).await;
    let uid = running_uid(&pods, &name, 120).await;
    let logs = node.path().join("pods");
    let out = wait_until_async(
        "the container's findings",
        Duration::from_secs(60),
        || async {
            let out = container_output(&logs, "default", &name, &uid, "app");
            (out.contains("read-only") || out.contains("writable")).then_some(out)
        },
    )
    .await;
    let p = pods.get(&name).await.expect("pod");
    let phase = p.status.and_then(|s| s.phase).unwrap_or_default();
    let _ = pods.delete(&name, &Default::default()).await;
    facts(&[("phase", phase.as_str()), ("output", out.trim())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_volume_shows_the_image_read_only_as_on_the_kubelet() {
    let (bosun, kubelet) = tokio::join!(observe(Agent::Bosun), observe(Agent::Kubelet));
    let want = facts(&[("phase", "Running"), ("output", "found-busybox\nread-only")]);
    assert_eq!(bosun, want, "bosun");
    assert_eq!(kubelet, want, "kubelet");
}

/// On containerd 1.6 the container cannot start: CreateContainerConfigError with the runtime
/// named, and the kubelet's Failed "Error: ..." event.
#[tokio::test(flavor = "multi_thread")]
async fn an_image_volume_on_a_runtime_that_cannot_mount_images_is_refused_by_name() {
    let t = BosunNode::start("imgvol-old").await;
    let name = format!("tools-{}", t.node.name);
    create(&t.pods, &pod(&t.node, &name).build()).await;
    let waiting = wait_until_async("the container waiting", Duration::from_secs(60), || async {
        let p = t.pods.get(&name).await.ok()?;
        let cs = p.status?.container_statuses?.into_iter().next()?;
        // ContainerCreating first (the status before the start is tried), then the refusal.
        cs.state?.waiting.filter(|w| {
            w.reason
                .as_deref()
                .is_some_and(|r| r != "ContainerCreating")
        })
    })
    .await;
    let msg = "image volume \"tools\": the container runtime containerd 1.6.20~ds1 cannot mount images as volumes (CRI Mount.image needs containerd 2.1 or later)";
    assert_eq!(
        waiting.reason.as_deref(),
        Some("CreateContainerConfigError")
    );
    assert_eq!(waiting.message.as_deref(), Some(msg));
    let events: Api<Event> = Api::namespaced(t.client.clone(), "default");
    let lp = ListParams::default().fields(&format!("involvedObject.name={name},reason=Failed"));
    let want = format!("Error: {msg}");
    wait_until_async("the Failed event", Duration::from_secs(30), || async {
        let list = events.list(&lp).await.ok()?;
        list.items
            .into_iter()
            .any(|e| e.message.as_deref() == Some(want.as_str()))
            .then_some(())
    })
    .await;
    t.finish();
}
