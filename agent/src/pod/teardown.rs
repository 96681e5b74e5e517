//! Stopping a pod, step by step as the kubelet's killPod: each container's preStop hook within
//! the grace period, sidecars after the containers they serve, the stop with what is left, the
//! sandboxes; then, when the pod is gone for good, its sandboxes, cgroup, directories and logs
//! removed and its graceful deletion in the API finished.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use tracing::{info, warn};

use super::context::NodeContext;
use super::lifecycle::{self, HookError};
use super::observe::Observed;
use super::ordering::TerminationOrdering;
use super::plan::{ContainerView, RunState, container_spec};
use super::runtime::PodRuntime;
use crate::events::EventType;
use crate::runtime::sandbox::PodKey;
use crate::volume;

/// The least a stop gets after the preStop hook, bounded by the grace period (the kubelet's
/// minimumGracePeriodInSeconds).
const MIN_STOP: Duration = Duration::from_secs(2);

/// The grace period of a stop: `grace` when given, else the deletion's, else the pod's
/// terminationGracePeriodSeconds, else 30 s.
pub fn grace_period(pod: &Pod, grace: Option<i64>) -> Duration {
    let g = grace
        .or(pod.metadata.deletion_grace_period_seconds)
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.termination_grace_period_seconds)
        })
        .unwrap_or(30);
    Duration::from_secs(g.max(0) as u64)
}

/// The kubelet's LifecycleHTTPFallback event: an HTTPS hook answered in plain HTTP.
pub fn http_fallback_event(
    ctx: &NodeContext<impl PodRuntime>,
    pod: &Pod,
    run: &lifecycle::HookRun,
) {
    if let Some(host) = &run.http_fallback {
        let msg = format!(
            "request to HTTPS lifecycle hook {host} got HTTP response, retry with HTTP succeeded"
        );
        let reason = "LifecycleHTTPFallback";
        ctx.events.pod(pod, None, EventType::Warning, reason, msg);
    }
}

/// Runs the container's preStop hook (exec, HTTP with `pod_ip`, or sleep) within `budget`;
/// returns the time it took.
pub async fn pre_stop(
    ctx: &NodeContext<impl PodRuntime>,
    pod: &Pod,
    c: &ContainerView,
    pod_ip: &str,
    budget: Duration,
) -> Duration {
    let started = Instant::now();
    let Some(spec) =
        container_spec(pod, &c.name, false).or_else(|| container_spec(pod, &c.name, true))
    else {
        return Duration::ZERO;
    };
    let Some(hook) = spec.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else {
        return Duration::ZERO;
    };
    match lifecycle::run(&ctx.cri, &c.id, spec, pod_ip, hook, budget).await {
        Ok(run) => http_fallback_event(ctx, pod, &run),
        // As the kubelet: a hook cut short by the grace period is only logged.
        Err(e @ HookError::TimedOut(_)) => {
            info!(container.name = %c.name, "PreStop hook not completed in grace period: {e}")
        }
        Err(HookError::Failed(msg)) => {
            warn!(container.name = %c.name, "FailedPreStopHook: {msg}");
            let name = Some(c.name.as_str());
            ctx.events
                .pod(pod, name, EventType::Warning, "FailedPreStopHook", msg);
        }
    }
    started.elapsed()
}

/// Stops one running container: its preStop hook, then the stop with what is left of the grace
/// period (`grace` when given, as a failed probe's own; else the pod's): the kill after a failed
/// postStart hook or a failed liveness or startup probe.
pub async fn stop_container(
    ctx: &NodeContext<impl PodRuntime>,
    pod: &Pod,
    c: &ContainerView,
    pod_ip: &str,
    grace: Option<i64>,
) {
    let grace = grace_period(pod, grace);
    let left = grace.saturating_sub(pre_stop(ctx, pod, c, pod_ip, grace).await);
    let left = left.max(MIN_STOP.min(grace));
    if let Err(e) = ctx.cri.stop_container(&c.id, left).await
        && !e.is_not_found()
    {
        warn!(container.id = %c.id, error = %e, "stop container failed");
    }
}

/// Stops every live container (in parallel, within the grace period, sidecars last) and then
/// the ready sandboxes; `sandbox_ips` gives HTTP preStop hooks their pod IP.
pub async fn kill(
    ctx: &NodeContext<impl PodRuntime>,
    pod: &Pod,
    obs: &Observed,
    sandbox_ips: &HashMap<String, Vec<String>>,
    grace: Option<i64>,
) {
    let grace = grace_period(pod, grace);
    let live: Vec<&ContainerView> = obs
        .containers
        .iter()
        .filter(|c| {
            matches!(
                c.state,
                RunState::Running | RunState::Created | RunState::Unknown
            )
        })
        .collect();
    let ordering = TerminationOrdering::new(pod, live.iter().map(|c| c.name.clone()));
    let ordering = &ordering;
    let stops = live.into_iter().map(|c| async move {
        info!(container.name = %c.name, "Killing: stopping container {}", c.name);
        let msg = format!("Stopping container {}", c.name);
        ctx.events
            .pod(pod, Some(&c.name), EventType::Normal, "Killing", msg);
        // preStop runs first, within the grace period; sidecars then wait for the app
        // containers and later sidecars; stop gets what is left (min 2 s, as the kubelet).
        let mut left = grace;
        if c.state == RunState::Running {
            let pod_ip = sandbox_ips
                .get(&c.sandbox_id)
                .and_then(|ips| ips.first())
                .map(String::as_str)
                .unwrap_or_default();
            left = left.saturating_sub(pre_stop(ctx, pod, c, pod_ip, left).await);
        }
        left = left.saturating_sub(ordering.wait_for_turn(&c.name, left).await);
        let left = left.max(MIN_STOP.min(grace));
        if let Err(e) = ctx.cri.stop_container(&c.id, left).await
            && !e.is_not_found()
        {
            warn!(container.name = %c.name, error = %e, "stop container failed");
        }
        ordering.terminated(&c.name);
    });
    futures::future::join_all(stops).await;
    for (id, ready) in &obs.sandbox_ids {
        if *ready
            && let Err(e) = ctx.cri.stop_pod_sandbox(id).await
            && !e.is_not_found()
        {
            warn!(sandbox.id = %id, error = %e, "stop sandbox failed");
        }
    }
}

/// Removes what is left of a stopped pod: its sandboxes (with their containers), its cgroup,
/// its directory and logs, its status; then, for a pod deleted in the API, finishes the
/// graceful deletion as the kubelet does.
pub async fn remove(ctx: &NodeContext<impl PodRuntime>, pod: &Pod, obs: &Observed) {
    let key = PodKey::of(pod);
    for (id, _) in &obs.sandbox_ids {
        if let Err(e) = ctx.cri.remove_pod_sandbox(id).await
            && !e.is_not_found()
        {
            warn!(sandbox.id = %id, error = %e, "remove sandbox failed");
        }
    }
    if let Err(e) = ctx.cgroups.remove_pod(pod).await {
        warn!(error = %e, "cannot remove the pod cgroup; orphan cleanup retries");
    }
    let dirs = &ctx.dirs;
    if let Err(e) = tear_down_csi(ctx, &key.uid).await {
        warn!(error = %e, "CSI volumes not torn down: the pod directory stays");
    } else if let Err(e) = volume::tear_down(&dirs.pod_dir(&key.uid)) {
        warn!(error = %e, "cannot remove the pod directory");
    }
    let _ = std::fs::remove_dir_all(dirs.pod_log_dir(&key.namespace, &key.name, &key.uid));
    let prefix = format!("{}_{}_", key.name, key.namespace);
    if let Ok(entries) = std::fs::read_dir(&dirs.container_logs_link_dir) {
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    ctx.statuses.remove(&key.uid);
    if let (Some(client), Some(_)) = (&ctx.api, &pod.metadata.deletion_timestamp) {
        finish_deletion(client, &key).await;
    }
}

/// Unpublishes (and unstages when unused) the pod's CSI volumes, once its containers are gone;
/// a driver that fails or is not registered is retried for up to a minute (a driver restarting
/// comes back within it).
pub async fn tear_down_csi(ctx: &NodeContext<impl PodRuntime>, uid: &str) -> Result<(), String> {
    let dir = ctx.dirs.pod_dir(uid);
    let mut delay = Duration::from_millis(500);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match ctx.csi.tear_down(&ctx.dirs.root_dir, uid, &dir).await {
            Ok(()) => return Ok(()),
            Err(e) if Instant::now() + delay > deadline => return Err(e),
            Err(e) => {
                warn!(error = %e, "UnmountVolume failed; retrying in {delay:?}");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(8));
            }
        }
    }
}

/// Deletes the pod from the API with grace 0 (its UID as precondition): everything is stopped.
async fn finish_deletion(client: &kube::Client, key: &PodKey) {
    let api: kube::Api<Pod> = kube::Api::namespaced(client.clone(), &key.namespace);
    let dp = kube::api::DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(kube::api::Preconditions {
            uid: Some(key.uid.clone()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&key.name, &dp).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
        Err(e) => warn!(error = %e, "cannot delete the terminated pod from the API"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grace_period_precedence() {
        let pod = |deletion: Option<i64>, spec: Option<i64>| -> Pod {
            let mut p: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p"},
                "spec": {"containers": [], "terminationGracePeriodSeconds": spec},
            }))
            .unwrap();
            p.metadata.deletion_grace_period_seconds = deletion;
            p
        };
        let cases = [
            ("given wins", Some(3), pod(Some(5), Some(7)), 3),
            ("the deletion's", None, pod(Some(5), Some(7)), 5),
            ("the pod's", None, pod(None, Some(7)), 7),
            ("default", None, pod(None, None), 30),
            ("negative is zero", Some(-1), pod(None, None), 0),
        ];
        for (name, given, pod, want) in cases {
            assert_eq!(
                grace_period(&pod, given),
                Duration::from_secs(want),
                "{name}"
            );
        }
    }
}
