//! The kubelet's back-off for crash loops and image pulls: 10 s, doubling, capped at 5 min, reset
//! after a quiet period of twice the cap.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// First delay.
pub const INITIAL: Duration = Duration::from_secs(10);
/// Longest delay.
pub const MAX: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, Copy)]
struct Entry {
    delay: Duration,
    last: Instant,
}

/// Back-off state per key (a container name, or `pull:<image>`).
#[derive(Debug, Default)]
pub struct Backoff {
    entries: HashMap<String, Entry>,
}

impl Backoff {
    /// True while `key` must wait; the remaining time is `remaining`.
    pub fn in_backoff(&self, key: &str, now: Instant) -> bool {
        self.remaining(key, now).is_some()
    }

    /// Time left before `key` may try again, if it must wait.
    pub fn remaining(&self, key: &str, now: Instant) -> Option<Duration> {
        let e = self.entries.get(key)?;
        let until = e.last + e.delay;
        (now < until).then(|| until - now)
    }

    /// The current delay of `key` (what the BackOff message reports).
    pub fn delay(&self, key: &str) -> Duration {
        self.entries.get(key).map(|e| e.delay).unwrap_or(INITIAL)
    }

    /// Records an attempt: the first sets the initial delay, later ones double it up to the cap; a
    /// key quiet for twice the cap starts over.
    pub fn next(&mut self, key: &str, now: Instant) {
        let delay = match self.entries.get(key) {
            Some(e) if now.duration_since(e.last) <= 2 * MAX => (e.delay * 2).min(MAX),
            _ => INITIAL,
        };
        self.entries
            .insert(key.to_string(), Entry { delay, last: now });
    }

    /// Forgets `key` (a container that ran long enough, a pull that worked).
    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// The earliest instant at which some key leaves back-off.
    pub fn next_expiry(&self, now: Instant) -> Option<Instant> {
        self.entries
            .values()
            .map(|e| e.last + e.delay)
            .filter(|t| *t > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_to_the_cap_and_resets_after_quiet() {
        let mut b = Backoff::default();
        let t0 = Instant::now();
        assert!(!b.in_backoff("c", t0));
        b.next("c", t0);
        assert_eq!(b.delay("c"), INITIAL);
        assert!(b.in_backoff("c", t0 + Duration::from_secs(9)));
        assert!(!b.in_backoff("c", t0 + Duration::from_secs(10)));
        let mut t = t0;
        let mut seen = vec![];
        for _ in 0..7 {
            t += b.delay("c");
            b.next("c", t);
            seen.push(b.delay("c").as_secs());
        }
        assert_eq!(seen, [20, 40, 80, 160, 300, 300, 300]);
        b.next("c", t + 2 * MAX + Duration::from_secs(1));
        assert_eq!(b.delay("c"), INITIAL);
    }
}
