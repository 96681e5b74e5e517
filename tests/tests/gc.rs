//! Garbage collection and log rotation on a bosun node, against its own containerd: dead
//! containers of a crash loop collected down to what `--previous` and lastState need.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bosun_tests::pod::{Container, PodBuilder, container_status, create, wait_pod};
use bosun_tests::{ClusterNode, NodeOptions, admin_client};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

/// The pod's containers in the node's containerd: (id, state), by the pod UID label.
async fn containers_of(node: &ClusterNode, uid: &str) -> Vec<(String, i32)> {
    let cri = bosun_cri::CriClient::connect(&node.ctd.endpoint(), Default::default())
        .await
        .expect("connect to the node's containerd");
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

/// Files under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_crash_loop_keeps_only_the_current_and_the_newest_dead_container() {
    let started = Instant::now();
    let node = ClusterNode::with_options("gc-crash", &NodeOptions::default());
    // The kubelet collects every minute; 10 s here so the test sees several collections.
    let _bosun = node.start_with_env(&[("BOSUN_CONTAINER_GC_PERIOD", "10s")]);
    let api: Api<Pod> = Api::namespaced(admin_client().await, "default");
    let name = format!("{}-loop", node.name);
    let pod = PodBuilder::new(&name)
        .node(&node.name)
        .restart_policy("Always")
        .grace(1)
        .container(Container::sh("crash", "echo run $$$$; sleep 3; exit 3"))
        .build();
    create(&api, &pod).await;
    // Back-off 10 s, 20 s, 40 s: the fourth instance starts about 75 s in.
    let uid = wait_pod(&api, &name, "restartCount 3", 150, |p| {
        let st = container_status(p, "crash")?;
        (st.restart_count >= 3).then(|| p.metadata.uid.clone().unwrap_or_default())
    })
    .await;
    let log_dir = node
        .path()
        .join("pods")
        .join(format!("default_{name}_{uid}"))
        .join("crash");
    // Four instances ran; at most the current one and the newest dead one may remain, in
    // containerd and on disk (log files and /var/log/containers symlinks).
    let deadline = Instant::now() + Duration::from_secs(40);
    let (containers, logs, links) = loop {
        let containers = containers_of(&node, &uid).await;
        let logs = files_under(&log_dir);
        let links: Vec<PathBuf> = files_under(&node.path().join("containers"))
            .into_iter()
            .filter(|l| l.to_string_lossy().contains(&name))
            .collect();
        if containers.len() <= 2 && logs.len() <= 2 && links.len() <= 2 {
            break (containers, logs, links);
        }
        assert!(
            Instant::now() < deadline,
            "dead containers not collected: {} containers {containers:?}, logs {logs:?}, links {links:?}",
            containers.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "after {:?}: {} containers, {} log files, {} symlinks left",
        started.elapsed(),
        containers.len(),
        logs.len(),
        links.len()
    );
    // The status still counts every restart and remembers the last termination: the newest dead
    // instance is kept for it.
    let p = api.get(&name).await.expect("pod");
    let st = container_status(&p, "crash").expect("status");
    assert!(st.restart_count >= 3, "restartCount went back: {st:?}");
    let terminated = st
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| st.state.as_ref().and_then(|s| s.terminated.as_ref()))
        .unwrap_or_else(|| panic!("no lastState.terminated: {st:?}"));
    assert_eq!(terminated.exit_code, 3, "{st:?}");
    // What `kubectl logs --previous` reads: the newest dead instance's log, still on disk.
    let previous = log_dir.join(format!("{}.log", st.restart_count - 1));
    let running_now = st.state.as_ref().is_some_and(|s| s.running.is_some());
    let kept = if running_now {
        previous
    } else {
        log_dir.join(format!("{}.log", st.restart_count))
    };
    let text = std::fs::read_to_string(&kept)
        .unwrap_or_else(|e| panic!("previous log {} gone: {e}; left {logs:?}", kept.display()));
    assert!(text.contains("run "), "previous log: {text}");
    let _ = api.delete(&name, &Default::default()).await;
}
