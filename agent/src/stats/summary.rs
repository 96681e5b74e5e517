//! The kubelet's Summary API (`stats/v1alpha1`): what `/stats/summary` serves.
//!
//! Field names and omission follow the kubelet's JSON exactly: `Option` fields and empty lists
//! marked `omitempty` there are skipped when empty here; times are RFC 3339 at second precision
//! on the wire (the value kept in memory has full precision, for rate computations).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde::{Deserialize, Deserializer, Serialize};

/// A list the kubelet marshals without `omitempty`: `null` reads as empty.
fn nullable_vec<'de, D, T>(d: D) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Ok(Option::<Vec<T>>::deserialize(d)?.unwrap_or_default())
}

/// Top-level container for node and pod stats.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    /// Overall node stats.
    pub node: NodeStats,
    /// Per-pod stats.
    #[serde(default, deserialize_with = "nullable_vec")]
    pub pods: Vec<PodStats>,
}

/// Node-level stats.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeStats {
    /// Name of the measured node.
    pub node_name: String,
    /// Stats of system daemons tracked as raw containers (`kubelet`, `runtime`, `misc`, `pods`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub system_containers: Vec<ContainerStats>,
    /// When collection of the node-scoped stats (re)started.
    pub start_time: Time,
    /// CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// Block IO pressure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<IoStats>,
    /// Network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    /// The filesystem holding the root dir (nodefs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<FsStats>,
    /// The container runtime's filesystems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<RuntimeStats>,
    /// Process ids in use and their limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rlimit: Option<RlimitStats>,
    /// Swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<SwapStats>,
}

/// Process-id limits of the OS.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RlimitStats {
    /// When these stats were updated.
    pub time: Time,
    /// The maximum number of tasks (`/proc/sys/kernel/pid_max`).
    #[serde(default, rename = "maxpid", skip_serializing_if = "Option::is_none")]
    pub max_pid: Option<i64>,
    /// The number of tasks (threads) in the OS.
    #[serde(default, rename = "curproc", skip_serializing_if = "Option::is_none")]
    pub num_of_running_processes: Option<i64>,
}

/// Filesystems of the container runtime.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RuntimeStats {
    /// Where images are stored; `usedBytes` is the bytes images occupy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_fs: Option<FsStats>,
    /// Where writable layers are stored, when apart from the image filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_fs: Option<FsStats>,
}

/// System container name: the kubelet (here: bosun).
pub const SYSTEM_CONTAINER_KUBELET: &str = "kubelet";
/// System container name: the container runtime.
pub const SYSTEM_CONTAINER_RUNTIME: &str = "runtime";
/// System container name: non-Kubernetes processes.
pub const SYSTEM_CONTAINER_MISC: &str = "misc";
/// System container name: all pods.
pub const SYSTEM_CONTAINER_PODS: &str = "pods";

/// Process stats.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessStats {
    /// Number of processes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub process_count: Option<u64>,
}

/// Pod-level stats.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStats {
    /// The measured pod.
    pub pod_ref: PodReference,
    /// When collection of pod-scoped stats (re)started.
    pub start_time: Time,
    /// The pod's containers.
    #[serde(default, deserialize_with = "nullable_vec")]
    pub containers: Vec<ContainerStats>,
    /// CPU of the pod cgroup (all containers and overhead).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory of the pod cgroup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// Block IO pressure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<IoStats>,
    /// The pod's network namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<NetworkStats>,
    /// Volume usage.
    #[serde(
        default,
        rename = "volume",
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable_vec"
    )]
    pub volume_stats: Vec<VolumeStats>,
    /// Containers' and emptyDir volumes' filesystem usage.
    #[serde(
        default,
        rename = "ephemeral-storage",
        skip_serializing_if = "Option::is_none"
    )]
    pub ephemeral_storage: Option<FsStats>,
    /// Processes.
    #[serde(
        default,
        rename = "process_stats",
        skip_serializing_if = "Option::is_none"
    )]
    pub process_stats: Option<ProcessStats>,
    /// Swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<SwapStats>,
}

/// Container-level stats.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerStats {
    /// The container's name.
    pub name: String,
    /// When collection for this container (re)started.
    pub start_time: Time,
    /// CPU.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<CpuStats>,
    /// Memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<MemoryStats>,
    /// Block IO pressure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub io: Option<IoStats>,
    /// Accelerators (never filled by bosun).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable_vec"
    )]
    pub accelerators: Vec<AcceleratorStats>,
    /// The writable layer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rootfs: Option<FsStats>,
    /// The container's logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logs: Option<FsStats>,
    /// User-defined metrics (never filled by bosun).
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable_vec"
    )]
    pub user_defined_metrics: Vec<UserDefinedMetric>,
    /// Swap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap: Option<SwapStats>,
}

/// Enough to locate a pod.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PodReference {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
    /// UID.
    pub uid: String,
}

/// Counters of one network interface.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InterfaceStats {
    /// Interface name.
    pub name: String,
    /// Cumulative bytes received.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_bytes: Option<u64>,
    /// Cumulative receive errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_errors: Option<u64>,
    /// Cumulative bytes transmitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_bytes: Option<u64>,
    /// Cumulative transmit errors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_errors: Option<u64>,
}

/// Network stats: the default interface inline, then every interface.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NetworkStats {
    /// When these stats were updated.
    pub time: Time,
    /// The default interface (`eth0`), inlined.
    #[serde(flatten)]
    pub default: InterfaceStats,
    /// All interfaces.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "nullable_vec"
    )]
    pub interfaces: Vec<InterfaceStats>,
}

/// CPU usage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CpuStats {
    /// When these stats were updated.
    pub time: Time,
    /// Usage averaged over the sample window, in nanocores (core-nanoseconds per second).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_nano_cores: Option<u64>,
    /// Cumulative usage in core-nanoseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_core_nano_seconds: Option<u64>,
    /// CPU pressure stall information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi: Option<PsiStats>,
}

/// Pressure stall information of one resource (`<resource>.pressure`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PsiStats {
    /// All non-idle tasks stalled at once.
    pub full: PsiData,
    /// At least one task stalled.
    pub some: PsiData,
}

/// One line of a pressure file.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PsiData {
    /// Cumulative stall time, as the pressure file gives it (microseconds; cAdvisor passes the
    /// value on unchanged).
    pub total: u64,
    /// Percent of time stalled over the last 10 s.
    pub avg10: f64,
    /// Over the last 60 s.
    pub avg60: f64,
    /// Over the last 300 s.
    pub avg300: f64,
}

/// Block IO: its pressure stall information.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IoStats {
    /// When these stats were updated.
    pub time: Time,
    /// IO pressure stall information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi: Option<PsiStats>,
}

/// Memory usage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStats {
    /// When these stats were updated.
    pub time: Time,
    /// Limit minus working set; absent without a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// Total memory in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage_bytes: Option<u64>,
    /// Usage minus inactive file cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_set_bytes: Option<u64>,
    /// Anonymous and swap cache memory.
    #[serde(default, rename = "rssBytes", skip_serializing_if = "Option::is_none")]
    pub rss_bytes: Option<u64>,
    /// Cumulative minor page faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page_faults: Option<u64>,
    /// Cumulative major page faults.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub major_page_faults: Option<u64>,
    /// Memory pressure stall information.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub psi: Option<PsiStats>,
}

/// Swap usage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SwapStats {
    /// When these stats were updated.
    pub time: Time,
    /// Swap limit minus swap usage; absent without a limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_available_bytes: Option<u64>,
    /// Swap in use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swap_usage_bytes: Option<u64>,
}

/// An accelerator attached to a container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AcceleratorStats {
    /// Make (nvidia, amd, ...).
    pub make: String,
    /// Model.
    pub model: String,
    /// ID.
    #[serde(rename = "id")]
    pub id: String,
    /// Total memory in bytes.
    pub memory_total: u64,
    /// Allocated memory in bytes.
    pub memory_used: u64,
    /// Percent of the sample period the accelerator was busy.
    pub duty_cycle: u64,
}

/// Filesystem usage of one volume.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeStats {
    /// The usage, inlined.
    #[serde(flatten)]
    pub fs: FsStats,
    /// The volume's name in the pod spec.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The claim, for a PVC volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pvc_ref: Option<PvcReference>,
    /// Volume health.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volume_health_stats: Option<VolumeHealthStats>,
}

/// Volume health.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct VolumeHealthStats {
    /// Whether the volume is abnormal.
    pub abnormal: bool,
}

/// A persistent volume claim.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PvcReference {
    /// Name.
    pub name: String,
    /// Namespace.
    pub namespace: String,
}

/// Filesystem usage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FsStats {
    /// When these stats were updated.
    pub time: Time,
    /// Bytes available on the filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available_bytes: Option<u64>,
    /// Capacity of the filesystem.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_bytes: Option<u64>,
    /// Bytes used by the measured thing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_bytes: Option<u64>,
    /// Free inodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes_free: Option<u64>,
    /// Total inodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes: Option<u64>,
    /// Inodes used by the measured thing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inodes_used: Option<u64>,
}

impl FsStats {
    /// Empty stats at `time`.
    pub fn at(time: Time) -> Self {
        Self {
            time,
            available_bytes: None,
            capacity_bytes: None,
            used_bytes: None,
            inodes_free: None,
            inodes: None,
            inodes_used: None,
        }
    }
}

/// How a user-defined metric is interpreted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UserDefinedMetricType {
    /// Instantaneous value.
    Gauge,
    /// Counter that only increases.
    Cumulative,
    /// Rate over a period.
    Delta,
}

/// A metric exposed by a container.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UserDefinedMetric {
    /// Name.
    pub name: String,
    /// Type.
    #[serde(rename = "type")]
    pub kind: UserDefinedMetricType,
    /// Display units.
    pub units: String,
    /// Labels.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub labels: std::collections::BTreeMap<String, String>,
    /// When the value was updated.
    pub time: Time,
    /// The value.
    pub value: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    #[test]
    fn json_names_and_omission_match_the_kubelet() {
        let s = Summary {
            node: NodeStats {
                node_name: "n1".into(),
                system_containers: vec![],
                start_time: t(1_700_000_000),
                cpu: Some(CpuStats {
                    time: t(1_700_000_010),
                    usage_nano_cores: Some(5),
                    usage_core_nano_seconds: Some(7),
                    psi: None,
                }),
                memory: None,
                io: Some(IoStats {
                    time: t(1_700_000_010),
                    psi: Some(PsiStats {
                        full: PsiData::default(),
                        some: PsiData {
                            total: 1234,
                            avg10: 1.5,
                            avg60: 0.25,
                            avg300: 0.0,
                        },
                    }),
                }),
                network: Some(NetworkStats {
                    time: t(1_700_000_010),
                    default: InterfaceStats {
                        name: "eth0".into(),
                        rx_bytes: Some(1),
                        ..Default::default()
                    },
                    interfaces: vec![],
                }),
                fs: None,
                runtime: None,
                rlimit: Some(RlimitStats {
                    time: t(1_700_000_010),
                    max_pid: Some(10),
                    num_of_running_processes: Some(3),
                }),
                swap: None,
            },
            pods: vec![PodStats {
                pod_ref: PodReference {
                    name: "p".into(),
                    namespace: "ns".into(),
                    uid: "u".into(),
                },
                start_time: t(1_700_000_000),
                containers: vec![],
                cpu: None,
                memory: None,
                io: None,
                network: None,
                volume_stats: vec![VolumeStats {
                    fs: FsStats {
                        used_bytes: Some(4),
                        ..FsStats::at(t(1_700_000_010))
                    },
                    name: "data".into(),
                    pvc_ref: None,
                    volume_health_stats: None,
                }],
                ephemeral_storage: Some(FsStats::at(t(1_700_000_010))),
                process_stats: Some(ProcessStats {
                    process_count: Some(2),
                }),
                swap: None,
            }],
        };
        let v = serde_json::to_value(&s).unwrap();
        let want = serde_json::json!({
            "node": {
                "nodeName": "n1",
                "startTime": "2023-11-14T22:13:20Z",
                "cpu": {"time": "2023-11-14T22:13:30Z", "usageNanoCores": 5, "usageCoreNanoSeconds": 7},
                "io": {"time": "2023-11-14T22:13:30Z", "psi": {
                    "full": {"total": 0, "avg10": 0.0, "avg60": 0.0, "avg300": 0.0},
                    "some": {"total": 1234, "avg10": 1.5, "avg60": 0.25, "avg300": 0.0}
                }},
                "network": {"time": "2023-11-14T22:13:30Z", "name": "eth0", "rxBytes": 1},
                "rlimit": {"time": "2023-11-14T22:13:30Z", "maxpid": 10, "curproc": 3}
            },
            "pods": [{
                "podRef": {"name": "p", "namespace": "ns", "uid": "u"},
                "startTime": "2023-11-14T22:13:20Z",
                "containers": [],
                "volume": [{"time": "2023-11-14T22:13:30Z", "usedBytes": 4, "name": "data"}],
                "ephemeral-storage": {"time": "2023-11-14T22:13:30Z"},
                "process_stats": {"process_count": 2}
            }]
        });
        assert_eq!(v, want);
        let back: Summary = serde_json::from_value(v).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn null_lists_read_as_empty() {
        let s: Summary = serde_json::from_str(
            r#"{"node":{"nodeName":"n","startTime":"2024-01-01T00:00:00Z"},"pods":null}"#,
        )
        .unwrap();
        assert!(s.pods.is_empty());
        let p: PodStats = serde_json::from_str(
            r#"{"podRef":{"name":"a","namespace":"b","uid":"c"},"startTime":"2024-01-01T00:00:00Z","containers":null}"#,
        )
        .unwrap();
        assert!(p.containers.is_empty());
    }

    #[test]
    fn a_full_pod_round_trips() {
        let now = t(1_700_000_000);
        let fs = FsStats {
            available_bytes: Some(1),
            capacity_bytes: Some(2),
            used_bytes: Some(3),
            inodes_free: Some(4),
            inodes: Some(5),
            inodes_used: Some(6),
            ..FsStats::at(now.clone())
        };
        let psi = PsiStats {
            full: PsiData {
                total: 7,
                avg10: 0.5,
                avg60: 0.1,
                avg300: 0.01,
            },
            some: PsiData::default(),
        };
        let cpu = CpuStats {
            time: now.clone(),
            usage_nano_cores: Some(1),
            usage_core_nano_seconds: Some(2),
            psi: Some(psi.clone()),
        };
        let mem = MemoryStats {
            time: now.clone(),
            available_bytes: Some(1),
            usage_bytes: Some(2),
            working_set_bytes: Some(3),
            rss_bytes: Some(4),
            page_faults: Some(5),
            major_page_faults: Some(6),
            psi: Some(psi.clone()),
        };
        let io = IoStats {
            time: now.clone(),
            psi: Some(psi),
        };
        let swap = SwapStats {
            time: now.clone(),
            swap_available_bytes: None,
            swap_usage_bytes: Some(0),
        };
        let eth0 = InterfaceStats {
            name: "eth0".into(),
            rx_bytes: Some(1),
            rx_errors: Some(0),
            tx_bytes: Some(2),
            tx_errors: Some(0),
        };
        let p = PodStats {
            pod_ref: PodReference::default(),
            start_time: now.clone(),
            containers: vec![ContainerStats {
                name: "c".into(),
                start_time: now.clone(),
                cpu: Some(cpu.clone()),
                memory: Some(mem.clone()),
                io: Some(io.clone()),
                accelerators: vec![],
                rootfs: Some(fs.clone()),
                logs: Some(fs.clone()),
                user_defined_metrics: vec![],
                swap: Some(swap.clone()),
            }],
            cpu: Some(cpu),
            memory: Some(mem),
            io: Some(io),
            network: Some(NetworkStats {
                time: now.clone(),
                default: eth0.clone(),
                interfaces: vec![eth0],
            }),
            volume_stats: vec![VolumeStats {
                fs: fs.clone(),
                name: "v".into(),
                pvc_ref: None,
                volume_health_stats: None,
            }],
            ephemeral_storage: Some(fs),
            process_stats: None,
            swap: Some(swap),
        };
        let json = serde_json::to_string(&p).unwrap();
        let back: PodStats = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
        assert_eq!(back, p);
    }
}
