//! Machine facts the node status reports, read from /proc, /sys and /etc as cAdvisor reads them
//! for the kubelet. Parsing is split from reading so the parsers are table-tested.

use std::path::Path;

/// A huge page size the kernel supports and how many pages of it are reserved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HugePages {
    /// Page size in bytes.
    pub page_size: u64,
    /// `nr_hugepages`.
    pub count: u64,
}

/// What the machine is: the inputs of the capacity and nodeInfo setters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MachineInfo {
    /// Online logical CPUs.
    pub num_cores: u32,
    /// MemTotal, bytes.
    pub memory_capacity: u64,
    /// SwapTotal, bytes.
    pub swap_capacity: u64,
    /// Supported huge page sizes (cAdvisor lists every size under /sys/kernel/mm/hugepages).
    pub huge_pages: Vec<HugePages>,
    /// /etc/machine-id (or /var/lib/dbus/machine-id).
    pub machine_id: String,
    /// /sys/class/dmi/id/product_uuid; empty where the firmware has none.
    pub system_uuid: String,
    /// /proc/sys/kernel/random/boot_id.
    pub boot_id: String,
    /// The kernel release (`uname -r`).
    pub kernel_version: String,
    /// PRETTY_NAME of /etc/os-release, `Linux` without one.
    pub os_image: String,
}

impl MachineInfo {
    /// Reads the facts of this machine; what cannot be read stays empty (or zero).
    pub fn read() -> MachineInfo {
        let text = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let meminfo = crate::stats::node_proc::meminfo();
        let num_cores = parse_cpu_list(&text("/sys/devices/system/cpu/online"))
            .or_else(|| count_processors(&text("/proc/cpuinfo")))
            .unwrap_or(0);
        let machine_id = [text("/etc/machine-id"), text("/var/lib/dbus/machine-id")]
            .into_iter()
            .map(|s| s.trim().to_string())
            .find(|s| !s.is_empty())
            .unwrap_or_default();
        MachineInfo {
            num_cores,
            memory_capacity: meminfo.as_ref().map_or(0, |m| m.mem_total),
            swap_capacity: meminfo.as_ref().map_or(0, |m| m.swap_total),
            huge_pages: read_huge_pages(Path::new("/sys/kernel/mm/hugepages")),
            machine_id,
            system_uuid: text("/sys/class/dmi/id/product_uuid").trim().to_string(),
            boot_id: text("/proc/sys/kernel/random/boot_id").trim().to_string(),
            kernel_version: text("/proc/sys/kernel/osrelease").trim().to_string(),
            os_image: os_image(&text("/etc/os-release")),
        }
    }
}

/// Size in bytes of the filesystem holding `path` (blocks x fragment size), as cAdvisor's
/// capacity of the kubelet's root filesystem.
pub fn fs_capacity(path: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(path)?;
    Ok(st.blocks().saturating_mul(st.fragment_size()))
}

/// Number of CPUs in a kernel CPU list (`0-3,8,10-11`).
pub fn parse_cpu_list(list: &str) -> Option<u32> {
    let list = list.trim();
    if list.is_empty() {
        return None;
    }
    let mut n = 0u32;
    for part in list.split(',') {
        match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (u32, u32) = (a.trim().parse().ok()?, b.trim().parse().ok()?);
                n += b.checked_sub(a)? + 1;
            }
            None => {
                part.trim().parse::<u32>().ok()?;
                n += 1;
            }
        }
    }
    Some(n)
}

/// Number of `processor` entries in /proc/cpuinfo.
pub fn count_processors(cpuinfo: &str) -> Option<u32> {
    let n = cpuinfo
        .lines()
        .filter(|l| l.split(':').next().map(str::trim) == Some("processor"))
        .count() as u32;
    (n > 0).then_some(n)
}

/// PRETTY_NAME of an os-release file, unquoted; `Linux` when absent, as cAdvisor.
pub fn os_image(os_release: &str) -> String {
    os_release
        .lines()
        .find_map(|l| l.trim().strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim().trim_matches(['"', '\'']).to_string())
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "Linux".to_string())
}

/// The page size of a `hugepages-<n>kB` directory name, in bytes.
pub fn huge_page_size(dir_name: &str) -> Option<u64> {
    let kb: u64 = dir_name
        .strip_prefix("hugepages-")?
        .strip_suffix("kB")?
        .parse()
        .ok()?;
    Some(kb * 1024)
}

fn read_huge_pages(root: &Path) -> Vec<HugePages> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let mut pages: Vec<HugePages> = entries
        .flatten()
        .filter_map(|e| {
            let page_size = huge_page_size(e.file_name().to_str()?)?;
            let count = std::fs::read_to_string(e.path().join("nr_hugepages"))
                .ok()
                .and_then(|s| s.trim().parse().ok())
                .unwrap_or(0);
            Some(HugePages { page_size, count })
        })
        .collect();
    pages.sort_by_key(|p| p.page_size);
    pages
}

/// The Go name of the architecture bosun was built for (`amd64`, `arm64`, ...).
pub fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        "riscv64" => "riscv64",
        "loongarch64" => "loong64",
        other => other,
    }
}

/// The Go name of the operating system.
pub fn go_os() -> &'static str {
    std::env::consts::OS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        for (list, want) in [
            ("0-1\n", Some(2)),
            ("0", Some(1)),
            ("0-3,8,10-11", Some(7)),
            ("", None),
            ("3-1", None),
            ("x", None),
        ] {
            assert_eq!(parse_cpu_list(list), want, "{list:?}");
        }
    }

    #[test]
    fn processors() {
        let cpuinfo = "processor\t: 0\nmodel name\t: X\n\nprocessor\t: 1\nmodel name\t: X\n";
        assert_eq!(count_processors(cpuinfo), Some(2));
        assert_eq!(count_processors(""), None);
    }

    #[test]
    fn os_release() {
        for (text, want) in [
            (
                "NAME=\"Debian\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\n",
                "Debian GNU/Linux 12 (bookworm)",
            ),
            ("PRETTY_NAME=Alpine", "Alpine"),
            ("PRETTY_NAME=''", "Linux"),
            ("", "Linux"),
        ] {
            assert_eq!(os_image(text), want, "{text:?}");
        }
    }

    #[test]
    fn huge_page_sizes() {
        assert_eq!(huge_page_size("hugepages-2048kB"), Some(2 << 20));
        assert_eq!(huge_page_size("hugepages-1048576kB"), Some(1 << 30));
        assert_eq!(huge_page_size("other"), None);
    }

    #[test]
    fn reads_this_machine() {
        let m = MachineInfo::read();
        assert!(m.num_cores >= 1);
        assert!(m.memory_capacity > 0);
        assert!(!m.kernel_version.is_empty());
        assert!(fs_capacity(Path::new("/")).unwrap() > 0);
    }
}
