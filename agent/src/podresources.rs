//! The kubelet's pod-resources v1 API (`PodResourcesLister`) on `<root-dir>/pod-resources/kubelet.sock`:
//! which pods and containers run here and what exclusive resources they hold: the devices the
//! device manager allocated (List, Get) and the healthy devices (GetAllocatableResources). Bosun
//! has no static CPU manager or memory manager, so CPU ids and memory are always empty.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bosun_proto::podresources_v1 as pr;
use k8s_openapi::api::core::v1::Pod;
use pr::pod_resources_lister_server::{PodResourcesLister, PodResourcesListerServer};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::devicemanager::DeviceManager;
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
    devices: DeviceManager,
}

/// Devices by resource as the API lists them (a NUMA node as topology when there is one).
fn container_devices(
    by_resource: std::collections::BTreeMap<String, Vec<(String, i64)>>,
) -> Vec<pr::ContainerDevices> {
    let mut out = Vec::new();
    for (resource, ids) in by_resource {
        // One entry per NUMA node, as the kubelet's containerDevicesFromResourceDeviceInstances.
        let mut by_numa: std::collections::BTreeMap<i64, Vec<String>> = Default::default();
        for (id, numa) in ids {
            by_numa.entry(numa).or_default().push(id);
        }
        for (numa, device_ids) in by_numa {
            out.push(pr::ContainerDevices {
                resource_name: resource.clone(),
                device_ids,
                topology: (numa >= 0).then(|| pr::TopologyInfo {
                    nodes: vec![pr::NumaNode { id: numa }],
                }),
            });
        }
    }
    out
}

/// True for a pod the kubelet counts active (not Succeeded or Failed).
fn active(p: &Pod) -> bool {
    !matches!(
        p.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// One pod's resources: its app containers and its restartable (sidecar) init containers, with
/// the devices each holds.
fn resources(p: &Pod, devices: &DeviceManager) -> pr::PodResources {
    let uid = p.metadata.uid.as_deref().unwrap_or_default();
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
                devices: container_devices(devices.container_devices(uid, &c.name)),
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
            pod_resources: pods.iter().map(|p| resources(p, &self.devices)).collect(),
        }))
    }

    async fn get_allocatable_resources(
        &self,
        _: Request<pr::AllocatableResourcesRequest>,
    ) -> Result<Response<pr::AllocatableResourcesResponse>, Status> {
        Ok(Response::new(pr::AllocatableResourcesResponse {
            devices: container_devices(self.devices.allocatable_devices()),
            ..Default::default()
        }))
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
                pod_resources: Some(resources(&p, &self.devices)),
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
    (statuses, devices): (StatusStore, DeviceManager),
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
            .add_service(PodResourcesListerServer::new(Lister { statuses, devices }))
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
        let dir = tempfile::tempdir().unwrap();
        let r = resources(&pod("Running"), &DeviceManager::new(dir.path()));
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
