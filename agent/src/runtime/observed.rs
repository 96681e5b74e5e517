//! What the runtime holds for each pod, from one ListPodSandbox + ListContainers relist.

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

fn group(sandboxes: Vec<PodSandbox>, containers: Vec<Container>) -> HashMap<String, ObservedPod> {
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
        pod.sandboxes.push(ObservedSandbox {
            ready: s.state == PodSandboxState::SandboxReady as i32,
            attempt: s.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
            created_at: s.created_at,
            id: s.id,
        });
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
        pod.containers.push(ObservedContainer {
            name: c
                .labels
                .get(labels::CONTAINER_NAME)
                .cloned()
                .unwrap_or_default(),
            sandbox_id: c.pod_sandbox_id,
            state: ContainerState::try_from(c.state).unwrap_or(ContainerState::ContainerUnknown),
            restart_count: c
                .annotations
                .get(labels::RESTART_COUNT)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0),
            created_at: c.created_at,
            image_ref: c.image_ref,
            init: c
                .annotations
                .get(labels::BOSUN_CONTAINER_KIND)
                .is_some_and(|k| k == "init"),
            id: c.id,
        });
    }
    for pod in pods.values_mut() {
        pod.sandboxes
            .sort_by_key(|c| std::cmp::Reverse(c.created_at));
        pod.containers
            .sort_by_key(|c| std::cmp::Reverse(c.created_at));
    }
    pods
}
