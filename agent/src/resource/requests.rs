//! A pod's effective requests and limits, summed as the scheduler and the kubelet count them:
//! the larger of the app containers' sum and the largest init container, plus the pod overhead.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, Pod};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use super::parse_quantity;

/// A resource's value in thousandths, 0 when absent or unparsable.
fn milli(list: Option<&BTreeMap<String, ApiQuantity>>, resource: &str) -> Option<i128> {
    list.and_then(|m| m.get(resource))
        .and_then(|q| parse_quantity(&q.0).ok())
        .map(|q| q.milli_value() as i128)
}

/// The pod's effective request of `resource` in thousandths: the larger of the sum over app
/// containers and the largest init container (as the scheduler and the kubelet count it).
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
    let apps: i128 = spec.containers.iter().map(req).sum();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .map(req)
        .max()
        .unwrap_or(0);
    let overhead = milli(spec.overhead.as_ref(), resource).unwrap_or(0);
    apps.max(init) + overhead
}

/// A pod's limit of one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PodLimit {
    /// In thousandths: the larger of the app containers' sum and the largest init container,
    /// plus the pod overhead.
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
    let apps: i128 = spec.containers.iter().filter_map(lim).sum();
    let init = spec
        .init_containers
        .iter()
        .flatten()
        .filter_map(lim)
        .max()
        .unwrap_or(0);
    let overhead = milli(spec.overhead.as_ref(), resource).unwrap_or(0);
    Some(PodLimit {
        total: apps.max(init) + overhead,
        every_container: all.iter().all(|l| l.is_some_and(|v| v != 0)),
    })
}
