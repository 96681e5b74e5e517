//! A private system bus and a logind stand-in on it, for the graceful node shutdown tests: a real
//! `dbus-daemon` started on a socket in a temporary directory with a minimal configuration, and
//! an object serving `org.freedesktop.login1` at `/org/freedesktop/login1` with what the kubelet
//! uses of logind's Manager interface: the Inhibit method (its lock is a pipe's write end: the
//! stand-in sees the lock released when the read end reaches end of file), the
//! InhibitDelayMaxUSec property and the PrepareForShutdown signal, emitted by the test.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zbus::object_server::SignalEmitter;

/// A `dbus-daemon` on a private socket, killed on drop.
pub struct PrivateBus {
    dir: tempfile::TempDir,
    child: Child,
}

impl PrivateBus {
    /// Starts `dbus-daemon` with a configuration letting everyone own names and talk to
    /// everyone, and waits for its socket.
    pub fn start() -> PrivateBus {
        let dir = tempfile::Builder::new()
            .prefix("bosun-bus-")
            .tempdir()
            .expect("tempdir");
        let socket = dir.path().join("system_bus_socket");
        let config = dir.path().join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow own="*"/>
    <allow send_destination="*"/>
    <allow receive_sender="*"/>
  </policy>
</busconfig>
"#,
                socket.display()
            ),
        )
        .expect("write the bus configuration");
        let child = Command::new("/usr/bin/dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .arg("--nopidfile")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("dbus.log")).expect("log file"))
            .spawn()
            .expect("start /usr/bin/dbus-daemon");
        let bus = PrivateBus { dir, child };
        crate::wait_until("the private bus's socket", Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&socket)
                .ok()
                .map(|_| ())
        });
        bus
    }

    /// The bus's address, for `DBUS_SYSTEM_BUS_ADDRESS`.
    pub fn address(&self) -> String {
        format!("unix:path={}", self.socket().display())
    }

    /// The bus's socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("system_bus_socket")
    }

    /// The directory the bus lives in.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One Inhibit call the stand-in answered.
#[derive(Debug, Clone)]
pub struct Inhibitor {
    /// What, who, why, mode as the caller gave them.
    pub args: (String, String, String, String),
    /// When it was taken.
    pub taken: Instant,
    /// When its file descriptor was closed everywhere (the lock released), if it was.
    pub released: Option<Instant>,
}

/// What the stand-in saw.
#[derive(Debug, Default)]
struct Seen {
    inhibitors: Vec<Inhibitor>,
}

struct Manager {
    inhibit_delay_max_usec: u64,
    seen: Arc<Mutex<Seen>>,
}

#[zbus::interface(name = "org.freedesktop.login1.Manager")]
impl Manager {
    /// Takes an inhibitor lock: the write end of a pipe whose read end the stand-in watches.
    async fn inhibit(
        &self,
        what: String,
        who: String,
        why: String,
        mode: String,
    ) -> zbus::fdo::Result<zbus::zvariant::OwnedFd> {
        let (mut read, write) =
            std::io::pipe().map_err(|e| zbus::fdo::Error::Failed(e.to_string()))?;
        let index = {
            let mut seen = self.seen.lock().unwrap();
            seen.inhibitors.push(Inhibitor {
                args: (what, who, why, mode),
                taken: Instant::now(),
                released: None,
            });
            seen.inhibitors.len() - 1
        };
        let seen = self.seen.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 64];
            // End of file once every copy of the write end is closed.
            while matches!(read.read(&mut buf), Ok(n) if n > 0) {}
            seen.lock().unwrap().inhibitors[index].released = Some(Instant::now());
        });
        Ok(std::os::fd::OwnedFd::from(write).into())
    }

    /// How long a delay lock may hold a shutdown back, in microseconds.
    #[zbus(property(emits_changed_signal = "false"), name = "InhibitDelayMaxUSec")]
    fn inhibit_delay_max_usec(&self) -> u64 {
        self.inhibit_delay_max_usec
    }

    /// A shutdown starts (true) or was cancelled (false).
    #[zbus(signal)]
    async fn prepare_for_shutdown(emitter: &SignalEmitter<'_>, start: bool) -> zbus::Result<()>;
}

/// The logind stand-in, serving on a [`PrivateBus`] until dropped.
pub struct Logind {
    conn: zbus::Connection,
    seen: Arc<Mutex<Seen>>,
}

impl Logind {
    /// Serves `org.freedesktop.login1` on the bus at `address`, reporting
    /// `inhibit_delay_max` as InhibitDelayMaxUSec.
    pub async fn serve(address: &str, inhibit_delay_max: Duration) -> Logind {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let manager = Manager {
            inhibit_delay_max_usec: inhibit_delay_max.as_micros() as u64,
            seen: seen.clone(),
        };
        let conn = zbus::connection::Builder::address(address)
            .expect("bus address")
            .name("org.freedesktop.login1")
            .expect("name")
            .serve_at("/org/freedesktop/login1", manager)
            .expect("serve")
            .build()
            .await
            .expect("connect the logind stand-in to the private bus");
        Logind { conn, seen }
    }

    /// Emits PrepareForShutdown(`start`).
    pub async fn prepare_for_shutdown(&self, start: bool) {
        let emitter = SignalEmitter::new(&self.conn, "/org/freedesktop/login1").expect("path");
        Manager::prepare_for_shutdown(&emitter, start)
            .await
            .expect("emit PrepareForShutdown");
    }

    /// The Inhibit calls answered so far, in order.
    pub fn inhibitors(&self) -> Vec<Inhibitor> {
        self.seen.lock().unwrap().inhibitors.clone()
    }
}
