//! In-place pod resize (the `resize` subresource), side by side with the upstream kubelet, on a
//! Guaranteed pod: a container with the default resizePolicy gets its cpu and memory grown, and
//! later shrunk, without a restart
//! (the cgroup values read back from inside it), one whose memory policy is RestartContainer is
//! restarted with the kubelet's Killing message; status.containerStatuses[].resources and
//! allocatedResources follow, PodResizeInProgress comes and goes with ResizeStarted and
//! ResizeCompleted. A resize the node has no room for is Deferred (PodResizePending with the
//! admission's message, a ResizeDeferred event), nothing applied, until a pod leaves and it is
//! carried out.

use std::collections::BTreeMap;
use std::time::Duration;

use bosun_tests::pod::{
    condition, container_output, container_status, create, delete_and_wait_gone, is_running,
    wait_pod,
};
use bosun_tests::{Agent, Container, PodBuilder, admin_client, wait_until_async};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

/// A container printing its cgroup's cpu quota and memory limit every half second.
fn reporter(name: &str) -> Container {
    Container::sh(
        name,
        "trap 'exit 0' TERM; while :; do \
           q=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null || cut -d' ' -f1 /sys/fs/cgroup/cpu.max); \
           m=$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max); \
           echo \"$q $m\"; sleep 0.5; done",
    )
}

/// The last line container `c` printed.
async fn last_line(node: &bosun_tests::ClusterNode, name: &str, uid: &str, c: &str) -> String {
    container_output(&node.path().join("pods"), "default", name, uid, c)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

/// Waits up to 30 s for the `inplace` container of pod `name` to print `want` (its cgroup's cpu
/// quota and memory limit); returns the line.
async fn inplace_line_becomes(
    node: &bosun_tests::ClusterNode,
    name: &str,
    uid: &str,
    want: &str,
) -> String {
    wait_until_async(
        &format!("the limits {want:?} inside"),
        Duration::from_secs(30),
        || async {
            let l = last_line(node, name, uid, "inplace").await;
            (l == want).then_some(l)
        },
    )
    .await
}

/// True when the pod's status caught up with its spec and no resize is pending or in progress.
fn settled(p: &Pod) -> bool {
    let s = p.status.as_ref();
    s.and_then(|s| s.observed_generation) == p.metadata.generation
        && condition(p, "PodResizeInProgress").is_none()
        && condition(p, "PodResizePending").is_none()
}

/// What a user reads of a container's status about its resources.
fn resources_fact(p: &Pod, c: &str) -> String {
    let s = container_status(p, c).expect("status");
    format!(
        "resources={} allocated={} restarts={}",
        serde_json::to_string(&s.resources).unwrap(),
        serde_json::to_string(&s.allocated_resources).unwrap(),
        s.restart_count
    )
}

/// The reasons and messages of the pod's events with these reasons, sorted.
async fn events(api: &Api<Event>, name: &str, reasons: &[&str]) -> Vec<String> {
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    let mut out: Vec<String> = api
        .list(&lp)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .filter(|e| reasons.contains(&e.reason.as_deref().unwrap_or_default()))
        .map(|e| {
            format!(
                "{}: {}",
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            )
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A cpu quantity ("2", "1500m") in millicores.
fn cpu_milli(q: &str) -> i64 {
    match q.strip_suffix('m') {
        Some(m) => m.parse().expect("cpu"),
        None => q.parse::<i64>().expect("cpu") * 1000,
    }
}

/// Patches the pod's `resize` subresource.
async fn resize(api: &Api<Pod>, name: &str, patch: serde_json::Value) -> Pod {
    api.patch_subresource(
        "resize",
        name,
        &PatchParams::default(),
        &Patch::Strategic(&patch),
    )
    .await
    .expect("resize")
}

/// Patches the pod's `resize` subresource with `patch`, then waits up to 90 s for `done` (the
/// resize carried out, `what`); returns the pod then.
async fn resize_until(
    api: &Api<Pod>,
    name: &str,
    patch: serde_json::Value,
    what: &str,
    done: impl Fn(&Pod) -> bool,
) -> Pod {
    resize(api, name, patch).await;
    wait_pod(api, name, what, 90, |p| done(p).then(|| p.clone())).await
}

/// Runs the scenario on a new node of `agent`; what a user sees at each step.
async fn observe(agent: Agent) -> BTreeMap<String, String> {
    let client = admin_client().await;
    let (node, mut proc) = agent
        .on_new_node("resize", Default::default(), &client)
        .await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let event_api: Api<Event> = Api::namespaced(client.clone(), "default");
    let name = format!("{}-r", node.name);
    let spec = PodBuilder::new(&name)
        .node(&node.name)
        .grace(2)
        .init_container(
            Container::sh("init", "true")
                .requests("50m", "16Mi")
                .limits("50m", "16Mi"),
        )
        .container(
            reporter("inplace")
                .requests("200m", "64Mi")
                .limits("200m", "64Mi"),
        )
        .container(
            reporter("restart")
                .requests("200m", "64Mi")
                .limits("200m", "64Mi")
                .with(
                    "resizePolicy",
                    json!([{"resourceName": "memory", "restartPolicy": "RestartContainer"}]),
                ),
        )
        .build();
    create(&api, &spec).await;
    let first = wait_pod(&api, &name, "both running", 90, |p| {
        (is_running(container_status(p, "inplace")) && is_running(container_status(p, "restart")))
            .then(|| p.clone())
    })
    .await;
    let uid = first.metadata.uid.clone().unwrap_or_default();
    let mut facts = BTreeMap::new();
    facts.insert("before.inplace".into(), resources_fact(&first, "inplace"));
    let cgroup = wait_until_async("the first cgroup line", Duration::from_secs(30), || async {
        let l = last_line(&node, &name, &uid, "inplace").await;
        (!l.is_empty()).then_some(l)
    })
    .await;
    facts.insert("before.inplace.cgroup".into(), cgroup);

    // Grow cpu and memory of both: in place for one, by a restart for the other.
    let done = resize_until(
        &api,
        &name,
        json!({"spec": {"containers": [
            {"name": "inplace", "resources": {"requests": {"cpu": "300m", "memory": "96Mi"},
                                              "limits": {"cpu": "300m", "memory": "96Mi"}}},
            {"name": "restart", "resources": {"requests": {"cpu": "200m", "memory": "80Mi"},
                                              "limits": {"cpu": "200m", "memory": "80Mi"}}}
        ]}}),
        "the resize carried out",
        |p| {
            settled(p)
                && container_status(p, "restart")
                    .is_some_and(|s| s.restart_count == 1 && is_running(Some(s)))
        },
    )
    .await;
    facts.insert("after.inplace".into(), resources_fact(&done, "inplace"));
    facts.insert("after.restart".into(), resources_fact(&done, "restart"));
    let line = inplace_line_becomes(&node, &name, &uid, "30000 100663296").await;
    facts.insert("after.inplace.cgroup".into(), line);
    // The kubelet can record a ResizeCompleted for the old resources first: its pod worker
    // syncing the pod as it was while the resize is allocated (the race its SyncPod notes).
    // Kept: the ResizeCompleted that reports what the resize started.
    let reasons = ["ResizeStarted", "ResizeCompleted", "Killing"];
    let seen = wait_until_async("the resize events", Duration::from_secs(30), || async {
        let all = events(&event_api, &name, &reasons).await;
        let started = all
            .iter()
            .find_map(|e| e.strip_prefix("ResizeStarted: Pod resize started: "))?
            .to_string();
        let kept: Vec<String> = all
            .into_iter()
            .filter(|e| {
                e.strip_prefix("ResizeCompleted: Pod resize completed: ")
                    .is_none_or(|summary| summary == started)
            })
            .collect();
        (kept.len() >= 3).then_some(kept)
    })
    .await;
    facts.insert("after.events".into(), seen.join("\n"));

    // No room: another pod takes what is left of the node's cpu, then a resize asks for more.
    let nodes: Api<Node> = Api::all(client.clone());
    let cpu = nodes
        .get(&node.name)
        .await
        .expect("node")
        .status
        .unwrap()
        .allocatable
        .unwrap()["cpu"]
        .0
        .clone();
    let cpu_milli = cpu_milli(&cpu);
    let hog = format!("{}-hog", node.name);
    let hog_cpu = format!("{}m", cpu_milli - 500 - 50);
    let hog_spec = PodBuilder::new(&hog)
        .node(&node.name)
        .grace(1)
        .container(
            Container::sh("hog", "trap 'exit 0' TERM; while :; do sleep 1; done")
                .requests(&hog_cpu, "8Mi"),
        )
        .build();
    create(&api, &hog_spec).await;
    wait_pod(&api, &hog, "the hog running", 60, |p| {
        is_running(container_status(p, "hog")).then_some(())
    })
    .await;
    resize(
        &api,
        &name,
        json!({"spec": {"containers": [
            {"name": "inplace", "resources": {"requests": {"cpu": "400m", "memory": "96Mi"},
                                              "limits": {"cpu": "400m", "memory": "96Mi"}}}
        ]}}),
    )
    .await;
    let deferred = wait_pod(&api, &name, "the resize deferred", 60, |p| {
        let c = condition(p, "PodResizePending")?;
        (p.status.as_ref()?.observed_generation == p.metadata.generation).then(|| {
            format!(
                "{} {} {}",
                c.status,
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )
        })
    })
    .await;
    facts.insert("deferred.condition".into(), deferred);
    let p = api.get(&name).await.expect("pod");
    facts.insert("deferred.inplace".into(), resources_fact(&p, "inplace"));
    let deferred_events = wait_until_async("ResizeDeferred", Duration::from_secs(30), || async {
        let e = events(&event_api, &name, &["ResizeDeferred"]).await;
        (!e.is_empty()).then_some(e)
    })
    .await;
    facts.insert("deferred.events".into(), deferred_events.join("\n"));
    facts.insert(
        "deferred.inplace.cgroup".into(),
        last_line(&node, &name, &uid, "inplace").await,
    );

    // Room again: the deferred resize is carried out.
    delete_and_wait_gone(&api, &[&hog], 60).await;
    let done = wait_pod(&api, &name, "the deferred resize carried out", 240, |p| {
        settled(p).then(|| p.clone())
    })
    .await;
    facts.insert("resumed.inplace".into(), resources_fact(&done, "inplace"));
    let line = inplace_line_becomes(&node, &name, &uid, "40000 100663296").await;
    facts.insert("resumed.inplace.cgroup".into(), line);

    // Shrink both limits below where they started, in place.
    let done = resize_until(
        &api,
        &name,
        json!({"spec": {"containers": [
            {"name": "inplace", "resources": {"requests": {"cpu": "100m", "memory": "48Mi"},
                                              "limits": {"cpu": "100m", "memory": "48Mi"}}}
        ]}}),
        "the shrink carried out",
        settled,
    )
    .await;
    facts.insert("shrunk.inplace".into(), resources_fact(&done, "inplace"));
    facts.insert(
        "shrunk.qos".into(),
        done.status
            .as_ref()
            .and_then(|s| s.qos_class.clone())
            .unwrap_or_default(),
    );
    let line = inplace_line_becomes(&node, &name, &uid, "10000 50331648").await;
    facts.insert("shrunk.inplace.cgroup".into(), line);

    // A regular init container, finished: the API server takes its resize only on a node that
    // declares InPlacePodVerticalScalingInitContainers; it is allocated with nothing to apply.
    let done = resize_until(
        &api,
        &name,
        json!({"spec": {"initContainers": [
            {"name": "init", "resources": {"requests": {"cpu": "60m", "memory": "16Mi"},
                                           "limits": {"cpu": "60m", "memory": "16Mi"}}}
        ]}}),
        "the init container resized",
        settled,
    )
    .await;
    let init = bosun_tests::pod::init_status(&done, "init").expect("init status");
    facts.insert(
        "init.resized".into(),
        format!(
            "resources={} allocated={}",
            serde_json::to_string(&init.resources).unwrap(),
            serde_json::to_string(&init.allocated_resources).unwrap()
        ),
    );
    delete_and_wait_gone(&api, &[&name], 60).await;
    proc.stop();
    facts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_is_resized_in_place_as_on_the_kubelet() {
    let (bosun, kubelet) = tokio::join!(observe(Agent::Bosun), observe(Agent::Kubelet));
    eprintln!("bosun: {bosun:#?}\nkubelet: {kubelet:#?}");
    // What the resize must give on any agent.
    let f = &bosun;
    assert!(f["after.inplace"].ends_with("restarts=0"), "{f:#?}");
    assert!(f["after.restart"].ends_with("restarts=1"), "{f:#?}");
    assert!(
        f["after.inplace"].contains("\"limits\":{\"cpu\":\"300m\",\"memory\":\"96Mi\"}"),
        "{f:#?}"
    );
    assert!(
        f["deferred.condition"].starts_with("True Deferred Node didn't have enough resource: cpu"),
        "{f:#?}"
    );
    assert_eq!(f["deferred.inplace.cgroup"], "30000 100663296", "{f:#?}");
    assert!(f["shrunk.inplace"].ends_with("restarts=0"), "{f:#?}");
    assert_eq!(f["shrunk.qos"], "Guaranteed", "{f:#?}");
    assert!(
        f["init.resized"].contains("allocated={\"cpu\":\"60m\""),
        "{f:#?}"
    );
    assert!(
        f["after.events"].contains("Killing: Container restart resize requires restart"),
        "{f:#?}"
    );
    assert_eq!(bosun, kubelet, "Bosun and the kubelet differ");
}
