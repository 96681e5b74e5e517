//! One process's CPU time and resident memory, from /proc.

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use super::stats;

/// Clock ticks per second (`getconf CLK_TCK`, 100 when that fails).
pub fn clock_ticks() -> f64 {
    static TICKS: OnceLock<f64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime of `pid` (all its threads) in clock ticks, from a `/proc/<pid>/stat` line.
pub fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// VmRSS in kB from `/proc/<pid>/status` text.
pub fn parse_rss_kb(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The resident memory of `pid` in kB; 0 when it cannot be read (the process is gone).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| parse_rss_kb(&s))
        .unwrap_or(0)
}

/// CPU seconds (utime + stime) `pid` has used so far.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(parse_cpu_ticks(&stat)? as f64 / clock_ticks())
}

/// Resident memory of `pid` in MiB.
pub fn rss_mb(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    Some(parse_rss_kb(&status)? as f64 / 1024.0)
}

/// What a process used over a window: CPU seconds, mean and peak RSS (sampled every second).
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// utime + stime over the window, seconds.
    pub cpu_seconds: f64,
    /// Mean of the RSS samples, MiB.
    pub rss_mean_mb: f64,
    /// Largest RSS sample, MiB.
    pub rss_peak_mb: f64,
}

/// Measures `pid` for `window`: CPU at both ends, RSS at the start and every second after.
/// `None` if the process went away.
pub async fn measure(pid: u32, window: Duration) -> Option<Usage> {
    let start = tokio::time::Instant::now();
    let cpu0 = cpu_seconds(pid)?;
    let mut rss = vec![rss_mb(pid)?];
    let mut tick = tokio::time::interval_at(start + Duration::from_secs(1), Duration::from_secs(1));
    while start.elapsed() + Duration::from_millis(1) < window {
        tick.tick().await;
        rss.push(rss_mb(pid)?);
    }
    tokio::time::sleep_until(start + window).await;
    let cpu1 = cpu_seconds(pid)?;
    Some(Usage {
        cpu_seconds: cpu1 - cpu0,
        rss_mean_mb: stats::mean(&rss)?,
        rss_peak_mb: stats::max(&rss)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_awkward_command_name() {
        let stat =
            "4242 (a (b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 731 269 5 7 20 0 12 0 99 1000 50";
        assert_eq!(parse_cpu_ticks(stat), Some(1000));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn parses_vmrss() {
        let status = "Name:\tbosun\nVmPeak:\t  9000 kB\nVmRSS:\t   12345 kB\nThreads:\t4\n";
        assert_eq!(parse_rss_kb(status), Some(12345));
        assert_eq!(parse_rss_kb("Name:\tx\n"), None);
    }

    #[test]
    fn measures_this_process() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let u = rt
            .block_on(measure(std::process::id(), Duration::from_millis(1200)))
            .expect("own process");
        assert!(u.rss_mean_mb > 0.0 && u.rss_peak_mb >= u.rss_mean_mb);
        assert!(u.cpu_seconds >= 0.0);
    }
}
