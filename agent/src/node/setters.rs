//! Node status as a list of small pure setters, each owning a few fields, as the kubelet's
//! nodestatus package: every setter is a function of the settings (from the config), the facts
//! observed this round (machine, runtime, clock) and the status it updates, so the status written
//! is a function of those and the status last read back.

use std::net::IpAddr;

use k8s_openapi::api::core::v1::{
    ContainerImage, DaemonEndpoint, NodeAddress, NodeCondition, NodeDaemonEndpoints, NodeFeatures,
    NodeRuntimeHandler, NodeStatus, NodeSwapStatus, NodeSystemInfo,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::allocatable::{self, Resources};
use super::machine::{self, MachineInfo};
use crate::eviction::{Condition, Conditions};

/// At most this many images are reported (the kubelet's default nodeStatusMaxImages).
pub const MAX_IMAGES: usize = 50;
/// At most this many names are reported per image.
pub const MAX_NAMES_PER_IMAGE: usize = 5;

/// What the node status says that comes from the configuration: fixed for the process.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The node's name, also its Hostname address.
    pub node_name: String,
    /// InternalIP addresses, primary first.
    pub node_ips: Vec<IpAddr>,
    /// The kubelet port, daemonEndpoints.kubeletEndpoint.Port.
    pub port: u16,
    /// Capacity of pods.
    pub max_pods: u32,
    /// systemReserved, kubeReserved and hard eviction, off capacity.
    pub reserved: crate::config::Reserved,
    /// nodeInfo.kubeletVersion, `v1.37.2-bosun.0.1.0`.
    pub kubelet_version: String,
}

/// What was observed this round.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Facts {
    /// The clock, to the second.
    pub now: Timestamp,
    /// The machine.
    pub machine: MachineInfo,
    /// Size of the filesystem holding the root dir; None when it could not be read.
    pub rootfs_capacity: Option<u64>,
    /// `containerd://1.6.20~ds1`.
    pub runtime_version: String,
    /// Why the runtime is not ready (the kubelet's runtimeState.runtimeErrors); empty: ready.
    pub runtime_errors: Vec<String>,
    /// Why the runtime's network is not ready; empty: ready.
    pub network_errors: Vec<String>,
    /// Runtime handlers the runtime reports.
    pub runtime_handlers: Vec<NodeRuntimeHandler>,
    /// Runtime features the runtime reports, if it reports them.
    pub runtime_features: Option<NodeFeatures>,
    /// Images on the node, largest first.
    pub images: Vec<ContainerImage>,
    /// The eviction manager's pressure conditions.
    pub pressure: Conditions,
    /// The node shutdown manager says the node is shutting down.
    pub shutting_down: bool,
    /// The unique names of the attachable volumes mounted here, sorted (the volume manager's
    /// GetVolumesInUse).
    pub volumes_in_use: Vec<String>,
    /// The device plugins' resources (the device manager's GetCapacity).
    pub devices: crate::devicemanager::Capacity,
}

/// One setter: updates the fields it owns.
pub type Setter = fn(&mut NodeStatus, &Settings, &Facts);

/// The setters in the kubelet's order; Ready is the last condition.
pub const SETTERS: &[Setter] = &[
    node_address,
    machine_info,
    version_info,
    daemon_endpoints,
    images,
    go_runtime,
    runtime_handlers,
    features,
    memory_pressure_condition,
    disk_pressure_condition,
    pid_pressure_condition,
    ready_condition,
    volumes_in_use,
    declared_features,
];

/// The features of the NodeDeclaredFeatures framework (GA in v1.37) that Bosun implements, sorted:
/// the API server refuses a pod update needing a feature its node does not declare. The kubelet
/// declares every one its feature gates enable; Bosun only those it acts on.
pub const DECLARED_FEATURES: &[&str] = &[
    // In-place resize of regular (non-sidecar) init containers.
    "InPlacePodVerticalScalingInitContainers",
];

/// Applies every setter to `status`.
pub fn apply(status: &mut NodeStatus, settings: &Settings, facts: &Facts) {
    for setter in SETTERS {
        setter(status, settings, facts);
    }
}

/// Whether `new` differs from `old` in anything but condition heartbeat times, as the kubelet's
/// nodeStatusHasChanged decides whether a write is due before the report interval.
pub fn changed(old: &NodeStatus, new: &NodeStatus) -> bool {
    let strip = |s: &NodeStatus| {
        let mut s = s.clone();
        for c in s.conditions.iter_mut().flatten() {
            c.last_heartbeat_time = None;
        }
        s
    };
    strip(old) != strip(new)
}

/// The kubelet's node events for condition changes from `old` to `new` (a condition appearing
/// counts as a change): `NodeReady`, `NodeNotReady`, `NodeHasSufficientMemory`, ...
pub fn transition_events(old: &NodeStatus, new: &NodeStatus) -> Vec<&'static str> {
    const REASONS: [(&str, &str, &str); 4] = [
        (
            "MemoryPressure",
            "NodeHasInsufficientMemory",
            "NodeHasSufficientMemory",
        ),
        (
            "DiskPressure",
            "NodeHasDiskPressure",
            "NodeHasNoDiskPressure",
        ),
        (
            "PIDPressure",
            "NodeHasInsufficientPID",
            "NodeHasSufficientPID",
        ),
        ("Ready", "NodeReady", "NodeNotReady"),
    ];
    let mut out = Vec::new();
    for (type_, if_true, otherwise) in REASONS {
        let Some(now) = condition(new, type_) else {
            continue;
        };
        if condition(old, type_).map(|c| c.status.as_str()) == Some(now.status.as_str()) {
            continue;
        }
        out.push(if now.status == "True" {
            if_true
        } else {
            otherwise
        });
    }
    out
}

/// The condition of type `type_`, if present.
pub fn condition<'a>(status: &'a NodeStatus, type_: &str) -> Option<&'a NodeCondition> {
    status
        .conditions
        .iter()
        .flatten()
        .find(|c| c.type_ == type_)
}

/// InternalIP addresses (the node IPs), then Hostname.
pub fn node_address(status: &mut NodeStatus, s: &Settings, _: &Facts) {
    let mut addresses: Vec<NodeAddress> = s
        .node_ips
        .iter()
        .map(|ip| NodeAddress {
            type_: "InternalIP".into(),
            address: ip.to_string(),
        })
        .collect();
    addresses.push(NodeAddress {
        type_: "Hostname".into(),
        address: s.node_name.clone(),
    });
    status.addresses = Some(addresses);
}

/// Capacity, allocatable, machineID, systemUUID, bootID and swap (when there is swap).
pub fn machine_info(status: &mut NodeStatus, s: &Settings, f: &Facts) {
    let m = &f.machine;
    let info = status.node_info.get_or_insert_with(Default::default);
    info.machine_id = m.machine_id.clone();
    info.system_uuid = m.system_uuid.clone();
    info.boot_id = m.boot_id.clone();
    // Only a machine with swap reports it (the API rejects a zero capacity).
    info.swap = (m.swap_capacity > 0).then_some(NodeSwapStatus {
        capacity: Some(m.swap_capacity as i64),
    });
    let capacity: Resources = allocatable::capacity(m, f.rootfs_capacity, s.max_pods);
    let alloc = allocatable::node_allocatable(&capacity, &s.reserved);
    // Resources others own (extended resources) are kept as they are.
    let cap_out = status.capacity.get_or_insert_with(Default::default);
    cap_out.extend(allocatable::to_api(&capacity));
    let alloc_out = status.allocatable.get_or_insert_with(Default::default);
    alloc_out.extend(allocatable::to_api(&alloc));
    // As the kubelet's MachineInfo: an extended resource gone from the capacity leaves the
    // allocatable, and one advertised in the capacity (a PATCH of the Node's status) is
    // allocatable whole, nothing being reserved of it.
    alloc_out.retain(|k, _| cap_out.contains_key(k) || !crate::resource::is_extended_resource(k));
    device_plugin_resources(cap_out, &f.devices);
    for (k, v) in cap_out.iter() {
        if !alloc.contains_key(k) {
            alloc_out.insert(k.clone(), v.clone());
        }
    }
    for (k, n) in &f.devices.allocatable {
        alloc_out.insert(k.clone(), Quantity(n.to_string()));
    }
}

/// The device plugins' capacity as the kubelet's MachineInfo writes it: every device of each
/// resource (healthy or not), and 0 for a resource whose plugin left more than the grace period
/// ago; the allocatable is the healthy devices.
fn device_plugin_resources(
    cap_out: &mut std::collections::BTreeMap<String, Quantity>,
    d: &crate::devicemanager::Capacity,
) {
    for (k, n) in &d.capacity {
        cap_out.insert(k.clone(), Quantity(n.to_string()));
    }
    for k in &d.removed {
        cap_out.insert(k.clone(), Quantity("0".into()));
    }
}

/// kernelVersion, osImage, containerRuntimeVersion, kubeletVersion; kubeProxyVersion is no
/// longer reported.
pub fn version_info(status: &mut NodeStatus, s: &Settings, f: &Facts) {
    let info = status.node_info.get_or_insert_with(Default::default);
    info.kernel_version = f.machine.kernel_version.clone();
    info.os_image = f.machine.os_image.clone();
    info.container_runtime_version = f.runtime_version.clone();
    info.kubelet_version = s.kubelet_version.clone();
    info.kube_proxy_version = String::new();
}

/// daemonEndpoints.kubeletEndpoint.Port.
pub fn daemon_endpoints(status: &mut NodeStatus, s: &Settings, _: &Facts) {
    status.daemon_endpoints = Some(NodeDaemonEndpoints {
        kubelet_endpoint: Some(DaemonEndpoint {
            port: i32::from(s.port),
        }),
    });
}

/// The largest images, with at most [`MAX_NAMES_PER_IMAGE`] names each.
pub fn images(status: &mut NodeStatus, _: &Settings, f: &Facts) {
    let list: Vec<ContainerImage> = f
        .images
        .iter()
        .take(MAX_IMAGES)
        .map(|i| ContainerImage {
            names: i
                .names
                .as_ref()
                .map(|n| n.iter().take(MAX_NAMES_PER_IMAGE).cloned().collect()),
            size_bytes: i.size_bytes,
        })
        .collect();
    status.images = (!list.is_empty()).then_some(list);
}

/// operatingSystem and architecture, in Go's names.
pub fn go_runtime(status: &mut NodeStatus, _: &Settings, _: &Facts) {
    let info: &mut NodeSystemInfo = status.node_info.get_or_insert_with(Default::default);
    info.operating_system = machine::go_os().into();
    info.architecture = machine::go_arch().into();
}

/// The runtime's handlers.
pub fn runtime_handlers(status: &mut NodeStatus, _: &Settings, f: &Facts) {
    status.runtime_handlers = (!f.runtime_handlers.is_empty()).then(|| f.runtime_handlers.clone());
}

/// The runtime's features, when it reports them.
pub fn features(status: &mut NodeStatus, _: &Settings, f: &Facts) {
    if f.runtime_features.is_some() {
        status.features = f.runtime_features.clone();
    }
}

/// `declaredFeatures` (the kubelet's setNodeStatus, after the setters).
pub fn declared_features(status: &mut NodeStatus, _: &Settings, _: &Facts) {
    status.declared_features = Some(DECLARED_FEATURES.iter().map(|f| f.to_string()).collect());
}

/// What a pressure condition says when True and when False: (reason, message) each.
/// `volumesInUse` (the kubelet's VolumesInUse setter); absent when none, as the API stores an
/// empty list.
pub fn volumes_in_use(status: &mut NodeStatus, _: &Settings, f: &Facts) {
    status.volumes_in_use = (!f.volumes_in_use.is_empty()).then(|| f.volumes_in_use.clone());
}

struct PressureTexts {
    type_: &'static str,
    pressure: (&'static str, &'static str),
    no_pressure: (&'static str, &'static str),
}

/// Sets a pressure condition as the kubelet's setters: heartbeat always, status, reason, message
/// and transition time on a change (a new condition starts Unknown, so it always changes).
fn pressure(status: &mut NodeStatus, now: &Timestamp, under: bool, texts: PressureTexts) {
    let now = Time(*now);
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    let i = match conditions.iter().position(|c| c.type_ == texts.type_) {
        Some(i) => i,
        None => {
            conditions.push(NodeCondition {
                type_: texts.type_.into(),
                status: "Unknown".into(),
                ..Default::default()
            });
            conditions.len() - 1
        }
    };
    let c = &mut conditions[i];
    c.last_heartbeat_time = Some(now.clone());
    let (want, (reason, message)) = if under {
        ("True", texts.pressure)
    } else {
        ("False", texts.no_pressure)
    };
    if c.status != want {
        c.status = want.into();
        c.reason = Some(reason.into());
        c.message = Some(message.into());
        c.last_transition_time = Some(now);
    }
}

/// MemoryPressure, from the eviction manager.
pub fn memory_pressure_condition(status: &mut NodeStatus, _: &Settings, f: &Facts) {
    let under = f.pressure.contains(&Condition::MemoryPressure);
    pressure(
        status,
        &f.now,
        under,
        PressureTexts {
            type_: "MemoryPressure",
            pressure: (
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
            ),
            no_pressure: (
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
            ),
        },
    );
}

/// DiskPressure, from the eviction manager.
pub fn disk_pressure_condition(status: &mut NodeStatus, _: &Settings, f: &Facts) {
    let under = f.pressure.contains(&Condition::DiskPressure);
    pressure(
        status,
        &f.now,
        under,
        PressureTexts {
            type_: "DiskPressure",
            pressure: ("KubeletHasDiskPressure", "kubelet has disk pressure"),
            no_pressure: ("KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        },
    );
}

/// PIDPressure, from the eviction manager.
pub fn pid_pressure_condition(status: &mut NodeStatus, _: &Settings, f: &Facts) {
    let under = f.pressure.contains(&Condition::PidPressure);
    pressure(
        status,
        &f.now,
        under,
        PressureTexts {
            type_: "PIDPressure",
            pressure: (
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
            ),
            no_pressure: (
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
            ),
        },
    );
}

/// Ready: True unless the runtime or its network is not ready, the node is shutting down or a
/// required capacity is missing; the transition time changes only when the status does.
pub fn ready_condition(status: &mut NodeStatus, _: &Settings, f: &Facts) {
    let now = Time(f.now);
    let mut errors: Vec<String> = f
        .runtime_errors
        .iter()
        .chain(&f.network_errors)
        .cloned()
        .collect();
    if f.shutting_down {
        errors.push(crate::nodeshutdown::NOT_READY_MESSAGE.into());
    }
    let missing: Vec<&str> = ["cpu", "memory", "pods", "ephemeral-storage"]
        .into_iter()
        .filter(|r| !status.capacity.as_ref().is_some_and(|c| c.contains_key(*r)))
        .collect();
    if !missing.is_empty() {
        errors.push(format!(
            "missing node capacity for resources: {}",
            missing.join(", ")
        ));
    }
    let mut new = if errors.is_empty() {
        NodeCondition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: Some("KubeletReady".into()),
            message: Some("kubelet is posting ready status".into()),
            ..Default::default()
        }
    } else {
        NodeCondition {
            type_: "Ready".into(),
            status: "False".into(),
            reason: Some("KubeletNotReady".into()),
            message: Some(errors.join("\n")),
            ..Default::default()
        }
    };
    new.last_heartbeat_time = Some(now.clone());
    let conditions = status.conditions.get_or_insert_with(Vec::new);
    match conditions.iter_mut().find(|c| c.type_ == "Ready") {
        Some(old) => {
            new.last_transition_time = if old.status == new.status {
                old.last_transition_time.clone()
            } else {
                Some(now)
            };
            *old = new;
        }
        None => {
            new.last_transition_time = Some(now);
            conditions.push(new);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            node_name: "n1".into(),
            node_ips: vec!["198.18.0.1".parse().unwrap()],
            port: 10250,
            max_pods: 110,
            reserved: crate::config::Reserved {
                hard_eviction: [(
                    "memory".to_string(),
                    crate::config::eviction::ThresholdValue::Quantity((100 << 20) * 1000),
                )]
                .into(),
                ..Default::default()
            },
            kubelet_version: "v1.37.2-bosun.0.1.0".into(),
        }
    }

    fn ts(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    fn facts(now: i64) -> Facts {
        Facts {
            now: ts(now),
            machine: MachineInfo {
                num_cores: 2,
                memory_capacity: 4 << 30,
                machine_id: "mid".into(),
                boot_id: "bid".into(),
                kernel_version: "6.1.0".into(),
                os_image: "Debian GNU/Linux 12 (bookworm)".into(),
                ..Default::default()
            },
            rootfs_capacity: Some(10 << 30),
            runtime_version: "containerd://1.6.20~ds1".into(),
            ..Default::default()
        }
    }

    fn ready(s: &NodeStatus) -> &NodeCondition {
        condition(s, "Ready").unwrap()
    }

    /// The kubelet's MachineInfo with an extended resource advertised in the capacity by a PATCH
    /// of the Node's status: allocatable whole; once gone from the capacity, gone from both.
    #[test]
    fn extended_resources_in_the_capacity_are_allocatable() {
        use k8s_openapi::apimachinery::pkg::api::resource::Quantity as Q;
        let mut st = NodeStatus::default();
        apply(&mut st, &settings(), &facts(100));
        st.capacity
            .as_mut()
            .unwrap()
            .insert("example.com/dongle".into(), Q("4".into()));
        apply(&mut st, &settings(), &facts(100));
        assert_eq!(
            st.allocatable.as_ref().unwrap()["example.com/dongle"].0,
            "4"
        );
        assert_eq!(st.allocatable.as_ref().unwrap()["memory"].0, "3996Mi");
        st.capacity.as_mut().unwrap().remove("example.com/dongle");
        apply(&mut st, &settings(), &facts(100));
        assert!(
            !st.allocatable
                .as_ref()
                .unwrap()
                .contains_key("example.com/dongle")
        );
    }

    /// volumesInUse follows the mounted attachable volumes, and goes (absent, as the API keeps
    /// an empty list) once none is left; a change is a change to write.
    #[test]
    fn volumes_in_use_follow_the_mounted_volumes() {
        let mut st = NodeStatus::default();
        let mut f = facts(100);
        f.volumes_in_use = vec!["kubernetes.io/csi/d^h".into()];
        apply(&mut st, &settings(), &f);
        assert_eq!(
            st.volumes_in_use,
            Some(vec!["kubernetes.io/csi/d^h".to_string()])
        );
        let before = st.clone();
        f.volumes_in_use.clear();
        apply(&mut st, &settings(), &f);
        assert_eq!(st.volumes_in_use, None);
        assert!(changed(&before, &st));
    }

    #[test]
    fn fresh_status() {
        let mut st = NodeStatus::default();
        apply(&mut st, &settings(), &facts(100));
        let info = st.node_info.as_ref().unwrap();
        assert_eq!(info.machine_id, "mid");
        assert_eq!(info.boot_id, "bid");
        assert_eq!(info.kernel_version, "6.1.0");
        assert_eq!(info.os_image, "Debian GNU/Linux 12 (bookworm)");
        assert_eq!(info.container_runtime_version, "containerd://1.6.20~ds1");
        assert_eq!(info.kubelet_version, "v1.37.2-bosun.0.1.0");
        assert_eq!(info.kube_proxy_version, "");
        assert_eq!(info.operating_system, "linux");
        assert_eq!(info.swap, None, "no swap: none reported");
        let cap = st.capacity.as_ref().unwrap();
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "4Gi");
        assert_eq!(cap["pods"].0, "110");
        assert_eq!(cap["ephemeral-storage"].0, "10Gi");
        assert_eq!(st.allocatable.as_ref().unwrap()["memory"].0, "3996Mi");
        let addrs: Vec<(&str, &str)> = st
            .addresses
            .iter()
            .flatten()
            .map(|a| (a.type_.as_str(), a.address.as_str()))
            .collect();
        assert_eq!(addrs, [("InternalIP", "198.18.0.1"), ("Hostname", "n1")]);
        assert_eq!(
            st.declared_features.as_deref(),
            Some(&["InPlacePodVerticalScalingInitContainers".to_string()][..])
        );
        assert_eq!(
            st.daemon_endpoints
                .clone()
                .unwrap()
                .kubelet_endpoint
                .unwrap()
                .port,
            10250
        );
        let types: Vec<&str> = st
            .conditions
            .iter()
            .flatten()
            .map(|c| c.type_.as_str())
            .collect();
        assert_eq!(
            types,
            ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"]
        );
        for c in st.conditions.iter().flatten() {
            assert_eq!(c.last_heartbeat_time, Some(Time(ts(100))), "{}", c.type_);
            assert_eq!(c.last_transition_time, Some(Time(ts(100))), "{}", c.type_);
        }
        let r = ready(&st);
        assert_eq!(
            (r.status.as_str(), r.reason.as_deref(), r.message.as_deref()),
            (
                "True",
                Some("KubeletReady"),
                Some("kubelet is posting ready status")
            )
        );
        let mp = condition(&st, "MemoryPressure").unwrap();
        assert_eq!(mp.reason.as_deref(), Some("KubeletHasSufficientMemory"));
        assert_eq!(
            condition(&st, "DiskPressure").unwrap().reason.as_deref(),
            Some("KubeletHasNoDiskPressure")
        );
        assert_eq!(
            condition(&st, "PIDPressure").unwrap().reason.as_deref(),
            Some("KubeletHasSufficientPID")
        );
    }

    /// Heartbeat moves on every round; transition time only when the status flips.
    #[test]
    fn ready_transitions() {
        let net = "container runtime network not ready: NetworkReady=false reason:NetworkPluginNotReady message:cni plugin not initialized";
        // (round time, network errors, want status, want transition time)
        let rounds: [(i64, Vec<&str>, &str, i64); 5] = [
            (100, vec![net], "False", 100),
            (110, vec![net], "False", 100),
            (120, vec![], "True", 120),
            (130, vec![], "True", 120),
            (140, vec![net], "False", 140),
        ];
        let mut st = NodeStatus::default();
        for (now, errs, want, transition) in rounds {
            let mut f = facts(now);
            f.network_errors = errs.iter().map(|s| s.to_string()).collect();
            apply(&mut st, &settings(), &f);
            let r = ready(&st);
            assert_eq!(r.status, want, "at {now}");
            assert_eq!(
                r.last_transition_time,
                Some(Time(ts(transition))),
                "at {now}"
            );
            assert_eq!(r.last_heartbeat_time, Some(Time(ts(now))), "at {now}");
            if want == "False" {
                assert_eq!(r.reason.as_deref(), Some("KubeletNotReady"));
                assert_eq!(r.message.as_deref(), Some(net));
            }
            // The pressure conditions never transition after the first round.
            let mp = condition(&st, "MemoryPressure").unwrap();
            assert_eq!(mp.last_transition_time, Some(Time(ts(100))));
        }
    }

    /// The pressure conditions follow the eviction manager, with the kubelet's texts.
    #[test]
    fn pressure_conditions_follow_the_eviction_manager() {
        use Condition::*;
        // (round time, pressure, condition, want status, reason, message, transition time)
        type Round = (
            i64,
            &'static [Condition],
            &'static str,
            &'static str,
            &'static str,
            &'static str,
            i64,
        );
        let rounds: &[Round] = &[
            (
                100,
                &[],
                "MemoryPressure",
                "False",
                "KubeletHasSufficientMemory",
                "kubelet has sufficient memory available",
                100,
            ),
            (
                110,
                &[MemoryPressure],
                "MemoryPressure",
                "True",
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
                110,
            ),
            (
                120,
                &[MemoryPressure, DiskPressure],
                "DiskPressure",
                "True",
                "KubeletHasDiskPressure",
                "kubelet has disk pressure",
                120,
            ),
            (
                120,
                &[MemoryPressure, DiskPressure],
                "MemoryPressure",
                "True",
                "KubeletHasInsufficientMemory",
                "kubelet has insufficient memory available",
                110,
            ),
            (
                130,
                &[PidPressure],
                "PIDPressure",
                "True",
                "KubeletHasInsufficientPID",
                "kubelet has insufficient PID available",
                130,
            ),
            (
                130,
                &[PidPressure],
                "DiskPressure",
                "False",
                "KubeletHasNoDiskPressure",
                "kubelet has no disk pressure",
                130,
            ),
            (
                140,
                &[],
                "PIDPressure",
                "False",
                "KubeletHasSufficientPID",
                "kubelet has sufficient PID available",
                140,
            ),
        ];
        let mut st = NodeStatus::default();
        let mut events = Vec::new();
        for &(now, under, type_, want, reason, message, transition) in rounds {
            let mut f = facts(now);
            f.pressure = under.iter().copied().collect();
            let old = st.clone();
            apply(&mut st, &settings(), &f);
            events.extend(transition_events(&old, &st));
            let c = condition(&st, type_).unwrap();
            assert_eq!(
                (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
                (want, Some(reason), Some(message)),
                "{type_} at {now}"
            );
            assert_eq!(
                c.last_transition_time,
                Some(Time(ts(transition))),
                "{type_} at {now}"
            );
            assert_eq!(c.last_heartbeat_time, Some(Time(ts(now))));
        }
        assert!(events.contains(&"NodeHasInsufficientMemory"), "{events:?}");
        assert!(events.contains(&"NodeHasDiskPressure"), "{events:?}");
        assert!(events.contains(&"NodeHasInsufficientPID"), "{events:?}");
    }

    #[test]
    fn transition_events_on_appearance_and_change_only() {
        let cond = |t: &str, s: &str| NodeCondition {
            type_: t.into(),
            status: s.into(),
            ..Default::default()
        };
        let status = |c: Vec<NodeCondition>| NodeStatus {
            conditions: Some(c),
            ..Default::default()
        };
        let first = status(vec![
            cond("MemoryPressure", "False"),
            cond("DiskPressure", "False"),
            cond("PIDPressure", "False"),
            cond("Ready", "True"),
        ]);
        assert_eq!(
            transition_events(&NodeStatus::default(), &first),
            [
                "NodeHasSufficientMemory",
                "NodeHasNoDiskPressure",
                "NodeHasSufficientPID",
                "NodeReady"
            ]
        );
        assert!(transition_events(&first, &first).is_empty());
        let down = status(vec![
            cond("MemoryPressure", "True"),
            cond("DiskPressure", "False"),
            cond("PIDPressure", "False"),
            cond("Ready", "False"),
        ]);
        assert_eq!(
            transition_events(&first, &down),
            ["NodeHasInsufficientMemory", "NodeNotReady"]
        );
    }

    #[test]
    fn ready_false_joins_every_reason() {
        let mut f = facts(1);
        f.runtime_errors = vec!["container runtime is down".into()];
        f.network_errors = vec!["container runtime network not ready: x".into()];
        let mut st = NodeStatus::default();
        apply(&mut st, &settings(), &f);
        assert_eq!(
            ready(&st).message.as_deref(),
            Some("container runtime is down\ncontainer runtime network not ready: x")
        );
    }

    /// A node shutting down is NotReady with the kubelet's message (its shutdown manager's
    /// ShutdownStatus error), Ready again when the shutdown is cancelled.
    #[test]
    fn a_node_shutting_down_is_not_ready() {
        let mut f = facts(1);
        f.shutting_down = true;
        let mut st = NodeStatus::default();
        apply(&mut st, &settings(), &f);
        let r = ready(&st);
        assert_eq!(
            (r.status.as_str(), r.reason.as_deref(), r.message.as_deref()),
            (
                "False",
                Some("KubeletNotReady"),
                Some("node is shutting down")
            )
        );
        f.shutting_down = false;
        apply(&mut st, &settings(), &f);
        assert_eq!(ready(&st).status, "True");
    }

    #[test]
    fn missing_capacity_is_not_ready() {
        let mut st = NodeStatus::default();
        ready_condition(&mut st, &settings(), &facts(1));
        let r = ready(&st);
        assert_eq!(r.status, "False");
        assert_eq!(
            r.message.as_deref(),
            Some("missing node capacity for resources: cpu, memory, pods, ephemeral-storage")
        );
    }

    #[test]
    fn change_detection_ignores_heartbeats() {
        let mut a = NodeStatus::default();
        apply(&mut a, &settings(), &facts(100));
        let mut b = a.clone();
        apply(&mut b, &settings(), &facts(110));
        assert!(!changed(&a, &b), "only heartbeats moved");
        let mut c = b.clone();
        let mut f = facts(120);
        f.machine.boot_id = "other".into();
        apply(&mut c, &settings(), &f);
        assert!(changed(&b, &c), "boot id changed");
    }

    #[test]
    fn keeps_what_others_own() {
        let mut st = NodeStatus {
            conditions: Some(vec![NodeCondition {
                type_: "NetworkUnavailable".into(),
                status: "False".into(),
                ..Default::default()
            }]),
            capacity: Some([("example.com/dongle".to_string(), Default::default())].into()),
            ..Default::default()
        };
        apply(&mut st, &settings(), &facts(1));
        assert!(condition(&st, "NetworkUnavailable").is_some());
        assert!(st.capacity.unwrap().contains_key("example.com/dongle"));
        assert_eq!(st.conditions.unwrap().last().unwrap().type_, "Ready");
    }

    #[test]
    fn images_are_capped() {
        let mut f = facts(1);
        f.images = (0..60)
            .map(|i| ContainerImage {
                names: Some((0..7).map(|n| format!("img{i}:{n}")).collect()),
                size_bytes: Some(1000 - i),
            })
            .collect();
        let mut st = NodeStatus::default();
        images(&mut st, &settings(), &f);
        let list = st.images.unwrap();
        assert_eq!(list.len(), MAX_IMAGES);
        assert!(
            list.iter()
                .all(|i| i.names.as_ref().unwrap().len() == MAX_NAMES_PER_IMAGE)
        );
        let mut st = NodeStatus::default();
        images(&mut st, &settings(), &facts(1));
        assert_eq!(st.images, None);
    }
}
