//! The kubelet's predicate admission of resources, side by side with the upstream kubelet: a pod
//! requesting more ephemeral-storage than the node has, or more of an extended resource the Node
//! advertises than it has, is Failed with OutOf<resource> and "Pod was rejected: Node didn't have
//! enough resource: ..." and a Warning event of that reason; an extended resource the Node does
//! not list is not the node's to check (the kubelet's removeMissingExtendedResources).

use std::collections::BTreeMap;
use std::time::Duration;

use bosun_tests::pod::{create, phase, wait_pod};
use bosun_tests::{Agent, Container, PodBuilder, admin_client, wait_until_async};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::Api;
use kube::api::{ListParams, Patch, PatchParams};
use serde_json::json;

/// `message` with every number after `capacity: ` replaced by `N` (the agents measure the
/// filesystem each their own way).
fn without_capacity(message: &str) -> String {
    match message.split_once("capacity: ") {
        Some((head, _)) => format!("{head}capacity: N"),
        None => message.to_string(),
    }
}

/// Runs the pods on a node of `agent` and returns what is compared.
async fn observe(agent: Agent) -> BTreeMap<String, String> {
    let client = admin_client().await;
    let (node, mut proc) = agent
        .on_new_node("admit", Default::default(), &client)
        .await;
    // As the documented way to advertise an extended resource: the Node's status capacity.
    let nodes: Api<Node> = Api::all(client.clone());
    let dongle = json!({"status": {"capacity": {"example.com/dongle": "1"}}});
    nodes
        .patch_status(&node.name, &PatchParams::default(), &Patch::Merge(&dongle))
        .await
        .expect("advertise example.com/dongle");
    let allocatable = wait_until_async(
        "the Node's allocatable lists the dongle",
        Duration::from_secs(60),
        || async {
            let n = nodes.get(&node.name).await.ok()?;
            let a = n.status?.allocatable?;
            a.get("example.com/dongle").map(|q| q.0.clone())
        },
    )
    .await;
    let mut facts = BTreeMap::from([("allocatable dongle".to_string(), allocatable)]);
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let with = |suffix: &str, resources: serde_json::Value| {
        PodBuilder::new(&format!("{}-{suffix}", node.name))
            .node(&node.name)
            .restart_policy("Never")
            .grace(3)
            .container(Container::exec("main", &["sleep", "3600"]).with("resources", resources))
            .build()
    };
    let pods = [
        (
            "storage",
            json!({"requests": {"ephemeral-storage": "1000Ti"}}),
        ),
        (
            "dongles",
            json!({"requests": {"example.com/dongle": "2"}, "limits": {"example.com/dongle": "2"}}),
        ),
        (
            "gadget",
            json!({"requests": {"example.com/gadget": "1"}, "limits": {"example.com/gadget": "1"}}),
        ),
    ];
    for (suffix, resources) in &pods {
        create(&api, &with(suffix, resources.clone())).await;
    }
    let events: Api<Event> = Api::namespaced(client, "default");
    for (suffix, _) in &pods {
        let name = format!("{}-{suffix}", node.name);
        let p = wait_pod(&api, &name, "admitted or rejected", 90, |p| {
            matches!(phase(p), "Failed" | "Running").then(|| p.clone())
        })
        .await;
        let st = p.status.clone().unwrap_or_default();
        facts.insert(format!("{suffix}.phase"), phase(&p).to_string());
        if phase(&p) == "Failed" {
            facts.insert(
                format!("{suffix}.status"),
                format!(
                    "{}: {}",
                    st.reason.unwrap_or_default(),
                    without_capacity(&st.message.unwrap_or_default())
                ),
            );
            let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
            let event =
                wait_until_async("the rejection event", Duration::from_secs(30), || async {
                    events
                        .list(&lp)
                        .await
                        .ok()?
                        .items
                        .into_iter()
                        .find(|e| e.type_.as_deref() == Some("Warning"))
                })
                .await;
            facts.insert(
                format!("{suffix}.event"),
                format!(
                    "{}: {}",
                    event.reason.unwrap_or_default(),
                    without_capacity(&event.message.unwrap_or_default())
                ),
            );
        }
    }
    let names: Vec<String> = pods
        .iter()
        .map(|(s, _)| format!("{}-{s}", node.name))
        .collect();
    bosun_tests::pod::delete_and_wait_gone(&api, &names, 120).await;
    proc.stop();
    facts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resources_the_node_cannot_fit_are_rejected_as_on_the_kubelet() {
    let (bosun, kubelet) = tokio::join!(observe(Agent::Bosun), observe(Agent::Kubelet));
    eprintln!("bosun: {bosun:#?}\nkubelet: {kubelet:#?}");
    let want = [
        ("allocatable dongle", "1"),
        ("storage.phase", "Failed"),
        (
            "storage.status",
            &format!(
                "OutOfephemeral-storage: Pod was rejected: Node didn't have enough resource: \
                 ephemeral-storage, requested: {}, used: 0, capacity: N",
                1000_u64 << 40
            ) as &str,
        ),
        (
            "storage.event",
            &format!(
                "OutOfephemeral-storage: Node didn't have enough resource: ephemeral-storage, \
                 requested: {}, used: 0, capacity: N",
                1000_u64 << 40
            ),
        ),
        ("dongles.phase", "Failed"),
        (
            "dongles.status",
            "OutOfexample.com/dongle: Pod was rejected: Node didn't have enough resource: \
             example.com/dongle, requested: 2, used: 0, capacity: N",
        ),
        ("gadget.phase", "Running"),
    ];
    for (agent, f) in [("bosun", &bosun), ("kubelet", &kubelet)] {
        for (k, v) in &want {
            assert_eq!(
                f.get(*k).map(String::as_str),
                Some(*v),
                "{agent}: {k}\nall: {f:#?}"
            );
        }
    }
    assert_eq!(bosun, kubelet, "Bosun and the kubelet differ");
}
