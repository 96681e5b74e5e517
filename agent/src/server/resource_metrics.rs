//! `/metrics/resource`: the kubelet's resource metrics, derived from the latest Summary exactly as
//! its resource metrics collector does (names, `[STABLE]`/`[ALPHA]` help, labels `container`,
//! `namespace`, `pod`, per-sample timestamps in milliseconds, `resource_scrape_error`). Families
//! are sorted by name and series by label values, and values are printed as Go prints them, so
//! the text matches the kubelet's byte for byte for the same numbers. The deprecated
//! `scrape_error` (since 1.29) is hidden in the kubelet of this version, so it is not served.

use std::fmt::Write;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::stats::summary::{ContainerStats, NodeStats, PodStats, Summary};

/// `Content-Type` of `/metrics/resource` (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// One family: name, help, type.
struct Desc(&'static str, &'static str, &'static str);

const CONTAINER_CPU: Desc = Desc(
    "container_cpu_usage_seconds_total",
    "[STABLE] Cumulative cpu time consumed by the container in core-seconds",
    "counter",
);
const CONTAINER_MEMORY: Desc = Desc(
    "container_memory_working_set_bytes",
    "[STABLE] Current working set of the container in bytes",
    "gauge",
);
const CONTAINER_START: Desc = Desc(
    "container_start_time_seconds",
    "[STABLE] Start time of the container since unix epoch in seconds",
    "gauge",
);
const CONTAINER_SWAP_LIMIT: Desc = Desc(
    "container_swap_limit_bytes",
    "[ALPHA] Current amount of the container swap limit in bytes. Reported only on non-windows systems",
    "gauge",
);
const CONTAINER_SWAP: Desc = Desc(
    "container_swap_usage_bytes",
    "[ALPHA] Current amount of the container swap usage in bytes. Reported only on non-windows systems",
    "gauge",
);
const NODE_CPU: Desc = Desc(
    "node_cpu_usage_seconds_total",
    "[STABLE] Cumulative cpu time consumed by the node in core-seconds",
    "counter",
);
const NODE_MEMORY: Desc = Desc(
    "node_memory_working_set_bytes",
    "[STABLE] Current working set of the node in bytes",
    "gauge",
);
const NODE_SWAP: Desc = Desc(
    "node_swap_usage_bytes",
    "[ALPHA] Current swap usage of the node in bytes. Reported only on non-windows systems",
    "gauge",
);
const POD_CPU: Desc = Desc(
    "pod_cpu_usage_seconds_total",
    "[STABLE] Cumulative cpu time consumed by the pod in core-seconds",
    "counter",
);
const POD_MEMORY: Desc = Desc(
    "pod_memory_working_set_bytes",
    "[STABLE] Current working set of the pod in bytes",
    "gauge",
);
const POD_SWAP: Desc = Desc(
    "pod_swap_usage_bytes",
    "[ALPHA] Current amount of the pod swap usage in bytes. Reported only on non-windows systems",
    "gauge",
);
const SCRAPE_ERROR: Desc = Desc(
    "resource_scrape_error",
    "[STABLE] 1 if there was an error while getting container metrics, 0 otherwise",
    "gauge",
);

/// One series: label values (container, namespace, pod; absent ones skipped), value, timestamp.
struct Series {
    labels: Vec<(&'static str, String)>,
    value: f64,
    timestamp_ms: Option<i64>,
}

fn ms(t: &Time) -> i64 {
    t.0.as_millisecond()
}

fn container_labels(pod: &PodStats, c: &ContainerStats) -> Vec<(&'static str, String)> {
    vec![
        ("container", c.name.clone()),
        ("namespace", pod.pod_ref.namespace.clone()),
        ("pod", pod.pod_ref.name.clone()),
    ]
}

fn pod_labels(pod: &PodStats) -> Vec<(&'static str, String)> {
    vec![
        ("namespace", pod.pod_ref.namespace.clone()),
        ("pod", pod.pod_ref.name.clone()),
    ]
}

/// A float as Go's `strconv.FormatFloat(v, 'g', -1, 64)` writes it (the Prometheus Go client's
/// format): the shortest digits, in exponent form when the exponent is below -4 or at least 6.
pub fn go_float(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        };
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0" } else { "0" }.into();
    }
    let sci = format!("{v:e}");
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if (-4..6).contains(&exp) {
        return format!("{v}");
    }
    let sign = if exp < 0 { '-' } else { '+' };
    format!("{mantissa}e{sign}{:02}", exp.abs())
}

/// The metric families of one scrape, in the order their first series came.
#[derive(Default)]
struct Families(Vec<(Desc, Vec<Series>)>);

impl Families {
    /// Adds a series to the family `d`.
    fn add(&mut self, d: Desc, s: Series) {
        match self.0.iter_mut().find(|(f, _)| f.0 == d.0) {
            Some((_, v)) => v.push(s),
            None => self.0.push((d, vec![s])),
        }
    }

    /// Adds a series with `labels`, `value` and the time of its sample.
    fn sample(&mut self, d: Desc, labels: Vec<(&'static str, String)>, value: f64, t: &Time) {
        let timestamp_ms = Some(ms(t));
        self.add(
            d,
            Series {
                labels,
                value,
                timestamp_ms,
            },
        );
    }
}

/// Encodes the resource metrics of `summary`; None (no sample yet) gives the scrape error alone.
pub fn encode(summary: Option<&Summary>) -> String {
    let mut families = Families::default();
    let scrape_error = if summary.is_some() { 0.0 } else { 1.0 };
    if let Some(s) = summary {
        add_node(&mut families, &s.node);
        for pod in &s.pods {
            for c in &pod.containers {
                add_container(&mut families, pod, c);
            }
            add_pod(&mut families, pod);
        }
    }
    families.add(
        SCRAPE_ERROR,
        Series {
            labels: vec![],
            value: scrape_error,
            timestamp_ms: None,
        },
    );
    write_text(families)
}

/// The node's CPU, memory and swap.
fn add_node(families: &mut Families, node: &NodeStats) {
    if let Some(cpu) = &node.cpu
        && let Some(ns) = cpu.usage_core_nano_seconds
    {
        families.sample(NODE_CPU, vec![], ns as f64 / 1e9, &cpu.time);
    }
    if let Some(mem) = &node.memory
        && let Some(ws) = mem.working_set_bytes
    {
        families.sample(NODE_MEMORY, vec![], ws as f64, &mem.time);
    }
    if let Some(swap) = &node.swap
        && let Some(used) = swap.swap_usage_bytes
    {
        // The kubelet stamps the node's swap with the memory sample's time.
        let t = node.memory.as_ref().map_or(&swap.time, |m| &m.time);
        families.sample(NODE_SWAP, vec![], used as f64, t);
    }
}

/// A container's start time, CPU, memory, swap and swap limit.
fn add_container(families: &mut Families, pod: &PodStats, c: &ContainerStats) {
    let start = c.start_time.0;
    if start.as_second() > 0 {
        families.add(
            CONTAINER_START,
            Series {
                labels: container_labels(pod, c),
                value: start.as_nanosecond() as f64 / 1e9,
                timestamp_ms: None,
            },
        );
    }
    if let Some(cpu) = &c.cpu
        && let Some(ns) = cpu.usage_core_nano_seconds
    {
        let labels = container_labels(pod, c);
        families.sample(CONTAINER_CPU, labels, ns as f64 / 1e9, &cpu.time);
    }
    if let Some(mem) = &c.memory
        && let Some(ws) = mem.working_set_bytes
    {
        let labels = container_labels(pod, c);
        families.sample(CONTAINER_MEMORY, labels, ws as f64, &mem.time);
    }
    if let Some(swap) = &c.swap {
        if let Some(used) = swap.swap_usage_bytes {
            let labels = container_labels(pod, c);
            families.sample(CONTAINER_SWAP, labels, used as f64, &swap.time);
        }
        if let Some(avail) = swap.swap_available_bytes {
            let used = swap.swap_usage_bytes.unwrap_or(0);
            let labels = container_labels(pod, c);
            families.sample(
                CONTAINER_SWAP_LIMIT,
                labels,
                (avail + used) as f64,
                &swap.time,
            );
        }
    }
}

/// A pod's CPU, memory and swap.
fn add_pod(families: &mut Families, pod: &PodStats) {
    if let Some(cpu) = &pod.cpu
        && let Some(ns) = cpu.usage_core_nano_seconds
    {
        families.sample(POD_CPU, pod_labels(pod), ns as f64 / 1e9, &cpu.time);
    }
    if let Some(mem) = &pod.memory
        && let Some(ws) = mem.working_set_bytes
    {
        families.sample(POD_MEMORY, pod_labels(pod), ws as f64, &mem.time);
    }
    if let Some(swap) = &pod.swap
        && let Some(used) = swap.swap_usage_bytes
    {
        families.sample(POD_SWAP, pod_labels(pod), used as f64, &swap.time);
    }
}

/// The Prometheus text format of `families`: families by name, series by labels.
fn write_text(families: Families) -> String {
    let mut families = families.0;
    families.sort_by(|a, b| a.0.0.cmp(b.0.0));
    let mut out =
        String::with_capacity(256 + 200 * families.iter().map(|f| f.1.len()).sum::<usize>());
    for (Desc(name, help, kind), mut series) in families {
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        // Writing into a String cannot fail.
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for s in series {
            out.push_str(name);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape(v));
                }
                out.push('}');
            }
            let _ = write!(out, " {}", go_float(s.value));
            if let Some(t) = s.timestamp_ms {
                let _ = write!(out, " {t}");
            }
            out.push('\n');
        }
    }
    out
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

    #[test]
    fn floats_as_go_prints_them() {
        for (v, want) in [
            (0.0, "0"),
            (1.0, "1"),
            (0.5, "0.5"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (13996032.0, "1.3996032e+07"),
            (1e6, "1e+06"),
            (0.0001, "0.0001"),
            (0.00001234, "1.234e-05"),
            (12.345678901, "12.345678901"),
            (1.7e9, "1.7e+09"),
        ] {
            assert_eq!(go_float(v), want, "{v}");
        }
    }

    fn summary() -> Summary {
        serde_json::from_value(serde_json::json!({
            "node": {
                "nodeName": "n1",
                "startTime": "2026-11-25T10:00:00Z",
                "cpu": {"time": "2026-11-25T12:00:00Z", "usageCoreNanoSeconds": 1_500_000_000u64},
                "memory": {"time": "2026-11-25T12:00:01Z", "workingSetBytes": 13_996_032u64},
            },
            "pods": [{
                "podRef": {"name": "web", "namespace": "default", "uid": "u1"},
                "startTime": "2026-11-25T11:00:00Z",
                "containers": [
                    {"name": "b", "startTime": "2026-11-25T11:00:02Z",
                     "cpu": {"time": "2026-11-25T12:00:00Z", "usageCoreNanoSeconds": 20_000_000u64},
                     "memory": {"time": "2026-11-25T12:00:00Z", "workingSetBytes": 4096u64}},
                    {"name": "a", "startTime": "2026-11-25T11:00:01Z",
                     "cpu": {"time": "2026-11-25T12:00:00Z"}},
                ],
                "cpu": {"time": "2026-11-25T12:00:00Z", "usageCoreNanoSeconds": 30_000_000u64},
                "memory": {"time": "2026-11-25T12:00:00Z", "workingSetBytes": 8192u64},
            }],
        }))
        .unwrap()
    }

    #[test]
    fn encodes_as_the_kubelet() {
        let text = encode(Some(&summary()));
        let want = r#"# HELP container_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the container in core-seconds
# TYPE container_cpu_usage_seconds_total counter
container_cpu_usage_seconds_total{container="b",namespace="default",pod="web"} 0.02 1795608000000
# HELP container_memory_working_set_bytes [STABLE] Current working set of the container in bytes
# TYPE container_memory_working_set_bytes gauge
container_memory_working_set_bytes{container="b",namespace="default",pod="web"} 4096 1795608000000
# HELP container_start_time_seconds [STABLE] Start time of the container since unix epoch in seconds
# TYPE container_start_time_seconds gauge
container_start_time_seconds{container="a",namespace="default",pod="web"} 1.795604401e+09
container_start_time_seconds{container="b",namespace="default",pod="web"} 1.795604402e+09
# HELP node_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the node in core-seconds
# TYPE node_cpu_usage_seconds_total counter
node_cpu_usage_seconds_total 1.5 1795608000000
# HELP node_memory_working_set_bytes [STABLE] Current working set of the node in bytes
# TYPE node_memory_working_set_bytes gauge
node_memory_working_set_bytes 1.3996032e+07 1795608001000
# HELP pod_cpu_usage_seconds_total [STABLE] Cumulative cpu time consumed by the pod in core-seconds
# TYPE pod_cpu_usage_seconds_total counter
pod_cpu_usage_seconds_total{namespace="default",pod="web"} 0.03 1795608000000
# HELP pod_memory_working_set_bytes [STABLE] Current working set of the pod in bytes
# TYPE pod_memory_working_set_bytes gauge
pod_memory_working_set_bytes{namespace="default",pod="web"} 8192 1795608000000
# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise
# TYPE resource_scrape_error gauge
resource_scrape_error 0
"#;
        assert_eq!(text, want);
        assert_eq!(
            encode(None),
            "# HELP resource_scrape_error [STABLE] 1 if there was an error while getting container metrics, 0 otherwise\n\
             # TYPE resource_scrape_error gauge\nresource_scrape_error 1\n"
        );
    }
}
