//! KubeletConfiguration fields bosun accepts but does not act on yet: each one set away from the
//! kubelet's default, in the file or by a flag, is warned about by its exact name at start.
//!
//! Fields bosun does not even read are warned about by `file` ("not supported"); the ones here are
//! read, validated and typed, and then nothing in the agent uses them (or uses only part of them).
//! Remove a field from [`FIELDS`] in the change that makes bosun act on it.

use super::file::KubeletConfiguration;

/// One field bosun reads but does not act on.
struct NotActedOn {
    /// The field's name in the KubeletConfiguration file.
    field: &'static str,
    /// What bosun does not do, for the warning.
    why: &'static str,
    /// True when the configuration (`got`) sets the field away from the defaults (`default`).
    set: fn(got: &KubeletConfiguration, default: &KubeletConfiguration) -> bool,
}

/// The fields, in the order of the kubelet's KubeletConfiguration.
const FIELDS: &[NotActedOn] = &[
    NotActedOn {
        field: "hairpinMode",
        why: "hairpin traffic is the runtime's CNI configuration",
        set: |k, d| k.hairpin_mode != d.hairpin_mode,
    },
    NotActedOn {
        field: "failSwapOn",
        why: "swap is neither checked at start nor limited for containers",
        set: |k, d| k.fail_swap_on != d.fail_swap_on,
    },
    NotActedOn {
        field: "failCgroupV1",
        why: "bosun runs on cgroup v1 and v2 alike",
        set: |k, d| k.fail_cgroup_v1 != d.fail_cgroup_v1,
    },
    NotActedOn {
        field: "enforceNodeAllocatable",
        why: "only pods is enforced (the kubepods cgroup); system-reserved and kube-reserved \
              cgroups are not limited",
        set: |k, _| {
            k.enforce_node_allocatable
                .iter()
                .any(|v| v != "pods" && v != "none")
        },
    },
    NotActedOn {
        field: "enableSystemLogQuery",
        why: "the node log query is not implemented; /logs/ serves the node's log files",
        set: |k, d| k.enable_system_log_query != d.enable_system_log_query,
    },
    NotActedOn {
        field: "imageServiceEndpoint",
        why: "images are pulled through containerRuntimeEndpoint",
        set: |k, _| {
            !k.image_service_endpoint.is_empty()
                && k.image_service_endpoint != k.container_runtime_endpoint
        },
    },
];

/// The warnings for `k` (defaulted, flags applied): one per field bosun accepts but does not act
/// on, set away from the kubelet's default, and one per feature gate named.
pub fn warnings(k: &KubeletConfiguration) -> Vec<String> {
    let default = KubeletConfiguration::default();
    FIELDS
        .iter()
        .filter(|f| (f.set)(k, &default))
        .map(|f| (f.field.to_string(), f.why))
        .chain(
            k.feature_gates
                .keys()
                .map(|gate| (format!("featureGates.{gate}"), "bosun has no feature gates")),
        )
        .map(|(field, why)| format!("field accepted but not acted on yet: {field} ({why})"))
        .collect()
}
