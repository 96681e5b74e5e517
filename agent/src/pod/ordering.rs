//! The kubelet's termination ordering: when a pod stops, its sidecars (restartable init
//! containers) stop only after every app container and every sidecar declared after them, so a
//! proxy or log shipper outlives what it serves. Each stop still runs its preStop hook at once.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;

use super::plan::is_restartable_init;

/// Who waits for whom while the containers of one pod stop.
pub struct TerminationOrdering {
    running: watch::Sender<HashSet<String>>,
    prereqs: HashMap<String, Vec<String>>,
}

impl TerminationOrdering {
    /// The ordering of `pod` while the containers named `running` are being stopped.
    pub fn new(pod: &Pod, running: impl IntoIterator<Item = String>) -> Self {
        let mut prereqs: HashMap<String, Vec<String>> = HashMap::new();
        if let Some(spec) = pod.spec.as_ref() {
            let apps: Vec<String> = spec.containers.iter().map(|c| c.name.clone()).collect();
            let mut later_sidecar: Option<&str> = None;
            for ic in spec.init_containers.iter().flatten().rev() {
                if !is_restartable_init(ic) {
                    continue;
                }
                let mut waits = apps.clone();
                waits.extend(later_sidecar.map(str::to_string));
                prereqs.insert(ic.name.clone(), waits);
                later_sidecar = Some(&ic.name);
            }
        }
        let (running, _) = watch::channel(running.into_iter().collect());
        TerminationOrdering { running, prereqs }
    }

    /// The containers `name` waits for (app containers and the next sidecar), in spec order.
    pub fn prerequisites(&self, name: &str) -> &[String] {
        self.prereqs
            .get(name)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Waits, at most `budget`, until every prerequisite of `name` has stopped; returns the time
    /// waited.
    pub async fn wait_for_turn(&self, name: &str, budget: Duration) -> Duration {
        let started = Instant::now();
        let waits = self.prerequisites(name);
        if waits.is_empty() {
            return Duration::ZERO;
        }
        let mut rx = self.running.subscribe();
        let turn = rx.wait_for(|running| waits.iter().all(|w| !running.contains(w)));
        let _ = tokio::time::timeout(budget, turn).await;
        started.elapsed()
    }

    /// Records that `name` has stopped.
    pub fn terminated(&self, name: &str) {
        self.running.send_modify(|running| {
            running.remove(name);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [
                    {"name": "side1", "restartPolicy": "Always"},
                    {"name": "init"},
                    {"name": "side2", "restartPolicy": "Always"}
                ],
                "containers": [{"name": "a"}, {"name": "b"}]
            }
        }))
        .unwrap()
    }

    #[test]
    fn sidecars_wait_for_the_apps_and_the_later_sidecars() {
        let o = TerminationOrdering::new(&pod(), []);
        assert_eq!(o.prerequisites("a"), &[] as &[String]);
        assert_eq!(o.prerequisites("init"), &[] as &[String]);
        assert_eq!(o.prerequisites("side2"), ["a", "b"]);
        assert_eq!(o.prerequisites("side1"), ["a", "b", "side2"]);
    }

    #[tokio::test]
    async fn a_turn_comes_when_the_prerequisites_stopped() {
        let names = ["a", "b", "side1", "side2"].map(String::from);
        let o = TerminationOrdering::new(&pod(), names);
        let long = Duration::from_secs(60);
        // App containers never wait.
        assert_eq!(o.wait_for_turn("a", long).await, Duration::ZERO);
        let side1 = o.wait_for_turn("side1", long);
        tokio::pin!(side1);
        for name in ["a", "b"] {
            o.terminated(name);
            assert!(
                futures::FutureExt::now_or_never(&mut side1).is_none(),
                "side1 went before side2"
            );
        }
        o.terminated("side2");
        assert!(side1.await < long);
        // A prerequisite that never stops costs at most the budget.
        let o = TerminationOrdering::new(&pod(), ["a".to_string()]);
        let waited = o.wait_for_turn("side2", Duration::from_millis(50)).await;
        assert!(waited >= Duration::from_millis(50), "{waited:?}");
    }
}
