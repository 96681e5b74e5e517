//! PLEG health, as the kubelet's GenericPLEG.Healthy: the runtime relist must have succeeded
//! within [`RELIST_THRESHOLD`]. A stuck runtime, or a pod manager loop that no longer runs, makes
//! the node NotReady ("PLEG is not healthy: ...") and `/healthz` fail.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The kubelet's genericPlegRelistThreshold.
pub const RELIST_THRESHOLD: Duration = Duration::from_secs(180);

/// When the relist last succeeded; shared by the pod manager (writer), the node status and
/// healthz (readers).
#[derive(Clone, Debug)]
pub struct PlegHealth {
    /// When this PLEG started.
    since: Instant,
    /// The last successful relist.
    last: Arc<Mutex<Option<Instant>>>,
}

impl PlegHealth {
    /// A PLEG started now: healthy until the threshold passes without a relist.
    pub fn new() -> PlegHealth {
        PlegHealth::started_at(Instant::now())
    }

    /// A PLEG started at `since`.
    pub fn started_at(since: Instant) -> PlegHealth {
        PlegHealth {
            since,
            last: Arc::default(),
        }
    }

    /// A relist succeeded at `at`.
    pub fn relisted(&self, at: Instant) {
        if let Ok(mut l) = self.last.lock() {
            *l = Some(at);
        }
    }

    /// Ok when a relist succeeded within the threshold at `now`, else the kubelet's reason.
    /// Unlike the kubelet, a PLEG that has not relisted yet counts as healthy for the threshold
    /// after its start, so that the first node status is not NotReady for a relist racing it.
    pub fn check(&self, now: Instant) -> Result<(), String> {
        let last = self.last.lock().ok().and_then(|l| *l);
        match last {
            None if now.saturating_duration_since(self.since) > RELIST_THRESHOLD => {
                Err("pleg has yet to be successful".into())
            }
            None => Ok(()),
            Some(t) => {
                let elapsed = now.saturating_duration_since(t);
                if elapsed > RELIST_THRESHOLD {
                    Err(format!(
                        "pleg was last seen active {} ago; threshold is {}",
                        crate::config::duration::format(elapsed),
                        crate::config::duration::format(RELIST_THRESHOLD)
                    ))
                } else {
                    Ok(())
                }
            }
        }
    }
}

impl Default for PlegHealth {
    fn default() -> Self {
        PlegHealth::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_while_the_relist_keeps_succeeding_as_the_kubelet() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let pleg = PlegHealth::started_at(t0);
        assert_eq!(
            pleg.check(t0 + s(60)),
            Ok(()),
            "not relisted yet, just started"
        );
        assert_eq!(
            pleg.check(t0 + s(181)),
            Err("pleg has yet to be successful".into())
        );
        pleg.relisted(t0 + s(200));
        assert_eq!(pleg.check(t0 + s(380)), Ok(()));
        assert_eq!(
            pleg.check(t0 + s(381) + Duration::from_millis(500)),
            Err("pleg was last seen active 3m1.5s ago; threshold is 3m0s".into())
        );
        pleg.relisted(t0 + s(390));
        assert_eq!(pleg.check(t0 + s(391)), Ok(()));
    }
}
