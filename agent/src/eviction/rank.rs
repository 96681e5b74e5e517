//! Ranking pods for eviction, as the kubelet's rank functions (pkg/kubelet/eviction/helpers.go):
//! memory pressure ranks by usage over requests, then priority, then working set above requests;
//! PID pressure by priority, then process count; disk pressure by disk usage over requests, then
//! priority, then usage above requests, measuring what the pressured filesystem holds. Pure: the
//! pods and the stats of one Summary in, the order out; the first is evicted first.

use std::cmp::Ordering;

use k8s_openapi::api::core::v1::Pod;

use crate::config::eviction::Signal;
use crate::resource::pod_request;
use crate::stats::summary::{FsStats, PodStats};

/// A pod that may be evicted, with its stats from the Summary if it has any.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    /// The pod.
    pub pod: &'a Pod,
    /// Its stats; a pod without any is ranked first, as the kubelet does.
    pub stats: Option<&'a PodStats>,
}

/// Which of a pod's filesystem usages count for a disk signal (the kubelet's fsStatsType).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Measure {
    /// Containers' writable layers.
    root: bool,
    /// Containers' logs.
    logs: bool,
    /// Local volumes: hostPath, emptyDir on disk, gitRepo, configMap.
    volumes: bool,
}

/// Bytes or inodes of a disk signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DiskUnit {
    Bytes,
    Inodes,
}

/// What the kubelet measures for a disk signal (buildSignalToRankFunc; no split containerfs):
/// everything when the image filesystem is the node's, else logs and volumes for nodefs and the
/// writable layers for imagefs.
fn disk_measure(signal: Signal, dedicated_image_fs: bool) -> Option<(Measure, DiskUnit)> {
    let unit = match signal {
        Signal::NodeFsAvailable | Signal::ImageFsAvailable | Signal::ContainerFsAvailable => {
            DiskUnit::Bytes
        }
        Signal::NodeFsInodesFree | Signal::ImageFsInodesFree | Signal::ContainerFsInodesFree => {
            DiskUnit::Inodes
        }
        _ => return None,
    };
    let all = Measure {
        root: true,
        logs: true,
        volumes: true,
    };
    let measure = match (dedicated_image_fs, signal) {
        (false, _) => all,
        (true, Signal::NodeFsAvailable | Signal::NodeFsInodesFree) => Measure {
            root: false,
            logs: true,
            volumes: true,
        },
        (true, _) => Measure {
            root: true,
            logs: false,
            volumes: false,
        },
    };
    Some((measure, unit))
}

/// Names of the pod's volumes that use local storage (hostPath and the kubelet's
/// IsLocalEphemeralVolume: gitRepo, emptyDir on the default medium, configMap).
fn local_volumes(pod: &Pod) -> Vec<&str> {
    let volumes = pod.spec.as_ref().and_then(|s| s.volumes.as_ref());
    volumes
        .into_iter()
        .flatten()
        .filter(|v| {
            v.host_path.is_some()
                || v.git_repo.is_some()
                || v.config_map.is_some()
                || v.empty_dir
                    .as_ref()
                    .is_some_and(|e| e.medium.as_deref().unwrap_or("").is_empty())
        })
        .map(|v| v.name.as_str())
        .collect()
}

/// One filesystem's usage in the unit asked for (missing figures count as zero).
fn fs_usage(f: Option<&FsStats>, unit: DiskUnit) -> i128 {
    let v = f.and_then(|f| match unit {
        DiskUnit::Bytes => f.used_bytes,
        DiskUnit::Inodes => f.inodes_used,
    });
    i128::from(v.unwrap_or(0))
}

/// The pod's disk usage for a signal, as the kubelet's podDiskUsage.
fn disk_usage(pod: &Pod, stats: &PodStats, m: Measure, unit: DiskUnit) -> i128 {
    let mut total = 0;
    for c in &stats.containers {
        if m.root {
            total += fs_usage(c.rootfs.as_ref(), unit);
        }
        if m.logs {
            total += fs_usage(c.logs.as_ref(), unit);
        }
    }
    if m.volumes {
        for name in local_volumes(pod) {
            if let Some(v) = stats.volume_stats.iter().find(|v| v.name == name) {
                total += fs_usage(Some(&v.fs), unit);
            }
        }
    }
    total
}

/// The pod's priority (0 when unset).
fn priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// The working set of the pod, in bytes.
fn working_set(stats: &PodStats) -> i128 {
    i128::from(
        stats
            .memory
            .as_ref()
            .and_then(|m| m.working_set_bytes)
            .unwrap_or(0),
    )
}

/// A request in whole units (the requests are kept in thousandths).
fn request(pod: &Pod, resource: &str) -> i128 {
    pod_request(pod, resource) / 1000
}

/// Orders true before false (the kubelet's cmpBool).
fn first_true(a: bool, b: bool) -> Ordering {
    b.cmp(&a)
}

/// The kubelet's comparison chain for a signal: `Less` means `a` is evicted before `b`.
fn compare(signal: Signal, dedicated_image_fs: bool, a: &Candidate, b: &Candidate) -> Ordering {
    let (Some(sa), Some(sb)) = (a.stats, b.stats) else {
        return first_true(a.stats.is_none(), b.stats.is_none());
    };
    let by_priority = priority(a.pod).cmp(&priority(b.pod));
    match signal {
        Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => {
            let over = |c: &Candidate, s: &PodStats| working_set(s) - request(c.pod, "memory");
            let (oa, ob) = (over(a, sa), over(b, sb));
            first_true(oa > 0, ob > 0)
                .then(by_priority)
                .then(ob.cmp(&oa))
        }
        Signal::PidAvailable => {
            let procs = |s: &PodStats| {
                s.process_stats
                    .as_ref()
                    .and_then(|p| p.process_count)
                    .unwrap_or(0)
            };
            by_priority.then(procs(sb).cmp(&procs(sa)))
        }
        _ => {
            let Some((m, unit)) = disk_measure(signal, dedicated_image_fs) else {
                return Ordering::Equal;
            };
            // The requested amount is of ephemeral-storage even for inodes, as in the kubelet.
            let over = |c: &Candidate, s: &PodStats| {
                disk_usage(c.pod, s, m, unit) - request(c.pod, "ephemeral-storage")
            };
            let (oa, ob) = (over(a, sa), over(b, sb));
            first_true(oa > 0, ob > 0)
                .then(by_priority)
                .then(ob.cmp(&oa))
        }
    }
}

/// Orders `pods` for eviction under pressure on `signal`: the first is evicted first.
/// `dedicated_image_fs`: the runtime's images are on another filesystem than the root dir.
pub fn rank(signal: Signal, dedicated_image_fs: bool, pods: &mut [Candidate<'_>]) {
    pods.sort_by(|a, b| compare(signal, dedicated_image_fs, a, b));
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "2026-12-02T20:00:00Z";

    fn pod(name: &str, priority: i32, requests: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "uid": name},
            "spec": {"priority": priority, "containers": [
                {"name": "c", "resources": {"requests": requests}}],
                "volumes": [{"name": "scratch", "emptyDir": {}},
                            {"name": "ram", "emptyDir": {"medium": "Memory"}}]}
        }))
        .unwrap()
    }

    /// Stats: working set, processes, rootfs and logs bytes, and the two volumes' bytes.
    fn stats(
        name: &str,
        ws: u64,
        procs: u64,
        rootfs: u64,
        logs: u64,
        vols: (u64, u64),
    ) -> PodStats {
        serde_json::from_value(serde_json::json!({
            "podRef": {"name": name, "namespace": "default", "uid": name},
            "startTime": T,
            "memory": {"time": T, "workingSetBytes": ws},
            "process_stats": {"process_count": procs},
            "containers": [{"name": "c", "startTime": T,
                "rootfs": {"time": T, "usedBytes": rootfs, "inodesUsed": rootfs / 100},
                "logs": {"time": T, "usedBytes": logs, "inodesUsed": logs / 100}}],
            "volume": [{"time": T, "name": "scratch", "usedBytes": vols.0},
                       {"time": T, "name": "ram", "usedBytes": vols.1}]
        }))
        .unwrap()
    }

    fn order(signal: Signal, dedicated: bool, pods: &[(Pod, Option<PodStats>)]) -> Vec<String> {
        let mut c: Vec<Candidate> = pods
            .iter()
            .map(|(p, s)| Candidate {
                pod: p,
                stats: s.as_ref(),
            })
            .collect();
        rank(signal, dedicated, &mut c);
        c.iter()
            .map(|c| c.pod.metadata.name.clone().unwrap_or_default())
            .collect()
    }

    const MI: u64 = 1 << 20;

    #[test]
    fn memory_pressure_ranks_over_requests_then_priority_then_usage() {
        type Case = (
            &'static str,
            Vec<(Pod, Option<PodStats>)>,
            &'static [&'static str],
        );
        let cases: &[Case] = &[
            (
                "no stats first",
                vec![
                    (
                        pod("a", 0, serde_json::json!({})),
                        Some(stats("a", 500 * MI, 1, 0, 0, (0, 0))),
                    ),
                    (pod("b", 0, serde_json::json!({})), None),
                ],
                &["b", "a"],
            ),
            (
                "over requests before under, whatever the priority",
                vec![
                    (
                        pod("under", 0, serde_json::json!({"memory": "1Gi"})),
                        Some(stats("under", 500 * MI, 1, 0, 0, (0, 0))),
                    ),
                    (
                        pod("over", 1000, serde_json::json!({"memory": "100Mi"})),
                        Some(stats("over", 200 * MI, 1, 0, 0, (0, 0))),
                    ),
                ],
                &["over", "under"],
            ),
            (
                "both over: lower priority first",
                vec![
                    (
                        pod("high", 10, serde_json::json!({})),
                        Some(stats("high", 900 * MI, 1, 0, 0, (0, 0))),
                    ),
                    (
                        pod("low", 0, serde_json::json!({})),
                        Some(stats("low", 100 * MI, 1, 0, 0, (0, 0))),
                    ),
                ],
                &["low", "high"],
            ),
            (
                "same priority: most above its request first",
                vec![
                    (
                        pod("a", 0, serde_json::json!({"memory": "100Mi"})),
                        Some(stats("a", 300 * MI, 1, 0, 0, (0, 0))),
                    ),
                    (
                        pod("b", 0, serde_json::json!({})),
                        Some(stats("b", 250 * MI, 1, 0, 0, (0, 0))),
                    ),
                ],
                &["b", "a"],
            ),
        ];
        for (name, pods, want) in cases {
            assert_eq!(order(Signal::MemoryAvailable, false, pods), *want, "{name}");
            assert_eq!(
                order(Signal::AllocatableMemoryAvailable, false, pods),
                *want,
                "{name}"
            );
        }
    }

    #[test]
    fn pid_pressure_ranks_by_priority_then_processes() {
        let pods = vec![
            (
                pod("few", 0, serde_json::json!({})),
                Some(stats("few", 0, 3, 0, 0, (0, 0))),
            ),
            (
                pod("many", 0, serde_json::json!({})),
                Some(stats("many", 0, 300, 0, 0, (0, 0))),
            ),
            (
                pod("vip", 100, serde_json::json!({})),
                Some(stats("vip", 0, 3000, 0, 0, (0, 0))),
            ),
        ];
        assert_eq!(
            order(Signal::PidAvailable, false, &pods),
            ["many", "few", "vip"]
        );
    }

    #[test]
    fn disk_pressure_measures_what_the_filesystem_holds() {
        // layer: big writable layer; logs: big logs; vol: big emptyDir; ram: a big memory-backed
        // emptyDir, which is not on disk and does not count.
        let pods = vec![
            (
                pod("layer", 0, serde_json::json!({})),
                Some(stats("layer", 0, 1, 300 * MI, 0, (0, 0))),
            ),
            (
                pod("logs", 0, serde_json::json!({})),
                Some(stats("logs", 0, 1, 0, 200 * MI, (0, 0))),
            ),
            (
                pod("vol", 0, serde_json::json!({})),
                Some(stats("vol", 0, 1, 0, 0, (100 * MI, 0))),
            ),
            (
                pod("ram", 0, serde_json::json!({})),
                Some(stats("ram", 0, 1, MI, 0, (0, 900 * MI))),
            ),
        ];
        let cases: &[(Signal, bool, &[&str])] = &[
            (
                Signal::NodeFsAvailable,
                false,
                &["layer", "logs", "vol", "ram"],
            ),
            (
                Signal::ImageFsAvailable,
                false,
                &["layer", "logs", "vol", "ram"],
            ),
            // With its own image filesystem, nodefs holds logs and volumes only...
            (
                Signal::NodeFsAvailable,
                true,
                &["logs", "vol", "layer", "ram"],
            ),
            // ... and imagefs the writable layers only.
            (
                Signal::ImageFsAvailable,
                true,
                &["layer", "ram", "logs", "vol"],
            ),
            (
                Signal::NodeFsInodesFree,
                false,
                &["layer", "logs", "ram", "vol"],
            ),
        ];
        for (signal, dedicated, want) in cases {
            assert_eq!(
                order(*signal, *dedicated, &pods),
                *want,
                "{signal} {dedicated}"
            );
        }
    }

    #[test]
    fn disk_requests_and_priority() {
        let pods = vec![
            // 300 Mi used, 1 Gi requested: not over.
            (
                pod(
                    "requested",
                    0,
                    serde_json::json!({"ephemeral-storage": "1Gi"}),
                ),
                Some(stats("requested", 0, 1, 300 * MI, 0, (0, 0))),
            ),
            (
                pod("small", 0, serde_json::json!({})),
                Some(stats("small", 0, 1, MI, 0, (0, 0))),
            ),
            (
                pod("vip", 10, serde_json::json!({})),
                Some(stats("vip", 0, 1, 500 * MI, 0, (0, 0))),
            ),
        ];
        assert_eq!(
            order(Signal::NodeFsAvailable, false, &pods),
            ["small", "vip", "requested"]
        );
    }
}
