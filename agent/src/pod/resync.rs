//! When a pod worker syncs again with no runtime event, pod update or probe result to wake it:
//! the kubelet's pod worker requeue (podWorkers.completeWork). A settled pod waits
//! syncFrequency stretched by up to half; one still getting somewhere (a container waiting, a
//! sync that failed) the kubelet's backOffPeriod; neither past the pod's activeDeadlineSeconds.

use std::time::Duration;

use k8s_openapi::api::core::v1::PodStatus;

/// The kubelet's backOffPeriod: how soon a pod that is not settled is synced again.
pub const UNSETTLED: Duration = Duration::from_secs(10);

/// The kubelet's workerResyncIntervalJitterFactor.
const JITTER: f64 = 0.5;

/// True when nothing about the pod waits on a retry: its phase is Running, Succeeded or Failed
/// and no container (init, app, ephemeral) is waiting.
pub fn settled(status: &PodStatus) -> bool {
    let phase_settled = matches!(
        status.phase.as_deref(),
        Some("Running" | "Succeeded" | "Failed")
    );
    let waiting = [
        &status.init_container_statuses,
        &status.container_statuses,
        &status.ephemeral_container_statuses,
    ]
    .into_iter()
    .flatten()
    .flatten()
    .any(|c| c.state.as_ref().is_some_and(|s| s.waiting.is_some()));
    phase_settled && !waiting
}

/// The wait before the next periodic sync: `sync_frequency` stretched by `draw` (in [0, 1)) times
/// half of it when `settled`, else [`UNSETTLED`]; no later than `deadline_in`, the time left
/// before the pod's activeDeadlineSeconds (a second's slack: the deadline counts whole seconds).
pub fn delay(
    settled: bool,
    sync_frequency: Duration,
    draw: f64,
    deadline_in: Option<Duration>,
) -> Duration {
    let base = if settled {
        sync_frequency.mul_f64(1.0 + JITTER * draw.clamp(0.0, 1.0))
    } else {
        UNSETTLED
    };
    match deadline_in {
        Some(left) => base.min(left + Duration::from_secs(1)),
        None => base,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(phase: &str, waiting: bool) -> PodStatus {
        let state = if waiting {
            serde_json::json!({"waiting": {"reason": "CrashLoopBackOff"}})
        } else {
            serde_json::json!({"running": {}})
        };
        serde_json::from_value(serde_json::json!({
            "phase": phase,
            "initContainerStatuses": [{"name": "i", "image": "b", "imageID": "", "ready": false,
                "restartCount": 0, "state": {"terminated": {"exitCode": 0}}}],
            "containerStatuses": [{"name": "c", "image": "b", "imageID": "", "ready": true,
                "restartCount": 0, "state": state}],
        }))
        .expect("status")
    }

    #[test]
    fn settled_means_a_final_or_running_phase_and_nothing_waiting() {
        assert!(settled(&status("Running", false)));
        assert!(settled(&status("Succeeded", false)));
        assert!(!settled(&status("Running", true)));
        assert!(!settled(&status("Pending", false)));
        assert!(!settled(&PodStatus::default()));
    }

    #[test]
    fn settled_pods_wait_sync_frequency_with_jitter_others_the_back_off_period() {
        let minute = Duration::from_secs(60);
        assert_eq!(delay(true, minute, 0.0, None), minute);
        assert_eq!(delay(true, minute, 0.5, None), Duration::from_secs(75));
        assert_eq!(delay(true, minute, 7.0, None), Duration::from_secs(90));
        assert_eq!(delay(false, minute, 0.9, None), UNSETTLED);
    }

    #[test]
    fn never_past_the_active_deadline() {
        let minute = Duration::from_secs(60);
        let left = Some(Duration::from_secs(4));
        assert_eq!(delay(true, minute, 0.0, left), Duration::from_secs(5));
        assert_eq!(delay(false, minute, 0.0, left), Duration::from_secs(5));
        assert_eq!(
            delay(false, minute, 0.0, Some(Duration::from_secs(30))),
            UNSETTLED
        );
    }
}
