//! `/metrics/cadvisor`: the `container_*` series Prometheus dashboards read from a kubelet's
//! embedded cAdvisor (cadvisor `metrics/prometheus.go`, labelled by the kubelet's
//! `containerPrometheusLabelsFunc`: `container`, `id`, `image`, `name`, `namespace`, `pod`), built
//! from the stats Bosun already samples: no cAdvisor. Three kinds of series, as cAdvisor has them:
//! the root cgroup `/` (the node), each pod's cgroup (`container=""`, with the pod's network), and
//! each running container (its cgroup as `id`, its runtime ID as `name`). Families are sorted by
//! name and series by label values, per-sample timestamps in milliseconds, as the Go client writes
//! them. Series cAdvisor derives from data Bosun does not sample (per-CPU usage, block I/O, page
//! cache, spec limits, tasks) are not served. The series are those of the last sample (every
//! housekeeping interval, 10 s): a container started or gone since then shows up or leaves at the
//! next one, where cAdvisor, watching the cgroups, adds or drops it at once.

use std::collections::HashMap;
use std::fmt::Write;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::resource_metrics::go_float;
use crate::stats::Identities;
use crate::stats::summary::{
    CpuStats, FsStats, IoStats, MemoryStats, NetworkStats, PsiStats, Summary,
};

/// The base labels of every series, in name order.
const BASE: [&str; 6] = ["container", "id", "image", "name", "namespace", "pod"];

/// One series: base label values (in [`BASE`] order), an extra label, value, timestamp.
struct Series {
    base: [String; 6],
    extra: Option<(&'static str, String)>,
    value: f64,
    ms: Option<i64>,
}

/// One family: name, help, type, series.
struct Family {
    name: &'static str,
    help: &'static str,
    kind: &'static str,
    series: Vec<Series>,
}

fn ms(t: &Time) -> i64 {
    t.0.as_millisecond()
}

/// The families, by name, and what each series of a cgroup contributes.
struct Families(HashMap<&'static str, Family>);

impl Families {
    fn add(
        &mut self,
        (name, help, kind): (&'static str, &'static str, &'static str),
        base: &[String; 6],
        extra: Option<(&'static str, String)>,
        value: f64,
        ms: Option<i64>,
    ) {
        self.0
            .entry(name)
            .or_insert_with(|| Family {
                name,
                help,
                kind,
                series: Vec::new(),
            })
            .series
            .push(Series {
                base: base.clone(),
                extra,
                value,
                ms,
            });
    }

    fn cpu(&mut self, base: &[String; 6], cpu: Option<&CpuStats>) {
        let Some(c) = cpu else { return };
        if let Some(ns) = c.usage_core_nano_seconds.filter(|ns| *ns > 0) {
            self.add(
                CPU_USAGE,
                base,
                Some(("cpu", "total".into())),
                ns as f64 / 1e9,
                Some(ms(&c.time)),
            );
        }
    }

    fn memory(&mut self, base: &[String; 6], memory: Option<&MemoryStats>, swap: Option<u64>) {
        let Some(m) = memory else { return };
        let t = Some(ms(&m.time));
        for (desc, v) in [
            (MEMORY_RSS, m.rss_bytes),
            (MEMORY_USAGE, m.usage_bytes),
            (MEMORY_WORKING_SET, m.working_set_bytes),
            (MEMORY_SWAP, swap.or(Some(0))),
        ] {
            if let Some(v) = v {
                self.add(desc, base, None, v as f64, t);
            }
        }
    }

    fn network(&mut self, base: &[String; 6], network: Option<&NetworkStats>) {
        let Some(n) = network else { return };
        let t = Some(ms(&n.time));
        for i in &n.interfaces {
            for (desc, v) in [
                (NET_RX_BYTES, i.rx_bytes),
                (NET_RX_ERRORS, i.rx_errors),
                (NET_TX_BYTES, i.tx_bytes),
                (NET_TX_ERRORS, i.tx_errors),
            ] {
                if let Some(v) = v {
                    self.add(desc, base, Some(("interface", i.name.clone())), v as f64, t);
                }
            }
        }
    }

    fn fs(&mut self, base: &[String; 6], fs: Option<&FsStats>) {
        let Some(f) = fs else { return };
        let t = Some(ms(&f.time));
        let device = || Some(("device", String::new()));
        for (desc, v) in [
            (FS_INODES_FREE, f.inodes_free),
            (FS_INODES_TOTAL, f.inodes),
            (FS_LIMIT, f.capacity_bytes),
            (FS_USAGE, f.used_bytes),
        ] {
            if let Some(v) = v {
                self.add(desc, base, device(), v as f64, t);
            }
        }
    }

    /// cAdvisor's pressure families (`container_pressure_*`): the pressure files' cumulative
    /// totals (microseconds) in seconds, `full` as stalled and `some` as waiting.
    fn pressure(
        &mut self,
        base: &[String; 6],
        cpu: Option<&CpuStats>,
        memory: Option<&MemoryStats>,
        io: Option<&IoStats>,
    ) {
        let sources: [PressureSource<'_>; 3] = [
            (
                cpu.and_then(|c| Some((c.psi.as_ref()?, &c.time))),
                PRESSURE_CPU_STALLED,
                PRESSURE_CPU_WAITING,
            ),
            (
                memory.and_then(|m| Some((m.psi.as_ref()?, &m.time))),
                PRESSURE_MEMORY_STALLED,
                PRESSURE_MEMORY_WAITING,
            ),
            (
                io.and_then(|i| Some((i.psi.as_ref()?, &i.time))),
                PRESSURE_IO_STALLED,
                PRESSURE_IO_WAITING,
            ),
        ];
        for (psi, stalled, waiting) in sources {
            let Some((psi, time)) = psi else { continue };
            let t = Some(ms(time));
            self.add(stalled, base, None, psi.full.total as f64 / 1e6, t);
            self.add(waiting, base, None, psi.some.total as f64 / 1e6, t);
        }
    }

    fn start(&mut self, base: &[String; 6], start: &Time, now_ms: i64) {
        self.add(START_TIME, base, None, start.0.as_second() as f64, None);
        self.add(LAST_SEEN, base, None, (now_ms / 1000) as f64, Some(now_ms));
    }
}

type Desc = (&'static str, &'static str, &'static str);

/// One resource's pressure and when it was read, with its stalled and waiting families.
type PressureSource<'a> = (Option<(&'a PsiStats, &'a Time)>, Desc, Desc);
const CPU_USAGE: Desc = (
    "container_cpu_usage_seconds_total",
    "Cumulative cpu time consumed in seconds.",
    "counter",
);
const MEMORY_RSS: Desc = ("container_memory_rss", "Size of RSS in bytes.", "gauge");
const MEMORY_SWAP: Desc = (
    "container_memory_swap",
    "Container swap usage in bytes.",
    "gauge",
);
const MEMORY_USAGE: Desc = (
    "container_memory_usage_bytes",
    "Current memory usage in bytes, including all memory regardless of when it was accessed",
    "gauge",
);
const MEMORY_WORKING_SET: Desc = (
    "container_memory_working_set_bytes",
    "Current working set in bytes.",
    "gauge",
);
const NET_RX_BYTES: Desc = (
    "container_network_receive_bytes_total",
    "Cumulative count of bytes received",
    "counter",
);
const NET_RX_ERRORS: Desc = (
    "container_network_receive_errors_total",
    "Cumulative count of errors encountered while receiving",
    "counter",
);
const NET_TX_BYTES: Desc = (
    "container_network_transmit_bytes_total",
    "Cumulative count of bytes transmitted",
    "counter",
);
const NET_TX_ERRORS: Desc = (
    "container_network_transmit_errors_total",
    "Cumulative count of errors encountered while transmitting",
    "counter",
);
const FS_INODES_FREE: Desc = (
    "container_fs_inodes_free",
    "Number of available Inodes",
    "gauge",
);
const FS_INODES_TOTAL: Desc = ("container_fs_inodes_total", "Number of Inodes", "gauge");
const FS_LIMIT: Desc = (
    "container_fs_limit_bytes",
    "Number of bytes that can be consumed by the container on this filesystem.",
    "gauge",
);
const FS_USAGE: Desc = (
    "container_fs_usage_bytes",
    "Number of bytes that are consumed by the container on this filesystem.",
    "gauge",
);
const PRESSURE_CPU_STALLED: Desc = (
    "container_pressure_cpu_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to CPU congestion.",
    "counter",
);
const PRESSURE_CPU_WAITING: Desc = (
    "container_pressure_cpu_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to CPU congestion.",
    "counter",
);
const PRESSURE_MEMORY_STALLED: Desc = (
    "container_pressure_memory_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to memory congestion.",
    "counter",
);
const PRESSURE_MEMORY_WAITING: Desc = (
    "container_pressure_memory_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to memory congestion.",
    "counter",
);
const PRESSURE_IO_STALLED: Desc = (
    "container_pressure_io_stalled_seconds_total",
    "Total time duration no tasks in the container could make progress due to IO congestion.",
    "counter",
);
const PRESSURE_IO_WAITING: Desc = (
    "container_pressure_io_waiting_seconds_total",
    "Total time duration tasks in the container have waited due to IO congestion.",
    "counter",
);
const START_TIME: Desc = (
    "container_start_time_seconds",
    "Start time of the container since unix epoch in seconds.",
    "gauge",
);
const LAST_SEEN: Desc = (
    "container_last_seen",
    "Last time a container was seen by the exporter",
    "gauge",
);

/// The image each container of each pod runs, by (pod UID, container name), as its status
/// reports it (cAdvisor's `image` is the runtime's image name, not its digest).
pub type Images = HashMap<(String, String), String>;

/// Encodes the series of `summary` (None: no sample yet, the scrape error alone) at `now_ms`.
pub fn encode(summary: Option<&Summary>, ids: &Identities, images: &Images, now_ms: i64) -> String {
    let mut f = Families(HashMap::new());
    if let Some(s) = summary {
        let root = [
            String::new(),
            "/".to_string(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ];
        f.cpu(&root, s.node.cpu.as_ref());
        f.memory(
            &root,
            s.node.memory.as_ref(),
            s.node.swap.as_ref().and_then(|s| s.swap_usage_bytes),
        );
        f.pressure(
            &root,
            s.node.cpu.as_ref(),
            s.node.memory.as_ref(),
            s.node.io.as_ref(),
        );
        f.network(&root, s.node.network.as_ref());
        f.fs(&root, s.node.fs.as_ref());
        f.start(&root, &s.node.start_time, now_ms);
        for p in &s.pods {
            let uid = &p.pod_ref.uid;
            if let Some(cgroup) = ids.pod_cgroups.get(uid) {
                let base = [
                    String::new(),
                    cgroup.clone(),
                    String::new(),
                    String::new(),
                    p.pod_ref.namespace.clone(),
                    p.pod_ref.name.clone(),
                ];
                f.cpu(&base, p.cpu.as_ref());
                f.memory(
                    &base,
                    p.memory.as_ref(),
                    p.swap.as_ref().and_then(|s| s.swap_usage_bytes),
                );
                f.pressure(&base, p.cpu.as_ref(), p.memory.as_ref(), p.io.as_ref());
                f.network(&base, p.network.as_ref());
                f.start(&base, &p.start_time, now_ms);
            }
            for c in &p.containers {
                let key = (uid.clone(), c.name.clone());
                let Some(id) = ids.containers.get(&key) else {
                    continue;
                };
                let image = images
                    .get(&key)
                    .cloned()
                    .unwrap_or_else(|| id.image_ref.clone());
                let base = [
                    c.name.clone(),
                    id.cgroup.clone().unwrap_or_default(),
                    image,
                    id.id.clone(),
                    p.pod_ref.namespace.clone(),
                    p.pod_ref.name.clone(),
                ];
                f.cpu(&base, c.cpu.as_ref());
                f.memory(
                    &base,
                    c.memory.as_ref(),
                    c.swap.as_ref().and_then(|s| s.swap_usage_bytes),
                );
                f.pressure(&base, c.cpu.as_ref(), c.memory.as_ref(), c.io.as_ref());
                f.fs(&base, c.rootfs.as_ref());
                f.start(&base, &c.start_time, now_ms);
            }
        }
    }
    let mut families: Vec<Family> = f.0.into_values().collect();
    families.push(Family {
        name: "container_scrape_error",
        help: "1 if there was an error while getting container metrics, 0 otherwise",
        kind: "gauge",
        series: vec![Series {
            base: Default::default(),
            extra: None,
            value: if summary.is_some() { 0.0 } else { 1.0 },
            ms: None,
        }],
    });
    families.sort_by_key(|f| f.name);
    let mut out = String::new();
    for fam in &mut families {
        let _ = writeln!(out, "# HELP {} {}", fam.name, fam.help);
        let _ = writeln!(out, "# TYPE {} {}", fam.name, fam.kind);
        fam.series.sort_by(|a, b| {
            let (la, lb) = (labels(a), labels(b));
            la.iter().map(|(_, v)| *v).cmp(lb.iter().map(|(_, v)| *v))
        });
        // Two containers of one name in a pod cannot run at once; a duplicate is dropped.
        fam.series.dedup_by(|a, b| labels(a) == labels(b));
        for s in &fam.series {
            out.push_str(fam.name);
            let ls = labels(s);
            if !ls.is_empty() {
                out.push('{');
                let parts: Vec<String> = ls
                    .iter()
                    .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                    .collect();
                out.push_str(&parts.join(","));
                out.push('}');
            }
            let _ = write!(out, " {}", go_float(s.value));
            if let Some(t) = s.ms {
                let _ = write!(out, " {t}");
            }
            out.push('\n');
        }
    }
    out
}

/// The series' labels in name order (the family without base labels has none).
fn labels(s: &Series) -> Vec<(&'static str, &str)> {
    if s.base.iter().all(String::is_empty) && s.extra.is_none() {
        return Vec::new();
    }
    let mut ls: Vec<(&'static str, &str)> = BASE
        .iter()
        .zip(s.base.iter())
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    if let Some((k, v)) = &s.extra {
        ls.push((k, v.as_str()));
    }
    ls.sort_by_key(|(k, _)| *k);
    ls
}

/// A label value escaped for the text format.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::ContainerIdentity;
    use crate::stats::summary::*;

    fn time(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn summary() -> Summary {
        serde_json::from_value(serde_json::json!({
            "node": {
                "nodeName": "n",
                "startTime": "2026-12-02T10:00:00Z",
                "cpu": {"time": "2026-12-02T10:00:10Z", "usageCoreNanoSeconds": 2_500_000_000u64},
                "memory": {"time": "2026-12-02T10:00:10Z", "usageBytes": 100, "workingSetBytes": 80,
                           "rssBytes": 50},
            },
            "pods": [{
                "podRef": {"name": "web", "namespace": "default", "uid": "u1"},
                "startTime": "2026-12-02T10:00:01Z",
                "cpu": {"time": "2026-12-02T10:00:10Z", "usageCoreNanoSeconds": 1_000_000_000u64},
                "network": {"time": "2026-12-02T10:00:10Z", "name": "eth0", "rxBytes": 7,
                            "txBytes": 9, "interfaces": [{"name": "eth0", "rxBytes": 7, "txBytes": 9}]},
                "containers": [{
                    "name": "main",
                    "startTime": "2026-12-02T10:00:02Z",
                    "cpu": {"time": "2026-12-02T10:00:10Z", "usageCoreNanoSeconds": 500_000_000u64},
                    "memory": {"time": "2026-12-02T10:00:10Z", "workingSetBytes": 4096,
                               "psi": {"full": {"total": 1_500_000, "avg10": 0.5, "avg60": 0.1, "avg300": 0.0},
                                       "some": {"total": 2_500_000, "avg10": 0.7, "avg60": 0.2, "avg300": 0.0}}},
                    "io": {"time": "2026-12-02T10:00:10Z",
                           "psi": {"full": {"total": 0, "avg10": 0.0, "avg60": 0.0, "avg300": 0.0},
                                   "some": {"total": 250, "avg10": 0.0, "avg60": 0.0, "avg300": 0.0}}},
                }],
            }],
        }))
        .unwrap()
    }

    fn ids() -> Identities {
        let mut ids = Identities::default();
        ids.pod_cgroups
            .insert("u1".into(), "/kubepods/burstable/podu1".into());
        ids.containers.insert(
            ("u1".into(), "main".into()),
            ContainerIdentity {
                id: "abc".into(),
                image_ref: "sha256:1".into(),
                cgroup: Some("/kubepods/burstable/podu1/abc".into()),
            },
        );
        ids
    }

    #[test]
    fn series_of_the_node_pods_and_containers_with_cadvisors_labels() {
        let images = Images::from([(("u1".into(), "main".into()), "busybox:1".into())]);
        let now = time(1_796_205_620).0.as_millisecond();
        let text = encode(Some(&summary()), &ids(), &images, now);
        let want_lines = [
            "# HELP container_cpu_usage_seconds_total Cumulative cpu time consumed in seconds.",
            "# TYPE container_cpu_usage_seconds_total counter",
            r#"container_cpu_usage_seconds_total{container="",cpu="total",id="/",image="",name="",namespace="",pod=""} 2.5 1796205610000"#,
            r#"container_cpu_usage_seconds_total{container="",cpu="total",id="/kubepods/burstable/podu1",image="",name="",namespace="default",pod="web"} 1 1796205610000"#,
            r#"container_cpu_usage_seconds_total{container="main",cpu="total",id="/kubepods/burstable/podu1/abc",image="busybox:1",name="abc",namespace="default",pod="web"} 0.5 1796205610000"#,
            r#"container_memory_working_set_bytes{container="main",id="/kubepods/burstable/podu1/abc",image="busybox:1",name="abc",namespace="default",pod="web"} 4096 1796205610000"#,
            r#"container_network_receive_bytes_total{container="",id="/kubepods/burstable/podu1",image="",interface="eth0",name="",namespace="default",pod="web"} 7 1796205610000"#,
            "# TYPE container_pressure_memory_stalled_seconds_total counter",
            r#"container_pressure_memory_stalled_seconds_total{container="main",id="/kubepods/burstable/podu1/abc",image="busybox:1",name="abc",namespace="default",pod="web"} 1.5 1796205610000"#,
            r#"container_pressure_memory_waiting_seconds_total{container="main",id="/kubepods/burstable/podu1/abc",image="busybox:1",name="abc",namespace="default",pod="web"} 2.5 1796205610000"#,
            r#"container_pressure_io_stalled_seconds_total{container="main",id="/kubepods/burstable/podu1/abc",image="busybox:1",name="abc",namespace="default",pod="web"} 0 1796205610000"#,
            r#"container_pressure_io_waiting_seconds_total{container="main",id="/kubepods/burstable/podu1/abc",image="busybox:1",name="abc",namespace="default",pod="web"} 0.00025 1796205610000"#,
            r#"container_start_time_seconds{container="main",id="/kubepods/burstable/podu1/abc",image="busybox:1",name="abc",namespace="default",pod="web"} 1.796205602e+09"#,
            "container_scrape_error 0",
        ];
        for l in want_lines {
            assert!(text.lines().any(|t| t == l), "missing {l}\n{text}");
        }
        // Pressure only where it was read: none for the CPU here, none for the pod.
        assert!(!text.contains("container_pressure_cpu"), "{text}");
        assert!(
            !text
                .lines()
                .any(|l| l.starts_with("container_pressure") && l.contains(r#"container="""#)),
            "{text}"
        );
        // Families sorted by name, each HELP and TYPE once.
        let names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .map(|l| l.split(' ').next().unwrap_or_default())
            .collect();
        let mut sorted = names.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(names, sorted);
    }

    #[test]
    fn without_a_sample_only_the_scrape_error() {
        let text = encode(None, &Identities::default(), &Images::new(), 0);
        assert_eq!(
            text,
            "# HELP container_scrape_error 1 if there was an error while getting container metrics, 0 otherwise\n# TYPE container_scrape_error gauge\ncontainer_scrape_error 1\n"
        );
    }
}
