//! The kubelet's localStorageEviction (eviction_manager.go), pure: every round, whatever the
//! thresholds, a pod is evicted (grace 1 s, no DisruptionTarget condition) when an emptyDir of it
//! uses more than its sizeLimit, when it uses more ephemeral storage than its containers' limits
//! add up to, or when a container's logs (and writable layer, when images share the node's
//! filesystem) exceed the container's own limit; with the kubelet's messages.

use k8s_openapi::api::core::v1::{Container, Pod};

use super::plan::{Eviction, IMMEDIATE_GRACE_SECONDS};
use super::rank::Candidate;
use crate::resource::{Amount, Format, parse_quantity, pod_limit};
use crate::stats::summary::{FsStats, PodStats};

/// The kubelet_evictions label of an emptyDir over its sizeLimit.
pub const EMPTY_DIR_SIGNAL: &str = "emptydirfs.limit";
/// The kubelet_evictions label of a pod over its containers' limits.
pub const POD_SIGNAL: &str = "ephemeralpodfs.limit";
/// The kubelet_evictions label of a container over its limit.
pub const CONTAINER_SIGNAL: &str = "ephemeralcontainerfs.limit";

/// A quantity as Go's Quantity.String() prints the parsed value: binary suffixes stay binary.
fn canonical(q: &str) -> Option<(i128, String)> {
    let parsed = parse_quantity(q).ok()?;
    let format = if q.trim_end().ends_with('i') {
        Format::BinarySi
    } else {
        Format::DecimalSi
    };
    let milli = i128::from(parsed.milli_value());
    Some((milli, Amount { milli, format }.canonical()))
}

/// Bytes used on one filesystem (zero when unknown).
fn used(f: Option<&FsStats>) -> i128 {
    i128::from(f.and_then(|f| f.used_bytes).unwrap_or(0))
}

/// The pod's ephemeral-storage limit string of container `c`, if non-zero.
fn limit_of(c: &Container) -> Option<(i128, String)> {
    let q = c
        .resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("ephemeral-storage")?;
    canonical(&q.0).filter(|(milli, _)| *milli != 0)
}

fn evict(pod: &Pod, message: String) -> Eviction {
    Eviction {
        uid: pod.metadata.uid.clone().unwrap_or_default(),
        reason: super::plan::EVICTED,
        grace_seconds: IMMEDIATE_GRACE_SECONDS,
        message,
        resource: "ephemeral-storage",
        disruption_target: false,
        annotations: Default::default(),
    }
}

/// An emptyDir of the pod over its sizeLimit.
fn empty_dir(pod: &Pod, stats: &PodStats) -> Option<Eviction> {
    let volumes = pod.spec.as_ref()?.volumes.as_ref()?;
    for v in volumes {
        let Some(ed) = &v.empty_dir else { continue };
        let Some((limit, text)) = ed.size_limit.as_ref().and_then(|q| canonical(&q.0)) else {
            continue;
        };
        let Some(vs) = stats.volume_stats.iter().find(|s| s.name == v.name) else {
            continue;
        };
        if limit > 0 && used(Some(&vs.fs)) * 1000 > limit {
            let msg = format!(
                "Usage of EmptyDir volume {:?} exceeds the limit {text:?}. ",
                v.name
            );
            return Some(evict(pod, msg));
        }
    }
    None
}

/// The pod over the sum of its containers' limits.
fn pod_total(pod: &Pod, stats: &PodStats) -> Option<Eviction> {
    let limit = pod_limit(pod, "ephemeral-storage")?;
    let usage = used(stats.ephemeral_storage.as_ref());
    if usage * 1000 <= limit.total {
        return None;
    }
    let spec = pod.spec.as_ref()?;
    let binary = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .find_map(|c| {
            c.resources
                .as_ref()?
                .limits
                .as_ref()?
                .get("ephemeral-storage")
        })
        .is_none_or(|q| q.0.trim_end().ends_with('i'));
    let format = if binary {
        Format::BinarySi
    } else {
        Format::DecimalSi
    };
    let text = Amount {
        milli: limit.total,
        format,
    }
    .canonical();
    let msg =
        format!("Pod ephemeral local storage usage exceeds the total limit of containers {text}. ");
    Some(evict(pod, msg))
}

/// A container (or sidecar) over its own limit.
fn container(pod: &Pod, stats: &PodStats, dedicated_image_fs: bool) -> Option<Eviction> {
    let spec = pod.spec.as_ref()?;
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    let limits: Vec<(&str, (i128, String))> = spec
        .containers
        .iter()
        .chain(sidecars)
        .filter_map(|c| Some((c.name.as_str(), limit_of(c)?)))
        .collect();
    for cs in &stats.containers {
        let mut usage = used(cs.logs.as_ref());
        if !dedicated_image_fs {
            usage += used(cs.rootfs.as_ref());
        }
        let Some((_, (limit, text))) = limits.iter().find(|(n, _)| *n == cs.name) else {
            continue;
        };
        if usage * 1000 > *limit {
            let msg = format!(
                "Container {} exceeded its local ephemeral storage limit {text:?}. ",
                cs.name
            );
            return Some(evict(pod, msg));
        }
    }
    None
}

/// The evictions local storage limits call for among `candidates` (pods without stats are
/// skipped), at most one per pod, each with the kubelet_evictions label of its check; critical
/// pods are never evicted.
pub fn evictions(
    candidates: &[Candidate<'_>],
    dedicated_image_fs: bool,
) -> Vec<(Eviction, &'static str)> {
    let mut out = Vec::new();
    for c in candidates {
        let Some(stats) = c.stats else { continue };
        if super::is_critical(c.pod) {
            continue;
        }
        let found = empty_dir(c.pod, stats)
            .map(|e| (e, EMPTY_DIR_SIGNAL))
            .or_else(|| pod_total(c.pod, stats).map(|e| (e, POD_SIGNAL)))
            .or_else(|| container(c.pod, stats, dedicated_image_fs).map(|e| (e, CONTAINER_SIGNAL)));
        out.extend(found);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: &str = "2026-12-02T20:00:00Z";

    fn pod(name: &str, spec: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "namespace": "default", "uid": name},
            "spec": spec,
        }))
        .unwrap()
    }

    fn stats(name: &str, rootfs: u64, logs: u64, volume: u64, total: u64) -> PodStats {
        serde_json::from_value(serde_json::json!({
            "podRef": {"name": name, "namespace": "default", "uid": name},
            "startTime": T,
            "containers": [{"name": "c", "startTime": T,
                "rootfs": {"time": T, "usedBytes": rootfs},
                "logs": {"time": T, "usedBytes": logs}}],
            "volume": [{"time": T, "name": "data", "usedBytes": volume}],
            "ephemeral-storage": {"time": T, "usedBytes": total}
        }))
        .unwrap()
    }

    const MI: u64 = 1 << 20;

    #[test]
    fn limits_and_messages_as_the_kubelet() {
        let limited = |limit: &str| {
            serde_json::json!({"containers": [{"name": "c", "image": "i",
                "resources": {"limits": {"ephemeral-storage": limit}}}],
                "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "10Mi"}}]})
        };
        type Case = (
            &'static str,
            Pod,
            PodStats,
            bool,
            Option<(&'static str, &'static str)>,
        );
        let cases: Vec<Case> = vec![
            (
                "within every limit",
                pod("ok", limited("100Mi")),
                stats("ok", MI, MI, 5 * MI, 7 * MI),
                false,
                None,
            ),
            (
                "emptyDir over its sizeLimit first",
                pod("ed", limited("100Mi")),
                stats("ed", 0, 0, 11 * MI, 200 * MI),
                false,
                Some((
                    "Usage of EmptyDir volume \"data\" exceeds the limit \"10Mi\". ",
                    EMPTY_DIR_SIGNAL,
                )),
            ),
            (
                "the pod over its containers' limits",
                pod("pt", limited("50Mi")),
                stats("pt", 0, 0, MI, 60 * MI),
                false,
                Some((
                    "Pod ephemeral local storage usage exceeds the total limit of containers 50Mi. ",
                    POD_SIGNAL,
                )),
            ),
            (
                "a container over its own: writable layer and logs",
                pod("cl", limited("50Mi")),
                stats("cl", 40 * MI, 20 * MI, 0, 0),
                false,
                Some((
                    "Container c exceeded its local ephemeral storage limit \"50Mi\". ",
                    CONTAINER_SIGNAL,
                )),
            ),
            (
                "with images on their own filesystem only the logs count",
                pod("dd", limited("50Mi")),
                stats("dd", 40 * MI, 20 * MI, 0, 0),
                true,
                None,
            ),
            (
                "no limits: nothing",
                pod(
                    "nl",
                    serde_json::json!({"containers": [{"name": "c", "image": "i"}]}),
                ),
                stats("nl", 900 * MI, 900 * MI, 900 * MI, 2700 * MI),
                false,
                None,
            ),
        ];
        for (name, p, s, dedicated, want) in cases {
            let got = evictions(
                &[Candidate {
                    pod: &p,
                    stats: Some(&s),
                }],
                dedicated,
            );
            let got: Vec<(String, &str, i64, bool)> = got
                .into_iter()
                .map(|(e, sig)| (e.message, sig, e.grace_seconds, e.disruption_target))
                .collect();
            let want: Vec<(String, &str, i64, bool)> = want
                .into_iter()
                .map(|(m, sig)| (m.to_string(), sig, 1, false))
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }
}
