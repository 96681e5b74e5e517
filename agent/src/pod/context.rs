//! What every pod worker shares: the runtime client, the node's paths and facts, the status store.

use std::sync::Arc;

use bosun_cri::CriClient;
use tokio::sync::Semaphore;

use crate::runtime::PodDirs;
use crate::status::StatusStore;

/// Shared, read-only context of the pod workers of one node; `R` is the runtime (the CRI
/// client, or a scripted one in the worker's unit tests).
pub struct NodeContext<R = CriClient> {
    /// The CRI runtime.
    pub cri: R,
    /// Paths and naming.
    pub dirs: PodDirs,
    /// This node's name.
    pub node_name: String,
    /// This node's IP (status.hostIP).
    pub host_ip: String,
    /// This node's IPs as its Node reports them (status.hostIPs; the podIPs of host-network pods).
    pub host_ips: Vec<String>,
    /// Memory capacity in bytes (for oom_score_adj).
    pub memory_capacity: i64,
    /// The node's allocatable in thousandths by resource (the downward API's default limits).
    pub allocatable: std::collections::BTreeMap<String, i128>,
    /// Statuses of all pods.
    pub statuses: StatusStore,
    /// Image pulls in flight at once (1 when serializeImagePulls).
    pub pulls: Arc<Semaphore>,
    /// The API client; none in standalone mode.
    pub api: Option<kube::Client>,
    /// The registered CSI drivers and the CSI volumes published per pod.
    pub csi: crate::volume::csi::CsiVolumes,
    /// The device plugins' devices and the pods' allocations.
    pub devices: crate::devicemanager::DeviceManager,
    /// The configmap and secret managers; none in standalone mode.
    pub objects: Option<Arc<crate::objects::Objects>>,
    /// Services for env vars.
    pub services: super::services::ServiceCache,
    /// Where pod events go.
    pub events: crate::events::Recorder,
    /// Pod cgroups and QoS tiers.
    pub cgroups: crate::cgroup::ContainerManager,
    /// Liveness, readiness and startup probes of every running container.
    pub prober: crate::prober::Prober,
    /// `seccompDefault`: containers without a seccomp profile get RuntimeDefault.
    pub seccomp_default: bool,
    /// Where Localhost seccomp profiles live (`<rootDir>/seccomp`).
    pub seccomp_root: std::path::PathBuf,
    /// `syncFrequency`: how often a settled pod is synced again (stretched by jitter).
    pub sync_frequency: std::time::Duration,
    /// Whether the runtime mounts image volumes (Err: why not, for the pod's event).
    pub image_volumes: Result<(), String>,
    /// The pods' allocated and actuated resources and their resize conditions.
    pub allocations: super::allocation::Allocations,
    /// What the last PLEG relist saw of each pod, for the workers' syncs.
    pub pod_cache: super::cache::PodCache,
}
