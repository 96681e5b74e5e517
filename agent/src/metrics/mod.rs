//! Bosun's own metrics, served on `/metrics`: one prometheus-client registry, named as the
//! kubelet's where the kubelet has the same metric (pod start SLI, CRI operation latency, pod
//! worker latency, API client requests, process metrics), so dashboards built for the kubelet
//! keep working.

pub mod probes;
mod process;
pub mod rest;

use std::sync::LazyLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, PodStatus};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `Content-Type` of `/metrics` (Prometheus text format 0.0.4, as the kubelet serves it).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The `operation_type` label of runtime and pod worker metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Operation {
    /// The kubelet's name of the operation (`create_container`, `sync`, ...).
    pub operation_type: &'static str,
}

/// The `eviction_signal` label of `kubelet_evictions_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EvictionSignal {
    /// The signal whose threshold the eviction reclaimed for (`memory.available`, ...).
    pub eviction_signal: &'static str,
}

/// The labels of `rest_client_requests_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RestRequest {
    /// HTTP status code, or `<error>` when no response came.
    pub code: String,
    /// API server host:port.
    pub host: String,
    /// HTTP method.
    pub method: String,
}

pub(crate) type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Every metric bosun records, and the registry that serves them.
pub struct Metrics {
    registry: Registry,
    /// kubelet_pod_start_sli_duration_seconds.
    pub pod_start_sli_duration: Histogram,
    /// kubelet_runtime_operations_total{operation_type}.
    pub runtime_operations: Family<Operation, Counter>,
    /// kubelet_runtime_operations_errors_total{operation_type}.
    pub runtime_operations_errors: Family<Operation, Counter>,
    /// kubelet_runtime_operations_duration_seconds{operation_type}.
    pub runtime_operations_duration: HistogramFamily<Operation>,
    /// kubelet_pod_worker_duration_seconds{operation_type}.
    pub pod_worker_duration: HistogramFamily<Operation>,
    /// rest_client_requests_total{code,host,method}.
    pub rest_client_requests: Family<RestRequest, Counter>,
    /// bosun_prober_probe_lag_seconds: how late probes start after their scheduled time.
    pub probe_lag: Histogram,
    /// kubelet_evictions_total{eviction_signal}.
    pub evictions: Family<EvictionSignal, Counter>,
    /// kubelet_graceful_shutdown_start_time_seconds: when the last graceful node shutdown
    /// started, Unix seconds (0: none recorded).
    pub graceful_shutdown_start_time: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// kubelet_graceful_shutdown_end_time_seconds: when it ended (0: not yet).
    pub graceful_shutdown_end_time: Gauge<f64, std::sync::atomic::AtomicU64>,
}

/// Prometheus' default buckets (client_golang DefBuckets), the kubelet's for pod worker latency.
pub(crate) const DEF_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The kubelet's buckets of the pod start SLI.
const POD_START_BUCKETS: [f64; 25] = [
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 20.0, 30.0, 45.0, 60.0, 120.0, 180.0, 240.0,
    300.0, 360.0, 480.0, 600.0, 900.0, 1200.0, 1800.0, 2700.0, 3600.0,
];

fn runtime_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.005, 2.5, 14))
}

fn worker_histogram() -> Histogram {
    Histogram::new(DEF_BUCKETS)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::default();
        let m = Metrics {
            pod_start_sli_duration: Histogram::new(POD_START_BUCKETS),
            runtime_operations: Family::default(),
            runtime_operations_errors: Family::default(),
            runtime_operations_duration: Family::new_with_constructor(runtime_histogram),
            pod_worker_duration: Family::new_with_constructor(worker_histogram),
            rest_client_requests: Family::default(),
            probe_lag: Histogram::new(exponential_buckets(0.001, 2.0, 12)),
            evictions: Family::default(),
            graceful_shutdown_start_time: Gauge::default(),
            graceful_shutdown_end_time: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "kubelet_pod_start_sli_duration_seconds",
            "[ALPHA] Duration in seconds to start a pod, excluding time to pull images and run \
             init containers, measured from pod creation timestamp to when all its containers \
             are reported as started and observed via watch",
            m.pod_start_sli_duration.clone(),
        );
        registry.register(
            "kubelet_runtime_operations",
            "[ALPHA] Cumulative number of runtime operations by operation type",
            m.runtime_operations.clone(),
        );
        registry.register(
            "kubelet_runtime_operations_errors",
            "[ALPHA] Cumulative number of runtime operation errors by operation type",
            m.runtime_operations_errors.clone(),
        );
        registry.register(
            "kubelet_runtime_operations_duration_seconds",
            "[ALPHA] Duration in seconds of runtime operations. Broken down by operation type",
            m.runtime_operations_duration.clone(),
        );
        registry.register(
            "kubelet_pod_worker_duration_seconds",
            "[ALPHA] Duration in seconds to sync a single pod. Broken down by operation type: \
             create, update, or sync",
            m.pod_worker_duration.clone(),
        );
        registry.register(
            "rest_client_requests",
            "[ALPHA] Number of HTTP requests, partitioned by status code, method, and host",
            m.rest_client_requests.clone(),
        );
        registry.register(
            "kubelet_evictions",
            "[ALPHA] Cumulative number of pod evictions by eviction signal",
            m.evictions.clone(),
        );
        // The kubelet registers these with GracefulNodeShutdown and
        // GracefulNodeShutdownBasedOnPodPriority, both on by default.
        registry.register(
            "kubelet_graceful_shutdown_start_time_seconds",
            "[ALPHA] Last graceful shutdown start time since unix epoch in seconds",
            m.graceful_shutdown_start_time.clone(),
        );
        registry.register(
            "kubelet_graceful_shutdown_end_time_seconds",
            "[ALPHA] Last graceful shutdown end time since unix epoch in seconds",
            m.graceful_shutdown_end_time.clone(),
        );
        registry.register(
            "bosun_prober_probe_lag_seconds",
            "Delay between a probe's scheduled time and its start",
            m.probe_lag.clone(),
        );
        registry.register_collector(Box::new(process::ProcessCollector::new()));
        Metrics { registry, ..m }
    }

    /// The metrics in the Prometheus text format.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry);
        out
    }

    /// Records one CRI call: `method` is the CRI method name (`CreateContainer`).
    pub fn observe_cri(&self, method: &str, elapsed: Duration, ok: bool) {
        let op = Operation {
            operation_type: cri_operation_type(method),
        };
        self.runtime_operations.get_or_create(&op).inc();
        if !ok {
            self.runtime_operations_errors.get_or_create(&op).inc();
        }
        self.runtime_operations_duration
            .get_or_create(&op)
            .observe(elapsed.as_secs_f64());
    }

    /// Records one pod worker sync of kind `operation_type` (`create`, `update`, `sync`).
    pub fn observe_pod_sync(&self, operation_type: &'static str, elapsed: Duration) {
        self.pod_worker_duration
            .get_or_create(&Operation { operation_type })
            .observe(elapsed.as_secs_f64());
    }

    /// Records one API request.
    pub fn observe_api_request(&self, method: &str, host: &str, code: Option<u16>) {
        self.rest_client_requests
            .get_or_create(&RestRequest {
                code: code.map_or_else(|| "<error>".into(), |c| c.to_string()),
                host: host.to_string(),
                method: method.to_string(),
            })
            .inc();
    }

    /// Records the pod start SLI once all of `pod`'s containers run: from its creation to now,
    /// less `pulling` (the time spent pulling its images). Returns true when recorded.
    pub fn observe_pod_started(&self, pod: &Pod, status: &PodStatus, pulling: Duration) -> bool {
        let Some(created) = &pod.metadata.creation_timestamp else {
            return false;
        };
        let statuses = status.container_statuses.as_deref().unwrap_or_default();
        let want = pod.spec.as_ref().map_or(0, |s| s.containers.len());
        let all_started = want > 0
            && statuses.len() == want
            && statuses
                .iter()
                .all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
        if !all_started {
            return false;
        }
        let since = k8s_openapi::jiff::Timestamp::now().duration_since(created.0);
        let secs = since.as_secs_f64() - pulling.as_secs_f64();
        self.pod_start_sli_duration.observe(secs.max(0.0));
        true
    }
}

/// One pod's start SLI, tracked by its worker: the time its images took to pull, and whether this
/// worker started a container at all (a pod found running after a restart of bosun is not
/// measured, as the kubelet does not measure pods it did not start).
#[derive(Debug, Default)]
pub struct PodStartTracker {
    pulling: Duration,
    started_container: bool,
    recorded: bool,
}

impl PodStartTracker {
    /// An image pull of this pod took `took`.
    pub fn pulled(&mut self, took: Duration) {
        self.pulling += took;
    }

    /// This worker started one of the pod's containers.
    pub fn container_started(&mut self) {
        self.started_container = true;
    }

    /// The pod has `status` now: records the SLI the first time all its containers run.
    pub fn status(&mut self, pod: &Pod, status: &PodStatus) {
        if self.started_container && !self.recorded {
            self.recorded = global().observe_pod_started(pod, status, self.pulling);
        }
    }
}

/// The kubelet's `operation_type` for a CRI method (its instrumented runtime service's names).
pub fn cri_operation_type(method: &str) -> &'static str {
    match method {
        "Version" => "version",
        "Status" => "status",
        "RunPodSandbox" => "run_podsandbox",
        "StopPodSandbox" => "stop_podsandbox",
        "RemovePodSandbox" => "remove_podsandbox",
        "PodSandboxStatus" => "podsandbox_status",
        "ListPodSandbox" => "list_podsandbox",
        "PodSandboxStats" => "podsandbox_stats",
        "ListPodSandboxStats" => "list_podsandbox_stats",
        "CreateContainer" => "create_container",
        "StartContainer" => "start_container",
        "StopContainer" => "stop_container",
        "RemoveContainer" => "remove_container",
        "ContainerStatus" => "container_status",
        "ListContainers" => "list_containers",
        "ContainerStats" => "container_stats",
        "ListContainerStats" => "list_container_stats",
        "UpdateContainerResources" => "update_container",
        "ReopenContainerLog" => "reopen_container_log",
        "ExecSync" => "exec_sync",
        "Exec" => "exec",
        "Attach" => "attach",
        "PortForward" => "port_forward",
        "UpdateRuntimeConfig" => "update_runtime_config",
        "GetContainerEvents" => "get_container_events",
        "ListMetricDescriptors" => "list_metric_descriptors",
        "ListPodSandboxMetrics" => "list_podsandbox_metrics",
        "RuntimeConfig" => "runtime_config",
        "PullImage" => "pull_image",
        "ImageStatus" => "image_status",
        "ListImages" => "list_images",
        "RemoveImage" => "remove_image",
        "ImageFsInfo" => "image_fs_info",
        _ => "other",
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process-wide metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_kubelet_names() {
        let m = Metrics::new();
        m.observe_cri("CreateContainer", Duration::from_millis(20), true);
        m.observe_cri("PullImage", Duration::from_secs(2), false);
        m.observe_pod_sync("create", Duration::from_millis(300));
        m.observe_api_request("GET", "127.0.0.1:6443", Some(200));
        let text = m.encode();
        for want in [
            "# TYPE kubelet_runtime_operations_total counter",
            "kubelet_runtime_operations_total{operation_type=\"create_container\"} 1",
            "kubelet_runtime_operations_errors_total{operation_type=\"pull_image\"} 1",
            "kubelet_runtime_operations_duration_seconds_bucket{operation_type=\"create_container\",le=\"0.03125\"} 1",
            "kubelet_pod_worker_duration_seconds_count{operation_type=\"create\"} 1",
            "rest_client_requests_total{code=\"200\",host=\"127.0.0.1:6443\",method=\"GET\"} 1",
            "# TYPE kubelet_pod_start_sli_duration_seconds histogram",
            "# TYPE process_cpu_seconds_total counter",
            "# TYPE process_resident_memory_bytes gauge",
            "# TYPE process_start_time_seconds gauge",
        ] {
            assert!(text.contains(want), "missing {want:?} in:\n{text}");
        }
    }

    #[test]
    fn cri_names() {
        assert_eq!(cri_operation_type("ListPodSandbox"), "list_podsandbox");
        assert_eq!(
            cri_operation_type("UpdateContainerResources"),
            "update_container"
        );
    }
}
