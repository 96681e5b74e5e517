//! The runtime as a pod worker sees it: the seam its unit tests script. [`CriClient`] implements
//! it; tests implement it with canned answers. It covers what observing a pod asks today; the
//! worker's other calls (create, start, stop, remove) join it as their steps get table tests.

use std::future::Future;

use bosun_cri::CriClient;
use bosun_cri::types::{Container, ContainerFilter, ContainerStatus, PodSandbox, PodSandboxFilter};

/// The runtime calls a pod worker makes to observe its pod.
pub trait PodRuntime: Send + Sync {
    /// ListPodSandbox with `filter`.
    fn list_pod_sandbox(
        &self,
        filter: PodSandboxFilter,
    ) -> impl Future<Output = bosun_cri::Result<Vec<PodSandbox>>> + Send;
    /// ListContainers with `filter`.
    fn list_containers(
        &self,
        filter: ContainerFilter,
    ) -> impl Future<Output = bosun_cri::Result<Vec<Container>>> + Send;
    /// ContainerStatus of container `id` (not verbose); a default status when the runtime sends
    /// none.
    fn container_status(
        &self,
        id: &str,
    ) -> impl Future<Output = bosun_cri::Result<ContainerStatus>> + Send;
}

impl PodRuntime for CriClient {
    async fn list_pod_sandbox(
        &self,
        filter: PodSandboxFilter,
    ) -> bosun_cri::Result<Vec<PodSandbox>> {
        CriClient::list_pod_sandbox(self, Some(filter)).await
    }

    async fn list_containers(&self, filter: ContainerFilter) -> bosun_cri::Result<Vec<Container>> {
        CriClient::list_containers(self, Some(filter)).await
    }

    async fn container_status(&self, id: &str) -> bosun_cri::Result<ContainerStatus> {
        let r = CriClient::container_status(self, id, false).await?;
        Ok(r.status.unwrap_or_default())
    }
}
