//! Memory threshold notification, as the kubelet's kernelMemcgNotification
//! (pkg/kubelet/eviction/memory_threshold_notifier*.go, threshold_notifier_linux.go): for each
//! memory.available and allocatableMemory.available threshold, the kernel is asked (cgroup v1
//! `cgroup.event_control` with an eventfd on `memory.usage_in_bytes`) to signal the moment usage
//! crosses the level at which the working set reaches the threshold, so pressure is acted on
//! between stats samples. The level moves with the page cache: it is set again from each sample,
//! at most every [`REFRESH`]. cgroup v2 has no such interface: there, as the kubelet, the
//! notifier is disabled and the samples alone drive eviction. No v2 replacement (memory.events,
//! PSI) is built, on purpose: the kubelet v1.37 has none either (threshold_notifier_linux.go
//! hands out a disabled notifier on v2), and Bosun's behaviour on v2 is the kubelet's.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::eventfd::{EfdFlags, EventFd};
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::config::eviction::{Signal, Threshold};
use crate::stats::summary::{MemoryStats, Summary};

/// How often the notifiers' levels are set again from the latest sample (the kubelet's
/// notifierRefreshInterval).
pub const REFRESH: Duration = Duration::from_secs(10);

/// The memory cgroup usage, in bytes, at which `threshold` is reached: capacity minus the
/// threshold plus the inactive page cache (usage minus working set), since the working set is
/// what the threshold is about and usage is what the kernel watches. `None` when the stats lack
/// a field.
pub fn usage_level(threshold: &Threshold, mem: &MemoryStats) -> Option<u64> {
    let (usage, ws, available) = (
        mem.usage_bytes?,
        mem.working_set_bytes?,
        mem.available_bytes?,
    );
    let capacity = available.saturating_add(ws);
    let inactive_file = usage.saturating_sub(ws);
    let threshold = u64::try_from(threshold.value.milli_of(capacity as i64) / 1000).unwrap_or(0);
    Some(
        capacity
            .saturating_sub(threshold)
            .saturating_add(inactive_file),
    )
}

/// The kubelet's description of a notifier ("hard allocatable memory eviction threshold").
pub fn describe(threshold: &Threshold) -> String {
    let hard = if threshold.is_hard() { "hard" } else { "soft" };
    let allocatable = if threshold.signal == Signal::AllocatableMemoryAvailable {
        "allocatable "
    } else {
        ""
    };
    format!("{hard} {allocatable}memory eviction threshold")
}

/// One registration with the kernel: its eventfd, watched by a task that wakes `crossed`.
/// Dropping it closes the eventfd, which ends the registration.
struct Armed {
    level: u64,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Armed {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One threshold's notifier: the memory cgroup it watches and its current registration.
struct ThresholdNotifier {
    threshold: Threshold,
    cgroup: PathBuf,
    armed: Option<Armed>,
}

/// The notifiers of every memory threshold; [`Notifiers::crossed`] wakes when one fires.
pub struct Notifiers {
    notifiers: Vec<ThresholdNotifier>,
    /// Each firing's notifier description; one waiting is enough (a round follows it).
    fired_tx: mpsc::Sender<String>,
    fired: mpsc::Receiver<String>,
    updated: Option<Instant>,
}

/// Registers `eventfd` with the cgroup at `dir` for usage crossing `level` bytes.
fn register(dir: &Path, eventfd: &EventFd, level: u64) -> std::io::Result<File> {
    let usage = File::open(dir.join("memory.usage_in_bytes"))?;
    let mut control = OpenOptions::new()
        .write(true)
        .open(dir.join("cgroup.event_control"))?;
    let line = format!("{} {} {level}", eventfd.as_raw_fd(), usage.as_raw_fd());
    control.write_all(line.as_bytes())?;
    Ok(usage)
}

impl Notifiers {
    /// Notifiers for the memory thresholds among `thresholds`: memory.available on the memory
    /// hierarchy's root `memory_root`, allocatableMemory.available on the pods cgroup
    /// `pods_cgroup` (a path within it). Empty when `v2` (no threshold interface there).
    pub fn new(
        thresholds: &[Threshold],
        memory_root: &Path,
        pods_cgroup: &str,
        v2: bool,
    ) -> Notifiers {
        let memory: Vec<&Threshold> = thresholds
            .iter()
            .filter(|t| {
                matches!(
                    t.signal,
                    Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable
                )
            })
            .collect();
        let notifiers = if v2 && !memory.is_empty() {
            info!(
                "eviction manager: cgroupv2 does not support monitoring cgroup memory thresholds using cgroup.event_control, disabling the memory threshold notifiers"
            );
            Vec::new()
        } else {
            memory
                .into_iter()
                .map(|t| ThresholdNotifier {
                    threshold: *t,
                    cgroup: match t.signal {
                        Signal::AllocatableMemoryAvailable => {
                            memory_root.join(pods_cgroup.trim_start_matches('/'))
                        }
                        _ => memory_root.to_path_buf(),
                    },
                    armed: None,
                })
                .collect()
        };
        for n in &notifiers {
            info!(notifier = %describe(&n.threshold), cgroup = %n.cgroup.display(),
                "Eviction manager: created memoryThresholdNotifier");
        }
        let (fired_tx, fired) = mpsc::channel(1);
        Notifiers {
            notifiers,
            fired_tx,
            fired,
            updated: None,
        }
    }

    /// True when there is nothing to watch.
    pub fn is_empty(&self) -> bool {
        self.notifiers.is_empty()
    }

    /// Resolves when a notifier fired; returns its description.
    pub async fn crossed(&mut self) -> String {
        match self.fired.recv().await {
            Some(d) => d,
            // Never: the sender lives in self.
            None => std::future::pending().await,
        }
    }

    /// Sets every notifier's level from `summary` when [`REFRESH`] has passed since the last
    /// time (or never was): a notifier whose level changed is registered again.
    pub fn update(&mut self, summary: &Summary, now: Instant) {
        if self.notifiers.is_empty()
            || self
                .updated
                .is_some_and(|t| now.saturating_duration_since(t) < REFRESH)
        {
            return;
        }
        self.updated = Some(now);
        for n in &mut self.notifiers {
            let what = describe(&n.threshold);
            let stats = super::signals::memory_stats(summary, n.threshold.signal);
            let Some(level) = stats.and_then(|m| usage_level(&n.threshold, m)) else {
                debug!(notifier = %what, "eviction manager: no memory stats to set the notifier from");
                continue;
            };
            if n.armed.as_ref().is_some_and(|a| a.level == level) {
                continue;
            }
            n.armed = None;
            match arm(&n.cgroup, level, self.fired_tx.clone(), what.clone()) {
                Ok(a) => {
                    debug!(notifier = %what, level, "eviction manager: setting notifier");
                    n.armed = Some(a);
                }
                Err(e) => {
                    warn!(notifier = %what, cgroup = %n.cgroup.display(), error = %e,
                        "Eviction manager: failed to update notifier")
                }
            }
        }
    }
}

/// Registers a new eventfd on `cgroup` at `level` and spawns the task that waits on it.
fn arm(
    cgroup: &Path,
    level: u64,
    fired: mpsc::Sender<String>,
    description: String,
) -> std::io::Result<Armed> {
    let eventfd = EventFd::from_value_and_flags(0, EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
        .map_err(std::io::Error::from)?;
    let usage = register(cgroup, &eventfd, level)?;
    // SAFETY: an EventFd owns its descriptor (an OwnedFd): it stays open, the same one, until
    // the EventFd is dropped, and the AsyncFd owns the EventFd.
    let fd = unsafe { AsyncFd::register(eventfd) }.map_err(std::io::Error::from)?;
    let task = tokio::spawn(async move {
        // The usage file stays open as long as the registration.
        let _usage = usage;
        loop {
            let Ok(mut guard) = fd.readable().await else {
                return;
            };
            match fd.get_ref().read() {
                Ok(_) => {
                    // Full: a firing is already waiting for its round.
                    let _ = fired.try_send(description.clone());
                }
                Err(nix::errno::Errno::EAGAIN) => guard.clear_ready(),
                Err(e) => {
                    warn!(error = %e, "eviction manager: reading the memory threshold eventfd failed");
                    return;
                }
            }
        }
    });
    Ok(Armed { level, task })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::eviction::ThresholdValue;

    fn mem(usage: u64, ws: u64, available: u64) -> MemoryStats {
        serde_json::from_value(serde_json::json!({
            "time": "2026-12-03T00:00:00Z",
            "usageBytes": usage,
            "workingSetBytes": ws,
            "availableBytes": available,
        }))
        .unwrap()
    }

    fn threshold(signal: Signal, value: ThresholdValue, grace: u64) -> Threshold {
        Threshold {
            signal,
            value,
            grace_period: Duration::from_secs(grace),
            min_reclaim: None,
        }
    }

    #[test]
    fn the_level_is_capacity_minus_threshold_plus_inactive_file() {
        const MI: u64 = 1 << 20;
        // Capacity 1000 Mi (600 working set + 400 available), 100 Mi of inactive file pages.
        let m = mem(700 * MI, 600 * MI, 400 * MI);
        let t = threshold(
            Signal::MemoryAvailable,
            ThresholdValue::Quantity(i128::from(100 * MI) * 1000),
            0,
        );
        assert_eq!(usage_level(&t, &m), Some(1000 * MI));
        // 10% of the capacity, in the kubelet's float arithmetic: the float32 0.1 is a little
        // over a tenth, so the level is a byte lower.
        let t = threshold(
            Signal::AllocatableMemoryAvailable,
            ThresholdValue::Percentage(0.1),
            0,
        );
        assert_eq!(usage_level(&t, &m), Some(1000 * MI - 1));
        // A threshold above the capacity: the level is the inactive file pages alone.
        let t = threshold(
            Signal::MemoryAvailable,
            ThresholdValue::Quantity(i128::from(2000 * MI) * 1000),
            0,
        );
        assert_eq!(usage_level(&t, &m), Some(100 * MI));
        let empty: MemoryStats =
            serde_json::from_value(serde_json::json!({"time": "2026-12-03T00:00:00Z"})).unwrap();
        assert_eq!(usage_level(&t, &empty), None);
    }

    #[test]
    fn descriptions_as_the_kubelet() {
        let v = ThresholdValue::Quantity(1000);
        assert_eq!(
            describe(&threshold(Signal::MemoryAvailable, v, 0)),
            "hard memory eviction threshold"
        );
        assert_eq!(
            describe(&threshold(Signal::AllocatableMemoryAvailable, v, 30)),
            "soft allocatable memory eviction threshold"
        );
    }

    #[test]
    fn only_memory_thresholds_and_none_on_v2() {
        let ts = [
            threshold(Signal::MemoryAvailable, ThresholdValue::Quantity(1), 0),
            threshold(Signal::NodeFsAvailable, ThresholdValue::Quantity(1), 0),
            threshold(
                Signal::AllocatableMemoryAvailable,
                ThresholdValue::Quantity(1),
                0,
            ),
        ];
        let n = Notifiers::new(&ts, Path::new("/cg/memory"), "/bosun/kubepods", false);
        let cgroups: Vec<&Path> = n.notifiers.iter().map(|n| n.cgroup.as_path()).collect();
        assert_eq!(
            cgroups,
            [
                Path::new("/cg/memory"),
                Path::new("/cg/memory/bosun/kubepods")
            ]
        );
        assert!(Notifiers::new(&ts, Path::new("/cg"), "/kubepods", true).is_empty());
    }
}
