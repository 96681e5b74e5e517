//! The standard `process_*` metrics (client_golang's process collector), read from /proc on each
//! scrape, and the async runtime's live task count (`bosun_runtime_alive_tasks`).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second of /proc/<pid>/stat times (USER_HZ, 100 on every Linux ABI).
const USER_HZ: f64 = 100.0;

/// Collects process_cpu_seconds_total, process_resident_memory_bytes,
/// process_virtual_memory_bytes, process_start_time_seconds, process_open_fds, process_max_fds.
#[derive(Debug)]
pub struct ProcessCollector {
    start_time: Option<f64>,
}

impl ProcessCollector {
    /// A collector of this process.
    pub fn new() -> Self {
        ProcessCollector {
            start_time: start_time(),
        }
    }
}

/// The fields of /proc/self/stat after the command name (field 3 onwards).
fn stat_fields() -> Option<Vec<String>> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn start_time() -> Option<f64> {
    let fields = stat_fields()?;
    // Field 22 (starttime), ticks after boot; fields[0] is field 3.
    let ticks: f64 = fields.get(19)?.parse().ok()?;
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let btime: f64 = stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    Some(btime + ticks / USER_HZ)
}

fn status_kb(key: &str) -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let v = status.lines().find_map(|l| l.strip_prefix(key))?;
    let kb: f64 = v.split_whitespace().next()?.parse().ok()?;
    Some(kb * 1024.0)
}

fn max_fds() -> Option<f64> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line.split_whitespace().nth(3)?.parse().ok()
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: f64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(value);
    let e = encoder.encode_descriptor(name, help, None, g.metric_type())?;
    g.encode(e)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(f) = stat_fields() {
            // utime and stime: fields 14 and 15.
            let ticks: f64 = [11, 12]
                .iter()
                .filter_map(|i| f.get(*i).and_then(|v| v.parse::<f64>().ok()))
                .sum();
            let c = ConstCounter::new(ticks / USER_HZ);
            let e = encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                c.metric_type(),
            )?;
            c.encode(e)?;
        }
        if let Some(v) = max_fds() {
            gauge(
                &mut encoder,
                "process_max_fds",
                "Maximum number of open file descriptors.",
                v,
            )?;
        }
        if let Ok(dir) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                &mut encoder,
                "process_open_fds",
                "Number of open file descriptors.",
                dir.count() as f64,
            )?;
        }
        if let Some(v) = status_kb("VmRSS:") {
            gauge(
                &mut encoder,
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                v,
            )?;
        }
        if let Some(v) = self.start_time {
            gauge(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                v,
            )?;
        }
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            gauge(
                &mut encoder,
                "bosun_runtime_alive_tasks",
                "Tasks alive in Bosun's async runtime (the counterpart of the kubelet's go_goroutines).",
                rt.metrics().num_alive_tasks() as f64,
            )?;
        }
        if let Some(v) = status_kb("VmSize:") {
            gauge(
                &mut encoder,
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                v,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Encoded inside the runtime, the collector counts the runtime's live tasks.
    #[tokio::test]
    async fn the_runtimes_live_tasks_are_a_gauge() {
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register_collector(Box::new(ProcessCollector::new()));
        let _held = tokio::spawn(std::future::pending::<()>());
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
        let tasks: f64 = text
            .lines()
            .find_map(|l| l.strip_prefix("bosun_runtime_alive_tasks "))
            .expect(&text)
            .parse()
            .unwrap();
        assert!(tasks >= 1.0, "{text}");
        assert!(text.contains("process_open_fds "), "{text}");
    }
}
