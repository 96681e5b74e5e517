//! The agent's long-running tasks, each named and in its own span, drained on shutdown: after
//! the root cancellation token fires, every task gets until a deadline to finish, and the ones
//! still running are named in the log and aborted.

use std::collections::HashMap;
use std::future::Future;
use std::time::Duration;

use tokio::task::{Id, JoinSet};
use tracing::{Instrument, debug, info_span, warn};

/// The set of named tasks of one agent process.
#[derive(Default)]
pub struct Tasks {
    set: JoinSet<()>,
    names: HashMap<Id, &'static str>,
}

impl Tasks {
    /// Spawns `fut` as task `name`, inside a `task` span.
    pub fn spawn<F>(&mut self, name: &'static str, fut: F)
    where
        F: Future + Send + 'static,
    {
        let handle = self.set.spawn(
            async move {
                fut.await;
            }
            .instrument(info_span!("task", task = name)),
        );
        self.names.insert(handle.id(), name);
    }

    /// Names of the tasks still running, sorted.
    pub fn running(&self) -> Vec<&'static str> {
        let mut v: Vec<&'static str> = self.names.values().copied().collect();
        v.sort_unstable();
        v
    }

    /// Waits up to `deadline` for every task to finish, then aborts the rest; returns the names of
    /// those aborted.
    pub async fn drain(mut self, deadline: Duration) -> Vec<&'static str> {
        let names = &mut self.names;
        let set = &mut self.set;
        let all = async {
            while let Some(done) = set.join_next_with_id().await {
                let id = match &done {
                    Ok((id, ())) => *id,
                    Err(e) => e.id(),
                };
                let name = names.remove(&id).unwrap_or("?");
                match done {
                    Ok(_) => debug!(task = name, "task stopped"),
                    Err(e) => warn!(task = name, error = %e, "task ended abnormally"),
                }
            }
        };
        let _ = tokio::time::timeout(deadline, all).await;
        let left = self.running();
        if !left.is_empty() {
            warn!(tasks = ?left, "tasks still running at the shutdown deadline: aborted");
        }
        self.set.abort_all();
        left
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_util::sync::CancellationToken;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_cancelled_tasks_and_aborts_stragglers() {
        let cancel = CancellationToken::new();
        let mut tasks = Tasks::default();
        let c = cancel.clone();
        tasks.spawn("obedient", async move { c.cancelled().await });
        tasks.spawn("stubborn", std::future::pending::<()>());
        tasks.spawn("quick", async {});
        tokio::task::yield_now().await;
        assert_eq!(tasks.running(), ["obedient", "quick", "stubborn"]);
        cancel.cancel();
        let started = tokio::time::Instant::now();
        let aborted = tasks.drain(Duration::from_secs(5)).await;
        assert_eq!(aborted, ["stubborn"]);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    #[tokio::test(start_paused = true)]
    async fn drain_returns_at_once_when_all_stop() {
        let cancel = CancellationToken::new();
        let mut tasks = Tasks::default();
        for _ in 0..3 {
            let c = cancel.clone();
            tasks.spawn("loop", async move { c.cancelled().await });
        }
        cancel.cancel();
        let started = tokio::time::Instant::now();
        assert!(tasks.drain(Duration::from_secs(5)).await.is_empty());
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
