//! Pod admission as the kubelet's: a pod that does not fit the node's allocatable (OutOfcpu,
//! OutOfmemory, OutOfpods) or whose nodeSelector / required node affinity does not match the
//! node's labels (NodeAffinity) is rejected: it ends in phase Failed with the reason and a message.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, Pod};

/// Why a pod was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// OutOfcpu, OutOfmemory, OutOfpods, NodeAffinity.
    pub reason: String,
    /// The kubelet's message.
    pub message: String,
}

/// What admission checks pods against.
#[derive(Debug, Clone, Default)]
pub struct Admission {
    /// Allocatable by resource, in thousandths (millicores for cpu, milli-bytes for memory).
    pub allocatable: BTreeMap<String, i128>,
    /// The node's labels.
    pub node_labels: BTreeMap<String, String>,
}

pub use crate::resource::pod_request;

impl Admission {
    /// Admits `pod` on a node already running `admitted` pods, or says why not.
    pub fn admit(&self, pod: &Pod, admitted: &[&Pod]) -> Result<(), Rejection> {
        if !self.matches_node(pod) {
            return Err(Rejection {
                reason: "NodeAffinity".into(),
                message: "Pod was rejected: Predicate NodeAffinity failed: node(s) didn't match Pod's node affinity/selector".into(),
            });
        }
        if let Some(&max) = self.allocatable.get("pods") {
            let used = admitted.len() as i128;
            if (used + 1) * 1000 > max {
                return Err(out_of("pods", 1, used, max / 1000));
            }
        }
        for (resource, scale) in [("cpu", 1), ("memory", 1000)] {
            let Some(&cap) = self.allocatable.get(resource) else {
                continue;
            };
            let want = pod_request(pod, resource);
            if want == 0 {
                continue;
            }
            let used: i128 = admitted.iter().map(|p| pod_request(p, resource)).sum();
            if used + want > cap {
                return Err(out_of(resource, want / scale, used / scale, cap / scale));
            }
        }
        Ok(())
    }

    fn matches_node(&self, pod: &Pod) -> bool {
        let Some(spec) = pod.spec.as_ref() else {
            return true;
        };
        let selector_ok = spec
            .node_selector
            .iter()
            .flatten()
            .all(|(k, v)| self.node_labels.get(k) == Some(v));
        let required = spec
            .affinity
            .as_ref()
            .and_then(|a| a.node_affinity.as_ref())
            .and_then(|n| {
                n.required_during_scheduling_ignored_during_execution
                    .as_ref()
            });
        // Terms are ORed, expressions within a term ANDed.
        let affinity_ok = required.is_none_or(|r| {
            r.node_selector_terms.iter().any(|t| {
                t.match_expressions
                    .iter()
                    .flatten()
                    .all(|e| self.requirement(e))
            })
        });
        selector_ok && affinity_ok
    }

    fn requirement(&self, e: &NodeSelectorRequirement) -> bool {
        let v = self.node_labels.get(&e.key);
        let values = e.values.clone().unwrap_or_default();
        match e.operator.as_str() {
            "In" => v.is_some_and(|v| values.contains(v)),
            "NotIn" => v.is_none_or(|v| !values.contains(v)),
            "Exists" => v.is_some(),
            "DoesNotExist" => v.is_none(),
            "Gt" | "Lt" => {
                let (Some(v), Some(x)) = (
                    v.and_then(|v| v.parse::<i64>().ok()),
                    values.first().and_then(|x| x.parse::<i64>().ok()),
                ) else {
                    return false;
                };
                if e.operator == "Gt" { v > x } else { v < x }
            }
            _ => false,
        }
    }
}

fn out_of(resource: &str, requested: i128, used: i128, capacity: i128) -> Rejection {
    Rejection {
        reason: format!("OutOf{resource}"),
        message: format!(
            "Pod was rejected: Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(cpu: &str, mem: &str, selector: serde_json::Value) -> Pod {
        serde_json::from_value(
            serde_json::json!({"spec": {"nodeSelector": selector, "containers": [
                {"name": "c", "resources": {"requests": {"cpu": cpu, "memory": mem}}}
            ]}}),
        )
        .unwrap()
    }

    fn node() -> Admission {
        Admission {
            allocatable: BTreeMap::from([
                ("cpu".into(), 2000),
                ("memory".into(), (1i128 << 30) * 1000),
                ("pods".into(), 2000),
            ]),
            node_labels: BTreeMap::from([("kubernetes.io/os".into(), "linux".into())]),
        }
    }

    #[test]
    fn admits_and_rejects_like_the_kubelet() {
        let n = node();
        let small = pod("500m", "100Mi", serde_json::json!({}));
        assert_eq!(n.admit(&small, &[]), Ok(()));
        let cpu = n
            .admit(&pod("3", "1Mi", serde_json::json!({})), &[])
            .unwrap_err();
        assert_eq!(cpu.reason, "OutOfcpu");
        assert_eq!(
            cpu.message,
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 3000, used: 0, capacity: 2000"
        );
        let mem = n
            .admit(&pod("1m", "2Gi", serde_json::json!({})), &[&small])
            .unwrap_err();
        assert_eq!(mem.reason, "OutOfmemory");
        assert!(mem.message.contains("used: 104857600"), "{}", mem.message);
        let pods = n.admit(&small, &[&small, &small]).unwrap_err();
        assert_eq!(pods.reason, "OutOfpods");
        let aff = n
            .admit(&pod("1m", "1Mi", serde_json::json!({"disk": "ssd"})), &[])
            .unwrap_err();
        assert_eq!(aff.reason, "NodeAffinity");
        assert_eq!(
            n.admit(
                &pod(
                    "1m",
                    "1Mi",
                    serde_json::json!({"kubernetes.io/os": "linux"})
                ),
                &[]
            ),
            Ok(())
        );
    }
}
