//! The pod QoS class (Guaranteed, Burstable, BestEffort) by the kubelet's rules.

use k8s_openapi::api::core::v1::{Container, Pod};

use super::quantity::parse_quantity;

/// The QoS class of a pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QosClass {
    /// Every container has equal cpu and memory requests and limits.
    Guaranteed,
    /// Some requests or limits, not Guaranteed.
    Burstable,
    /// No requests or limits at all.
    BestEffort,
}

impl QosClass {
    /// The name the API uses in status.qosClass.
    pub fn as_str(&self) -> &'static str {
        match self {
            QosClass::Guaranteed => "Guaranteed",
            QosClass::Burstable => "Burstable",
            QosClass::BestEffort => "BestEffort",
        }
    }
}

/// Computes the QoS class from the pod's init and app containers (cpu and memory only).
pub fn qos_class(pod: &Pod) -> QosClass {
    let Some(spec) = pod.spec.as_ref() else {
        return QosClass::BestEffort;
    };
    let containers: Vec<&Container> = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .collect();
    let mut any = false;
    let mut guaranteed = true;
    for c in containers {
        let res = c.resources.as_ref();
        let get = |which: Option<
            &std::collections::BTreeMap<
                String,
                k8s_openapi::apimachinery::pkg::api::resource::Quantity,
            >,
        >,
                   key: &str| {
            which
                .and_then(|m| m.get(key))
                .and_then(|q| parse_quantity(&q.0).ok())
                .filter(|q| q.milli_value() != 0)
        };
        let requests = res.and_then(|r| r.requests.as_ref());
        let limits = res.and_then(|r| r.limits.as_ref());
        for key in ["cpu", "memory"] {
            let req = get(requests, key);
            let lim = get(limits, key);
            if req.is_some() || lim.is_some() {
                any = true;
            }
            // A missing request defaults to the limit.
            match (req.or(lim), lim) {
                (Some(r), Some(l)) if r == l => {}
                _ => guaranteed = false,
            }
        }
    }
    if !any {
        QosClass::BestEffort
    } else if guaranteed {
        QosClass::Guaranteed
    } else {
        QosClass::Burstable
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Pairs<'a> = &'a [(&'a str, &'a str)];

    fn pod(resources: &[(Pairs<'_>, Pairs<'_>)]) -> Pod {
        let containers: Vec<serde_json::Value> = resources
            .iter()
            .enumerate()
            .map(|(i, (req, lim))| {
                let m = |p: &[(&str, &str)]| p.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>();
                serde_json::json!({"name": format!("c{i}"), "resources": {"requests": m(req), "limits": m(lim)}})
            })
            .collect();
        serde_json::from_value(serde_json::json!({"spec": {"containers": containers}})).unwrap()
    }

    #[test]
    fn classes() {
        let cases: &[(Pod, QosClass)] = &[
            (pod(&[(&[], &[])]), QosClass::BestEffort),
            (
                pod(&[(
                    &[("cpu", "1"), ("memory", "1Gi")],
                    &[("cpu", "1"), ("memory", "1Gi")],
                )]),
                QosClass::Guaranteed,
            ),
            (
                pod(&[(&[], &[("cpu", "1"), ("memory", "1Gi")])]),
                QosClass::Guaranteed,
            ),
            (pod(&[(&[("cpu", "100m")], &[])]), QosClass::Burstable),
            (
                pod(&[(
                    &[("cpu", "1"), ("memory", "1Gi")],
                    &[("cpu", "2"), ("memory", "1Gi")],
                )]),
                QosClass::Burstable,
            ),
            (
                pod(&[
                    (
                        &[("cpu", "1"), ("memory", "1Gi")],
                        &[("cpu", "1"), ("memory", "1Gi")],
                    ),
                    (&[], &[]),
                ]),
                QosClass::Burstable,
            ),
        ];
        for (i, (p, want)) in cases.iter().enumerate() {
            assert_eq!(qos_class(p), *want, "case {i}");
        }
    }
}
