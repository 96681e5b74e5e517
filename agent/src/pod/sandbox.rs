//! Running a pod's sandbox with the CRI handler of its RuntimeClass, and reading the IPs the
//! runtime gave it.

use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use tracing::{info, warn};

use super::context::NodeContext;
use super::runtime::PodRuntime;
use super::runtime_class::RuntimeClasses;
use crate::events::EventType;
use crate::runtime::sandbox::{PodKey, sandbox_config};

/// Runs sandbox `attempt` of `pod` (its log directory made first); a failure is logged and
/// recorded as a FailedCreatePodSandBox event, and the next sync tries again.
pub async fn run_sandbox(
    ctx: &NodeContext<impl PodRuntime>,
    classes: &RuntimeClasses,
    pod: &Pod,
    attempt: u32,
) {
    let key = PodKey::of(pod);
    let dirs = &ctx.dirs;
    if let Err(e) = std::fs::create_dir_all(dirs.pod_log_dir(&key.namespace, &key.name, &key.uid)) {
        warn!(error = %e, "cannot create the pod log directory");
    }
    let failed = |e: &dyn std::fmt::Display| {
        let msg = format!("Failed to create pod sandbox: {e}");
        ctx.events
            .pod(pod, None, EventType::Warning, "FailedCreatePodSandBox", msg);
    };
    let config = match sandbox_config(pod, attempt, dirs) {
        Ok(c) => c,
        Err(e) => {
            warn!(error = %e, "FailedCreatePodSandBox: failed to generate sandbox config");
            return failed(&e);
        }
    };
    let class = pod
        .spec
        .as_ref()
        .and_then(|s| s.runtime_class_name.as_deref());
    let handler = match classes.handler(class).await {
        Ok(h) => h,
        Err(e) => {
            warn!("FailedCreatePodSandBox: {e}");
            return failed(&e);
        }
    };
    if let Err(e) = check_user_namespace(ctx, pod, &handler).await {
        warn!("FailedCreatePodSandBox: {e}");
        return failed(&e);
    }
    let started = Instant::now();
    match ctx.cri.run_pod_sandbox(config, &handler).await {
        Ok(id) => {
            info!(sandbox.id = %id, attempt, runtime.handler = %handler, elapsed_ms = started.elapsed().as_millis() as u64, "sandbox running")
        }
        Err(e) => {
            warn!(error = %e, "FailedCreatePodSandBox: failed to create pod sandbox");
            failed(&e);
        }
    }
}

/// `hostUsers: false` needs a runtime handler that supports user namespaces (CRI Status
/// runtime_handlers, as the kubelet's userns manager asks); a pod asking for one never runs in
/// the host's user namespace. Bosun does not allocate user namespace mappings yet, so a pod
/// asking for one is refused on every runtime, with the kubelet's message where the runtime
/// lacks support and a message naming the missing piece where it has it.
async fn check_user_namespace(
    ctx: &NodeContext<impl PodRuntime>,
    pod: &Pod,
    handler: &str,
) -> Result<(), String> {
    if pod.spec.as_ref().and_then(|s| s.host_users) != Some(false) {
        return Ok(());
    }
    let supported = ctx.cri.status().await.is_ok_and(|s| {
        s.runtime_handlers
            .iter()
            .any(|h| h.name == handler && h.features.as_ref().is_some_and(|f| f.user_namespaces))
    });
    if !supported {
        return Err(match handler {
            "" => {
                "can't set `spec.hostUsers: false`, runtime does not support user namespaces".into()
            }
            h => format!(
                "can't set `spec.hostUsers: false`, RuntimeClass handler {h:?} does not support user namespaces"
            ),
        });
    }
    Err(
        "can't set `spec.hostUsers: false`: bosun does not allocate user namespace mappings yet"
            .into(),
    )
}

/// The IPs the runtime gave sandbox `id` (primary first); none when it cannot say.
pub async fn sandbox_ips(cri: &impl PodRuntime, id: &str) -> Vec<String> {
    let Ok(status) = cri.pod_sandbox_status(id).await else {
        return vec![];
    };
    let net = status.and_then(|s| s.network).unwrap_or_default();
    std::iter::once(net.ip)
        .chain(net.additional_ips.into_iter().map(|i| i.ip))
        .filter(|i| !i.is_empty())
        .collect()
}
