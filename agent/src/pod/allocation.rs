//! The allocation manager (the kubelet's pkg/kubelet/allocation) for in-place pod resize: the
//! resources each admitted pod's containers were allocated, which may lag the spec while a resize
//! waits for room; the resources each running container was last given (the kubelet's actuated
//! state); and the PodResizePending / PodResizeInProgress conditions. What a restart could not
//! tell again is kept in `<root>/bosun_pod_resources_state`: the allocation of a pod whose spec
//! asks for more (a deferred resize), and what a container runs with when that is not its
//! allocation (a resize not applied yet). A pod without a record runs as its spec says, so the file
//! is `{}` and never rewritten while nothing is resized.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::{Container, Pod, PodCondition, ResourceRequirements};
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::resource::parse_quantity;

/// The checkpoint's file name under the root dir.
pub const STATE_FILE: &str = "bosun_pod_resources_state";

/// The resources one running container instance was created or last updated with.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Actuated {
    /// The CRI container the record is about: a new instance starts from its spec.
    pub container_id: String,
    /// Its requests and limits.
    pub resources: ResourceRequirements,
}

/// One pod's records.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct PodRecord {
    /// Allocated resources by container name (regular and init containers).
    #[serde(default)]
    allocated: BTreeMap<String, ResourceRequirements>,
    /// Actuated resources by container name.
    #[serde(default)]
    actuated: BTreeMap<String, Actuated>,
    /// Whether the spec last seen asks for other resources than allocated.
    #[serde(default)]
    resize_requested: bool,
}

impl PodRecord {
    /// What of the record a restart needs (see the module's doc); None when nothing.
    fn kept(&self) -> Option<PodRecord> {
        let actuated: BTreeMap<String, Actuated> = self
            .actuated
            .iter()
            .filter(|(name, a)| {
                self.allocated
                    .get(*name)
                    .is_none_or(|al| !same_resources(al, &a.resources))
            })
            .map(|(n, a)| (n.clone(), a.clone()))
            .collect();
        if !self.resize_requested && actuated.is_empty() {
            return None;
        }
        Some(PodRecord {
            allocated: self.allocated.clone(),
            actuated,
            resize_requested: self.resize_requested,
        })
    }
}

/// A resize condition as the status manager caches it.
#[derive(Debug, Clone, PartialEq)]
pub struct ResizeCondition {
    /// Deferred / Infeasible (pending), Error or empty (in progress).
    pub reason: String,
    /// Why, for the condition's message.
    pub message: String,
    /// The pod generation the condition was set for.
    pub generation: Option<i64>,
    /// When it was first set (lastTransitionTime).
    pub since: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time,
}

/// The two resize conditions of one pod.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResizeConditions {
    /// PodResizePending: the kubelet has not allocated the resize.
    pub pending: Option<ResizeCondition>,
    /// PodResizeInProgress: allocated, not yet applied to every running container.
    pub in_progress: Option<ResizeCondition>,
}

/// The node's allocations, shared by the pod manager (which allocates) and the pod workers (which
/// actuate and report).
#[derive(Debug, Clone, Default)]
pub struct Allocations {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    /// Where the records are kept; none: memory only (tests).
    path: Option<PathBuf>,
    pods: Mutex<BTreeMap<String, PodRecord>>,
    /// The records last written (the file is rewritten only when they change).
    written: Mutex<Vec<u8>>,
    conditions: Mutex<HashMap<String, ResizeConditions>>,
}

/// The resizable containers of `pod` (the kubelet's IsResizableContainer: regular and init
/// containers, InPlacePodVerticalScalingInitContainers being GA in v1.37).
fn resizable_containers(pod: &Pod) -> impl Iterator<Item = &Container> {
    let spec = pod.spec.as_ref();
    let init = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default();
    let regular = spec.map(|s| s.containers.as_slice()).unwrap_or_default();
    init.iter().chain(regular)
}

/// One of a container's four resizable values (cpu / memory, request / limit) in thousandths,
/// None when unset.
pub fn value(r: &ResourceRequirements, limit: bool, resource: &str) -> Option<i128> {
    let list = if limit { &r.limits } else { &r.requests };
    let q = list.as_ref()?.get(resource)?;
    parse_quantity(&q.0).ok().map(|q| q.milli_value() as i128)
}

/// True when `a` and `b` ask for the same cpu and memory (the only resources a resize changes),
/// compared by value as the kubelet's semantic equality of quantities ("1" equals "1000m").
pub fn same_resources(a: &ResourceRequirements, b: &ResourceRequirements) -> bool {
    [false, true].iter().all(|&limit| {
        ["cpu", "memory"]
            .iter()
            .all(|r| value(a, limit, r) == value(b, limit, r))
    })
}

/// `pod` with the resources of each container `resources` names replaced (init and regular
/// containers alike).
pub fn with_resources(pod: &Pod, resources: impl Fn(&str) -> Option<ResourceRequirements>) -> Pod {
    let mut out = pod.clone();
    if let Some(spec) = out.spec.as_mut() {
        let lists = [
            spec.init_containers.as_deref_mut(),
            Some(spec.containers.as_mut_slice()),
        ];
        for c in lists.into_iter().flatten().flatten() {
            if let Some(r) = resources(&c.name) {
                c.resources = Some(r);
            }
        }
    }
    out
}

fn resources_of(c: &Container) -> ResourceRequirements {
    c.resources.clone().unwrap_or_default()
}

impl Allocations {
    /// Reads the records kept at `path` (none yet, or unreadable: empty, with a warning).
    pub fn load(path: PathBuf) -> Self {
        let pods = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                warn!(path = %path.display(), error = %e, "pod resources state unreadable; starting empty");
                BTreeMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                warn!(path = %path.display(), error = %e, "pod resources state unreadable; starting empty");
                BTreeMap::new()
            }
        };
        let written = serde_json::to_vec(&pods).unwrap_or_default();
        Allocations {
            inner: Arc::new(Inner {
                path: Some(path),
                pods: Mutex::new(pods),
                written: Mutex::new(written),
                conditions: Mutex::default(),
            }),
        }
    }

    fn pods(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PodRecord>> {
        self.inner.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn conditions_mut(&self) -> std::sync::MutexGuard<'_, HashMap<String, ResizeConditions>> {
        self.inner
            .conditions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, pods: &BTreeMap<String, PodRecord>) {
        let Some(path) = &self.inner.path else {
            return;
        };
        let kept: BTreeMap<&String, PodRecord> = pods
            .iter()
            .filter_map(|(uid, r)| Some((uid, r.kept()?)))
            .collect();
        let bytes = serde_json::to_vec(&kept).unwrap_or_default();
        let mut written = self.inner.written.lock().unwrap_or_else(|e| e.into_inner());
        if *written == bytes {
            return;
        }
        *written = bytes.clone();
        if let Err(e) = crate::atomic_file::write(path, &bytes, 0o600) {
            warn!(path = %path.display(), error = %e, "cannot write the pod resources state");
        }
    }

    /// Applies `change` to the pod's record (made if missing when `create`); the file is
    /// rewritten only when what it keeps of this pod changed, so a container start or an
    /// admission with nothing to keep does not go over every pod's record.
    fn update(&self, uid: &str, create: bool, change: impl FnOnce(&mut PodRecord)) {
        let mut pods = self.pods();
        let record = match pods.get_mut(uid) {
            Some(r) => r,
            None if create => pods.entry(uid.to_string()).or_default(),
            None => return,
        };
        let before = record.kept();
        change(record);
        if record.kept() != before {
            self.save(&pods);
        }
    }

    /// True when the pod has an allocation (it was admitted).
    pub fn has(&self, uid: &str) -> bool {
        self.pods().contains_key(uid)
    }

    /// Records the pod's current spec resources as allocated (admission, or an accepted resize).
    pub fn allocate(&self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let allocated: BTreeMap<String, ResourceRequirements> = resizable_containers(pod)
            .map(|c| (c.name.clone(), resources_of(c)))
            .collect();
        self.update(&uid, true, |record| {
            record.allocated = allocated;
            record.resize_requested = false;
        });
    }

    /// The pod as allocated (the kubelet's UpdatePodFromAllocation): its containers' resources
    /// replaced by their allocation where that differs; the same pod when nothing differs.
    pub fn allocated_pod(&self, pod: &Arc<Pod>) -> Arc<Pod> {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let pods = self.pods();
        let Some(record) = pods.get(uid) else {
            return pod.clone();
        };
        let differs = |c: &Container| {
            record.allocated.get(&c.name).is_some_and(|a| {
                // Equal as written is equal; only values written differently are parsed.
                let written_same = c
                    .resources
                    .as_ref()
                    .map_or(*a == ResourceRequirements::default(), |r| r == a);
                !written_same && !same_resources(a, &resources_of(c))
            })
        };
        if !resizable_containers(pod).any(differs) {
            return pod.clone();
        }
        Arc::new(with_resources(pod, |name| {
            record.allocated.get(name).cloned()
        }))
    }

    /// True when the spec asks for other resources than allocated: a resize to decide. Noted in
    /// the pod's record, which then survives a restart.
    pub fn resize_requested(&self, pod: &Arc<Pod>) -> bool {
        let requested = !Arc::ptr_eq(&self.allocated_pod(pod), pod);
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        self.update(uid, false, |r| r.resize_requested = requested);
        requested
    }

    /// The resources container `name` of the pod runs with, when its instance `container_id`
    /// has a record.
    pub fn actuated(
        &self,
        uid: &str,
        name: &str,
        container_id: &str,
    ) -> Option<ResourceRequirements> {
        let pods = self.pods();
        let a = pods.get(uid)?.actuated.get(name)?;
        (a.container_id == container_id).then(|| a.resources.clone())
    }

    /// Records what instance `container_id` of container `name` was created or updated with.
    pub fn set_actuated(
        &self,
        uid: &str,
        name: &str,
        container_id: &str,
        resources: ResourceRequirements,
    ) {
        let new = Actuated {
            container_id: container_id.to_string(),
            resources,
        };
        self.update(uid, true, |record| {
            record.actuated.insert(name.to_string(), new);
        });
    }

    /// Forgets a pod that is gone.
    pub fn remove(&self, uid: &str) {
        self.conditions_mut().remove(uid);
        let mut pods = self.pods();
        if pods.remove(uid).is_some() {
            self.save(&pods);
        }
    }

    /// Forgets every pod but `keep` (the kubelet's RemoveOrphanedPods).
    pub fn retain(&self, keep: &dyn Fn(&str) -> bool) {
        self.conditions_mut().retain(|uid, _| keep(uid));
        let mut pods = self.pods();
        let before = pods.len();
        pods.retain(|uid, _| keep(uid));
        if pods.len() != before {
            self.save(&pods);
        }
    }

    /// The pod's resize conditions, for its status.
    pub fn conditions(&self, uid: &str) -> ResizeConditions {
        self.conditions_mut().get(uid).cloned().unwrap_or_default()
    }

    /// Takes the resize conditions the API holds for a pod first seen (the kubelet's
    /// BackfillPodResizeConditions, after a restart).
    pub fn backfill(&self, pod: &Pod) {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut out = ResizeConditions::default();
        for c in pod
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_deref())
            .unwrap_or_default()
        {
            let cond = || ResizeCondition {
                reason: c.reason.clone().unwrap_or_default(),
                message: c.message.clone().unwrap_or_default(),
                generation: c.observed_generation,
                since: c
                    .last_transition_time
                    .clone()
                    .unwrap_or_else(crate::status::compute::now),
            };
            match c.type_.as_str() {
                POD_RESIZE_PENDING => out.pending = Some(cond()),
                POD_RESIZE_IN_PROGRESS => out.in_progress = Some(cond()),
                _ => {}
            }
        }
        if out != ResizeConditions::default() {
            self.conditions_mut().entry(uid).or_insert(out);
        }
    }

    /// Sets PodResizePending (any reason but Infeasible is Deferred); true when its reason or
    /// generation changed (an event is due).
    pub fn set_pending(
        &self,
        uid: &str,
        reason: &str,
        message: &str,
        generation: Option<i64>,
    ) -> bool {
        let reason = if reason == INFEASIBLE {
            INFEASIBLE
        } else {
            DEFERRED
        };
        let mut all = self.conditions_mut();
        let entry = all.entry(uid.to_string()).or_default();
        let changed = entry
            .pending
            .as_ref()
            .is_none_or(|p| p.reason != reason || p.generation != generation);
        let since = match &entry.pending {
            Some(p) if p.reason == reason && p.message == message => p.since.clone(),
            _ => crate::status::compute::now(),
        };
        entry.pending = Some(ResizeCondition {
            reason: reason.into(),
            message: message.into(),
            generation,
            since,
        });
        changed
    }

    /// Clears PodResizePending.
    pub fn clear_pending(&self, uid: &str) {
        if let Some(c) = self.conditions_mut().get_mut(uid) {
            c.pending = None;
        }
    }

    /// Sets PodResizeInProgress, keeping an existing condition's generation (and its reason and
    /// message when none is given); the generation it carries and whether anything changed.
    pub fn set_in_progress(
        &self,
        uid: &str,
        reason: &str,
        message: &str,
        generation: Option<i64>,
    ) -> (Option<i64>, bool) {
        let mut all = self.conditions_mut();
        let entry = all.entry(uid.to_string()).or_default();
        let (reason, message, generation, since) = match &entry.in_progress {
            Some(c) => {
                let (r, m) = if reason.is_empty() && message.is_empty() {
                    (c.reason.clone(), c.message.clone())
                } else {
                    (reason.to_string(), message.to_string())
                };
                let since = if r == c.reason && m == c.message {
                    c.since.clone()
                } else {
                    crate::status::compute::now()
                };
                (r, m, c.generation, since)
            }
            None => (
                reason.to_string(),
                message.to_string(),
                generation,
                crate::status::compute::now(),
            ),
        };
        let new = ResizeCondition {
            reason,
            message,
            generation,
            since,
        };
        let changed = entry.in_progress.as_ref() != Some(&new);
        entry.in_progress = Some(new);
        (generation, changed)
    }

    /// Clears PodResizeInProgress; the generation it carried when there was one.
    pub fn clear_in_progress(&self, uid: &str) -> Option<Option<i64>> {
        self.conditions_mut()
            .get_mut(uid)?
            .in_progress
            .take()
            .map(|c| c.generation)
    }
}

pub use crate::status::{POD_RESIZE_IN_PROGRESS, POD_RESIZE_PENDING};
/// A resize the node cannot carry out whatever else runs there.
pub const INFEASIBLE: &str = "Infeasible";
/// A resize that waits for room on the node.
pub const DEFERRED: &str = "Deferred";

impl ResizeConditions {
    /// The conditions as the pod status carries them (status True, lastProbeTime the
    /// transition's, as the kubelet's updatedPodResizeCondition).
    pub fn to_pod_conditions(&self) -> Vec<PodCondition> {
        let make = |kind: &str, c: &ResizeCondition| PodCondition {
            type_: kind.to_string(),
            status: "True".into(),
            reason: (!c.reason.is_empty()).then(|| c.reason.clone()),
            message: (!c.message.is_empty()).then(|| c.message.clone()),
            observed_generation: c.generation,
            last_probe_time: Some(c.since.clone()),
            last_transition_time: Some(c.since.clone()),
        };
        let mut out = Vec::new();
        if let Some(c) = &self.pending {
            out.push(make(POD_RESIZE_PENDING, c));
        }
        if let Some(c) = &self.in_progress {
            out.push(make(POD_RESIZE_IN_PROGRESS, c));
        }
        out
    }
}

/// The resize event's message (the kubelet's podResizeMessage): `prefix: ` then the JSON of the
/// allocated containers' resources, the generation and the error if any.
pub fn resize_message(prefix: &str, pod: &Pod, generation: Option<i64>, error: &str) -> String {
    let entry = |c: &Container| serde_json::json!({"name": c.name, "resources": c.resources.clone().unwrap_or_default()});
    let spec = pod.spec.as_ref();
    let init: Vec<_> = spec
        .and_then(|s| s.init_containers.as_deref())
        .unwrap_or_default()
        .iter()
        .map(entry)
        .collect();
    let regular: Vec<_> = spec
        .map(|s| s.containers.as_slice())
        .unwrap_or_default()
        .iter()
        .map(entry)
        .collect();
    // Go's field order (initContainers, containers, generation, error), not sorted keys.
    let mut fields = Vec::new();
    if !init.is_empty() {
        fields.push(format!(
            "\"initContainers\":{}",
            serde_json::Value::from(init)
        ));
    }
    if !regular.is_empty() {
        fields.push(format!(
            "\"containers\":{}",
            serde_json::Value::from(regular)
        ));
    }
    fields.push(format!("\"generation\":{}", generation.unwrap_or(0)));
    if !error.is_empty() {
        fields.push(format!("\"error\":{}", serde_json::Value::from(error)));
    }
    format!("{prefix}: {{{}}}", fields.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(cpu: &str, mem: &str) -> Arc<Pod> {
        Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"uid": "u1", "generation": 2},
                "spec": {
                    "initContainers": [
                        {"name": "init", "resources": {"requests": {"cpu": "1"}}},
                        {"name": "side", "restartPolicy": "Always",
                         "resources": {"requests": {"cpu": cpu}}}
                    ],
                    "containers": [{"name": "c", "resources": {
                        "requests": {"cpu": cpu, "memory": mem},
                        "limits": {"cpu": cpu, "memory": mem}}}]
                }
            }))
            .unwrap(),
        )
    }

    #[test]
    fn a_pod_runs_as_allocated_until_the_resize_is_accepted() {
        let a = Allocations::default();
        let old = pod("100m", "64Mi");
        a.allocate(&old);
        assert!(a.has("u1"));
        // Same values written differently are no resize.
        let same = pod("0.1", "64Mi");
        assert!(!a.resize_requested(&same));
        let new = pod("200m", "128Mi");
        assert!(a.resize_requested(&new));
        let as_allocated = a.allocated_pod(&new);
        let c = &as_allocated.spec.as_ref().unwrap().containers[0];
        assert_eq!(value(c.resources.as_ref().unwrap(), true, "cpu"), Some(100));
        // Init containers are resizable too (the sidecar here).
        let side = &as_allocated
            .spec
            .as_ref()
            .unwrap()
            .init_containers
            .as_ref()
            .unwrap()[1];
        assert_eq!(
            value(side.resources.as_ref().unwrap(), false, "cpu"),
            Some(100)
        );
        a.allocate(&new);
        assert!(!a.resize_requested(&new));
    }

    #[test]
    fn only_what_a_restart_needs_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let a = Allocations::load(path.clone());
        a.allocate(&pod("100m", "64Mi"));
        let c = |p: &Arc<Pod>| resources_of(&p.spec.as_ref().unwrap().containers[0]);
        // Running as allocated with the spec unchanged: nothing to keep.
        a.set_actuated("u1", "c", "id1", c(&pod("100m", "64Mi")));
        assert_eq!(std::fs::read(&path).unwrap_or_default(), b"");
        assert!(!Allocations::load(path.clone()).has("u1"));
        // A deferred resize and a container not yet resized are kept.
        assert!(a.resize_requested(&pod("300m", "64Mi")));
        a.set_actuated("u1", "c", "id1", c(&pod("50m", "64Mi")));
        let b = Allocations::load(path.clone());
        assert!(b.resize_requested(&pod("300m", "64Mi")));
        assert_eq!(b.actuated("u1", "c", "id1"), Some(c(&pod("50m", "64Mi"))));
        // Another instance of the container has no record.
        assert_eq!(b.actuated("u1", "c", "id2"), None);
        b.retain(&|uid| uid != "u1");
        assert!(!Allocations::load(path).has("u1"));
    }

    #[test]
    fn conditions_keep_their_generation_and_pending_reasons_fold_to_deferred() {
        let a = Allocations::default();
        assert!(a.set_pending(
            "u1",
            "OutOfcpu",
            "Node didn't have enough resource",
            Some(2)
        ));
        assert!(!a.set_pending(
            "u1",
            "OutOfmemory",
            "Node didn't have enough resource",
            Some(2)
        ));
        assert_eq!(a.conditions("u1").pending.unwrap().reason, DEFERRED);
        assert!(a.set_pending("u1", INFEASIBLE, "no", Some(2)));
        a.clear_pending("u1");
        assert_eq!(a.set_in_progress("u1", "", "", Some(3)), (Some(3), true));
        // A later set keeps the first generation; an error sets the reason.
        assert_eq!(a.set_in_progress("u1", "", "", Some(4)), (Some(3), false));
        assert_eq!(
            a.set_in_progress("u1", "Error", "boom", Some(4)),
            (Some(3), true)
        );
        let conds = a.conditions("u1").to_pod_conditions();
        assert_eq!(conds.len(), 1);
        assert_eq!(conds[0].type_, POD_RESIZE_IN_PROGRESS);
        assert_eq!(conds[0].reason.as_deref(), Some("Error"));
        assert_eq!(a.clear_in_progress("u1"), Some(Some(3)));
        assert_eq!(a.clear_in_progress("u1"), None);
    }

    #[test]
    fn the_event_message_is_the_kubelets_summary() {
        let m = resize_message("Pod resize started", &pod("200m", "128Mi"), Some(2), "");
        assert!(
            m.starts_with("Pod resize started: {\"initContainers\":[{\"name\":\"init\""),
            "{m}"
        );
        assert!(m.contains("{\"name\":\"c\",\"resources\":{\"limits\":{\"cpu\":\"200m\",\"memory\":\"128Mi\"},\"requests\":{\"cpu\":\"200m\",\"memory\":\"128Mi\"}}}"), "{m}");
        assert!(m.ends_with(",\"generation\":2}"), "{m}");
    }
}
