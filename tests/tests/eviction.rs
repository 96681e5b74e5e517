//! The eviction manager on a bosun node: an evictionHard nodefs.available threshold set just above
//! the free share of the node's root dir filesystem puts the Node under DiskPressure with the
//! kubelet's reason and message; a pod bound to it is then rejected (Failed, Evicted, "The node
//! had condition: [DiskPressure]. "), while a static pod, critical, is still admitted.

use std::path::Path;
use std::time::{Duration, Instant};

use bosun_tests::pod::{Container, PodBuilder, create, phase, wait_pod};
use bosun_tests::{ClusterNode, NodeOptions, admin_client, wait_until_async};
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod};
use kube::Api;
use kube::api::DeleteParams;

/// Free share of the filesystem holding `path`, in percent, as the kubelet computes
/// nodefs.available (available blocks over total blocks).
fn free_percent(path: &Path) -> f64 {
    let s = nix::sys::statvfs::statvfs(path).expect("statvfs");
    s.blocks_available() as f64 * 100.0 / s.blocks() as f64
}

/// The Node's condition of type `type_`, if any.
fn condition(n: &Node, type_: &str) -> Option<NodeCondition> {
    n.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

#[tokio::test]
async fn disk_pressure_is_reported_and_rejects_new_pods() {
    // The node's root dir lives in a tempdir like the one probed here: same filesystem.
    let probe = tempfile::tempdir().expect("tempdir");
    let free = free_percent(probe.path());
    // 5 points above what is free now: met even if the shared disk frees a little meanwhile.
    let threshold = (free + 5.0).ceil().min(99.0);
    assert!(
        free < threshold,
        "disk {free:.1}% free: no threshold above it"
    );
    let opts = NodeOptions {
        eviction_hard: Some(vec![
            ("nodefs.available".into(), format!("{threshold}%")),
            ("memory.available".into(), "100Mi".into()),
            ("imagefs.available".into(), "1%".into()),
        ]),
        ..Default::default()
    };
    let node = ClusterNode::with_options("evict-disk", &opts);
    assert!(
        (free_percent(&node.path().join("root")) - free).abs() < 2.0,
        "the node's root dir is not on the probed filesystem"
    );
    let mut bosun = node.start();
    let started = Instant::now();
    let client = admin_client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    // Stats every 10 s, eviction every 10 s, node status every 10 s.
    let dp = wait_until_async("DiskPressure=True", Duration::from_secs(90), || async {
        let n = nodes.get_opt(&node.name).await.ok()??;
        condition(&n, "DiskPressure").filter(|c| c.status == "True")
    })
    .await;
    eprintln!(
        "DiskPressure True {:?} after start ({free:.1}% free, threshold {threshold}%)",
        started.elapsed()
    );
    assert_eq!(
        (dp.reason.as_deref(), dp.message.as_deref()),
        (
            Some("KubeletHasDiskPressure"),
            Some("kubelet has disk pressure")
        )
    );
    let n = nodes.get(&node.name).await.expect("node");
    for (type_, reason) in [
        ("MemoryPressure", "KubeletHasSufficientMemory"),
        ("PIDPressure", "KubeletHasSufficientPID"),
    ] {
        let c = condition(&n, type_).expect(type_);
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref()),
            ("False", Some(reason))
        );
    }

    let api: Api<Pod> = Api::namespaced(client, "default");
    let name = format!("{}-rejected", node.name);
    let pod = PodBuilder::new(&name)
        .node(&node.name)
        .restart_policy("Never")
        .container(Container::exec("main", &["sleep", "3600"]).requests("10m", "10Mi"))
        .build();
    create(&api, &pod).await;
    let p = wait_pod(&api, &name, "pod Failed at admission", 60, |p| {
        (phase(p) == "Failed").then(|| p.clone())
    })
    .await;
    eprintln!("pod rejected {:?} after start", started.elapsed());
    let st = p.status.unwrap_or_default();
    assert_eq!(
        (st.reason.as_deref(), st.message.as_deref()),
        (
            Some("Evicted"),
            Some("Pod was rejected: The node had condition: [DiskPressure]. ")
        )
    );

    // A static pod is critical: admitted under disk pressure, as the kubelet admits it.
    let manifest =
        PodBuilder::new("critical").container(Container::exec("main", &["sleep", "3600"]));
    std::fs::write(
        node.path().join("manifests/critical.yaml"),
        manifest.manifest(),
    )
    .expect("manifest");
    let mirror = format!("critical-{}", node.name);
    wait_pod(
        &api,
        &mirror,
        "static pod Running under pressure",
        60,
        |p| (phase(p) == "Running").then_some(()),
    )
    .await;
    eprintln!("static pod Running {:?} after start", started.elapsed());

    let _ = api.delete(&name, &DeleteParams::default()).await;
    std::fs::remove_file(node.path().join("manifests/critical.yaml")).expect("rm manifest");
    bosun.terminate(Duration::from_secs(10));
}
