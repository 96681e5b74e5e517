//! `device-plugin --resource NAME --count N --root-dir ROOT --state-dir DIR`: a device plugin
//! written for the tests from the kubelet's device plugin API (v1beta1 api.proto).
//!
//! It exposes N fake devices `w0`..`w<N-1>`, each backed by the file `DIR/devices/<id>`
//! (holding `widget <id>`), serves the DevicePlugin service on `ROOT/device-plugins/widget.sock`
//! and registers with `ROOT/device-plugins/kubelet.sock`; when that socket is recreated (the
//! agent restarted) or its own socket is removed, it serves and registers again, as device
//! plugins do. ListAndWatch sends the devices and again whenever the control file
//! `DIR/unhealthy` (device IDs, one a line) changes their health. Allocate answers, per
//! container, the env var `WIDGET_IDS=<ids, comma separated>`, a read-only mount of each
//! device's file at `/dev/widgets/<id>` and the annotation `bosun.test/widget-ids=<ids>`. Every
//! call is appended to `DIR/calls.log` (`<Rpc> <ids>`); SIGTERM removes its socket.
//!
//! With `--via registry` it registers through the plugin watcher instead, as newer plugins do:
//! its DevicePlugin service on `DIR/widget.sock`, and the plugin registration service (GetInfo:
//! type DevicePlugin, NAME, that endpoint, version v1beta1; NotifyRegistrationStatus) on
//! `ROOT/plugins_registry/widget-reg.sock`.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bosun_proto::deviceplugin_v1beta1 as dp;
use bosun_proto::pluginregistration_v1 as reg;
use bosun_tests::plugin_registration::{Call, Registrar, listen};
use dp::device_plugin_server::{DevicePlugin, DevicePluginServer};
use hyper_util::rt::TokioIo;
use reg::registration_server::RegistrationServer;
use tokio::sync::watch;
use tonic::transport::{Endpoint, Uri};
use tonic::{Request, Response, Status};

/// The plugin's socket name in the device-plugins directory.
const SOCKET: &str = "widget.sock";

#[derive(Clone)]
struct Plugin {
    state: PathBuf,
    devices: watch::Receiver<Vec<dp::Device>>,
}

impl Plugin {
    fn record(&self, line: String) {
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.state.join("calls.log"))
        {
            let _ = writeln!(f, "{line}");
        }
    }
}

type DeviceStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<dp::ListAndWatchResponse, Status>> + Send + 'static>,
>;

#[tonic::async_trait]
impl DevicePlugin for Plugin {
    type ListAndWatchStream = DeviceStream;

    async fn get_device_plugin_options(
        &self,
        _: Request<dp::Empty>,
    ) -> Result<Response<dp::DevicePluginOptions>, Status> {
        Ok(Response::new(dp::DevicePluginOptions::default()))
    }

    async fn list_and_watch(
        &self,
        _: Request<dp::Empty>,
    ) -> Result<Response<Self::ListAndWatchStream>, Status> {
        self.record("ListAndWatch".into());
        // The current list at once, then each change.
        let start = (self.devices.clone(), true);
        let stream = futures::stream::unfold(start, |(mut rx, first)| async move {
            if !first && rx.changed().await.is_err() {
                return None;
            }
            let devices = rx.borrow_and_update().clone();
            Some((Ok(dp::ListAndWatchResponse { devices }), (rx, false)))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_preferred_allocation(
        &self,
        _: Request<dp::PreferredAllocationRequest>,
    ) -> Result<Response<dp::PreferredAllocationResponse>, Status> {
        Err(Status::unimplemented("no preferred allocation"))
    }

    async fn allocate(
        &self,
        req: Request<dp::AllocateRequest>,
    ) -> Result<Response<dp::AllocateResponse>, Status> {
        let mut out = Vec::new();
        for c in req.into_inner().container_requests {
            let ids = c.devices_ids.join(",");
            self.record(format!("Allocate {ids}"));
            let mounts = c
                .devices_ids
                .iter()
                .map(|id| dp::Mount {
                    container_path: format!("/dev/widgets/{id}"),
                    host_path: self.state.join("devices").join(id).display().to_string(),
                    read_only: true,
                })
                .collect();
            out.push(dp::ContainerAllocateResponse {
                envs: HashMap::from([("WIDGET_IDS".to_string(), ids.clone())]),
                mounts,
                devices: Vec::new(),
                annotations: HashMap::from([("bosun.test/widget-ids".to_string(), ids)]),
                cdi_devices: Vec::new(),
            });
        }
        Ok(Response::new(dp::AllocateResponse {
            container_responses: out,
        }))
    }

    async fn pre_start_container(
        &self,
        _: Request<dp::PreStartContainerRequest>,
    ) -> Result<Response<dp::PreStartContainerResponse>, Status> {
        Ok(Response::new(dp::PreStartContainerResponse {}))
    }
}

/// `--via registry`: serves the plugin and its registration socket until SIGTERM.
async fn serve_via_registry(
    plugin: Plugin,
    resource: String,
    root: &Path,
    tx: watch::Sender<Vec<dp::Device>>,
    count: usize,
) -> anyhow::Result<()> {
    let socket = plugin.state.join(SOCKET);
    let reg_dir = root.join("plugins_registry");
    std::fs::create_dir_all(&reg_dir)?;
    let reg_socket = reg_dir.join("widget-reg.sock");
    let server = serve(&socket, plugin.clone())?;
    let incoming = listen(&reg_socket)?;
    let recorder = plugin.clone();
    let registrar = Registrar {
        info: reg::PluginInfo {
            r#type: "DevicePlugin".into(),
            name: resource,
            endpoint: socket.display().to_string(),
            supported_versions: vec!["v1beta1".into()],
        },
        record: Arc::new(move |call| match call {
            Call::GetInfo => {}
            Call::Status {
                registered: true, ..
            } => recorder.record("Registered".into()),
            Call::Status { error, .. } => recorder.record(format!("RegistrationFailed {error}")),
        }),
    };
    let reg_server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(RegistrationServer::new(registrar))
            .serve_with_incoming(incoming),
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tx.send_if_modified(|d| {
            let now = devices(count, &plugin.state);
            let changed = *d != now;
            *d = now;
            changed
        });
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
    }
    server.abort();
    reg_server.abort();
    let _ = std::fs::remove_file(&reg_socket);
    let _ = std::fs::remove_file(&socket);
    Ok(())
}

/// The devices with the health the control file gives them.
fn devices(count: usize, state: &Path) -> Vec<dp::Device> {
    let unhealthy = std::fs::read_to_string(state.join("unhealthy")).unwrap_or_default();
    let bad: Vec<&str> = unhealthy.lines().map(str::trim).collect();
    (0..count)
        .map(|i| {
            let id = format!("w{i}");
            let health = if bad.contains(&id.as_str()) {
                "Unhealthy"
            } else {
                "Healthy"
            };
            dp::Device {
                id,
                health: health.into(),
                topology: None,
            }
        })
        .collect()
}

/// Registers `resource` with the agent's registration socket.
async fn register(kubelet_sock: &Path, resource: &str) -> anyhow::Result<()> {
    let path = kubelet_sock.to_path_buf();
    let channel = Endpoint::from_static("http://kubelet.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(&path).await?;
                Ok::<_, std::io::Error>(TokioIo::new(s))
            }
        }))
        .await?;
    let mut c = dp::registration_client::RegistrationClient::new(channel);
    c.register(dp::RegisterRequest {
        version: "v1beta1".into(),
        endpoint: SOCKET.into(),
        resource_name: resource.into(),
        options: Some(dp::DevicePluginOptions::default()),
    })
    .await?;
    Ok(())
}

/// Binds the plugin's socket and serves it in a task.
fn serve(socket: &Path, plugin: Plugin) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let incoming = listen(socket)?;
    Ok(tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(DevicePluginServer::new(plugin))
            .serve_with_incoming(incoming)
            .await;
    }))
}

fn inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut flags: HashMap<String, String> = HashMap::new();
    let mut argv = std::env::args().skip(1);
    while let (Some(k), Some(v)) = (argv.next(), argv.next()) {
        flags.insert(k.trim_start_matches('-').to_string(), v);
    }
    let flag = |k: &str| {
        flags
            .get(k)
            .cloned()
            .ok_or_else(|| anyhow::anyhow!("--{k} is required"))
    };
    let resource = flag("resource")?;
    let count: usize = flag("count")?.parse()?;
    let state = PathBuf::from(flag("state-dir")?);
    let dir = PathBuf::from(flag("root-dir")?).join("device-plugins");
    std::fs::create_dir_all(state.join("devices"))?;
    std::fs::create_dir_all(&dir)?;
    for i in 0..count {
        std::fs::write(
            state.join("devices").join(format!("w{i}")),
            format!("widget w{i}\n"),
        )?;
    }
    let (tx, rx) = watch::channel(devices(count, &state));
    let plugin = Plugin {
        state: state.clone(),
        devices: rx,
    };
    if flags.get("via").map(String::as_str) == Some("registry") {
        let root = PathBuf::from(flag("root-dir")?);
        return serve_via_registry(plugin, resource, &root, tx, count).await;
    }
    let socket = dir.join(SOCKET);
    let kubelet_sock = dir.join("kubelet.sock");
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut server: Option<tokio::task::JoinHandle<()>> = None;
    let mut registered_with: Option<u64> = None;
    loop {
        tx.send_if_modified(|d| {
            let now = devices(count, &state);
            let changed = *d != now;
            *d = now;
            changed
        });
        let agent = inode(&kubelet_sock);
        if agent.is_some() && (agent != registered_with || !socket.exists()) {
            if let Some(old) = server.take() {
                old.abort();
            }
            server = Some(serve(&socket, plugin.clone())?);
            match register(&kubelet_sock, &resource).await {
                Ok(()) => {
                    plugin.record("Registered".into());
                    registered_with = agent;
                }
                Err(e) => eprintln!("registration failed: {e:#}"),
            }
        }
        tokio::select! {
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
    }
    let _ = std::fs::remove_file(&socket);
    Ok(())
}
