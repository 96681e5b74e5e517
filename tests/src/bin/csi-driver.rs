//! `csi-driver --name NAME --node-id ID --root-dir ROOT --state-dir DIR`: a CSI driver written
//! for the tests from the CSI spec (csi.proto), backed by real directories.
//!
//! It serves the Identity and Node services on `DIR/csi.sock` and registers like any driver: the
//! plugin registration service (GetInfo: type CSIPlugin, NAME, that endpoint, version 1.0.0;
//! NotifyRegistrationStatus) on `ROOT/plugins_registry/NAME-reg.sock`, the socket the
//! node-driver-registrar sidecar would create (through a relay that makes the kubelet's grpc-go
//! requests acceptable to tonic: `relay_registration`). A volume is the directory
//! `DIR/volumes/<id>`:
//! NodeStageVolume bind-mounts it on the staging path, NodePublishVolume bind-mounts the staging
//! path (or, for a volume without staging such as an inline ephemeral one, the volume's
//! directory) on the target path (read-only when asked), the unstage and unpublish calls unmount.
//! NodeGetVolumeStats answers statvfs of the volume path (GET_VOLUME_STATS is advertised). Every
//! call is appended as one line to `DIR/calls.log` (`<Rpc> <volume id> <path>`) for the tests to
//! assert on; SIGTERM removes its sockets. While `DIR/hang-NodeStageVolume` (or
//! `hang-NodePublishVolume`) exists, that call waits once logged, so a test can catch its caller
//! mid-call; Node calls run on their own tasks and finish even when the caller is gone, as a
//! real driver's mount does.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use bosun_proto::csi_v1 as csi;
use bosun_proto::pluginregistration_v1 as reg;
use bosun_tests::plugin_registration::{Call, Registrar, listen};
use csi::identity_server::{Identity, IdentityServer};
use csi::node_server::{Node, NodeServer};
use reg::registration_server::RegistrationServer;
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

    /// Waits while the test's knob `DIR/hang-<rpc>` exists.
    async fn hang_while_asked(&self, rpc: &str) {
        let knob = self.state.join(format!("hang-{rpc}"));
        while knob.exists() {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
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
        self.hang_while_asked("NodeStageVolume").await;
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
        self.hang_while_asked("NodePublishVolume").await;
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
        req: Request<csi::NodeExpandVolumeRequest>,
    ) -> Result<Response<csi::NodeExpandVolumeResponse>, Status> {
        // A directory has no size to grow: the call is recorded and the size answered.
        let r = req.into_inner();
        let bytes = r.capacity_range.map_or(0, |c| c.required_bytes);
        self.record(format!(
            "NodeExpandVolume {} {} {bytes} staging={}",
            r.volume_id, r.volume_path, r.staging_target_path
        ));
        if !mounted(Path::new(&r.volume_path)) {
            return Err(Status::not_found(format!(
                "{} is not published",
                r.volume_path
            )));
        }
        Ok(Response::new(csi::NodeExpandVolumeResponse {
            capacity_bytes: bytes,
        }))
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
                cap(rpc::Type::ExpandVolume),
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

/// A service whose calls run on tasks of their own: a call goes on when its client hangs up.
#[derive(Clone)]
struct Detached<S>(S);

impl<S: tonic::server::NamedService> tonic::server::NamedService for Detached<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, R> tonic::codegen::Service<R> for Detached<S>
where
    S: tonic::codegen::Service<R>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future =
        std::pin::Pin<Box<dyn std::future::Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        let task = tokio::spawn(self.0.call(req));
        Box::pin(async move {
            match task.await {
                Ok(r) => r,
                Err(e) => std::panic::resume_unwind(e.into_panic()),
            }
        })
    }
}

/// Relays connections to the registration socket on to the registration server at `inner`,
/// with each request's `:authority` made `localhost`: the kubelet's plugin manager dials the
/// socket with grpc-go and no WithAuthority, so its requests carry the socket's path there, which
/// the h2 crate under tonic rejects as malformed (RST_STREAM PROTOCOL_ERROR, hyperium/h2#487),
/// while the Go servers of node-driver-registrar accept it.
async fn relay_registration(listener: tokio::net::UnixListener, inner: PathBuf) {
    while let Ok((client, _)) = listener.accept().await {
        let inner = inner.clone();
        tokio::spawn(async move {
            let Ok(server) = tokio::net::UnixStream::connect(&inner).await else {
                return;
            };
            let (mut from_client, mut to_client) = client.into_split();
            let (mut from_server, mut to_server) = server.into_split();
            tokio::select! {
                _ = tokio::io::copy(&mut from_server, &mut to_client) => {}
                _ = local_authority(&mut from_client, &mut to_server) => {}
            }
        });
    }
}

/// Copies an HTTP/2 client's bytes, rewriting the `:authority` of each complete HEADERS frame.
async fn local_authority(
    from: &mut tokio::net::unix::OwnedReadHalf,
    to: &mut tokio::net::unix::OwnedWriteHalf,
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut preface = [0u8; 24];
    from.read_exact(&mut preface).await?;
    to.write_all(&preface).await?;
    loop {
        let mut head = [0u8; 9];
        from.read_exact(&mut head).await?;
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        from.read_exact(&mut payload).await?;
        // HEADERS with END_HEADERS, without PADDED or PRIORITY: the payload is the header block.
        if head[3] == 1
            && head[4] & 0x04 != 0
            && head[4] & 0x28 == 0
            && let Some(block) = with_local_authority(&payload)
        {
            payload = block;
            head[..3].copy_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
        }
        to.write_all(&head).await?;
        to.write_all(&payload).await?;
    }
}

/// An HPACK integer with an N-bit prefix at `block[*i]` (RFC 7541 5.1).
fn hpack_int(block: &[u8], i: &mut usize, prefix: u32) -> Option<usize> {
    let mask = ((1u32 << prefix) - 1) as usize;
    let mut v = *block.get(*i)? as usize & mask;
    *i += 1;
    if v < mask {
        return Some(v);
    }
    for shift in (0..28).step_by(7) {
        let c = *block.get(*i)?;
        *i += 1;
        v += ((c & 0x7f) as usize) << shift;
        if c & 0x80 == 0 {
            return Some(v);
        }
    }
    None
}

/// Skips an HPACK string literal (RFC 7541 5.2).
fn skip_hpack_string(block: &[u8], i: &mut usize) -> Option<()> {
    *i += hpack_int(block, i, 7)?;
    (*i <= block.len()).then_some(())
}

/// `block` with the value of each literal `:authority` field (static name index 1) replaced by
/// `localhost`; None when it does not parse.
fn with_local_authority(block: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(block.len());
    let mut i = 0;
    while i < block.len() {
        let start = i;
        let b = block[i];
        // Indexed field (7-bit), literal with indexing (6), size update (5), other literals (4).
        let (prefix, literal) = match b {
            _ if b & 0x80 != 0 => (7, false),
            _ if b & 0x40 != 0 => (6, true),
            _ if b & 0x20 != 0 => (5, false),
            _ => (4, true),
        };
        let name = hpack_int(block, &mut i, prefix)?;
        if literal && name == 0 {
            skip_hpack_string(block, &mut i)?;
        }
        let value_at = i;
        if literal {
            skip_hpack_string(block, &mut i)?;
        }
        if literal && name == 1 {
            out.extend_from_slice(&block[start..value_at]);
            out.push(9);
            out.extend_from_slice(b"localhost");
        } else {
            out.extend_from_slice(&block[start..i]);
        }
    }
    Some(out)
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
    let reg_inner = driver.state.join("registration.sock");
    let reg_incoming = listen(&reg_inner)?;
    let relay = relay_registration(listen(&reg_socket)?.into_inner(), reg_inner.clone());
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
        .add_service(Detached(NodeServer::new(driver.clone())))
        .serve_with_incoming(csi_incoming);
    let recorder = driver.clone();
    let registrar = Registrar {
        info: reg::PluginInfo {
            r#type: "CSIPlugin".into(),
            name: driver.name.clone(),
            endpoint: endpoint.display().to_string(),
            supported_versions: vec!["1.0.0".into()],
        },
        record: Arc::new(move |call| {
            recorder.record(match call {
                Call::GetInfo => "GetInfo".into(),
                Call::Status { registered, error } => {
                    format!("NotifyRegistrationStatus registered={registered} error={error:?}")
                }
            })
        }),
    };
    let reg_server = tonic::transport::Server::builder()
        .add_service(RegistrationServer::new(registrar))
        .serve_with_incoming(reg_incoming);
    tokio::select! {
        r = csi_server => r?,
        r = reg_server => r?,
        _ = relay => {}
        _ = stop => {}
    }
    let _ = std::fs::remove_file(&reg_socket);
    let _ = std::fs::remove_file(&reg_inner);
    let _ = std::fs::remove_file(&endpoint);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::with_local_authority;

    #[test]
    fn the_authority_becomes_localhost_and_the_rest_stays() {
        // :method GET (indexed), :authority "/a/b.sock" (literal with indexing, static name 1),
        // content-type (literal without indexing, new name), :authority (never indexed, name 1).
        let mut block = vec![0x82, 0x41, 9];
        block.extend_from_slice(b"/a/b.sock");
        block.extend_from_slice(&[0x00, 1, b'x', 1, b'y']);
        block.extend_from_slice(&[0x11, 2, b'/', b'c']);
        let mut want = vec![0x82, 0x41, 9];
        want.extend_from_slice(b"localhost");
        want.extend_from_slice(&[0x00, 1, b'x', 1, b'y']);
        want.extend_from_slice(&[0x11, 9]);
        want.extend_from_slice(b"localhost");
        assert_eq!(with_local_authority(&block), Some(want));
        assert_eq!(with_local_authority(&[0x41, 20, b'a']), None);
    }
}
