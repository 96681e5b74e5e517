//! What the read-only endpoints ask the container runtime (the seam unit tests replace): one
//! container's log path and state (`/containerLogs`), and the pods running (`/runningpods/`).

use std::path::PathBuf;

use bosun_cri::CriClient;
use bosun_cri::types::{
    ContainerState, ContainerStateValue, PodSandboxState, PodSandboxStateValue,
};
use futures::future::BoxFuture;

/// One container as the runtime reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    /// The log file the runtime writes (absolute).
    pub log_path: PathBuf,
    /// True while it runs.
    pub running: bool,
}

/// A pod with a ready sandbox, as the runtime sees it (the kubelet's `kubecontainer.Pod`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunningPod {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// UID.
    pub uid: String,
    /// Its running containers: (name, image).
    pub containers: Vec<(String, String)>,
}

/// Why the runtime could not answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuntimeError {
    /// The runtime is not reachable right now.
    #[error("container runtime unavailable: {0}")]
    Unavailable(String),
    /// Any other failure (not found included).
    #[error("{0}")]
    Failed(String),
}

/// The runtime questions of the read-only endpoints.
pub trait RuntimeView: Send + Sync {
    /// Log path and state of container `id`.
    fn container(&self, id: &str) -> BoxFuture<'_, Result<ContainerInfo, RuntimeError>>;
    /// The pods with a ready sandbox and their running containers.
    fn running_pods(&self) -> BoxFuture<'_, Result<Vec<RunningPod>, RuntimeError>>;
}

fn runtime_error(e: bosun_cri::CriError) -> RuntimeError {
    if e.is_unavailable() {
        RuntimeError::Unavailable(e.to_string())
    } else {
        RuntimeError::Failed(e.to_string())
    }
}

impl RuntimeView for CriClient {
    fn container(&self, id: &str) -> BoxFuture<'_, Result<ContainerInfo, RuntimeError>> {
        let id = id.to_string();
        Box::pin(async move {
            let r = self
                .container_status(&id, false)
                .await
                .map_err(runtime_error)?;
            let s = r
                .status
                .ok_or_else(|| RuntimeError::Failed("container status is nil".into()))?;
            Ok(ContainerInfo {
                log_path: PathBuf::from(s.log_path),
                running: s.state == ContainerState::ContainerRunning as i32,
            })
        })
    }

    fn running_pods(&self) -> BoxFuture<'_, Result<Vec<RunningPod>, RuntimeError>> {
        Box::pin(async move {
            let sandboxes = self
                .list_pod_sandbox(Some(bosun_cri::types::PodSandboxFilter {
                    state: Some(PodSandboxStateValue {
                        state: PodSandboxState::SandboxReady as i32,
                    }),
                    ..Default::default()
                }))
                .await
                .map_err(runtime_error)?;
            let containers = self
                .list_containers(Some(bosun_cri::types::ContainerFilter {
                    state: Some(ContainerStateValue {
                        state: ContainerState::ContainerRunning as i32,
                    }),
                    ..Default::default()
                }))
                .await
                .map_err(runtime_error)?;
            let mut pods: Vec<RunningPod> = sandboxes
                .iter()
                .filter_map(|s| {
                    let m = s.metadata.as_ref()?;
                    let containers = containers
                        .iter()
                        .filter(|c| c.pod_sandbox_id == s.id)
                        .map(|c| {
                            let name = c.metadata.as_ref().map(|m| m.name.clone());
                            let image = c.image.as_ref().map(|i| i.image.clone());
                            (name.unwrap_or_default(), image.unwrap_or_default())
                        })
                        .collect();
                    Some(RunningPod {
                        namespace: m.namespace.clone(),
                        name: m.name.clone(),
                        uid: m.uid.clone(),
                        containers,
                    })
                })
                .collect();
            pods.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
            Ok(pods)
        })
    }
}
