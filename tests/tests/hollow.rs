//! A hollow node (issue #20): Bosun against the Kubernetes project's fake CRI runtime
//! (`tests/cluster/fake-cri`, the one kubemark's hollow nodes use), on the real control plane. It
//! registers Ready with the hollow label and taint, runs a Deployment's pods to Running and Ready
//! as the API reports them (with the fake sandbox IP), and removes them when the Deployment goes;
//! two nodes run the same way on one shared fake-cri process (the scale bench's
//! `--nodes-per-runtime`).

use std::time::{Duration, Instant};

use bosun_tests::hollow::{
    FAKE_POD_IP, HOLLOW_LABEL, HOLLOW_TAINT, HollowAgent, HollowNode, SharedFakeCri, deployment,
};
use bosun_tests::{admin_client, wait_until_async};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};

fn pod_ready(p: &Pod) -> bool {
    let Some(s) = p.status.as_ref() else {
        return false;
    };
    s.phase.as_deref() == Some("Running")
        && s.conditions
            .as_ref()
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Waits until the Deployment `app` has exactly `n` pods, all Running and Ready; returns them.
async fn wait_pods_ready(pods: &Api<Pod>, app: &str, n: usize) -> Vec<Pod> {
    let lp = ListParams::default().labels(&format!("app={app}"));
    let what = format!("{n} pods Running and Ready");
    wait_until_async(&what, Duration::from_secs(90), || {
        let (pods, lp) = (pods.clone(), lp.clone());
        async move {
            let list = pods.list(&lp).await.ok()?;
            (list.items.len() == n && list.items.iter().all(pod_ready)).then_some(list.items)
        }
    })
    .await
}

/// Waits until the Deployment `app` has no pods left.
async fn wait_pods_gone(pods: &Api<Pod>, app: &str) {
    let lp = ListParams::default().labels(&format!("app={app}"));
    wait_until_async("the pods gone", Duration::from_secs(60), || {
        let (pods, lp) = (pods.clone(), lp.clone());
        async move { pods.list(&lp).await.ok()?.items.is_empty().then_some(()) }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bosun_hollow_node_runs_a_deployment() {
    let group = format!("e2e-{}", std::process::id());
    let node = tokio::task::spawn_blocking({
        let group = group.clone();
        move || HollowNode::new("hollow", &group)
    })
    .await
    .expect("node");
    let mut proc = node.start(HollowAgent::Bosun);
    let client = admin_client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let deadline = Instant::now() + Duration::from_secs(60);
    let n = loop {
        if let Some(status) = proc.exited() {
            panic!("bosun exited ({status}); log: {}", proc.log.display());
        }
        if let Ok(Some(n)) = nodes.get_opt(&node.name).await
            && bosun_tests::agent::node_ready(&n)
        {
            break n;
        }
        assert!(
            Instant::now() < deadline,
            "hollow node not Ready after 60 s; log: {}",
            proc.log.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let labels = n.metadata.labels.clone().unwrap_or_default();
    assert_eq!(
        labels.get(HOLLOW_LABEL).map(String::as_str),
        Some(group.as_str()),
        "{labels:?}"
    );
    let taints = n.spec.and_then(|s| s.taints).unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t.key == HOLLOW_TAINT && t.effect == "NoSchedule"),
        "{taints:?}"
    );

    let name = format!("hollow-{}", std::process::id());
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let d: Deployment =
        serde_json::from_value(deployment(&name, 3, &group, Some(&node.name))).expect("deployment");
    deploys
        .create(&PostParams::default(), &d)
        .await
        .expect("create deployment");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let running = wait_pods_ready(&pods, &name, 3).await;
    for p in &running {
        let spec = p.spec.as_ref().expect("spec");
        assert_eq!(spec.node_name.as_deref(), Some(node.name.as_str()));
        let status = p.status.as_ref().expect("status");
        assert_eq!(status.pod_ip.as_deref(), Some(FAKE_POD_IP));
        let cs = status
            .container_statuses
            .as_ref()
            .expect("container statuses");
        assert!(
            cs.iter()
                .all(|c| c.ready && c.state.as_ref().is_some_and(|s| s.running.is_some())),
            "{cs:?}"
        );
    }
    wait_until_async("deployment 3/3 ready", Duration::from_secs(30), || async {
        let d = deploys.get(&name).await.ok()?;
        (d.status?.ready_replicas == Some(3)).then_some(())
    })
    .await;

    // The fake runtime reports an image filesystem, as kubemark's fake cAdvisor does: the image
    // GC run at start-up found it (else every hollow node sends an ImageGCFailed event every
    // 5 minutes, API load kubemark's nodes do not have).
    let log = std::fs::read_to_string(&proc.log).expect("agent log");
    assert!(
        !log.contains("Image garbage collection failed"),
        "image GC failed on the hollow node; log: {}",
        proc.log.display()
    );

    deploys
        .delete(&name, &DeleteParams::default())
        .await
        .expect("delete deployment");
    wait_pods_gone(&pods, &name).await;
    assert!(
        proc.exited().is_none(),
        "bosun exited; log: {}",
        proc.log.display()
    );
    proc.stop(Duration::from_secs(15));
}

/// The scale benchmark's shared runtime process (`--nodes-per-runtime`): two hollow Bosun nodes
/// served by one fake-cri process, a runtime each, both Ready and each running its own
/// Deployment's pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hollow_nodes_share_one_fake_cri_process() {
    let group = format!("e2e-shared-{}", std::process::id());
    let nodes = tokio::task::spawn_blocking({
        let group = group.clone();
        move || {
            [
                HollowNode::new("hollow-a", &group),
                HollowNode::new("hollow-b", &group),
            ]
        }
    })
    .await
    .expect("nodes");
    let runtime = SharedFakeCri::start(&nodes);
    let mut procs: Vec<_> = nodes.iter().map(|n| n.start_on_shared_runtime()).collect();
    assert!(procs.iter().all(|p| p.fake_cri_pid().is_none()));
    let client = admin_client().await;
    let node_api: Api<Node> = Api::all(client.clone());
    for n in &nodes {
        wait_until_async("the hollow node Ready", Duration::from_secs(60), || async {
            let node = node_api.get_opt(&n.name).await.ok()??;
            bosun_tests::agent::node_ready(&node).then_some(())
        })
        .await;
    }

    let deploys: Api<Deployment> = Api::namespaced(client.clone(), "default");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let names: Vec<String> = (0..nodes.len())
        .map(|i| format!("shared-{}-{i}", std::process::id()))
        .collect();
    for (name, n) in names.iter().zip(&nodes) {
        let d: Deployment =
            serde_json::from_value(deployment(name, 2, &group, Some(&n.name))).expect("deploy");
        deploys
            .create(&PostParams::default(), &d)
            .await
            .expect("create deployment");
    }
    for (name, n) in names.iter().zip(&nodes) {
        let running = wait_pods_ready(&pods, name, 2).await;
        for p in &running {
            let spec = p.spec.as_ref().expect("spec");
            assert_eq!(spec.node_name.as_deref(), Some(n.name.as_str()));
        }
    }
    for name in &names {
        deploys
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete deployment");
    }
    for name in &names {
        wait_pods_gone(&pods, name).await;
    }
    for p in &mut procs {
        assert!(
            p.exited().is_none(),
            "bosun exited; log: {}",
            p.log.display()
        );
        p.stop(Duration::from_secs(15));
    }
    drop(runtime);
}
