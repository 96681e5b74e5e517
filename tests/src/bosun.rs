//! Running the bosun binary under test: built once, started with a config, stopped with SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use crate::daemon;
use crate::env::repo_root;

/// Path of the bosun binary: `$BOSUN_BIN` when set (the benchmark's release build), else the one
/// of this build (built by `cargo build -p bosun` first).
pub fn bosun_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("BOSUN_BIN") {
            let bin = PathBuf::from(bin);
            assert!(bin.exists(), "BOSUN_BIN={} does not exist", bin.display());
            return bin;
        }
        // target/<profile>/deps/<test> -> target/<profile>/bosun
        let exe = std::env::current_exe().expect("current exe");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("target profile dir")
            .to_path_buf();
        let bin = profile_dir.join("bosun");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "-q", "-p", "bosun", "--bin", "bosun"])
            .current_dir(repo_root())
            .status()
            .expect("run cargo build -p bosun");
        assert!(status.success(), "cargo build -p bosun failed");
        assert!(bin.exists(), "no bosun binary at {}", bin.display());
        // `target/<profile>/bosun` is shared by every checkout using this target dir (worktrees):
        // take a private copy, named after this checkout, swapped in atomically (a running copy
        // keeps its inode).
        let checkout = repo_root().display().to_string();
        let tag: u32 = checkout
            .bytes()
            .fold(17, |h, b| h.wrapping_mul(31) ^ u32::from(b));
        let private = profile_dir.join(format!("bosun-under-test-{tag:08x}"));
        let tmp = profile_dir.join(format!("bosun-under-test-{tag:08x}.{}", std::process::id()));
        std::fs::copy(&bin, &tmp).expect("copy the bosun binary");
        std::fs::rename(&tmp, &private).expect("install the bosun binary copy");
        private
    })
    .clone()
}

/// A running bosun process; SIGKILLed on drop if still running.
pub struct Bosun {
    child: Option<Child>,
    /// Where its stderr goes.
    pub log: PathBuf,
}

impl Bosun {
    /// Starts bosun with `args`, logging to `log`.
    pub fn start(args: &[String], log: &Path) -> Bosun {
        Bosun::start_with_env(args, log, &[])
    }

    /// Starts bosun with `args` and extra environment variables, logging to `log`.
    pub fn start_with_env(args: &[String], log: &Path, envs: &[(&str, &str)]) -> Bosun {
        Bosun::start_under(&[], args, log, envs)
    }

    /// As [`Bosun::start_with_env`], run through `wrapper` (a command that ends by exec'ing its
    /// arguments, e.g. `unshare --mount ... sh -c '...; exec "$@"' sh`), so the pid stays bosun's.
    pub fn start_under(
        wrapper: &[&str],
        args: &[String],
        log: &Path,
        envs: &[(&str, &str)],
    ) -> Bosun {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("open bosun log");
        let bin = bosun_bin();
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        let child = cmd
            .args(args)
            .env("RUST_LOG", "info,bosun=debug")
            .envs(envs.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("dup"))
            .stderr(out)
            .spawn()
            .expect("spawn bosun");
        Bosun {
            child: Some(child),
            log: log.to_path_buf(),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Sends SIGTERM and waits for the exit; returns how long it took and the exit code.
    pub fn terminate(&mut self, within: Duration) -> (Duration, Option<i32>) {
        let mut child = self.child.take().expect("bosun running");
        let stopped = daemon::terminate(&mut child, within, Duration::from_millis(50));
        match stopped.status {
            Some(status) => (stopped.took, status.code()),
            None => panic!(
                "bosun did not exit within {within:?} of SIGTERM; log: {}",
                self.log.display()
            ),
        }
    }

    /// SIGKILLs bosun (no chance to clean up) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            daemon::kill(&mut c);
        }
    }

    /// The exit status if it has exited.
    pub fn try_exit(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Bosun {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            daemon::kill(&mut c);
        }
    }
}
