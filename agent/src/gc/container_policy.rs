//! Which dead containers and sandboxes to remove: the kubelet's container GC policy
//! (`kuberuntime_gc.go`: `evictableContainers`, `evictContainers`, `evictSandboxes`) as a pure
//! function of what the runtime lists, the policy and which pods are gone.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::config::ContainerGcPolicy;

/// A container as the runtime lists it, reduced to what the policy reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// CRI container id.
    pub id: String,
    /// UID of its pod (label).
    pub pod_uid: String,
    /// Its name in the pod (label).
    pub name: String,
    /// Its sandbox.
    pub sandbox_id: String,
    /// Creation time, ns since the epoch.
    pub created_at: i64,
    /// CONTAINER_RUNNING.
    pub running: bool,
    /// CONTAINER_UNKNOWN: stopped before removal.
    pub unknown: bool,
}

/// A sandbox as the runtime lists it, reduced to what the policy reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxInfo {
    /// CRI sandbox id.
    pub id: String,
    /// UID of its pod (metadata).
    pub pod_uid: String,
    /// Creation time, ns since the epoch.
    pub created_at: i64,
    /// SANDBOX_READY.
    pub ready: bool,
}

/// A dead container to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removal {
    /// CRI container id.
    pub id: String,
    /// Its name in the pod, for the log.
    pub name: String,
    /// UID of its pod, for the log.
    pub pod_uid: String,
    /// In an unknown state: the kubelet stops it first.
    pub unknown: bool,
}

/// What the GC knows of a pod, for [`pod_removable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodState<'a> {
    /// Whether a pod worker owns it (None: the sources are not all seen yet).
    pub has_worker: Option<bool>,
    /// The phase of its last status.
    pub phase: Option<&'a str>,
    /// The reason of its last status (`Evicted`).
    pub reason: Option<&'a str>,
}

/// Whether every dead container, sandbox and log of a pod may go, as the kubelet's pod workers
/// answer: ShouldPodContentBeRemoved (no worker once every source was seen, or evicted), and with
/// `evict_non_deleted` (the eviction manager's DeleteAllUnusedContainers) also
/// ShouldPodRuntimeBeRemoved (a terminal phase: the pod's containers are done for good).
pub fn pod_removable(s: &PodState<'_>, evict_non_deleted: bool) -> bool {
    let Some(has_worker) = s.has_worker else {
        return false;
    };
    let terminal = matches!(s.phase, Some("Succeeded" | "Failed"));
    let evicted = s.phase == Some("Failed") && s.reason == Some("Evicted");
    !has_worker || evicted || (evict_non_deleted && terminal)
}

/// The kubelet's evict unit: one container name of one pod.
type Unit = (String, String);

/// The dead containers to remove, oldest last within each decision, as the kubelet's
/// `evictContainers`: dead containers (not running, older than `min_age`) grouped by pod and
/// container name; all of a pod whose content may be removed (once every source was seen);
/// beyond `max_per_pod_container` per unit, the oldest; then beyond `max_containers` on the node,
/// first evenly per unit, then the oldest overall.
pub fn containers_to_remove(
    containers: &[ContainerInfo],
    policy: &ContainerGcPolicy,
    now_ns: i64,
    removable: impl Fn(&str) -> bool,
    all_sources_ready: bool,
) -> Vec<Removal> {
    let newest_gc_time = now_ns.saturating_sub(duration_ns(policy.min_age));
    let mut units: BTreeMap<Unit, Vec<&ContainerInfo>> = BTreeMap::new();
    for c in containers
        .iter()
        .filter(|c| !c.running && c.created_at <= newest_gc_time)
    {
        units
            .entry((c.pod_uid.clone(), c.name.clone()))
            .or_default()
            .push(c);
    }
    for unit in units.values_mut() {
        // Newest first, ties by id so the choice is stable.
        unit.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
    }
    let mut out = Vec::new();
    if all_sources_ready {
        units.retain(|(uid, _), unit| {
            if removable(uid) {
                out.extend(unit.iter().map(|c| removal(c)));
                false
            } else {
                true
            }
        });
    }
    if policy.max_per_pod_container >= 0 {
        keep_per_unit(&mut units, policy.max_per_pod_container as usize, &mut out);
    }
    let total: usize = units.values().map(Vec::len).sum();
    if policy.max_containers >= 0 && total > policy.max_containers as usize && !units.is_empty() {
        let max = policy.max_containers as usize;
        let per_unit = (max / units.len()).max(1);
        keep_per_unit(&mut units, per_unit, &mut out);
        let mut flat: Vec<&ContainerInfo> = units.values().flatten().copied().collect();
        if flat.len() > max {
            flat.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
            out.extend(flat[max..].iter().rev().map(|c| removal(c)));
        }
    }
    out
}

/// Removes all but the newest `keep` of each unit (newest-first lists), oldest first.
fn keep_per_unit(
    units: &mut BTreeMap<Unit, Vec<&ContainerInfo>>,
    keep: usize,
    out: &mut Vec<Removal>,
) {
    for unit in units.values_mut() {
        if unit.len() > keep {
            out.extend(unit[keep..].iter().rev().map(|c| removal(c)));
            unit.truncate(keep);
        }
    }
}

fn removal(c: &ContainerInfo) -> Removal {
    Removal {
        id: c.id.clone(),
        name: c.name.clone(),
        pod_uid: c.pod_uid.clone(),
        unknown: c.unknown,
    }
}

/// The sandboxes to remove, as the kubelet's `evictSandboxes`: a sandbox is active when it is
/// ready or any container (of any state) still belongs to it; of a pod whose content may be
/// removed every inactive sandbox goes, of any other pod every inactive one but the newest.
pub fn sandboxes_to_remove(
    sandboxes: &[SandboxInfo],
    containers: &[ContainerInfo],
    removable: impl Fn(&str) -> bool,
) -> Vec<String> {
    let with_containers: HashSet<&str> = containers.iter().map(|c| c.sandbox_id.as_str()).collect();
    let mut by_pod: BTreeMap<&str, Vec<&SandboxInfo>> = BTreeMap::new();
    for s in sandboxes {
        by_pod.entry(s.pod_uid.as_str()).or_default().push(s);
    }
    let mut out = Vec::new();
    for (uid, mut list) in by_pod {
        list.sort_by(|a, b| b.created_at.cmp(&a.created_at).then(a.id.cmp(&b.id)));
        let keep = if removable(uid) { 0 } else { 1 };
        out.extend(
            list.iter()
                .skip(keep)
                .rev()
                .filter(|s| !s.ready && !with_containers.contains(s.id.as_str()))
                .map(|s| s.id.clone()),
        );
    }
    out
}

fn duration_ns(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn c(id: &str, uid: &str, name: &str, created_s: i64, running: bool) -> ContainerInfo {
        ContainerInfo {
            id: id.into(),
            pod_uid: uid.into(),
            name: name.into(),
            sandbox_id: format!("sb-{uid}"),
            created_at: created_s * S,
            running,
            unknown: false,
        }
    }

    fn ids(r: &[Removal]) -> Vec<&str> {
        r.iter().map(|r| r.id.as_str()).collect()
    }

    fn default_run(cs: &[ContainerInfo]) -> Vec<Removal> {
        containers_to_remove(cs, &ContainerGcPolicy::default(), 1000 * S, |_| false, true)
    }

    #[test]
    fn a_crash_loop_keeps_the_running_instance_and_the_newest_dead_one() {
        // kuberuntime_gc_test.go: "max per pod container 1: keep the newest dead one".
        let cs = [
            c("r0", "p", "app", 10, false),
            c("r1", "p", "app", 20, false),
            c("r2", "p", "app", 30, false),
            c("r3", "p", "app", 40, true),
        ];
        assert_eq!(ids(&default_run(&cs)), ["r0", "r1"]);
    }

    #[test]
    fn every_dead_instance_counts_while_the_newest_is_in_back_off() {
        let cs = [
            c("r0", "p", "app", 10, false),
            c("r1", "p", "app", 20, false),
            c("r2", "p", "app", 30, false),
        ];
        // The newest dead one is kept: it is the status' state (and `--previous` once restarted).
        assert_eq!(ids(&default_run(&cs)), ["r0", "r1"]);
    }

    #[test]
    fn units_are_per_pod_and_container_name() {
        let cs = [
            c("a0", "p", "app", 10, false),
            c("s0", "p", "side", 11, false),
            c("a1", "q", "app", 12, false),
            c("a2", "p", "app", 13, false),
        ];
        assert_eq!(ids(&default_run(&cs)), ["a0"]);
    }

    #[test]
    fn younger_than_min_age_is_kept() {
        let policy = ContainerGcPolicy {
            min_age: Duration::from_secs(60),
            ..Default::default()
        };
        let cs = [
            c("old", "p", "app", 100, false),
            c("mid", "p", "app", 500, false),
            c("new", "p", "app", 990, false),
        ];
        // "new" is too young to be evictable, so "mid" is the newest evictable one and stays.
        let r = containers_to_remove(&cs, &policy, 1000 * S, |_| false, true);
        assert_eq!(ids(&r), ["old"]);
    }

    #[test]
    fn a_gone_pod_loses_every_dead_container_once_sources_are_ready() {
        let cs = [
            c("g0", "gone", "app", 10, false),
            c("g1", "gone", "app", 20, false),
            c("k0", "kept", "app", 15, false),
        ];
        let gone = |uid: &str| uid == "gone";
        let r = containers_to_remove(&cs, &ContainerGcPolicy::default(), 1000 * S, gone, true);
        assert_eq!(ids(&r), ["g1", "g0"]);
        // Before every source was seen nothing is known to be gone.
        let r = containers_to_remove(&cs, &ContainerGcPolicy::default(), 1000 * S, gone, false);
        assert_eq!(ids(&r), ["g0"]);
    }

    #[test]
    fn negative_limits_keep_everything() {
        let policy = ContainerGcPolicy {
            max_per_pod_container: -1,
            ..Default::default()
        };
        let cs = [
            c("a0", "p", "app", 10, false),
            c("a1", "p", "app", 20, false),
        ];
        assert!(containers_to_remove(&cs, &policy, 1000 * S, |_| false, true).is_empty());
    }

    #[test]
    fn max_containers_first_evens_out_units_then_removes_the_oldest() {
        let policy = ContainerGcPolicy {
            max_per_pod_container: -1,
            max_containers: 3,
            ..Default::default()
        };
        let cs = [
            c("a0", "p", "a", 1, false),
            c("a1", "p", "a", 2, false),
            c("a2", "p", "a", 3, false),
            c("b0", "p", "b", 4, false),
            c("c0", "q", "c", 5, false),
            c("c1", "q", "c", 6, false),
        ];
        // 3 units, 3 allowed: one each (the newest), which is exactly the limit.
        let r = containers_to_remove(&cs, &policy, 1000 * S, |_| false, true);
        let mut got = ids(&r);
        got.sort_unstable();
        assert_eq!(got, ["a0", "a1", "c0"]);
        // 2 allowed over 3 units: one each, then the oldest overall (a2) too.
        let policy = ContainerGcPolicy {
            max_containers: 2,
            ..policy
        };
        let r = containers_to_remove(&cs, &policy, 1000 * S, |_| false, true);
        let mut got = ids(&r);
        got.sort_unstable();
        assert_eq!(got, ["a0", "a1", "a2", "c0"]);
    }

    fn sb(id: &str, uid: &str, created_s: i64, ready: bool) -> SandboxInfo {
        SandboxInfo {
            id: id.into(),
            pod_uid: uid.into(),
            created_at: created_s * S,
            ready,
        }
    }

    #[test]
    fn sandboxes_keep_the_newest_and_the_active_ones() {
        let sbs = [
            sb("p-1", "p", 1, false),
            sb("p-2", "p", 2, false),
            sb("p-3", "p", 3, false),
            sb("p-4", "p", 4, true),
            sb("g-1", "gone", 1, false),
            sb("g-2", "gone", 2, false),
        ];
        // p-2 still holds a container: active.
        let mut holder = c("x", "p", "app", 1, false);
        holder.sandbox_id = "p-2".into();
        let r = sandboxes_to_remove(&sbs, &[holder], |uid| uid == "gone");
        assert_eq!(r, ["g-1", "g-2", "p-1", "p-3"]);
        // The newest of a known pod stays even when dead.
        let r = sandboxes_to_remove(&sbs[..3], &[], |_| false);
        assert_eq!(r, ["p-1", "p-2"]);
    }

    #[test]
    fn what_may_go_as_the_pod_workers_answer() {
        let state = |known: Option<bool>, phase: Option<&'static str>, reason| PodState {
            has_worker: known,
            phase,
            reason,
        };
        let cases = [
            // (state, evict_non_deleted, removable)
            // Sources not all seen: nothing, whatever the pod.
            (state(None, None, None), true, false),
            // No worker once every source was seen: gone.
            (state(Some(false), None, None), false, true),
            // Running, or still to run: kept.
            (state(Some(true), Some("Running"), None), false, false),
            (state(Some(true), Some("Running"), None), true, false),
            // Evicted (ShouldPodContentBeRemoved: IsEvicted): gone at every collection.
            (
                state(Some(true), Some("Failed"), Some("Evicted")),
                false,
                true,
            ),
            // Terminated, not deleted: kept by the periodic GC, gone when the eviction manager
            // asks (DeleteAllUnusedContainers: ShouldPodRuntimeBeRemoved).
            (state(Some(true), Some("Succeeded"), None), false, false),
            (state(Some(true), Some("Succeeded"), None), true, true),
            (
                state(Some(true), Some("Failed"), Some("DeadlineExceeded")),
                false,
                false,
            ),
            (
                state(Some(true), Some("Failed"), Some("DeadlineExceeded")),
                true,
                true,
            ),
        ];
        for (s, evict_non_deleted, want) in cases {
            assert_eq!(
                pod_removable(&s, evict_non_deleted),
                want,
                "{s:?} evict_non_deleted={evict_non_deleted}"
            );
        }
    }
}
