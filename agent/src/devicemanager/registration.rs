//! The device plugin registration service (`v1beta1.Registration`) on
//! `<root>/device-plugins/kubelet.sock`, as the kubelet's plugin/v1beta1 server: at start the
//! directory's stale sockets are removed (the checkpoint stays), so plugins see the socket
//! recreated and register again; Register checks the version ("v1beta1") and that the resource
//! is an extended resource name, dials the plugin's endpoint in the same directory
//! (GetDevicePluginOptions) and then follows its ListAndWatch stream until it ends, when the
//! resource's devices turn unhealthy.

use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use bosun_proto::deviceplugin_v1beta1 as dp;
use dp::registration_server::{Registration, RegistrationServer};
use futures::StreamExt;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use super::DeviceManager;
use super::plugin::PluginClient;

/// The API version the kubelet supports.
pub const VERSION: &str = "v1beta1";
/// The registration socket's name.
pub const SOCKET: &str = "kubelet.sock";

/// The kubelet's IsExtendedResourceName: an extended resource whose `requests.` quota name is a
/// qualified name (a DNS subdomain prefix, a name part of at most 63 characters).
pub fn valid_resource_name(name: &str) -> bool {
    if !crate::resource::is_extended_resource(name) {
        return false;
    }
    let Some((prefix, part)) = format!("requests.{name}")
        .rsplit_once('/')
        .map(|(a, b)| (a.to_string(), b.to_string()))
    else {
        return false;
    };
    let alnum = |c: char| c.is_ascii_alphanumeric();
    let part_ok = !part.is_empty()
        && part.len() <= 63
        && part.starts_with(alnum)
        && part.ends_with(alnum)
        && part
            .chars()
            .all(|c| alnum(c) || matches!(c, '-' | '_' | '.'));
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && l.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
            && l.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    part_ok && prefix.len() <= 253 && prefix.split('.').all(label_ok)
}

/// Why a registration is refused, in the kubelet's words.
pub fn check(r: &dp::RegisterRequest) -> Result<(), String> {
    if r.version != VERSION {
        return Err(format!(
            "requested API version {:?} is not supported by kubelet. Supported version is {:?}",
            r.version,
            [VERSION]
        ));
    }
    if !valid_resource_name(&r.resource_name) {
        return Err(format!("the ResourceName {:?} is invalid", r.resource_name));
    }
    Ok(())
}

/// The kubelet's plugin watcher handler's ValidatePlugin for a plugin of type DevicePlugin
/// found in `<root>/plugins_registry`: a version Bosun speaks and a valid resource name.
pub fn validate(name: &str, versions: &[String]) -> Result<(), String> {
    if !versions.iter().any(|v| v == VERSION) {
        return Err(format!(
            "manager version, {VERSION}, is not among plugin supported versions [{}]",
            versions.join(" ")
        ));
    }
    if !valid_resource_name(name) {
        return Err(format!(
            "invalid name of device plugin socket: the ResourceName {name:?} is invalid"
        ));
    }
    Ok(())
}

/// Connects the plugin of `resource` on `socket` (GetDevicePluginOptions, ListAndWatch) and
/// follows its device lists in a task until the stream ends or `cancel`; returns its
/// registration number.
pub async fn connect(
    devices: &DeviceManager,
    resource: &str,
    socket: &Path,
    cancel: CancellationToken,
) -> Result<u64, String> {
    let client = PluginClient::new(socket);
    let pre_start = client
        .pre_start_required()
        .await
        .map_err(|e| format!("failed to get device plugin options: {e}"))?;
    let stream = client.list_and_watch().await.map_err(|e| e.to_string())?;
    let generation = devices.connected(resource, socket, pre_start);
    let (devices, resource) = (devices.clone(), resource.to_string());
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(stream);
        loop {
            let next = tokio::select! {
                _ = cancel.cancelled() => return,
                n = stream.next() => n,
            };
            match next {
                Some(Ok(list)) => devices.devices_listed(&resource, generation, &list),
                Some(Err(e)) => {
                    warn!(resource = %resource, "ListAndWatch ended unexpectedly for device plugin: {e}");
                    break;
                }
                None => {
                    warn!(resource = %resource, "ListAndWatch ended for device plugin");
                    break;
                }
            }
        }
        devices.disconnected(&resource, generation);
    });
    Ok(generation)
}

struct Server {
    devices: DeviceManager,
    cancel: CancellationToken,
}

#[tonic::async_trait]
impl Registration for Server {
    async fn register(
        &self,
        req: Request<dp::RegisterRequest>,
    ) -> Result<Response<dp::Empty>, Status> {
        let r = req.into_inner();
        info!(resource = %r.resource_name, endpoint = %r.endpoint, "got registration request from device plugin");
        if let Err(e) = check(&r) {
            warn!(resource = %r.resource_name, "bad registration request from device plugin: {e}");
            return Err(Status::unknown(e));
        }
        if r.endpoint.contains('/') {
            return Err(Status::unknown(format!(
                "invalid endpoint {:?}",
                r.endpoint
            )));
        }
        if r.options
            .as_ref()
            .is_some_and(|o| o.get_preferred_allocation_available)
        {
            warn!(resource = %r.resource_name, "getPreferredAllocationAvailable is not acted on: GetPreferredAllocation is not called, devices are picked in ID order");
        }
        let socket = self.devices.dir().join(&r.endpoint);
        connect(
            &self.devices,
            &r.resource_name,
            &socket,
            self.cancel.clone(),
        )
        .await
        .map_err(Status::unknown)?;
        Ok(Response::new(dp::Empty {}))
    }
}

/// Removes the sockets in `dir` but not the checkpoint (the kubelet's CleanupPluginDirectory).
fn cleanup(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        if e.file_name() == super::CHECKPOINT_FILE {
            continue;
        }
        if e.file_type().is_ok_and(|t| t.is_socket())
            && let Err(err) = std::fs::remove_file(e.path())
        {
            warn!(path = %e.path().display(), error = %err, "cannot remove a stale device plugin socket");
        }
    }
}

/// Cleans the directory, binds `kubelet.sock` and serves registrations until `cancel`.
pub fn spawn(devices: DeviceManager, cancel: CancellationToken) -> std::io::Result<()> {
    let dir = devices.dir().to_path_buf();
    std::fs::create_dir_all(&dir)?;
    cleanup(&dir);
    let path = dir.join(SOCKET);
    let listener = tokio::net::UnixListener::bind(&path)?;
    info!(socket = %path.display(), "device plugin registration listening");
    tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        let server = Server {
            devices,
            cancel: cancel.clone(),
        };
        let served = tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(server))
            .serve_with_incoming_shutdown(incoming, cancel.cancelled())
            .await;
        if let Err(e) = served {
            warn!(error = %e, "device plugin registration server stopped");
        }
        let _ = std::fs::remove_file(&path);
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registrations_are_checked_as_the_kubelet() {
        let req = |v: &str, r: &str| dp::RegisterRequest {
            version: v.into(),
            endpoint: "w.sock".into(),
            resource_name: r.into(),
            options: None,
        };
        assert_eq!(check(&req("v1beta1", "bosun.test/widget")), Ok(()));
        assert_eq!(
            check(&req("v1alpha", "bosun.test/widget")).unwrap_err(),
            "requested API version \"v1alpha\" is not supported by kubelet. Supported version is [\"v1beta1\"]"
        );
        for bad in [
            "widget",
            "kubernetes.io/widget",
            "nvidia.com/",
            "Bosun.Test/w",
            "a.b/-w",
            "requests.x/y",
        ] {
            assert_eq!(
                check(&req("v1beta1", bad)).unwrap_err(),
                format!("the ResourceName {bad:?} is invalid"),
                "{bad}"
            );
        }
        assert!(valid_resource_name("nvidia.com/gpu"));
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(
            validate("bosun.test/w", &v(&["v1alpha", "v1beta1"])),
            Ok(())
        );
        assert_eq!(
            validate("bosun.test/w", &v(&["v1alpha", "v2"])).unwrap_err(),
            "manager version, v1beta1, is not among plugin supported versions [v1alpha v2]"
        );
        assert_eq!(
            validate("w", &v(&["v1beta1"])).unwrap_err(),
            "invalid name of device plugin socket: the ResourceName \"w\" is invalid"
        );
        assert!(valid_resource_name("example.com/a_b.c-d"));
    }
}
