//! The kubelet's plugin watcher and plugin manager for CSI drivers: `<root>/plugins_registry/`
//! is read whenever inotify reports a change in it (the kubelet watches it with fsnotify), every
//! second while a failed registration waits for its retry, and every minute in any case (every
//! second when inotify cannot watch it); a new socket
//! (or one recreated by a restarted driver: a new inode) is registered (GetInfo, the driver's
//! NodeGetInfo on the endpoint it names, its node ID and topology labels on the Node, its entry
//! in the CSINode, NotifyRegistrationStatus), a
//! socket gone deregisters its driver (entry dropped from the CSINode). A failed registration is
//! retried after 5 s. A plugin of type DevicePlugin goes to the device manager as the kubelet's
//! device plugin handler: its versions and resource name validated, its endpoint (the path
//! GetInfo names) connected and its ListAndWatch followed; its socket gone, its devices turn
//! unhealthy.

use std::collections::HashMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::client::{CsiClient, PluginInfo, RegistrationClient};
use super::csinode::{CsiNodeWriter, driver_entry};
use super::{Driver, Drivers};
use crate::devicemanager::{DeviceManager, registration};

/// How often the registry directory is read while a registration waits for its retry, or
/// inotify cannot watch it.
const SCAN: Duration = Duration::from_secs(1);
/// How often it is read with nothing reported changed.
const RESCAN: Duration = Duration::from_secs(60);
/// How long a failed registration waits before the next attempt.
const RETRY: Duration = Duration::from_secs(5);

/// The directory plugins put their registration sockets in.
pub fn registry_dir(root_dir: &Path) -> PathBuf {
    root_dir.join("plugins_registry")
}

/// What the watcher knows of one socket.
enum Seen {
    /// Registered as this driver (a device plugin: this resource, with its registration number).
    Registered {
        inode: u64,
        driver: String,
        device: Option<u64>,
    },
    /// Its last registration failed at this time.
    Failed { inode: u64, at: Instant },
}

/// The sockets in `dir` (not hidden files, as the kubelet) with their inodes.
fn sockets(dir: &Path) -> HashMap<PathBuf, u64> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return HashMap::new();
    };
    entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.file_type().is_socket().then(|| (e.path(), meta.ino()))
        })
        .collect()
}

/// An inotify watch on the registry directory: the entries made, removed or renamed in it.
struct DirWatch(tokio::io::unix::AsyncFd<Watched>);

/// The inotify instance, for tokio's readiness.
struct Watched(nix::sys::inotify::Inotify);

impl std::os::fd::AsRawFd for Watched {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsFd;
        self.0.as_fd().as_raw_fd()
    }
}

impl DirWatch {
    /// Watches `dir`; None when inotify cannot (the watcher then polls).
    fn new(dir: &Path) -> Option<DirWatch> {
        use nix::sys::inotify::{AddWatchFlags as F, InitFlags, Inotify};
        let inotify = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC).ok()?;
        let flags = F::IN_CREATE
            | F::IN_DELETE
            | F::IN_MOVED_FROM
            | F::IN_MOVED_TO
            | F::IN_DELETE_SELF
            | F::IN_MOVE_SELF;
        inotify.add_watch(dir, flags).ok()?;
        // SAFETY: an Inotify owns its descriptor (an OwnedFd): it stays open, the same one,
        // until the Inotify is dropped, and the AsyncFd owns the Inotify.
        unsafe { tokio::io::unix::AsyncFd::register(Watched(inotify)) }
            .ok()
            .map(DirWatch)
    }

    /// Waits until the directory changed; false when the watch is gone (the directory itself
    /// removed or moved, or inotify failing).
    async fn changed(&self) -> bool {
        use nix::sys::inotify::AddWatchFlags as F;
        loop {
            let Ok(mut ready) = self.0.readable().await else {
                return false;
            };
            match ready.try_io(|w| w.get_ref().0.read_events().map_err(std::io::Error::from)) {
                Ok(Ok(events)) => {
                    let gone = F::IN_DELETE_SELF | F::IN_MOVE_SELF | F::IN_IGNORED;
                    return !events.iter().any(|e| e.mask.intersects(gone));
                }
                Ok(Err(_)) => return false,
                Err(_would_block) => continue,
            }
        }
    }
}

/// Whether a CSI driver's supported versions include one Bosun speaks (CSI 1.x).
fn supported_version(versions: &[String]) -> bool {
    versions.iter().any(|v| {
        let v = v.trim_start_matches('v');
        v.split('.').next() == Some("1")
    })
}

/// Runs the watcher until `cancel`: registers and deregisters drivers in `drivers` and, with an
/// API client, in the node's CSINode.
pub async fn run(
    root_dir: PathBuf,
    (drivers, devices): (Drivers, DeviceManager),
    csinode: Option<CsiNodeWriter>,
    cancel: CancellationToken,
) {
    let dir = registry_dir(&root_dir);
    if let Err(e) = std::fs::create_dir_all(&dir) {
        warn!(error = %e, dir = %dir.display(), "cannot create the plugin registry directory");
    }
    let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
    let mut watch: Option<DirWatch> = None;
    loop {
        if watch.is_none() {
            // Before the read: a change during it is reported, not lost.
            watch = DirWatch::new(&dir);
        }
        let now = sockets(&dir);
        let gone: Vec<PathBuf> = seen
            .keys()
            .filter(|p| !now.contains_key(*p))
            .cloned()
            .collect();
        for path in gone {
            match seen.remove(&path) {
                Some(Seen::Registered {
                    driver,
                    device: Some(generation),
                    ..
                }) => {
                    info!(resource = %driver, "device plugin socket removed: deregistering");
                    devices.disconnected(&driver, generation);
                }
                Some(Seen::Registered { driver, .. }) => {
                    deregister(&drivers, csinode.as_ref(), &driver).await
                }
                _ => {}
            }
        }
        for (path, inode) in now {
            let due = match seen.get(&path) {
                None => true,
                Some(Seen::Registered { inode: i, .. }) => *i != inode,
                Some(Seen::Failed { inode: i, at }) => *i != inode || at.elapsed() >= RETRY,
            };
            if !due {
                continue;
            }
            let plugins = Plugins {
                drivers: &drivers,
                devices: &devices,
                csinode: csinode.as_ref(),
                cancel: &cancel,
            };
            let entry = match register(&path, &plugins).await {
                Ok((driver, device)) => Seen::Registered {
                    inode,
                    driver,
                    device,
                },
                Err(e) => {
                    warn!(socket = %path.display(), error = %e, "plugin registration failed");
                    Seen::Failed {
                        inode,
                        at: Instant::now(),
                    }
                }
            };
            seen.insert(path, entry);
        }
        let retrying = seen.values().any(|s| matches!(s, Seen::Failed { .. }));
        let wait = match &watch {
            Some(_) if !retrying => RESCAN,
            _ => SCAN,
        };
        let changed = async {
            match &watch {
                Some(w) => w.changed().await,
                None => std::future::pending().await,
            }
        };
        let still = tokio::select! {
            _ = cancel.cancelled() => return,
            still = changed => still,
            _ = tokio::time::sleep(wait) => true,
        };
        if !still {
            watch = None;
        }
    }
}

/// Where registered plugins go.
struct Plugins<'a> {
    drivers: &'a Drivers,
    devices: &'a DeviceManager,
    csinode: Option<&'a CsiNodeWriter>,
    cancel: &'a CancellationToken,
}

/// Registers the plugin on `socket`; returns its driver name (a device plugin's resource, with
/// its registration number).
async fn register(socket: &Path, to: &Plugins<'_>) -> Result<(String, Option<u64>), String> {
    let reg = RegistrationClient::new(socket);
    let info = reg.get_info().await.map_err(|e| e.to_string())?;
    let result = if info.kind == "DevicePlugin" {
        install_device_plugin(socket, &info, to).await.map(Some)
    } else {
        install(socket, &info, to.drivers, to.csinode)
            .await
            .map(|()| None)
    };
    let notified = reg.notify(result.clone().err()).await;
    if let Err(e) = notified {
        warn!(plugin = %info.name, error = %e, "NotifyRegistrationStatus failed");
    }
    result.map(|device| (info.name, device))
}

/// The kubelet's device plugin handler: ValidatePlugin, then RegisterPlugin (the endpoint
/// connected, its devices followed).
async fn install_device_plugin(
    socket: &Path,
    info: &PluginInfo,
    to: &Plugins<'_>,
) -> Result<u64, String> {
    registration::validate(&info.name, &info.versions)?;
    let endpoint = if info.endpoint.is_empty() {
        socket.to_path_buf()
    } else {
        PathBuf::from(&info.endpoint)
    };
    let generation =
        registration::connect(to.devices, &info.name, &endpoint, to.cancel.child_token()).await?;
    info!(resource = %info.name, endpoint = %endpoint.display(), "device plugin registered through the plugin registry");
    Ok(generation)
}

/// Validates a plugin's info, reads its node info and records the driver.
async fn install(
    socket: &Path,
    info: &PluginInfo,
    drivers: &Drivers,
    csinode: Option<&CsiNodeWriter>,
) -> Result<(), String> {
    if info.kind != "CSIPlugin" {
        return Err(format!(
            "plugin type {:?} of {} is not supported by bosun",
            info.kind, info.name
        ));
    }
    if info.name.is_empty() {
        return Err("CSI plugin name is empty".into());
    }
    if !supported_version(&info.versions) {
        return Err(format!(
            "none of the versions {:?} of CSI driver {} is supported (1.x)",
            info.versions, info.name
        ));
    }
    let endpoint = if info.endpoint.is_empty() {
        socket.to_path_buf()
    } else {
        PathBuf::from(&info.endpoint)
    };
    let client = CsiClient::new(&endpoint);
    let node_info = client
        .node_get_info()
        .await
        .map_err(|e| format!("error during CSI driver {} NodeGetInfo: {e}", info.name))?;
    if node_info.node_id.is_empty() {
        return Err(format!(
            "CSI driver {} returned an empty node ID",
            info.name
        ));
    }
    if let Some(w) = csinode {
        w.set_node_info(&info.name, Some((&node_info.node_id, &node_info.topology)))
            .await
            .map_err(|e| format!("error updating Node object with CSI driver node info: {e}"))?;
        w.set_driver(&info.name, Some(driver_entry(&info.name, &node_info)))
            .await
            .map_err(|e| format!("error updating CSINode object with CSI driver node info: {e}"))?;
    }
    info!(
        driver = %info.name,
        endpoint = %endpoint.display(),
        node_id = %node_info.node_id,
        "CSI driver registered"
    );
    drivers.insert(
        &info.name,
        Driver {
            endpoint,
            client,
            info: node_info,
        },
    );
    Ok(())
}

/// Forgets driver `name` and drops it from the CSINode.
async fn deregister(drivers: &Drivers, csinode: Option<&CsiNodeWriter>, name: &str) {
    info!(driver = %name, "CSI driver socket removed: deregistering");
    drivers.remove(name);
    if let Some(w) = csinode {
        if let Err(e) = w.set_driver(name, None).await {
            warn!(driver = %name, error = %e, "cannot remove the driver from the CSINode");
        }
        if let Err(e) = w.set_node_info(name, None).await {
            warn!(driver = %name, error = %e, "cannot remove the driver's node ID from the Node");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csi_versions_of_major_one_are_spoken() {
        let v = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(supported_version(&v(&["1.0.0"])));
        assert!(supported_version(&v(&["0.3.0", "v1.2.0"])));
        assert!(!supported_version(&v(&["0.3.0"])));
        assert!(!supported_version(&v(&[])));
    }

    #[test]
    fn only_visible_sockets_count() {
        let dir = tempfile::tempdir().unwrap();
        let _a = std::os::unix::net::UnixListener::bind(dir.path().join("a.sock")).unwrap();
        let _h = std::os::unix::net::UnixListener::bind(dir.path().join(".hidden.sock")).unwrap();
        std::fs::write(dir.path().join("file"), "x").unwrap();
        let found: Vec<PathBuf> = sockets(dir.path()).into_keys().collect();
        assert_eq!(found, vec![dir.path().join("a.sock")]);
    }
}
