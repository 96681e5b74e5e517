//! Node figures from procfs: memory, network interfaces, tasks, boot time.

use std::path::Path;

/// Counters of one interface from `/proc/<pid>/net/dev`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetDev {
    /// Interface name.
    pub name: String,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Receive errors.
    pub rx_errors: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Transmit errors.
    pub tx_errors: u64,
}

/// Interfaces cAdvisor leaves out of network stats (loopback, veths of containers, docker bridges).
const IGNORED_PREFIXES: [&str; 4] = ["lo", "veth", "docker", "nerdctl"];

/// Parses `/proc/net/dev`, leaving out the interfaces cAdvisor ignores.
pub fn parse_net_dev(text: &str) -> Vec<NetDev> {
    text.lines()
        .skip(2)
        .filter_map(|l| {
            let (name, rest) = l.split_once(':')?;
            let name = name.trim();
            if IGNORED_PREFIXES.iter().any(|p| name.starts_with(p)) {
                return None;
            }
            let v: Vec<u64> = rest
                .split_whitespace()
                .map(|f| f.parse().unwrap_or(0))
                .collect();
            (v.len() >= 11).then(|| NetDev {
                name: name.to_string(),
                rx_bytes: v[0],
                rx_errors: v[2],
                tx_bytes: v[8],
                tx_errors: v[10],
            })
        })
        .collect()
}

/// Reads the interfaces of the network namespace of `pid` (`None`: this process's).
pub fn net_dev(pid: Option<u32>) -> Option<Vec<NetDev>> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/net/dev"),
        None => "/proc/net/dev".to_string(),
    };
    std::fs::read_to_string(path)
        .ok()
        .map(|t| parse_net_dev(&t))
}

/// The value in bytes of a `/proc/meminfo` field (given there in kB).
pub fn meminfo_field(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

/// The number of tasks (threads) in the system: the fourth field of `/proc/loadavg` is
/// `running/total`.
pub fn parse_loadavg_tasks(text: &str) -> Option<i64> {
    text.split_whitespace()
        .nth(3)?
        .split_once('/')?
        .1
        .parse()
        .ok()
}

/// Boot time in seconds since the epoch (`btime` of `/proc/stat`).
pub fn parse_btime(text: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// The OS limit on task ids: the smaller of `kernel/pid_max` and `kernel/threads-max`, as the
/// kubelet reports it.
pub fn max_pid(proc_sys_kernel: &Path) -> Option<i64> {
    let read = |f: &str| -> Option<i64> {
        std::fs::read_to_string(proc_sys_kernel.join(f))
            .ok()?
            .trim()
            .parse()
            .ok()
    };
    match (read("pid_max"), read("threads-max")) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_skips_ignored_interfaces() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0: 123456   100    2    0    0     0          0         0    654321     90    1    0    0     0       0          0
vethab12: 5 1 0 0 0 0 0 0 6 1 0 0 0 0 0 0
";
        assert_eq!(
            parse_net_dev(text),
            vec![NetDev {
                name: "eth0".into(),
                rx_bytes: 123456,
                rx_errors: 2,
                tx_bytes: 654321,
                tx_errors: 1
            }]
        );
    }

    #[test]
    fn meminfo_loadavg_btime() {
        let mi = "MemTotal:        8000000 kB\nMemFree:  100 kB\nMemAvailable:    4000000 kB\n";
        assert_eq!(meminfo_field(mi, "MemTotal"), Some(8_192_000_000));
        assert_eq!(meminfo_field(mi, "MemAvailable"), Some(4_096_000_000));
        assert_eq!(meminfo_field(mi, "Mem"), None);
        assert_eq!(
            parse_loadavg_tasks("0.50 0.40 0.30 2/345 6789\n"),
            Some(345)
        );
        assert_eq!(parse_loadavg_tasks("garbage"), None);
        assert_eq!(
            parse_btime("cpu  1 2 3\nbtime 1700000000\nprocesses 5\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn max_pid_is_the_smaller_limit() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("pid_max"), "4194304\n").unwrap();
        std::fs::write(d.path().join("threads-max"), "63704\n").unwrap();
        assert_eq!(max_pid(d.path()), Some(63704));
        std::fs::remove_file(d.path().join("threads-max")).unwrap();
        assert_eq!(max_pid(d.path()), Some(4194304));
    }
}
