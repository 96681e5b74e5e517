//! The eviction manager on a bosun node: an evictionHard nodefs.available threshold set just above
//! the free share of the node's root dir filesystem puts the Node under DiskPressure with the
//! kubelet's reason and message; a pod bound to it is then rejected (Failed, Evicted, "The node
//! had condition: [DiskPressure]. "), while a static pod, critical, is still admitted. And real
//! pressure: with the node's root dir on a small tmpfs, a pod filling an emptyDir is evicted
//! (Failed, Evicted, the kubelet's message, DisruptionTarget, a Warning Evicted event), its
//! emptyDir torn down so DiskPressure clears, and the quiet pod beside it keeps running.

use std::path::Path;
use std::time::{Duration, Instant};

use bosun_tests::pod::{Container, PodBuilder, create, phase, wait_pod};
use bosun_tests::{ClusterNode, NodeOptions, admin_client, wait_until_async};
use k8s_openapi::api::core::v1::{Event, Node, NodeCondition, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams};

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

/// The pod's events (type, reason, message), as the API server holds them.
async fn events(client: &kube::Client, pod: &str) -> Vec<(String, String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().fields(&format!("involvedObject.name={pod}"));
    let list = api.list(&lp).await.map(|l| l.items).unwrap_or_default();
    list.into_iter()
        .map(|e| {
            (
                e.type_.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn disk_pressure_evicts_the_pod_filling_the_disk() {
    // nodefs is the node's root dir on a 400 MiB tmpfs of the test's own; below 150 MiB free is
    // pressure. The filler writes 300 MiB into an emptyDir; the quiet pod keeps to itself.
    let opts = NodeOptions {
        root_dir_size: Some("400m".into()),
        eviction_hard: Some(vec![
            ("nodefs.available".into(), "150Mi".into()),
            ("memory.available".into(), "100Mi".into()),
            ("imagefs.available".into(), "1%".into()),
        ]),
        extra_config: "evictionPressureTransitionPeriod: 20s\nvolumeStatsAggPeriod: 5s\n".into(),
        ..Default::default()
    };
    let node = ClusterNode::with_options("evict-fill", &opts);
    let mut bosun = node.start();
    let client = admin_client().await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let quiet = format!("{}-quiet", node.name);
    let filler = format!("{}-filler", node.name);
    let pod = |name: &str, script: &str| {
        PodBuilder::new(name)
            .node(&node.name)
            .restart_policy("Never")
            .empty_dir("data")
            .container(Container::sh("main", script).mount("data", "/data"))
            .build()
    };
    create(&api, &pod(&quiet, "echo hi > /data/hi; exec sleep 3600")).await;
    wait_pod(&api, &quiet, "quiet pod Running", 90, |p| {
        (phase(p) == "Running").then_some(())
    })
    .await;
    let started = Instant::now();
    create(
        &api,
        &pod(
            &filler,
            "dd if=/dev/zero of=/data/fill bs=1M count=300; exec sleep 3600",
        ),
    )
    .await;
    let nodes: Api<Node> = Api::all(client.clone());
    // DiskPressure=True seen on the Node at any time from now on.
    let pressure_seen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = {
        let (nodes, name, seen) = (nodes.clone(), node.name.clone(), pressure_seen.clone());
        tokio::spawn(async move {
            loop {
                if let Ok(n) = nodes.get(&name).await
                    && condition(&n, "DiskPressure").is_some_and(|c| c.status == "True")
                {
                    seen.store(true, std::sync::atomic::Ordering::SeqCst);
                    return;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let p = wait_pod(&api, &filler, "filler pod evicted", 150, |p| {
        (phase(p) == "Failed").then(|| p.clone())
    })
    .await;
    eprintln!("filler Failed {:?} after its creation", started.elapsed());
    let st = p.status.clone().unwrap_or_default();
    assert_eq!(st.reason.as_deref(), Some("Evicted"), "{st:?}");
    let message = st.message.clone().unwrap_or_default();
    let prefix =
        "The node was low on resource: ephemeral-storage. Threshold quantity: 150Mi, available: ";
    assert!(message.starts_with(prefix), "message {message:?}");
    let disruption = condition_of(&p, "DisruptionTarget").expect("DisruptionTarget condition");
    assert_eq!(
        (
            disruption.status.as_str(),
            disruption.reason.as_deref(),
            disruption.message.as_deref()
        ),
        ("True", Some("TerminationByKubelet"), Some(message.as_str()))
    );
    // Its container was stopped, not left running under a Failed pod.
    let main = st
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == "main")
        .expect("main status");
    assert!(
        main.state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some(),
        "main not terminated: {main:?}"
    );
    let event = wait_until_async("Evicted event", Duration::from_secs(30), || async {
        events(&client, &filler)
            .await
            .into_iter()
            .find(|(_, reason, _)| reason == "Evicted")
    })
    .await;
    assert_eq!(
        event,
        (
            "Warning".to_string(),
            "Evicted".to_string(),
            message.clone()
        )
    );
    // The node was under DiskPressure and, the emptyDir torn down, is not any more.
    wait_until_async(
        "DiskPressure=True seen",
        Duration::from_secs(60),
        || async { watcher.is_finished().then_some(()) },
    )
    .await;
    assert!(pressure_seen.load(std::sync::atomic::Ordering::SeqCst));
    wait_until_async("DiskPressure=False", Duration::from_secs(90), || async {
        let n = nodes.get_opt(&node.name).await.ok()??;
        condition(&n, "DiskPressure").filter(|c| c.status == "False")
    })
    .await;
    eprintln!(
        "DiskPressure False {:?} after the filler's creation",
        started.elapsed()
    );
    // The quiet pod never stopped.
    let q = api.get(&quiet).await.expect("quiet pod");
    assert_eq!(phase(&q), "Running");
    let restarts = q
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.first())
        .map(|c| c.restart_count);
    assert_eq!(restarts, Some(0));
    for name in [&quiet, &filler] {
        let _ = api.delete(name, &DeleteParams::default()).await;
    }
    bosun.terminate(Duration::from_secs(10));
}

/// The pod's condition of type `type_`, if any.
fn condition_of(p: &Pod, type_: &str) -> Option<k8s_openapi::api::core::v1::PodCondition> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}
