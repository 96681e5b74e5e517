//! The one place pod statuses live: workers write, readers (the /pods handler, the API status
//! writer) read the newest.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tokio::sync::watch;

/// Statuses of the pods on this node by UID, with a version counter that ticks on every change.
/// Each pod is kept as the worker's own `Arc` beside its status, not copied: a copy of every
/// pod object was 11 KiB a pod, the largest share of Bosun's heap with 250 pods.
#[derive(Clone)]
pub struct StatusStore {
    inner: Arc<Mutex<HashMap<String, Entry>>>,
    changed: Arc<watch::Sender<u64>>,
    /// The version every status up to which the API writer has written (None: no writer).
    written: Arc<watch::Sender<Option<u64>>>,
}

/// A pod as its worker last had it, and the status last set for it.
#[derive(Clone)]
pub struct Entry {
    /// The pod object (its status field as the API server sent it).
    pub pod: Arc<Pod>,
    /// The status set for it.
    pub status: Arc<PodStatus>,
}

impl Entry {
    /// The pod with its status in place (a copy: for the rare reader of whole pods).
    pub fn with_status(&self) -> Arc<Pod> {
        let mut p = Pod::clone(&self.pod);
        p.status = Some(PodStatus::clone(&self.status));
        Arc::new(p)
    }
}

impl Default for StatusStore {
    fn default() -> Self {
        StatusStore {
            inner: Arc::default(),
            changed: Arc::new(watch::channel(0).0),
            written: Arc::new(watch::channel(None).0),
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
            .map(|e| PodStatus::clone(&e.status))
    }

    /// The status a new one is computed from (its startTime and transition times carry over):
    /// the last one set, else, for a pod not in the store yet (after a restart of the agent), the
    /// status the pod object carries as the API server holds it, as the kubelet's status manager
    /// does (`updateStatusInternal`: cached status, else the pod's). A static pod's manifest
    /// carries none.
    pub fn previous(&self, pod: &Pod) -> Option<PodStatus> {
        let uid = pod.metadata.uid.as_deref()?;
        self.get(uid).or_else(|| pod.status.clone())
    }

    /// Records the pod with its new status; returns true when the status changed. An unchanged
    /// status still takes the newer pod object.
    pub fn set(&self, pod: &Arc<Pod>, status: PodStatus) -> bool {
        let Some(uid) = pod.metadata.uid.clone() else {
            return false;
        };
        let Ok(mut map) = self.inner.lock() else {
            return false;
        };
        if let Some(e) = map.get_mut(&uid)
            && *e.status == status
        {
            if !Arc::ptr_eq(&e.pod, pod) {
                e.pod = pod.clone();
            }
            return false;
        }
        let entry = Entry {
            pod: pod.clone(),
            status: Arc::new(status),
        };
        map.insert(uid, entry);
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

    /// Every pod with its status (what `/pods` serves): copies, for readers of whole pods.
    pub fn pods(&self) -> Vec<Arc<Pod>> {
        self.entries().iter().map(Entry::with_status).collect()
    }

    /// Every pod and its status, shared (no copy).
    pub fn entries(&self) -> Vec<Entry> {
        self.inner
            .lock()
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The pod `namespace/name` with its status, if this node has it.
    pub fn find(&self, namespace: &str, name: &str) -> Option<Arc<Pod>> {
        let map = self.inner.lock().ok()?;
        map.values()
            .find(|e| {
                e.pod.metadata.namespace.as_deref() == Some(namespace)
                    && e.pod.metadata.name.as_deref() == Some(name)
            })
            .map(Entry::with_status)
    }

    /// A receiver that sees the counter tick on each change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The API writer's word: every status set up to `version` is written (or its pod gone).
    pub fn mark_written(&self, version: u64) {
        self.written.send_if_modified(|w| {
            let newer = *w < Some(version);
            if newer {
                *w = Some(version);
            }
            newer
        });
    }

    /// Waits until the API writer has written every status set so far, at most `limit`; true
    /// when it has (at once when nothing writes statuses to an API: a standalone node).
    pub async fn written(&self, limit: std::time::Duration) -> bool {
        let target = *self.changed.borrow();
        let mut rx = self.written.subscribe();
        if rx.borrow().is_none() {
            return true;
        }
        tokio::time::timeout(limit, rx.wait_for(|w| w.is_some_and(|v| v >= target)))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{StatusInput, compute};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;
    use std::time::Duration;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).expect("timestamp"))
    }

    /// A pod as the API server holds it: started at `start`, every condition since `since`.
    fn api_pod(start: i64, since: i64) -> Pod {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [{"name": "app", "image": "busybox"}]},
        }))
        .expect("pod");
        let cond = |kind: &str, status: &str| {
            serde_json::json!({"type": kind, "status": status,
                "lastTransitionTime": at(since).0.to_string()})
        };
        pod.status = Some(
            serde_json::from_value(serde_json::json!({
                "phase": "Pending",
                "startTime": at(start).0.to_string(),
                "conditions": [
                    cond("PodReadyToStartContainers", "False"),
                    cond("Initialized", "True"),
                    cond("Ready", "False"),
                    cond("ContainersReady", "False"),
                    cond("PodScheduled", "True"),
                ],
            }))
            .expect("status"),
        );
        pod
    }

    fn computed(pod: &Pod, previous: Option<&PodStatus>, now: i64) -> PodStatus {
        compute(&StatusInput {
            pod,
            previous,
            sandbox_ready: false,
            pod_ips: &[],
            host_ip: "",
            containers: &[],
            sandbox_id: None,
            waiting: &Default::default(),
            runtime_name: "containerd",
            now: at(now),
            terminal: None,
            probes: &HashMap::new(),
        })
    }

    #[test]
    fn previous_is_the_stored_status_else_the_api_pods() {
        let store = StatusStore::default();
        let pod = Arc::new(api_pod(1_000, 1_000));
        assert_eq!(
            store.previous(&pod),
            pod.status,
            "not in the store: the API's"
        );
        let mine = PodStatus {
            phase: Some("Running".into()),
            ..Default::default()
        };
        store.set(&pod, mine.clone());
        assert_eq!(
            store.previous(&pod),
            Some(mine),
            "in the store: the store's"
        );
        let mut manifest = Pod::clone(&pod);
        manifest.status = None;
        manifest.metadata.uid = Some("static".into());
        assert_eq!(store.previous(&manifest), None, "a manifest carries none");
    }

    #[test]
    fn a_restart_keeps_start_and_transition_times() {
        let store = StatusStore::default();
        let pod = api_pod(1_000, 1_010);
        let seeded = computed(&pod, store.previous(&pod).as_ref(), 5_000);
        assert_eq!(seeded.start_time, Some(at(1_000)));
        let conditions = seeded.conditions.clone().unwrap_or_default();
        assert!(!conditions.is_empty());
        for c in &conditions {
            assert_eq!(c.last_transition_time, Some(at(1_010)), "{}", c.type_);
        }
        // Without the seed (the behaviour this replaces) every time would be now.
        let fresh = computed(&pod, None, 5_000);
        assert_eq!(fresh.start_time, Some(at(5_000)));
    }

    #[test]
    fn a_changed_condition_still_moves_its_transition_time() {
        let store = StatusStore::default();
        let mut pod = api_pod(1_000, 1_010);
        let ready = pod
            .status
            .as_mut()
            .and_then(|s| s.conditions.as_mut())
            .and_then(|cs| cs.iter_mut().find(|c| c.type_ == "Ready"))
            .expect("Ready");
        ready.status = "True".into();
        let s = computed(&pod, store.previous(&pod).as_ref(), 5_000);
        let ltt = |kind: &str| {
            s.conditions
                .iter()
                .flatten()
                .find(|c| c.type_ == kind)
                .and_then(|c| c.last_transition_time.clone())
        };
        assert_eq!(ltt("Ready"), Some(at(5_000)), "True -> False moves");
        assert_eq!(ltt("PodScheduled"), Some(at(1_010)), "unchanged keeps");
    }

    /// Waiting for the writer: at once without one (standalone); with one, until it has
    /// written the version current when the wait began, and not for a later change.
    #[tokio::test(start_paused = true)]
    async fn written_waits_for_the_writer_to_reach_the_current_version() {
        let store = StatusStore::default();
        let pod = Arc::new(api_pod(1_000, 1_000));
        let status = |m: &str| PodStatus {
            message: Some(m.into()),
            ..Default::default()
        };
        store.set(&pod, status("a"));
        assert!(store.written(Duration::from_secs(1)).await, "no writer");
        store.mark_written(0);
        assert!(
            !store.written(Duration::from_secs(1)).await,
            "not written yet"
        );
        let version = *store.subscribe().borrow();
        let waiter = store.clone();
        let wait = tokio::spawn(async move { waiter.written(Duration::from_secs(60)).await });
        tokio::task::yield_now().await;
        store.set(&pod, status("b"));
        store.mark_written(version);
        assert!(
            wait.await.unwrap(),
            "the version current at the wait's start"
        );
        assert!(
            !store.written(Duration::from_secs(1)).await,
            "b is not written"
        );
    }
}
