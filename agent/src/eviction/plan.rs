//! Which pod to evict this round, and how, as the end of the kubelet's synchronize
//! (eviction_manager.go): memory thresholds first (byEvictionPriority), the resource that
//! threshold starves, the pods ranked for its signal, and the first that is not critical, with
//! its grace period (1 s for a hard threshold; evictionMaxPodGracePeriod, or the pod's own if
//! shorter, for a soft one) and the kubelet's message. Pure: the apply half is the caller's.
//! Node-level reclaim (image and container GC) comes before this in the kubelet, and is the
//! caller's too.

use super::message::{Annotations, eviction_message, resource_of};
use super::rank::{Candidate, rank};
use super::signals::Observations;
use crate::config::eviction::{Signal, Threshold};

/// The kubelet's immediateEvictionGracePeriodSeconds: a hard threshold's evictions.
pub const IMMEDIATE_GRACE_SECONDS: i64 = 1;

/// The status reason of the eviction manager's evictions (and its event's).
pub const EVICTED: &str = "Evicted";

/// One eviction to perform: the kubelet's killPodFunc with its status function (the eviction
/// manager's, and the node shutdown manager's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eviction {
    /// The pod's UID.
    pub uid: String,
    /// The status reason: [`EVICTED`] (the eviction manager's, which also records the Warning
    /// Evicted event) or `Terminated` (the node shutdown manager's, no event).
    pub reason: &'static str,
    /// The grace period override, in seconds.
    pub grace_seconds: i64,
    /// The status message (also the event's and the DisruptionTarget condition's).
    pub message: String,
    /// The resource reclaimed (`memory`, `ephemeral-storage`, `inodes`, `pids`).
    pub resource: &'static str,
    /// True when the pod's status gets the DisruptionTarget condition (a threshold eviction;
    /// not a local storage limit's).
    pub disruption_target: bool,
    /// The Evicted event's annotations (a threshold eviction's; none for a local storage
    /// limit's, as the kubelet's).
    pub annotations: Annotations,
}

/// A node-level collector the eviction manager may run before evicting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Collector {
    /// Dead containers and sandboxes (the kubelet's DeleteAllUnusedContainers).
    Containers,
    /// Unused images (the kubelet's DeleteUnusedImages).
    Images,
}

/// The node-level reclaim for `signal`, in order, as the kubelet's buildSignalToNodeReclaimFuncs
/// (no split container filesystem): with images on the node's filesystem every disk signal runs
/// container then image GC; with a dedicated image filesystem nodefs pressure runs nothing
/// (the kubelet evicts at once) and imagefs or containerfs pressure runs both.
pub fn node_reclaim(signal: Signal, dedicated_image_fs: bool) -> &'static [Collector] {
    use Signal::*;
    const BOTH: &[Collector] = &[Collector::Containers, Collector::Images];
    match (signal, dedicated_image_fs) {
        (NodeFsAvailable | NodeFsInodesFree, true) => &[],
        (
            NodeFsAvailable
            | NodeFsInodesFree
            | ImageFsAvailable
            | ImageFsInodesFree
            | ContainerFsAvailable
            | ContainerFsInodesFree,
            _,
        ) => BOTH,
        (MemoryAvailable | AllocatableMemoryAvailable | PidAvailable, _) => &[],
    }
}

/// The signal the round evicts for: the first memory threshold met, else the first met.
pub fn first_signal(met: &[Threshold]) -> Option<Signal> {
    met.iter()
        .find(|t| is_memory(t.signal))
        .or_else(|| met.first())
        .map(|t| t.signal)
}

fn is_memory(s: Signal) -> bool {
    matches!(
        s,
        Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable
    )
}

/// The eviction this round calls for under `met` (thresholds whose grace periods are
/// satisfied), or None: nothing met, or no candidate that may be evicted.
pub fn plan(
    met: &[Threshold],
    observations: &Observations,
    mut candidates: Vec<Candidate<'_>>,
    dedicated_image_fs: bool,
    max_pod_grace_seconds: i64,
) -> Option<Eviction> {
    let mut ordered: Vec<Threshold> = met.to_vec();
    // Stable: memory first, the rest in the order they were met.
    ordered.sort_by_key(|t| !is_memory(t.signal));
    let threshold = *ordered.first()?;
    let resource = resource_of(threshold.signal);
    rank(threshold.signal, dedicated_image_fs, &mut candidates);
    let victim = candidates.iter().find(|c| !super::is_critical(c.pod))?;
    let grace_seconds = if threshold.is_hard() {
        IMMEDIATE_GRACE_SECONDS
    } else {
        let own = victim
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.termination_grace_period_seconds);
        own.map_or(max_pod_grace_seconds, |g| g.min(max_pod_grace_seconds))
    };
    let (message, annotations) =
        eviction_message(resource, victim.pod, victim.stats, &ordered, observations);
    Some(Eviction {
        uid: victim.pod.metadata.uid.clone().unwrap_or_default(),
        reason: EVICTED,
        grace_seconds,
        message,
        resource,
        disruption_target: true,
        annotations,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::eviction::ThresholdValue;
    use crate::eviction::signals::Observation;
    use crate::stats::summary::PodStats;
    use k8s_openapi::api::core::v1::Pod;
    use std::time::Duration;

    const T: &str = "2026-12-02T20:00:00Z";

    fn pod(uid: &str, extra: serde_json::Value) -> Pod {
        let mut v = serde_json::json!({
            "metadata": {"name": uid, "uid": uid},
            "spec": {"containers": [{"name": "c"}], "terminationGracePeriodSeconds": 30}
        });
        if let (Some(m), Some(e)) = (v["metadata"].as_object_mut(), extra.get("metadata")) {
            m.extend(e.as_object().cloned().unwrap_or_default());
        }
        if let (Some(s), Some(e)) = (v["spec"].as_object_mut(), extra.get("spec")) {
            s.extend(e.as_object().cloned().unwrap_or_default());
        }
        serde_json::from_value(v).unwrap()
    }

    fn stats(uid: &str, ws: u64, rootfs: u64) -> PodStats {
        serde_json::from_value(serde_json::json!({
            "podRef": {"name": uid, "namespace": "default", "uid": uid}, "startTime": T,
            "memory": {"time": T, "workingSetBytes": ws},
            "containers": [{"name": "c", "startTime": T,
                "memory": {"time": T, "workingSetBytes": ws},
                "rootfs": {"time": T, "usedBytes": rootfs}, "logs": {"time": T, "usedBytes": 0}}]
        }))
        .unwrap()
    }

    fn threshold(signal: Signal, grace: u64) -> Threshold {
        Threshold {
            signal,
            value: ThresholdValue::Quantity((100 << 20) * 1000),
            grace_period: Duration::from_secs(grace),
            min_reclaim: None,
        }
    }

    #[test]
    fn plans_as_the_kubelet_synchronizes() {
        let obs: Observations = [
            (
                Signal::MemoryAvailable,
                Observation {
                    available: 50 << 20,
                    capacity: 4 << 30,
                },
            ),
            (
                Signal::NodeFsAvailable,
                Observation {
                    available: 50 << 20,
                    capacity: 10 << 30,
                },
            ),
        ]
        .into();
        let hog = pod("hog", serde_json::json!({}));
        let filler = pod("filler", serde_json::json!({}));
        let static_hog = pod(
            "static",
            serde_json::json!({"metadata": {"annotations": {"kubernetes.io/config.source": "file"}}}),
        );
        let short = pod(
            "short",
            serde_json::json!({"spec": {"terminationGracePeriodSeconds": 5}}),
        );
        let s_hog = stats("hog", 900 << 20, 0);
        let s_filler = stats("filler", 10 << 20, 900 << 20);
        let s_static = stats("static", 2000 << 20, 0);
        let s_short = stats("short", 800 << 20, 0);
        let all = || {
            vec![
                Candidate {
                    pod: &filler,
                    stats: Some(&s_filler),
                },
                Candidate {
                    pod: &hog,
                    stats: Some(&s_hog),
                },
                Candidate {
                    pod: &static_hog,
                    stats: Some(&s_static),
                },
                Candidate {
                    pod: &short,
                    stats: Some(&s_short),
                },
            ]
        };
        // (met, max pod grace, want uid, grace, resource)
        type Case = (
            Vec<Threshold>,
            i64,
            Option<(&'static str, i64, &'static str)>,
        );
        let cases: &[Case] = &[
            (vec![], 30, None),
            // Memory before disk whatever the order met; the static pod uses most but is
            // critical; a hard threshold gives 1 s.
            (
                vec![
                    threshold(Signal::NodeFsAvailable, 0),
                    threshold(Signal::MemoryAvailable, 0),
                ],
                30,
                Some(("hog", 1, "memory")),
            ),
            (
                vec![threshold(Signal::NodeFsAvailable, 0)],
                30,
                Some(("filler", 1, "ephemeral-storage")),
            ),
            // Soft: evictionMaxPodGracePeriod, or the pod's own when shorter.
            (
                vec![threshold(Signal::MemoryAvailable, 60)],
                10,
                Some(("hog", 10, "memory")),
            ),
            (
                vec![threshold(Signal::MemoryAvailable, 60)],
                60,
                Some(("hog", 30, "memory")),
            ),
        ];
        for (met, max_grace, want) in cases {
            let got = plan(met, &obs, all(), false, *max_grace)
                .map(|e| (e.uid, e.grace_seconds, e.resource));
            let want = want.map(|(u, g, r)| (u.to_string(), g, r));
            assert_eq!(got, want, "{met:?}");
        }
        let e = plan(
            &[threshold(Signal::MemoryAvailable, 0)],
            &obs,
            all(),
            false,
            0,
        )
        .unwrap();
        assert_eq!(
            e.message,
            "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
             Container c was using 900Mi, request is 0, has larger consumption of memory. "
        );
        // Only critical pods: nothing to evict.
        let only_static = vec![Candidate {
            pod: &static_hog,
            stats: Some(&s_static),
        }];
        assert_eq!(
            plan(
                &[threshold(Signal::MemoryAvailable, 0)],
                &obs,
                only_static,
                false,
                0
            ),
            None
        );
        // The pod with the shorter grace period uses 800Mi: second to the hog.
        let without_hog: Vec<Candidate> = all()
            .into_iter()
            .filter(|c| c.pod.metadata.name.as_deref() != Some("hog"))
            .collect();
        let e = plan(
            &[threshold(Signal::MemoryAvailable, 60)],
            &obs,
            without_hog,
            false,
            60,
        )
        .unwrap();
        assert_eq!((e.uid.as_str(), e.grace_seconds), ("short", 5));
    }

    #[test]
    fn node_level_reclaim_as_the_kubelet_builds_it() {
        use Collector::{Containers, Images};
        use Signal::*;
        // buildSignalToNodeReclaimFuncs without a split container filesystem.
        let both: &[Collector] = &[Containers, Images];
        let cases: &[(Signal, bool, &[Collector])] = &[
            // Images on the node's filesystem: every disk signal collects both.
            (NodeFsAvailable, false, both),
            (NodeFsInodesFree, false, both),
            (ImageFsAvailable, false, both),
            (ImageFsInodesFree, false, both),
            (ContainerFsAvailable, false, both),
            (ContainerFsInodesFree, false, both),
            // A dedicated image filesystem: nodefs pressure reclaims nothing, imagefs (and
            // containerfs, which is the image filesystem then) both.
            (NodeFsAvailable, true, &[]),
            (NodeFsInodesFree, true, &[]),
            (ImageFsAvailable, true, both),
            (ImageFsInodesFree, true, both),
            (ContainerFsAvailable, true, both),
            (ContainerFsInodesFree, true, both),
            // Memory and pids: nothing at node level.
            (MemoryAvailable, false, &[]),
            (AllocatableMemoryAvailable, true, &[]),
            (PidAvailable, false, &[]),
        ];
        for (signal, dedicated, want) in cases {
            assert_eq!(
                node_reclaim(*signal, *dedicated),
                *want,
                "{signal:?} dedicated={dedicated}"
            );
        }
    }
}
