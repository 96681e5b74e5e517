//! Which pods stop when, and with what grace period, as the kubelet's node shutdown pod manager
//! (nodeshutdown_manager.go: migrateConfig, groupByPriority, periodRequested, the grace period of
//! killPods). Pure: the manager does the killing.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;

/// The kubelet's DefaultPriorityWhenNoDefaultClassExists: the group of regular pods.
pub const DEFAULT_PRIORITY: i32 = 0;

/// The kubelet's SystemCriticalPriority (2 * 10^9): the group of critical pods.
pub const SYSTEM_CRITICAL_PRIORITY: i32 = crate::eviction::SYSTEM_CRITICAL_PRIORITY;

/// One priority group: pods from `priority` up to the next group's get `grace_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    /// The lowest pod priority of the group.
    pub priority: i32,
    /// The group's shutdown grace period, in seconds.
    pub grace_seconds: i64,
}

/// The groups, lowest priority first: `by_priority` when given, else the two of
/// shutdownGracePeriod and shutdownGracePeriodCriticalPods (migrateConfig); empty when graceful
/// node shutdown is off.
pub fn periods(
    grace_period: Duration,
    critical_pods: Duration,
    by_priority: &[(i32, i64)],
) -> Vec<Period> {
    let mut periods: Vec<Period> = if by_priority.is_empty() {
        migrate(grace_period, critical_pods)
    } else {
        by_priority
            .iter()
            .map(|&(priority, grace_seconds)| Period {
                priority,
                grace_seconds,
            })
            .collect()
    };
    periods.sort_by_key(|p| p.priority);
    periods
}

/// The kubelet's migrateConfig: regular pods get shutdownGracePeriod less the critical pods'
/// part, critical ones that part; none when shutdownGracePeriod is zero.
fn migrate(grace_period: Duration, critical_pods: Duration) -> Vec<Period> {
    if grace_period.is_zero() || critical_pods > grace_period {
        return Vec::new();
    }
    let regular = grace_period - critical_pods;
    vec![
        Period {
            priority: DEFAULT_PRIORITY,
            grace_seconds: regular.as_secs() as i64,
        },
        Period {
            priority: SYSTEM_CRITICAL_PRIORITY,
            grace_seconds: critical_pods.as_secs() as i64,
        },
    ]
}

/// The inhibit delay the groups need: the sum of their grace periods (periodRequested).
pub fn period_requested(periods: &[Period]) -> Duration {
    let secs: i64 = periods.iter().map(|p| p.grace_seconds).sum();
    Duration::from_secs(secs.max(0) as u64)
}

/// A group with its pods.
#[derive(Debug, Clone)]
pub struct Group<P> {
    /// The group's priority and grace period.
    pub period: Period,
    /// Its pods.
    pub pods: Vec<P>,
}

/// The pods in their groups (groupByPriority): a pod goes to the highest group whose priority
/// is at most its own; below the lowest group, to the lowest. `periods` sorted, not empty.
pub fn group_by_priority<P>(
    periods: &[Period],
    pods: impl IntoIterator<Item = P>,
    priority: impl Fn(&P) -> i32,
) -> Vec<Group<P>> {
    let mut groups: Vec<Group<P>> = periods
        .iter()
        .map(|&period| Group {
            period,
            pods: Vec::new(),
        })
        .collect();
    if groups.is_empty() {
        return groups;
    }
    for pod in pods {
        let p = priority(&pod);
        let index = groups
            .iter()
            .rposition(|g| g.period.priority <= p)
            .unwrap_or(0);
        groups[index].pods.push(pod);
    }
    groups
}

/// A pod's priority as the shutdown manager reads it: spec.priority, 0 when unset.
pub fn pod_priority(pod: &Pod) -> i32 {
    pod.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)
}

/// The grace period a pod gets in its group: the group's, or the pod's own
/// terminationGracePeriodSeconds when that is not longer.
pub fn pod_grace_seconds(pod: &Pod, group_seconds: i64) -> i64 {
    match pod
        .spec
        .as_ref()
        .and_then(|s| s.termination_grace_period_seconds)
    {
        Some(own) if own <= group_seconds => own,
        _ => group_seconds,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(priority: i32, grace_seconds: i64) -> Period {
        Period {
            priority,
            grace_seconds,
        }
    }

    /// migrateConfig's cases (TestMigrateConfig).
    #[test]
    fn the_two_fields_become_two_groups() {
        let s = Duration::from_secs;
        assert_eq!(
            periods(s(300), s(120), &[]),
            [p(0, 180), p(SYSTEM_CRITICAL_PRIORITY, 120)]
        );
        assert_eq!(
            periods(s(100), s(0), &[]),
            [p(0, 100), p(SYSTEM_CRITICAL_PRIORITY, 0)]
        );
        assert_eq!(periods(s(0), s(0), &[]), []);
        assert_eq!(periods(s(0), s(10), &[]), []);
        assert_eq!(periods(s(5), s(10), &[]), []);
        // By priority wins, sorted low to high.
        assert_eq!(
            periods(s(0), s(0), &[(100, 5), (0, 10)]),
            [p(0, 10), p(100, 5)]
        );
        assert_eq!(
            period_requested(&periods(s(300), s(120), &[])),
            Duration::from_secs(300)
        );
    }

    /// groupByPriority's cases (Test_groupByPriority): lower than the lowest to the lowest, above
    /// the highest to the highest, a boundary to its own group, between two to the lower.
    #[test]
    fn pods_go_to_the_highest_group_at_or_below_their_priority() {
        let periods = [p(1, 10), p(2, 20), p(3, 30), p(4, 40)];
        let pods = [0, 1, 2, 3, 4, 5, 100];
        let groups = group_by_priority(&periods, pods, |&x| x);
        let got: Vec<(i32, Vec<i32>)> = groups
            .into_iter()
            .map(|g| (g.period.priority, g.pods))
            .collect();
        assert_eq!(
            got,
            [
                (1, vec![0, 1]),
                (2, vec![2]),
                (3, vec![3]),
                (4, vec![4, 5, 100])
            ]
        );
        let periods = [p(0, 10), p(100, 20)];
        let got: Vec<Vec<i32>> = group_by_priority(&periods, [50, 99, 100, 101, -5], |&x| x)
            .into_iter()
            .map(|g| g.pods)
            .collect();
        assert_eq!(got, [vec![50, 99, -5], vec![100, 101]]);
        assert!(group_by_priority(&[], [1], |&x| x).is_empty());
    }

    #[test]
    fn a_shorter_own_grace_period_wins() {
        let pod = |tgps: Option<i64>| Pod {
            spec: Some(k8s_openapi::api::core::v1::PodSpec {
                termination_grace_period_seconds: tgps,
                priority: Some(7),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(pod_grace_seconds(&pod(Some(5)), 20), 5);
        assert_eq!(pod_grace_seconds(&pod(Some(20)), 20), 20);
        assert_eq!(pod_grace_seconds(&pod(Some(30)), 20), 20);
        assert_eq!(pod_grace_seconds(&pod(None), 20), 20);
        assert_eq!(pod_priority(&pod(None)), 7);
        assert_eq!(pod_priority(&Pod::default()), 0);
    }
}
