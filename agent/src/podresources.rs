//! The kubelet's pod-resources v1 API (`PodResourcesLister`) on `<root-dir>/pod-resources/kubelet.sock`:
//! which pods and containers run here and what exclusive resources they hold. Bosun has no device
//! plugins, static CPU manager or memory manager, so devices, CPU ids and memory are always empty.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bosun_proto::podresources_v1 as pr;
use k8s_openapi::api::core::v1::Pod;
use pr::pod_resources_lister_server::{PodResourcesLister, PodResourcesListerServer};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::status::StatusStore;

/// Errors of starting the pod-resources server.
#[derive(Debug, thiserror::Error)]
pub enum PodResourcesError {
    /// The socket could not be created.
    #[error("pod-resources: cannot listen on {path}: {source}")]
    Listen {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        source: std::io::Error,
    },
}

/// The socket path under the root dir, as the kubelet places it.
pub fn socket_path(root_dir: &Path) -> PathBuf {
    root_dir.join("pod-resources").join("kubelet.sock")
}

/// Serves the API from the pods in `statuses`.
struct Lister {
    statuses: StatusStore,
}

/// True for a pod the kubelet counts active (not Succeeded or Failed).
fn active(p: &Pod) -> bool {
    !matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// One pod's resources: its app containers and its restartable (sidecar) init containers.
fn resources(p: &Pod) -> pr::PodResources {
    let spec = p.spec.as_ref();
    let sidecars = spec
        .and_then(|s| s.init_containers.as_ref())
        .into_iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    let apps = spec.into_iter().flat_map(|s| s.containers.iter());
    pr::PodResources {
        name: p.metadata.name.clone().unwrap_or_default(),
        namespace: p.metadata.namespace.clone().unwrap_or_default(),
        containers: sidecars
            .chain(apps)
            .map(|c| pr::ContainerResources {
                name: c.name.clone(),
                ..Default::default()
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl PodResourcesLister for Lister {
    async fn list(
        &self,
        _: Request<pr::ListPodResourcesRequest>,
    ) -> Result<Response<pr::ListPodResourcesResponse>, Status> {
        let mut pods: Vec<Arc<Pod>> = self
            .statuses
            .pods()
            .into_iter()
            .filter(|p| active(p))
            .collect();
        pods.sort_by(|a, b| {
            (&a.metadata.namespace, &a.metadata.name)
                .cmp(&(&b.metadata.namespace, &b.metadata.name))
        });
        Ok(Response::new(pr::ListPodResourcesResponse {
            pod_resources: pods.iter().map(|p| resources(p)).collect(),
        }))
    }

    async fn get_allocatable_resources(
        &self,
        _: Request<pr::AllocatableResourcesRequest>,
    ) -> Result<Response<pr::AllocatableResourcesResponse>, Status> {
        Ok(Response::new(pr::AllocatableResourcesResponse::default()))
    }

    async fn get(
        &self,
        req: Request<pr::GetPodResourcesRequest>,
    ) -> Result<Response<pr::GetPodResourcesResponse>, Status> {
        let r = req.into_inner();
        let pod = self.statuses.pods().into_iter().find(|p| {
            p.metadata.name.as_deref() == Some(r.pod_name.as_str())
                && p.metadata.namespace.as_deref() == Some(r.pod_namespace.as_str())
                && active(p)
        });
        match pod {
            Some(p) => Ok(Response::new(pr::GetPodResourcesResponse {
                pod_resources: Some(resources(&p)),
            })),
            None => Err(Status::not_found(format!(
                "pod {} in namespace {} not found",
                r.pod_name, r.pod_namespace
            ))),
        }
    }
}

/// Binds the socket (replacing a stale one) and serves until `cancel`.
pub fn spawn(
    root_dir: &Path,
    statuses: StatusStore,
    cancel: CancellationToken,
) -> Result<(), PodResourcesError> {
    let path = socket_path(root_dir);
    let listen = |path: &Path| -> std::io::Result<tokio::net::UnixListener> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))?;
        }
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        tokio::net::UnixListener::bind(path)
    };
    let listener = listen(&path).map_err(|source| PodResourcesError::Listen {
        path: path.clone(),
        source,
    })?;
    info!(socket = %path.display(), "pod-resources API listening");
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let served = tonic::transport::Server::builder()
            .add_service(PodResourcesListerServer::new(Lister { statuses }))
            .serve_with_incoming_shutdown(incoming, cancel.cancelled())
            .await;
        if let Err(e) = served {
            warn!(error = %e, "pod-resources server stopped");
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(phase: &str) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u"},
            "spec": {
                "initContainers": [
                    {"name": "setup"},
                    {"name": "proxy", "restartPolicy": "Always"}
                ],
                "containers": [{"name": "main"}, {"name": "side"}]
            },
            "status": {"phase": phase}
        }))
        .unwrap()
    }

    #[test]
    fn resources_list_app_and_sidecar_containers_without_devices() {
        let r = resources(&pod("Running"));
        let names: Vec<&str> = r.containers.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["proxy", "main", "side"]);
        assert!(
            r.containers
                .iter()
                .all(|c| c.devices.is_empty() && c.cpu_ids.is_empty() && c.memory.is_empty())
        );
        assert!(active(&pod("Running")) && active(&pod("Pending")));
        assert!(!active(&pod("Succeeded")) && !active(&pod("Failed")));
    }
}
