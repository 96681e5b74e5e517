//! The status manager: the one writer of pod status to the API. It patches pods/status only when
//! a pod's status changed since its last successful write; failures are retried, newest wins.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use kube::Api;
use kube::api::{Patch, PatchParams};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::store::{Entry, StatusStore};
use super::{POD_RESIZE_IN_PROGRESS, POD_RESIZE_PENDING};
use crate::backoff::Policy;
use crate::runtime::labels;

/// A failed write is retried after this (the store's next change comes sooner if there is one).
const WRITE_RETRY: Policy = Policy::constant(Duration::from_secs(1));
/// With nothing changed and nothing failed, the writer looks again after this.
const IDLE: Duration = Duration::from_secs(60);

/// Writes the statuses of API pods until cancelled.
pub async fn run(client: kube::Client, store: StatusStore, cancel: CancellationToken) {
    let mut changed = store.subscribe();
    // Shared with the store: an unchanged status is the same allocation.
    let mut written: HashMap<String, Arc<PodStatus>> = HashMap::new();
    store.mark_written(0);
    loop {
        let mut failed = false;
        // Read before the pods: what this pass writes is at least this version.
        let version = *changed.borrow_and_update();
        let entries = store.entries();
        for Entry { pod, status } in &entries {
            let Some(uid) = pod.metadata.uid.clone() else {
                continue;
            };
            if written
                .get(&uid)
                .is_some_and(|w| Arc::ptr_eq(w, status) || w == status)
            {
                continue;
            }
            // A static pod's status goes to its mirror pod (same name, its own UID).
            let target = if labels::is_static(pod) {
                match mirror_uid(&client, pod).await {
                    Some(m) => m,
                    None => {
                        failed = true;
                        continue;
                    }
                }
            } else {
                uid.clone()
            };
            match patch(
                &client,
                pod,
                &target,
                status,
                written.get(&uid).map(|w| &**w),
            )
            .await
            {
                Ok(()) => {
                    debug!(pod.uid = %uid, "pod status written");
                    written.insert(uid, status.clone());
                }
                Err(e) if matches!(&e, kube::Error::Api(s) if s.code == 404 || s.code == 409) => {
                    // Gone, or replaced by a pod with another UID: nothing to write.
                    debug!(pod.uid = %uid, error = %e, "pod status not written");
                    written.insert(uid, status.clone());
                }
                Err(e) => {
                    warn!(pod.uid = %uid, error = %e, "pod status write failed; retrying");
                    failed = true;
                }
            }
        }
        let live: HashSet<&str> = entries
            .iter()
            .filter_map(|e| e.pod.metadata.uid.as_deref())
            .collect();
        written.retain(|uid, _| live.contains(uid.as_str()));
        if !failed {
            store.mark_written(version);
        }
        let retry = if failed { WRITE_RETRY.initial } else { IDLE };
        tokio::select! {
            _ = cancel.cancelled() => return,
            r = changed.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(retry) => {}
        }
    }
}

async fn patch(
    client: &kube::Client,
    pod: &Pod,
    uid: &str,
    status: &PodStatus,
    written: Option<&PodStatus>,
) -> Result<(), kube::Error> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let name = pod.metadata.name.as_deref().unwrap_or_default();
    let api: Api<Pod> = Api::namespaced(client.clone(), ns);
    // The UID precondition keeps a status from landing on a new pod of the same name.
    let typed = status;
    let mut status = serde_json::to_value(status).unwrap_or_default();
    // Conditions merge by type: a reason or message the new condition lacks is cleared
    // explicitly, or the API keeps the old one (the kubelet's two-way patch does the same).
    if let Some(conds) = status.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for c in conds.iter_mut().filter_map(|c| c.as_object_mut()) {
            for field in ["reason", "message"] {
                c.entry(field).or_insert(serde_json::Value::Null);
            }
        }
    }
    // The resize conditions come and go: one the last write carried (or, on the first write
    // since start, that the API may hold) is deleted explicitly, as the kubelet's patch does.
    let has = |s: &PodStatus, kind: &str| s.conditions.iter().flatten().any(|c| c.type_ == kind);
    let mut gone = Vec::new();
    for kind in [POD_RESIZE_PENDING, POD_RESIZE_IN_PROGRESS] {
        if !has(typed, kind) && written.is_none_or(|w| has(w, kind)) {
            gone.push(serde_json::json!({"type": kind, "$patch": "delete"}));
        }
    }
    if !gone.is_empty() {
        let conds = status.as_object_mut().map(|o| {
            o.entry("conditions")
                .or_insert_with(|| serde_json::json!([]))
        });
        if let Some(list) = conds.and_then(|c| c.as_array_mut()) {
            list.extend(gone);
        }
    }
    let body = serde_json::json!({"metadata": {"uid": uid}, "status": status});
    api.patch_status(name, &PatchParams::default(), &Patch::Strategic(body))
        .await?;
    Ok(())
}

/// The UID of the static pod's current mirror pod, if it exists yet.
async fn mirror_uid(client: &kube::Client, pod: &Pod) -> Option<String> {
    let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
    let m = Api::<Pod>::namespaced(client.clone(), ns)
        .get_opt(pod.metadata.name.as_deref()?)
        .await
        .ok()??;
    let want = pod
        .metadata
        .annotations
        .as_ref()?
        .get(labels::CONFIG_HASH)?;
    (m.metadata
        .annotations
        .as_ref()?
        .get(labels::CONFIG_MIRROR)?
        == want)
        .then_some(m.metadata.uid?)
}
