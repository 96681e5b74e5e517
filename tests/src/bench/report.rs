//! The benchmark's output: a table (metric, Bosun, kubelet, ratio) and one
//! `bench <metric> bosun=<v> kubelet=<v> ratio=<r>` line per metric for scripts.

use std::fmt::Write;

/// Metric names every full or quick run prints (`tests/bench/run --quick` fails without one).
pub const REQUIRED: &[&str] = &[
    "pod_startup_p50_ms",
    "pod_startup_p90_ms",
    "burst_all_ready_s",
    "cri_floor_ms",
    "cpu_seconds",
    "cpu_seconds_idle",
    "rss_mb",
    "api_requests",
    "summary_scrape_ms",
    "resource_scrape_ms",
    "exec_roundtrip_ms",
    "port_forward_mib_s",
    "logs_follow_mb_s",
    "teardown_s",
    "probe_cpu_seconds",
    "probe_rss_mb",
    "probe_runtime_cpu_seconds",
    "probe_lag_p99_ms",
    "eviction_reaction_ms",
];

/// One metric: what it is and both agents' values (`None`: not measured, printed `n/a`).
#[derive(Debug, Clone)]
pub struct Row {
    /// Machine-readable name, e.g. `pod_startup_p50_ms`.
    pub name: String,
    /// What it measures, for the table.
    pub what: String,
    /// Bosun's value.
    pub bosun: Option<f64>,
    /// The kubelet's value.
    pub kubelet: Option<f64>,
    /// Decimals to print.
    pub decimals: usize,
}

impl Row {
    /// Bosun / kubelet, when both are known and the kubelet's is not zero.
    pub fn ratio(&self) -> Option<f64> {
        match (self.bosun, self.kubelet) {
            (Some(b), Some(k)) if k != 0.0 => Some(b / k),
            _ => None,
        }
    }

    /// `bench <name> bosun=<v> kubelet=<v> ratio=<r>`.
    pub fn line(&self) -> String {
        format!(
            "bench {} bosun={} kubelet={} ratio={}",
            self.name,
            fmt(self.bosun, self.decimals),
            fmt(self.kubelet, self.decimals),
            fmt(self.ratio(), 2)
        )
    }
}

/// A value with `decimals` decimals, or `n/a`.
pub fn fmt(v: Option<f64>, decimals: usize) -> String {
    match v {
        Some(v) if v.is_finite() => format!("{v:.decimals$}"),
        _ => "n/a".to_string(),
    }
}

/// The machine and software the run was made on.
#[derive(Debug, Clone, Default)]
pub struct Machine {
    /// Online CPUs.
    pub cores: usize,
    /// MemTotal in GiB.
    pub memory_gib: f64,
    /// Kernel release.
    pub kernel: String,
    /// containerd as CRI reports it, e.g. `containerd://1.6.20~ds1`.
    pub containerd: String,
    /// The API server's and kubelet's Kubernetes version.
    pub kubernetes: String,
}

impl Machine {
    /// Reads cores, memory and kernel of this machine; the versions are filled in by the caller.
    pub fn read() -> Machine {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kb: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        Machine {
            cores: std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(0),
            memory_gib: mem_kb / 1024.0 / 1024.0,
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .to_string(),
            ..Machine::default()
        }
    }

    /// `bench machine cores=.. memory_gib=.. kernel=.. containerd=.. kubernetes=..`.
    pub fn line(&self) -> String {
        format!(
            "bench machine cores={} memory_gib={:.1} kernel={} containerd={} kubernetes={}",
            self.cores, self.memory_gib, self.kernel, self.containerd, self.kubernetes
        )
    }
}

/// The markdown table of `rows`, with the machine below it.
pub fn table(rows: &[Row], machine: &Machine) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "| metric | what | Bosun | kubelet | ratio (Bosun/kubelet) |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|");
    for r in rows {
        let _ = writeln!(
            out,
            "| `{}` | {} | {} | {} | {} |",
            r.name,
            r.what,
            fmt(r.bosun, r.decimals),
            fmt(r.kubelet, r.decimals),
            fmt(r.ratio(), 2)
        );
    }
    let _ = writeln!(
        out,
        "\nMachine: {} cores, {:.1} GiB memory, kernel {}, {}, Kubernetes {}.",
        machine.cores, machine.memory_gib, machine.kernel, machine.containerd, machine.kubernetes
    );
    out
}

/// The metric names of `required` missing from `output` (lines `bench <name> ...`).
pub fn missing(output: &str, required: &[&'static str]) -> Vec<&'static str> {
    required
        .iter()
        .copied()
        .filter(|name| {
            !output.lines().any(|l| {
                let mut f = l.split_whitespace();
                f.next() == Some("bench") && f.next() == Some(name)
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(bosun: Option<f64>, kubelet: Option<f64>) -> Row {
        Row {
            name: "pod_startup_p50_ms".into(),
            what: "startup".into(),
            bosun,
            kubelet,
            decimals: 1,
        }
    }

    #[test]
    fn lines_and_ratios() {
        assert_eq!(
            row(Some(100.0), Some(400.0)).line(),
            "bench pod_startup_p50_ms bosun=100.0 kubelet=400.0 ratio=0.25"
        );
        assert_eq!(
            row(None, Some(400.0)).line(),
            "bench pod_startup_p50_ms bosun=n/a kubelet=400.0 ratio=n/a"
        );
        assert_eq!(row(Some(1.0), Some(0.0)).ratio(), None);
    }

    #[test]
    fn finds_missing_lines() {
        let out = REQUIRED
            .iter()
            .filter(|n| **n != "rss_mb")
            .map(|n| format!("bench {n} bosun=1 kubelet=2 ratio=0.50"))
            .collect::<Vec<_>>()
            .join("\n");
        // rss_mb_idle does not stand in for rss_mb.
        let out = format!("{out}\nbench rss_mb_idle bosun=1 kubelet=1 ratio=1.00\n");
        assert_eq!(missing(&out, REQUIRED), vec!["rss_mb"]);
    }

    #[test]
    fn table_has_every_row() {
        let t = table(&[row(Some(1.0), Some(2.0))], &Machine::default());
        assert!(
            t.contains("| `pod_startup_p50_ms` | startup | 1.0 | 2.0 | 0.50 |"),
            "{t}"
        );
    }
}
