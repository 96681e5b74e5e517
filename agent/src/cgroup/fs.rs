//! The cgroup filesystem behind one seam: [`Backend`] creates, updates, lists and removes cgroups
//! at literal paths (`/kubepods/burstable/pod<uid>`), [`V1`] in every hierarchy mounted under the
//! root (`<root>/<controller>/<path>`), [`V2`] in the unified tree (`<root>/<path>`). The root is a
//! parameter, so tests run both against a temporary directory laid out like /sys/fs/cgroup.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::CgroupError;
use super::resources::{ResourceConfig, shares_to_weight};

/// Which cgroup version a root holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// One hierarchy per controller (a tmpfs of cgroup mounts).
    V1,
    /// The unified hierarchy (a cgroup2 mount).
    V2,
}

/// The cgroup2 filesystem magic (statfs f_type), as runc checks it.
const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;

/// Detects the version of `root` as the kubelet and runc do: v2 when it is a cgroup2 mount.
pub fn detect(root: &Path) -> Result<CgroupVersion, CgroupError> {
    let st = nix::sys::statfs::statfs(root).map_err(|e| CgroupError::io(root, e.into()))?;
    Ok(if st.filesystem_type().0 as i64 == CGROUP2_SUPER_MAGIC {
        CgroupVersion::V2
    } else {
        CgroupVersion::V1
    })
}

/// The backend for the cgroups mounted at `root`.
pub fn open(root: &Path) -> Result<Box<dyn Backend>, CgroupError> {
    Ok(match detect(root)? {
        CgroupVersion::V1 => Box::new(V1::new(root)?),
        CgroupVersion::V2 => Box::new(V2::new(root)),
    })
}

/// Cgroup operations at literal paths; every path is absolute within the hierarchy (`/a/b`).
pub trait Backend: Send + Sync {
    /// The cgroup version.
    fn version(&self) -> CgroupVersion;
    /// True when the cgroup exists (in every hierarchy that matters).
    fn exists(&self, path: &str) -> bool;
    /// Creates the cgroup and its missing parents, then applies `res`.
    fn create(&self, path: &str, res: &ResourceConfig) -> Result<(), CgroupError>;
    /// Applies `res` to an existing cgroup.
    fn update(&self, path: &str, res: &ResourceConfig) -> Result<(), CgroupError>;
    /// Removes the cgroup and its children, deepest first; absent is fine.
    fn remove(&self, path: &str) -> Result<(), CgroupError>;
    /// Names of the cgroup's child cgroups.
    fn children(&self, path: &str) -> Vec<String>;
    /// Processes in the cgroup and its children.
    fn pids(&self, path: &str) -> Vec<i32>;
    /// A knob's contents (`memory.limit_in_bytes`), for tests and diagnostics.
    fn read(&self, path: &str, file: &str) -> Result<String, CgroupError>;
}

fn join(base: &Path, path: &str) -> PathBuf {
    base.join(path.trim_start_matches('/'))
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let p = dir.join(file);
    std::fs::write(&p, value).map_err(|e| CgroupError::io(&p, e))
}

fn mkdir_all(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::create_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(CgroupError::io(dir, e)),
    }
}

/// Removes `dir` and its child cgroups, deepest first (rmdir: a cgroup's files go with it).
fn rmdir_tree(dir: &Path) -> Result<(), CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(CgroupError::io(dir, e)),
    };
    for e in entries.flatten() {
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            rmdir_tree(&e.path())?;
        }
    }
    match std::fs::remove_dir(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        // A tree laid out in a plain directory (tests): its knob files are ordinary files.
        Err(e) if e.kind() == ErrorKind::DirectoryNotEmpty => {
            std::fs::remove_dir_all(dir).map_err(|e| CgroupError::io(dir, e))
        }
        Err(e) => Err(CgroupError::io(dir, e)),
    }
}

fn child_dirs(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

fn pids_of(dir: &Path) -> Vec<i32> {
    let mut out: Vec<i32> = std::fs::read_to_string(dir.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    for c in child_dirs(dir) {
        out.extend(pids_of(&dir.join(c)));
    }
    out
}

fn limit(v: i64) -> String {
    if v < 0 { "max".into() } else { v.to_string() }
}

/// cgroup v1: one hierarchy per mounted controller (or group of controllers) under the root.
pub struct V1 {
    /// Every hierarchy: (mount directory, its controllers); named ones (`systemd`) and the
    /// hybrid `unified` tree get directories but no knobs.
    hierarchies: Vec<(PathBuf, Vec<String>)>,
}

impl V1 {
    /// The hierarchies mounted under `root`: its directories holding a `cgroup.procs`, by real
    /// name (`cpu,cpuacct`), symlinks skipped.
    pub fn new(root: &Path) -> Result<V1, CgroupError> {
        let entries = std::fs::read_dir(root).map_err(|e| CgroupError::io(root, e))?;
        let mut hierarchies = Vec::new();
        for e in entries.flatten() {
            let is_dir = e.file_type().is_ok_and(|t| t.is_dir());
            if !is_dir || !e.path().join("cgroup.procs").exists() {
                continue;
            }
            let name = e.file_name().to_string_lossy().into_owned();
            hierarchies.push((e.path(), name.split(',').map(str::to_string).collect()));
        }
        hierarchies.sort();
        if hierarchies.is_empty() {
            return Err(CgroupError::NoHierarchy(root.to_path_buf()));
        }
        Ok(V1 { hierarchies })
    }

    /// The mount of `controller`, if mounted.
    fn mount(&self, controller: &str) -> Option<&Path> {
        self.hierarchies
            .iter()
            .find(|(_, c)| c.iter().any(|c| c == controller))
            .map(|(p, _)| p.as_path())
    }

    /// The hierarchies whose cgroups must exist: every controller hierarchy that bosun writes.
    fn required(&self) -> impl Iterator<Item = &Path> {
        ["cpu", "cpuacct", "cpuset", "memory", "pids"]
            .into_iter()
            .filter_map(|c| self.mount(c))
    }

    /// Copies cpuset.cpus and cpuset.mems from the parent into each new level (else no task
    /// can join it), as libcontainer does.
    fn init_cpuset(&self, path: &str) -> Result<(), CgroupError> {
        let Some(mount) = self.mount("cpuset") else {
            return Ok(());
        };
        let mut dir = mount.to_path_buf();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            let child = dir.join(part);
            for f in ["cpuset.cpus", "cpuset.mems"] {
                let cur = std::fs::read_to_string(child.join(f)).unwrap_or_default();
                if cur.trim().is_empty() {
                    let parent = std::fs::read_to_string(dir.join(f)).unwrap_or_default();
                    if !parent.trim().is_empty() {
                        write(&child, f, parent.trim())?;
                    }
                }
            }
            dir = child;
        }
        Ok(())
    }
}

impl Backend for V1 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V1
    }

    fn exists(&self, path: &str) -> bool {
        self.required().all(|m| join(m, path).is_dir())
    }

    fn create(&self, path: &str, res: &ResourceConfig) -> Result<(), CgroupError> {
        for (mount, _) in &self.hierarchies {
            mkdir_all(&join(mount, path))?;
        }
        self.init_cpuset(path)?;
        self.update(path, res)
    }

    fn update(&self, path: &str, res: &ResourceConfig) -> Result<(), CgroupError> {
        if let Some(cpu) = self.mount("cpu").map(|m| join(m, path)) {
            if let Some(shares) = res.cpu_shares.filter(|s| *s != 0) {
                write(&cpu, "cpu.shares", &shares.to_string())?;
            }
            if let Some(period) = res.cpu_period.filter(|p| *p != 0) {
                write(&cpu, "cpu.cfs_period_us", &period.to_string())?;
            }
            if let Some(quota) = res.cpu_quota.filter(|q| *q != 0) {
                write(&cpu, "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
        if let (Some(mem), Some(m)) = (
            self.mount("memory").map(|m| join(m, path)),
            res.memory.filter(|m| *m != 0),
        ) {
            write(&mem, "memory.limit_in_bytes", &m.to_string())?;
        }
        if let (Some(pids), Some(p)) = (
            self.mount("pids").map(|m| join(m, path)),
            res.pids.filter(|p| *p != 0),
        ) {
            write(&pids, "pids.max", &limit(p))?;
        }
        Ok(())
    }

    fn remove(&self, path: &str) -> Result<(), CgroupError> {
        let mut first = None;
        for (mount, _) in &self.hierarchies {
            if let Err(e) = rmdir_tree(&join(mount, path)) {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    fn children(&self, path: &str) -> Vec<String> {
        self.mount("cpu")
            .or_else(|| self.hierarchies.first().map(|(p, _)| p.as_path()))
            .map(|m| child_dirs(&join(m, path)))
            .unwrap_or_default()
    }

    fn pids(&self, path: &str) -> Vec<i32> {
        let mut out: Vec<i32> = self
            .hierarchies
            .iter()
            .flat_map(|(m, _)| pids_of(&join(m, path)))
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    fn read(&self, path: &str, file: &str) -> Result<String, CgroupError> {
        let controller = file.split('.').next().unwrap_or_default();
        let mount = self
            .mount(controller)
            .ok_or_else(|| CgroupError::NoController(controller.to_string()))?;
        let p = join(mount, path).join(file);
        std::fs::read_to_string(&p).map_err(|e| CgroupError::io(&p, e))
    }
}

/// cgroup v2: one unified tree; controllers are enabled for children through each parent's
/// cgroup.subtree_control.
pub struct V2 {
    root: PathBuf,
}

/// The controllers bosun enables down the tree, where the root offers them.
const V2_CONTROLLERS: &[&str] = &["cpu", "cpuset", "memory", "pids", "hugetlb", "io"];

impl V2 {
    /// The unified hierarchy mounted at `root`.
    pub fn new(root: &Path) -> V2 {
        V2 {
            root: root.to_path_buf(),
        }
    }

    /// Enables the available controllers in `dir`'s cgroup.subtree_control.
    fn enable_controllers(&self, dir: &Path) -> Result<(), CgroupError> {
        let available =
            std::fs::read_to_string(self.root.join("cgroup.controllers")).unwrap_or_default();
        let wanted: Vec<String> = V2_CONTROLLERS
            .iter()
            .filter(|c| available.split_whitespace().any(|a| a == **c))
            .map(|c| format!("+{c}"))
            .collect();
        if wanted.is_empty() {
            return Ok(());
        }
        write(dir, "cgroup.subtree_control", &wanted.join(" "))
    }
}

impl Backend for V2 {
    fn version(&self) -> CgroupVersion {
        CgroupVersion::V2
    }

    fn exists(&self, path: &str) -> bool {
        join(&self.root, path).is_dir()
    }

    fn create(&self, path: &str, res: &ResourceConfig) -> Result<(), CgroupError> {
        let mut dir = self.root.clone();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            self.enable_controllers(&dir)?;
            dir = dir.join(part);
            mkdir_all(&dir)?;
        }
        self.update(path, res)
    }

    /// Enables the controllers in every ancestor first, as `create`: on a systemd machine,
    /// systemd rewrites the subtree_control of a slice it realizes (seen on a Debian 12 guest:
    /// kubepods.slice left with `memory hugetlb pids rdma misc`, so the QoS tiers had no
    /// cpu.weight and the next start of bosun failed with EACCES writing it).
    fn update(&self, path: &str, res: &ResourceConfig) -> Result<(), CgroupError> {
        let dir = join(&self.root, path);
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        if let Some((_, ancestors)) = parts.split_last() {
            let mut parent = self.root.clone();
            self.enable_controllers(&parent)?;
            for part in ancestors {
                parent = parent.join(part);
                self.enable_controllers(&parent)?;
            }
        }
        if let Some(shares) = res.cpu_shares.filter(|s| *s != 0) {
            write(&dir, "cpu.weight", &shares_to_weight(shares).to_string())?;
        }
        let quota = res.cpu_quota.filter(|q| *q != 0);
        let period = res.cpu_period.filter(|p| *p != 0);
        if quota.is_some() || period.is_some() {
            let mut v = match quota {
                Some(q) if q > 0 => q.to_string(),
                _ => "max".into(),
            };
            if let Some(p) = period {
                v.push_str(&format!(" {p}"));
            }
            write(&dir, "cpu.max", &v)?;
        }
        if let Some(m) = res.memory.filter(|m| *m != 0) {
            write(&dir, "memory.max", &limit(m))?;
        }
        if let Some(p) = res.pids.filter(|p| *p != 0) {
            write(&dir, "pids.max", &limit(p))?;
        }
        Ok(())
    }

    fn remove(&self, path: &str) -> Result<(), CgroupError> {
        rmdir_tree(&join(&self.root, path))
    }

    fn children(&self, path: &str) -> Vec<String> {
        child_dirs(&join(&self.root, path))
    }

    fn pids(&self, path: &str) -> Vec<i32> {
        pids_of(&join(&self.root, path))
    }

    fn read(&self, path: &str, file: &str) -> Result<String, CgroupError> {
        let p = join(&self.root, path).join(file);
        std::fs::read_to_string(&p).map_err(|e| CgroupError::io(&p, e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A v1 tree like this machine's: one directory per controller with a cgroup.procs.
    fn v1_tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        for c in ["cpu", "cpuacct", "cpuset", "memory", "pids", "systemd"] {
            std::fs::create_dir(t.path().join(c)).unwrap();
            std::fs::write(t.path().join(c).join("cgroup.procs"), "").unwrap();
        }
        std::fs::write(t.path().join("cpuset/cpuset.cpus"), "0-1\n").unwrap();
        std::fs::write(t.path().join("cpuset/cpuset.mems"), "0\n").unwrap();
        t
    }

    #[test]
    fn v1_creates_in_every_hierarchy_and_writes_knobs() {
        let t = v1_tree();
        let b = V1::new(t.path()).unwrap();
        let res = ResourceConfig {
            cpu_shares: Some(512),
            cpu_quota: Some(50_000),
            cpu_period: Some(100_000),
            memory: Some(128 << 20),
            pids: Some(-1),
        };
        assert!(!b.exists("/kubepods/podx"));
        b.create("/kubepods/podx", &res).unwrap();
        assert!(b.exists("/kubepods/podx"));
        assert!(t.path().join("systemd/kubepods/podx").is_dir());
        let read = |f: &str| b.read("/kubepods/podx", f).unwrap();
        assert_eq!(read("cpu.shares"), "512");
        assert_eq!(read("cpu.cfs_quota_us"), "50000");
        assert_eq!(read("cpu.cfs_period_us"), "100000");
        assert_eq!(read("memory.limit_in_bytes"), (128 << 20).to_string());
        assert_eq!(read("pids.max"), "max");
        assert_eq!(read("cpuset.cpus"), "0-1");
        assert_eq!(b.children("/kubepods"), ["podx"]);
        std::fs::write(t.path().join("memory/kubepods/podx/cgroup.procs"), "42\n").unwrap();
        assert_eq!(b.pids("/kubepods"), [42]);
        b.remove("/kubepods/podx").unwrap();
        assert!(!t.path().join("cpu/kubepods/podx").exists());
        assert!(!t.path().join("systemd/kubepods/podx").exists());
        b.remove("/kubepods/podx").unwrap();
    }

    #[test]
    fn v2_writes_unified_knobs_and_enables_controllers() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(
            t.path().join("cgroup.controllers"),
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        )
        .unwrap();
        let b = V2::new(t.path());
        let res = ResourceConfig {
            cpu_shares: Some(1024),
            cpu_quota: Some(20_000),
            cpu_period: Some(100_000),
            memory: Some(32 << 20),
            pids: Some(100),
        };
        b.create("/kubepods/burstable/podx", &res).unwrap();
        assert!(b.exists("/kubepods/burstable/podx"));
        let read = |f: &str| b.read("/kubepods/burstable/podx", f).unwrap();
        assert_eq!(read("cpu.weight"), "39");
        assert_eq!(read("cpu.max"), "20000 100000");
        assert_eq!(read("memory.max"), (32 << 20).to_string());
        assert_eq!(read("pids.max"), "100");
        for dir in ["", "kubepods", "kubepods/burstable"] {
            assert_eq!(
                std::fs::read_to_string(t.path().join(dir).join("cgroup.subtree_control")).unwrap(),
                "+cpu +cpuset +memory +pids +hugetlb +io",
                "{dir}"
            );
        }
        b.update(
            "/kubepods/burstable/podx",
            &ResourceConfig {
                cpu_quota: Some(-1),
                cpu_period: Some(100_000),
                memory: Some(-1),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(read("cpu.max"), "max 100000");
        assert_eq!(read("memory.max"), "max");
        // An update enables the controllers along the path again (systemd trims a slice's).
        std::fs::write(
            t.path().join("kubepods/cgroup.subtree_control"),
            "memory pids",
        )
        .unwrap();
        b.update("/kubepods/burstable", &ResourceConfig::default())
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(t.path().join("kubepods/cgroup.subtree_control")).unwrap(),
            "+cpu +cpuset +memory +pids +hugetlb +io"
        );
        assert_eq!(b.children("/kubepods/burstable"), ["podx"]);
        b.remove("/kubepods/burstable").unwrap();
        assert!(!b.exists("/kubepods/burstable"));
        assert!(b.exists("/kubepods"));
    }

    #[test]
    fn detects_this_machine() {
        // Whatever the machine has, detection answers and the backend opens.
        let b = open(Path::new("/sys/fs/cgroup")).unwrap();
        assert!(b.exists("/"));
    }
}
