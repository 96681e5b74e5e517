//! RuntimeClass on a bosun node: the pod's runtimeClassName picks the CRI runtime handler of its
//! RuntimeClass for RunPodSandbox; a RuntimeClass that does not exist (or a handler the runtime
//! does not know) gives the kubelet's FailedCreatePodSandBox event and a Pending pod.

use std::time::Duration;

use bosun_tests::pod::{Container, PodBuilder, create, phase, wait_pod};
use bosun_tests::{ClusterNode, admin_client, wait_until_async};
use k8s_openapi::api::core::v1::{Event, Pod};
use k8s_openapi::api::node::v1::RuntimeClass;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};

fn pod(node: &ClusterNode, name: &str, class: &str) -> Pod {
    PodBuilder::new(name)
        .node(&node.name)
        .spec("runtimeClassName", serde_json::json!(class))
        .container(Container::sh("main", "while :; do sleep 1; done"))
        .build()
}

fn runtime_class(name: &str, handler: &str) -> RuntimeClass {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
        "metadata": {"name": name}, "handler": handler
    }))
    .unwrap()
}

/// The messages of the FailedCreatePodSandBox events of pod `name`, once there is one.
async fn sandbox_failures(events: &Api<Event>, name: &str) -> Vec<String> {
    let lp = ListParams::default().fields(&format!("involvedObject.name={name}"));
    wait_until_async(
        &format!("FailedCreatePodSandBox for {name}"),
        Duration::from_secs(60),
        || async {
            let list = events.list(&lp).await.ok()?;
            let msgs: Vec<String> = list
                .items
                .iter()
                .filter(|e| e.reason.as_deref() == Some("FailedCreatePodSandBox"))
                .filter(|e| e.type_.as_deref() == Some("Warning"))
                .filter_map(|e| e.message.clone())
                .collect();
            (!msgs.is_empty()).then_some(msgs)
        },
    )
    .await
}

#[tokio::test]
async fn runtime_class_handler_reaches_the_runtime() {
    let node = ClusterNode::new("rtclass");
    let client = admin_client().await;
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let classes: Api<RuntimeClass> = Api::all(client.clone());
    let events: Api<Event> = Api::namespaced(client, "default");
    let (runc, nope, gone) = (
        format!("{}-runc", node.name),
        format!("{}-nope", node.name),
        format!("{}-gone", node.name),
    );
    for (class, handler) in [(&runc, "runc"), (&nope, "nope"), (&gone, "runc")] {
        classes
            .create(&PostParams::default(), &runtime_class(class, handler))
            .await
            .unwrap();
    }
    // The API server's RuntimeClass admission refuses a pod naming a missing class, so the class
    // goes away after the pod exists and before bosun sees it.
    let names = [
        format!("{}-ok", node.name),
        format!("{}-bad", node.name),
        format!("{}-gone", node.name),
    ];
    for (name, class) in names.iter().zip([&runc, &nope, &gone]) {
        create(&pods, &pod(&node, name, class)).await;
    }
    classes
        .delete(&gone, &DeleteParams::default())
        .await
        .unwrap();
    let mut bosun = node.start();

    wait_pod(&pods, &names[0], "the runc pod Running", 60, |p| {
        (phase(p) == "Running").then_some(())
    })
    .await;
    // The handler reached RunPodSandbox: containerd records it on the sandbox.
    let cri = bosun_cri::CriClient::connect(&node.ctd.endpoint(), Default::default())
        .await
        .unwrap();
    let sandboxes = cri.list_pod_sandbox(None).await.unwrap();
    assert_eq!(sandboxes.len(), 1, "only the runc pod has a sandbox");
    assert_eq!(sandboxes[0].runtime_handler, "runc");

    // A handler containerd does not know: RunPodSandbox fails with it.
    let bad = sandbox_failures(&events, &names[1]).await;
    assert!(
        bad.iter()
            .any(|m| m.starts_with("Failed to create pod sandbox: ") && m.contains("nope")),
        "{bad:?}"
    );
    // A RuntimeClass that is gone: the kubelet's lookup error.
    let missing = sandbox_failures(&events, &names[2]).await;
    assert!(
        missing.contains(&format!(
            "Failed to create pod sandbox: runtimeclass.node.k8s.io \"{gone}\" not found"
        )),
        "{missing:?}"
    );
    for name in &names[1..] {
        let p = pods.get(name).await.unwrap();
        assert_eq!(phase(&p), "Pending", "{name}");
    }
    for name in &names {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    for class in [&runc, &nope] {
        classes
            .delete(class, &DeleteParams::default())
            .await
            .unwrap();
    }
    assert!(
        bosun.try_exit().is_none(),
        "bosun exited:\n{}",
        bosun.log_text()
    );
    bosun.terminate(Duration::from_secs(10));
}
