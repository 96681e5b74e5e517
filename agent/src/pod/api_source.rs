//! The API pod source: a watch of the pods bound to this node (`spec.nodeName=<node>`, the only
//! pods the Node authorizer lets a node see), relisting at once on 410 Gone and backing off on other errors
//! as the kubelet's reflectors ([`crate::client::watch`]).

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::source::SourceUpdate;
use crate::runtime::labels;

/// Watches the node's pods and sends the full desired set after every change (the first one
/// only after the initial list is complete, so nothing is removed before that).
pub async fn run(
    client: kube::Client,
    node: String,
    tx: mpsc::Sender<SourceUpdate>,
    cancel: CancellationToken,
) {
    let api: Api<Pod> = Api::all(client);
    let cfg = crate::client::watch::config().fields(&format!("spec.nodeName={node}"));
    let mut stream = crate::client::watch::with_backoff(watcher::watcher(api, cfg).boxed()).boxed();
    let mut pods: BTreeMap<String, Arc<Pod>> = BTreeMap::new();
    let mut listing: Option<BTreeMap<String, Arc<Pod>>> = None;
    let mut synced = false;
    loop {
        let ev = tokio::select! {
            _ = cancel.cancelled() => return,
            ev = stream.next() => match ev {
                Some(ev) => ev,
                None => return,
            },
        };
        let changed = match ev {
            Ok(Event::Init) => {
                listing = Some(BTreeMap::new());
                false
            }
            Ok(Event::InitApply(p)) => {
                if let (Some(l), Some((uid, p))) = (listing.as_mut(), keyed(p)) {
                    l.insert(uid, p);
                }
                false
            }
            Ok(Event::InitDone) => {
                pods = listing.take().unwrap_or_default();
                synced = true;
                true
            }
            Ok(Event::Apply(p)) => match keyed(p) {
                Some((uid, p)) => pods.insert(uid, p.clone()).as_ref() != Some(&p),
                None => false,
            },
            Ok(Event::Delete(p)) => {
                let uid = p.metadata.uid.clone().unwrap_or_default();
                pods.remove(&uid).is_some()
            }
            Err(e) => {
                warn!(error = %e, "pod watch failed; retrying with back-off");
                false
            }
        };
        if changed && synced {
            debug!(pods = pods.len(), "API pods changed");
            if tx
                .send(SourceUpdate {
                    source: "api",
                    pods: pods.clone(),
                })
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

/// The pod keyed by UID; mirror pods (the API's copies of static pods) are not desired pods.
/// Its managedFields, which nothing here reads, are dropped: two entries are 40% of a plain pod's
/// JSON and more of its memory, held for every pod of the node.
fn keyed(mut p: Pod) -> Option<(String, Arc<Pod>)> {
    let mirror = labels::is_mirror(&p);
    let uid = p.metadata.uid.clone().filter(|u| !u.is_empty())?;
    p.metadata.managed_fields = None;
    (!mirror).then(|| (uid, Arc::new(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn desired_pods_are_keyed_by_uid_without_managed_fields() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "uid": "u1", "managedFields": [{
                "manager": "kubectl", "operation": "Update", "apiVersion": "v1",
                "fieldsType": "FieldsV1", "fieldsV1": {"f:spec": {"f:containers": {}}}}]},
            "spec": {"containers": [{"name": "c", "image": "busybox"}]},
        }))
        .expect("pod");
        let (uid, kept) = keyed(pod.clone()).expect("keyed");
        assert_eq!(uid, "u1");
        assert_eq!(kept.metadata.managed_fields, None);
        assert_eq!(kept.spec, pod.spec);
        let mut no_uid = pod;
        no_uid.metadata.uid = None;
        assert!(keyed(no_uid).is_none());
    }
}
