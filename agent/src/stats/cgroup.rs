//! Reading usage from cgroup files, v1 (`cpuacct`, `memory` hierarchies) and v2 (unified): a few
//! small files per cgroup, parsed without allocation-heavy machinery. The mount points are found
//! once; every path is relative to them, so unit tests point a reader at a tempdir.

use std::path::{Path, PathBuf};

/// Cumulative CPU and instantaneous memory of one cgroup.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CgroupSample {
    /// Cumulative CPU time in ns.
    pub cpu_usage_ns: Option<u64>,
    /// Memory.
    pub memory: Option<MemorySample>,
}

/// Memory figures of one cgroup, as the kubelet (cAdvisor) derives them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemorySample {
    /// `memory.usage_in_bytes` (v1) / `memory.current` (v2).
    pub usage: u64,
    /// Usage minus inactive file pages (never below 0).
    pub working_set: u64,
    /// Anonymous and swap cache (`total_rss` v1 / `anon` v2).
    pub rss: u64,
    /// Cumulative minor+major faults (`total_pgfault` / `pgfault`).
    pub page_faults: u64,
    /// Cumulative major faults.
    pub major_page_faults: u64,
    /// The memory limit; `None` when unlimited.
    pub limit: Option<u64>,
    /// Swap in use, when the cgroup accounts it.
    pub swap_usage: Option<u64>,
}

/// One line of a pressure file: `some`/`full avg10=.. avg60=.. avg300=.. total=..`.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PsiLine {
    /// Share of wall time stalled over the last 10 s, in percent.
    pub avg10: f64,
    /// Over the last 60 s.
    pub avg60: f64,
    /// Over the last 300 s.
    pub avg300: f64,
    /// Cumulative stall time in microseconds, as the file gives it (and cAdvisor passes on).
    pub total: u64,
}

/// A pressure file: some tasks stalled, and all tasks stalled.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Psi {
    /// Time at least one task was stalled.
    pub some: PsiLine,
    /// Time all non-idle tasks were stalled at once.
    pub full: PsiLine,
}

/// Pressure stall information of one cgroup: `cpu.pressure`, `memory.pressure`, `io.pressure`
/// (cgroup v2); all zero where the files do not exist (cgroup v1, a kernel without PSI), as the
/// kubelet reports them through cAdvisor.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Pressure {
    /// CPU.
    pub cpu: Psi,
    /// Memory.
    pub memory: Psi,
    /// Block IO.
    pub io: Psi,
}

/// Parses a pressure file; lines it does not know are skipped, missing fields stay 0.
pub fn parse_psi(text: &str) -> Psi {
    let mut psi = Psi::default();
    for line in text.lines() {
        let mut words = line.split_ascii_whitespace();
        let target = match words.next() {
            Some("some") => &mut psi.some,
            Some("full") => &mut psi.full,
            _ => continue,
        };
        for w in words {
            match w.split_once('=') {
                Some(("avg10", v)) => target.avg10 = v.parse().unwrap_or(0.0),
                Some(("avg60", v)) => target.avg60 = v.parse().unwrap_or(0.0),
                Some(("avg300", v)) => target.avg300 = v.parse().unwrap_or(0.0),
                Some(("total", v)) => target.total = v.parse().unwrap_or(0),
                _ => {}
            }
        }
    }
    psi
}

/// Which cgroup layout the machine has, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// Separate v1 hierarchies.
    V1 {
        /// Mount of the `cpuacct` controller.
        cpuacct: PathBuf,
        /// Mount of the `memory` controller.
        memory: PathBuf,
    },
    /// The unified hierarchy.
    V2 {
        /// Its mount.
        root: PathBuf,
    },
}

impl Layout {
    /// Finds the mounts in /proc/self/mountinfo; `None` when neither layout is usable.
    pub fn detect() -> Option<Layout> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        Self::from_mountinfo(&text)
    }

    /// Parses mountinfo: v1 when `cpuacct` and `memory` hierarchies exist, else a pure v2 mount.
    pub fn from_mountinfo(text: &str) -> Option<Layout> {
        let (mut cpuacct, mut memory, mut unified) = (None, None, None);
        for line in text.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let mount = left.split(' ').nth(4);
            let mut r = right.split(' ');
            let (fstype, _src, opts) = (r.next(), r.next(), r.next().unwrap_or(""));
            let Some(mount) = mount.map(PathBuf::from) else {
                continue;
            };
            match fstype {
                Some("cgroup") => {
                    let opts: Vec<&str> = opts.split(',').collect();
                    if opts.contains(&"cpuacct") && cpuacct.is_none() {
                        cpuacct = Some(mount.clone());
                    }
                    if opts.contains(&"memory") && memory.is_none() {
                        memory = Some(mount);
                    }
                }
                Some("cgroup2") if unified.is_none() => unified = Some(mount),
                _ => {}
            }
        }
        match (cpuacct, memory, unified) {
            (Some(cpuacct), Some(memory), _) => Some(Layout::V1 { cpuacct, memory }),
            (_, _, Some(root)) => Some(Layout::V2 { root }),
            _ => None,
        }
    }

    /// The directory of cgroup `rel` in the memory hierarchy (v1) or the unified one (v2).
    fn dir(&self, rel: &str) -> PathBuf {
        match self {
            Layout::V1 { memory, .. } => join(memory, rel),
            Layout::V2 { root } => join(root, rel),
        }
    }

    /// Whether the cgroup `rel` (e.g. `/kubepods/podX`) exists.
    pub fn exists(&self, rel: &str) -> bool {
        self.dir(rel).is_dir()
    }

    /// The names of the child cgroups of `rel`; none when it does not exist.
    pub fn children(&self, rel: &str) -> Vec<String> {
        std::fs::read_dir(self.dir(rel))
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The processes directly in cgroup `rel`.
    pub fn procs(&self, rel: &str) -> Vec<u32> {
        std::fs::read_to_string(self.dir(rel).join("cgroup.procs"))
            .map(|t| t.lines().filter_map(|l| l.trim().parse().ok()).collect())
            .unwrap_or_default()
    }

    /// Reads the pressure files of cgroup `rel` (v2 only: v1 has none, so nothing is read).
    pub fn pressure(&self, rel: &str) -> Pressure {
        let Layout::V2 { root } = self else {
            return Pressure::default();
        };
        let dir = join(root, rel);
        let read = |f: &str| {
            std::fs::read_to_string(dir.join(f))
                .map(|t| parse_psi(&t))
                .unwrap_or_default()
        };
        Pressure {
            cpu: read("cpu.pressure"),
            memory: read("memory.pressure"),
            io: read("io.pressure"),
        }
    }

    /// Reads CPU and memory of cgroup `rel`; missing files give `None`s, never an error.
    pub fn sample(&self, rel: &str) -> CgroupSample {
        match self {
            Layout::V1 { cpuacct, memory } => {
                let mem = join(memory, rel);
                CgroupSample {
                    cpu_usage_ns: read_u64(&join(cpuacct, rel).join("cpuacct.usage")),
                    memory: read_u64(&mem.join("memory.usage_in_bytes")).map(|usage| {
                        let stat =
                            std::fs::read_to_string(mem.join("memory.stat")).unwrap_or_default();
                        let limit = read_u64(&mem.join("memory.limit_in_bytes"));
                        let memsw = read_u64(&mem.join("memory.memsw.usage_in_bytes"));
                        memory_v1(usage, &stat, limit, memsw)
                    }),
                }
            }
            Layout::V2 { root } => {
                let dir = join(root, rel);
                let cpu = std::fs::read_to_string(dir.join("cpu.stat"))
                    .ok()
                    .and_then(|t| stat_field(&t, "usage_usec"))
                    .map(|us| us.saturating_mul(1000));
                // The root cgroup has no memory.current: its usage is memory.stat's anon + file,
                // as runc's cgroup library (and so the kubelet's cAdvisor) emulates it.
                let current = read_u64(&dir.join("memory.current")).or_else(|| {
                    let root_dir = rel.trim_matches('/').is_empty();
                    let stat = std::fs::read_to_string(dir.join("memory.stat")).ok()?;
                    root_dir.then(|| {
                        stat_field(&stat, "anon")
                            .unwrap_or(0)
                            .saturating_add(stat_field(&stat, "file").unwrap_or(0))
                    })
                });
                CgroupSample {
                    cpu_usage_ns: cpu,
                    memory: current.map(|usage| {
                        let stat =
                            std::fs::read_to_string(dir.join("memory.stat")).unwrap_or_default();
                        let limit = std::fs::read_to_string(dir.join("memory.max"))
                            .ok()
                            .and_then(|t| t.trim().parse().ok());
                        let swap = read_u64(&dir.join("memory.swap.current"));
                        memory_v2(usage, &stat, limit, swap)
                    }),
                }
            }
        }
    }
}

/// Limits at or above this are "unlimited" (v1 writes PAGE_COUNTER_MAX pages, ~2^63).
const UNLIMITED: u64 = 1 << 62;

/// Memory of a v1 cgroup from its `memory.usage_in_bytes`, `memory.stat`, limit and memsw usage.
pub fn memory_v1(usage: u64, stat: &str, limit: Option<u64>, memsw: Option<u64>) -> MemorySample {
    let f = |k| stat_field(stat, k).unwrap_or(0);
    MemorySample {
        usage,
        working_set: usage.saturating_sub(f("total_inactive_file")),
        rss: f("total_rss"),
        page_faults: f("total_pgfault"),
        major_page_faults: f("total_pgmajfault"),
        limit: limit.filter(|&l| l < UNLIMITED),
        swap_usage: memsw.map(|m| m.saturating_sub(usage)),
    }
}

/// Memory of a v2 cgroup from its `memory.current`, `memory.stat`, `memory.max` (`max`: none)
/// and `memory.swap.current`.
pub fn memory_v2(usage: u64, stat: &str, limit: Option<u64>, swap: Option<u64>) -> MemorySample {
    let f = |k| stat_field(stat, k).unwrap_or(0);
    MemorySample {
        usage,
        working_set: usage.saturating_sub(f("inactive_file")),
        rss: f("anon"),
        page_faults: f("pgfault"),
        major_page_faults: f("pgmajfault"),
        limit: limit.filter(|&l| l < UNLIMITED),
        swap_usage: swap,
    }
}

/// The value of `key` in a flat-keyed file (`key value` per line).
pub fn stat_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn join(mount: &Path, rel: &str) -> PathBuf {
    mount.join(rel.trim_start_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT_V1: &str = "cache 1000\nrss 10\ntotal_cache 4096\ntotal_rss 8192\ntotal_pgfault 77\ntotal_pgmajfault 3\ntotal_inactive_file 1024\n";

    #[test]
    fn v1_memory_uses_the_hierarchical_totals() {
        let m = memory_v1(20480, STAT_V1, Some(9223372036854771712), None);
        assert_eq!(
            m,
            MemorySample {
                usage: 20480,
                working_set: 19456,
                rss: 8192,
                page_faults: 77,
                major_page_faults: 3,
                limit: None,
                swap_usage: None,
            }
        );
        let m = memory_v1(500, STAT_V1, Some(33554432), Some(600));
        assert_eq!(
            (m.working_set, m.limit, m.swap_usage),
            (0, Some(33554432), Some(100))
        );
    }

    #[test]
    fn v2_memory() {
        let stat = "anon 4096\nfile 8192\ninactive_file 2048\npgfault 12\npgmajfault 1\n";
        let m = memory_v2(16384, stat, None, Some(0));
        assert_eq!(
            (
                m.working_set,
                m.rss,
                m.page_faults,
                m.major_page_faults,
                m.limit,
                m.swap_usage
            ),
            (14336, 4096, 12, 1, None, Some(0))
        );
    }

    #[test]
    fn pressure_files_parse_and_v1_reads_none() {
        let text = "some avg10=1.50 avg60=0.25 avg300=0.00 total=123456\nfull avg10=0.10 avg60=0.00 avg300=0.00 total=789\n";
        let p = parse_psi(text);
        assert_eq!(
            p.some,
            PsiLine {
                avg10: 1.5,
                avg60: 0.25,
                avg300: 0.0,
                total: 123456
            }
        );
        assert_eq!((p.full.avg10, p.full.total), (0.1, 789));
        // A cpu.pressure of an old kernel has no `full` line; garbage is skipped, not an error.
        let p = parse_psi("some avg10=x total=5\nweird line\n");
        assert_eq!(
            (p.some.total, p.some.avg10, p.full),
            (5, 0.0, PsiLine::default())
        );

        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(d.path().join("kubepods/podA")).unwrap();
        std::fs::write(d.path().join("kubepods/podA/memory.pressure"), text).unwrap();
        let v2 = Layout::V2 {
            root: d.path().to_path_buf(),
        };
        let p = v2.pressure("/kubepods/podA");
        assert_eq!(
            (p.memory.some.total, p.cpu, p.io),
            (123456, Psi::default(), Psi::default())
        );
        let v1 = Layout::V1 {
            cpuacct: d.path().to_path_buf(),
            memory: d.path().to_path_buf(),
        };
        assert_eq!(v1.pressure("/kubepods/podA"), Pressure::default());
    }

    /// The v2 root cgroup has no memory.current: usage is anon + file of its memory.stat, as
    /// runc's library emulates it for cAdvisor; a child without memory.current has no memory.
    #[test]
    fn v2_root_memory_from_its_memory_stat() {
        let d = tempfile::tempdir().unwrap();
        let stat = "anon 4096\nfile 8192\ninactive_file 2048\npgfault 12\npgmajfault 1\n";
        std::fs::write(d.path().join("memory.stat"), stat).unwrap();
        std::fs::create_dir_all(d.path().join("kubepods")).unwrap();
        std::fs::write(d.path().join("kubepods/memory.stat"), stat).unwrap();
        let v2 = Layout::V2 {
            root: d.path().to_path_buf(),
        };
        let m = v2.sample("/").memory.expect("root memory");
        assert_eq!(
            (m.usage, m.working_set, m.rss, m.page_faults, m.limit),
            (12288, 10240, 4096, 12, None)
        );
        assert_eq!(v2.sample("/kubepods").memory, None);
    }

    #[test]
    fn mountinfo_v1_and_v2() {
        let v1 = "\
30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw
35 30 0:31 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
36 30 0:32 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
";
        assert_eq!(
            Layout::from_mountinfo(v1),
            Some(Layout::V1 {
                cpuacct: "/sys/fs/cgroup/cpu,cpuacct".into(),
                memory: "/sys/fs/cgroup/memory".into()
            })
        );
        let v2 = "31 25 0:27 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        assert_eq!(
            Layout::from_mountinfo(v2),
            Some(Layout::V2 {
                root: "/sys/fs/cgroup".into()
            })
        );
        assert_eq!(Layout::from_mountinfo(""), None);
    }

    #[test]
    fn samples_a_fake_v1_tree() {
        let d = tempfile::tempdir().unwrap();
        let (cpu, mem) = (d.path().join("cpuacct"), d.path().join("memory"));
        let pod = "kubepods/burstable/podA";
        std::fs::create_dir_all(cpu.join(pod)).unwrap();
        std::fs::create_dir_all(mem.join(pod)).unwrap();
        std::fs::write(cpu.join(pod).join("cpuacct.usage"), "123456789\n").unwrap();
        std::fs::write(mem.join(pod).join("memory.usage_in_bytes"), "20480\n").unwrap();
        std::fs::write(mem.join(pod).join("memory.stat"), STAT_V1).unwrap();
        std::fs::write(mem.join(pod).join("memory.limit_in_bytes"), "65536\n").unwrap();
        std::fs::write(mem.join(pod).join("cgroup.procs"), "12\n34\n").unwrap();
        let l = Layout::V1 {
            cpuacct: cpu,
            memory: mem,
        };
        assert!(l.exists("/kubepods/burstable/podA"));
        assert!(!l.exists("/kubepods/podA"));
        assert_eq!(l.procs("/kubepods/burstable/podA"), vec![12, 34]);
        let s = l.sample("/kubepods/burstable/podA");
        assert_eq!(s.cpu_usage_ns, Some(123456789));
        let m = s.memory.unwrap();
        assert_eq!(
            (m.usage, m.working_set, m.limit),
            (20480, 19456, Some(65536))
        );
        assert_eq!(l.sample("/nope"), CgroupSample::default());
    }
}
