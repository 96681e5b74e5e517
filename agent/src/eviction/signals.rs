//! Signal observations from the sampler's Summary, as the kubelet's makeSignalObservations
//! (pkg/kubelet/eviction/helpers.go): what is available of each resource and its capacity.

use std::collections::BTreeMap;

use crate::config::eviction::Signal;
use crate::stats::summary::{FsStats, MemoryStats, SYSTEM_CONTAINER_PODS, Summary};

/// What one signal observed: the amount available and the capacity it is a part of (bytes,
/// inodes or task ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Available now; negative when over the limit (pid.available).
    pub available: i64,
    /// The total the percentages of thresholds are taken of.
    pub capacity: i64,
}

/// The observations of one round, by signal.
pub type Observations = BTreeMap<Signal, Observation>;

/// A u64 the Summary holds as the kubelet's int64 conversion of it.
fn i(v: u64) -> i64 {
    v as i64
}

/// Bytes and inodes of one filesystem, when the Summary has both halves of each.
fn fs(out: &mut Observations, f: &FsStats, bytes: Signal, inodes: Signal) {
    if let (Some(a), Some(c)) = (f.available_bytes, f.capacity_bytes) {
        out.insert(
            bytes,
            Observation {
                available: i(a),
                capacity: i(c),
            },
        );
    }
    if let (Some(a), Some(c)) = (f.inodes_free, f.inodes) {
        out.insert(
            inodes,
            Observation {
                available: i(a),
                capacity: i(c),
            },
        );
    }
}

/// The memory stats a memory signal is observed from: the node's for memory.available, the
/// `pods` system container's for allocatableMemory.available; `None` for other signals.
pub fn memory_stats(summary: &Summary, signal: Signal) -> Option<&MemoryStats> {
    match signal {
        Signal::MemoryAvailable => summary.node.memory.as_ref(),
        Signal::AllocatableMemoryAvailable => summary
            .node
            .system_containers
            .iter()
            .find(|c| c.name == SYSTEM_CONTAINER_PODS)
            .and_then(|c| c.memory.as_ref()),
        _ => None,
    }
}

/// Every signal the Summary can tell: memory.available (the node's available bytes, capacity
/// available + working set), allocatableMemory.available (the same of the `pods` system
/// container), nodefs and imagefs bytes and inodes, containerfs when the runtime reports a
/// separate one, and pid.available (max pid minus running processes).
pub fn observe(summary: &Summary) -> Observations {
    let mut out = Observations::new();
    let node = &summary.node;
    let memory = |m: &MemoryStats| match (m.available_bytes, m.working_set_bytes) {
        (Some(a), Some(ws)) => Some(Observation {
            available: i(a),
            capacity: i(a.saturating_add(ws)),
        }),
        _ => None,
    };
    for signal in [Signal::MemoryAvailable, Signal::AllocatableMemoryAvailable] {
        if let Some(o) = memory_stats(summary, signal).and_then(memory) {
            out.insert(signal, o);
        }
    }
    if let Some(f) = &node.fs {
        fs(
            &mut out,
            f,
            Signal::NodeFsAvailable,
            Signal::NodeFsInodesFree,
        );
    }
    if let Some(r) = &node.runtime {
        if let Some(f) = &r.image_fs {
            fs(
                &mut out,
                f,
                Signal::ImageFsAvailable,
                Signal::ImageFsInodesFree,
            );
        }
        if let Some(f) = &r.container_fs {
            fs(
                &mut out,
                f,
                Signal::ContainerFsAvailable,
                Signal::ContainerFsInodesFree,
            );
        }
    }
    if let Some(r) = &node.rlimit
        && let (Some(max), Some(running)) = (r.max_pid, r.num_of_running_processes)
    {
        out.insert(
            Signal::PidAvailable,
            Observation {
                available: max - running,
                capacity: max,
            },
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(v: serde_json::Value) -> Summary {
        serde_json::from_value(v).unwrap()
    }

    const T: &str = "2026-12-02T20:00:00Z";

    #[test]
    fn observes_every_signal_the_summary_tells() {
        let s = summary(serde_json::json!({
            "node": {
                "nodeName": "n", "startTime": T,
                "systemContainers": [{"name": "pods", "startTime": T,
                    "memory": {"time": T, "availableBytes": 300, "workingSetBytes": 700}}],
                "memory": {"time": T, "availableBytes": 1000, "workingSetBytes": 3000},
                "fs": {"time": T, "availableBytes": 10, "capacityBytes": 100,
                       "inodesFree": 5, "inodes": 50},
                "runtime": {"imageFs": {"time": T, "availableBytes": 20, "capacityBytes": 200,
                       "inodesFree": 6, "inodes": 60}},
                "rlimit": {"time": T, "maxpid": 4000, "curproc": 4100}
            },
            "pods": []
        }));
        let o = observe(&s);
        let want = [
            (Signal::MemoryAvailable, 1000, 4000),
            (Signal::AllocatableMemoryAvailable, 300, 1000),
            (Signal::NodeFsAvailable, 10, 100),
            (Signal::NodeFsInodesFree, 5, 50),
            (Signal::ImageFsAvailable, 20, 200),
            (Signal::ImageFsInodesFree, 6, 60),
            (Signal::PidAvailable, -100, 4000),
        ];
        assert_eq!(
            o,
            want.into_iter()
                .map(|(s, available, capacity)| (
                    s,
                    Observation {
                        available,
                        capacity
                    }
                ))
                .collect::<Observations>()
        );
    }

    #[test]
    fn half_known_figures_are_not_observed() {
        let s = summary(serde_json::json!({
            "node": {
                "nodeName": "n", "startTime": T,
                "memory": {"time": T, "workingSetBytes": 3000},
                "fs": {"time": T, "availableBytes": 10, "inodes": 50},
                "rlimit": {"time": T, "maxpid": 4000}
            },
            "pods": []
        }));
        assert!(observe(&s).is_empty());
    }
}
