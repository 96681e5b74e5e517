//! Stopping a pod for good, as the kubelet does for an eviction (its killPodNow) and for a pod
//! past its activeDeadlineSeconds: every container stopped, the volumes torn down, the status
//! Failed with the reason. The eviction comes from the eviction manager (or the node shutdown
//! manager) through the worker's [`super::worker::WorkerHandle::evict`].

use tokio::sync::oneshot;
use tracing::warn;

use super::observe::Observed;
use super::plan::past_active_deadline;
use super::report::Terminal;
use super::runtime::PodRuntime;
use super::teardown;
use super::worker::PodWorker;
use crate::events::EventType;
use crate::eviction::plan::{EVICTED, Eviction};
use crate::volume;

impl<R: PodRuntime> PodWorker<R> {
    /// The eviction the manager handed over, if any.
    pub(super) fn take_eviction(&self) -> Option<(Eviction, oneshot::Sender<bool>)> {
        self.evict.lock().ok()?.take()
    }

    /// Evicts the pod as the kubelet's eviction manager does: a Warning Evicted event with the
    /// message, every container stopped within the eviction's grace period, the status Failed
    /// with reason Evicted and the DisruptionTarget condition; `done` answered once stopped. The
    /// node shutdown manager's kill is the same without the event, with reason Terminated.
    pub(super) async fn evict(
        &mut self,
        obs: &Observed,
        eviction: Eviction,
        done: oneshot::Sender<bool>,
    ) -> bosun_cri::Result<()> {
        if self.terminal.is_some() {
            // Already stopped for good: nothing to evict.
            let _ = done.send(false);
            return self.stop_for_good(obs).await;
        }
        warn!(
            grace_seconds = eviction.grace_seconds,
            reason = eviction.reason,
            "stopping the pod for good: {}",
            eviction.message
        );
        if eviction.reason == EVICTED {
            self.ctx.events.pod_annotated(
                &self.pod,
                None,
                eviction.annotations.clone(),
                EventType::Warning,
                EVICTED,
                eviction.message.clone(),
            );
        }
        self.terminal = Some(Terminal {
            reason: eviction.reason,
            message: eviction.message,
            disruption_target: eviction.disruption_target,
        });
        let grace = Some(eviction.grace_seconds);
        if obs.anything_running() {
            teardown::kill(&self.ctx, &self.pod, obs, &self.sandbox_ips, grace).await;
        }
        let result = self.stop_for_good(obs).await;
        let _ = done.send(true);
        result
    }

    /// The pod is stopped for good (past its deadline, evicted): whatever still runs is
    /// stopped, its volumes torn down (the kubelet unmounts a terminated pod's volumes), and its
    /// status reported Failed with the reason.
    pub(super) async fn stop_for_good(&mut self, obs: &Observed) -> bosun_cri::Result<()> {
        if obs.anything_running() {
            teardown::kill(&self.ctx, &self.pod, obs, &self.sandbox_ips, None).await;
        }
        if self.volume_paths.take().is_some() {
            let dir = self.ctx.dirs.pod_dir(&self.key().uid).join("volumes");
            if let Err(e) = teardown::tear_down_csi(&self.ctx, &self.key().uid).await {
                warn!(error = %e, "CSI volumes of a stopped pod not torn down");
            } else if let Err(e) = volume::tear_down(&dir) {
                warn!(error = %e, "cannot tear down the volumes of a stopped pod");
            }
        }
        let obs = self.observe().await?;
        self.update_status(&obs).await;
        Ok(())
    }

    /// True when the pod has run longer than spec.activeDeadlineSeconds since its startTime.
    pub(super) fn past_active_deadline(&self) -> bool {
        let start = self
            .ctx
            .statuses
            .previous(&self.pod)
            .and_then(|s| s.start_time);
        let now = crate::status::compute::now();
        past_active_deadline(&self.pod, start.map(|t| t.0.as_second()), now.0.as_second())
    }

    /// Time left before spec.activeDeadlineSeconds (from the startTime), for a pod with a
    /// deadline and a start not stopped for good yet.
    pub(super) fn until_active_deadline(&self) -> Option<std::time::Duration> {
        if self.terminal.is_some() {
            return None;
        }
        let deadline = self.pod.spec.as_ref()?.active_deadline_seconds?;
        let start = self.ctx.statuses.previous(&self.pod)?.start_time?;
        let ran = crate::status::compute::now().0.as_second() - start.0.as_second();
        Some(std::time::Duration::from_secs(
            deadline.saturating_sub(ran).max(0) as u64,
        ))
    }
}
