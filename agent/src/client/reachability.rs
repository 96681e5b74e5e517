//! Whether the API server answers, learned from every request the agent makes: the first answer
//! after a run of failed connections wakes every watch that is waiting out its back-off.
//!
//! A watch whose server went away for minutes has built up the reflector back-off (up to 60 s
//! with jitter), so after the return it would sleep on while the Lease and status writes, retried
//! more often, already get through: a pod bound during a 5-minute outage started 23 s after the
//! return. Here the Lease's first success ends those sleeps. The kubelet has no such signal (its
//! reflectors wait their back-off out); it changes only when a watch retries, never how often.

use std::sync::LazyLock;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio::sync::Notify;

/// The API server's reachability as the agent's requests see it.
#[derive(Debug, Default)]
pub struct Reachability {
    /// The last request got no answer (a connection error or a gateway's 502/503/504).
    failing: AtomicBool,
    /// How many times answers came back after failures.
    restorations: AtomicU64,
    restored: Notify,
}

impl Reachability {
    /// Records one request's outcome: `answered` when the server itself replied.
    pub fn observe(&self, answered: bool) {
        if !answered {
            self.failing.store(true, Ordering::Relaxed);
        } else if self.failing.swap(false, Ordering::AcqRel) {
            self.restorations.fetch_add(1, Ordering::AcqRel);
            self.restored.notify_waiters();
        }
    }

    /// A mark to wait from: [`Reachability::restored_since`] returns once answers come back after
    /// it was taken.
    pub fn mark(&self) -> u64 {
        self.restorations.load(Ordering::Acquire)
    }

    /// Returns when the server has answered again after failures since `mark`.
    pub async fn restored_since(&self, mark: u64) {
        loop {
            let notified = self.restored.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.mark() != mark {
                return;
            }
            notified.await;
        }
    }
}

/// The process's one API server.
pub fn global() -> &'static Reachability {
    static GLOBAL: LazyLock<Reachability> = LazyLock::new(Reachability::default);
    &GLOBAL
}

/// Feeds one request's outcome to [`global`]: `code` is the response's status, None when no
/// response came (a connection error). A gateway saying the server is away is no answer.
pub fn observe(code: Option<u16>) {
    global().observe(code.is_some_and(answered));
}

/// True when a response with `status` is the server's own.
fn answered(status: u16) -> bool {
    !matches!(status, 502..=504)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn an_answer_after_failures_wakes_waiters_once() {
        let r = Reachability::default();
        r.observe(true);
        let mark = r.mark();
        r.observe(false);
        r.observe(false);
        let waited = tokio::time::timeout(Duration::from_secs(5), r.restored_since(mark)).await;
        assert!(waited.is_err(), "woken while the server was away");
        r.observe(true);
        tokio::time::timeout(Duration::from_secs(1), r.restored_since(mark))
            .await
            .expect("woken by the answer");
        // More answers are no new restoration.
        let mark = r.mark();
        r.observe(true);
        let again = tokio::time::timeout(Duration::from_secs(5), r.restored_since(mark)).await;
        assert!(again.is_err(), "woken without a failure in between");
    }

    #[tokio::test(start_paused = true)]
    async fn a_restoration_between_mark_and_wait_is_not_missed() {
        let r = Reachability::default();
        r.observe(false);
        let mark = r.mark();
        r.observe(true);
        tokio::time::timeout(Duration::from_millis(1), r.restored_since(mark))
            .await
            .expect("the restoration before the wait counts");
    }

    #[test]
    fn gateway_errors_are_not_answers() {
        assert!(answered(200));
        assert!(answered(403));
        assert!(answered(500));
        assert!(!answered(502));
        assert!(!answered(503));
        assert!(!answered(504));
    }
}
