//! What an evicted pod is told, as the kubelet's evictionMessage (pkg/kubelet/eviction/helpers.go):
//! "The node was low on resource: memory. Threshold quantity: 100Mi, available: 51200Ki. " and,
//! for each container using more than it requested, "Container c was using 300Mi, request is
//! 100Mi, has larger consumption of memory. ", with the Evicted event's annotations naming
//! those containers, their usage and the starved resource. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Pod;

use super::signals::Observations;
use crate::config::eviction::{Signal, Threshold, ThresholdValue};
use crate::resource::{Amount, Format, parse_quantity};
use crate::stats::summary::PodStats;

/// The resource a signal starves (the kubelet's signalToResource): `memory`,
/// `ephemeral-storage`, `inodes` or `pids`.
pub fn resource_of(signal: Signal) -> &'static str {
    match signal {
        Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => "memory",
        Signal::NodeFsAvailable | Signal::ImageFsAvailable | Signal::ContainerFsAvailable => {
            "ephemeral-storage"
        }
        Signal::NodeFsInodesFree | Signal::ImageFsInodesFree | Signal::ContainerFsInodesFree => {
            "inodes"
        }
        Signal::PidAvailable => "pids",
    }
}

/// A threshold's quantity as Go prints it: a percentage becomes whole bytes (BinarySI, even for
/// inodes, as GetThresholdQuantity); a configured quantity keeps its suffix family (binary when
/// it is a whole number of KiB, an approximation of the parsed format).
fn threshold_text(value: ThresholdValue, capacity: i64) -> String {
    let milli = value.milli_of(capacity);
    let format = match value {
        ThresholdValue::Percentage(_) => Format::BinarySi,
        ThresholdValue::Quantity(m) if m % (1024 * 1000) == 0 => Format::BinarySi,
        ThresholdValue::Quantity(_) => Format::DecimalSi,
    };
    Amount { milli, format }.canonical()
}

/// Bytes (BinarySI) or a count (DecimalSI), as Go prints them.
fn amount(value: i128, resource: &str) -> String {
    let format = if matches!(resource, "memory" | "ephemeral-storage") {
        Format::BinarySi
    } else {
        Format::DecimalSi
    };
    Amount::units(value, format).canonical()
}

/// The kubelet's key (helpers.go OffendingContainersKey) for the containers using more than
/// they requested, comma-separated.
pub const OFFENDING_CONTAINERS: &str = "offending_containers";
/// The kubelet's key (OffendingContainersUsageKey) for those containers' usage, in their order.
pub const OFFENDING_CONTAINERS_USAGE: &str = "offending_containers_usage";
/// The kubelet's key (StarvedResourceKey) for the resource reclaimed.
pub const STARVED_RESOURCE: &str = "starved_resource";

/// Annotations of the Evicted event, by key.
pub type Annotations = BTreeMap<String, String>;

/// The kubelet's evictionMessage for `pod`, reclaiming `resource` under `thresholds` (those
/// acted on) with `observations`: the message, container usage named when the pod has stats,
/// and the event's annotations ([`OFFENDING_CONTAINERS`], [`OFFENDING_CONTAINERS_USAGE`],
/// [`STARVED_RESOURCE`]; none without stats, as the kubelet returns early then).
pub fn eviction_message(
    resource: &str,
    pod: &Pod,
    stats: Option<&PodStats>,
    thresholds: &[Threshold],
    observations: &Observations,
) -> (String, Annotations) {
    let mut message = format!("The node was low on resource: {resource}. ");
    let met = thresholds
        .iter()
        .filter(|t| resource_of(t.signal) == resource)
        .find_map(|t| observations.get(&t.signal).map(|o| (t, o)));
    if let Some((t, o)) = met {
        message += &format!(
            "Threshold quantity: {}, available: {}. ",
            threshold_text(t.value, o.capacity),
            amount(i128::from(o.available), resource)
        );
    }
    let Some(stats) = stats else {
        return (message, Annotations::new());
    };
    let (mut offending, mut usages) = (Vec::new(), Vec::new());
    let no_spec = Default::default();
    let spec = pod.spec.as_ref().unwrap_or(&no_spec);
    let containers: Vec<_> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .collect();
    for cs in &stats.containers {
        let Some(c) = containers.iter().find(|c| c.name == cs.name) else {
            continue;
        };
        let request = c
            .resources
            .as_ref()
            .and_then(|r| r.requests.as_ref())
            .and_then(|r| r.get(resource))
            .map(|q| q.0.clone());
        let request_milli = request
            .as_deref()
            .and_then(|q| parse_quantity(q).ok())
            .map_or(0, |q| i128::from(q.milli_value()));
        let usage = match resource {
            "memory" => cs
                .memory
                .as_ref()
                .and_then(|m| m.working_set_bytes)
                .map(i128::from),
            "ephemeral-storage" => {
                let used =
                    |f: Option<&crate::stats::summary::FsStats>| f.and_then(|f| f.used_bytes);
                match (used(cs.rootfs.as_ref()), used(cs.logs.as_ref())) {
                    (Some(r), Some(l)) => Some(i128::from(r) + i128::from(l)),
                    _ => None,
                }
            }
            _ => None,
        };
        if let Some(usage) = usage
            && usage * 1000 > request_milli
        {
            // An absent request prints as Go's zero Quantity, "0".
            let request = request.unwrap_or_else(|| "0".into());
            let usage = amount(usage, resource);
            message += &format!(
                "Container {} was using {usage}, request is {request}, has larger consumption of {resource}. ",
                c.name,
            );
            offending.push(c.name.clone());
            usages.push(usage);
        }
    }
    let annotations = [
        (OFFENDING_CONTAINERS, offending.join(",")),
        (OFFENDING_CONTAINERS_USAGE, usages.join(",")),
        (STARVED_RESOURCE, resource.to_string()),
    ];
    let annotations = annotations
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    (message, annotations)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eviction::signals::Observation;
    use std::time::Duration;

    const T: &str = "2026-12-02T20:00:00Z";
    const MI: u64 = 1 << 20;

    fn threshold(signal: Signal, value: ThresholdValue) -> Threshold {
        Threshold {
            signal,
            value,
            grace_period: Duration::ZERO,
            min_reclaim: None,
        }
    }

    #[test]
    fn messages_as_the_kubelet_writes_them() {
        let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {"containers": [
            {"name": "hog", "resources": {"requests": {"memory": "100Mi"}}},
            {"name": "calm", "resources": {"requests": {"memory": "1Gi"}}},
            {"name": "none"}
        ]}}))
        .unwrap();
        let stats: PodStats = serde_json::from_value(serde_json::json!({
            "podRef": {"name": "p", "namespace": "default", "uid": "u"}, "startTime": T,
            "containers": [
                {"name": "hog", "startTime": T, "memory": {"time": T, "workingSetBytes": 300 * MI},
                 "rootfs": {"time": T, "usedBytes": 10 * MI}, "logs": {"time": T, "usedBytes": 2 * MI}},
                {"name": "calm", "startTime": T, "memory": {"time": T, "workingSetBytes": 200 * MI}},
                {"name": "none", "startTime": T, "memory": {"time": T, "workingSetBytes": 1000}}
            ]
        }))
        .unwrap();
        let mem = threshold(
            Signal::MemoryAvailable,
            ThresholdValue::Quantity(100 * 1024 * 1024 * 1000),
        );
        let disk = threshold(Signal::NodeFsAvailable, ThresholdValue::Percentage(0.1));
        let obs: Observations = [
            (
                Signal::MemoryAvailable,
                Observation {
                    available: 50 * 1024 * 1024,
                    capacity: 4 << 30,
                },
            ),
            (
                Signal::NodeFsAvailable,
                Observation {
                    available: 1 << 30,
                    capacity: 20 << 30,
                },
            ),
        ]
        .into();
        let annotations = |pairs: &[(&str, &str)]| -> Annotations {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert_eq!(
            eviction_message("memory", &pod, Some(&stats), &[disk, mem], &obs),
            (
                "The node was low on resource: memory. Threshold quantity: 100Mi, available: 50Mi. \
                 Container hog was using 300Mi, request is 100Mi, has larger consumption of memory. \
                 Container none was using 1k, request is 0, has larger consumption of memory. "
                    .to_string(),
                annotations(&[
                    ("offending_containers", "hog,none"),
                    ("offending_containers_usage", "300Mi,1k"),
                    ("starved_resource", "memory"),
                ])
            )
        );
        // 10% of 20 GiB in float32 arithmetic is 2147483680 bytes: not a whole KiB.
        assert_eq!(
            eviction_message("ephemeral-storage", &pod, Some(&stats), &[disk, mem], &obs),
            (
                "The node was low on resource: ephemeral-storage. Threshold quantity: 2147483680, \
                 available: 1Gi. Container hog was using 12Mi, request is 0, has larger consumption \
                 of ephemeral-storage. "
                    .to_string(),
                annotations(&[
                    ("offending_containers", "hog"),
                    ("offending_containers_usage", "12Mi"),
                    ("starved_resource", "ephemeral-storage"),
                ])
            )
        );
        // No container usage for inodes or pids: the keys are there, the lists empty.
        assert_eq!(
            eviction_message("pids", &pod, Some(&stats), &[mem], &obs).1,
            annotations(&[
                ("offending_containers", ""),
                ("offending_containers_usage", ""),
                ("starved_resource", "pids"),
            ])
        );
        // Without the pod's stats the kubelet returns before any annotation.
        assert_eq!(
            eviction_message("memory", &pod, None, &[mem], &Observations::new()),
            (
                "The node was low on resource: memory. ".to_string(),
                Annotations::new()
            )
        );
    }
}
