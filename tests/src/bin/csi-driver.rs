//! `csi-driver --name NAME --node-id ID --root-dir ROOT --state-dir DIR`: a CSI driver written
//! for the tests from the CSI spec (csi.proto), backed by real directories.
//!
//! It serves the Identity and Node services on `DIR/csi.sock` and registers like any driver: the
//! plugin registration service (GetInfo: type CSIPlugin, NAME, that endpoint, version 1.0.0;
//! NotifyRegistrationStatus) on `ROOT/plugins_registry/NAME-reg.sock`, the socket the
//! node-driver-registrar sidecar would create. A volume is the directory `DIR/volumes/<id>`:
//! NodeStageVolume bind-mounts it on the staging path, NodePublishVolume bind-mounts the staging
//! path (or, for a volume without staging such as an inline ephemeral one, the volume's
//! directory) on the target path (read-only when asked), the unstage and unpublish calls unmount.
//! NodeGetVolumeStats answers statvfs of the volume path (GET_VOLUME_STATS is advertised). Every
//! call is appended as one line to `DIR/calls.log` (`<Rpc> <volume id> <path>`) for the tests to
//! assert on; SIGTERM removes both sockets.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use bosun_proto::csi_v1 as csi;
use bosun_proto::pluginregistration_v1 as reg;
use csi::identity_server::{Identity, IdentityServer};
use csi::node_server::{Node, NodeServer};
use reg::registration_server::{Registration, RegistrationServer};
use tonic::{Request, Response, Status};

/// The topology key the driver reports (NodeGetInfo's accessible_topology).
const TOPOLOGY_KEY: &str = "topology.csi.bosun.test/node";

#[derive(Clone)]
struct Driver {
    name: String,
    node_id: String,
    state: PathBuf,
}

impl Driver {
    fn record(&self, line: String) {
        let path = self.state.join("calls.log");
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
        {
            let _ = writeln!(f, "{line}");
        }
    }

    fn volume_dir(&self, id: &str) -> Result<PathBuf, Status> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(Status::invalid_argument(format!("bad volume id {id:?}")));
        }
        let dir = self.state.join("volumes").join(id);
        std::fs::create_dir_all(&dir).map_err(|e| Status::internal(format!("mkdir: {e}")))?;
        Ok(dir)
    }
}

fn mounted(path: &Path) -> bool {
    let want = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(&*want))
}

fn run(args: &[&str]) -> Result<(), Status> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| Status::internal(format!("{}: {e}", args[0])))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Status::internal(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

fn bind(src: &Path, target: &Path, read_only: bool) -> Result<(), Status> {
    if mounted(target) {
        return Ok(());
    }
    let (s, t) = (src.to_string_lossy(), target.to_string_lossy());
    run(&["mount", "--bind", &s, &t])?;
    if read_only {
        run(&["mount", "-o", "remount,bind,ro", &t])?;
    }
    Ok(())
}

fn unmount(target: &Path) -> Result<(), Status> {
    if mounted(target) {
        run(&["umount", &target.to_string_lossy()])?;
    }
    Ok(())
}

#[tonic::async_trait]
impl Identity for Driver {
    async fn get_plugin_info(
        &self,
        _: Request<csi::GetPluginInfoRequest>,
    ) -> Result<Response<csi::GetPluginInfoResponse>, Status> {
        self.record("GetPluginInfo".into());
        Ok(Response::new(csi::GetPluginInfoResponse {
            name: self.name.clone(),
            vendor_version: "0.1.0".into(),
            manifest: HashMap::new(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _: Request<csi::GetPluginCapabilitiesRequest>,
    ) -> Result<Response<csi::GetPluginCapabilitiesResponse>, Status> {
        Ok(Response::new(csi::GetPluginCapabilitiesResponse {
            capabilities: vec![],
        }))
    }

    async fn probe(
        &self,
        _: Request<csi::ProbeRequest>,
    ) -> Result<Response<csi::ProbeResponse>, Status> {
        Ok(Response::new(csi::ProbeResponse { ready: Some(true) }))
    }
}

#[tonic::async_trait]
impl Node for Driver {
    async fn node_stage_volume(
        &self,
        r: Request<csi::NodeStageVolumeRequest>,
    ) -> Result<Response<csi::NodeStageVolumeResponse>, Status> {
        let r = r.into_inner();
        self.record(format!(
            "NodeStageVolume {} {}",
            r.volume_id, r.staging_target_path
        ));
        let dir = self.volume_dir(&r.volume_id)?;
        let staging = Path::new(&r.staging_target_path);
        if !staging.is_dir() {
            return Err(Status::failed_precondition(format!(
                "staging path {} is not a directory",
                staging.display()
            )));
        }
        bind(&dir, staging, false)?;
        Ok(Response::new(csi::NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        r: Request<csi::NodeUnstageVolumeRequest>,
    ) -> Result<Response<csi::NodeUnstageVolumeResponse>, Status> {
        let r = r.into_inner();
        self.record(format!(
            "NodeUnstageVolume {} {}",
            r.volume_id, r.staging_target_path
        ));
        unmount(Path::new(&r.staging_target_path))?;
        Ok(Response::new(csi::NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        r: Request<csi::NodePublishVolumeRequest>,
    ) -> Result<Response<csi::NodePublishVolumeResponse>, Status> {
        let r = r.into_inner();
        self.record(format!(
            "NodePublishVolume {} {} readonly={} ephemeral={}",
            r.volume_id,
            r.target_path,
            r.readonly,
            r.volume_context
                .get("csi.storage.k8s.io/ephemeral")
                .map(String::as_str)
                .unwrap_or("false"),
        ));
        let target = Path::new(&r.target_path);
        std::fs::create_dir_all(target)
            .map_err(|e| Status::internal(format!("mkdir {}: {e}", target.display())))?;
        let src = if r.staging_target_path.is_empty() {
            self.volume_dir(&r.volume_id)?
        } else {
            let staging = PathBuf::from(&r.staging_target_path);
            if !mounted(&staging) {
                return Err(Status::failed_precondition("volume not staged"));
            }
            staging
        };
        bind(&src, target, r.readonly)?;
        Ok(Response::new(csi::NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        r: Request<csi::NodeUnpublishVolumeRequest>,
    ) -> Result<Response<csi::NodeUnpublishVolumeResponse>, Status> {
        let r = r.into_inner();
        self.record(format!(
            "NodeUnpublishVolume {} {}",
            r.volume_id, r.target_path
        ));
        let target = Path::new(&r.target_path);
        unmount(target)?;
        let _ = std::fs::remove_dir(target);
        Ok(Response::new(csi::NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        r: Request<csi::NodeGetVolumeStatsRequest>,
    ) -> Result<Response<csi::NodeGetVolumeStatsResponse>, Status> {
        let r = r.into_inner();
        self.record(format!(
            "NodeGetVolumeStats {} {}",
            r.volume_id, r.volume_path
        ));
        let s = nix::sys::statvfs::statvfs(Path::new(&r.volume_path))
            .map_err(|e| Status::not_found(format!("statvfs {}: {e}", r.volume_path)))?;
        let frag = s.fragment_size() as i64;
        let usage = |unit: csi::volume_usage::Unit, total: i64, free: i64| csi::VolumeUsage {
            available: free,
            total,
            used: total - free,
            unit: unit as i32,
        };
        Ok(Response::new(csi::NodeGetVolumeStatsResponse {
            usage: vec![
                usage(
                    csi::volume_usage::Unit::Bytes,
                    s.blocks() as i64 * frag,
                    s.blocks_available() as i64 * frag,
                ),
                usage(
                    csi::volume_usage::Unit::Inodes,
                    s.files() as i64,
                    s.files_free() as i64,
                ),
            ],
        }))
    }

    async fn node_get_volume_health(
        &self,
        _: Request<csi::NodeGetVolumeHealthRequest>,
    ) -> Result<Response<csi::NodeGetVolumeHealthResponse>, Status> {
        Err(Status::unimplemented("NodeGetVolumeHealth"))
    }

    async fn node_get_storage_health(
        &self,
        _: Request<csi::NodeGetStorageHealthRequest>,
    ) -> Result<Response<csi::NodeGetStorageHealthResponse>, Status> {
        Err(Status::unimplemented("NodeGetStorageHealth"))
    }

    async fn node_expand_volume(
        &self,
        _: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        Err(Status::unimplemented("NodeExpandVolume"))
    }

    async fn node_get_capabilities(
        &self,
        _: Request<csi::NodeGetCapabilitiesRequest>,
    ) -> Result<Response<csi::NodeGetCapabilitiesResponse>, Status> {
        use csi::node_service_capability::{Type, rpc};
        let cap = |t: rpc::Type| csi::NodeServiceCapability {
            r#type: Some(Type::Rpc(csi::node_service_capability::Rpc {
                r#type: t as i32,
            })),
        };
        Ok(Response::new(csi::NodeGetCapabilitiesResponse {
            capabilities: vec![
                cap(rpc::Type::StageUnstageVolume),
                cap(rpc::Type::GetVolumeStats),
            ],
        }))
    }

    async fn node_get_info(
        &self,
        _: Request<csi::NodeGetInfoRequest>,
    ) -> Result<Response<csi::NodeGetInfoResponse>, Status> {
        self.record("NodeGetInfo".into());
        Ok(Response::new(csi::NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 10,
            accessible_topology: Some(csi::Topology {
                segments: [(TOPOLOGY_KEY.to_string(), self.node_id.clone())].into(),
            }),
        }))
    }
}

struct Registrar {
    driver: Driver,
    endpoint: String,
}

#[tonic::async_trait]
impl Registration for Registrar {
    async fn get_info(
        &self,
        _: Request<reg::InfoRequest>,
    ) -> Result<Response<reg::PluginInfo>, Status> {
        self.driver.record("GetInfo".into());
        Ok(Response::new(reg::PluginInfo {
            r#type: "CSIPlugin".into(),
            name: self.driver.name.clone(),
            endpoint: self.endpoint.clone(),
            supported_versions: vec!["1.0.0".into()],
        }))
    }

    async fn notify_registration_status(
        &self,
        r: Request<reg::RegistrationStatus>,
    ) -> Result<Response<reg::RegistrationStatusResponse>, Status> {
        let r = r.into_inner();
        self.driver.record(format!(
            "NotifyRegistrationStatus registered={} error={:?}",
            r.plugin_registered, r.error
        ));
        Ok(Response::new(reg::RegistrationStatusResponse {}))
    }
}

fn listen(path: &Path) -> std::io::Result<tokio_stream::wrappers::UnixListenerStream> {
    let _ = std::fs::remove_file(path);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    Ok(tokio_stream::wrappers::UnixListenerStream::new(
        tokio::net::UnixListener::bind(path)?,
    ))
}

#[tokio::main(flavor = "current_thread")]
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
    let driver = Driver {
        name: flag("name")?,
        node_id: flag("node-id")?,
        state: PathBuf::from(flag("state-dir")?),
    };
    let endpoint = driver.state.join("csi.sock");
    let reg_socket = PathBuf::from(flag("root-dir")?)
        .join("plugins_registry")
        .join(format!("{}-reg.sock", driver.name));
    let csi_incoming = listen(&endpoint)?;
    let reg_incoming = listen(&reg_socket)?;
    let stop = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    let csi_server = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(driver.clone()))
        .add_service(NodeServer::new(driver.clone()))
        .serve_with_incoming(csi_incoming);
    let registrar = Registrar {
        driver: driver.clone(),
        endpoint: endpoint.display().to_string(),
    };
    let reg_server = tonic::transport::Server::builder()
        .add_service(RegistrationServer::new(registrar))
        .serve_with_incoming(reg_incoming);
    tokio::select! {
        r = csi_server => r?,
        r = reg_server => r?,
        _ = stop => {}
    }
    let _ = std::fs::remove_file(&reg_socket);
    let _ = std::fs::remove_file(&endpoint);
    Ok(())
}
