//! The pure half of the kubelet's eviction `synchronize` (pkg/kubelet/eviction/eviction_manager.go
//! and helpers.go): from the thresholds, this round's observations, the clock and what earlier
//! rounds remembered, which thresholds are met (grace periods honoured) and which node pressure
//! conditions are reported (the transition period honoured).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::signals::Observations;
use crate::config::eviction::{Signal, Threshold};

/// A node condition the eviction manager reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Condition {
    /// `MemoryPressure`: memory.available or allocatableMemory.available.
    MemoryPressure,
    /// `DiskPressure`: nodefs, imagefs or containerfs bytes or inodes.
    DiskPressure,
    /// `PIDPressure`: pid.available.
    PidPressure,
}

impl Condition {
    /// The condition type as the Node API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Condition::MemoryPressure => "MemoryPressure",
            Condition::DiskPressure => "DiskPressure",
            Condition::PidPressure => "PIDPressure",
        }
    }

    /// The condition a signal's threshold triggers (the kubelet's signalToNodeCondition).
    pub fn of(signal: Signal) -> Condition {
        match signal {
            Signal::MemoryAvailable | Signal::AllocatableMemoryAvailable => {
                Condition::MemoryPressure
            }
            Signal::NodeFsAvailable
            | Signal::NodeFsInodesFree
            | Signal::ImageFsAvailable
            | Signal::ImageFsInodesFree
            | Signal::ContainerFsAvailable
            | Signal::ContainerFsInodesFree => Condition::DiskPressure,
            Signal::PidAvailable => Condition::PidPressure,
        }
    }
}

/// The pressure conditions reported, in a fixed order (memory, disk, PID).
pub type Conditions = BTreeSet<Condition>;

/// What the manager remembers between rounds.
#[derive(Debug, Clone, Default)]
pub struct State {
    /// When each threshold now met was first met (the kubelet's thresholdsFirstObservedAt).
    pub first_observed: Vec<(Threshold, Instant)>,
    /// When each condition was last observed (the kubelet's nodeConditionsLastObservedAt).
    pub conditions_last_observed: BTreeMap<Condition, Instant>,
    /// Thresholds met with their grace periods and not yet resolved (the kubelet's
    /// thresholdsMet): they stay met until the minimum reclaim is also recovered.
    pub met: Vec<Threshold>,
    /// The conditions reported.
    pub conditions: Conditions,
}

/// The thresholds of `thresholds` met by `observations`, as the kubelet's thresholdsMet: the
/// available amount is below the threshold (plus its minimum reclaim when `enforce_min_reclaim`).
/// A threshold whose signal was not observed is not met.
pub fn thresholds_met(
    thresholds: &[Threshold],
    observations: &Observations,
    enforce_min_reclaim: bool,
) -> Vec<Threshold> {
    thresholds
        .iter()
        .filter(|t| {
            let Some(o) = observations.get(&t.signal) else {
                return false;
            };
            let mut quantity = t.value.milli_of(o.capacity);
            if enforce_min_reclaim && let Some(r) = t.min_reclaim {
                quantity += r.milli_of(o.capacity);
            }
            quantity > i128::from(o.available) * 1000
        })
        .copied()
        .collect()
}

/// One round of the kubelet's synchronize up to its eviction decision: updates `state` and
/// returns the thresholds whose grace periods are satisfied (what eviction would act on).
pub fn synchronize(
    state: &mut State,
    thresholds: &[Threshold],
    observations: &Observations,
    now: Instant,
    transition_period: Duration,
) -> Vec<Threshold> {
    // Met now, grace periods aside, plus the earlier ones not yet reclaimed to their minimum.
    let mut met = thresholds_met(thresholds, observations, false);
    for t in thresholds_met(&state.met, observations, true) {
        if !met.contains(&t) {
            met.push(t);
        }
    }
    let first_observed: Vec<(Threshold, Instant)> = met
        .iter()
        .map(|t| {
            let at = state
                .first_observed
                .iter()
                .find(|(seen, _)| seen == t)
                .map_or(now, |(_, at)| *at);
            (*t, at)
        })
        .collect();
    // Conditions come from thresholds met regardless of grace periods, and stay reported for
    // the transition period after they were last observed.
    for t in &met {
        state
            .conditions_last_observed
            .insert(Condition::of(t.signal), now);
    }
    state.conditions = state
        .conditions_last_observed
        .iter()
        .filter(|(_, at)| now.saturating_duration_since(**at) < transition_period)
        .map(|(c, _)| *c)
        .collect();
    let acted_on: Vec<Threshold> = first_observed
        .iter()
        .filter(|(t, at)| now.saturating_duration_since(*at) >= t.grace_period)
        .map(|(t, _)| *t)
        .collect();
    state.first_observed = first_observed;
    state.met = acted_on.clone();
    acted_on
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::eviction::ThresholdValue;
    use crate::eviction::signals::Observation;

    const MI: i128 = 1024 * 1024 * 1000;

    fn hard(signal: Signal, value: ThresholdValue) -> Threshold {
        Threshold {
            signal,
            value,
            grace_period: Duration::ZERO,
            min_reclaim: None,
        }
    }

    fn obs(pairs: &[(Signal, i64, i64)]) -> Observations {
        pairs
            .iter()
            .map(|&(s, available, capacity)| {
                (
                    s,
                    Observation {
                        available,
                        capacity,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn thresholds_met_as_the_kubelet_compares() {
        let mem = hard(Signal::MemoryAvailable, ThresholdValue::Quantity(100 * MI));
        let nodefs = hard(Signal::NodeFsAvailable, ThresholdValue::Percentage(0.1));
        let reclaim = Threshold {
            min_reclaim: Some(ThresholdValue::Quantity(50 * MI)),
            ..mem
        };
        let mib = 1 << 20;
        let cases: &[(&str, Threshold, Observations, bool, bool)] = &[
            (
                "below",
                mem,
                obs(&[(Signal::MemoryAvailable, 99 * mib, 0)]),
                false,
                true,
            ),
            (
                "equal is not met",
                mem,
                obs(&[(Signal::MemoryAvailable, 100 * mib, 0)]),
                false,
                false,
            ),
            (
                "above",
                mem,
                obs(&[(Signal::MemoryAvailable, 101 * mib, 0)]),
                false,
                false,
            ),
            ("not observed", mem, obs(&[]), false, false),
            (
                "percent below",
                nodefs,
                obs(&[(Signal::NodeFsAvailable, 9, 100)]),
                false,
                true,
            ),
            // 10% of 1000 in float32 is 100.000001 -> 100: 100 available is not below.
            (
                "percent equal",
                nodefs,
                obs(&[(Signal::NodeFsAvailable, 100, 1000)]),
                false,
                false,
            ),
            (
                "min reclaim ignored",
                reclaim,
                obs(&[(Signal::MemoryAvailable, 120 * mib, 0)]),
                false,
                false,
            ),
            (
                "min reclaim enforced",
                reclaim,
                obs(&[(Signal::MemoryAvailable, 120 * mib, 0)]),
                true,
                true,
            ),
            (
                "min reclaim recovered",
                reclaim,
                obs(&[(Signal::MemoryAvailable, 150 * mib, 0)]),
                true,
                false,
            ),
        ];
        for (name, t, o, enforce, want) in cases {
            let got = thresholds_met(&[*t], o, *enforce);
            assert_eq!(!got.is_empty(), *want, "{name}");
        }
    }

    /// One scripted round: seconds since start, free nodefs, free memory (MiB), then the
    /// conditions and the thresholds acted on (by signal) expected after it.
    type Round = (u64, i64, i64, &'static [Condition], &'static [Signal]);

    fn run(thresholds: &[Threshold], transition: Duration, rounds: &[Round]) {
        let t0 = Instant::now();
        let mut state = State::default();
        for &(at, nodefs, mem_mib, conditions, acted) in rounds {
            let o = obs(&[
                (Signal::NodeFsAvailable, nodefs, 1000),
                (Signal::MemoryAvailable, mem_mib << 20, 4 << 30),
            ]);
            let got = synchronize(
                &mut state,
                thresholds,
                &o,
                t0 + Duration::from_secs(at),
                transition,
            );
            let want: Conditions = conditions.iter().copied().collect();
            assert_eq!(state.conditions, want, "conditions at {at}s");
            let got: Vec<Signal> = got.iter().map(|t| t.signal).collect();
            assert_eq!(got, acted, "acted on at {at}s");
        }
    }

    #[test]
    fn conditions_stay_for_the_transition_period() {
        use Condition::*;
        let nodefs = hard(Signal::NodeFsAvailable, ThresholdValue::Percentage(0.1));
        run(
            &[nodefs],
            Duration::from_secs(300),
            &[
                (0, 500, 1000, &[], &[]),
                (10, 50, 1000, &[DiskPressure], &[Signal::NodeFsAvailable]),
                (20, 500, 1000, &[DiskPressure], &[]),
                // Last observed at 10 s: still reported until 310 s.
                (309, 500, 1000, &[DiskPressure], &[]),
                (310, 500, 1000, &[], &[]),
                // Met again: reported at once, and its clock restarts.
                (320, 50, 1000, &[DiskPressure], &[Signal::NodeFsAvailable]),
                (330, 500, 1000, &[DiskPressure], &[]),
            ],
        );
    }

    #[test]
    fn soft_thresholds_report_at_once_but_act_after_their_grace_period() {
        use Condition::*;
        let soft = Threshold {
            grace_period: Duration::from_secs(60),
            ..hard(Signal::MemoryAvailable, ThresholdValue::Quantity(500 * MI))
        };
        run(
            &[soft],
            Duration::from_secs(1),
            &[
                (0, 500, 400, &[MemoryPressure], &[]),
                (59, 500, 400, &[MemoryPressure], &[]),
                (60, 500, 400, &[MemoryPressure], &[Signal::MemoryAvailable]),
                // Recovered: with a 1 s transition period the condition goes by the next
                // round, and the grace period starts over when it is met again.
                (70, 500, 600, &[], &[]),
                (80, 500, 400, &[MemoryPressure], &[]),
                (139, 500, 400, &[MemoryPressure], &[]),
                (140, 500, 400, &[MemoryPressure], &[Signal::MemoryAvailable]),
            ],
        );
    }

    #[test]
    fn a_met_threshold_stays_until_its_minimum_is_reclaimed() {
        use Condition::*;
        let t = Threshold {
            min_reclaim: Some(ThresholdValue::Quantity(100 * MI)),
            ..hard(Signal::MemoryAvailable, ThresholdValue::Quantity(200 * MI))
        };
        run(
            &[t],
            Duration::from_secs(1),
            &[
                (0, 500, 250, &[], &[]),
                (10, 500, 150, &[MemoryPressure], &[Signal::MemoryAvailable]),
                // Above the threshold, below threshold + min reclaim: still met.
                (20, 500, 250, &[MemoryPressure], &[Signal::MemoryAvailable]),
                (30, 500, 300, &[], &[]),
                // Resolved: above the threshold alone is no longer met.
                (40, 500, 250, &[], &[]),
            ],
        );
    }

    #[test]
    fn several_conditions_together() {
        use Condition::*;
        let ts = [
            hard(Signal::NodeFsAvailable, ThresholdValue::Percentage(0.1)),
            hard(Signal::MemoryAvailable, ThresholdValue::Quantity(100 * MI)),
        ];
        run(
            &ts,
            Duration::from_secs(30),
            &[
                (
                    0,
                    50,
                    50,
                    &[MemoryPressure, DiskPressure],
                    &[Signal::NodeFsAvailable, Signal::MemoryAvailable],
                ),
                (
                    10,
                    500,
                    50,
                    &[MemoryPressure, DiskPressure],
                    &[Signal::MemoryAvailable],
                ),
                (31, 500, 50, &[MemoryPressure], &[Signal::MemoryAvailable]),
                (40, 500, 500, &[MemoryPressure], &[]),
                (70, 500, 500, &[], &[]),
            ],
        );
    }
}
