//! systemd-logind's D-Bus API as the kubelet's node shutdown manager uses it
//! (nodeshutdown/systemd/inhibit_linux.go), on the system bus (`DBUS_SYSTEM_BUS_ADDRESS` when
//! set): the InhibitDelayMaxUSec property, a `delay` inhibitor lock for `shutdown` (a file
//! descriptor: the lock holds while it is open), the PrepareForShutdown signal, and raising the
//! delay with a logind.conf drop-in reloaded through systemd's KillUnit (SIGHUP). Every call
//! under a deadline; errors name the call.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::time::Duration;

use futures::{Stream, StreamExt};

const LOGIND: &str = "org.freedesktop.login1";
const LOGIND_PATH: &str = "/org/freedesktop/login1";
const LOGIND_MANAGER: &str = "org.freedesktop.login1.Manager";

/// How long one call may take.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// Where the kubelet writes its logind drop-in (logindConfigDirectory).
pub const LOGIND_CONF_DIR: &str = "/etc/systemd/logind.conf.d";
/// The drop-in's name (kubeletLogindConf).
pub const LOGIND_CONF: &str = "99-kubelet.conf";

/// A failed logind or systemd call.
#[derive(Debug, thiserror::Error)]
pub enum LogindError {
    /// The call failed on the bus.
    #[error("{op}: {message}")]
    Call {
        /// What was being done.
        op: &'static str,
        /// The bus's error.
        message: String,
    },
    /// The call took longer than [`DEADLINE`].
    #[error("{op}: no answer within {DEADLINE:?}")]
    Timeout {
        /// What was being done.
        op: &'static str,
    },
    /// Writing the drop-in failed.
    #[error("failed writing logind shutdown inhibit override file {path}: {source}")]
    Override {
        /// The drop-in's path.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}

/// A held inhibitor lock: released when dropped (its file descriptor closed).
#[derive(Debug)]
pub struct InhibitLock(#[allow(dead_code)] OwnedFd);

/// A connection to logind on the system bus.
pub struct Logind {
    conn: zbus::Connection,
    manager: zbus::Proxy<'static>,
}

async fn timed<T>(
    op: &'static str,
    f: impl std::future::Future<Output = zbus::Result<T>>,
) -> Result<T, LogindError> {
    tokio::time::timeout(DEADLINE, f)
        .await
        .map_err(|_| LogindError::Timeout { op })?
        .map_err(|e| LogindError::Call {
            op,
            message: e.to_string(),
        })
}

impl Logind {
    /// Connects to the system bus.
    pub async fn connect() -> Result<Logind, LogindError> {
        let conn = timed("connect to the system bus", zbus::Connection::system()).await?;
        let manager = timed(
            "connect to logind",
            zbus::proxy::Builder::<zbus::Proxy>::new(&conn)
                .destination(LOGIND)?
                .path(LOGIND_PATH)?
                .interface(LOGIND_MANAGER)?
                .cache_properties(zbus::proxy::CacheProperties::No)
                .build(),
        )
        .await?;
        Ok(Logind { conn, manager })
    }

    /// logind's InhibitDelayMaxUSec: how long a delay lock may hold a shutdown back.
    pub async fn inhibit_delay_max(&self) -> Result<Duration, LogindError> {
        let usec: u64 = timed(
            "failed reading InhibitDelayMaxUSec property from logind",
            self.manager.get_property("InhibitDelayMaxUSec"),
        )
        .await?;
        Ok(Duration::from_micros(usec))
    }

    /// Takes a delay inhibitor lock for shutdown, as the kubelet (who "kubelet", why "Kubelet
    /// needs time to handle node shutdown").
    pub async fn inhibit_shutdown(&self) -> Result<InhibitLock, LogindError> {
        let op = "failed creating systemd inhibitor";
        let reply = timed(
            op,
            self.manager.call_method(
                "Inhibit",
                &(
                    "shutdown",
                    "kubelet",
                    "Kubelet needs time to handle node shutdown",
                    "delay",
                ),
            ),
        )
        .await?;
        let fd: zbus::zvariant::OwnedFd =
            reply.body().deserialize().map_err(|e| LogindError::Call {
                op: "failed storing inhibit lock file descriptor",
                message: e.to_string(),
            })?;
        Ok(InhibitLock(fd.into()))
    }

    /// The PrepareForShutdown signals from now on: true when a shutdown starts, false when it
    /// was cancelled. The stream ends when the connection does.
    pub async fn monitor_shutdown(&self) -> Result<impl Stream<Item = bool> + use<>, LogindError> {
        let signals = timed(
            "failed to monitor shutdown",
            self.manager.receive_signal("PrepareForShutdown"),
        )
        .await?;
        Ok(signals.filter_map(|msg| async move {
            match msg.body().deserialize::<bool>() {
                Ok(active) => Some(active),
                Err(e) => {
                    tracing::error!(error = %e, "Failed obtaining shutdown event, PrepareForShutdown event was not bool type as expected");
                    None
                }
            }
        }))
    }

    /// Reloads logind's configuration: systemd's KillUnit of systemd-logind.service with
    /// SIGHUP (ReloadLogindConf).
    pub async fn reload_logind_conf(&self) -> Result<(), LogindError> {
        let op = "unable to reload logind conf";
        let systemd = timed(
            op,
            zbus::proxy::Builder::<zbus::Proxy>::new(&self.conn)
                .destination("org.freedesktop.systemd1")?
                .path("/org/freedesktop/systemd1")?
                .interface("org.freedesktop.systemd1.Manager")?
                .cache_properties(zbus::proxy::CacheProperties::No)
                .build(),
        )
        .await?;
        timed(
            op,
            systemd.call_method("KillUnit", &("systemd-logind.service", "all", 1i32)),
        )
        .await?;
        Ok(())
    }
}

/// The kubelet's logind drop-in raising InhibitDelayMaxSec to `delay` (whole seconds, rounded).
pub fn override_text(delay: Duration) -> String {
    format!(
        "# Kubelet logind override\n[Login]\nInhibitDelayMaxSec={}\n",
        delay.as_secs_f64().round() as u64
    )
}

/// Writes the drop-in under `dir` (OverrideInhibitDelay).
pub fn override_inhibit_delay(dir: &Path, delay: Duration) -> Result<(), LogindError> {
    let path = dir.join(LOGIND_CONF);
    let err = |source| LogindError::Override {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    std::fs::write(&path, override_text(delay)).map_err(err)
}

impl From<zbus::Error> for LogindError {
    fn from(e: zbus::Error) -> Self {
        LogindError::Call {
            op: "build a proxy",
            message: e.to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_drop_in_is_the_kubelets() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("logind.conf.d");
        override_inhibit_delay(&sub, Duration::from_secs(45)).unwrap();
        assert_eq!(
            std::fs::read_to_string(sub.join("99-kubelet.conf")).unwrap(),
            "# Kubelet logind override\n[Login]\nInhibitDelayMaxSec=45\n"
        );
    }
}
