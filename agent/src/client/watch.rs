//! Back-off for the agent's watches, as the kubelet's reflectors: exponential from 800 ms to
//! 30 s with jitter, reset after 2 minutes without errors; but a 410 Gone (the resource version
//! is too old, as after an API server restart) relists at once instead of waiting out the
//! back-off that built up while the server was away; and a 403 Forbidden before the watch's
//! first success retries after 100 ms, doubling to 800 ms, for 3.1 s: the Node authorizer learns
//! that a node may read a pod's configMap/secret from its own informer, a few milliseconds after
//! the pod is bound (more than a second with 100 nodes starting 1,000 pods), so a node's first
//! read of a new pod's object can race it.

use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kube::runtime::watcher;

use super::reachability::{self, Reachability};
use crate::backoff::{Backoff, Policy};

/// The kubelet's reflector back-off (client-go `defaultBackoffInit`/`Max`/`Reset`/`Jitter`):
/// 800 ms doubling to 30 s, stretched by up to as much again, reset after 2 quiet minutes.
pub const WATCH: Policy = Policy::exponential(Duration::from_millis(800), Duration::from_secs(30))
    .with_jitter(1.0)
    .with_reset_after(Duration::from_secs(120));
/// Quick retries after a 403 before the first success: 100 ms doubling to 800 ms.
const FORBIDDEN_RETRY: Policy =
    Policy::exponential(Duration::from_millis(100), Duration::from_millis(800));
/// How many such quick retries: 100, 200, 400, 800, 800, 800 ms, 3.1 s in all.
const FORBIDDEN_RETRIES: u32 = 6;

/// The wait before quick retry `n` (from 0) of a request the Node authorizer refused because it
/// has not yet seen the pod bound to this node (a watch of a pod's configMap or secret, the pod's
/// TokenRequest); None once the 3.1 s of quick retries are spent. Doubling rather than flat: the
/// authorizer lags most when the API server is busiest (over a second with 100 nodes starting
/// 1,000 pods), and every node's first pod in a namespace meets the race.
pub fn forbidden_retry(n: u32) -> Option<Duration> {
    let first = FORBIDDEN_RETRY.after(None);
    (n < FORBIDDEN_RETRIES).then(|| (0..n).fold(first, |d, _| FORBIDDEN_RETRY.after(Some(d))))
}

/// The reflector's `minWatchTimeout`: the shortest watch a request asks the API server for.
const MIN_WATCH_TIMEOUT: Duration = Duration::from_secs(300);

/// The `timeoutSeconds` one watcher asks for: [`MIN_WATCH_TIMEOUT`] stretched by `draw` in
/// [0, 1), 5 to 10 minutes as the kubelet's reflectors, so the watches of many nodes end (and
/// are made again) spread out, and about a third less often than with kube-rs's fixed 290 s.
pub fn timeout_seconds(draw: f64) -> u32 {
    (MIN_WATCH_TIMEOUT.as_secs_f64() * (1.0 + draw.clamp(0.0, 1.0))) as u32
}

/// A watcher configuration with a reflector's randomized timeout ([`timeout_seconds`]); kube-rs
/// keeps one config per watcher, so the draw is per watcher rather than per request.
pub fn config() -> watcher::Config {
    watcher::Config::default().timeout(timeout_seconds(crate::backoff::jitter()))
}

/// The delay policy: what to wait after an error ([`WATCH`], with the 410 and 403 exceptions).
#[derive(Debug, Clone)]
pub struct WatchBackoff {
    backoff: Backoff,
    succeeded: bool,
    quick_retries: u32,
}

impl Default for WatchBackoff {
    fn default() -> Self {
        Self {
            backoff: Backoff::new(WATCH),
            succeeded: false,
            quick_retries: 0,
        }
    }
}

impl WatchBackoff {
    /// Notes that the watch delivered something (its authorization is settled).
    pub fn succeeded(&mut self) {
        self.succeeded = true;
    }

    /// Starts the back-off over (the server answers again).
    pub fn reset(&mut self) {
        self.backoff.reset();
    }

    /// The delay before retrying after `err` at `now`; `jitter` in [0, 1) stretches it (the
    /// kubelet's jitter factor 1.0: between d and 2d). Zero for 410 Gone.
    pub fn delay(&mut self, err: &watcher::Error, now: Instant, jitter: f64) -> Duration {
        if is_gone(err) {
            return Duration::ZERO;
        }
        if !self.succeeded
            && is_forbidden(err)
            && let Some(d) = forbidden_retry(self.quick_retries)
        {
            self.quick_retries += 1;
            return d;
        }
        self.backoff.fail(now, jitter)
    }
}

/// True when the error says the resource version is gone (HTTP 410): the watcher relists.
pub fn is_gone(err: &watcher::Error) -> bool {
    status_code(err) == Some(410)
}

/// True when the error is a 403 Forbidden.
fn is_forbidden(err: &watcher::Error) -> bool {
    status_code(err) == Some(403)
}

/// The HTTP status code the API server gave, if the error carries one.
fn status_code(err: &watcher::Error) -> Option<u16> {
    match err {
        watcher::Error::WatchError(s) => Some(s.code),
        watcher::Error::WatchStartFailed(kube::Error::Api(s))
        | watcher::Error::WatchFailed(kube::Error::Api(s))
        | watcher::Error::InitialListFailed(kube::Error::Api(s)) => Some(s.code),
        _ => None,
    }
}

/// Passes `stream`'s items through, sleeping after each error as [`WatchBackoff`] says before
/// polling again (the watcher retries on the next poll); the API server answering again after
/// failures ([`reachability`]) ends the sleep and the back-off built up.
pub fn with_backoff<S, T>(stream: S) -> impl Stream<Item = Result<T, watcher::Error>> + Send
where
    S: Stream<Item = Result<T, watcher::Error>> + Send + Unpin,
    T: Send,
{
    with_backoff_on(stream, reachability::global())
}

/// [`with_backoff`], woken by `reach`.
fn with_backoff_on<S, T>(
    stream: S,
    reach: &'static Reachability,
) -> impl Stream<Item = Result<T, watcher::Error>> + Send
where
    S: Stream<Item = Result<T, watcher::Error>> + Send + Unpin,
    T: Send,
{
    futures::stream::unfold(
        (stream, WatchBackoff::default(), Duration::ZERO, 0),
        move |(mut stream, mut backoff, wait, mark)| async move {
            if !wait.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = reach.restored_since(mark) => backoff.reset(),
                }
            }
            // Taken before the attempt, so an answer that comes back while it fails still ends
            // the wait after it.
            let mark = reach.mark();
            let item = stream.next().await?;
            let wait = match &item {
                Ok(_) => {
                    backoff.succeeded();
                    Duration::ZERO
                }
                Err(e) => backoff.delay(
                    e,
                    tokio::time::Instant::now().into_std(),
                    crate::backoff::jitter(),
                ),
            };
            Some((item, (stream, backoff, wait, mark)))
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    fn status(code: u16) -> Box<Status> {
        let mut s = Status::failure("too old resource version", "Expired");
        s.code = code;
        Box::new(s)
    }

    fn refused() -> watcher::Error {
        watcher::Error::WatchStartFailed(kube::Error::Api(status(503)))
    }

    #[test]
    fn watches_ask_for_five_to_ten_minutes_as_a_reflector() {
        assert_eq!(timeout_seconds(0.0), 300);
        assert_eq!(timeout_seconds(0.5), 450);
        assert_eq!(timeout_seconds(0.999), 599);
        // Never the 290 s kube-rs asks for, never past 10 minutes.
        assert_eq!(timeout_seconds(-1.0), 300);
        assert_eq!(timeout_seconds(7.0), 600);
    }

    #[test]
    fn grows_from_800ms_to_the_30s_cap() {
        let mut b = WatchBackoff::default();
        let t = Instant::now();
        let got: Vec<u64> = (0..8)
            .map(|i| {
                b.delay(&refused(), t + Duration::from_secs(i), 0.0)
                    .as_millis() as u64
            })
            .collect();
        assert_eq!(got, [800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]);
    }

    #[test]
    fn jitter_stretches_up_to_twice() {
        let mut b = WatchBackoff::default();
        let d = b.delay(&refused(), Instant::now(), 0.5);
        assert_eq!(d, Duration::from_millis(1200));
    }

    #[test]
    fn gone_relists_at_once_whatever_the_backoff_built_up() {
        let mut b = WatchBackoff::default();
        let t = Instant::now();
        for i in 0..10 {
            b.delay(&refused(), t + Duration::from_secs(i), 0.0);
        }
        let gone = watcher::Error::WatchError(status(410));
        assert_eq!(
            b.delay(&gone, t + Duration::from_secs(11), 0.9),
            Duration::ZERO
        );
        let gone_at_start = watcher::Error::WatchStartFailed(kube::Error::Api(status(410)));
        assert_eq!(b.delay(&gone_at_start, t, 0.0), Duration::ZERO);
        // A later ordinary error continues at the cap: 410 does not reset the back-off.
        assert_eq!(
            b.delay(&refused(), t + Duration::from_secs(12), 0.0),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn forbidden_before_the_first_success_retries_quickly_for_three_seconds() {
        let forbidden = || watcher::Error::InitialListFailed(kube::Error::Api(status(403)));
        let mut b = WatchBackoff::default();
        let t = Instant::now();
        let quick: Vec<u128> = (0..6)
            .map(|_| b.delay(&forbidden(), t, 0.0).as_millis())
            .collect();
        assert_eq!(quick, [100, 200, 400, 800, 800, 800]);
        assert_eq!(b.delay(&forbidden(), t, 0.0), WATCH.initial);
        let mut b = WatchBackoff::default();
        b.succeeded();
        assert_eq!(b.delay(&forbidden(), t, 0.0), WATCH.initial);
    }

    #[test]
    fn resets_after_two_quiet_minutes() {
        let mut b = WatchBackoff::default();
        let t = Instant::now();
        for i in 0..6 {
            b.delay(&refused(), t + Duration::from_secs(i), 0.0);
        }
        // More than 2 minutes, as the kubelet's reflector (`> resetInterval`).
        let later = t + Duration::from_secs(5 + 121);
        assert_eq!(b.delay(&refused(), later, 0.0), WATCH.initial);
    }

    #[tokio::test(start_paused = true)]
    async fn stream_waits_after_errors_but_not_after_gone() {
        let items: Vec<Result<u32, watcher::Error>> = vec![
            Err(refused()),
            Ok(1),
            Err(watcher::Error::WatchError(status(410))),
            Ok(2),
        ];
        let start = tokio::time::Instant::now();
        let mut s = Box::pin(with_backoff(futures::stream::iter(items)));
        assert!(s.next().await.expect("first").is_err());
        assert!(matches!(s.next().await, Some(Ok(1))));
        let after_error = start.elapsed();
        assert!(
            after_error >= WATCH.initial,
            "no wait after an error: {after_error:?}"
        );
        assert!(s.next().await.expect("gone").is_err());
        assert!(matches!(s.next().await, Some(Ok(2))));
        assert_eq!(start.elapsed(), after_error, "waited after 410 Gone");
    }

    #[tokio::test(start_paused = true)]
    async fn the_server_answering_again_ends_the_wait_and_the_backoff() {
        let reach: &'static Reachability = Box::leak(Box::default());
        let (tx, rx) = futures::channel::mpsc::unbounded::<Result<u32, watcher::Error>>();
        let mut s = Box::pin(with_backoff_on(rx, reach));
        // Errors until the back-off is at its 30 s cap.
        for _ in 0..6 {
            reach.observe(false);
            tx.unbounded_send(Err(refused())).expect("send");
            assert!(s.next().await.expect("error").is_err());
        }
        tx.unbounded_send(Ok(1)).expect("send");
        let start = tokio::time::Instant::now();
        let next = tokio::spawn(async move {
            let item = s.next().await;
            (item.map(|r| r.ok()), s)
        });
        tokio::time::sleep(Duration::from_secs(2)).await;
        assert!(!next.is_finished(), "the back-off was not waited");
        reach.observe(true);
        let (item, mut s) = next.await.expect("task");
        assert_eq!(item, Some(Some(1)));
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "woke after {:?}",
            start.elapsed()
        );
        // Back at the first delay: the back-off started over.
        tx.unbounded_send(Err(refused())).expect("send");
        assert!(s.next().await.expect("error").is_err());
        tx.unbounded_send(Ok(2)).expect("send");
        let start = tokio::time::Instant::now();
        assert!(matches!(s.next().await, Some(Ok(2))));
        assert!(
            start.elapsed() <= WATCH.initial * 2,
            "{:?}",
            start.elapsed()
        );
    }
}
