//! Garbage collection, as the kubelet's: dead containers and sandboxes every
//! [`CONTAINER_GC_PERIOD`] (`kuberuntime_gc.go`).
//!
//! The periods are the kubelet's constants, not configuration; `BOSUN_CONTAINER_GC_PERIOD` and
//! `BOSUN_IMAGE_GC_PERIOD` (Go durations) shorten them for tests only.

pub mod container;
pub mod container_policy;

use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info};

use crate::events::{EventType, Recorder};

/// The kubelet's `ContainerGCPeriod`.
pub const CONTAINER_GC_PERIOD: Duration = Duration::from_secs(60);

/// `default`, or the Go duration in environment variable `var` (tests shorten periods with it).
pub fn period_from_env(var: &str, default: Duration) -> Duration {
    std::env::var(var)
        .ok()
        .and_then(|v| crate::config::duration::parse(&v).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(default)
}

/// Runs container GC at once and then every `period` until cancelled (the kubelet's
/// `StartGarbageCollection`): a failure is logged and reported as a ContainerGCFailed event on
/// the node; the first success after a failure is logged at info.
pub async fn run_containers(
    gc: container::ContainerGc,
    period: Duration,
    events: Recorder,
    node_name: String,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failed = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        match gc.collect().await {
            Err(e) => {
                error!(error = %e, "Container garbage collection failed");
                events.node(
                    &node_name,
                    EventType::Warning,
                    "ContainerGCFailed",
                    e.to_string(),
                );
                failed = true;
            }
            Ok(()) if failed => {
                info!("Container garbage collection succeeded");
                failed = false;
            }
            Ok(()) => debug!("Container garbage collection succeeded"),
        }
    }
}
