//! Pod admission as the kubelet's: under node pressure, a pod the eviction manager would refuse
//! (Evicted: BestEffort under memory pressure, every non-critical pod under disk or PID
//! pressure), a pod setting a sysctl it may not (SysctlForbidden), that does
//! not fit the node's allocatable (OutOfcpu, OutOfmemory, OutOfephemeral-storage, OutOfpods, and
//! OutOf<name> for an extended resource the Node lists or hugepages), whose nodeSelector / required node affinity does not match the
//! node's labels (NodeAffinity) or whose host ports are taken by an admitted pod (NodePorts) is
//! rejected, as is one asking for an AppArmor profile on a host without AppArmor (AppArmor), and
//! every pod while the node shuts down (NodeShutdown): it ends in phase Failed with the reason
//! and a message.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{NodeSelectorRequirement, Pod};
use tokio::sync::watch;

/// The reason of a pod rejected while the node shuts down (NodeShutdownNotAdmittedReason).
pub const NODE_SHUTDOWN_REASON: &str = "NodeShutdown";
/// Its message (nodeShutdownNotAdmittedMessage).
pub const NODE_SHUTDOWN_MESSAGE: &str = "Pod was rejected as the node is shutting down.";

/// Why a pod was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// OutOfcpu, OutOfmemory, OutOf<resource>, OutOfpods, NodeAffinity, NodePorts, ...
    pub reason: String,
    /// The kubelet's admit handler's message: the Warning event's.
    pub message: String,
}

impl Rejection {
    /// The pod status' message, as the kubelet's rejectPod: the event's after "Pod was
    /// rejected: ".
    pub fn status_message(&self) -> String {
        format!("Pod was rejected: {}", self.message)
    }
}

/// What admission reads of the Node as the API server holds it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NodeView {
    /// The Node's labels.
    pub labels: BTreeMap<String, String>,
    /// The Node's taints.
    pub taints: Vec<k8s_openapi::api::core::v1::Taint>,
    /// The Node's status.allocatable in thousandths by resource: extended resources (a device
    /// plugin's, or advertised by patching the Node's status) are checked against it.
    pub allocatable: BTreeMap<String, i128>,
}

/// What admission checks pods against.
#[derive(Debug, Clone)]
pub struct Admission {
    /// Allocatable by resource, in thousandths (millicores for cpu, milli-bytes for memory).
    pub allocatable: BTreeMap<String, i128>,
    /// The node's labels, current: the Node's as the API server holds them once it has been
    /// seen, the startup labels before (the kubelet's `getNodeAnyWay`).
    pub node_labels: watch::Receiver<NodeView>,
    /// The sysctls pods may set (safe ones and `allowedUnsafeSysctls`).
    pub sysctls: super::sysctls::SysctlAllowlist,
    /// Whether the host enforces AppArmor profiles.
    pub apparmor_enabled: bool,
    /// The eviction manager's pressure conditions, current.
    pub pressure: crate::eviction::ConditionsRx,
    /// Whether the node is shutting down (the node shutdown manager's); None: never.
    pub shutting_down: Option<tokio::sync::watch::Receiver<bool>>,
    /// The device manager, which reserves a pod's devices at admission; None: no device plugins.
    pub devices: Option<crate::devicemanager::DeviceManager>,
}

/// The reason of a pod whose devices could not be allocated (the kubelet's
/// admission.ErrorReasonUnexpected).
pub const UNEXPECTED_ADMISSION_ERROR: &str = "UnexpectedAdmissionError";

pub use crate::resource::pod_request;
use crate::resource::{is_extended_resource, is_scalar_resource};

impl Admission {
    /// The kubelet's predicate over scalar resources (fitsRequest after
    /// removeMissingExtendedResources): extended resources the Node's allocatable does not list are
    /// not the node's to check; the others and hugepages must fit what it lists (none: 0), in
    /// whole units; the first misfit in name order is the reason.
    fn admit_scalar_resources(&self, pod: &Pod, admitted: &[&Pod]) -> Result<(), Rejection> {
        let node = self.node_labels.borrow();
        for resource in scalar_requests(pod) {
            let listed = node
                .allocatable
                .get(&resource)
                .or_else(|| self.allocatable.get(&resource))
                .copied();
            let cap = match listed {
                Some(cap) => cap,
                None if is_extended_resource(&resource) => continue,
                None => 0,
            };
            // sanitizeNodeAllocatable: a pod already holding devices fits at least what is held.
            let uid = pod.metadata.uid.as_deref().unwrap_or_default();
            let held = self
                .devices
                .as_ref()
                .and_then(|d| d.held_for(uid, &resource));
            let cap = cap.max(held.unwrap_or(0) as i128 * 1000);
            let want = pod_request(pod, &resource);
            if want == 0 {
                continue;
            }
            let used: i128 = admitted.iter().map(|p| pod_request(p, &resource)).sum();
            if used + want > cap {
                return Err(out_of(
                    &resource,
                    ceil_units(want, 1000),
                    ceil_units(used, 1000),
                    cap / 1000,
                ));
            }
        }
        Ok(())
    }

    /// Admits a resize of `pod` to its spec's resources on a node running `admitted` pods as
    /// allocated (the kubelet's canAdmitPod with ResizeOperation: the resource predicates; a
    /// resize beyond the node's allocatable is refused by the API server).
    pub fn admit_resize(&self, pod: &Pod, admitted: &[&Pod]) -> Result<(), Rejection> {
        self.admit_predicates(pod, admitted)
    }

    /// Admits `pod` on a node already running `admitted` pods, or says why not.
    pub fn admit(&self, pod: &Pod, admitted: &[&Pod]) -> Result<(), Rejection> {
        // The kubelet's order: eviction, sysctls, then its predicates (resources, pods first;
        // node affinity; host ports), then AppArmor; the first failure is the reason.
        admit_under_pressure(&self.pressure.borrow(), pod)?;
        super::sysctls::admit(&self.sysctls, pod)?;
        self.allocate_devices(pod)?;
        let r = self.admit_predicates(pod, admitted);
        if r.is_err()
            && let Some(d) = &self.devices
        {
            d.release(pod.metadata.uid.as_deref().unwrap_or_default());
        }
        r
    }

    /// The kubelet's resource allocator admission (the device manager's Allocate): devices
    /// reserved for the pod's containers, or UnexpectedAdmissionError ("Allocate failed due to
    /// ..., which is unexpected").
    fn allocate_devices(&self, pod: &Pod) -> Result<(), Rejection> {
        let Some(devices) = &self.devices else {
            return Ok(());
        };
        devices.allocate(pod).map_err(|e| Rejection {
            reason: UNEXPECTED_ADMISSION_ERROR.into(),
            message: format!("Allocate failed due to {e}, which is unexpected"),
        })
    }

    /// The predicates, node affinity, ports, taints, AppArmor and node shutdown.
    fn admit_predicates(&self, pod: &Pod, admitted: &[&Pod]) -> Result<(), Rejection> {
        if let Some(&max) = self.allocatable.get("pods") {
            let used = admitted.len() as i128;
            if (used + 1) * 1000 > max {
                return Err(out_of("pods", 1, used, max / 1000));
            }
        }
        for (resource, scale) in [("cpu", 1), ("memory", 1000), ("ephemeral-storage", 1000)] {
            let Some(&cap) = self.allocatable.get(resource) else {
                continue;
            };
            let want = pod_request(pod, resource);
            if want == 0 {
                continue;
            }
            let used: i128 = admitted.iter().map(|p| pod_request(p, resource)).sum();
            if used + want > cap {
                return Err(out_of(
                    resource,
                    ceil_units(want, scale),
                    ceil_units(used, scale),
                    cap / scale,
                ));
            }
        }
        self.admit_scalar_resources(pod, admitted)?;
        if pod_os_mismatch(pod) {
            return Err(Rejection {
                reason: "PodOSSelectorNodeLabelDoesNotMatch".into(),
                message:
                    "Failed to admit pod as the `kubernetes.io/os` label doesn't match node label"
                        .into(),
            });
        }
        if pod
            .spec
            .as_ref()
            .and_then(|s| s.os.as_ref())
            .is_some_and(|os| os.name != "linux")
        {
            return Err(Rejection {
                reason: "PodOSNotSupported".into(),
                message: "Failed to admit pod as the OS field doesn't match node OS".into(),
            });
        }
        if !matches_node(&self.node_labels.borrow().labels, pod) {
            return Err(predicate(
                "NodeAffinity",
                "node(s) didn't match Pod's node affinity/selector",
            ));
        }
        let used: Vec<HostPort> = admitted.iter().flat_map(|p| host_ports(p)).collect();
        if host_ports(pod)
            .iter()
            .any(|want| used.iter().any(|u| want.conflicts(u)))
        {
            return Err(predicate(
                "NodePorts",
                "node(s) didn't have free ports for the requested pod ports",
            ));
        }
        if !crate::runtime::labels::is_static(pod)
            && untolerated_no_execute(&self.node_labels.borrow().taints, pod)
        {
            return Err(predicate(
                "TaintToleration",
                "node(s) had taints that the pod didn't tolerate",
            ));
        }
        self.admit_apparmor(pod)?;
        self.admit_shutdown()
    }

    /// The node shutdown manager's admission, the kubelet's last handler: every pod is
    /// rejected while the node shuts down.
    fn admit_shutdown(&self) -> Result<(), Rejection> {
        if self.shutting_down.as_ref().is_some_and(|s| *s.borrow()) {
            return Err(Rejection {
                reason: NODE_SHUTDOWN_REASON.into(),
                message: NODE_SHUTDOWN_MESSAGE.into(),
            });
        }
        Ok(())
    }

    /// The kubelet's AppArmor admission: a Pending pod asking for a confined profile on a host
    /// without AppArmor is rejected.
    fn admit_apparmor(&self, pod: &Pod) -> Result<(), Rejection> {
        let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
        if self.apparmor_enabled || phase.is_some_and(|p| p != "Pending") || !apparmor_required(pod)
        {
            return Ok(());
        }
        Err(Rejection {
            reason: "AppArmor".into(),
            message: "Cannot enforce AppArmor: AppArmor is not enabled on the host".into(),
        })
    }
}

/// The kubelet's rejectPodAdmissionBasedOnOSSelector: a pod *labelled* kubernetes.io/os with
/// another OS than this node's (always linux here).
fn pod_os_mismatch(pod: &Pod) -> bool {
    pod.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get("kubernetes.io/os"))
        .is_some_and(|os| os != "linux")
}

/// True when one of the node's NoExecute taints is tolerated by none of the pod's tolerations
/// (the kubelet checks only NoExecute; the scheduler handles the rest).
fn untolerated_no_execute(taints: &[k8s_openapi::api::core::v1::Taint], pod: &Pod) -> bool {
    let tolerations = pod
        .spec
        .as_ref()
        .and_then(|s| s.tolerations.as_deref())
        .unwrap_or_default();
    taints.iter().filter(|t| t.effect == "NoExecute").any(|t| {
        !tolerations.iter().any(|tol| {
            let effect_ok = tol
                .effect
                .as_deref()
                .is_none_or(|e| e.is_empty() || e == t.effect);
            let key = tol.key.as_deref().unwrap_or_default();
            let key_ok = key.is_empty() || key == t.key;
            let value_ok = match tol.operator.as_deref().unwrap_or("Equal") {
                "Exists" => true,
                "Equal" | "" => {
                    tol.value.as_deref().unwrap_or_default()
                        == t.value.as_deref().unwrap_or_default()
                }
                _ => false,
            };
            effect_ok && key_ok && value_ok
        })
    })
}

/// The kubelet's eviction admit handler (eviction_manager.go Admit): with no pressure every pod
/// is admitted, and so is a critical pod under any; under memory pressure alone a pod that is not
/// BestEffort, or that tolerates the memory-pressure NoSchedule taint; otherwise the pod is
/// rejected with reason Evicted naming the conditions.
pub fn admit_under_pressure(
    conditions: &crate::eviction::Conditions,
    pod: &Pod,
) -> Result<(), Rejection> {
    use crate::eviction::Condition;
    use crate::resource::{QosClass, qos_class};
    if conditions.is_empty() || crate::eviction::is_critical(pod) {
        return Ok(());
    }
    if conditions.len() == 1
        && conditions.contains(&Condition::MemoryPressure)
        && (qos_class(pod) != QosClass::BestEffort || tolerates_memory_pressure(pod))
    {
        return Ok(());
    }
    let names: Vec<&str> = conditions.iter().map(|c| c.as_str()).collect();
    Err(Rejection {
        reason: "Evicted".into(),
        message: format!("The node had condition: [{}]. ", names.join(" ")),
    })
}

/// True when a toleration of `pod` tolerates the `node.kubernetes.io/memory-pressure:NoSchedule`
/// taint (no value), as the kubelet's TolerationsTolerateTaint.
fn tolerates_memory_pressure(pod: &Pod) -> bool {
    const KEY: &str = "node.kubernetes.io/memory-pressure";
    let tolerations = pod.spec.as_ref().and_then(|s| s.tolerations.as_ref());
    tolerations.into_iter().flatten().any(|t| {
        let effect = t.effect.as_deref().unwrap_or("");
        let key = t.key.as_deref().unwrap_or("");
        (effect.is_empty() || effect == "NoSchedule")
            && (key.is_empty() || key == KEY)
            && match t.operator.as_deref().unwrap_or("") {
                "" | "Equal" => t.value.as_deref().unwrap_or("").is_empty(),
                "Exists" => true,
                _ => false,
            }
    })
}

/// True when the host enforces AppArmor (the kubelet's apparmor.IsEnabled).
pub fn host_apparmor_enabled() -> bool {
    std::path::Path::new("/sys/kernel/security/apparmor").exists()
        && std::fs::read("/sys/module/apparmor/parameters/enabled")
            .is_ok_and(|b| b.len() > 1 && b[0] == b'Y')
}

/// True when any profile the pod asks for is not Unconfined (the kubelet's isRequired).
fn apparmor_required(pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return false;
    };
    let confined = |p: Option<&k8s_openapi::api::core::v1::AppArmorProfile>| {
        p.is_some_and(|p| p.type_ != "Unconfined")
    };
    if confined(
        spec.security_context
            .as_ref()
            .and_then(|s| s.app_armor_profile.as_ref()),
    ) {
        return true;
    }
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten());
    let ephemeral = spec.ephemeral_containers.iter().flatten();
    if containers
        .map(|c| c.security_context.as_ref())
        .chain(ephemeral.map(|c| c.security_context.as_ref()))
        .any(|sc| confined(sc.and_then(|s| s.app_armor_profile.as_ref())))
    {
        return true;
    }
    use crate::runtime::security_context::APPARMOR_ANNOTATION_PREFIX;
    pod.metadata
        .annotations
        .iter()
        .flatten()
        .any(|(k, v)| k.starts_with(APPARMOR_ANNOTATION_PREFIX) && v != "unconfined")
}

/// True when `pod`'s nodeSelector and required node affinity match `labels`.
fn matches_node(labels: &BTreeMap<String, String>, pod: &Pod) -> bool {
    let Some(spec) = pod.spec.as_ref() else {
        return true;
    };
    let selector_ok = spec
        .node_selector
        .iter()
        .flatten()
        .all(|(k, v)| labels.get(k) == Some(v));
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
                .all(|e| requirement(labels, e))
        })
    });
    selector_ok && affinity_ok
}

/// True when the node's `labels` satisfy one node selector requirement.
fn requirement(labels: &BTreeMap<String, String>, e: &NodeSelectorRequirement) -> bool {
    let v = labels.get(&e.key);
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

/// A rejection by a scheduler predicate, worded as the kubelet's PredicateFailureError.
fn predicate(name: &str, desc: &str) -> Rejection {
    Rejection {
        reason: name.into(),
        message: format!("Predicate {name} failed: {desc}"),
    }
}

/// One host port a pod binds: (host IP, `0.0.0.0` for all; protocol; port).
#[derive(Debug, Clone, PartialEq, Eq)]
struct HostPort {
    ip: String,
    protocol: String,
    port: i32,
}

impl HostPort {
    /// Whether two bindings collide: same protocol and port, and the same IP or either on all.
    fn conflicts(&self, other: &HostPort) -> bool {
        const ALL: &str = "0.0.0.0";
        self.protocol == other.protocol
            && self.port == other.port
            && (self.ip == ALL || other.ip == ALL || self.ip == other.ip)
    }
}

/// The host ports of the pod's containers and sidecars (init containers that keep running), as
/// the scheduler's GetHostPorts.
fn host_ports(pod: &Pod) -> Vec<HostPort> {
    let Some(spec) = pod.spec.as_ref() else {
        return vec![];
    };
    spec.init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"))
        .chain(&spec.containers)
        .flat_map(|c| c.ports.iter().flatten())
        .filter(|p| p.host_port.unwrap_or(0) > 0)
        .map(|p| HostPort {
            ip: p
                .host_ip
                .clone()
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| "0.0.0.0".into()),
            protocol: p
                .protocol
                .clone()
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| "TCP".into()),
            port: p.host_port.unwrap_or(0),
        })
        .collect()
}

/// Thousandths in units of `scale` thousandths, rounded up as Quantity.Value() (bytes of memory).
fn ceil_units(milli: i128, scale: i128) -> i128 {
    (milli + scale - 1).div_euclid(scale)
}

/// The scalar resources `pod` requests, by name.
fn scalar_requests(pod: &Pod) -> std::collections::BTreeSet<String> {
    let Some(spec) = pod.spec.as_ref() else {
        return Default::default();
    };
    spec.init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .filter_map(|c| c.resources.as_ref())
        .flat_map(|r| {
            r.requests
                .iter()
                .chain(r.limits.iter())
                .flat_map(|m| m.keys())
        })
        .chain(spec.overhead.iter().flat_map(|m| m.keys()))
        .filter(|name| is_scalar_resource(name))
        .cloned()
        .collect()
}

fn out_of(resource: &str, requested: i128, used: i128, capacity: i128) -> Rejection {
    Rejection {
        reason: format!("OutOf{resource}"),
        message: format!(
            "Node didn't have enough resource: {resource}, requested: {requested}, used: {used}, capacity: {capacity}"
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
            node_labels: watch::channel(NodeView {
                labels: BTreeMap::from([("kubernetes.io/os".into(), "linux".into())]),
                taints: vec![],
                allocatable: BTreeMap::new(),
            })
            .1,
            sysctls: super::super::sysctls::SysctlAllowlist::new(&[]).unwrap(),
            apparmor_enabled: false,
            pressure: watch::channel(Default::default()).1,
            shutting_down: None,
            devices: None,
        }
    }

    /// While the node shuts down every pod is rejected with the kubelet's reason and message,
    /// after every other check; once the shutdown is cancelled pods are admitted again.
    #[test]
    fn pods_are_rejected_while_the_node_shuts_down() {
        let (tx, rx) = watch::channel(false);
        let n = Admission {
            shutting_down: Some(rx),
            ..node()
        };
        let p = pod("1m", "1Mi", serde_json::json!({}));
        assert_eq!(n.admit(&p, &[]), Ok(()));
        tx.send_replace(true);
        let r = n.admit(&p, &[]).unwrap_err();
        assert_eq!(
            (r.reason.as_str(), r.status_message().as_str()),
            (
                "NodeShutdown",
                "Pod was rejected: Pod was rejected as the node is shutting down."
            )
        );
        // Resources are checked first, as the kubelet's handlers run in order.
        let big = pod("3", "1Mi", serde_json::json!({}));
        assert_eq!(n.admit(&big, &[]).unwrap_err().reason, "OutOfcpu");
        tx.send_replace(false);
        assert_eq!(n.admit(&p, &[]), Ok(()));
    }

    #[test]
    fn pressure_rejects_as_the_eviction_admit_handler() {
        use crate::eviction::{Condition, Conditions};
        use Condition::*;
        let of = |v: serde_json::Value| -> Pod { serde_json::from_value(v).unwrap() };
        let best_effort = of(serde_json::json!({"spec": {"containers": [{"name": "c"}]}}));
        let burstable = pod("100m", "10Mi", serde_json::json!({}));
        let static_pod = of(serde_json::json!({
            "metadata": {"annotations": {"kubernetes.io/config.source": "file"}},
            "spec": {"containers": [{"name": "c"}]}}));
        let critical = of(serde_json::json!({"spec": {"priority": 2_000_001_000,
            "priorityClassName": "system-node-critical", "containers": [{"name": "c"}]}}));
        let tolerant = |t: serde_json::Value| {
            of(serde_json::json!({"spec": {"tolerations": [t], "containers": [{"name": "c"}]}}))
        };
        let exists = tolerant(serde_json::json!({"operator": "Exists"}));
        let memory = tolerant(serde_json::json!({
            "key": "node.kubernetes.io/memory-pressure", "operator": "Exists",
            "effect": "NoSchedule"}));
        let disk = tolerant(serde_json::json!({
            "key": "node.kubernetes.io/disk-pressure", "operator": "Exists"}));
        let no_execute = tolerant(serde_json::json!({
            "key": "node.kubernetes.io/memory-pressure", "effect": "NoExecute"}));
        let cases: &[(&[Condition], &Pod, Option<&str>)] = &[
            (&[], &best_effort, None),
            (&[MemoryPressure], &burstable, None),
            (
                &[MemoryPressure],
                &best_effort,
                Some("The node had condition: [MemoryPressure]. "),
            ),
            (&[MemoryPressure], &static_pod, None),
            (&[MemoryPressure], &exists, None),
            (&[MemoryPressure], &memory, None),
            (
                &[MemoryPressure],
                &disk,
                Some("The node had condition: [MemoryPressure]. "),
            ),
            (
                &[MemoryPressure],
                &no_execute,
                Some("The node had condition: [MemoryPressure]. "),
            ),
            (
                &[DiskPressure],
                &burstable,
                Some("The node had condition: [DiskPressure]. "),
            ),
            (
                &[DiskPressure],
                &memory,
                Some("The node had condition: [DiskPressure]. "),
            ),
            (&[DiskPressure], &critical, None),
            (
                &[PidPressure],
                &burstable,
                Some("The node had condition: [PIDPressure]. "),
            ),
            (
                &[MemoryPressure, DiskPressure],
                &burstable,
                Some("The node had condition: [MemoryPressure DiskPressure]. "),
            ),
        ];
        for (conditions, p, want) in cases {
            let (tx, rx) = watch::channel(Conditions::new());
            let n = Admission {
                pressure: rx,
                ..node()
            };
            tx.send_replace(conditions.iter().copied().collect());
            let got = n.admit(p, &[]);
            match want {
                None => assert_eq!(got, Ok(()), "{conditions:?}"),
                Some(m) => {
                    let r = got.unwrap_err();
                    assert_eq!((r.reason.as_str(), r.message.as_str()), ("Evicted", *m));
                }
            }
        }
    }

    #[test]
    fn pressure_is_checked_before_sysctls_and_resources() {
        use crate::eviction::Condition;
        let (_tx, rx) = watch::channel([Condition::DiskPressure].into_iter().collect());
        let n = Admission {
            pressure: rx,
            ..node()
        };
        let r = n
            .admit(&pod("3", "1Mi", serde_json::json!({})), &[])
            .unwrap_err();
        assert_eq!(r.reason, "Evicted");
    }

    #[test]
    fn apparmor_profiles_need_apparmor_on_the_host() {
        let n = node();
        let of = |v: serde_json::Value| -> Pod { serde_json::from_value(v).unwrap() };
        let runtime_default = of(serde_json::json!({"spec": {"containers": [{"name": "c",
            "securityContext": {"appArmorProfile": {"type": "RuntimeDefault"}}}]}}));
        let r = n.admit(&runtime_default, &[]).unwrap_err();
        assert_eq!(
            (r.reason.as_str(), r.message.as_str()),
            (
                "AppArmor",
                "Cannot enforce AppArmor: AppArmor is not enabled on the host"
            )
        );
        let annotated = of(serde_json::json!({"metadata": {"annotations": {
            "container.apparmor.security.beta.kubernetes.io/c": "localhost/x"}},
            "spec": {"containers": [{"name": "c"}]}}));
        assert_eq!(n.admit(&annotated, &[]).unwrap_err().reason, "AppArmor");
        let unconfined = of(serde_json::json!({"spec": {
            "securityContext": {"appArmorProfile": {"type": "Unconfined"}},
            "containers": [{"name": "c"}]}}));
        assert_eq!(n.admit(&unconfined, &[]), Ok(()));
        let with = Admission {
            apparmor_enabled: true,
            ..node()
        };
        assert_eq!(with.admit(&runtime_default, &[]), Ok(()));
    }

    fn with_ports(ports: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"spec": {"containers": [
            {"name": "c", "ports": ports}
        ]}}))
        .unwrap()
    }

    #[test]
    fn host_ports_conflict_as_the_scheduler_counts_them() {
        let n = node();
        let web = with_ports(serde_json::json!([{"containerPort": 80, "hostPort": 8080}]));
        let cases = [
            (
                serde_json::json!([{"containerPort": 81, "hostPort": 8080}]),
                false,
            ),
            (
                serde_json::json!([{"containerPort": 80, "hostPort": 8080, "protocol": "UDP"}]),
                true,
            ),
            (
                serde_json::json!([{"containerPort": 80, "hostPort": 8080, "hostIP": "10.0.0.1"}]),
                false,
            ),
            (
                serde_json::json!([{"containerPort": 80, "hostPort": 8081}]),
                true,
            ),
            (serde_json::json!([{"containerPort": 8080}]), true),
        ];
        for (ports, admitted) in cases {
            let got = n.admit(&with_ports(ports.clone()), &[&web]);
            assert_eq!(got.is_ok(), admitted, "{ports}: {got:?}");
            if let Err(r) = got {
                assert_eq!(r.reason, "NodePorts");
                assert_eq!(
                    r.message,
                    "Predicate NodePorts failed: node(s) didn't have free ports for the requested pod ports"
                );
            }
        }
        let one_ip = with_ports(
            serde_json::json!([{"containerPort": 80, "hostPort": 9000, "hostIP": "10.0.0.1"}]),
        );
        let other_ip = with_ports(
            serde_json::json!([{"containerPort": 80, "hostPort": 9000, "hostIP": "10.0.0.2"}]),
        );
        assert!(n.admit(&other_ip, &[&one_ip]).is_ok());
        let all = with_ports(serde_json::json!([{"containerPort": 80, "hostPort": 9000}]));
        assert!(n.admit(&all, &[&one_ip]).is_err());
    }

    #[test]
    fn node_labels_are_read_at_each_admission() {
        let (tx, rx) = watch::channel(NodeView::default());
        let n = Admission {
            node_labels: rx,
            ..node()
        };
        let ssd = pod("1m", "1Mi", serde_json::json!({"disk": "ssd"}));
        assert_eq!(n.admit(&ssd, &[]).unwrap_err().reason, "NodeAffinity");
        // A label added to the Node through the API after admission was built.
        tx.send_modify(|v| {
            v.labels.insert("disk".into(), "ssd".into());
        });
        assert_eq!(n.admit(&ssd, &[]), Ok(()));
    }

    #[test]
    fn no_execute_taints_and_the_pod_os_as_the_kubelet() {
        let (tx, rx) = watch::channel(NodeView::default());
        let n = Admission {
            node_labels: rx,
            ..node()
        };
        let taint = |key: &str, value: &str, effect: &str| k8s_openapi::api::core::v1::Taint {
            key: key.into(),
            value: Some(value.into()),
            effect: effect.into(),
            ..Default::default()
        };
        tx.send_modify(|v| {
            v.taints = vec![taint("a", "1", "NoSchedule"), taint("b", "2", "NoExecute")];
        });
        let with = |extra: serde_json::Value| -> Pod {
            let mut v = serde_json::json!({"metadata": {"name": "p"},
                "spec": {"containers": [{"name": "c"}]}});
            if let serde_json::Value::Object(m) = extra {
                for (k, x) in m {
                    v["spec"][k] = x;
                }
            }
            serde_json::from_value(v).unwrap()
        };
        let r = n.admit(&with(serde_json::json!({})), &[]).unwrap_err();
        assert_eq!(
            (r.reason.as_str(), r.message.as_str()),
            (
                "TaintToleration",
                "Predicate TaintToleration failed: node(s) had taints that the pod didn't tolerate"
            )
        );
        let cases = [
            (serde_json::json!([{"key": "b", "value": "2"}]), true),
            (
                serde_json::json!([{"key": "b", "operator": "Exists", "effect": "NoExecute"}]),
                true,
            ),
            (serde_json::json!([{"operator": "Exists"}]), true),
            (serde_json::json!([{"key": "b", "value": "3"}]), false),
            (
                serde_json::json!([{"key": "b", "operator": "Exists", "effect": "NoSchedule"}]),
                false,
            ),
        ];
        for (tolerations, ok) in cases {
            let got = n.admit(&with(serde_json::json!({"tolerations": tolerations})), &[]);
            assert_eq!(got.is_ok(), ok, "{tolerations}: {got:?}");
        }
        let windows = with(
            serde_json::json!({"os": {"name": "windows"}, "tolerations": [{"operator": "Exists"}]}),
        );
        assert_eq!(
            n.admit(&windows, &[]).unwrap_err().reason,
            "PodOSNotSupported"
        );
        let mut labelled = with(serde_json::json!({"tolerations": [{"operator": "Exists"}]}));
        labelled.metadata.labels = Some(BTreeMap::from([(
            "kubernetes.io/os".into(),
            "windows".into(),
        )]));
        assert_eq!(
            n.admit(&labelled, &[]).unwrap_err().reason,
            "PodOSSelectorNodeLabelDoesNotMatch"
        );
    }

    /// The kubelet's rejectPod: the event carries the admit handler's message, the status
    /// prefixes it.
    #[test]
    fn the_status_message_is_prefixed_the_events_is_not() {
        let r = node()
            .admit(&pod("3", "1Mi", serde_json::json!({})), &[])
            .unwrap_err();
        assert_eq!(
            r.message,
            "Node didn't have enough resource: cpu, requested: 3000, used: 0, capacity: 2000"
        );
        assert_eq!(
            r.status_message(),
            "Pod was rejected: Node didn't have enough resource: cpu, requested: 3000, used: 0, \
             capacity: 2000"
        );
    }

    #[test]
    fn resources_are_checked_before_affinity() {
        let r = node()
            .admit(&pod("3", "1Mi", serde_json::json!({"disk": "ssd"})), &[])
            .unwrap_err();
        assert_eq!(r.reason, "OutOfcpu");
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
            "Node didn't have enough resource: cpu, requested: 3000, used: 0, capacity: 2000"
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

    /// The kubelet's predicate admission over ephemeral-storage and scalar resources (fitsRequest
    /// after removeMissingExtendedResources): extended resources the Node does not list are not
    /// checked, those it lists and hugepages are, in whole units; OutOf<resource>.
    #[test]
    fn ephemeral_storage_extended_resources_and_hugepages() {
        let of = |requests: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"spec": {"containers": [
                {"name": "c", "resources": {"requests": requests}}
            ]}}))
            .unwrap()
        };
        let mut n = node();
        n.allocatable
            .insert("ephemeral-storage".into(), (10i128 << 30) * 1000);
        n.node_labels = watch::channel(NodeView {
            labels: BTreeMap::from([("kubernetes.io/os".into(), "linux".into())]),
            allocatable: BTreeMap::from([
                ("example.com/dongle".into(), 2000),
                ("hugepages-2Mi".into(), (4i128 << 20) * 1000),
            ]),
            ..Default::default()
        })
        .1;
        let storage = n
            .admit(&of(serde_json::json!({"ephemeral-storage": "11Gi"})), &[])
            .unwrap_err();
        assert_eq!(
            storage,
            Rejection {
                reason: "OutOfephemeral-storage".into(),
                message: format!(
                    "Node didn't have enough resource: ephemeral-storage, \
                     requested: {}, used: 0, capacity: {}",
                    11i64 << 30,
                    10i64 << 30
                ),
            }
        );
        let one = of(serde_json::json!({"example.com/dongle": "1"}));
        assert_eq!(n.admit(&one, &[]), Ok(()));
        let dongles = n
            .admit(&of(serde_json::json!({"example.com/dongle": "2"})), &[&one])
            .unwrap_err();
        assert_eq!(
            dongles,
            Rejection {
                reason: "OutOfexample.com/dongle".into(),
                message: "Node didn't have enough resource: example.com/dongle, \
                          requested: 2, used: 1, capacity: 2"
                    .into(),
            }
        );
        // Not on the Node: a cluster-level resource, not the node's to check.
        assert_eq!(
            n.admit(&of(serde_json::json!({"example.com/gadget": "5"})), &[]),
            Ok(())
        );
        let huge = n
            .admit(&of(serde_json::json!({"hugepages-2Mi": "6Mi"})), &[])
            .unwrap_err();
        assert_eq!(huge.reason, "OutOfhugepages-2Mi");
        // Hugepages the node does not have: capacity 0.
        let huge1g = n
            .admit(&of(serde_json::json!({"hugepages-1Gi": "1Gi"})), &[])
            .unwrap_err();
        assert!(
            huge1g.message.ends_with("used: 0, capacity: 0"),
            "{}",
            huge1g.message
        );
    }
}
