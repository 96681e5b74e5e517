//! bosun-cri: a typed async client for the Kubernetes Container Runtime Interface (CRI v1).
//!
//! Every call has a deadline ([`Timeouts`]); the channel dials lazily and redials after the
//! runtime restarts; errors are [`CriError`] values that keep the gRPC code. Only the CRI message
//! types the agent needs are re-exported in [`types`]; tonic stays inside this crate.

mod client;
mod endpoint;
mod error;
mod events;

pub use client::{CriClient, ExecSyncOutput, Observer, RuntimeVersion, Timeouts};
pub use endpoint::Endpoint;
pub use error::{Code, CriError, Result};
pub use events::ContainerEvents;

/// The CRI v1 message types callers build requests from and read answers of.
pub mod types {
    pub use k8s_cri::v1::{
        AttachRequest, AuthConfig, Capability, CdiDevice, Container, ContainerConfig,
        ContainerEventResponse, ContainerEventType, ContainerFilter, ContainerMetadata,
        ContainerState, ContainerStateValue, ContainerStats, ContainerStatsFilter, ContainerStatus,
        ContainerStatusResponse, CpuUsage, Device, DnsConfig, ExecRequest, FilesystemIdentifier,
        FilesystemUsage, Image, ImageFsInfoResponse, ImageSpec, Int64Value, KeyValue,
        LinuxContainerConfig, LinuxContainerResources, LinuxContainerSecurityContext,
        LinuxPodSandboxConfig, LinuxPodSandboxStats, LinuxSandboxSecurityContext, MemoryUsage,
        Mount, MountPropagation, NamespaceMode, NamespaceOption, NetworkUsage, PodSandbox,
        PodSandboxConfig, PodSandboxFilter, PodSandboxMetadata, PodSandboxNetworkStatus,
        PodSandboxState, PodSandboxStateValue, PodSandboxStats, PodSandboxStatsFilter,
        PodSandboxStatus, PodSandboxStatusResponse, PortMapping, Protocol, RuntimeCondition,
        RuntimeStatus, SeLinuxOption, SecurityProfile, StatusResponse, SupplementalGroupsPolicy,
        security_profile,
    };
}
