//! A private containerd per test node: own root, state, socket, CNI bridge and /24 subnet, started
//! from the same `tests/env/containerd-config` as the shared one and torn down on drop.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::fcntl::{Flock, FlockArg};

use crate::daemon;
use crate::env::{Env, env_dir, repo_root};

/// Highest slot number: slot N gets bridge `bsnN` and subnet 10.89.N.0/24.
const MAX_SLOT: u32 = 250;
/// Slot N's bosun serves the kubelet port on 11250 + N (below the ephemeral port range).
const SERVER_PORT_BASE: u16 = 11250;

/// A containerd of one test node; killed, with everything it ran, when dropped.
pub struct Containerd {
    dir: PathBuf,
    bridge: String,
    /// Held while this containerd lives; the kernel releases it when the process dies.
    _slot_lock: Flock<fs::File>,
    child: Option<Child>,
    /// Where its containerd and shim come from (None: the machine's, on PATH).
    bin_dir: Option<PathBuf>,
    /// Pod subnet of this containerd's CNI bridge.
    pub subnet: String,
    /// The slot claimed across test processes: unique while this containerd lives.
    pub slot: u32,
}

impl Containerd {
    /// Starts a containerd for node `name` and waits until it answers.
    pub fn start(name: &str) -> Containerd {
        Containerd::start_with_root_size(name, None)
    }

    /// As [`Containerd::start`], with its root (content store, snapshots) on a tmpfs of `size`
    /// when given: a small image filesystem of its own (unmounted by the teardown).
    pub fn start_with_root_size(name: &str, size: Option<&str>) -> Containerd {
        Containerd::start_from(name, size, None)
    }

    /// As [`Containerd::start_with_root_size`], running the containerd (and its shim) in
    /// `bin_dir` when given (the image volume test's containerd 2).
    pub fn start_from(name: &str, size: Option<&str>, bin_dir: Option<&Path>) -> Containerd {
        let env = Env::runtime();
        let (slot, slot_lock) = claim_slot(Path::new(SLOTS_DIR), MAX_SLOT);
        // Short paths: unix socket paths under it must stay below 108 bytes.
        let node_dir = env_dir().join("nodes").join(slot.to_string());
        let dir = node_dir.join("containerd");
        let bridge = format!("bsn{slot}");
        let subnet = format!("10.89.{slot}.0/24");
        teardown(&dir, &bridge);
        fs::create_dir_all(&node_dir).expect("create node dir");
        fs::write(node_dir.join("bridge"), &bridge).expect("write bridge name");
        fs::write(node_dir.join("name"), name).expect("write node name");
        ensure_cgroup_root(&format!("/bosun-{bridge}"));
        let status = Command::new(repo_root().join("tests/env/containerd-config"))
            .arg(&dir)
            .arg(&bridge)
            .arg(&subnet)
            .env("PAUSE_IMAGE", env.pause_image())
            .status()
            .expect("run containerd-config");
        assert!(
            status.success(),
            "containerd-config failed for {}",
            dir.display()
        );
        if let Some(size) = size {
            let root = dir.join("root");
            let status = Command::new("mount")
                .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
                .arg(&root)
                .status()
                .expect("run mount");
            assert!(status.success(), "mount a tmpfs on {}", root.display());
        }
        let mut c = Containerd {
            dir,
            bridge,
            _slot_lock: slot_lock,
            child: None,
            bin_dir: bin_dir.map(Path::to_path_buf),
            subnet,
            slot,
        };
        c.spawn();
        c
    }

    fn spawn(&mut self) {
        let log = fs::File::create(self.dir.join("log")).expect("create containerd log");
        let mut cmd = match &self.bin_dir {
            Some(dir) => {
                let path = std::env::var("PATH").unwrap_or_default();
                let mut c = Command::new(dir.join("containerd"));
                c.env("PATH", format!("{}:{path}", dir.display()));
                c
            }
            None => Command::new("containerd"),
        };
        let child = cmd
            .arg("--config")
            .arg(self.dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log)
            .spawn()
            .expect("spawn containerd");
        fs::write(self.dir.join("pid"), child.id().to_string()).expect("write pid");
        self.child = Some(child);
        // Ready when its CRI answers, not when its socket accepts: containerd listens before
        // its CRI plugin has initialized, and until then answers "server is not initialized yet".
        let (socket, endpoint) = (self.socket(), self.endpoint());
        let child = self.child.as_mut().expect("just spawned");
        daemon::wait_ready(
            child,
            &format!("containerd on {endpoint}"),
            &self.dir.join("log"),
            Duration::from_secs(30),
            || cri_answers(&socket, &endpoint),
        );
    }

    /// A TCP port unique to this slot, for the bosun of this node (its kubelet `port`).
    pub fn server_port(&self) -> u16 {
        SERVER_PORT_BASE + self.slot as u16
    }

    /// The CRI endpoint, `unix:///.../containerd.sock`.
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The cgroup under which this node's pods go (`/bosun-<bridge>`, the node's `cgroupRoot`):
    /// created on start in every hierarchy, removed on drop.
    pub fn cgroup_root(&self) -> String {
        format!("/bosun-{}", self.bridge)
    }

    /// The directory holding this containerd's root, state and config.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// Stops containerd (SIGTERM, as a service manager would) and starts it again on the same
    /// state; containers keep running under their shims.
    pub fn restart(&mut self) {
        self.stop_daemon();
        let _ = fs::remove_file(self.socket());
        self.spawn();
    }

    /// Starts the daemon again after [`Containerd::stop_daemon`], on the same state.
    pub fn start_daemon(&mut self) {
        let _ = fs::remove_file(self.socket());
        self.spawn();
    }

    /// Kills the daemon at once (SIGKILL, as the OOM killer or a crash would), leaving its state
    /// and its shims: containers keep running.
    pub fn kill_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            daemon::kill(&mut child);
        }
    }

    /// Stops the daemon only (SIGTERM, SIGKILL after 10 s), leaving its state.
    pub fn stop_daemon(&mut self) {
        if let Some(mut child) = self.child.take() {
            daemon::terminate(
                &mut child,
                Duration::from_secs(10),
                Duration::from_millis(20),
            );
        }
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // A containerd that died under a test explains that test's failure: say so, with its log.
        if let Some(Ok(Some(status))) = self.child.as_mut().map(|c| c.try_wait()) {
            let log = fs::read_to_string(self.dir.join("log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!(
                "containerd of slot {} exited during the test ({status}); its log ends:\n{}",
                self.slot,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        self.stop_daemon();
        teardown(&self.dir, &self.bridge);
        if let Some(parent) = self.dir.parent() {
            let _ = fs::remove_dir_all(parent);
        }
    }
}

fn teardown(dir: &Path, bridge: &str) {
    let _ = Command::new(repo_root().join("tests/env/containerd-teardown"))
        .arg(dir)
        .arg(bridge)
        .status();
}

/// Where slot claims live: machine-wide, not per environment directory, because what a slot names
/// is machine-wide too (bridge `bsnN`, subnet, cgroup `/bosun-bsnN`, server port); two
/// environments (CI's and a second one) must never both hold slot N.
const SLOTS_DIR: &str = "/run/bosun-tests/slots";

/// Claims a free slot number in `slots` (1..=`max`) across all test processes and threads: an
/// exclusive `flock` on the slot's file, held until the lock is dropped or its process dies (so a
/// crashed test leaves no stale claim, and two claimants can never both win one slot, as the
/// pid-file check before it allowed when both found the same stale file).
pub(crate) fn claim_slot(slots: &Path, max: u32) -> (u32, Flock<fs::File>) {
    fs::create_dir_all(slots).expect("create slots dir");
    for slot in 1..=max {
        let path = slots.join(slot.to_string());
        let Ok(file) = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
        else {
            continue;
        };
        if let Ok(mut lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            // The owner, for a human looking at the slots.
            let _ = lock.set_len(0);
            let _ = write!(*lock, "{}", std::process::id());
            return (slot, lock);
        }
    }
    panic!("no free slot in {}", slots.display());
}

/// Creates cgroup `root` (`/bosun-bsn3`) in every hierarchy under /sys/fs/cgroup, as a cgroupRoot
/// must exist before bosun (or a kubelet) starts; cpuset.cpus/mems copied from the parent on v1.
fn ensure_cgroup_root(root: &str) {
    let base = Path::new("/sys/fs/cgroup");
    let rel = root.trim_start_matches('/');
    if base.join("cgroup.controllers").exists() {
        fs::create_dir_all(base.join(rel)).expect("create cgroup root");
        return;
    }
    for e in fs::read_dir(base).expect("read /sys/fs/cgroup").flatten() {
        let mount = e.path();
        if !e.file_type().is_ok_and(|t| t.is_dir()) || !mount.join("cgroup.procs").exists() {
            continue;
        }
        let dir = mount.join(rel);
        fs::create_dir_all(&dir).unwrap_or_else(|err| panic!("create {}: {err}", dir.display()));
        for f in ["cpuset.cpus", "cpuset.mems"] {
            if dir.join(f).exists()
                && fs::read_to_string(dir.join(f))
                    .unwrap_or_default()
                    .trim()
                    .is_empty()
            {
                let parent = fs::read_to_string(mount.join(f)).unwrap_or_default();
                fs::write(dir.join(f), parent.trim()).unwrap_or_else(|err| panic!("{f}: {err}"));
            }
        }
    }
}

/// Mount points at or under `dir`, from this process's mountinfo.
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| Path::new(m).starts_with(dir))
        .map(str::to_string)
        .collect()
}

/// Mount points strictly under `dir` (not `dir` itself, which may be the agent's own bind mount
/// of its root dir).
pub fn mounts_below(dir: &Path) -> Vec<String> {
    mounts_under(dir)
        .into_iter()
        .filter(|m| Path::new(m) != dir)
        .collect()
}

/// Cgroups at and below `root` (e.g. `/bosun-br3`) in the memory hierarchy (cgroup v1) or the
/// unified one (v2).
pub fn cgroups_under(root: &str) -> u64 {
    cgroup_dirs_under(root).len() as u64
}

/// The directories of the cgroups at and below `root`, as [`cgroups_under`] counts them.
pub fn cgroup_dirs_under(root: &str) -> Vec<PathBuf> {
    let rel = root.trim_start_matches('/');
    let top = ["/sys/fs/cgroup/memory", "/sys/fs/cgroup"]
        .iter()
        .map(|h| Path::new(h).join(rel))
        .find(|p| p.is_dir());
    let Some(top) = top else { return Vec::new() };
    let mut found = Vec::new();
    let mut stack = vec![top];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                stack.push(e.path());
            }
        }
        found.push(dir);
    }
    found
}

/// Whether `socket` accepts and the CRI at `endpoint` answers `Version`; why not when it does not.
fn cri_answers(socket: &Path, endpoint: &str) -> Result<(), String> {
    std::os::unix::net::UnixStream::connect(socket).map_err(|e| format!("socket: {e}"))?;
    let endpoint = endpoint.to_string();
    // Its own thread and runtime: the callers may be inside a runtime already.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(bosun_cri::CriClient::connect(&endpoint, Default::default()))
            .map(|_| ())
            .map_err(|e| e.to_string())
    })
    .join()
    .expect("CRI readiness thread")
}
