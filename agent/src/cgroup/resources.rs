//! What goes into a cgroup, with the kubelet's formulas (helpers_linux.go): CFS shares and quota
//! from millicores, the pod cgroup's config from the sum of its containers (ResourceConfigForPod),
//! and the v2 conversion of shares to cpu.weight.

use k8s_openapi::api::core::v1::Pod;

use crate::resource::{QosClass, pod_limit, pod_request, qos_class};

/// Smallest cpu.shares the kernel takes, and what no request maps to.
pub const MIN_SHARES: u64 = 2;
/// Largest cpu.shares the kernel takes.
pub const MAX_SHARES: u64 = 262_144;
/// cpu.shares of one CPU.
const SHARES_PER_CPU: i64 = 1024;
/// CFS period the kubelet uses (100 ms, in microseconds).
pub const QUOTA_PERIOD_US: u64 = 100_000;
/// The smallest quota the kernel takes (1 ms).
const MIN_QUOTA_US: i64 = 1000;

/// Limits of one cgroup; None leaves the knob as it is (a new cgroup keeps the kernel default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ResourceConfig {
    /// cpu.shares (v1), converted to cpu.weight on v2.
    pub cpu_shares: Option<u64>,
    /// CFS quota in microseconds; -1: unlimited; 0 is not written.
    pub cpu_quota: Option<i64>,
    /// CFS period in microseconds.
    pub cpu_period: Option<u64>,
    /// Memory limit in bytes; -1: unlimited; 0 is not written.
    pub memory: Option<i64>,
    /// Maximum number of processes; -1: unlimited; 0 is not written.
    pub pids: Option<i64>,
}

/// The kubelet's MilliCPUToShares: millicores to cpu.shares, 2 for none, clamped to the kernel's range.
pub fn milli_cpu_to_shares(milli_cpu: i64) -> u64 {
    if milli_cpu <= 0 {
        return MIN_SHARES;
    }
    let shares = i128::from(milli_cpu) * i128::from(SHARES_PER_CPU) / 1000;
    shares.clamp(i128::from(MIN_SHARES), i128::from(MAX_SHARES)) as u64
}

/// The kubelet's MilliCPUToQuota: millicores to a CFS quota over `period` microseconds (0 for
/// none, at least 1 ms otherwise).
pub fn milli_cpu_to_quota(milli_cpu: i64, period: u64) -> i64 {
    if milli_cpu <= 0 {
        return 0;
    }
    let quota = i128::from(milli_cpu) * i128::from(period) / 1000;
    (quota.min(i128::from(i64::MAX)) as i64).max(MIN_QUOTA_US)
}

/// cgroup v1 cpu.shares [2, 262144] to v2 cpu.weight [1, 10000] (KEP 2254's linear mapping).
pub fn shares_to_weight(shares: u64) -> u64 {
    let s = shares.clamp(MIN_SHARES, MAX_SHARES);
    ((s - 2) * 9999) / 262_142 + 1
}

/// The pod cgroup's config (ResourceConfigForPod): Guaranteed pods get shares, quota and memory
/// from their summed requests and limits; Burstable pods get shares, and quota or memory only when
/// every container sets that limit; BestEffort pods get the minimum shares. `pids` is
/// podPidsLimit. `enforce_cpu_limits` false (cpuCFSQuota off) leaves the quota unlimited.
pub fn pod_resource_config(
    pod: &Pod,
    enforce_cpu_limits: bool,
    pids: Option<u64>,
) -> ResourceConfig {
    let cpu_request = (pod_request(pod, "cpu")) as i64;
    let cpu_limit = pod_limit(pod, "cpu").map(|l| l.total).unwrap_or(0) as i64;
    let memory = pod_limit(pod, "memory");
    let memory_limit = memory.map(|l| ((l.total + 999) / 1000) as i64).unwrap_or(0);
    let cpu_declared = pod_limit(pod, "cpu").is_some_and(|l| l.every_container);
    let memory_declared = memory.is_some_and(|l| l.every_container);
    let shares = milli_cpu_to_shares(cpu_request);
    let quota = if enforce_cpu_limits {
        milli_cpu_to_quota(cpu_limit, QUOTA_PERIOD_US)
    } else {
        -1
    };
    let mut rc = match qos_class(pod) {
        QosClass::Guaranteed => ResourceConfig {
            cpu_shares: Some(shares),
            cpu_quota: Some(quota),
            cpu_period: Some(QUOTA_PERIOD_US),
            memory: Some(memory_limit),
            pids: None,
        },
        QosClass::Burstable => ResourceConfig {
            cpu_shares: Some(shares),
            cpu_quota: cpu_declared.then_some(quota),
            cpu_period: cpu_declared.then_some(QUOTA_PERIOD_US),
            memory: memory_declared.then_some(memory_limit),
            pids: None,
        },
        QosClass::BestEffort => ResourceConfig {
            cpu_shares: Some(MIN_SHARES),
            ..Default::default()
        },
    };
    rc.pids = pids.filter(|p| *p > 0).map(|p| p as i64);
    rc
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(containers: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({"spec": {"containers": containers}})).unwrap()
    }

    #[test]
    fn formulas_match_the_kubelet() {
        for (milli, shares) in [
            (0, 2),
            (1, 2),
            (10, 10),
            (100, 102),
            (250, 256),
            (1000, 1024),
        ] {
            assert_eq!(milli_cpu_to_shares(milli), shares, "{milli}m");
        }
        assert_eq!(milli_cpu_to_shares(1_000_000), MAX_SHARES);
        // Found by fuzzing: a CPU amount whose product overflows i64 (the API accepts any int64
        // quantity) is the maximum, not a panic or a wrapped value.
        assert_eq!(milli_cpu_to_shares(i64::MAX), MAX_SHARES);
        assert_eq!(milli_cpu_to_quota(i64::MAX, 100_000), i64::MAX);
        for (milli, quota) in [
            (0, 0),
            (5, 1000),
            (10, 1000),
            (200, 20_000),
            (1500, 150_000),
        ] {
            assert_eq!(
                milli_cpu_to_quota(milli, QUOTA_PERIOD_US),
                quota,
                "{milli}m"
            );
        }
        for (shares, weight) in [(2, 1), (1024, 39), (262_144, 10_000), (0, 1)] {
            assert_eq!(shares_to_weight(shares), weight, "{shares}");
        }
    }

    #[test]
    fn pod_configs_by_qos() {
        let guaranteed = pod(serde_json::json!([
            {"name": "a", "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}},
            {"name": "b", "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}},
        ]));
        assert_eq!(
            pod_resource_config(&guaranteed, true, Some(1024)),
            ResourceConfig {
                cpu_shares: Some(512),
                cpu_quota: Some(50_000),
                cpu_period: Some(100_000),
                memory: Some(128 << 20),
                pids: Some(1024),
            }
        );
        // Burstable: a limit counts only when every container declares it.
        let burstable = pod(serde_json::json!([
            {"name": "a", "resources": {"requests": {"cpu": "100m", "memory": "16Mi"}, "limits": {"cpu": "200m", "memory": "32Mi"}}},
            {"name": "b", "resources": {"requests": {"cpu": "50m"}, "limits": {"memory": "32Mi"}}},
        ]));
        assert_eq!(
            pod_resource_config(&burstable, true, None),
            ResourceConfig {
                cpu_shares: Some(153),
                cpu_quota: None,
                cpu_period: None,
                memory: Some(64 << 20),
                pids: None,
            }
        );
        let best_effort = pod(serde_json::json!([{"name": "a"}]));
        assert_eq!(
            pod_resource_config(&best_effort, true, None),
            ResourceConfig {
                cpu_shares: Some(2),
                ..Default::default()
            }
        );
        // cpuCFSQuota off: no quota; an init container larger than the app containers counts.
        let with_init: Pod = serde_json::from_value(serde_json::json!({"spec": {
            "initContainers": [{"name": "i", "resources": {"limits": {"cpu": "2", "memory": "1Gi"}}}],
            "containers": [{"name": "a", "resources": {"limits": {"cpu": "1", "memory": "1Gi"}}}],
        }}))
        .unwrap();
        let rc = pod_resource_config(&with_init, false, None);
        assert_eq!(
            (rc.cpu_shares, rc.cpu_quota, rc.memory),
            (Some(2048), Some(-1), Some(1 << 30))
        );
    }
}
