//! Node figures from /proc through the `procfs` crate: memory, network interfaces, tasks, boot
//! time, and the kernel's task limits.

use std::collections::HashMap;

use procfs::net::DeviceStatus;
use procfs::{Current, LoadAverage, Meminfo};

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

/// The interfaces cAdvisor reports, by name.
fn reported(devices: HashMap<String, DeviceStatus>) -> Vec<NetDev> {
    let mut out: Vec<NetDev> = devices
        .into_values()
        .filter(|d| !IGNORED_PREFIXES.iter().any(|p| d.name.starts_with(p)))
        .map(|d| NetDev {
            name: d.name,
            rx_bytes: d.recv_bytes,
            rx_errors: d.recv_errs,
            tx_bytes: d.sent_bytes,
            tx_errors: d.sent_errs,
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// Reads the interfaces of the network namespace of `pid` (`None`: this process's).
pub fn net_dev(pid: Option<u32>) -> Option<Vec<NetDev>> {
    let devices = match pid {
        Some(p) => procfs::process::Process::new(i32::try_from(p).ok()?)
            .ok()?
            .dev_status()
            .ok()?,
        None => procfs::net::dev_status().ok()?,
    };
    Some(reported(devices))
}

/// `/proc/meminfo` (values in bytes); `None` when it cannot be read.
pub fn meminfo() -> Option<Meminfo> {
    Meminfo::current().ok()
}

/// The number of tasks (threads) in the system (`/proc/loadavg`).
pub fn tasks() -> Option<i64> {
    LoadAverage::current().ok().map(|l| i64::from(l.max))
}

/// Boot time in seconds since the epoch (`btime` of `/proc/stat`).
pub fn boot_time() -> Option<i64> {
    procfs::boot_time_secs()
        .ok()
        .and_then(|s| i64::try_from(s).ok())
}

/// The OS limit on task ids: the smaller of `kernel/pid_max` and `kernel/threads-max`, as the
/// kubelet reports it.
pub fn max_pid() -> Option<i64> {
    let pid_max = procfs::sys::kernel::pid_max().ok().map(i64::from);
    let threads_max = procfs::sys::kernel::threads_max().ok().map(i64::from);
    smaller(pid_max, threads_max)
}

fn smaller(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use procfs::FromBufRead;

    #[test]
    fn net_dev_skips_ignored_interfaces() {
        let text = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo: 1000      10    0    0    0     0          0         0     1000      10    0    0    0     0       0          0
  eth0: 123456   100    2    0    0     0          0         0    654321     90    1    0    0     0       0          0
vethab12: 5 1 0 0 0 0 0 0 6 1 0 0 0 0 0 0
";
        let parsed = procfs::net::InterfaceDeviceStatus::from_buf_read(text.as_bytes()).unwrap();
        assert_eq!(
            reported(parsed.0),
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
    fn this_machine_answers() {
        let m = meminfo().expect("meminfo");
        assert!(m.mem_total > 0);
        assert!(tasks().is_some_and(|t| t > 0));
        assert!(boot_time().is_some_and(|b| b > 1_000_000_000));
        assert!(max_pid().is_some_and(|p| p > 0));
        let ifs = net_dev(None).expect("net dev");
        assert!(ifs.iter().all(|i| !i.name.starts_with("lo")), "{ifs:?}");
    }

    #[test]
    fn max_pid_is_the_smaller_limit() {
        assert_eq!(smaller(Some(4194304), Some(63704)), Some(63704));
        assert_eq!(smaller(Some(4194304), None), Some(4194304));
        assert_eq!(smaller(None, None), None);
    }
}
