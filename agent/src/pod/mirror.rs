//! Mirror pods: the API's read-only copies of this node's static pods, as the kubelet keeps them.
//! Each static pod gets a mirror pod of the same name with the `kubernetes.io/config.mirror`
//! annotation and a controller owner reference to the Node (NodeRestriction requires it); a mirror of an older manifest, or of a static
//! pod that is gone, is deleted (and recreated when the manifest still exists).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::runtime::labels;
use crate::status::StatusStore;

/// How often mirror pods are reconciled with no change at all.
const RESYNC: Duration = Duration::from_secs(60);

/// Keeps mirror pods in line with the static pods in `store` until cancelled.
pub async fn run(
    client: kube::Client,
    node: String,
    store: StatusStore,
    cancel: CancellationToken,
) {
    let mut changed = store.subscribe();
    // The first pass lists even without static pods: mirrors left by static pods removed while
    // the agent was down are deleted once (the kubelet's orphaned mirror pod cleanup). Later, a
    // node without static pods has no mirror pods to keep and lists nothing.
    let mut must_list = true;
    loop {
        match reconcile(&client, &node, &store, must_list).await {
            // The pass after the last static pod went still lists, to delete its mirror.
            Ok(had_statics) => must_list = had_statics,
            Err(e) => warn!(error = %e, "mirror pods not reconciled; retrying"),
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = changed.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(RESYNC) => {}
        }
        // Let a burst of status changes settle into one reconcile.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn hash(p: &Pod) -> Option<&String> {
    p.metadata.annotations.as_ref()?.get(labels::CONFIG_HASH)
}

/// One pass; true when there were static pods. Without static pods, lists only if `must_list`.
async fn reconcile(
    client: &kube::Client,
    node: &str,
    store: &StatusStore,
    must_list: bool,
) -> Result<bool, kube::Error> {
    let statics: BTreeMap<(String, String), Arc<Pod>> = store
        .entries()
        .into_iter()
        .map(|e| e.pod)
        .filter(|p| labels::is_static(p))
        .map(|p| {
            (
                (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                ),
                p,
            )
        })
        .collect();
    if statics.is_empty() && !must_list {
        return Ok(false);
    }
    let all: Api<Pod> = Api::all(client.clone());
    let listed = all
        .list(&ListParams::default().fields(&format!("spec.nodeName={node}")))
        .await?;
    let mut mirrors: BTreeMap<(String, String), Pod> = BTreeMap::new();
    for p in listed.items {
        if labels::is_mirror(&p) {
            mirrors.insert(
                (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                ),
                p,
            );
        }
    }
    // Mirrors without a current static pod go.
    for (key, m) in &mirrors {
        let current = statics.get(key).is_some_and(|s| {
            m.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(labels::CONFIG_MIRROR))
                == hash(s)
        });
        if !current && m.metadata.deletion_timestamp.is_none() {
            delete_mirror(client, key, m).await;
        }
    }
    // Static pods without a current mirror get one.
    let mut node_uid: Option<String> = None;
    for (key, s) in &statics {
        let current = mirrors.get(key).is_some_and(|m| {
            m.metadata.deletion_timestamp.is_none()
                && m.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(labels::CONFIG_MIRROR))
                    == hash(s)
        });
        if current {
            continue;
        }
        if node_uid.is_none() {
            node_uid = Api::<Node>::all(client.clone())
                .get(node)
                .await?
                .metadata
                .uid;
        }
        let Some(uid) = node_uid.clone() else {
            return Ok(true);
        };
        let m = mirror_pod(s, node, uid);
        match Api::<Pod>::namespaced(client.clone(), &key.0)
            .create(&PostParams::default(), &m)
            .await
        {
            Ok(_) => info!(pod.namespace = %key.0, pod.name = %key.1, "mirror pod created"),
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => {
                warn!(pod.namespace = %key.0, pod.name = %key.1, error = %e, "mirror pod not created")
            }
        }
    }
    Ok(!statics.is_empty())
}

/// Deletes the outdated mirror pod `m` at once: mirror pods have nothing to stop, as the
/// kubelet's mirror client deletes them.
async fn delete_mirror(client: &kube::Client, key: &(String, String), m: &Pod) {
    info!(pod.namespace = %key.0, pod.name = %key.1, "deleting outdated mirror pod");
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: m.metadata.uid.clone().map(|uid| kube::api::Preconditions {
            uid: Some(uid),
            resource_version: None,
        }),
        ..Default::default()
    };
    let _ = Api::<Pod>::namespaced(client.clone(), &key.0)
        .delete(&key.1, &dp)
        .await;
}

/// The mirror pod of static pod `s`: its metadata and spec, owned by the Node (`node`,
/// `uid`), annotated with the static pod's hash.
fn mirror_pod(s: &Pod, node: &str, uid: String) -> Pod {
    let mut m = Pod {
        metadata: s.metadata.clone(),
        spec: s.spec.clone(),
        status: None,
    };
    m.metadata.uid = None;
    m.metadata.resource_version = None;
    m.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "Node".into(),
        name: node.to_string(),
        uid,
        controller: Some(true),
        block_owner_deletion: None,
    }]);
    let ann = m.metadata.annotations.get_or_insert_with(Default::default);
    ann.insert(
        labels::CONFIG_MIRROR.into(),
        hash(s).cloned().unwrap_or_default(),
    );
    m
}
