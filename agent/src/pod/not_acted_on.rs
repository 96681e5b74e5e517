//! Pod fields Bosun reads but does not act on (as the kubelet would): each one a pod sets is
//! warned about by its exact path when the pod is admitted. Remove a check in the change that
//! makes Bosun act on the field.

use k8s_openapi::api::core::v1::{Container, Pod};

/// The warnings for `pod`, one per field set that Bosun does not act on.
pub fn warnings(pod: &Pod) -> Vec<String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Vec::new();
    };
    let lists: [(&str, &[Container]); 2] = [
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
        ("containers", &spec.containers),
    ];
    let mut out = Vec::new();
    for (list, containers) in lists {
        for c in containers {
            for (i, rule) in c.restart_policy_rules.iter().flatten().enumerate() {
                if rule.action == "RestartAllContainers" {
                    out.push(format!(
                        "field accepted but not acted on yet: spec.{list}[{}].restartPolicyRules[{i}]\
                         .action RestartAllContainers (the RestartAllContainersOnContainerExits \
                         feature: only the container's own restartPolicy applies, as on a kubelet \
                         with that gate off)",
                        c.name
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_all_containers_rules_are_named() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "initContainers": [{"name": "i", "restartPolicy": "Never", "restartPolicyRules": [
                    {"action": "Restart", "exitCodes": {"operator": "In", "values": [1]}},
                    {"action": "RestartAllContainers", "exitCodes": {"operator": "In", "values": [2]}},
                ]}],
                "containers": [{"name": "c", "restartPolicy": "Never", "restartPolicyRules": [
                    {"action": "Restart", "exitCodes": {"operator": "NotIn", "values": [0]}},
                ]}],
            }
        }))
        .unwrap();
        let got = warnings(&pod);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(
                "field accepted but not acted on yet: spec.initContainers[i].restartPolicyRules[1]\
                 .action RestartAllContainers ("
            ),
            "{got:?}"
        );
    }
}
