//! Stopping a daemon the tests started (bosun, the upstream kubelet, a containerd, an API server
//! replica) as a service manager does: SIGTERM, then SIGKILL once a deadline has passed.

use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

/// How a [`terminate`] ended.
#[derive(Debug)]
pub struct Stopped {
    /// From SIGTERM to the exit (or to the SIGKILL).
    pub took: Duration,
    /// The exit status after SIGTERM; None when it had to be killed.
    pub status: Option<ExitStatus>,
}

/// Sends SIGTERM to `child` and waits up to `within` for it to exit, looking every `poll`;
/// SIGKILLs it (and reaps it) when it has not exited by then.
pub fn terminate(child: &mut Child, within: Duration, poll: Duration) -> Stopped {
    let started = Instant::now();
    let _ = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Stopped {
                took: started.elapsed(),
                status: Some(status),
            };
        }
        if started.elapsed() > within {
            let _ = child.kill();
            let _ = child.wait();
            return Stopped {
                took: started.elapsed(),
                status: None,
            };
        }
        std::thread::sleep(poll);
    }
}

/// Kills `child` at once and reaps it (a test's process on drop).
pub fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
