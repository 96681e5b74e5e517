//! The model of what the runtime holds, parsed from CRI once: each pod's sandboxes and containers
//! from one ListPodSandbox + ListContainers relist (PLEG, stats, GC), and one pod's containers
//! with their status details (the pod worker's plan and the status computed from it).

use std::collections::HashMap;

use bosun_cri::types::{Container, ContainerState, PodSandbox, PodSandboxState};
use bosun_cri::{CriClient, Result};

use super::labels;

/// A sandbox of a pod as CRI lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedSandbox {
    /// CRI sandbox id.
    pub id: String,
    /// True when SANDBOX_READY.
    pub ready: bool,
    /// Sandbox attempt number from its metadata.
    pub attempt: u32,
    /// Creation time, ns since the epoch.
    pub created_at: i64,
}

/// A container of a pod as CRI lists it (status details are fetched separately when needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObservedContainer {
    /// CRI container id.
    pub id: String,
    /// The container's name in the pod spec.
    pub name: String,
    /// The sandbox it runs in.
    pub sandbox_id: String,
    /// CREATED, RUNNING, EXITED or UNKNOWN.
    pub state: ContainerState,
    /// Restart count recorded in its annotations when it was created.
    pub restart_count: u32,
    /// Creation time, ns since the epoch.
    pub created_at: i64,
    /// The image reference it runs.
    pub image_ref: String,
    /// Whether it was started as an init container.
    pub init: bool,
}

impl ObservedSandbox {
    /// The sandbox `s` as CRI lists it.
    pub fn of(s: &PodSandbox) -> ObservedSandbox {
        ObservedSandbox {
            id: s.id.clone(),
            ready: s.state == PodSandboxState::SandboxReady as i32,
            attempt: s.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
            created_at: s.created_at,
        }
    }
}

impl ObservedContainer {
    /// The container `c` as CRI lists it: its spec name, restart count and kind from the labels
    /// and annotations the kubelet (and Bosun) put on it.
    pub fn of(c: &Container) -> ObservedContainer {
        ObservedContainer {
            id: c.id.clone(),
            name: c
                .labels
                .get(labels::CONTAINER_NAME)
                .cloned()
                .unwrap_or_default(),
            sandbox_id: c.pod_sandbox_id.clone(),
            state: ContainerState::try_from(c.state).unwrap_or(ContainerState::ContainerUnknown),
            restart_count: c
                .annotations
                .get(labels::RESTART_COUNT)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            created_at: c.created_at,
            image_ref: c.image_ref.clone(),
            init: c
                .annotations
                .get(labels::BOSUN_CONTAINER_KIND)
                .is_some_and(|k| k == "init"),
        }
    }
}

/// One container instance as observed, with the details its status needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerView {
    /// CRI id.
    pub id: String,
    /// Spec name.
    pub name: String,
    /// Sandbox it belongs to.
    pub sandbox_id: String,
    /// Lifecycle state.
    pub state: RunState,
    /// Restart count of this instance.
    pub restart_count: u32,
    /// Exit code once exited.
    pub exit_code: i32,
    /// Start time, ns since the epoch (0: never started).
    pub started_at: i64,
    /// Finish time, ns since the epoch.
    pub finished_at: i64,
    /// Runtime's reason for the exit (`OOMKilled`, `Completed`, `Error`).
    pub reason: String,
    /// Runtime's message, or the termination message.
    pub message: String,
    /// The image reference (`sha256:...`).
    pub image_ref: String,
    /// The image as the runtime names it (CRI ContainerStatus image), what the kubelet reports as
    /// the status' image; empty when unknown.
    pub image: String,
    /// Creation time, ns since the epoch.
    pub created_at: i64,
    /// The kubelet's hash of the spec it was made from (`io.kubernetes.container.hash`; see
    /// runtime::hash). None when unknown: made by a Bosun that wrote another hash.
    pub spec_hash: Option<String>,
}

/// The lifecycle state of a container instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Created, not started.
    Created,
    /// Running.
    Running,
    /// Exited (see exit code).
    Exited,
    /// The runtime does not know.
    Unknown,
}

impl RunState {
    /// The state of a CRI container state.
    pub fn of(state: i32) -> RunState {
        match ContainerState::try_from(state) {
            Ok(ContainerState::ContainerCreated) => RunState::Created,
            Ok(ContainerState::ContainerRunning) => RunState::Running,
            Ok(ContainerState::ContainerExited) => RunState::Exited,
            _ => RunState::Unknown,
        }
    }
}

/// The newest sandbox, as the plan needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxView {
    /// CRI id.
    pub id: String,
    /// Ready (running) or not.
    pub ready: bool,
    /// Attempt number.
    pub attempt: u32,
}

/// Newest instance of `name` among `containers` (newest first), optionally within one sandbox.
pub fn latest<'a>(
    containers: &'a [ContainerView],
    name: &str,
    sandbox: Option<&str>,
) -> Option<&'a ContainerView> {
    containers
        .iter()
        .find(|c| c.name == name && sandbox.is_none_or(|s| c.sandbox_id == s))
}

/// Everything the runtime holds for one pod UID.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ObservedPod {
    /// Pod name from the labels.
    pub name: String,
    /// Pod namespace from the labels.
    pub namespace: String,
    /// Sandboxes, newest first.
    pub sandboxes: Vec<ObservedSandbox>,
    /// Containers, newest first.
    pub containers: Vec<ObservedContainer>,
}

impl ObservedPod {
    /// The newest sandbox, if any.
    pub fn latest_sandbox(&self) -> Option<&ObservedSandbox> {
        self.sandboxes.first()
    }

    /// The newest instance of the named container.
    pub fn latest_container(&self, name: &str) -> Option<&ObservedContainer> {
        self.containers.iter().find(|c| c.name == name)
    }

    /// True when any container is running or a sandbox is ready.
    pub fn is_active(&self) -> bool {
        self.sandboxes.iter().any(|s| s.ready)
            || self
                .containers
                .iter()
                .any(|c| c.state == ContainerState::ContainerRunning)
    }
}

/// Lists every sandbox and container and groups them by pod UID label; objects without the label
/// (not made by a kubelet) are left out.
pub async fn observe_all(cri: &CriClient) -> Result<HashMap<String, ObservedPod>> {
    let (sandboxes, containers) =
        tokio::try_join!(cri.list_pod_sandbox(None), cri.list_containers(None))?;
    Ok(group(sandboxes, containers))
}

/// Every sandbox and container grouped by the pod UID on its labels (unlabelled ones left out).
pub fn group(
    sandboxes: Vec<PodSandbox>,
    containers: Vec<Container>,
) -> HashMap<String, ObservedPod> {
    let mut pods: HashMap<String, ObservedPod> = HashMap::new();
    for s in sandboxes {
        let Some(uid) = s.labels.get(labels::POD_UID) else {
            continue;
        };
        let pod = pods.entry(uid.clone()).or_default();
        pod.name = s.labels.get(labels::POD_NAME).cloned().unwrap_or_default();
        pod.namespace = s
            .labels
            .get(labels::POD_NAMESPACE)
            .cloned()
            .unwrap_or_default();
        pod.sandboxes.push(ObservedSandbox::of(&s));
    }
    for c in containers {
        let Some(uid) = c.labels.get(labels::POD_UID) else {
            continue;
        };
        let pod = pods.entry(uid.clone()).or_default();
        if pod.name.is_empty() {
            pod.name = c.labels.get(labels::POD_NAME).cloned().unwrap_or_default();
            pod.namespace = c
                .labels
                .get(labels::POD_NAMESPACE)
                .cloned()
                .unwrap_or_default();
        }
        pod.containers.push(ObservedContainer::of(&c));
    }
    for pod in pods.values_mut() {
        pod.sandboxes
            .sort_by_key(|c| std::cmp::Reverse(c.created_at));
        pod.containers
            .sort_by_key(|c| std::cmp::Reverse(c.created_at));
    }
    pods
}
