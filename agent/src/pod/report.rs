//! The pod's status from what the runtime holds, handed to the status store.

use std::collections::HashMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{
    ContainerStatus, Pod, PodCondition, PodStatus, ResourceRequirements,
};
use tracing::info;

use super::allocation::Allocations;
use super::context::NodeContext;
use super::observe::Observed;
use super::runtime::PodRuntime;
use crate::status::{ProbeStatus, StatusInput, Waiting, compute};

/// The status message of a pod past its activeDeadlineSeconds.
pub const DEADLINE_MESSAGE: &str = "Pod was active on the node longer than the specified deadline";

/// Why a pod was stopped for good by the node: its status is Failed with this reason and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Terminal {
    /// The status reason (`DeadlineExceeded`, `Evicted`).
    pub reason: &'static str,
    /// The status message.
    pub message: String,
    /// True when the status also carries the DisruptionTarget condition (reason
    /// TerminationByKubelet), as the kubelet adds for an eviction.
    pub disruption_target: bool,
}

impl Terminal {
    /// A pod past its activeDeadlineSeconds.
    pub fn deadline() -> Terminal {
        Terminal {
            reason: "DeadlineExceeded",
            message: DEADLINE_MESSAGE.to_string(),
            disruption_target: false,
        }
    }
}

/// Computes the pod's status from `obs` (its IPs `ips`, the Waiting reasons of containers that
/// did not start, the probe results of running ones; Failed as `terminal` says when given),
/// stores it, logs a phase change, and returns it.
pub fn report_status(
    ctx: &NodeContext<impl PodRuntime>,
    pod: &Arc<Pod>,
    obs: &Observed,
    ips: &[String],
    waiting: &HashMap<String, Waiting>,
    probes: &HashMap<String, ProbeStatus>,
    terminal: Option<&Terminal>,
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
        runtime_name: ctx.cri.runtime_name(),
        now: crate::status::compute::now(),
        terminal: terminal.map(|t| ("Failed", t.reason, t.message.as_str())),
        probes,
    };
    let mut status = compute(&input);
    if let Some(t) = terminal.filter(|t| t.disruption_target) {
        add_disruption_target(&mut status, previous.as_ref(), pod, &t.message, &input.now);
    }
    add_resize_status(&ctx.allocations, pod, &mut status);
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

/// The in-place resize part of the status, as the kubelet's (InPlacePodVerticalScaling, GA):
/// each container's allocatedResources (its allocated requests) and resources (what it runs
/// with while running, its allocation otherwise), and the PodResizePending / PodResizeInProgress
/// conditions, cleared once the pod is terminal. `pod` is the pod as allocated.
fn add_resize_status(allocations: &Allocations, pod: &Pod, status: &mut PodStatus) {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        allocations.clear_pending(uid);
        allocations.clear_in_progress(uid);
    } else {
        let conditions = allocations.conditions(uid).to_pod_conditions();
        if !conditions.is_empty() {
            status
                .conditions
                .get_or_insert_with(Vec::new)
                .extend(conditions);
        }
    }
    let Some(spec) = pod.spec.as_ref() else {
        return;
    };
    let spec_of = |name: &str| -> Option<Option<ResourceRequirements>> {
        let listed = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == name)
            .map(|c| c.resources.clone());
        // Ephemeral containers have no resources: their status says so.
        listed.or_else(|| {
            spec.ephemeral_containers
                .iter()
                .flatten()
                .any(|c| c.name == name)
                .then_some(None)
        })
    };
    let fill = |st: &mut ContainerStatus| {
        let Some(allocated) = spec_of(&st.name) else {
            return;
        };
        let allocated = allocated.unwrap_or_default();
        st.allocated_resources = allocated.requests.clone();
        let mut resources = allocated;
        let running = st.state.as_ref().is_some_and(|s| s.running.is_some());
        let id = st
            .container_id
            .as_deref()
            .and_then(|id| id.split_once("://"))
            .map(|(_, id)| id);
        if let Some(actual) = id
            .filter(|_| running)
            .and_then(|id| allocations.actuated(uid, &st.name, id))
        {
            for (list, from) in [
                (&mut resources.limits, &actual.limits),
                (&mut resources.requests, &actual.requests),
            ] {
                let (Some(list), Some(from)) = (list.as_mut(), from.as_ref()) else {
                    continue;
                };
                for key in ["cpu", "memory"] {
                    if let Some(q) = from.get(key) {
                        list.insert(key.to_string(), q.clone());
                    }
                }
            }
        }
        st.resources = Some(resources);
    };
    for list in [
        &mut status.container_statuses,
        &mut status.init_container_statuses,
        &mut status.ephemeral_container_statuses,
    ] {
        list.iter_mut().flatten().for_each(fill);
    }
}

/// Adds the DisruptionTarget condition the kubelet sets on a pod it stops for good (status True,
/// reason TerminationByKubelet, the eviction's message), keeping its first transition time.
fn add_disruption_target(
    status: &mut PodStatus,
    previous: Option<&PodStatus>,
    pod: &Pod,
    message: &str,
    now: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
) {
    const TYPE: &str = "DisruptionTarget";
    let since = previous
        .and_then(|p| p.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == TYPE && c.status == "True"))
        .and_then(|c| c.last_transition_time.clone());
    let condition = PodCondition {
        type_: TYPE.into(),
        status: "True".into(),
        reason: Some("TerminationByKubelet".into()),
        message: Some(message.into()),
        last_transition_time: Some(since.unwrap_or_else(|| now.clone())),
        observed_generation: pod.metadata.generation,
        ..Default::default()
    };
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    conditions.retain(|c| c.type_ != TYPE);
    conditions.push(condition);
}
