//! The client of one CSI driver's Node and Identity services over its unix socket, and of a
//! plugin's registration service (pluginregistration v1): one `call` with a deadline, errors
//! that carry the driver and the operation. Nothing else in the agent sees the CSI prost types.

use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bosun_proto::csi_v1 as csi;
use bosun_proto::pluginregistration_v1 as reg;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

/// The deadline of a volume operation (the kubelet's csiTimeout).
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(120);
/// The deadline of an information call (GetInfo, NodeGetInfo, capabilities).
pub const INFO_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed call to a plugin.
#[derive(Debug, Clone, thiserror::Error)]
#[error("rpc error: {op} on {endpoint}: {message}")]
pub struct CsiError {
    /// The socket called.
    pub endpoint: String,
    /// The RPC.
    pub op: &'static str,
    /// The gRPC status (code: message) or the transport error.
    pub message: String,
    /// The gRPC status code the driver answered with (None: no answer, a timeout).
    pub code: Option<tonic::Code>,
}

/// A channel to a unix socket, dialled on first use and again after a failure.
fn channel(path: &Path) -> Channel {
    let path = path.to_path_buf();
    // The URI is a placeholder: the connector ignores it and dials the socket.
    Endpoint::from_static("http://csi.invalid")
        .connect_timeout(INFO_TIMEOUT)
        .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let stream = tokio::net::UnixStream::connect(&path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(stream))
            }
        }))
}

async fn call<T, Fut>(
    endpoint: &Path,
    op: &'static str,
    deadline: Duration,
    fut: Fut,
) -> Result<T, CsiError>
where
    Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let err = |message: String, code: Option<tonic::Code>| CsiError {
        endpoint: endpoint.display().to_string(),
        op,
        message,
        code,
    };
    match tokio::time::timeout(deadline, fut).await {
        Ok(Ok(r)) => Ok(r.into_inner()),
        Ok(Err(s)) => Err(err(
            format!("code = {:?} desc = {}", s.code(), s.message()),
            Some(s.code()),
        )),
        Err(_) => Err(err(format!("deadline of {deadline:?} exceeded"), None)),
    }
}

/// What a plugin says of itself on its registration socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginInfo {
    /// CSIPlugin or DevicePlugin.
    pub kind: String,
    /// The driver's name.
    pub name: String,
    /// Where its service listens ("" for the registration socket itself).
    pub endpoint: String,
    /// The API versions it speaks.
    pub versions: Vec<String>,
}

/// A plugin's registration socket (`<root>/plugins_registry/*.sock`).
#[derive(Clone)]
pub struct RegistrationClient {
    socket: PathBuf,
    channel: Channel,
}

impl RegistrationClient {
    /// A client of the registration service on `socket` (dialled on first call).
    pub fn new(socket: &Path) -> RegistrationClient {
        RegistrationClient {
            socket: socket.to_path_buf(),
            channel: channel(socket),
        }
    }

    /// GetInfo.
    pub async fn get_info(&self) -> Result<PluginInfo, CsiError> {
        let mut c = reg::registration_client::RegistrationClient::new(self.channel.clone());
        let i = call(
            &self.socket,
            "GetInfo",
            INFO_TIMEOUT,
            c.get_info(reg::InfoRequest {}),
        )
        .await?;
        Ok(PluginInfo {
            kind: i.r#type,
            name: i.name,
            endpoint: i.endpoint,
            versions: i.supported_versions,
        })
    }

    /// NotifyRegistrationStatus: registered, or the error why not.
    pub async fn notify(&self, error: Option<String>) -> Result<(), CsiError> {
        let mut c = reg::registration_client::RegistrationClient::new(self.channel.clone());
        let status = reg::RegistrationStatus {
            plugin_registered: error.is_none(),
            error: error.unwrap_or_default(),
        };
        call(
            &self.socket,
            "NotifyRegistrationStatus",
            INFO_TIMEOUT,
            c.notify_registration_status(status),
        )
        .await?;
        Ok(())
    }
}

/// What NodeGetInfo answers.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeInfo {
    /// The driver's ID of this node.
    pub node_id: String,
    /// The most volumes the driver publishes on this node (0: no limit).
    pub max_volumes: i64,
    /// The topology keys of the node's accessible topology.
    pub topology_keys: Vec<String>,
    /// The topology segments themselves (they become node labels).
    pub topology: HashMap<String, String>,
}

/// The node service capabilities the kubelet acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeCapabilities {
    /// STAGE_UNSTAGE_VOLUME: NodeStageVolume before publishing.
    pub stage_unstage: bool,
    /// GET_VOLUME_STATS: NodeGetVolumeStats answers.
    pub volume_stats: bool,
    /// EXPAND_VOLUME: NodeExpandVolume grows a published volume's filesystem.
    pub expand_volume: bool,
}

/// Usage of a published volume (NodeGetVolumeStats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VolumeUsage {
    /// Capacity, available and used bytes.
    pub bytes: (i64, i64, i64),
    /// Inodes: total, free, used.
    pub inodes: Option<(i64, i64, i64)>,
}

/// What NodeStageVolume and NodePublishVolume take.
#[derive(Debug, Clone, Default)]
pub struct VolumeRequest {
    /// The volume handle.
    pub volume_id: String,
    /// The staging path (globalmount), or "" when the driver does not stage.
    pub staging_path: String,
    /// The target path (NodePublishVolume only).
    pub target_path: String,
    /// The filesystem type ("" for the driver's default).
    pub fs_type: String,
    /// Mount options from the PV.
    pub mount_flags: Vec<String>,
    /// The PV's first access mode (ReadWriteOnce when none).
    pub access_mode: String,
    /// Read-only publish.
    pub read_only: bool,
    /// The volume attributes (volume_context).
    pub context: HashMap<String, String>,
    /// The VolumeAttachment's attachment metadata (publish_context).
    pub publish_context: HashMap<String, String>,
}

impl VolumeRequest {
    fn capability(&self) -> csi::VolumeCapability {
        use csi::volume_capability::access_mode::Mode;
        let mode = match self.access_mode.as_str() {
            "ReadOnlyMany" => Mode::MultiNodeReaderOnly,
            "ReadWriteMany" => Mode::MultiNodeMultiWriter,
            "ReadWriteOncePod" => Mode::SingleNodeSingleWriter,
            _ => Mode::SingleNodeWriter,
        };
        csi::VolumeCapability {
            access_mode: Some(csi::volume_capability::AccessMode { mode: mode as i32 }),
            access_type: Some(csi::volume_capability::AccessType::Mount(
                csi::volume_capability::MountVolume {
                    fs_type: self.fs_type.clone(),
                    mount_flags: self.mount_flags.clone(),
                    volume_mount_group: String::new(),
                },
            )),
        }
    }
}

/// A CSI driver's node service.
#[derive(Clone)]
pub struct CsiClient {
    endpoint: PathBuf,
    channel: Channel,
}

impl std::fmt::Debug for CsiClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CsiClient")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl CsiClient {
    /// A client of the driver listening on `endpoint` (dialled on first call).
    pub fn new(endpoint: &Path) -> CsiClient {
        CsiClient {
            endpoint: endpoint.to_path_buf(),
            channel: channel(endpoint),
        }
    }

    fn node(&self) -> csi::node_client::NodeClient<Channel> {
        csi::node_client::NodeClient::new(self.channel.clone())
    }

    /// NodeGetInfo.
    pub async fn node_get_info(&self) -> Result<NodeInfo, CsiError> {
        let mut c = self.node();
        let r = call(
            &self.endpoint,
            "NodeGetInfo",
            INFO_TIMEOUT,
            c.node_get_info(csi::NodeGetInfoRequest {}),
        )
        .await?;
        let topology = r
            .accessible_topology
            .map(|t| t.segments)
            .unwrap_or_default();
        let mut topology_keys: Vec<String> = topology.keys().cloned().collect();
        topology_keys.sort();
        Ok(NodeInfo {
            node_id: r.node_id,
            max_volumes: r.max_volumes_per_node,
            topology_keys,
            topology,
        })
    }

    /// NodeGetCapabilities.
    pub async fn node_get_capabilities(&self) -> Result<NodeCapabilities, CsiError> {
        use csi::node_service_capability::{Type, rpc};
        let mut c = self.node();
        let r = call(
            &self.endpoint,
            "NodeGetCapabilities",
            INFO_TIMEOUT,
            c.node_get_capabilities(csi::NodeGetCapabilitiesRequest {}),
        )
        .await?;
        let mut caps = NodeCapabilities::default();
        for cap in r.capabilities {
            if let Some(Type::Rpc(rpc)) = cap.r#type {
                match rpc::Type::try_from(rpc.r#type) {
                    Ok(rpc::Type::StageUnstageVolume) => caps.stage_unstage = true,
                    Ok(rpc::Type::GetVolumeStats) => caps.volume_stats = true,
                    Ok(rpc::Type::ExpandVolume) => caps.expand_volume = true,
                    _ => {}
                }
            }
        }
        Ok(caps)
    }

    /// NodeStageVolume into `v.staging_path`.
    pub async fn node_stage(&self, v: &VolumeRequest) -> Result<(), CsiError> {
        let mut c = self.node();
        let req = csi::NodeStageVolumeRequest {
            volume_id: v.volume_id.clone(),
            publish_context: v.publish_context.clone(),
            staging_target_path: v.staging_path.clone(),
            volume_capability: Some(v.capability()),
            secrets: HashMap::new(),
            volume_context: v.context.clone(),
        };
        let op = "NodeStageVolume";
        call(
            &self.endpoint,
            op,
            OPERATION_TIMEOUT,
            c.node_stage_volume(req),
        )
        .await?;
        Ok(())
    }

    /// NodeUnstageVolume of `staging_path`.
    pub async fn node_unstage(&self, volume_id: &str, staging_path: &str) -> Result<(), CsiError> {
        let mut c = self.node();
        let req = csi::NodeUnstageVolumeRequest {
            volume_id: volume_id.into(),
            staging_target_path: staging_path.into(),
        };
        let op = "NodeUnstageVolume";
        call(
            &self.endpoint,
            op,
            OPERATION_TIMEOUT,
            c.node_unstage_volume(req),
        )
        .await?;
        Ok(())
    }

    /// NodePublishVolume on `v.target_path`.
    pub async fn node_publish(&self, v: &VolumeRequest) -> Result<(), CsiError> {
        let mut c = self.node();
        let req = csi::NodePublishVolumeRequest {
            volume_id: v.volume_id.clone(),
            publish_context: v.publish_context.clone(),
            staging_target_path: v.staging_path.clone(),
            target_path: v.target_path.clone(),
            volume_capability: Some(v.capability()),
            readonly: v.read_only,
            secrets: HashMap::new(),
            volume_context: v.context.clone(),
        };
        let op = "NodePublishVolume";
        call(
            &self.endpoint,
            op,
            OPERATION_TIMEOUT,
            c.node_publish_volume(req),
        )
        .await?;
        Ok(())
    }

    /// NodeUnpublishVolume of `target_path`.
    pub async fn node_unpublish(&self, volume_id: &str, target_path: &str) -> Result<(), CsiError> {
        let mut c = self.node();
        let req = csi::NodeUnpublishVolumeRequest {
            volume_id: volume_id.into(),
            target_path: target_path.into(),
        };
        let op = "NodeUnpublishVolume";
        call(
            &self.endpoint,
            op,
            OPERATION_TIMEOUT,
            c.node_unpublish_volume(req),
        )
        .await?;
        Ok(())
    }

    /// NodeExpandVolume: grows the filesystem of `v` (published at `v.target_path`, staged at
    /// `v.staging_path`) to at least `required_bytes`.
    pub async fn node_expand(
        &self,
        v: &VolumeRequest,
        required_bytes: i64,
    ) -> Result<(), CsiError> {
        let mut c = self.node();
        let req = csi::NodeExpandVolumeRequest {
            volume_id: v.volume_id.clone(),
            volume_path: v.target_path.clone(),
            capacity_range: Some(csi::CapacityRange {
                required_bytes,
                limit_bytes: 0,
            }),
            staging_target_path: v.staging_path.clone(),
            volume_capability: Some(v.capability()),
            secrets: HashMap::new(),
        };
        let op = "NodeExpandVolume";
        call(
            &self.endpoint,
            op,
            OPERATION_TIMEOUT,
            c.node_expand_volume(req),
        )
        .await?;
        Ok(())
    }

    /// NodeGetVolumeStats of a published volume.
    pub async fn node_get_volume_stats(
        &self,
        volume_id: &str,
        volume_path: &str,
    ) -> Result<VolumeUsage, CsiError> {
        use csi::volume_usage::Unit;
        let mut c = self.node();
        let req = csi::NodeGetVolumeStatsRequest {
            volume_id: volume_id.into(),
            volume_path: volume_path.into(),
            staging_target_path: String::new(),
        };
        let op = "NodeGetVolumeStats";
        let r = call(
            &self.endpoint,
            op,
            INFO_TIMEOUT,
            c.node_get_volume_stats(req),
        )
        .await?;
        let mut usage = VolumeUsage::default();
        for u in r.usage {
            match Unit::try_from(u.unit) {
                Ok(Unit::Bytes) => usage.bytes = (u.total, u.available, u.used),
                Ok(Unit::Inodes) => usage.inodes = Some((u.total, u.available, u.used)),
                _ => {}
            }
        }
        Ok(usage)
    }
}
