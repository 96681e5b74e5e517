//! The pod cache: what the last PLEG relist saw of each pod, as the kubelet's pod workers read
//! its kubecontainer.Cache instead of asking the runtime again at every sync. A worker that
//! last observed its pod with fingerprint F, and finds that a relist listed after its last sync
//! ended still saw F, knows the runtime holds the same sandboxes and containers in the same
//! states: it plans from what it observed then, without a CRI call. Anything else (no relist
//! since, a changed fingerprint) and it observes the runtime itself.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::runtime::ObservedPod;

/// The fingerprints of the last successful relist, shared by the pod manager (writer) and the
/// pod workers (readers).
#[derive(Clone, Debug, Default)]
pub struct PodCache {
    last: Arc<Mutex<Option<Relisted>>>,
}

/// One relist: when its lists were asked for, and each pod UID's fingerprint.
#[derive(Debug)]
struct Relisted {
    listed_at: Instant,
    pods: Arc<HashMap<String, String>>,
}

impl PodCache {
    /// Records a relist whose lists were asked for at `listed_at` (the map shared with the
    /// manager, which compares the next relist with it).
    pub fn relisted(&self, listed_at: Instant, pods: Arc<HashMap<String, String>>) {
        if let Ok(mut l) = self.last.lock() {
            *l = Some(Relisted { listed_at, pods });
        }
    }

    /// True when a relist asked for its lists after `since` and saw pod `uid` with `fingerprint`
    /// (a pod it did not see has the empty fingerprint).
    pub fn unchanged_since(&self, uid: &str, since: Instant, fingerprint: &str) -> bool {
        let Ok(l) = self.last.lock() else {
            return false;
        };
        l.as_ref().is_some_and(|r| {
            r.listed_at > since && r.pods.get(uid).map_or("", String::as_str) == fingerprint
        })
    }
}

/// What identifies a pod's runtime state: its sandboxes' ids and readiness and its containers'
/// ids and states, in id order (so that two listings in any order compare equal). Empty when
/// the runtime holds nothing of the pod.
pub fn fingerprint(pod: &ObservedPod) -> String {
    let mut parts: Vec<String> = pod
        .sandboxes
        .iter()
        .map(|s| format!("s:{}:{}", s.id, s.ready))
        .chain(
            pod.containers
                .iter()
                .map(|c| format!("c:{}:{}", c.id, c.state as i32)),
        )
        .collect();
    parts.sort_unstable();
    parts.join(";")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{ObservedContainer, ObservedSandbox};
    use bosun_cri::types::ContainerState;
    use std::time::Duration;

    fn pod(ready: bool, containers: &[(&str, ContainerState)]) -> ObservedPod {
        ObservedPod {
            sandboxes: vec![ObservedSandbox {
                id: "sb".into(),
                ready,
                attempt: 0,
                created_at: 1,
            }],
            containers: containers
                .iter()
                .map(|(id, state)| ObservedContainer {
                    id: id.to_string(),
                    name: "app".into(),
                    sandbox_id: "sb".into(),
                    state: *state,
                    restart_count: 0,
                    created_at: 2,
                    image_ref: String::new(),
                    init: false,
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn the_fingerprint_changes_with_any_id_or_state_and_not_with_order() {
        use ContainerState::{ContainerExited as Exited, ContainerRunning as Running};
        let running = fingerprint(&pod(true, &[("a", Running), ("b", Exited)]));
        assert_eq!(
            running,
            fingerprint(&pod(true, &[("b", Exited), ("a", Running)]))
        );
        assert_ne!(
            running,
            fingerprint(&pod(true, &[("a", Exited), ("b", Exited)]))
        );
        assert_ne!(
            running,
            fingerprint(&pod(false, &[("a", Running), ("b", Exited)]))
        );
        assert_ne!(running, fingerprint(&pod(true, &[("a", Running)])));
        assert_eq!(fingerprint(&ObservedPod::default()), "");
    }

    #[test]
    fn only_a_relist_listed_after_the_sync_with_the_same_fingerprint_counts() {
        let cache = PodCache::default();
        let t0 = Instant::now();
        let synced = t0 + Duration::from_secs(1);
        assert!(!cache.unchanged_since("u", synced, "f"), "no relist yet");
        cache.relisted(
            t0,
            Arc::new(HashMap::from([("u".to_string(), "f".to_string())])),
        );
        assert!(
            !cache.unchanged_since("u", synced, "f"),
            "listed before the sync ended: it may not show what the sync did"
        );
        let later = synced + Duration::from_millis(1);
        cache.relisted(
            later,
            Arc::new(HashMap::from([("u".to_string(), "f".to_string())])),
        );
        assert!(cache.unchanged_since("u", synced, "f"));
        assert!(!cache.unchanged_since("u", synced, "g"), "changed since");
        assert!(cache.unchanged_since("gone", synced, ""), "nothing, still");
        assert!(!cache.unchanged_since("gone", synced, "f"), "removed since");
    }
}
