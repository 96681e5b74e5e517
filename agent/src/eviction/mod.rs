//! The eviction manager, as the kubelet's pkg/kubelet/eviction: every evictionMonitoringPeriod
//! (10 s) it observes the signals in the sampler's latest Summary, decides which thresholds are
//! met and which pressure conditions (MemoryPressure, DiskPressure, PIDPressure) the node
//! reports, and publishes those conditions for the node status and for admission.
//!
//! This slice reports pressure and lets admission act on it; it does not yet reclaim node
//! resources or evict pods.

pub mod message;
pub mod plan;
pub mod rank;
pub mod signals;
pub mod synchronize;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::config::eviction::EvictionConfig;
use crate::stats::StatsProvider;
pub use synchronize::{Condition, Conditions};

/// The kubelet's evictionMonitoringPeriod (a constant there, not a configuration field).
pub const MONITORING_PERIOD: Duration = Duration::from_secs(10);

/// The pressure conditions as the manager last decided them; empty until pressure is seen.
pub type ConditionsRx = watch::Receiver<Conditions>;

/// The lowest priority of a critical pod (the kubelet's SystemCriticalPriority, 2 * 10^9).
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// True for a pod the kubelet never rejects or evicts for pressure (kubelettypes.IsCriticalPod):
/// a static pod (any source but the API server), a mirror pod, or one whose priority is at least
/// [`SYSTEM_CRITICAL_PRIORITY`].
pub fn is_critical(pod: &Pod) -> bool {
    use crate::runtime::labels::{CONFIG_SOURCE, is_mirror};
    let source = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_SOURCE));
    source.is_some_and(|s| s != "api")
        || is_mirror(pod)
        || pod
            .spec
            .as_ref()
            .and_then(|s| s.priority)
            .is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY)
}

/// The eviction manager: thresholds, what earlier rounds saw, and where conditions go.
pub struct Manager {
    config: EvictionConfig,
    stats: StatsProvider,
    state: synchronize::State,
    conditions: watch::Sender<Conditions>,
}

impl Manager {
    /// A manager reading `stats`, and the receiver of the conditions it decides.
    pub fn new(config: EvictionConfig, stats: StatsProvider) -> (Manager, ConditionsRx) {
        let (tx, rx) = watch::channel(Conditions::new());
        let m = Manager {
            config,
            stats,
            state: synchronize::State::default(),
            conditions: tx,
        };
        (m, rx)
    }

    /// One round at `now`: observe, decide, publish the conditions when they changed.
    pub fn synchronize(&mut self, now: Instant) {
        if self.config.thresholds.is_empty() {
            return;
        }
        let Some(summary) = self.stats.latest() else {
            debug!("eviction manager: no stats yet");
            return;
        };
        let observations = signals::observe(&summary);
        let acted = synchronize::synchronize(
            &mut self.state,
            &self.config.thresholds,
            &observations,
            now,
            self.config.pressure_transition_period,
        );
        if !acted.is_empty() {
            let signals: Vec<&str> = acted.iter().map(|t| t.signal.as_str()).collect();
            info!(thresholds = ?signals, "eviction manager: thresholds met; pod eviction is not implemented yet");
        }
        let now_reported = self.state.conditions.clone();
        self.conditions.send_if_modified(|c| {
            if *c == now_reported {
                return false;
            }
            let names: Vec<&str> = now_reported.iter().map(|c| c.as_str()).collect();
            info!(conditions = ?names, ?observations, "eviction manager: node pressure conditions changed");
            *c = now_reported;
            true
        });
    }

    /// Synchronizes every `period` until `cancel` fires.
    pub async fn run(mut self, period: Duration, cancel: CancellationToken) {
        info!(
            thresholds = self.config.thresholds.len(),
            ?period,
            "eviction manager: starting control loop"
        );
        loop {
            self.synchronize(Instant::now());
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::eviction::{Signal, Threshold, ThresholdValue};

    #[test]
    fn critical_pods_as_the_kubelet() {
        let pod = |v: serde_json::Value| -> Pod { serde_json::from_value(v).unwrap() };
        let cases = [
            (serde_json::json!({}), false),
            (
                serde_json::json!({"metadata": {"annotations": {"kubernetes.io/config.source": "file"}}}),
                true,
            ),
            (
                serde_json::json!({"metadata": {"annotations": {"kubernetes.io/config.source": "api"}}}),
                false,
            ),
            (
                serde_json::json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}}}),
                true,
            ),
            (
                serde_json::json!({"spec": {"containers": [], "priority": 2_000_000_000}}),
                true,
            ),
            (
                serde_json::json!({"spec": {"containers": [], "priority": 1_999_999_999}}),
                false,
            ),
        ];
        for (p, want) in cases {
            assert_eq!(is_critical(&pod(p.clone())), want, "{p}");
        }
    }

    #[test]
    fn publishes_conditions_from_the_latest_summary() {
        let stats = StatsProvider::new();
        let config = EvictionConfig {
            thresholds: vec![Threshold {
                signal: Signal::NodeFsAvailable,
                value: ThresholdValue::Percentage(0.5),
                grace_period: Duration::ZERO,
                min_reclaim: None,
            }],
            pressure_transition_period: Duration::from_secs(300),
            max_pod_grace_period: 0,
        };
        let (mut m, rx) = Manager::new(config, stats.clone());
        let t0 = Instant::now();
        m.synchronize(t0);
        assert!(rx.borrow().is_empty(), "no stats: no pressure");
        let summary = |free: u64| {
            serde_json::from_value(serde_json::json!({
                "node": {"nodeName": "n", "startTime": "2026-12-02T20:00:00Z",
                    "fs": {"time": "2026-12-02T20:00:00Z", "availableBytes": free,
                           "capacityBytes": 100}},
                "pods": []
            }))
            .unwrap()
        };
        stats.publish(summary(40));
        m.synchronize(t0 + Duration::from_secs(10));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow(), Conditions::from([Condition::DiskPressure]));
        stats.publish(summary(60));
        m.synchronize(t0 + Duration::from_secs(20));
        assert_eq!(*rx.borrow(), Conditions::from([Condition::DiskPressure]));
        m.synchronize(t0 + Duration::from_secs(310));
        assert!(rx.borrow().is_empty());
    }
}
