//! What the test plugins (`csi-driver`, `device-plugin`) share: the plugin registration service
//! (pluginregistration v1) an agent's plugin watcher calls on their registration socket, and the
//! unix socket listener they serve on.

use std::path::Path;
use std::sync::Arc;

use bosun_proto::pluginregistration_v1 as reg;
use reg::registration_server::Registration;
use tonic::{Request, Response, Status};

/// A call the agent made on the registration service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    /// GetInfo.
    GetInfo,
    /// NotifyRegistrationStatus: whether the agent registered the plugin, and its error.
    Status {
        /// The plugin was registered.
        registered: bool,
        /// Why not.
        error: String,
    },
}

/// The registration service: answers GetInfo with `info`, tells `record` of every call.
pub struct Registrar {
    /// What GetInfo answers.
    pub info: reg::PluginInfo,
    /// Told of each call, for the plugin's log of calls.
    pub record: Arc<dyn Fn(Call) + Send + Sync>,
}

#[tonic::async_trait]
impl Registration for Registrar {
    async fn get_info(
        &self,
        _: Request<reg::InfoRequest>,
    ) -> Result<Response<reg::PluginInfo>, Status> {
        (self.record)(Call::GetInfo);
        Ok(Response::new(self.info.clone()))
    }

    async fn notify_registration_status(
        &self,
        r: Request<reg::RegistrationStatus>,
    ) -> Result<Response<reg::RegistrationStatusResponse>, Status> {
        let r = r.into_inner();
        (self.record)(Call::Status {
            registered: r.plugin_registered,
            error: r.error,
        });
        Ok(Response::new(reg::RegistrationStatusResponse {}))
    }
}

/// Binds a unix socket at `path` (a stale one removed, its directory created) for a tonic
/// server's incoming connections.
pub fn listen(path: &Path) -> std::io::Result<tokio_stream::wrappers::UnixListenerStream> {
    let _ = std::fs::remove_file(path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    Ok(tokio_stream::wrappers::UnixListenerStream::new(
        tokio::net::UnixListener::bind(path)?,
    ))
}
