//! Running a pod's sandbox with the CRI handler of its RuntimeClass, and reading the IPs the
//! runtime gave it.

use std::time::Instant;

use bosun_cri::CriClient;
use k8s_openapi::api::core::v1::Pod;
use tracing::{info, warn};

use super::context::NodeContext;
use super::runtime_class::RuntimeClasses;
use crate::events::EventType;
use crate::runtime::sandbox::{PodKey, sandbox_config};

/// Runs sandbox `attempt` of `pod` (its log directory made first); a failure is logged and
/// recorded as a FailedCreatePodSandBox event, and the next sync tries again.
pub async fn run_sandbox(ctx: &NodeContext, classes: &RuntimeClasses, pod: &Pod, attempt: u32) {
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

/// The IPs the runtime gave sandbox `id` (primary first); none when it cannot say.
pub async fn sandbox_ips(cri: &CriClient, id: &str) -> Vec<String> {
    let Ok(resp) = cri.pod_sandbox_status(id, false).await else {
        return vec![];
    };
    let net = resp.status.and_then(|s| s.network).unwrap_or_default();
    std::iter::once(net.ip)
        .chain(net.additional_ips.into_iter().map(|i| i.ip))
        .filter(|i| !i.is_empty())
        .collect()
}
