//! usageNanoCores from two samples of cumulative CPU time, as the kubelet computes it when the
//! runtime does not: (Δ core-nanoseconds / Δ wall nanoseconds) × 10⁹.

use std::collections::HashMap;

/// The previous cumulative CPU sample of every measured thing (node, pod, container id).
#[derive(Debug, Default)]
pub struct CpuRates {
    prev: HashMap<String, (u64, i128)>,
    seen: std::collections::HashSet<String>,
}

impl CpuRates {
    /// Records `usage_ns` at `time_ns` for `key`; returns the nanocores since the previous sample
    /// of `key`, or `None` on the first sample, a reset counter or a non-advancing clock.
    pub fn rate(&mut self, key: &str, usage_ns: u64, time_ns: i128) -> Option<u64> {
        self.seen.insert(key.to_string());
        let prev = self.prev.insert(key.to_string(), (usage_ns, time_ns));
        let (pu, pt) = prev?;
        if time_ns <= pt {
            // Same sample seen again (runtime cache): keep the older point for the next one.
            self.prev.insert(key.to_string(), (pu, pt));
            return None;
        }
        let du = usage_ns.checked_sub(pu)? as u128;
        let dt = (time_ns - pt) as u128;
        Some((du * 1_000_000_000 / dt).min(u64::MAX as u128) as u64)
    }

    /// Forgets the keys not seen since the previous call (gone pods and containers).
    pub fn end_round(&mut self) {
        let seen = std::mem::take(&mut self.seen);
        self.prev.retain(|k, _| seen.contains(k));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i128 = 1_000_000_000;

    #[test]
    fn nanocores_from_two_samples() {
        let mut r = CpuRates::default();
        assert_eq!(r.rate("c", 1_000_000_000, 10 * S), None);
        // 0.5 s of CPU in 2 s of wall time: a quarter core.
        assert_eq!(r.rate("c", 1_500_000_000, 12 * S), Some(250_000_000));
        // Same timestamp again: no rate, and the next one is still against t=12.
        assert_eq!(r.rate("c", 1_500_000_000, 12 * S), None);
        assert_eq!(r.rate("c", 3_500_000_000, 14 * S), Some(1_000_000_000));
        // Counter reset (container restarted under the same key).
        assert_eq!(r.rate("c", 10, 15 * S), None);
        assert_eq!(r.rate("c", 10 + 2 * S as u64, 16 * S), Some(2_000_000_000));
    }

    #[test]
    fn gone_keys_are_forgotten() {
        let mut r = CpuRates::default();
        r.rate("a", 1, S);
        r.rate("b", 1, S);
        r.end_round();
        r.rate("a", 2, 2 * S);
        r.end_round();
        assert_eq!(r.rate("b", 5, 3 * S), None, "b was forgotten");
        assert!(r.rate("a", 3, 3 * S).is_some());
    }
}
