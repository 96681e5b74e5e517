//! Garbage collection, as the kubelet's: dead containers and sandboxes every
//! [`CONTAINER_GC_PERIOD`] (`kuberuntime_gc.go`), unused images every [`IMAGE_GC_PERIOD`]
//! (`image_gc_manager.go`).
//!
//! The periods are the kubelet's constants, not configuration; `BOSUN_CONTAINER_GC_PERIOD` and
//! `BOSUN_IMAGE_GC_PERIOD` (Go durations) shorten them for tests only.

pub mod container;
pub mod container_policy;
pub mod image;
pub mod image_policy;

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::events::{EventType, Recorder};

/// The kubelet's `ContainerGCPeriod`.
pub const CONTAINER_GC_PERIOD: Duration = Duration::from_secs(60);

/// The kubelet's `ImageGCPeriod`.
pub const IMAGE_GC_PERIOD: Duration = Duration::from_secs(300);

/// `default`, or the Go duration in environment variable `var` (tests shorten periods with it).
pub fn period_from_env(var: &str, default: Duration) -> Duration {
    std::env::var(var)
        .ok()
        .and_then(|v| crate::config::duration::parse(&v).ok())
        .filter(|d| !d.is_zero())
        .unwrap_or(default)
}

/// The next node-level reclaim request, never when there is no channel (or it closed).
async fn next_reclaim(rx: &mut Option<ReclaimRx>) -> crate::eviction::ReclaimDone {
    loop {
        match rx.as_mut() {
            Some(r) => match r.recv().await {
                Some(done) => return done,
                None => *rx = None,
            },
            None => std::future::pending::<()>().await,
        }
    }
}

/// Where the eviction manager's node-level reclaim requests arrive.
pub type ReclaimRx = mpsc::Receiver<crate::eviction::ReclaimDone>;

/// Runs container GC at once and then every `period` until cancelled (the kubelet's
/// `StartGarbageCollection`): a failure is logged and reported as a ContainerGCFailed event on
/// the node; the first success after a failure is logged at info. A request on `reclaim` (the
/// eviction manager's DeleteAllUnusedContainers) runs a collection at once, terminated pods'
/// containers and sandboxes included (the kubelet's evictNonDeletedPods), and is answered.
pub async fn run_containers(
    gc: container::ContainerGc,
    period: Duration,
    events: Recorder,
    node_name: String,
    mut reclaim: Option<ReclaimRx>,
    cancel: CancellationToken,
) {
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failed = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick() => {}
            done = next_reclaim(&mut reclaim) => {
                if let Err(e) = gc.collect(true).await {
                    warn!(error = %e, "Eviction manager: unexpected error when attempting to reduce resource pressure by removing dead containers");
                }
                let _ = done.send(());
                continue;
            }
        }
        match gc.collect(false).await {
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

/// Runs image GC at once and then every `period` until cancelled, as the kubelet's
/// `StartGarbageCollection`: not at all when the high threshold is 100 and there is no maximum
/// age; a failure is logged, and an ImageGCFailed event is recorded when it fails again in a row.
/// A request on `reclaim` (the eviction manager's DeleteUnusedImages) removes every unused image
/// at once and is answered, whatever the thresholds.
pub async fn run_images(
    mut gc: image::ImageGc,
    period: Duration,
    mut reclaim: Option<ReclaimRx>,
    cancel: CancellationToken,
) {
    let periodic = !(gc.policy.high_threshold_percent >= 100 && gc.policy.max_age.is_none());
    if !periodic {
        info!(
            "ImageGCHighThresholdPercent is set 100 and ImageMaximumGCAge is 0, Disable image GC"
        );
    }
    let began = std::time::SystemTime::now();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failed = false;
    loop {
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tick.tick(), if periodic => {}
            done = next_reclaim(&mut reclaim) => {
                match gc.delete_unused().await {
                    Ok(freed) => info!(freed, "Eviction manager: unused images removed to reduce resource pressure"),
                    Err(e) => warn!(error = %e, "Eviction manager: unexpected error when attempting to reduce resource pressure by removing unused images"),
                }
                let _ = done.send(());
                continue;
            }
        }
        match gc.collect(began).await {
            Err(e) if failed => {
                error!(error = %e, "Image garbage collection failed multiple times in a row");
                gc.events.node(
                    &gc.node_name,
                    EventType::Warning,
                    "ImageGCFailed",
                    e.to_string(),
                );
            }
            Err(e) => {
                error!(error = %e, "Image garbage collection failed once. Stats initialization may not have completed yet");
                failed = true;
            }
            Ok(()) if failed => {
                info!("Image garbage collection succeeded");
                failed = false;
            }
            Ok(()) => debug!("Image garbage collection succeeded"),
        }
    }
}
