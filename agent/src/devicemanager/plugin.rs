//! The client of one device plugin's DevicePlugin service on its socket in
//! `<root>/device-plugins/`: GetDevicePluginOptions, the ListAndWatch stream and Allocate, each
//! with a deadline (the stream has none), errors carrying the socket and the RPC.

use std::path::{Path, PathBuf};
use std::time::Duration;

use bosun_proto::deviceplugin_v1beta1 as dp;
use dp::device_plugin_client::DevicePluginClient;
use hyper_util::rt::TokioIo;
use prost::Message;
use tonic::transport::{Channel, Endpoint, Uri};

/// The deadline of a call to a plugin (the kubelet's connection timeout and Allocate).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// A failed call to a device plugin.
#[derive(Debug, Clone, thiserror::Error)]
#[error("rpc error: {op} on {endpoint}: {message}")]
pub struct PluginError {
    /// The plugin's socket.
    pub endpoint: String,
    /// The RPC.
    pub op: &'static str,
    /// The gRPC status or the transport error.
    pub message: String,
}

/// A device as ListAndWatch lists it: ID, health, NUMA node (-1: none).
pub type ListedDevice = (String, String, i64);

/// A device plugin's socket.
#[derive(Clone)]
pub struct PluginClient {
    socket: PathBuf,
    client: DevicePluginClient<Channel>,
}

impl PluginClient {
    /// A client of the plugin on `socket` (dialled on first use).
    pub fn new(socket: &Path) -> PluginClient {
        let path = socket.to_path_buf();
        let channel = Endpoint::from_static("http://device-plugin.invalid")
            .connect_timeout(CALL_TIMEOUT)
            .connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let path = path.clone();
                async move {
                    let stream = tokio::net::UnixStream::connect(&path).await?;
                    Ok::<_, std::io::Error>(TokioIo::new(stream))
                }
            }));
        PluginClient {
            socket: socket.to_path_buf(),
            client: DevicePluginClient::new(channel),
        }
    }

    fn err(&self, op: &'static str, message: String) -> PluginError {
        PluginError {
            endpoint: self.socket.display().to_string(),
            op,
            message,
        }
    }

    async fn deadline<T>(
        &self,
        op: &'static str,
        fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, PluginError> {
        match tokio::time::timeout(CALL_TIMEOUT, fut).await {
            Ok(Ok(r)) => Ok(r.into_inner()),
            Ok(Err(s)) => {
                Err(self.err(op, format!("code = {:?} desc = {}", s.code(), s.message())))
            }
            Err(_) => Err(self.err(op, format!("deadline of {CALL_TIMEOUT:?} exceeded"))),
        }
    }

    /// GetDevicePluginOptions: whether it needs PreStartContainer.
    pub async fn pre_start_required(&self) -> Result<bool, PluginError> {
        let mut c = self.client.clone();
        let o = self
            .deadline(
                "GetDevicePluginOptions",
                c.get_device_plugin_options(dp::Empty {}),
            )
            .await?;
        Ok(o.pre_start_required)
    }

    /// ListAndWatch: the stream of device lists, until it ends.
    pub async fn list_and_watch(
        &self,
    ) -> Result<
        impl futures::Stream<Item = Result<Vec<ListedDevice>, PluginError>> + use<>,
        PluginError,
    > {
        let mut c = self.client.clone();
        let stream = self
            .deadline("ListAndWatch", c.list_and_watch(dp::Empty {}))
            .await?;
        let this = self.clone();
        Ok(futures::StreamExt::map(stream, move |r| match r {
            Ok(list) => Ok(list
                .devices
                .into_iter()
                .map(|d| {
                    let numa = d
                        .topology
                        .and_then(|t| t.nodes.first().map(|n| n.id))
                        .unwrap_or(-1);
                    (d.id, d.health, numa)
                })
                .collect()),
            Err(s) => Err(this.err(
                "ListAndWatch",
                format!("code = {:?} desc = {}", s.code(), s.message()),
            )),
        }))
    }

    /// PreStartContainer for `devices`.
    pub async fn pre_start(&self, devices: Vec<String>) -> Result<(), PluginError> {
        let mut c = self.client.clone();
        let req = dp::PreStartContainerRequest {
            devices_ids: devices,
        };
        self.deadline("PreStartContainer", c.pre_start_container(req))
            .await?;
        Ok(())
    }

    /// Allocate for one container's `devices`: its ContainerAllocateResponse, encoded as the
    /// checkpoint keeps it.
    pub async fn allocate(&self, devices: Vec<String>) -> Result<Vec<u8>, PluginError> {
        let mut c = self.client.clone();
        let req = dp::AllocateRequest {
            container_requests: vec![dp::ContainerAllocateRequest {
                devices_ids: devices,
            }],
        };
        let r = self.deadline("Allocate", c.allocate(req)).await?;
        match r.container_responses.into_iter().next() {
            Some(one) => Ok(one.encode_to_vec()),
            None => Err(self.err("Allocate", "plugin answered no container response".into())),
        }
    }
}
