//! Graceful node shutdown, as the kubelet's pkg/kubelet/nodeshutdown on Linux: with
//! shutdownGracePeriod (or shutdownGracePeriodByPodPriority) set, bosun holds a logind `delay`
//! inhibitor lock for shutdown. When logind announces a shutdown (PrepareForShutdown(true)) the
//! node reports NotReady ("node is shutting down"), new pods are rejected (NodeShutdown, by
//! `pod::admission` reading [`ShuttingDown`]), and
//! the active pods are stopped group by group, lowest priority first, each group within its
//! grace period, with phase Failed, reason Terminated, the kubelet's message and the
//! DisruptionTarget condition; then the lock is released and the machine may go down. A
//! cancelled shutdown (PrepareForShutdown(false)) takes the lock again and the node is Ready.
//!
//! Pods stop through the pod manager ([`PodsRequest`]), as the eviction manager's do; which pod
//! stops when is pure ([`groups`]); the bus is [`logind`].

pub mod groups;
pub mod logind;
pub mod state;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, error, info, info_span, warn};

use crate::config::NodeConfig;
use crate::events::{EventType, Recorder};
use crate::eviction::PodsRequest;
use crate::eviction::plan::Eviction;
use groups::Period;
use logind::{InhibitLock, Logind, LogindError};

/// The status reason of a pod stopped for the shutdown (nodeShutdownReason).
pub const REASON: &str = "Terminated";
/// Its status message, also the DisruptionTarget condition's (nodeShutdownMessage).
pub const MESSAGE: &str = "Pod was terminated in response to imminent node shutdown.";
/// The Ready condition's message while the node shuts down (the manager's ShutdownStatus).
pub const NOT_READY_MESSAGE: &str = "node is shutting down";
/// The node event's reason (kubeletevents.NodeShutdown).
pub const EVENT_REASON: &str = "Shutdown";

/// How long after the bus connection ended the manager watches again (dbusReconnectPeriod).
pub const RECONNECT_PERIOD: Duration = Duration::from_secs(1);

/// True while the node is shutting down: the node status and admission read it.
pub type ShuttingDown = watch::Receiver<bool>;

/// The node shutdown manager.
pub struct Manager {
    periods: Vec<Period>,
    pods: mpsc::Sender<PodsRequest>,
    events: Recorder,
    node: String,
    state: watch::Sender<bool>,
    logind_conf_dir: PathBuf,
    /// `<root-dir>/graceful_node_shutdown_state`: when the last shutdown started and ended.
    times_file: Option<PathBuf>,
    /// The pod statuses, whose writes to the API the lock waits for.
    statuses: Option<crate::status::StatusStore>,
}

/// The kubelet's killPodNow timeout: one and a half grace periods, at least 10 s.
fn kill_timeout(grace_seconds: i64) -> Duration {
    Duration::from_secs((grace_seconds + grace_seconds / 2).max(10) as u64)
}

impl Manager {
    /// The manager for the node's configuration, stopping pods through `pods`; None when
    /// graceful node shutdown is off (no grace period configured). The receiver says whether
    /// the node is shutting down (always false without a manager).
    pub fn new(
        cfg: &NodeConfig,
        pods: mpsc::Sender<PodsRequest>,
        events: Recorder,
    ) -> (Option<Manager>, ShuttingDown) {
        let periods = groups::periods(
            cfg.shutdown_grace_period,
            cfg.shutdown_grace_period_critical_pods,
            &cfg.shutdown_grace_period_by_pod_priority,
        );
        Self::with_periods(&cfg.name, periods, pods, events)
    }

    /// The manager of node `node` with the priority groups `periods` (sorted; none: off).
    pub fn with_periods(
        node: &str,
        periods: Vec<Period>,
        pods: mpsc::Sender<PodsRequest>,
        events: Recorder,
    ) -> (Option<Manager>, ShuttingDown) {
        let (state, rx) = watch::channel(false);
        if periods.is_empty() {
            return (None, rx);
        }
        info!(
            shutdown_grace_period_by_pod_priority = ?periods,
            "Creating node shutdown manager"
        );
        let manager = Manager {
            periods,
            pods,
            events,
            node: node.to_string(),
            state,
            logind_conf_dir: PathBuf::from(logind::LOGIND_CONF_DIR),
            times_file: None,
            statuses: None,
        };
        (Some(manager), rx)
    }

    /// Records each shutdown's start and end in `<root_dir>/graceful_node_shutdown_state`, and
    /// sets the two shutdown gauges from that file now (the kubelet's setMetrics).
    pub fn with_state_in(mut self, root_dir: &std::path::Path) -> Manager {
        let file = state::path(root_dir);
        match state::load(&file) {
            Ok(times) => set_gauges(&times),
            Err(e) => error!(error = %e, "Failed to load graceful shutdown state"),
        }
        self.times_file = Some(file);
        self
    }

    /// Holds the lock, once the pods are stopped, until the API has their statuses (at most
    /// until the grace periods requested are over): the kubelet releases it at once, and a
    /// status still queued when the machine goes down is lost (a busy machine lost it).
    pub fn with_status_writes(mut self, statuses: crate::status::StatusStore) -> Manager {
        self.statuses = Some(statuses);
        self
    }

    /// Watches for shutdowns until cancelled. As the kubelet: a failed first start is logged
    /// and the manager stops (it is not critical to the node); once started, a lost bus
    /// connection is watched again every [`RECONNECT_PERIOD`].
    pub async fn run(mut self, cancel: CancellationToken) {
        let mut started = match self.start().await {
            Ok(s) => s,
            Err(e) => {
                error!(error = %e, "Failed to start node shutdown manager");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                () = self.watch(&mut started) => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(RECONNECT_PERIOD) => {}
            }
            debug!("Restarting watch for node shutdown events");
            loop {
                match self.start().await {
                    Ok(s) => {
                        started = s;
                        break;
                    }
                    Err(e) => {
                        error!(error = %e, "Unable to watch the node for shutdown events");
                        tokio::select! {
                            _ = cancel.cancelled() => return,
                            _ = tokio::time::sleep(RECONNECT_PERIOD) => {}
                        }
                    }
                }
            }
        }
    }

    /// Connects, makes sure logind's delay covers the grace periods, takes the lock and
    /// subscribes to PrepareForShutdown (the kubelet's start).
    async fn start(&self) -> Result<Started, LogindError> {
        let logind = Logind::connect().await?;
        let current = logind.inhibit_delay_max().await?;
        let requested = groups::period_requested(&self.periods);
        if requested > current {
            self.raise_inhibit_delay(&logind, requested).await?;
        }
        let lock = logind.inhibit_shutdown().await?;
        info!(inhibit_delay_max = ?current, "node shutdown manager holds the shutdown inhibitor lock");
        let signals = logind.monitor_shutdown().await?.boxed();
        Ok(Started {
            logind,
            lock: Some(lock),
            signals,
        })
    }

    /// Writes the drop-in raising InhibitDelayMaxSec to `requested`, reloads logind and polls
    /// the property with back-off (100 ms doubling, 5 attempts) until it is at least that.
    async fn raise_inhibit_delay(
        &self,
        logind: &Logind,
        requested: Duration,
    ) -> Result<(), LogindError> {
        logind::override_inhibit_delay(&self.logind_conf_dir, requested).map_err(|e| {
            LogindError::Call {
                op: "unable to override inhibit delay by shutdown manager",
                message: e.to_string(),
            }
        })?;
        logind.reload_logind_conf().await?;
        let mut delay = Duration::from_millis(100);
        let mut updated = Duration::ZERO;
        const STEPS: u32 = 5;
        for attempt in 1..=STEPS {
            tokio::time::sleep(delay).await;
            delay *= 2;
            updated = logind.inhibit_delay_max().await?;
            if requested <= updated {
                return Ok(());
            }
            debug!(attempt, current = ?updated, ?requested, "InhibitDelayMaxSec still less than requested, retrying");
        }
        Err(LogindError::Call {
            op: "node shutdown manager",
            message: format!(
                "was timed out after {STEPS} attempts waiting for logind InhibitDelayMaxSec to \
                 update to {} (ShutdownGracePeriod), current value is {}",
                crate::config::duration::format(requested),
                crate::config::duration::format(updated)
            ),
        })
    }

    /// Handles PrepareForShutdown until the signals end (the connection was lost).
    async fn watch(&mut self, started: &mut Started) {
        while let Some(shutting_down) = started.signals.next().await {
            info!(
                event = if shutting_down {
                    "shutdown"
                } else {
                    "cancelled"
                },
                "Shutdown manager detected new shutdown event"
            );
            let message = if shutting_down {
                "Shutdown manager detected shutdown event"
            } else {
                "Shutdown manager detected shutdown cancellation"
            };
            self.events
                .node(&self.node, EventType::Normal, EVENT_REASON, message.into());
            self.state.send_replace(shutting_down);
            if shutting_down {
                self.process_shutdown().await;
                // Releasing the lock lets the shutdown go on.
                drop(started.lock.take());
                info!(
                    "Shutdown manager completed processing shutdown event, node will shutdown shortly"
                );
            } else {
                match started.logind.inhibit_shutdown().await {
                    // The new lock first, then the old one released (acquireInhibitLock).
                    Ok(lock) => drop(started.lock.replace(lock)),
                    Err(e) => error!(error = %e, "cannot take the shutdown inhibitor lock again"),
                }
            }
        }
        error!("Ended to watching the node for shutdown events");
    }

    /// Handles a shutdown (the kubelet's processShutdownEvent): its start recorded, the pods
    /// stopped, its end recorded.
    async fn process_shutdown(&self) {
        info!("Shutdown manager processing shutdown event");
        let started = tokio::time::Instant::now();
        let mut times = state::ShutdownTimes {
            start: Some(k8s_openapi::jiff::Timestamp::now()),
            end: None,
        };
        self.record(&times);
        self.stop_pods().await;
        if let Some(statuses) = &self.statuses {
            let left = groups::period_requested(&self.periods).saturating_sub(started.elapsed());
            if !statuses.written(left).await {
                warn!("Shutdown manager: pod statuses not all written to the API in time");
            }
        }
        times.end = Some(k8s_openapi::jiff::Timestamp::now());
        self.record(&times);
    }

    /// Writes `times` to the state file (when there is one) and sets the gauges.
    fn record(&self, times: &state::ShutdownTimes) {
        if let Some(file) = &self.times_file
            && let Err(e) = state::store(file, times)
        {
            error!(error = %e, "Failed to store graceful shutdown state");
        }
        set_gauges(times);
    }

    /// Stops the active pods group by group (killPods): each group's pods at once with the
    /// group's grace period (or their own, shorter one), waiting for them at most the group's
    /// grace period before the next group.
    async fn stop_pods(&self) {
        let (tx, rx) = oneshot::channel();
        if self.pods.send(PodsRequest::Active(tx)).await.is_err() {
            return;
        }
        let Ok(active) = rx.await else { return };
        let groups = groups::group_by_priority(&self.periods, active, |p| groups::pod_priority(p));
        for group in groups {
            if group.pods.is_empty() {
                continue;
            }
            let wait = Duration::from_secs(group.period.grace_seconds.max(0) as u64);
            let mut kills = tokio::task::JoinSet::new();
            for pod in group.pods {
                let grace = groups::pod_grace_seconds(&pod, group.period.grace_seconds);
                kills.spawn(kill(self.pods.clone(), self.events.clone(), pod, grace));
            }
            let all = async { while kills.join_next().await.is_some() {} };
            match tokio::time::timeout(wait, all).await {
                Ok(()) => info!(
                    grace_period = group.period.grace_seconds,
                    priority = group.period.priority,
                    "Done waiting for all pods in group to terminate"
                ),
                Err(_) => {
                    info!(
                        grace_period = group.period.grace_seconds,
                        priority = group.period.priority,
                        "Shutdown manager pod killing time out"
                    );
                    // The kills go on on their own (the kubelet's goroutines do).
                    kills.detach_all();
                }
            }
        }
    }
}

/// The shutdown gauges from `times` (0 for a time not set).
fn set_gauges(times: &state::ShutdownTimes) {
    let (start, end) = times.gauges();
    let m = crate::metrics::global();
    m.graceful_shutdown_start_time.set(start);
    m.graceful_shutdown_end_time.set(end);
}

/// What a successful start holds: the connection, the lock (None once released) and the
/// signals.
struct Started {
    logind: Logind,
    lock: Option<InhibitLock>,
    signals: futures::stream::BoxStream<'static, bool>,
}

/// Stops `pod` for good with `grace` seconds and the shutdown's status, through the pod
/// manager; a kill the runtime does not finish within [`kill_timeout`] gets the kubelet's
/// ExceededGracePeriod event.
async fn kill(pods: mpsc::Sender<PodsRequest>, events: Recorder, pod: Arc<Pod>, grace: i64) {
    let meta = &pod.metadata;
    let span = info_span!(
        "node_shutdown_kill",
        pod.namespace = meta.namespace.as_deref().unwrap_or_default(),
        pod.name = meta.name.as_deref().unwrap_or_default(),
        pod.uid = meta.uid.as_deref().unwrap_or_default(),
    );
    async {
        info!(
            grace_period = grace,
            "Shutdown manager killing pod with gracePeriod"
        );
        let (done, stopped) = oneshot::channel();
        let eviction = Eviction {
            uid: meta.uid.clone().unwrap_or_default(),
            reason: REASON,
            grace_seconds: grace,
            message: MESSAGE.into(),
            resource: "",
            disruption_target: true,
            annotations: Default::default(),
        };
        if pods.send(PodsRequest::Evict(eviction, done)).await.is_err() {
            return;
        }
        match tokio::time::timeout(kill_timeout(grace), stopped).await {
            Ok(Ok(true)) => info!("Shutdown manager finished killing pod"),
            Ok(_) => info!("Shutdown manager failed killing pod: not active any more"),
            Err(_) => {
                warn!("Shutdown manager failed killing pod: timeout waiting to kill pod");
                events.pod(
                    &pod,
                    None,
                    EventType::Warning,
                    "ExceededGracePeriod",
                    "Container runtime did not kill the pod within specified grace period.".into(),
                );
            }
        }
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kills_wait_one_and_a_half_grace_periods_at_least_10_s() {
        assert_eq!(kill_timeout(0), Duration::from_secs(10));
        assert_eq!(kill_timeout(6), Duration::from_secs(10));
        assert_eq!(kill_timeout(20), Duration::from_secs(30));
        assert_eq!(kill_timeout(7), Duration::from_secs(10));
        assert_eq!(kill_timeout(9), Duration::from_secs(13));
    }

    /// The groups' kills go through the pod manager in the kubelet's order and grace periods:
    /// regular pods first, then, once they are stopped, critical ones; a shorter own grace
    /// period wins; no pod is left out.
    #[tokio::test]
    async fn pods_stop_lowest_priority_group_first() {
        let pod = |name: &str, priority: i32, tgps: Option<i64>| {
            Arc::new(Pod {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.into()),
                    uid: Some(name.into()),
                    ..Default::default()
                },
                spec: Some(k8s_openapi::api::core::v1::PodSpec {
                    priority: Some(priority),
                    termination_grace_period_seconds: tgps,
                    ..Default::default()
                }),
                ..Default::default()
            })
        };
        let periods = groups::periods(Duration::from_secs(30), Duration::from_secs(10), &[]);
        let (pods_tx, mut pods_rx) = mpsc::channel(4);
        let (manager, shutting_down) =
            Manager::with_periods("n", periods, pods_tx, Recorder::disabled());
        let root = tempfile::tempdir().unwrap();
        let manager = manager.expect("enabled").with_state_in(root.path());
        assert!(!*shutting_down.borrow());
        let active = vec![
            pod("critical", 2_000_001_000, None),
            pod("regular", 0, None),
            pod("quick", 10, Some(3)),
        ];
        let pod_manager = tokio::spawn(async move {
            let mut kills = Vec::new();
            while let Some(r) = pods_rx.recv().await {
                match r {
                    PodsRequest::Active(tx) => {
                        let _ = tx.send(active.clone());
                    }
                    PodsRequest::Evict(e, done) => {
                        assert_eq!(
                            (e.reason, e.message.as_str(), e.disruption_target),
                            (REASON, MESSAGE, true)
                        );
                        kills.push((e.uid, e.grace_seconds));
                        let _ = done.send(true);
                    }
                }
            }
            kills
        });
        let before = k8s_openapi::jiff::Timestamp::now();
        manager.process_shutdown().await;
        drop(manager);
        // The shutdown's start and end recorded as the kubelet's state file has them.
        let times = state::load(&state::path(root.path())).unwrap();
        let (start, end) = (times.start.unwrap(), times.end.unwrap());
        assert!(before <= start && start <= end, "{times:?}");
        let m = crate::metrics::global();
        assert_eq!(
            (
                m.graceful_shutdown_start_time.get(),
                m.graceful_shutdown_end_time.get()
            ),
            times.gauges()
        );
        let mut kills = pod_manager.await.unwrap();
        // Within a group the order is not fixed; groups are.
        kills[..2].sort();
        assert_eq!(
            kills,
            [
                ("quick".to_string(), 3),
                ("regular".to_string(), 20),
                ("critical".to_string(), 10)
            ]
        );
    }

    /// The lock waits, once the pods are stopped, until the API writer has their statuses
    /// (a loaded node powered off before the write, losing the Failed status); with a writer
    /// that never gets there, it waits the grace periods requested and no longer.
    #[tokio::test(start_paused = true)]
    async fn the_lock_waits_until_the_stopped_pods_statuses_are_written() {
        let pod = Arc::new(Pod {
            metadata: kube::api::ObjectMeta {
                name: Some("p".into()),
                uid: Some("p".into()),
                ..Default::default()
            },
            ..Default::default()
        });
        let statuses = crate::status::StatusStore::default();
        statuses.mark_written(0);
        let periods = groups::periods(Duration::from_secs(30), Duration::from_secs(10), &[]);
        let (pods_tx, mut pods_rx) = mpsc::channel(4);
        let (manager, _) = Manager::with_periods("n", periods, pods_tx, Recorder::disabled());
        let manager = manager
            .expect("enabled")
            .with_status_writes(statuses.clone());
        let store = statuses.clone();
        tokio::spawn(async move {
            let mut kills = 0;
            while let Some(r) = pods_rx.recv().await {
                match r {
                    PodsRequest::Active(tx) => {
                        let _ = tx.send(vec![pod.clone()]);
                    }
                    PodsRequest::Evict(e, done) => {
                        // The worker sets the stopped pod's status, then answers.
                        kills += 1;
                        let status = k8s_openapi::api::core::v1::PodStatus {
                            phase: Some("Failed".into()),
                            message: Some(format!("{} ({kills})", e.message)),
                            ..Default::default()
                        };
                        store.set(&pod, status);
                        let _ = done.send(true);
                    }
                }
            }
        });
        let manager = Arc::new(manager);
        let m = manager.clone();
        let shutdown = tokio::spawn(async move { m.process_shutdown().await });
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            !shutdown.is_finished(),
            "released before the status was written"
        );
        statuses.mark_written(*statuses.subscribe().borrow());
        tokio::time::timeout(Duration::from_secs(1), shutdown)
            .await
            .expect("released once written")
            .unwrap();

        // A writer that never catches up holds it the 30 s requested, not longer.
        let started = tokio::time::Instant::now();
        manager.process_shutdown().await;
        let held = started.elapsed();
        assert!(
            held >= Duration::from_secs(29) && held <= Duration::from_secs(31),
            "held {held:?}"
        );
    }
}
