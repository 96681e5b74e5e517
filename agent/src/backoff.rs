//! One back-off policy for every retry in the agent, as the kubelet's: a [`Policy`] (initial
//! delay, cap, factor, jitter, reset after a quiet time) and three ways to use it.
//!
//! - [`KeyedBackoff`]: state per key, for crash loops and image pulls (the kubelet's
//!   `flowcontrol.Backoff`): may `key` try again now, and how long is its current delay.
//! - [`Backoff`]: one sequence of delays, for a watch (`client::watch` adapts it to a stream) and,
//!   as a `backon` backoff, for [`retry`].
//! - [`retry`]: calls an operation until it succeeds or a cancellation token fires, sleeping the
//!   policy's delays in between (backon's retry loop, made cancellable).
//!
//! The policies themselves live with their users (`pod::backoff::CRASH_LOOP`,
//! `client::watch::WATCH`, `node::API_RETRY`, ...), each citing the kubelet's numbers it takes.

use std::collections::HashMap;
use std::future::Future;
use std::time::{Duration, Instant};

use backon::RetryableWithContext;
use tokio_util::sync::CancellationToken;

/// How delays grow: `initial`, times `factor` after each failure up to `cap`, stretched by up to
/// `jitter` times itself at random, and back to `initial` after `reset_after` without failures.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    /// The first delay.
    pub initial: Duration,
    /// The longest delay, before jitter.
    pub cap: Duration,
    /// Each delay is the previous one times this (1: constant).
    pub factor: u32,
    /// Up to this fraction of a delay is added at random: 1.0 (the kubelet's reflectors) waits
    /// between d and 2d; 0.0 waits exactly d.
    pub jitter: f64,
    /// A failure more than this long after the previous one starts from `initial` again; `None`
    /// never resets.
    pub reset_after: Option<Duration>,
}

impl Policy {
    /// Doubling from `initial` to `cap`, no jitter, never reset.
    pub const fn exponential(initial: Duration, cap: Duration) -> Self {
        Self {
            initial,
            cap,
            factor: 2,
            jitter: 0.0,
            reset_after: None,
        }
    }

    /// Always `delay`.
    pub const fn constant(delay: Duration) -> Self {
        Self {
            initial: delay,
            cap: delay,
            factor: 1,
            jitter: 0.0,
            reset_after: None,
        }
    }

    /// This policy with `jitter` (see [`Policy::jitter`]).
    pub const fn with_jitter(mut self, jitter: f64) -> Self {
        self.jitter = jitter;
        self
    }

    /// This policy, starting over after `quiet` without failures.
    pub const fn with_reset_after(mut self, quiet: Duration) -> Self {
        self.reset_after = Some(quiet);
        self
    }

    /// The delay after `previous` (the first delay when there was none), before jitter.
    pub fn after(&self, previous: Option<Duration>) -> Duration {
        match previous {
            None => self.initial.min(self.cap),
            Some(d) => d.saturating_mul(self.factor).min(self.cap),
        }
    }

    /// `delay` stretched by jitter; `draw` is a number in [0, 1).
    pub fn jittered(&self, delay: Duration, draw: f64) -> Duration {
        if self.jitter <= 0.0 {
            return delay;
        }
        delay.mul_f64(1.0 + self.jitter * draw.clamp(0.0, 1.0))
    }

    /// True when a failure at `now` comes long enough after the one at `last` to start over.
    fn expired(&self, last: Instant, now: Instant) -> bool {
        self.reset_after
            .is_some_and(|quiet| now.saturating_duration_since(last) > quiet)
    }
}

/// A number in [0, 1) that differs between nodes and restarts (clock-derived; no RNG needed).
pub fn jitter() -> f64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    f64::from(nanos % 1000) / 1000.0
}

/// One sequence of delays under a [`Policy`]: a loop's or a watch's.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: Policy,
    current: Option<Duration>,
    last_failure: Option<Instant>,
}

impl Backoff {
    /// A sequence that starts at the policy's first delay.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            current: None,
            last_failure: None,
        }
    }

    /// Records a failure at `now` and returns the delay before the next attempt; `draw` in [0, 1)
    /// is the jitter's random number.
    pub fn fail(&mut self, now: Instant, draw: f64) -> Duration {
        if self
            .last_failure
            .is_some_and(|last| self.policy.expired(last, now))
        {
            self.current = None;
        }
        let delay = self.policy.after(self.current);
        self.current = Some(delay);
        self.last_failure = Some(now);
        self.policy.jittered(delay, draw)
    }

    /// Starts over (an attempt succeeded).
    pub fn reset(&mut self) {
        self.current = None;
        self.last_failure = None;
    }
}

/// Endless: each item is the delay after one more failure (tokio's clock, so a paused test clock
/// drives it).
impl Iterator for Backoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(self.fail(tokio::time::Instant::now().into_std(), jitter()))
    }
}

impl backon::BackoffBuilder for Policy {
    type Backoff = Backoff;

    fn build(self) -> Backoff {
        Backoff::new(self)
    }
}

/// Calls `op` until it succeeds (then its value) or `cancel` fires (then `None`), sleeping the
/// policy's delays between failures; `notify` sees each failure and the delay before the next
/// attempt, to log it.
///
/// `op` borrows `state` for one attempt and hands it back with the result, so an attempt may use
/// the caller's `&mut self`. An error the caller must not retry is for `op` to return as a value
/// (`Ok(Err(e))`).
pub async fn retry<'a, S, T, E, Fut>(
    policy: Policy,
    cancel: &CancellationToken,
    state: &'a mut S,
    op: impl FnMut(&'a mut S) -> Fut,
    notify: impl FnMut(&E, Duration),
) -> Option<T>
where
    S: ?Sized,
    Fut: Future<Output = (&'a mut S, Result<T, E>)>,
{
    let attempts = op
        .retry(policy)
        .sleep(tokio::time::sleep)
        .context(state)
        .notify(notify);
    tokio::select! {
        _ = cancel.cancelled() => None,
        (_, r) = attempts => r.ok(),
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    /// The current delay before jitter (what the next failure grows from).
    delay: Duration,
    /// The current delay with jitter (what the key waits).
    wait: Duration,
    /// When the current delay started.
    last: Instant,
}

/// Back-off state per key (a container name, or `pull:<container>`), as the kubelet's
/// `flowcontrol.Backoff`: a key waits its delay after each recorded attempt; its delay grows with
/// each attempt and starts over after the policy's quiet time.
#[derive(Debug)]
pub struct KeyedBackoff {
    policy: Policy,
    entries: HashMap<String, Entry>,
}

impl KeyedBackoff {
    /// No key in back-off yet.
    pub fn new(policy: Policy) -> Self {
        Self {
            policy,
            entries: HashMap::new(),
        }
    }

    /// True while `key` must wait (see [`Self::remaining`]).
    pub fn in_backoff(&self, key: &str, now: Instant) -> bool {
        self.remaining(key, now).is_some()
    }

    /// Time left before `key` may try again, if it must wait.
    pub fn remaining(&self, key: &str, now: Instant) -> Option<Duration> {
        let e = self.entries.get(key)?;
        let until = e.last + e.wait;
        (now < until).then(|| until - now)
    }

    /// The current delay of `key` (what the BackOff message reports); the first delay for a key
    /// not in back-off.
    pub fn delay(&self, key: &str) -> Duration {
        self.entries
            .get(key)
            .map_or(self.policy.after(None), |e| e.wait)
    }

    /// Records an attempt at `now`: the first sets the initial delay, later ones grow it up to the
    /// cap; a key quiet for longer than the policy's reset time starts over.
    pub fn next(&mut self, key: &str, now: Instant) {
        let delay = match self.entries.get(key) {
            Some(e) if !self.policy.expired(e.last, now) => self.policy.after(Some(e.delay)),
            _ => self.policy.after(None),
        };
        let wait = self.policy.jittered(delay, jitter());
        self.entries.insert(
            key.to_string(),
            Entry {
                delay,
                wait,
                last: now,
            },
        );
    }

    /// Forgets `key` (a container that ran long enough, a pull that worked).
    pub fn reset(&mut self, key: &str) {
        self.entries.remove(key);
    }

    /// The earliest instant at which some key leaves back-off.
    pub fn next_expiry(&self, now: Instant) -> Option<Instant> {
        self.entries
            .values()
            .map(|e| e.last + e.wait)
            .filter(|t| *t > now)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    /// The kubelet's crash-loop numbers.
    const CRASH: Policy = Policy::exponential(Duration::from_secs(10), Duration::from_secs(300))
        .with_reset_after(Duration::from_secs(600));

    #[test]
    fn policy_steps() {
        struct Case {
            what: &'static str,
            policy: Policy,
            want: &'static [u64],
        }
        let cases = [
            Case {
                what: "crash loop: 10 s doubling to 300 s",
                policy: CRASH,
                want: &[10_000, 20_000, 40_000, 80_000, 160_000, 300_000, 300_000],
            },
            Case {
                what: "node API: 100 ms doubling to 7 s",
                policy: Policy::exponential(MS(100), S(7)),
                want: &[100, 200, 400, 800, 1600, 3200, 6400, 7000, 7000],
            },
            Case {
                what: "constant",
                policy: Policy::constant(S(1)),
                want: &[1000, 1000, 1000],
            },
            Case {
                what: "factor 3",
                policy: Policy {
                    factor: 3,
                    ..Policy::exponential(MS(100), S(1))
                },
                want: &[100, 300, 900, 1000],
            },
            Case {
                what: "initial above the cap starts at the cap",
                policy: Policy::exponential(S(10), S(5)),
                want: &[5000, 5000],
            },
        ];
        for c in cases {
            let mut b = Backoff::new(c.policy);
            let t = Instant::now();
            let got: Vec<u64> = (0..c.want.len())
                .map(|_| b.fail(t, 0.5).as_millis() as u64)
                .collect();
            assert_eq!(got, c.want, "{}", c.what);
        }
    }

    #[test]
    fn jitter_stretches_up_to_the_factor() {
        let p = Policy::exponential(MS(800), S(30)).with_jitter(1.0);
        assert_eq!(p.jittered(MS(800), 0.0), MS(800));
        assert_eq!(p.jittered(MS(800), 0.5), MS(1200));
        assert_eq!(p.jittered(MS(800), 2.0), MS(1600), "draw clamped to 1");
        let half = p.with_jitter(0.5);
        assert_eq!(half.jittered(MS(800), 1.0), MS(1200));
    }

    #[test]
    fn sequence_resets_after_quiet_and_on_success() {
        let mut b = Backoff::new(Policy::exponential(MS(800), S(30)).with_reset_after(S(120)));
        let t = Instant::now();
        for i in 0..5 {
            b.fail(t + S(i), 0.0);
        }
        // Exactly the quiet time is not enough (the kubelet's strict `>`).
        assert_eq!(b.fail(t + S(4 + 120), 0.0), MS(25_600));
        assert_eq!(b.fail(t + S(4 + 120 + 121), 0.0), MS(800));
        b.fail(t + S(250), 0.0);
        b.reset();
        assert_eq!(b.fail(t + S(251), 0.0), MS(800));
    }

    #[test]
    fn keyed_doubles_to_the_cap_and_resets_after_quiet() {
        let mut b = KeyedBackoff::new(CRASH);
        let t0 = Instant::now();
        assert!(!b.in_backoff("c", t0));
        assert_eq!(b.delay("c"), S(10));
        b.next("c", t0);
        assert_eq!(b.delay("c"), S(10));
        assert!(b.in_backoff("c", t0 + S(9)));
        assert_eq!(b.remaining("c", t0 + S(9)), Some(S(1)));
        assert!(!b.in_backoff("c", t0 + S(10)));
        assert!(!b.in_backoff("other", t0), "keys are independent");
        let mut t = t0;
        let mut seen = vec![];
        for _ in 0..7 {
            t += b.delay("c");
            b.next("c", t);
            seen.push(b.delay("c").as_secs());
        }
        assert_eq!(seen, [20, 40, 80, 160, 300, 300, 300]);
        b.next("c", t + S(600));
        assert_eq!(b.delay("c"), S(300), "600 s quiet is not more than 600 s");
        b.next("c", t + S(600) + S(601));
        assert_eq!(b.delay("c"), S(10));
        b.reset("c");
        assert!(!b.in_backoff("c", t));
    }

    #[test]
    fn keyed_next_expiry_is_the_earliest_key() {
        let mut b = KeyedBackoff::new(CRASH);
        let t = Instant::now();
        assert_eq!(b.next_expiry(t), None);
        b.next("a", t);
        b.next("b", t);
        b.next("b", t + S(1));
        assert_eq!(b.next_expiry(t), Some(t + S(10)));
        assert_eq!(b.next_expiry(t + S(10)), Some(t + S(21)));
        assert_eq!(b.next_expiry(t + S(21)), None);
    }

    /// `op` fails `failures` times, then returns how many attempts it took.
    async fn failing(n: &mut u32, failures: u32) -> Result<u32, String> {
        *n += 1;
        if *n > failures {
            Ok(*n)
        } else {
            Err(format!("attempt {n}"))
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retry_sleeps_the_policy_between_failures() {
        let cancel = CancellationToken::new();
        let start = tokio::time::Instant::now();
        let mut attempts = 0u32;
        let mut waits = vec![];
        let got = retry(
            Policy::exponential(MS(100), MS(500)),
            &cancel,
            &mut attempts,
            |n| async move {
                let r = failing(n, 4).await;
                (n, r)
            },
            |_e: &String, d| waits.push(d.as_millis() as u64),
        )
        .await;
        assert_eq!(got, Some(5));
        assert_eq!(attempts, 5);
        assert_eq!(waits, [100, 200, 400, 500]);
        assert_eq!(start.elapsed(), MS(1200));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_succeeds_at_once_without_sleeping() {
        let cancel = CancellationToken::new();
        let start = tokio::time::Instant::now();
        let mut attempts = 0u32;
        let got = retry(
            Policy::exponential(S(10), S(10)),
            &cancel,
            &mut attempts,
            |n| async move {
                let r = failing(n, 0).await;
                (n, r)
            },
            |_e: &String, _| {},
        )
        .await;
        assert_eq!(got, Some(1));
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn retry_stops_when_cancelled_during_a_wait() {
        let cancel = CancellationToken::new();
        let calls = Arc::new(AtomicU32::new(0));
        let task = {
            let cancel = cancel.clone();
            let calls = calls.clone();
            tokio::spawn(async move {
                retry(
                    Policy::constant(S(60)),
                    &cancel,
                    &mut (),
                    |s| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        async move { (s, Err::<(), _>("down")) }
                    },
                    |_, _| {},
                )
                .await
            })
        };
        // Two attempts (at 0 and 60 s), then cancelled in the second wait.
        tokio::time::sleep(S(90)).await;
        cancel.cancel();
        let start = tokio::time::Instant::now();
        assert_eq!(task.await.expect("retry task"), None);
        assert_eq!(start.elapsed(), Duration::ZERO, "returned at once");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }
}
