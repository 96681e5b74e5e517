//! What restarts: the pod's restartPolicy, a container's own restartPolicy and
//! restartPolicyRules (ContainerRestartRules), and the restartable init containers (sidecars),
//! read from the pod spec by the plan and by the status computation alike.

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};

/// The pod's restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Always restart.
    Always,
    /// Restart on non-zero exit.
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// The policy of a pod (Always when unset).
    pub fn of(pod: &Pod) -> Self {
        match pod.spec.as_ref().and_then(|s| s.restart_policy.as_deref()) {
            Some("OnFailure") => RestartPolicy::OnFailure,
            Some("Never") => RestartPolicy::Never,
            _ => RestartPolicy::Always,
        }
    }

    /// Whether a container that exited with `code` is started again.
    pub fn restarts(self, code: i32) -> bool {
        match self {
            RestartPolicy::Always => true,
            RestartPolicy::OnFailure => code != 0,
            RestartPolicy::Never => false,
        }
    }
}

/// True for a restartable init container (a sidecar: an init container with restartPolicy Always).
pub fn is_restartable_init(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// The kubelet's ContainerShouldRestart (pkg/api/v1/pod): whether container `c` of `spec`, exited
/// with `exit_code`, runs again. With a container-level restartPolicy its restartPolicyRules come
/// first (the first rule whose exit codes match decides: action Restart restarts), then that
/// policy; without one, the pod's restartPolicy. A RestartAllContainers rule is not acted on
/// (the RestartAllContainersOnContainerExits feature): it falls through to the container's
/// policy, as on a kubelet with that gate off.
pub fn container_should_restart(c: &Container, spec: &PodSpec, exit_code: i32) -> bool {
    if let Some(policy) = c.restart_policy.as_deref() {
        if matching_rule(c, exit_code).is_some_and(|action| action == "Restart") {
            return true;
        }
        match policy {
            "Always" => return true,
            "OnFailure" => return exit_code != 0,
            "Never" => return false,
            _ => {}
        }
    }
    match spec.restart_policy.as_deref() {
        Some("OnFailure") => exit_code != 0,
        Some("Never") => false,
        _ => true,
    }
}

/// The action of the first of `c`'s restartPolicyRules whose exit codes match `exit_code` (the
/// kubelet's FindMatchingContainerRestartRule: operator In or NotIn; a rule with another operator
/// or without exitCodes matches nothing).
pub fn matching_rule(c: &Container, exit_code: i32) -> Option<&str> {
    c.restart_policy_rules.iter().flatten().find_map(|rule| {
        let codes = rule.exit_codes.as_ref()?;
        let listed = codes.values.iter().flatten().any(|v| *v == exit_code);
        let hit = match codes.operator.as_str() {
            "In" => listed,
            "NotIn" => !listed,
            _ => false,
        };
        hit.then_some(rule.action.as_str())
    })
}

/// Whether a running container the kubelet kills (a failed probe) is started again: its
/// container-level restartPolicy when set (rules need an exit code and are not consulted), else
/// the pod's (computePodActions' `restart`).
pub fn restarts_when_killed(pod: &Pod, c: &Container) -> bool {
    match c.restart_policy.as_deref() {
        Some(policy) => policy != "Never",
        None => RestartPolicy::of(pod) != RestartPolicy::Never,
    }
}
