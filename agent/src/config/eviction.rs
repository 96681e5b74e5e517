//! Eviction thresholds as the kubelet's `ParseThresholdConfig` (pkg/kubelet/eviction/helpers.go):
//! evictionHard, evictionSoft with evictionSoftGracePeriod, evictionMinimumReclaim, and the
//! allocatableMemory.available copy of a hard memory.available when `pods` is enforced.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::resource::parse_quantity;

/// An eviction signal (the kubelet's `evictionapi.Signal`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Signal {
    /// `memory.available`: memory capacity minus the root cgroup's working set.
    MemoryAvailable,
    /// `allocatableMemory.available`: the pods cgroup's limit minus its working set.
    AllocatableMemoryAvailable,
    /// `nodefs.available`: bytes free on the root dir's filesystem.
    NodeFsAvailable,
    /// `nodefs.inodesFree`: inodes free on the root dir's filesystem.
    NodeFsInodesFree,
    /// `imagefs.available`: bytes free on the runtime's image filesystem.
    ImageFsAvailable,
    /// `imagefs.inodesFree`: inodes free on the runtime's image filesystem.
    ImageFsInodesFree,
    /// `containerfs.available`: bytes free on the containers' writable layers' filesystem.
    ContainerFsAvailable,
    /// `containerfs.inodesFree`: inodes free on the containers' writable layers' filesystem.
    ContainerFsInodesFree,
    /// `pid.available`: the OS task limit minus the tasks running.
    PidAvailable,
}

/// Every signal, in the kubelet's order.
pub const SIGNALS: [Signal; 9] = [
    Signal::MemoryAvailable,
    Signal::AllocatableMemoryAvailable,
    Signal::NodeFsAvailable,
    Signal::NodeFsInodesFree,
    Signal::ImageFsAvailable,
    Signal::ImageFsInodesFree,
    Signal::ContainerFsAvailable,
    Signal::ContainerFsInodesFree,
    Signal::PidAvailable,
];

impl Signal {
    /// The signal's name in the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::AllocatableMemoryAvailable => "allocatableMemory.available",
            Signal::NodeFsAvailable => "nodefs.available",
            Signal::NodeFsInodesFree => "nodefs.inodesFree",
            Signal::ImageFsAvailable => "imagefs.available",
            Signal::ImageFsInodesFree => "imagefs.inodesFree",
            Signal::ContainerFsAvailable => "containerfs.available",
            Signal::ContainerFsInodesFree => "containerfs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    /// The signal named `name`, if the kubelet knows it.
    pub fn from_name(name: &str) -> Option<Signal> {
        SIGNALS.into_iter().find(|s| s.as_str() == name)
    }
}

impl std::fmt::Display for Signal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub use crate::resource::allocatable::ThresholdValue;

/// One eviction threshold: the signal is below the value (the kubelet's only operator, LessThan).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Threshold {
    /// What is observed.
    pub signal: Signal,
    /// Met when the observed available amount is below this.
    pub value: ThresholdValue,
    /// How long it must be met before acting on it; zero: a hard threshold.
    pub grace_period: Duration,
    /// Reclaim at least this much beyond the threshold once it is met.
    pub min_reclaim: Option<ThresholdValue>,
}

impl Threshold {
    /// True for a hard threshold (no grace period), as the kubelet's isHardEvictionThreshold.
    pub fn is_hard(&self) -> bool {
        self.grace_period.is_zero()
    }
}

/// The eviction manager's settings, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct EvictionConfig {
    /// Hard thresholds, then soft ones, then the allocatable copies (the kubelet's order).
    pub thresholds: Vec<Threshold>,
    /// `evictionPressureTransitionPeriod`: how long a pressure condition stays after its
    /// thresholds are no longer met (default 5m).
    pub pressure_transition_period: Duration,
    /// `evictionMaxPodGracePeriod`: the longest grace period a soft eviction gives a pod.
    pub max_pod_grace_period: i32,
    /// `localStorageCapacityIsolation`: pods over their ephemeral-storage limits or an emptyDir
    /// over its sizeLimit are evicted.
    pub local_storage_capacity_isolation: bool,
    /// `kernelMemcgNotification`: the kernel signals a memory threshold crossed (cgroup v1),
    /// between samples.
    pub kernel_memcg_notification: bool,
}

/// A field (`evictionSoft.memory.available`) and what is wrong with it.
pub type FieldProblem = (String, String);

/// Parses a percentage as Go's `strconv.ParseFloat(s, 32)` then `float32(v) / 100`.
fn percentage(pct: &str) -> Option<f32> {
    pct.parse::<f32>()
        .ok()
        .filter(|p| p.is_finite())
        .map(|p| p / 100.0)
}

/// One threshold statement (`10%`, `100Mi`); `Ok(None)` for `0%` and `100%`, which the kubelet
/// ignores.
fn statement(value: &str) -> Result<Option<ThresholdValue>, String> {
    let bad = || format!("must be a non-negative quantity or a percentage, got {value:?}");
    if let Some(pct) = value.strip_suffix('%') {
        if value == "0%" || value == "100%" {
            return Ok(None);
        }
        let p = percentage(pct).ok_or_else(bad)?;
        if !(0.0..=1.0).contains(&p) {
            return Err(bad());
        }
        return Ok(Some(ThresholdValue::Percentage(p)));
    }
    let q = parse_quantity(value).map_err(|_| bad())?;
    let milli = i128::from(q.milli_value());
    if milli < 0 {
        return Err(bad());
    }
    if milli == 0 {
        return Err(format!("must be positive, got {value:?}"));
    }
    Ok(Some(ThresholdValue::Quantity(milli)))
}

/// A minimum reclaim (`5%`, `500Mi`): a positive percentage or a non-negative quantity.
fn min_reclaim(value: &str) -> Result<ThresholdValue, String> {
    if let Some(pct) = value.strip_suffix('%') {
        return match percentage(pct) {
            Some(p) if p > 0.0 => Ok(ThresholdValue::Percentage(p)),
            _ => Err(format!("must be a positive percentage, got {value:?}")),
        };
    }
    match parse_quantity(value).map(|q| i128::from(q.milli_value())) {
        Ok(m) if m >= 0 => Ok(ThresholdValue::Quantity(m)),
        _ => Err(format!(
            "must be a non-negative quantity or a percentage, got {value:?}"
        )),
    }
}

/// The signal named by a key of `field`, or the problem.
fn signal_of(field: &str, name: &str, problems: &mut Vec<FieldProblem>) -> Option<Signal> {
    let s = Signal::from_name(name);
    if s.is_none() {
        problems.push((format!("{field}.{name}"), "unknown eviction signal".into()));
    }
    s
}

/// The thresholds of `statements` (`field` names them in problems).
fn statements(
    field: &str,
    statements: &BTreeMap<String, String>,
    problems: &mut Vec<FieldProblem>,
) -> Vec<Threshold> {
    let mut out = Vec::new();
    for (name, value) in statements {
        let Some(signal) = signal_of(field, name, problems) else {
            continue;
        };
        match statement(value) {
            Ok(Some(value)) => out.push(Threshold {
                signal,
                value,
                grace_period: Duration::ZERO,
                min_reclaim: None,
            }),
            Ok(None) => {}
            Err(why) => problems.push((format!("{field}.{name}"), why)),
        }
    }
    out
}

/// The raw eviction fields of the KubeletConfiguration.
#[derive(Debug, Clone, Copy)]
pub struct Fields<'a> {
    /// evictionHard (defaulted).
    pub hard: &'a BTreeMap<String, String>,
    /// evictionSoft.
    pub soft: &'a BTreeMap<String, String>,
    /// evictionSoftGracePeriod.
    pub soft_grace_period: &'a BTreeMap<String, String>,
    /// evictionMinimumReclaim.
    pub minimum_reclaim: &'a BTreeMap<String, String>,
    /// enforceNodeAllocatable.
    pub enforce_node_allocatable: &'a [String],
}

/// The thresholds as the kubelet's ParseThresholdConfig builds them, or every problem found,
/// each with its field.
pub fn thresholds(f: Fields<'_>) -> Result<Vec<Threshold>, Vec<FieldProblem>> {
    let mut problems = Vec::new();
    let mut out = statements("evictionHard", f.hard, &mut problems);
    let mut soft = statements("evictionSoft", f.soft, &mut problems);
    let mut grace = BTreeMap::new();
    for (name, value) in f.soft_grace_period {
        let Some(signal) = signal_of("evictionSoftGracePeriod", name, &mut problems) else {
            continue;
        };
        match super::duration::parse(value) {
            Ok(d) => {
                grace.insert(signal, d);
            }
            Err(e) => problems.push((format!("evictionSoftGracePeriod.{name}"), e.to_string())),
        }
    }
    let mut reclaim = BTreeMap::new();
    for (name, value) in f.minimum_reclaim {
        let Some(signal) = signal_of("evictionMinimumReclaim", name, &mut problems) else {
            continue;
        };
        match min_reclaim(value) {
            Ok(v) => {
                reclaim.insert(signal, v);
            }
            Err(why) => problems.push((format!("evictionMinimumReclaim.{name}"), why)),
        }
    }
    for t in &mut soft {
        match grace.get(&t.signal) {
            Some(d) => t.grace_period = *d,
            None => problems.push((
                format!("evictionSoft.{}", t.signal),
                format!(
                    "grace period must be specified for the soft eviction threshold {} \
                     (evictionSoftGracePeriod)",
                    t.signal
                ),
            )),
        }
    }
    out.extend(soft);
    for t in &mut out {
        t.min_reclaim = reclaim.get(&t.signal).copied();
    }
    if f.enforce_node_allocatable.iter().any(|v| v == "pods") {
        let copies: Vec<Threshold> = out
            .iter()
            .filter(|t| t.signal == Signal::MemoryAvailable && t.is_hard())
            .map(|t| Threshold {
                signal: Signal::AllocatableMemoryAvailable,
                ..*t
            })
            .collect();
        out.extend(copies);
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn parse(
        hard: &[(&str, &str)],
        soft: &[(&str, &str)],
        grace: &[(&str, &str)],
        reclaim: &[(&str, &str)],
        enforce: &[&str],
    ) -> Result<Vec<Threshold>, Vec<FieldProblem>> {
        let enforce: Vec<String> = enforce.iter().map(|s| s.to_string()).collect();
        thresholds(Fields {
            hard: &map(hard),
            soft: &map(soft),
            soft_grace_period: &map(grace),
            minimum_reclaim: &map(reclaim),
            enforce_node_allocatable: &enforce,
        })
    }

    #[test]
    fn parses_as_parse_threshold_config() {
        let got = parse(
            &[("memory.available", "100Mi"), ("nodefs.available", "10%")],
            &[("memory.available", "1.5Gi")],
            &[("memory.available", "1m30s")],
            &[("memory.available", "0"), ("nodefs.available", "5%")],
            &["pods"],
        )
        .unwrap();
        let mi = 1024 * 1024 * 1000;
        assert_eq!(
            got,
            vec![
                Threshold {
                    signal: Signal::MemoryAvailable,
                    value: ThresholdValue::Quantity(100 * mi),
                    grace_period: Duration::ZERO,
                    min_reclaim: Some(ThresholdValue::Quantity(0)),
                },
                Threshold {
                    signal: Signal::NodeFsAvailable,
                    value: ThresholdValue::Percentage(0.1),
                    grace_period: Duration::ZERO,
                    min_reclaim: Some(ThresholdValue::Percentage(0.05)),
                },
                Threshold {
                    signal: Signal::MemoryAvailable,
                    value: ThresholdValue::Quantity(1536 * mi),
                    grace_period: Duration::from_secs(90),
                    min_reclaim: Some(ThresholdValue::Quantity(0)),
                },
                // The hard memory.available copied for the pods cgroup; the soft one is not.
                Threshold {
                    signal: Signal::AllocatableMemoryAvailable,
                    value: ThresholdValue::Quantity(100 * mi),
                    grace_period: Duration::ZERO,
                    min_reclaim: Some(ThresholdValue::Quantity(0)),
                },
            ]
        );
    }

    #[test]
    fn zero_and_full_percentages_are_ignored_and_no_pods_no_copy() {
        let got = parse(
            &[
                ("memory.available", "100Mi"),
                ("nodefs.available", "0%"),
                ("imagefs.available", "100%"),
            ],
            &[],
            &[],
            &[],
            &["none"],
        )
        .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].signal, Signal::MemoryAvailable);
    }

    /// evictionHard, evictionSoft, evictionSoftGracePeriod, evictionMinimumReclaim, and the
    /// start of the problem expected.
    type Case = (
        &'static [(&'static str, &'static str)],
        &'static [(&'static str, &'static str)],
        &'static [(&'static str, &'static str)],
        &'static [(&'static str, &'static str)],
        &'static str,
    );

    #[test]
    fn problems_name_their_field() {
        let cases: &[Case] = &[
            (
                &[("cpu.available", "1")],
                &[],
                &[],
                &[],
                "evictionHard.cpu.available: unknown eviction signal",
            ),
            (
                &[("memory.available", "0")],
                &[],
                &[],
                &[],
                "evictionHard.memory.available: must be positive",
            ),
            (
                &[("nodefs.available", "120%")],
                &[],
                &[],
                &[],
                "evictionHard.nodefs.available: must be a non-negative",
            ),
            (
                &[],
                &[("memory.available", "1Gi")],
                &[],
                &[],
                "evictionSoft.memory.available: grace period must be specified",
            ),
            (
                &[],
                &[("memory.available", "1Gi")],
                &[("memory.available", "soon")],
                &[],
                "evictionSoftGracePeriod.memory.available: ",
            ),
            (
                &[],
                &[],
                &[],
                &[("nodefs.available", "0%")],
                "evictionMinimumReclaim.nodefs.available: must be a positive percentage",
            ),
            (
                &[],
                &[],
                &[],
                &[("nodefs.available", "-1")],
                "evictionMinimumReclaim.nodefs.available: must be a non-negative",
            ),
            (
                &[],
                &[],
                &[("pods.available", "1m")],
                &[],
                "evictionSoftGracePeriod.pods.available: unknown eviction signal",
            ),
        ];
        for (hard, soft, grace, reclaim, want) in cases {
            let problems = parse(hard, soft, grace, reclaim, &[]).unwrap_err();
            let got: Vec<String> = problems.iter().map(|(f, m)| format!("{f}: {m}")).collect();
            assert!(got.iter().any(|g| g.starts_with(want)), "{want}: {got:?}");
        }
    }

    #[test]
    fn percentages_of_capacity_as_the_kubelet_rounds_them() {
        // float32(10)/100 is 0.100000001490116..., applied in float64 and truncated.
        let ten = ThresholdValue::Percentage(0.1);
        assert_eq!(ten.milli_of(1_000_000_000), 100_000_001_000);
        assert_eq!(ten.milli_of(0), 0);
        assert_eq!(ThresholdValue::Quantity(5).milli_of(1), 5);
    }
}
