//! The kubelet's `/metrics/probes` series: `prober_probe_total` by probe type, result,
//! container and pod, and `prober_probe_duration_seconds`, in a registry of their own; a
//! container's series go when its probe stops, as the kubelet deletes them.

use std::sync::LazyLock;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use super::{DEF_BUCKETS, HistogramFamily};

/// The labels of `prober_probe_total`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TotalLabels {
    /// Container name.
    pub container: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Pod UID.
    pub pod_uid: String,
    /// `Liveness`, `Readiness` or `Startup`.
    pub probe_type: &'static str,
    /// `successful`, `failed` or `unknown`.
    pub result: &'static str,
}

/// The labels of `prober_probe_duration_seconds`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DurationLabels {
    /// Container name.
    pub container: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// `Liveness`, `Readiness` or `Startup`.
    pub probe_type: &'static str,
}

/// The identity of one probe of one container, from which its series' labels derive.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeLabels {
    /// `Liveness`, `Readiness` or `Startup`.
    pub probe_type: &'static str,
    /// Container name.
    pub container: String,
    /// Pod name.
    pub pod: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod UID.
    pub pod_uid: String,
}

impl ProbeLabels {
    /// The labels of probe `probe_type` of container `container` of `pod`.
    pub fn new(probe_type: &'static str, container: &str, pod: &Pod) -> Self {
        let m = &pod.metadata;
        ProbeLabels {
            probe_type,
            container: container.to_string(),
            pod: m.name.clone().unwrap_or_default(),
            namespace: m.namespace.clone().unwrap_or_default(),
            pod_uid: m.uid.clone().unwrap_or_default(),
        }
    }

    fn total(&self, result: &'static str) -> TotalLabels {
        TotalLabels {
            container: self.container.clone(),
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            pod_uid: self.pod_uid.clone(),
            probe_type: self.probe_type,
            result,
        }
    }

    fn duration(&self) -> DurationLabels {
        DurationLabels {
            container: self.container.clone(),
            namespace: self.namespace.clone(),
            pod: self.pod.clone(),
            probe_type: self.probe_type,
        }
    }
}

struct ProbeMetrics {
    registry: Registry,
    total: Family<TotalLabels, Counter>,
    duration: HistogramFamily<DurationLabels>,
}

fn def_histogram() -> Histogram {
    Histogram::new(DEF_BUCKETS)
}

static PROBES: LazyLock<ProbeMetrics> = LazyLock::new(|| {
    let mut registry = Registry::default();
    let total = Family::<TotalLabels, Counter>::default();
    let duration: HistogramFamily<DurationLabels> = Family::new_with_constructor(def_histogram);
    registry.register(
        "prober_probe",
        "[BETA] Cumulative number of a liveness, readiness or startup probe for a container by \
         result.",
        total.clone(),
    );
    registry.register(
        "prober_probe_duration_seconds",
        "[ALPHA] Duration in seconds for a probe response.",
        duration.clone(),
    );
    ProbeMetrics {
        registry,
        total,
        duration,
    }
});

/// The series of one probe, their handles kept after first use so a run costs no label hashing
/// (each series is still created only when first counted, as the kubelet's `With`).
#[derive(Debug)]
pub struct ProbeSeries {
    /// Whose series these are.
    pub labels: ProbeLabels,
    successful: Option<Counter>,
    failed: Option<Counter>,
    duration: Option<Histogram>,
}

impl ProbeSeries {
    /// The (not yet created) series of `labels`.
    pub fn new(labels: ProbeLabels) -> Self {
        ProbeSeries {
            labels,
            successful: None,
            failed: None,
            duration: None,
        }
    }

    /// Counts one probe run: its result and, as the kubelet, the duration of a successful one.
    pub fn observe(&mut self, success: bool, took: Duration) {
        let (slot, result) = if success {
            (&mut self.successful, "successful")
        } else {
            (&mut self.failed, "failed")
        };
        let labels = &self.labels;
        slot.get_or_insert_with(|| PROBES.total.get_or_create(&labels.total(result)).clone())
            .inc();
        if success {
            self.duration
                .get_or_insert_with(|| PROBES.duration.get_or_create(&labels.duration()).clone())
                .observe(took.as_secs_f64());
        }
    }

    /// Drops the series (the probe stopped), as the kubelet deletes them.
    pub fn forget(&self) {
        forget(&self.labels);
    }
}

/// Records how late a probe started after its scheduled time (bosun's own series on `/metrics`).
pub fn observe_lag(lag: Duration) {
    super::global().probe_lag.observe(lag.as_secs_f64());
}

/// Drops the series of a probe that stopped.
pub fn forget(labels: &ProbeLabels) {
    for r in ["successful", "failed", "unknown"] {
        PROBES.total.remove(&labels.total(r));
    }
    PROBES.duration.remove(&labels.duration());
}

/// `/metrics/probes` in the Prometheus text format.
pub fn encode() -> String {
    let mut out = String::with_capacity(4096);
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &PROBES.registry);
    out
}
