//! The container manager's cgroup part, as the kubelet's `pkg/kubelet/cm`: the node allocatable
//! cgroup (`<cgroupRoot>/kubepods`) with the QoS tiers `burstable` and `besteffort` below it, one
//! `pod<uid>` cgroup per pod with the limits of its containers' sum, made before the sandbox and
//! removed after it; cgroup v1 and v2 behind one seam ([`fs::Backend`]), names in the cgroupfs or
//! systemd syntax ([`name`]). With the systemd driver each of those cgroups is a transient slice
//! unit made over D-Bus first ([`systemd`] builds its properties, [`dbus`] talks to systemd), as
//! the kubelet's systemd cgroup manager does through libcontainer.

pub mod dbus;
pub mod fs;
pub mod manager;
pub mod name;
pub mod resources;
pub mod systemd;

use std::path::{Path, PathBuf};

pub use fs::{Backend, CgroupVersion};
pub use manager::{ContainerManager, node_allocatable_config};
pub use name::{CgroupName, Hierarchy};
pub use resources::{ResourceConfig, milli_cpu_to_quota, milli_cpu_to_shares};

/// What can go wrong with cgroups.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup file or directory could not be read, written, made or removed.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// No cgroup hierarchy is mounted under the root.
    #[error("no cgroup hierarchy mounted under {0}")]
    NoHierarchy(PathBuf),
    /// A controller this read needs is not mounted.
    #[error("cgroup controller {0} is not mounted")]
    NoController(String),
    /// `cgroupRoot` does not exist (the kubelet's "invalid configuration").
    #[error("invalid configuration: cgroup-root {0:?} doesn't exist")]
    RootMissing(String),
    /// The runtime drives cgroups with another driver than configured.
    #[error(
        "misconfiguration: kubelet cgroup driver: {configured:?} is different from the container runtime's cgroup driver: {runtime:?}"
    )]
    DriverMismatch {
        /// `cgroupDriver` from the config.
        configured: String,
        /// What the runtime reports.
        runtime: String,
    },
    /// The systemd driver is configured on a machine without systemd.
    #[error("cgroupDriver systemd: systemd is not running (no /run/systemd/system)")]
    NoSystemd,
    /// A call to systemd over D-Bus failed.
    #[error("systemd {op} {unit}: {message}")]
    Systemd {
        /// The Manager method (`StartTransientUnit`) or `connect`.
        op: &'static str,
        /// The unit it was about (empty for connect).
        unit: String,
        /// What D-Bus or systemd said.
        message: String,
    },
    /// A call to systemd, or its job, did not finish in time.
    #[error("systemd {op} {unit}: no answer within {after:?}")]
    SystemdTimeout {
        /// The Manager method.
        op: &'static str,
        /// The unit it was about.
        unit: String,
        /// The deadline.
        after: std::time::Duration,
    },
}

impl CgroupError {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> CgroupError {
        CgroupError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Where the cgroup filesystem is mounted.
pub const CGROUP_ROOT: &str = "/sys/fs/cgroup";

/// Checks the configured driver against the machine and the runtime, opens the cgroups at
/// [`CGROUP_ROOT`] (v1 or v2, detected) and creates the QoS hierarchy `names` with kubepods
/// limited to `node_allocatable`: what the kubelet's container manager does at start.
pub async fn start(
    cfg: &crate::config::CgroupConfig,
    cri: &bosun_cri::CriClient,
    names: Hierarchy,
    node_allocatable: &ResourceConfig,
) -> Result<ContainerManager, CgroupError> {
    use crate::config::CgroupDriver;
    let configured = match cfg.driver {
        CgroupDriver::Cgroupfs => "cgroupfs",
        CgroupDriver::Systemd => "systemd",
    };
    if cfg.driver == CgroupDriver::Systemd && !Path::new("/run/systemd/system").exists() {
        return Err(CgroupError::NoSystemd);
    }
    match cri.runtime_config().await {
        Ok(rc) => {
            if let Some(linux) = rc.linux {
                // CRI's CgroupDriver enum: SYSTEMD = 0, CGROUPFS = 1.
                let runtime = if linux.cgroup_driver == 0 {
                    "systemd"
                } else {
                    "cgroupfs"
                };
                if runtime != configured {
                    return Err(CgroupError::DriverMismatch {
                        configured: configured.into(),
                        runtime: runtime.into(),
                    });
                }
            }
        }
        Err(e) if e.is_unimplemented() => tracing::info!(
            cgroup.driver = configured,
            "the runtime does not report its cgroup driver (no CRI RuntimeConfig); using cgroupDriver"
        ),
        Err(e) => tracing::warn!(error = %e, "CRI RuntimeConfig failed; using cgroupDriver"),
    }
    let backend = fs::open(Path::new(CGROUP_ROOT))?;
    let mut manager = ContainerManager::new(backend, names, cfg.pod_pids_limit);
    if cfg.driver == CgroupDriver::Systemd {
        let systemd = dbus::SystemdDbus::connect().await?;
        tracing::info!(
            systemd.version = dbus::Units::version(&systemd),
            "cgroupDriver systemd: cgroups are transient slice units"
        );
        manager = manager.with_units(std::sync::Arc::new(systemd));
    }
    manager.start(node_allocatable).await?;
    Ok(manager)
}
