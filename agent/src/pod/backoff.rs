//! The kubelet's back-off policies for crash loops and image pulls (`kubelet.go`:
//! `initialCrashLoopBackOff`, `MaxCrashLoopBackOff`, `imageBackOffPeriod`, `MaxImageBackOff`, and
//! the crash loop's 600 s `HasExpiredFunc`; a pull back-off resets after twice its cap, the same
//! 600 s). The state per key is [`crate::backoff::KeyedBackoff`].

use std::time::Duration;

use crate::backoff::Policy;

/// Container restarts: 10 s doubling to 300 s, reset after 10 quiet minutes.
pub const CRASH_LOOP: Policy =
    Policy::exponential(Duration::from_secs(10), Duration::from_secs(300))
        .with_reset_after(Duration::from_secs(600));

/// Image pulls: 10 s doubling to 300 s, reset after 10 quiet minutes.
pub const IMAGE_PULL: Policy =
    Policy::exponential(Duration::from_secs(10), Duration::from_secs(300))
        .with_reset_after(Duration::from_secs(600));
