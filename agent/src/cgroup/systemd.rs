//! The systemd cgroup driver's pure part: which slice unit a cgroup is, and the unit properties
//! that make it, as the kubelet asks libcontainer's systemd manager for them
//! (cgroup_manager_linux.go `libctCgroupConfig`/`toResources`; opencontainers/cgroups
//! systemd/v2.go `Apply` and `genV2ResourcesProperties`, v1.go `genV1ResourcesProperties`,
//! common.go `addCPUQuota`). The D-Bus calls are in [`super::dbus`].

use super::fs::CgroupVersion;
use super::resources::{QUOTA_PERIOD_US, ResourceConfig, shares_to_weight};

/// systemd's USEC_INFINITY and "infinity" for TasksMax and MemoryMax (u64::MAX).
pub const INFINITY: u64 = u64::MAX;

/// The first systemd version that takes CPUQuotaPeriodUSec (addCPUQuota's check).
pub const CPU_QUOTA_PERIOD_SINCE: u32 = 242;

/// A unit property's value, typed as systemd's D-Bus API takes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PropValue {
    /// `b`.
    Bool(bool),
    /// `t`.
    U64(u64),
    /// `s`.
    Str(String),
    /// `as`.
    Strs(Vec<String>),
}

/// One unit property: its name and value.
pub type Property = (&'static str, PropValue);

/// A slice unit and the slice it sits in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SliceUnit {
    /// The unit's name: `kubepods-burstable.slice`.
    pub name: String,
    /// Its parent slice: `kubepods.slice`; `-.slice` for the root.
    pub parent: String,
}

/// The slice unit of a literal systemd cgroup path (`/kubepods.slice/kubepods-pod1.slice`): its
/// last element, the parent the one before or `-.slice` (libctCgroupConfig's Name and Parent).
/// None for the root or a path whose last element is not a slice.
pub fn slice_unit(path: &str) -> Option<SliceUnit> {
    let mut parts = path.rsplit('/').filter(|p| !p.is_empty());
    let name = parts.next().filter(|n| n.ends_with(".slice"))?;
    let parent = parts.next().unwrap_or("-.slice");
    Some(SliceUnit {
        name: name.to_string(),
        parent: parent.to_string(),
    })
}

/// The properties of StartTransientUnit for a slice (UnifiedManager/LegacyManager `Apply`):
/// Description `libcontainer container <name>`, Wants its parent (a slice gets Wants, not Slice,
/// and no Delegate: libcontainer delegates only scopes), accounting on for memory, CPU, I/O (v1:
/// BlockIOAccounting) and tasks, DefaultDependencies off.
pub fn start_properties(unit: &SliceUnit, version: CgroupVersion) -> Vec<Property> {
    let io = match version {
        CgroupVersion::V2 => "IOAccounting",
        CgroupVersion::V1 => "BlockIOAccounting",
    };
    vec![
        (
            "Description",
            PropValue::Str(format!("libcontainer container {}", unit.name)),
        ),
        ("Wants", PropValue::Strs(vec![unit.parent.clone()])),
        ("MemoryAccounting", PropValue::Bool(true)),
        ("CPUAccounting", PropValue::Bool(true)),
        (io, PropValue::Bool(true)),
        ("TasksAccounting", PropValue::Bool(true)),
        ("DefaultDependencies", PropValue::Bool(false)),
    ]
}

/// The properties of SetUnitProperties for `res` (genV2ResourcesProperties on v2: MemoryMax,
/// CPUWeight from the shares, the CPU quota, TasksMax; genV1ResourcesProperties on v1:
/// MemoryLimit, CPUShares, the quota, TasksMax), and the config to write to the cgroup files after
/// it: the quota rounded up as systemd stores it (addCPUQuota), so the files agree with the unit.
/// `systemd_version` gates CPUQuotaPeriodUSec (242 and later).
pub fn resource_properties(
    res: &ResourceConfig,
    version: CgroupVersion,
    systemd_version: u32,
) -> (Vec<Property>, ResourceConfig) {
    let mut out = res.clone();
    let mut props = Vec::new();
    if let Some(m) = res.memory.filter(|m| *m != 0) {
        let name = match version {
            CgroupVersion::V2 => "MemoryMax",
            CgroupVersion::V1 => "MemoryLimit",
        };
        props.push((name, PropValue::U64(m as u64)));
    }
    if let Some(s) = res.cpu_shares.filter(|s| *s != 0) {
        props.push(match version {
            CgroupVersion::V2 => ("CPUWeight", PropValue::U64(shares_to_weight(s))),
            CgroupVersion::V1 => ("CPUShares", PropValue::U64(s)),
        });
    }
    let period = res.cpu_period.unwrap_or(0);
    let quota = res.cpu_quota.unwrap_or(0);
    if period != 0 && systemd_version >= CPU_QUOTA_PERIOD_SINCE {
        props.push(("CPUQuotaPeriodUSec", PropValue::U64(period)));
    }
    if quota != 0 || period != 0 {
        let mut per_sec = INFINITY;
        if quota > 0 {
            let p = if period == 0 { QUOTA_PERIOD_US } else { period };
            // systemd keeps CPUQuota in percent of a CPU: a fraction of a percent rounds up to
            // the next 10 ms per second, and the quota written to the files with it.
            per_sec = ((quota as u128 * 1_000_000) / p as u128).min(INFINITY as u128 - 1) as u64;
            if !per_sec.is_multiple_of(10_000) {
                per_sec = (per_sec / 10_000 + 1) * 10_000;
                out.cpu_quota = Some((per_sec as u128 * p as u128 / 1_000_000) as i64);
            }
        }
        props.push(("CPUQuotaPerSecUSec", PropValue::U64(per_sec)));
    }
    if let Some(p) = res.pids.filter(|p| *p != 0) {
        let tasks = if p < 0 { INFINITY } else { p as u64 };
        props.push(("TasksMax", PropValue::U64(tasks)));
    }
    (props, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::Hierarchy;
    use crate::config::CgroupDriver;
    use crate::resource::QosClass;

    #[test]
    fn units_of_the_kubelet_hierarchy() {
        let h = Hierarchy::new(CgroupDriver::Systemd, "/", true);
        let unit = |name: &crate::cgroup::CgroupName| {
            let u = slice_unit(&h.literal(name)).unwrap();
            (u.name, u.parent)
        };
        let s = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(unit(&h.node()), s("kubepods.slice", "-.slice"));
        assert_eq!(
            unit(&h.qos(QosClass::Burstable)),
            s("kubepods-burstable.slice", "kubepods.slice")
        );
        assert_eq!(
            unit(&h.qos(QosClass::BestEffort)),
            s("kubepods-besteffort.slice", "kubepods.slice")
        );
        assert_eq!(
            unit(&h.pod(QosClass::Guaranteed, "1a-2b")),
            s("kubepods-pod1a_2b.slice", "kubepods.slice")
        );
        assert_eq!(
            unit(&h.pod(QosClass::BestEffort, "1a-2b")),
            s(
                "kubepods-besteffort-pod1a_2b.slice",
                "kubepods-besteffort.slice"
            )
        );
        assert_eq!(slice_unit("/"), None);
        assert_eq!(slice_unit("/kubepods/burstable"), None);
    }

    #[test]
    fn start_properties_as_libcontainer_apply() {
        let u = slice_unit("/kubepods.slice/kubepods-burstable.slice").unwrap();
        let t = |b| PropValue::Bool(b);
        assert_eq!(
            start_properties(&u, CgroupVersion::V2),
            vec![
                (
                    "Description",
                    PropValue::Str("libcontainer container kubepods-burstable.slice".into())
                ),
                ("Wants", PropValue::Strs(vec!["kubepods.slice".into()])),
                ("MemoryAccounting", t(true)),
                ("CPUAccounting", t(true)),
                ("IOAccounting", t(true)),
                ("TasksAccounting", t(true)),
                ("DefaultDependencies", t(false)),
            ]
        );
        let v1 = start_properties(&u, CgroupVersion::V1);
        assert_eq!(v1[4], ("BlockIOAccounting", t(true)));
    }

    #[test]
    fn resource_properties_as_libcontainer_set() {
        let u = PropValue::U64;
        // A Guaranteed pod of 250m and 64Mi with podPidsLimit 1024 on v2, systemd 252.
        let pod = ResourceConfig {
            cpu_shares: Some(256),
            cpu_quota: Some(25_000),
            cpu_period: Some(100_000),
            memory: Some(64 << 20),
            pids: Some(1024),
        };
        let (props, files) = resource_properties(&pod, CgroupVersion::V2, 252);
        assert_eq!(
            props,
            vec![
                ("MemoryMax", u(64 << 20)),
                ("CPUWeight", u(10)),
                ("CPUQuotaPeriodUSec", u(100_000)),
                ("CPUQuotaPerSecUSec", u(250_000)),
                ("TasksMax", u(1024)),
            ]
        );
        assert_eq!(files, pod);
        // v1: MemoryLimit and CPUShares; systemd older than 242 gets no period.
        let (props, _) = resource_properties(&pod, CgroupVersion::V1, 241);
        assert_eq!(
            props,
            vec![
                ("MemoryLimit", u(64 << 20)),
                ("CPUShares", u(256)),
                ("CPUQuotaPerSecUSec", u(250_000)),
                ("TasksMax", u(1024)),
            ]
        );
        // 5m is 5000 us per second: rounded up to 10 ms, and the quota written with it.
        let small = ResourceConfig {
            cpu_quota: Some(1000),
            cpu_period: Some(100_000),
            ..Default::default()
        };
        let (props, files) = resource_properties(&small, CgroupVersion::V2, 252);
        assert_eq!(props[1], ("CPUQuotaPerSecUSec", u(10_000)));
        assert_eq!(files.cpu_quota, Some(1000));
        let odd = ResourceConfig {
            cpu_quota: Some(2_500),
            cpu_period: Some(100_000),
            ..Default::default()
        };
        let (props, files) = resource_properties(&odd, CgroupVersion::V2, 252);
        assert_eq!(props[1], ("CPUQuotaPerSecUSec", u(30_000)));
        assert_eq!(files.cpu_quota, Some(3_000));
        // Unlimited: quota -1 with a period, memory and pids -1 are infinity.
        let open = ResourceConfig {
            cpu_quota: Some(-1),
            cpu_period: Some(100_000),
            memory: Some(-1),
            pids: Some(-1),
            ..Default::default()
        };
        let (props, _) = resource_properties(&open, CgroupVersion::V2, 252);
        assert_eq!(
            props,
            vec![
                ("MemoryMax", u(INFINITY)),
                ("CPUQuotaPeriodUSec", u(100_000)),
                ("CPUQuotaPerSecUSec", u(INFINITY)),
                ("TasksMax", u(INFINITY)),
            ]
        );
        // The QoS tiers: shares only (besteffort's 2 shares are weight 1); kubepods: 2 CPUs.
        let (props, _) = resource_properties(
            &ResourceConfig {
                cpu_shares: Some(2),
                ..Default::default()
            },
            CgroupVersion::V2,
            252,
        );
        assert_eq!(props, vec![("CPUWeight", u(1))]);
        let (props, _) = resource_properties(
            &ResourceConfig {
                cpu_shares: Some(2048),
                memory: Some(2 << 30),
                pids: Some(32768),
                ..Default::default()
            },
            CgroupVersion::V2,
            252,
        );
        assert_eq!(
            props,
            vec![
                ("MemoryMax", u(2 << 30)),
                ("CPUWeight", u(79)),
                ("TasksMax", u(32768)),
            ]
        );
        assert!(
            resource_properties(&ResourceConfig::default(), CgroupVersion::V2, 252)
                .0
                .is_empty()
        );
    }
}
