//! The pure half of a probe worker (the kubelet's worker.doProbe after the probe ran): count
//! consecutive results against the thresholds and decide when the result the status sees changes.

use super::spec::{ProbeSpec, ProbeType};

/// A probe's result as the results cache holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Passed (a warning counts as a pass).
    Success,
    /// Failed.
    Failure,
}

/// The threshold state of one probe of one container instance.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProbeState {
    last: Option<Outcome>,
    run: u32,
    /// Set after a liveness failure or any startup result: no more probing of this instance.
    pub on_hold: bool,
}

impl ProbeState {
    /// Counts `result`; returns the result to publish once its threshold is reached.
    pub fn record(&mut self, spec: &ProbeSpec, result: Outcome) -> Option<Outcome> {
        if self.last == Some(result) {
            self.run = self.run.saturating_add(1);
        } else {
            self.last = Some(result);
            self.run = 1;
        }
        let threshold = match result {
            Outcome::Failure => spec.failure_threshold,
            Outcome::Success => spec.success_threshold,
        };
        if self.run < threshold {
            return None;
        }
        // The kubelet's hold: a liveness failure means a kill; a startup result is final.
        if (spec.kind == ProbeType::Liveness && result == Outcome::Failure)
            || spec.kind == ProbeType::Startup
        {
            self.on_hold = true;
            self.run = 0;
        }
        Some(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prober::spec::Handler;
    use std::time::Duration;

    fn spec(kind: ProbeType, success: u32, failure: u32) -> ProbeSpec {
        ProbeSpec {
            kind,
            handler: Handler::Missing,
            initial_delay: Duration::ZERO,
            period: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            success_threshold: success,
            failure_threshold: failure,
            termination_grace: None,
        }
    }

    use Outcome::{Failure as F, Success as S};

    #[test]
    fn thresholds_count_consecutive_results() {
        let sp = spec(ProbeType::Readiness, 2, 3);
        let mut st = ProbeState::default();
        let seen: Vec<Option<Outcome>> = [S, S, F, F, S, F, F, F, F, S, S]
            .iter()
            .map(|r| st.record(&sp, *r))
            .collect();
        assert_eq!(
            seen,
            vec![
                None,
                Some(S),
                None,
                None,
                None,
                None,
                None,
                Some(F),
                Some(F),
                None,
                Some(S)
            ]
        );
        assert!(!st.on_hold, "readiness never holds");
    }

    #[test]
    fn liveness_failure_and_any_startup_result_hold() {
        let sp = spec(ProbeType::Liveness, 1, 2);
        let mut st = ProbeState::default();
        assert_eq!(st.record(&sp, S), Some(S));
        assert!(!st.on_hold);
        assert_eq!(st.record(&sp, F), None);
        assert_eq!(st.record(&sp, F), Some(F));
        assert!(st.on_hold);
        let sp = spec(ProbeType::Startup, 1, 3);
        let mut st = ProbeState::default();
        assert_eq!(st.record(&sp, S), Some(S));
        assert!(st.on_hold);
    }
}
