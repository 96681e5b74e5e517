//! The CRI client: one lazily dialled channel, a deadline on every call, one retry of idempotent
//! calls when the runtime was restarted under us.

use std::future::Future;
use std::time::{Duration, Instant};

use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::Channel;
use tracing::{debug, warn};

use crate::endpoint::Endpoint;
use crate::error::{CriError, Result};

/// gRPC messages from the runtime may be large (ListContainers on a full node): the kubelet allows 16 MiB.
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

/// Deadlines for CRI calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Status, list, stats and other quick calls. Default 10 s.
    pub quick: Duration,
    /// Calls that do real work: RunPodSandbox, PullImage, create/start/stop/remove. Default 2 min
    /// (the kubelet's runtimeRequestTimeout).
    pub long: Duration,
    /// Dialling the socket. Default 5 s.
    pub connect: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            quick: Duration::from_secs(10),
            long: Duration::from_secs(120),
            connect: Duration::from_secs(5),
        }
    }
}

/// Name and version of the runtime behind the endpoint, from the CRI Version call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RuntimeVersion {
    /// The version of the runtime API the runtime implements: `0.1.0` (the kubelet's
    /// kubeRuntimeAPIVersion, what containerd, CRI-O and the fake runtime answer).
    pub version: String,
    /// e.g. `containerd`.
    pub runtime_name: String,
    /// e.g. `1.6.20~ds1`.
    pub runtime_version: String,
    /// The CRI API version the runtime names, e.g. `v1` (containerd) or `0.1.0`
    /// (k8s.io/cri-api's fake runtime): informational, as for the kubelet.
    pub runtime_api_version: String,
}

/// The runtime API version the kubelet accepts (kuberuntime's kubeRuntimeAPIVersion).
pub const RUNTIME_API_VERSION: &str = "0.1.0";

impl RuntimeVersion {
    /// Whether the runtime mounts OCI images as volumes (CRI Mount.image): containerd from 2.1,
    /// CRI-O from 1.31; another runtime is trusted to say so itself. The error says which
    /// version would.
    pub fn mounts_images(&self) -> std::result::Result<(), String> {
        let need = match self.runtime_name.as_str() {
            "containerd" => (2, 1),
            "cri-o" => (1, 31),
            _ => return Ok(()),
        };
        let v = self.runtime_version.trim_start_matches('v');
        let mut parts = v.split(|c: char| !c.is_ascii_digit());
        let mut next = || parts.next().and_then(|p| p.parse::<u32>().ok());
        let have = (next().unwrap_or(0), next().unwrap_or(0));
        if have >= need {
            Ok(())
        } else {
            Err(format!(
                "the container runtime {} {} cannot mount images as volumes (CRI Mount.image needs {} {}.{} or later)",
                self.runtime_name, self.runtime_version, self.runtime_name, need.0, need.1
            ))
        }
    }

    /// The form the kubelet reports as nodeInfo.containerRuntimeVersion: `containerd://1.6.20~ds1`.
    pub fn node_info_string(&self) -> String {
        format!("{}://{}", self.runtime_name, self.runtime_version)
    }

    /// Whether the kubelet would run on this runtime: the v1 service answered Version (so it
    /// speaks CRI v1, as cri-client's validateServiceConnection decides) and its `version` is
    /// [`RUNTIME_API_VERSION`] (NewKubeGenericRuntimeManager's check); the free-form
    /// `runtime_api_version` is only logged.
    pub fn is_supported(&self) -> bool {
        self.version == RUNTIME_API_VERSION
    }
}

/// Whether a call may be sent again after a transport failure without doing its work twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads and idempotent writes (stop, remove, status): retried once on Unavailable.
    Once,
    /// Creates: sent once.
    Never,
}

/// An async client of a CRI v1 runtime: RuntimeService and ImageService on one endpoint.
#[derive(Clone)]
pub struct CriClient {
    endpoint: Endpoint,
    endpoint_text: String,
    channel: Channel,
    timeouts: Timeouts,
    version: RuntimeVersion,
    observer: Option<Observer>,
}

/// Called after every CRI call with the method name (`CreateContainer`), how long it took
/// (retries included) and whether it succeeded: the hook metrics hang on.
pub type Observer = std::sync::Arc<dyn Fn(&'static str, Duration, bool) + Send + Sync>;

impl std::fmt::Debug for CriClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CriClient")
            .field("endpoint", &self.endpoint_text)
            .field("version", &self.version)
            .finish()
    }
}

impl CriClient {
    /// Dials `endpoint`, checks that the runtime speaks CRI v1 and records its name and version.
    pub async fn connect(endpoint: &str, timeouts: Timeouts) -> Result<Self> {
        let parsed = Endpoint::parse(endpoint)?;
        let channel = parsed.channel(timeouts.connect)?;
        let mut client = CriClient {
            endpoint_text: parsed.to_string(),
            endpoint: parsed,
            channel,
            timeouts,
            version: RuntimeVersion {
                version: String::new(),
                runtime_name: String::new(),
                runtime_version: String::new(),
                runtime_api_version: String::new(),
            },
            observer: None,
        };
        let v = client.version().await?;
        if !v.is_supported() {
            return Err(CriError::UnsupportedVersion {
                endpoint: client.endpoint_text.clone(),
                runtime: format!("{} {}", v.runtime_name, v.runtime_version),
                api_version: v.version,
            });
        }
        client.version = v;
        Ok(client)
    }

    /// Sets the hook called after every call (this client and its clones made afterwards).
    pub fn set_observer(&mut self, observer: Observer) {
        self.observer = Some(observer);
    }

    /// The endpoint this client dials.
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// The deadlines in force.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// The runtime's name and version as found by the handshake.
    pub fn runtime_version(&self) -> &RuntimeVersion {
        &self.version
    }

    fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Runs one CRI call with a deadline, mapping the status to a `CriError`.
    async fn call<T, F, Fut>(
        &self,
        op: &'static str,
        deadline: Duration,
        retry: Retry,
        f: F,
    ) -> Result<T>
    where
        F: Fn(Duration) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let start = Instant::now();
        let r = self.call_inner(op, deadline, retry, f, start).await;
        if let Some(observe) = &self.observer {
            observe(op, start.elapsed(), r.is_ok());
        }
        r
    }

    async fn call_inner<T, F, Fut>(
        &self,
        op: &'static str,
        deadline: Duration,
        retry: Retry,
        f: F,
        start: Instant,
    ) -> Result<T>
    where
        F: Fn(Duration) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let remaining = deadline.saturating_sub(start.elapsed());
            let outcome = tokio::time::timeout(remaining, f(remaining)).await;
            let err = match outcome {
                Ok(Ok(resp)) => {
                    debug!(
                        cri.op = op,
                        elapsed_ms = start.elapsed().as_millis() as u64,
                        "CRI call done"
                    );
                    return Ok(resp.into_inner());
                }
                Ok(Err(status)) => CriError::from_status(&self.endpoint_text, op, status),
                Err(_) => {
                    return Err(CriError::Timeout {
                        endpoint: self.endpoint_text.clone(),
                        op,
                        after: deadline,
                    });
                }
            };
            if matches!(err, CriError::Unavailable { .. }) && retry == Retry::Once && attempt == 1 {
                // The runtime may have restarted: the channel redials on the next call.
                warn!(cri.op = op, error = %err, "CRI runtime unavailable, redialling once");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
            return Err(err);
        }
    }
}

/// A request carrying the gRPC deadline header, so the runtime also gives up.
fn req<T>(msg: T, timeout: Duration) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(timeout);
    r
}

// ---- RuntimeService ----
impl CriClient {
    /// CRI Version: the runtime's name, version and API version.
    pub async fn version(&self) -> Result<RuntimeVersion> {
        let r = self
            .call("Version", self.timeouts.quick, Retry::Once, |t| {
                let mut c = self.runtime();
                async move {
                    c.version(req(
                        cri::VersionRequest {
                            version: "v1".into(),
                        },
                        t,
                    ))
                    .await
                }
            })
            .await?;
        Ok(RuntimeVersion {
            version: r.version,
            runtime_name: r.runtime_name,
            runtime_version: r.runtime_version,
            runtime_api_version: r.runtime_api_version,
        })
    }

    /// CRI Status: runtime and network conditions (RuntimeReady, NetworkReady).
    pub async fn status(&self, verbose: bool) -> Result<cri::StatusResponse> {
        self.call("Status", self.timeouts.quick, Retry::Once, |t| {
            let mut c = self.runtime();
            async move { c.status(req(cri::StatusRequest { verbose }, t)).await }
        })
        .await
    }

    /// CRI RuntimeConfig: the runtime's cgroup driver, where it reports one (`Unimplemented`
    /// from runtimes older than CRI 1.28, containerd 1.6 among them).
    pub async fn runtime_config(&self) -> Result<cri::RuntimeConfigResponse> {
        self.call("RuntimeConfig", self.timeouts.quick, Retry::Once, |t| {
            let mut c = self.runtime();
            async move { c.runtime_config(req(cri::RuntimeConfigRequest {}, t)).await }
        })
        .await
    }

    /// CRI RunPodSandbox: creates and starts a sandbox, returning its id.
    pub async fn run_pod_sandbox(
        &self,
        config: cri::PodSandboxConfig,
        runtime_handler: &str,
    ) -> Result<String> {
        let msg = cri::RunPodSandboxRequest {
            config: Some(config),
            runtime_handler: runtime_handler.to_string(),
        };
        let r = self
            .call("RunPodSandbox", self.timeouts.long, Retry::Never, |t| {
                let mut c = self.runtime();
                let msg = msg.clone();
                async move { c.run_pod_sandbox(req(msg, t)).await }
            })
            .await?;
        Ok(r.pod_sandbox_id)
    }

    /// CRI StopPodSandbox: stops every container of the sandbox and tears down its network.
    pub async fn stop_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()> {
        let msg = cri::StopPodSandboxRequest {
            pod_sandbox_id: pod_sandbox_id.to_string(),
        };
        self.call("StopPodSandbox", self.timeouts.long, Retry::Once, |t| {
            let mut c = self.runtime();
            let msg = msg.clone();
            async move { c.stop_pod_sandbox(req(msg, t)).await }
        })
        .await
        .map(drop)
    }

    /// CRI RemovePodSandbox: removes a stopped sandbox and its containers.
    pub async fn remove_pod_sandbox(&self, pod_sandbox_id: &str) -> Result<()> {
        let msg = cri::RemovePodSandboxRequest {
            pod_sandbox_id: pod_sandbox_id.to_string(),
        };
        self.call("RemovePodSandbox", self.timeouts.long, Retry::Once, |t| {
            let mut c = self.runtime();
            let msg = msg.clone();
            async move { c.remove_pod_sandbox(req(msg, t)).await }
        })
        .await
        .map(drop)
    }

    /// CRI PodSandboxStatus: state, network (pod IP), labels; `info` when verbose.
    pub async fn pod_sandbox_status(
        &self,
        pod_sandbox_id: &str,
        verbose: bool,
    ) -> Result<cri::PodSandboxStatusResponse> {
        let msg = cri::PodSandboxStatusRequest {
            pod_sandbox_id: pod_sandbox_id.to_string(),
            verbose,
        };
        self.call("PodSandboxStatus", self.timeouts.quick, Retry::Once, |t| {
            let mut c = self.runtime();
            let msg = msg.clone();
            async move { c.pod_sandbox_status(req(msg, t)).await }
        })
        .await
    }

    /// CRI ListPodSandbox with an optional filter (id, state, label selector).
    pub async fn list_pod_sandbox(
        &self,
        filter: Option<cri::PodSandboxFilter>,
    ) -> Result<Vec<cri::PodSandbox>> {
        let msg = cri::ListPodSandboxRequest { filter };
        let r = self
            .call("ListPodSandbox", self.timeouts.quick, Retry::Once, |t| {
                let mut c = self.runtime();
                let msg = msg.clone();
                async move { c.list_pod_sandbox(req(msg, t)).await }
            })
            .await?;
        Ok(r.items)
    }

    /// CRI PodSandboxStats for one sandbox.
    pub async fn pod_sandbox_stats(
        &self,
        pod_sandbox_id: &str,
    ) -> Result<Option<cri::PodSandboxStats>> {
        let msg = cri::PodSandboxStatsRequest {
            pod_sandbox_id: pod_sandbox_id.to_string(),
        };
        let r = self
            .call("PodSandboxStats", self.timeouts.quick, Retry::Once, |t| {
                let mut c = self.runtime();
                let msg = msg.clone();
                async move { c.pod_sandbox_stats(req(msg, t)).await }
            })
            .await?;
        Ok(r.stats)
    }

    /// CRI ListPodSandboxStats with an optional filter.
    pub async fn list_pod_sandbox_stats(
        &self,
        filter: Option<cri::PodSandboxStatsFilter>,
    ) -> Result<Vec<cri::PodSandboxStats>> {
        let msg = cri::ListPodSandboxStatsRequest { filter };
        let r = self
            .call(
                "ListPodSandboxStats",
                self.timeouts.quick,
                Retry::Once,
                |t| {
                    let mut c = self.runtime();
                    let msg = msg.clone();
                    async move { c.list_pod_sandbox_stats(req(msg, t)).await }
                },
            )
            .await?;
        Ok(r.stats)
    }

    /// CRI CreateContainer in a sandbox, returning the container id.
    pub async fn create_container(
        &self,
        pod_sandbox_id: &str,
        config: cri::ContainerConfig,
        sandbox_config: cri::PodSandboxConfig,
    ) -> Result<String> {
        let msg = cri::CreateContainerRequest {
            pod_sandbox_id: pod_sandbox_id.to_string(),
            config: Some(config),
            sandbox_config: Some(sandbox_config),
        };
        let r = self
            .call("CreateContainer", self.timeouts.long, Retry::Never, |t| {
                let mut c = self.runtime();
                let msg = msg.clone();
                async move { c.create_container(req(msg, t)).await }
            })
            .await?;
        Ok(r.container_id)
    }

    /// CRI StartContainer.
    pub async fn start_container(&self, container_id: &str) -> Result<()> {
        let msg = cri::StartContainerRequest {
            container_id: container_id.to_string(),
        };
        self.call("StartContainer", self.timeouts.long, Retry::Never, |t| {
            let mut c = self.runtime();
            let msg = msg.clone();
            async move { c.start_container(req(msg, t)).await }
        })
        .await
        .map(drop)
    }

    /// CRI StopContainer: SIGTERM (or the image's stop signal), SIGKILL after `timeout`.
    pub async fn stop_container(&self, container_id: &str, timeout: Duration) -> Result<()> {
        let msg = cri::StopContainerRequest {
            container_id: container_id.to_string(),
            timeout: timeout.as_secs() as i64,
        };
        self.call(
            "StopContainer",
            timeout + self.timeouts.long,
            Retry::Once,
            |t| {
                let mut c = self.runtime();
                let msg = msg.clone();
                async move { c.stop_container(req(msg, t)).await }
            },
        )
        .await
        .map(drop)
    }

    /// CRI RemoveContainer.
    pub async fn remove_container(&self, container_id: &str) -> Result<()> {
        let msg = cri::RemoveContainerRequest {
            container_id: container_id.to_string(),
        };
        self.call("RemoveContainer", self.timeouts.long, Retry::Once, |t| {
            let mut c = self.runtime();
            let msg = msg.clone();
            async move { c.remove_container(req(msg, t)).await }
        })
        .await
        .map(drop)
    }

    /// CRI ContainerStatus: state, exit code, reason, timestamps, log path; `info` when verbose.
    pub async fn container_status(
        &self,
        container_id: &str,
        verbose: bool,
    ) -> Result<cri::ContainerStatusResponse> {
        let msg = cri::ContainerStatusRequest {
            container_id: container_id.to_string(),
            verbose,
        };
        self.call("ContainerStatus", self.timeouts.quick, Retry::Once, |t| {
            let mut c = self.runtime();
            let msg = msg.clone();
            async move { c.container_status(req(msg, t)).await }
        })
        .await
    }

    /// CRI ListContainers with an optional filter (id, state, sandbox, labels).
    pub async fn list_containers(
        &self,
        filter: Option<cri::ContainerFilter>,
    ) -> Result<Vec<cri::Container>> {
        let msg = cri::ListContainersRequest { filter };
        let r = self
            .call("ListContainers", self.timeouts.quick, Retry::Once, |t| {
                let mut c = self.runtime();
                let msg = msg.clone();
                async move { c.list_containers(req(msg, t)).await }
            })
            .await?;
        Ok(r.containers)
    }

    /// CRI ContainerStats for one container.
    pub async fn container_stats(&self, container_id: &str) -> Result<Option<cri::ContainerStats>> {
        let msg = cri::ContainerStatsRequest {
            container_id: container_id.to_string(),
        };
        let r = self
            .call("ContainerStats", self.timeouts.quick, Retry::Once, |t| {
                let mut c = self.runtime();
                let msg = msg.clone();
                async move { c.container_stats(req(msg, t)).await }
            })
            .await?;
        Ok(r.stats)
    }

    /// CRI ListContainerStats with an optional filter.
    pub async fn list_container_stats(
        &self,
        filter: Option<cri::ContainerStatsFilter>,
    ) -> Result<Vec<cri::ContainerStats>> {
        let msg = cri::ListContainerStatsRequest { filter };
        let r = self
            .call(
                "ListContainerStats",
                self.timeouts.quick,
                Retry::Once,
                |t| {
                    let mut c = self.runtime();
                    let msg = msg.clone();
                    async move { c.list_container_stats(req(msg, t)).await }
                },
            )
            .await?;
        Ok(r.stats)
    }

    /// CRI UpdateContainerResources (in-place resize, cgroup limits).
    pub async fn update_container_resources(
        &self,
        container_id: &str,
        linux: Option<cri::LinuxContainerResources>,
    ) -> Result<()> {
        let msg = cri::UpdateContainerResourcesRequest {
            container_id: container_id.to_string(),
            linux,
            ..Default::default()
        };
        self.call(
            "UpdateContainerResources",
            self.timeouts.quick,
            Retry::Once,
            |t| {
                let mut c = self.runtime();
                let msg = msg.clone();
                async move { c.update_container_resources(req(msg, t)).await }
            },
        )
        .await
        .map(drop)
    }

    /// CRI ReopenContainerLog, after the log file was rotated.
    pub async fn reopen_container_log(&self, container_id: &str) -> Result<()> {
        let msg = cri::ReopenContainerLogRequest {
            container_id: container_id.to_string(),
        };
        self.call(
            "ReopenContainerLog",
            self.timeouts.quick,
            Retry::Once,
            |t| {
                let mut c = self.runtime();
                let msg = msg.clone();
                async move { c.reopen_container_log(req(msg, t)).await }
            },
        )
        .await
        .map(drop)
    }

    /// CRI ExecSync: runs `cmd` in the container and waits up to `timeout` (zero: no limit but ours).
    pub async fn exec_sync(
        &self,
        container_id: &str,
        cmd: Vec<String>,
        timeout: Duration,
    ) -> Result<ExecSyncOutput> {
        let msg = cri::ExecSyncRequest {
            container_id: container_id.to_string(),
            cmd,
            timeout: timeout.as_secs() as i64,
        };
        let r = self
            .call(
                "ExecSync",
                timeout + self.timeouts.quick,
                Retry::Never,
                |t| {
                    let mut c = self.runtime();
                    let msg = msg.clone();
                    async move { c.exec_sync(req(msg, t)).await }
                },
            )
            .await?;
        Ok(ExecSyncOutput {
            stdout: r.stdout,
            stderr: r.stderr,
            exit_code: r.exit_code,
        })
    }

    /// CRI Exec: the streaming URL where the caller attaches to a new process.
    pub async fn exec(&self, request: cri::ExecRequest) -> Result<String> {
        let r = self
            .call("Exec", self.timeouts.quick, Retry::Once, |t| {
                let mut c = self.runtime();
                let msg = request.clone();
                async move { c.exec(req(msg, t)).await }
            })
            .await?;
        Ok(r.url)
    }

    /// CRI Attach: the streaming URL for the container's main process.
    pub async fn attach(&self, request: cri::AttachRequest) -> Result<String> {
        let r = self
            .call("Attach", self.timeouts.quick, Retry::Once, |t| {
                let mut c = self.runtime();
                let msg = request.clone();
                async move { c.attach(req(msg, t)).await }
            })
            .await?;
        Ok(r.url)
    }

    /// CRI PortForward: the streaming URL forwarding to ports of a sandbox.
    pub async fn port_forward(&self, pod_sandbox_id: &str, ports: Vec<i32>) -> Result<String> {
        let msg = cri::PortForwardRequest {
            pod_sandbox_id: pod_sandbox_id.to_string(),
            port: ports,
        };
        let r = self
            .call("PortForward", self.timeouts.quick, Retry::Once, |t| {
                let mut c = self.runtime();
                let msg = msg.clone();
                async move { c.port_forward(req(msg, t)).await }
            })
            .await?;
        Ok(r.url)
    }

    /// CRI UpdateRuntimeConfig: tells the runtime the node's pod CIDR.
    pub async fn update_pod_cidr(&self, pod_cidr: &str) -> Result<()> {
        let msg = cri::UpdateRuntimeConfigRequest {
            runtime_config: Some(cri::RuntimeConfig {
                network_config: Some(cri::NetworkConfig {
                    pod_cidr: pod_cidr.to_string(),
                }),
            }),
        };
        self.call(
            "UpdateRuntimeConfig",
            self.timeouts.quick,
            Retry::Once,
            |t| {
                let mut c = self.runtime();
                let msg = msg.clone();
                async move { c.update_runtime_config(req(msg, t)).await }
            },
        )
        .await
        .map(drop)
    }

    /// CRI GetContainerEvents: a stream of container lifecycle events, for an evented PLEG.
    /// Runtimes without it (containerd 1.6) give `CriError::Unimplemented`, possibly as the
    /// first item of the stream.
    pub async fn container_events(&self) -> Result<crate::events::ContainerEvents> {
        let mut c = self.runtime();
        let result = tokio::time::timeout(
            self.timeouts.quick,
            c.get_container_events(tonic::Request::new(cri::GetEventsRequest {})),
        )
        .await;
        match result {
            Err(_) => Err(CriError::Timeout {
                endpoint: self.endpoint_text.clone(),
                op: "GetContainerEvents",
                after: self.timeouts.quick,
            }),
            Ok(Err(status)) => Err(CriError::from_status(
                &self.endpoint_text,
                "GetContainerEvents",
                status,
            )),
            Ok(Ok(resp)) => Ok(crate::events::ContainerEvents::new(
                self.endpoint_text.clone(),
                resp.into_inner(),
            )),
        }
    }
}

/// What an ExecSync returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecSyncOutput {
    /// Captured stdout (the runtime caps it at 16 MiB).
    pub stdout: Vec<u8>,
    /// Captured stderr.
    pub stderr: Vec<u8>,
    /// The command's exit code.
    pub exit_code: i32,
}

// ---- ImageService ----
impl CriClient {
    /// CRI PullImage with optional registry credentials; returns the image reference (digest-based id).
    pub async fn pull_image(
        &self,
        image: &str,
        auth: Option<cri::AuthConfig>,
        sandbox_config: Option<cri::PodSandboxConfig>,
    ) -> Result<String> {
        let msg = cri::PullImageRequest {
            image: Some(image_spec(image)),
            auth,
            sandbox_config,
        };
        let r = self
            .call("PullImage", self.timeouts.long, Retry::Once, |t| {
                let mut c = self.images();
                let msg = msg.clone();
                async move { c.pull_image(req(msg, t)).await }
            })
            .await?;
        Ok(r.image_ref)
    }

    /// CRI ImageStatus: the image if present, `None` if not.
    pub async fn image_status(&self, image: &str) -> Result<Option<cri::Image>> {
        let msg = cri::ImageStatusRequest {
            image: Some(image_spec(image)),
            verbose: false,
        };
        let r = self
            .call("ImageStatus", self.timeouts.quick, Retry::Once, |t| {
                let mut c = self.images();
                let msg = msg.clone();
                async move { c.image_status(req(msg, t)).await }
            })
            .await?;
        Ok(r.image)
    }

    /// CRI ListImages.
    pub async fn list_images(&self) -> Result<Vec<cri::Image>> {
        let r = self
            .call("ListImages", self.timeouts.quick, Retry::Once, |t| {
                let mut c = self.images();
                async move {
                    c.list_images(req(cri::ListImagesRequest { filter: None }, t))
                        .await
                }
            })
            .await?;
        Ok(r.images)
    }

    /// CRI RemoveImage.
    pub async fn remove_image(&self, image: &str) -> Result<()> {
        let msg = cri::RemoveImageRequest {
            image: Some(image_spec(image)),
        };
        self.call("RemoveImage", self.timeouts.long, Retry::Once, |t| {
            let mut c = self.images();
            let msg = msg.clone();
            async move { c.remove_image(req(msg, t)).await }
        })
        .await
        .map(drop)
    }

    /// CRI ImageFsInfo: usage of the filesystems holding images (and container writable layers).
    pub async fn image_fs_info(&self) -> Result<cri::ImageFsInfoResponse> {
        self.call("ImageFsInfo", self.timeouts.quick, Retry::Once, |t| {
            let mut c = self.images();
            async move { c.image_fs_info(req(cri::ImageFsInfoRequest {}, t)).await }
        })
        .await
    }
}

fn image_spec(image: &str) -> cri::ImageSpec {
    cri::ImageSpec {
        image: image.to_string(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(version: &str, api: &str) -> RuntimeVersion {
        RuntimeVersion {
            version: version.into(),
            runtime_name: "r".into(),
            runtime_version: "1".into(),
            runtime_api_version: api.into(),
        }
    }

    #[test]
    fn image_volumes_need_a_runtime_that_mounts_images() {
        let v = |name: &str, version: &str| RuntimeVersion {
            runtime_name: name.into(),
            runtime_version: version.into(),
            ..Default::default()
        };
        assert_eq!(
            v("containerd", "1.6.20~ds1").mounts_images(),
            Err("the container runtime containerd 1.6.20~ds1 cannot mount images as volumes (CRI Mount.image needs containerd 2.1 or later)".into())
        );
        assert!(v("containerd", "2.0.5").mounts_images().is_err());
        assert_eq!(v("containerd", "v2.4.2").mounts_images(), Ok(()));
        assert_eq!(v("containerd", "2.1.0").mounts_images(), Ok(()));
        assert!(v("cri-o", "1.30.2").mounts_images().is_err());
        assert_eq!(v("cri-o", "1.31.0").mounts_images(), Ok(()));
        assert_eq!(v("fake-runtime", "0.1.0").mounts_images(), Ok(()));
    }

    #[test]
    fn runtime_version_is_checked_as_the_kubelet_does() {
        // (version, runtime_api_version, accepted): containerd and CRI-O answer 0.1.0/v1;
        // k8s.io/cri-api's fake runtime (kubemark's) 0.1.0/0.1.0, which the kubelet runs on.
        let cases = [
            ("0.1.0", "v1", true),
            ("0.1.0", "0.1.0", true),
            ("0.2.0", "v1", false),
            ("", "v1", false),
        ];
        for (version, api, ok) in cases {
            assert_eq!(answer(version, api).is_supported(), ok, "{version}/{api}");
        }
    }
}
