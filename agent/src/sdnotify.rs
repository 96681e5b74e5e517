//! systemd's readiness protocol (sd_notify): `READY=1` once the node is registered and the runtime
//! answers, `WATCHDOG=1` while healthy when the unit asks for a watchdog, `STOPPING=1` on shutdown.
//!
//! Without `NOTIFY_SOCKET` (not started by systemd as `Type=notify`) every call is a no-op.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use tracing::{debug, warn};

/// Where systemd listens for this process's notifications, if it does.
#[derive(Debug, Clone)]
pub struct Notifier {
    socket: Option<Target>,
    watchdog: Option<Duration>,
}

/// A notification socket: a filesystem path or a Linux abstract name (`@name`).
#[derive(Debug, Clone)]
enum Target {
    Path(PathBuf),
    Abstract(Vec<u8>),
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub fn from_env() -> Notifier {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        Notifier::new(
            var("NOTIFY_SOCKET").as_deref(),
            var("WATCHDOG_USEC").as_deref(),
            var("WATCHDOG_PID").as_deref(),
            std::process::id(),
        )
    }

    /// Builds a notifier from the raw variable values (unit-testable).
    fn new(
        socket: Option<&str>,
        watchdog_usec: Option<&str>,
        watchdog_pid: Option<&str>,
        pid: u32,
    ) -> Notifier {
        let socket = socket.map(|s| match s.strip_prefix('@') {
            Some(name) => Target::Abstract(name.as_bytes().to_vec()),
            None => Target::Path(PathBuf::from(s)),
        });
        // The watchdog is ours only when WATCHDOG_PID is unset or names this process.
        let for_us = watchdog_pid.is_none_or(|p| p.trim().parse::<u32>().ok() == Some(pid));
        let watchdog = watchdog_usec
            .and_then(|u| u.trim().parse::<u64>().ok())
            .filter(|&u| u > 0 && for_us)
            .map(Duration::from_micros);
        Notifier { socket, watchdog }
    }

    /// How often systemd expects `WATCHDOG=1`, if it does.
    pub fn watchdog_timeout(&self) -> Option<Duration> {
        self.watchdog
    }

    /// Sends one notification (`READY=1`, `STOPPING=1`, ...); failures are logged, never fatal.
    pub fn notify(&self, state: &str) {
        let Some(target) = &self.socket else { return };
        let sent = UnixDatagram::unbound().and_then(|s| match target {
            Target::Path(p) => s.send_to(state.as_bytes(), p),
            Target::Abstract(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                s.send_to_addr(state.as_bytes(), &addr)
            }
        });
        match sent {
            Ok(_) => debug!(state, "sd_notify"),
            Err(e) => warn!(state, error = %e, "sd_notify failed"),
        }
    }

    /// Sends `WATCHDOG=1` every half timeout while `healthy()` holds, until `cancel` fires.
    pub async fn watchdog(
        self,
        healthy: impl Fn() -> bool,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let Some(timeout) = self.watchdog else { return };
        let mut tick = tokio::time::interval(timeout / 2);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if healthy() {
                self.notify("WATCHDOG=1");
            } else {
                warn!("unhealthy: withholding the systemd watchdog ping");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_only_for_this_pid_and_a_positive_timeout() {
        let n = Notifier::new(Some("/run/x"), Some("2000000"), None, 7);
        assert_eq!(n.watchdog_timeout(), Some(Duration::from_secs(2)));
        let n = Notifier::new(Some("/run/x"), Some("2000000"), Some("7"), 7);
        assert_eq!(n.watchdog_timeout(), Some(Duration::from_secs(2)));
        let n = Notifier::new(Some("/run/x"), Some("2000000"), Some("8"), 7);
        assert_eq!(n.watchdog_timeout(), None);
        let n = Notifier::new(Some("/run/x"), Some("0"), None, 7);
        assert_eq!(n.watchdog_timeout(), None);
        let n = Notifier::new(Some("/run/x"), Some("soon"), None, 7);
        assert_eq!(n.watchdog_timeout(), None);
    }

    #[test]
    fn sends_to_a_path_socket_and_ignores_a_missing_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::new(path.to_str(), None, None, 1);
        n.notify("READY=1");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"READY=1");
        // Nobody listening: logged, not fatal.
        Notifier::new(Some("/nonexistent/notify"), None, None, 1).notify("READY=1");
        Notifier::new(None, None, None, 1).notify("READY=1");
    }

    #[test]
    fn sends_to_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("bosun-test-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::new(Some(&format!("@{name}")), None, None, 1).notify("STOPPING=1");
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1");
    }
}
