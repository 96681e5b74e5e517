//! Pod fields Bosun reads but does not act on (as the kubelet would): each one a pod sets is
//! warned about by its exact path when the pod is admitted (the feature gate, on by default in
//! v1.37, named in the reason). Remove a check in the change that makes Bosun act on the field.

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
    let mut warn = |field: String, why: &str| {
        out.push(format!(
            "field accepted but not acted on yet: {field} ({why})"
        ))
    };
    if spec.resources.is_some() {
        warn(
            "spec.resources".into(),
            "PodLevelResources: pod-level requests and limits are left out of QoS, cgroups and \
             admission; only the containers' count",
        );
    }
    if spec.resource_claims.as_ref().is_some_and(|c| !c.is_empty()) {
        warn(
            "spec.resourceClaims".into(),
            "DynamicResourceAllocation: no claim is prepared through a DRA driver",
        );
    }
    for (list, containers) in lists {
        for c in containers {
            if c.resources
                .as_ref()
                .and_then(|r| r.claims.as_ref())
                .is_some_and(|c| !c.is_empty())
            {
                warn(
                    format!("spec.{list}[{}].resources.claims", c.name),
                    "DynamicResourceAllocation: no claim is prepared through a DRA driver",
                );
            }
            for m in c.volume_mounts.iter().flatten() {
                if m.recursive_read_only
                    .as_deref()
                    .is_some_and(|r| r != "Disabled")
                {
                    warn(
                        format!(
                            "spec.{list}[{}].volumeMounts[{}].recursiveReadOnly",
                            c.name, m.mount_path
                        ),
                        "RecursiveReadOnlyMounts: the mount is read-only, its submounts are not",
                    );
                }
            }
            for (i, rule) in c.restart_policy_rules.iter().flatten().enumerate() {
                if rule.action == "RestartAllContainers" {
                    warn(
                        format!(
                            "spec.{list}[{}].restartPolicyRules[{i}].action RestartAllContainers",
                            c.name
                        ),
                        "RestartAllContainersOnContainerExits: only the container's own \
                         restartPolicy applies, as on a kubelet with that gate off",
                    );
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
    fn pod_level_resources_claims_and_recursive_read_only_are_named() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"},
            "spec": {
                "resources": {"limits": {"cpu": "1"}},
                "resourceClaims": [{"name": "gpu", "resourceClaimName": "gpu-claim"}],
                "containers": [{"name": "c",
                    "resources": {"claims": [{"name": "gpu"}]},
                    "volumeMounts": [
                        {"name": "v", "mountPath": "/a", "readOnly": true, "recursiveReadOnly": "Enabled"},
                        {"name": "v", "mountPath": "/b", "recursiveReadOnly": "Disabled"}]}],
            }
        }))
        .unwrap();
        let fields: Vec<String> = warnings(&pod)
            .iter()
            .map(|w| {
                let w = w
                    .strip_prefix("field accepted but not acted on yet: ")
                    .unwrap();
                w.split(" (").next().unwrap().to_string()
            })
            .collect();
        assert_eq!(
            fields,
            [
                "spec.resources",
                "spec.resourceClaims",
                "spec.containers[c].resources.claims",
                "spec.containers[c].volumeMounts[/a].recursiveReadOnly",
            ]
        );
        let plain: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}
        }))
        .unwrap();
        assert!(warnings(&plain).is_empty());
    }

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
