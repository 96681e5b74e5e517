//! The runtime as a pod worker sees it: the seam its unit tests script. [`CriClient`] implements
//! it; tests implement it with canned answers. [`PodObserver`] is what observing a pod reads
//! (`rounds.rs` scripts it to table-test the plan's decisions); [`PodRuntime`] adds every other
//! call a pod worker makes: the sandbox, the image, the containers, the exec of hooks
//! (`worker_tests.rs` scripts it to drive the real worker).

use std::future::Future;
use std::time::Duration;

use bosun_cri::types::{
    AuthConfig, Container, ContainerConfig, ContainerFilter, ContainerStatus, Image,
    LinuxContainerResources, PodSandbox, PodSandboxConfig, PodSandboxFilter, PodSandboxStatus,
    StatusResponse,
};
use bosun_cri::{CriClient, ExecSyncOutput};

/// The runtime calls that observe a pod.
pub trait PodObserver: Send + Sync {
    /// ListPodSandbox with `filter` (none: every sandbox).
    fn list_pod_sandbox(
        &self,
        filter: Option<PodSandboxFilter>,
    ) -> impl Future<Output = bosun_cri::Result<Vec<PodSandbox>>> + Send;
    /// ListContainers with `filter` (none: every container).
    fn list_containers(
        &self,
        filter: Option<ContainerFilter>,
    ) -> impl Future<Output = bosun_cri::Result<Vec<Container>>> + Send;
    /// ContainerStatus of container `id` (not verbose); a default status when the runtime sends
    /// none.
    fn container_status(
        &self,
        id: &str,
    ) -> impl Future<Output = bosun_cri::Result<ContainerStatus>> + Send;
}

/// Every runtime call a pod worker makes.
pub trait PodRuntime: PodObserver + 'static {
    /// The runtime's name (status.containerStatuses[].containerID's scheme).
    fn runtime_name(&self) -> &str;
    /// Status (not verbose): the runtime's conditions and handlers.
    fn status(&self) -> impl Future<Output = bosun_cri::Result<StatusResponse>> + Send;
    /// RunPodSandbox with `handler`; the new sandbox's id.
    fn run_pod_sandbox(
        &self,
        config: PodSandboxConfig,
        handler: &str,
    ) -> impl Future<Output = bosun_cri::Result<String>> + Send;
    /// PodSandboxStatus of sandbox `id` (not verbose).
    fn pod_sandbox_status(
        &self,
        id: &str,
    ) -> impl Future<Output = bosun_cri::Result<Option<PodSandboxStatus>>> + Send;
    /// StopPodSandbox.
    fn stop_pod_sandbox(&self, id: &str) -> impl Future<Output = bosun_cri::Result<()>> + Send;
    /// RemovePodSandbox (its containers with it).
    fn remove_pod_sandbox(&self, id: &str) -> impl Future<Output = bosun_cri::Result<()>> + Send;
    /// ImageStatus: the image if present.
    fn image_status(
        &self,
        image: &str,
    ) -> impl Future<Output = bosun_cri::Result<Option<Image>>> + Send;
    /// PullImage with optional credentials; the image reference.
    fn pull_image(
        &self,
        image: &str,
        auth: Option<AuthConfig>,
    ) -> impl Future<Output = bosun_cri::Result<String>> + Send;
    /// CreateContainer in sandbox `sandbox_id`; the new container's id.
    fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
        sandbox_config: PodSandboxConfig,
    ) -> impl Future<Output = bosun_cri::Result<String>> + Send;
    /// StartContainer.
    fn start_container(&self, id: &str) -> impl Future<Output = bosun_cri::Result<()>> + Send;
    /// StopContainer within `timeout`.
    fn stop_container(
        &self,
        id: &str,
        timeout: Duration,
    ) -> impl Future<Output = bosun_cri::Result<()>> + Send;
    /// ExecSync of `cmd` in container `id` within `timeout` (a hook's exec).
    fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> impl Future<Output = bosun_cri::Result<ExecSyncOutput>> + Send;
    /// UpdateContainerResources of container `id` (an in-place resize).
    fn update_container_resources(
        &self,
        id: &str,
        linux: LinuxContainerResources,
    ) -> impl Future<Output = bosun_cri::Result<()>> + Send;
}

impl PodObserver for CriClient {
    async fn list_pod_sandbox(
        &self,
        filter: Option<PodSandboxFilter>,
    ) -> bosun_cri::Result<Vec<PodSandbox>> {
        CriClient::list_pod_sandbox(self, filter).await
    }

    async fn list_containers(
        &self,
        filter: Option<ContainerFilter>,
    ) -> bosun_cri::Result<Vec<Container>> {
        CriClient::list_containers(self, filter).await
    }

    async fn container_status(&self, id: &str) -> bosun_cri::Result<ContainerStatus> {
        let r = CriClient::container_status(self, id, false).await?;
        Ok(r.status.unwrap_or_default())
    }
}

impl PodRuntime for CriClient {
    fn runtime_name(&self) -> &str {
        &self.runtime_version().runtime_name
    }

    async fn status(&self) -> bosun_cri::Result<StatusResponse> {
        CriClient::status(self, false).await
    }

    async fn run_pod_sandbox(
        &self,
        config: PodSandboxConfig,
        handler: &str,
    ) -> bosun_cri::Result<String> {
        CriClient::run_pod_sandbox(self, config, handler).await
    }

    async fn pod_sandbox_status(&self, id: &str) -> bosun_cri::Result<Option<PodSandboxStatus>> {
        Ok(CriClient::pod_sandbox_status(self, id, false).await?.status)
    }

    async fn stop_pod_sandbox(&self, id: &str) -> bosun_cri::Result<()> {
        CriClient::stop_pod_sandbox(self, id).await
    }

    async fn remove_pod_sandbox(&self, id: &str) -> bosun_cri::Result<()> {
        CriClient::remove_pod_sandbox(self, id).await
    }

    async fn image_status(&self, image: &str) -> bosun_cri::Result<Option<Image>> {
        CriClient::image_status(self, image).await
    }

    async fn pull_image(&self, image: &str, auth: Option<AuthConfig>) -> bosun_cri::Result<String> {
        CriClient::pull_image(self, image, auth, None).await
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
        sandbox_config: PodSandboxConfig,
    ) -> bosun_cri::Result<String> {
        CriClient::create_container(self, sandbox_id, config, sandbox_config).await
    }

    async fn start_container(&self, id: &str) -> bosun_cri::Result<()> {
        CriClient::start_container(self, id).await
    }

    async fn stop_container(&self, id: &str, timeout: Duration) -> bosun_cri::Result<()> {
        CriClient::stop_container(self, id, timeout).await
    }

    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> bosun_cri::Result<ExecSyncOutput> {
        CriClient::exec_sync(self, id, cmd, timeout).await
    }

    async fn update_container_resources(
        &self,
        id: &str,
        linux: LinuxContainerResources,
    ) -> bosun_cri::Result<()> {
        CriClient::update_container_resources(self, id, Some(linux)).await
    }
}
