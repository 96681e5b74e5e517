//! Spec changes through the API, side by side with the upstream kubelet: a container whose image
//! is patched is killed with the kubelet's Killing event and started again from the new image,
//! whatever the pod's restart policy (computePodActions' containerChanged); a sidecar likewise
//! (computeInitContainerActions). The kubelet's container hash (name and image) is written to
//! the `io.kubernetes.container.hash` annotation by both agents with the same value. The env of
//! resourceFieldRef limits the container does not set is the node's allocatable on both.

use std::collections::BTreeMap;
use std::time::Duration;

use bosun_tests::pod::{
    container_output, container_status, create, init_status, is_running, phase, wait_pod,
};
use bosun_tests::{Agent, Container, Env, PodBuilder, admin_client, wait_until_async};
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

/// A container that runs until it is asked to stop.
fn sleeper(name: &str) -> Container {
    Container::sh(name, "trap 'exit 0' TERM; while :; do sleep 1; done")
}

/// The hash annotations of the pod's running containers in the node's containerd, by name.
async fn running_hashes(endpoint: &str, uid: &str) -> BTreeMap<String, String> {
    let cri = bosun_cri::CriClient::connect(endpoint, Default::default())
        .await
        .expect("CRI");
    cri.list_containers(None)
        .await
        .expect("list containers")
        .into_iter()
        .filter(|c| c.labels.get("io.kubernetes.pod.uid").map(String::as_str) == Some(uid))
        .filter(|c| c.state == 1)
        .filter_map(|c| {
            let name = c.labels.get("io.kubernetes.container.name")?.clone();
            let hash = c.annotations.get("io.kubernetes.container.hash")?.clone();
            Some((name, hash))
        })
        .collect()
}

/// Runs the pod on a node of `agent`, patches both images, and returns what is compared.
async fn observe(agent: Agent) -> BTreeMap<String, String> {
    let client = admin_client().await;
    let (node, mut proc) = agent
        .on_new_node("specchg", Default::default(), &client)
        .await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let name = format!("{}-img", node.name);
    let spec = PodBuilder::new(&name)
        .node(&node.name)
        .restart_policy("Never")
        .grace(3)
        .init_container(sleeper("side").sidecar())
        .container(
            Container::sh(
                "main",
                "echo cpu=$LIMIT_CPU mem=$LIMIT_MEM; trap 'exit 0' TERM; while :; do sleep 1; done",
            )
            // Limits it does not set: the node's allocatable (defaultPodLimitsForDownwardAPI).
            .env(
                "LIMIT_CPU",
                json!({"valueFrom": {"resourceFieldRef": {"resource": "limits.cpu", "divisor": "1m"}}}),
            )
            .env(
                "LIMIT_MEM",
                json!({"valueFrom": {"resourceFieldRef": {"resource": "limits.memory", "divisor": "1Mi"}}}),
            ),
        )
        .build();
    create(&api, &spec).await;
    let first = wait_pod(&api, &name, "both containers running", 90, |p| {
        (is_running(container_status(p, "main")) && is_running(init_status(p, "side")))
            .then(|| p.clone())
    })
    .await;
    let uid = first.metadata.uid.clone().unwrap_or_default();
    let mut facts = BTreeMap::new();
    let out = wait_until_async("main's env printed", Duration::from_secs(30), || async {
        let out = container_output(&node.path().join("pods"), "default", &name, &uid, "main");
        out.lines().next().map(str::to_string)
    })
    .await;
    facts.insert("main.env".into(), out);
    for (k, v) in running_hashes(&node.ctd.endpoint(), &uid).await {
        facts.insert(format!("hash.before.{k}"), v);
    }
    // The same image by digest: another image string, as `kubectl set image` would make.
    let main = container_status(&first, "main").unwrap().clone();
    let digest = main.image_id.rsplit('@').next().unwrap().to_string();
    assert!(digest.starts_with("sha256:"), "{}", main.image_id);
    let by_digest = format!(
        "{}@{digest}",
        Env::runtime().busybox_image().rsplit_once(':').unwrap().0
    );
    let patch = json!({"spec": {
        "initContainers": [{"name": "side", "image": by_digest}],
        "containers": [{"name": "main", "image": by_digest}],
    }});
    api.patch(&name, &PatchParams::default(), &Patch::Strategic(&patch))
        .await
        .expect("patch images");
    let restarted = |s: Option<&k8s_openapi::api::core::v1::ContainerStatus>| {
        s.is_some_and(|s| s.restart_count == 1 && is_running(Some(s)))
    };
    let now = wait_pod(&api, &name, "both restarted from the new image", 90, |p| {
        (restarted(container_status(p, "main")) && restarted(init_status(p, "side")))
            .then(|| p.clone())
    })
    .await;
    facts.insert("phase".into(), phase(&now).to_string());
    for (kind, before, after) in [
        (
            "main",
            container_status(&first, "main"),
            container_status(&now, "main"),
        ),
        (
            "side",
            init_status(&first, "side"),
            init_status(&now, "side"),
        ),
    ] {
        let (before, after) = (before.unwrap(), after.unwrap());
        facts.insert(
            format!("{kind}.new instance"),
            (before.container_id != after.container_id).to_string(),
        );
        facts.insert(format!("{kind}.restarts"), after.restart_count.to_string());
        // The runtime's name of the image (containerd names the digest by its tag).
        facts.insert(format!("{kind}.image"), after.image.clone());
    }
    for (k, v) in running_hashes(&node.ctd.endpoint(), &uid).await {
        facts.insert(format!("hash.after.{k}"), v);
    }
    // The Killing events, once both are recorded.
    let events: Api<Event> = Api::namespaced(client, "default");
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    let killing = wait_until_async("two Killing events", Duration::from_secs(30), || async {
        let mut m: Vec<String> = events
            .list(&lp)
            .await
            .ok()?
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Killing"))
            .filter_map(|e| e.message)
            .collect();
        m.sort();
        (m.len() >= 2).then_some(m)
    })
    .await;
    facts.insert("killing".into(), killing.join(" | "));
    bosun_tests::pod::delete_and_wait_gone(&api, &[&name], 120).await;
    proc.stop();
    facts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_change_restarts_the_container_as_on_the_kubelet() {
    let (bosun, kubelet) = tokio::join!(observe(Agent::Bosun), observe(Agent::Kubelet));
    eprintln!("bosun: {bosun:#?}\nkubelet: {kubelet:#?}");
    let busybox = Env::runtime().busybox_image();
    let want = [
        ("phase", "Running"),
        ("main.new instance", "true"),
        ("main.restarts", "1"),
        ("side.new instance", "true"),
        ("side.restarts", "1"),
        ("main.image", busybox),
        (
            "killing",
            "Container main definition changed, will be restarted | \
             Init container side definition changed",
        ),
    ];
    for (agent, f) in [("bosun", &bosun), ("kubelet", &kubelet)] {
        for (k, v) in want {
            assert_eq!(
                f.get(k).map(String::as_str),
                Some(v),
                "{agent}: {k}\nall: {f:#?}"
            );
        }
    }
    // The node's allocatable: all of the machine's CPUs (nothing reserved), memory in MiB.
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    for (agent, f) in [("bosun", &bosun), ("kubelet", &kubelet)] {
        let env = f.get("main.env").cloned().unwrap_or_default();
        let mem = env.rsplit_once("mem=").map_or("", |(_, m)| m);
        assert!(
            env.starts_with(&format!("cpu={} mem=", cpus * 1000))
                && mem.parse::<u64>().is_ok_and(|m| m > 0),
            "{agent}: {env}"
        );
    }
    assert_eq!(bosun, kubelet, "Bosun and the kubelet differ");
}
