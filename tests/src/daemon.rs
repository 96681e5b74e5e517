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

/// Waits until `ready` answers `Ok` for a daemon just spawned as `child`, looking every 20 ms;
/// panics naming `what`, its `log` and the last reason `ready` gave when the daemon exits or
/// `within` passes first.
pub fn wait_ready(
    child: &mut Child,
    what: &str,
    log: &std::path::Path,
    within: Duration,
    mut ready: impl FnMut() -> Result<(), String>,
) {
    let deadline = Instant::now() + within;
    loop {
        let why = match ready() {
            Ok(()) => return,
            Err(why) => why,
        };
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}); log: {}", log.display());
        }
        assert!(
            Instant::now() < deadline,
            "{what} not ready within {within:?}: {why}; log: {}",
            log.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A child killed when the test ends, panicking or not.
    struct Killed(Child);

    impl Drop for Killed {
        fn drop(&mut self) {
            kill(&mut self.0);
        }
    }

    #[test]
    #[should_panic(expected = "a daemon exited (exit status: 3); log: /nowhere")]
    fn wait_ready_names_a_daemon_that_exits() {
        let mut child = Command::new("sh").args(["-c", "exit 3"]).spawn().unwrap();
        wait_ready(
            &mut child,
            "a daemon",
            std::path::Path::new("/nowhere"),
            Duration::from_secs(30),
            || Err("not yet".into()),
        );
    }

    #[test]
    #[should_panic(expected = "a daemon not ready within 200ms: not yet; log: /nowhere")]
    fn wait_ready_gives_the_last_reason_at_the_deadline() {
        let mut sleeper = Killed(Command::new("sleep").arg("30").spawn().unwrap());
        wait_ready(
            &mut sleeper.0,
            "a daemon",
            std::path::Path::new("/nowhere"),
            Duration::from_millis(200),
            || Err("not yet".into()),
        );
    }

    #[test]
    fn wait_ready_returns_once_ready() {
        let mut sleeper = Killed(Command::new("sleep").arg("30").spawn().unwrap());
        let mut asked = 0;
        wait_ready(
            &mut sleeper.0,
            "a daemon",
            std::path::Path::new("/nowhere"),
            Duration::from_secs(30),
            || {
                asked += 1;
                if asked < 3 {
                    Err("not yet".into())
                } else {
                    Ok(())
                }
            },
        );
        assert_eq!(asked, 3);
    }
}
