//! The pod's status from what the runtime holds, handed to the status store.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use tracing::info;

use super::context::NodeContext;
use super::observe::Observed;
use crate::status::{ProbeStatus, StatusInput, Waiting, compute};

/// The status message of a pod past its activeDeadlineSeconds.
pub const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// Computes the pod's status from `obs` (its IPs `ips`, the Waiting reasons of containers that
/// did not start, the probe results of running ones; Failed with DeadlineExceeded and `deadline` as message when given), stores it,
/// logs a phase change, and returns it.
pub fn report_status(
    ctx: &NodeContext,
    pod: &Pod,
    obs: &Observed,
    ips: &[String],
    waiting: &HashMap<String, Waiting>,
    probes: &HashMap<String, ProbeStatus>,
    deadline: Option<&str>,
) -> PodStatus {
    let previous = ctx.statuses.previous(pod);
    let input = StatusInput {
        pod,
        previous: previous.as_ref(),
        sandbox_ready: obs.sandbox.as_ref().is_some_and(|s| s.ready),
        pod_ips: ips,
        host_ip: &ctx.host_ip,
        containers: &obs.containers,
        sandbox_id: obs.sandbox.as_ref().map(|s| s.id.as_str()),
        waiting,
        runtime_name: &ctx.cri.runtime_version().runtime_name,
        now: crate::status::compute::now(),
        terminal: deadline.map(|m| ("Failed", "DeadlineExceeded", m)),
        probes,
    };
    let status = compute(&input);
    let old_phase = previous.as_ref().and_then(|p| p.phase.clone());
    if ctx.statuses.set(pod, status.clone()) && old_phase != status.phase {
        info!(
            phase = status.phase.as_deref().unwrap_or_default(),
            pod.ip = status.pod_ip.as_deref().unwrap_or_default(),
            "pod phase"
        );
    }
    status
}
