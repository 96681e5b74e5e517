//! The one place pod statuses live: workers write, readers (the /pods handler, the API status
//! writer) read the newest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::watch;

/// Statuses of the pods on this node by UID, with a version counter that ticks on every change.
#[derive(Clone)]
pub struct StatusStore {
    inner: Arc<Mutex<HashMap<String, Arc<Pod>>>>,
    changed: Arc<watch::Sender<u64>>,
}

impl Default for StatusStore {
    fn default() -> Self {
        StatusStore {
            inner: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
        }
    }
}

impl StatusStore {
    /// The last status set for `uid`.
    pub fn get(&self, uid: &str) -> Option<PodStatus> {
        self.inner
            .lock()
            .ok()?
            .get(uid)
            .and_then(|p| p.status.clone())
    }

    /// Records the pod with its new status; returns true when the status changed.
    pub fn set(&self, pod: &Pod, status: PodStatus) -> bool {
        let Some(uid) = pod.metadata.uid.clone() else {
            return false;
        };
        let Ok(mut map) = self.inner.lock() else {
            return false;
        };
        if map.get(&uid).and_then(|p| p.status.as_ref()) == Some(&status) {
            return false;
        }
        let mut p = pod.clone();
        p.status = Some(status);
        map.insert(uid, Arc::new(p));
        drop(map);
        self.changed.send_modify(|v| *v += 1);
        true
    }

    /// Forgets a pod that is gone.
    pub fn remove(&self, uid: &str) {
        if let Ok(mut map) = self.inner.lock()
            && map.remove(uid).is_some()
        {
            drop(map);
            self.changed.send_modify(|v| *v += 1);
        }
    }

    /// Every pod with its status (what `/pods` serves).
    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.inner
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// A receiver that sees the counter tick on each change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
