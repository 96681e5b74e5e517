//! imagePullSecrets on a bosun node: an image on the htpasswd-protected registry
//! (127.0.0.1:5001, started by tests/env/up) cannot be pulled without credentials
//! (ErrImagePull, then ImagePullBackOff; a missing secret gives FailedToRetrieveImagePullSecret),
//! and runs with a kubernetes.io/dockerconfigjson secret naming that registry.

use std::time::Duration;

use bosun_tests::BosunNode;
use bosun_tests::pod::{Container, PodBuilder, create, wait_pod};
use bosun_tests::{ClusterNode, Env, wait_until_async};
use k8s_openapi::api::core::v1::{Event, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};

fn pod(node: &ClusterNode, name: &str, secret: &str, policy: &str) -> Pod {
    let image = Env::runtime().var("PRIVATE_BUSYBOX_IMAGE");
    PodBuilder::new(name)
        .node(&node.name)
        .spec("imagePullSecrets", serde_json::json!([{"name": secret}]))
        .container(
            Container::sh("main", "while :; do sleep 1; done")
                .image(image)
                .with("imagePullPolicy", serde_json::json!(policy)),
        )
        .build()
}

/// (reason, message) of the pod's waiting container, or "Running".
fn state(p: &Pod) -> Option<(String, String)> {
    let cs = p.status.as_ref()?.container_statuses.as_ref()?.first()?;
    let st = cs.state.as_ref()?;
    if st.running.is_some() {
        return Some(("Running".into(), String::new()));
    }
    let w = st.waiting.as_ref()?;
    Some((
        w.reason.clone().unwrap_or_default(),
        w.message.clone().unwrap_or_default(),
    ))
}

#[tokio::test]
async fn private_images_need_the_pull_secret() {
    let env = Env::runtime();
    let registry = env.var("PRIVATE_REGISTRY").to_string();
    let bn = BosunNode::start("pullsecret").await;
    let (node, client, pods) = (&bn.node, bn.client.clone(), &bn.pods);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let events: Api<Event> = Api::namespaced(client, "default");
    let secret_name = format!("{}-creds", node.name);
    let config = serde_json::json!({"auths": {registry.clone(): {
        "username": env.var("PRIVATE_REGISTRY_USER"),
        "password": env.var("PRIVATE_REGISTRY_PASSWORD"),
    }}});
    let secret: Secret = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": secret_name, "namespace": "default"},
        "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": config.to_string()},
    }))
    .unwrap();
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();

    // Without credentials (the secret it names does not exist): refused by the registry.
    let denied = format!("{}-denied", node.name);
    create(pods, &pod(node, &denied, "no-such-secret", "Always")).await;
    let (reason, message) = wait_pod(pods, &denied, "ImagePullBackOff", 90, |p| {
        state(p).filter(|(r, _)| r == "ImagePullBackOff")
    })
    .await;
    assert_eq!(reason, "ImagePullBackOff");
    assert!(message.contains("private/busybox"), "{message}");
    let lp = ListParams::default().fields(&format!("involvedObject.name={denied}"));
    let evs = wait_until_async(
        "FailedToRetrieveImagePullSecret and ErrImagePull events",
        Duration::from_secs(30),
        || async {
            let items = events.list(&lp).await.ok()?.items;
            let has = |r: &str| items.iter().any(|e| e.reason.as_deref() == Some(r));
            (has("FailedToRetrieveImagePullSecret") && has("Failed")).then_some(items)
        },
    )
    .await;
    let missing = evs
        .iter()
        .find(|e| e.reason.as_deref() == Some("FailedToRetrieveImagePullSecret"))
        .unwrap();
    assert_eq!(
        missing.message.as_deref(),
        Some(
            "Unable to retrieve some image pull secrets (no-such-secret); attempting to pull the image may not succeed."
        )
    );
    let pull_failed = evs
        .iter()
        .filter(|e| e.reason.as_deref() == Some("Failed"))
        .filter_map(|e| e.message.as_deref())
        .collect::<Vec<_>>();
    assert!(
        pull_failed
            .iter()
            .any(|m| m.contains("Failed to pull image")),
        "{pull_failed:?}"
    );

    // With the dockerconfigjson secret: pulled with its credentials and running.
    let allowed = format!("{}-allowed", node.name);
    create(pods, &pod(node, &allowed, &secret_name, "IfNotPresent")).await;
    wait_pod(pods, &allowed, "the pod with the secret Running", 90, |p| {
        state(p).filter(|(r, _)| r == "Running")
    })
    .await;
    // The one without still cannot pull (pull policy Always), although the image is on the node.
    let p = pods.get(&denied).await.unwrap();
    let (reason, _) = state(&p).unwrap();
    assert!(
        reason == "ImagePullBackOff" || reason == "ErrImagePull",
        "{reason}"
    );

    for name in [&denied, &allowed] {
        pods.delete(name, &DeleteParams::default()).await.unwrap();
    }
    secrets
        .delete(&secret_name, &DeleteParams::default())
        .await
        .unwrap();
    bn.finish();
}
