//! A pod's effective requests and limits, summed as the scheduler and the kubelet count them
//! (PodRequests, PodLimits): app containers and sidecars (restartable init containers) add up,
//! each regular init container counts with the sidecars started before it, the larger wins, plus
//! the pod overhead.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use super::parse_quantity;

/// Sums `value` over the pod's containers as PodRequests does: apps and sidecars add up; a
/// regular init container runs alongside the sidecars before it; the larger total wins.
fn effective(
    spec: &k8s_openapi::api::core::v1::PodSpec,
    value: impl Fn(&Container) -> i128,
) -> i128 {
    let mut total: i128 = spec.containers.iter().map(&value).sum();
    let (mut sidecars, mut init_max) = (0i128, 0i128);
    for c in spec.init_containers.iter().flatten() {
        let v = value(c);
        if c.restart_policy.as_deref() == Some("Always") {
            total += v;
            sidecars += v;
            init_max = init_max.max(sidecars);
        } else {
            init_max = init_max.max(v + sidecars);
        }
    }
    total.max(init_max)
}

/// A resource's value in thousandths, 0 when absent or unparsable.
fn milli(list: Option<&BTreeMap<String, ApiQuantity>>, resource: &str) -> Option<i128> {
    list.and_then(|m| m.get(resource))
        .and_then(|q| parse_quantity(&q.0).ok())
        .map(|q| q.milli_value() as i128)
}

/// The pod's effective request of `resource` in thousandths (a missing request counts as the
/// limit, as the API defaults it).
pub fn pod_request(pod: &Pod, resource: &str) -> i128 {
    let Some(spec) = pod.spec.as_ref() else {
        return 0;
    };
    let req = |c: &Container| -> i128 {
        let r = c.resources.as_ref();
        milli(r.and_then(|r| r.requests.as_ref()), resource)
            .or_else(|| milli(r.and_then(|r| r.limits.as_ref()), resource))
            .unwrap_or(0)
    };
    let overhead = milli(spec.overhead.as_ref(), resource).unwrap_or(0);
    effective(spec, req) + overhead
}

/// A pod's limit of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodLimit {
    /// In thousandths, summed as the requests are, plus the pod overhead.
    pub total: i128,
    /// True when every container (init containers included) sets a non-zero limit.
    pub every_container: bool,
}

/// The pod's limit of `resource` (the kubelet's PodLimits); None when no container sets one.
pub fn pod_limit(pod: &Pod, resource: &str) -> Option<PodLimit> {
    let spec = pod.spec.as_ref()?;
    let lim = |c: &Container| {
        milli(
            c.resources.as_ref().and_then(|r| r.limits.as_ref()),
            resource,
        )
    };
    let all: Vec<Option<i128>> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(lim)
        .collect();
    if all.iter().all(Option::is_none) {
        return None;
    }
    let overhead = milli(spec.overhead.as_ref(), resource).unwrap_or(0);
    Some(PodLimit {
        total: effective(spec, |c| lim(c).unwrap_or(0)) + overhead,
        every_container: all.iter().all(|l| l.is_some_and(|v| v != 0)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sidecars_add_up_and_init_containers_run_beside_earlier_ones() {
        let pod: Pod = serde_json::from_value(serde_json::json!({"spec": {
            "initContainers": [
                {"name": "i1", "resources": {"requests": {"cpu": "1"}, "limits": {"cpu": "1"}}},
                {"name": "s1", "restartPolicy": "Always", "resources": {"requests": {"cpu": "200m"}, "limits": {"cpu": "200m"}}},
                {"name": "i2", "resources": {"requests": {"cpu": "900m"}, "limits": {"cpu": "900m"}}},
            ],
            "containers": [{"name": "a", "resources": {"requests": {"cpu": "300m"}, "limits": {"cpu": "500m"}}}],
            "overhead": {"cpu": "10m"},
        }}))
        .unwrap();
        // apps + sidecars = 500m; init i2 beside s1 = 1100m; i1 alone = 1000m.
        assert_eq!(pod_request(&pod, "cpu"), 1110);
        let l = pod_limit(&pod, "cpu").unwrap();
        assert_eq!((l.total, l.every_container), (1110, true));
        assert_eq!(pod_limit(&pod, "memory"), None);
        assert_eq!(pod_request(&pod, "memory"), 0);
    }
}
