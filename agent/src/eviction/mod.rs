//! The eviction manager, as the kubelet's pkg/kubelet/eviction: every evictionMonitoringPeriod
//! (10 s) it observes the signals in the sampler's latest Summary, decides which thresholds are
//! met and which pressure conditions (MemoryPressure, DiskPressure, PIDPressure) the node
//! reports, and publishes those conditions for the node status and for admission.
//!
//! When a threshold is met it evicts one pod per round, as the kubelet: the pods the pod manager
//! calls active are ranked for the signal ([`plan`]), and the first that is not critical is
//! stopped through the pod manager ([`PodsRequest::Evict`]) with phase Failed, reason Evicted,
//! the kubelet's message and the DisruptionTarget condition. For a disk signal, node-level
//! reclaim comes first ([`Reclaim`]: dead containers, then unused images, as the kubelet's
//! signalToNodeReclaimFuncs); no pod is evicted when the filesystems, measured again, no longer
//! meet a threshold.

pub mod local_storage;
pub mod memcg;
pub mod message;
pub mod plan;
pub mod rank;
pub mod signals;
pub mod synchronize;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::eviction::{EvictionConfig, Signal};
use crate::events::{EventType, Recorder};
use crate::stats::StatsProvider;
use crate::stats::summary::Summary;
pub use synchronize::{Condition, Conditions};

/// The kubelet's evictionMonitoringPeriod (a constant there, not a configuration field).
pub const MONITORING_PERIOD: Duration = Duration::from_secs(10);

/// The pressure conditions as the manager last decided them; empty until pressure is seen.
pub type ConditionsRx = watch::Receiver<Conditions>;

/// The lowest priority of a critical pod (the kubelet's SystemCriticalPriority, 2 * 10^9).
pub const SYSTEM_CRITICAL_PRIORITY: i32 = 2_000_000_000;

/// True for a pod the kubelet never rejects or evicts for pressure (kubelettypes.IsCriticalPod):
/// a static pod (any source but the API server), a mirror pod, or one whose priority is at least
/// [`SYSTEM_CRITICAL_PRIORITY`].
pub fn is_critical(pod: &Pod) -> bool {
    use crate::runtime::labels::{CONFIG_SOURCE, is_mirror};
    let source = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(CONFIG_SOURCE));
    source.is_some_and(|s| s != "api")
        || is_mirror(pod)
        || pod
            .spec
            .as_ref()
            .and_then(|s| s.priority)
            .is_some_and(|p| p >= SYSTEM_CRITICAL_PRIORITY)
}

/// What the eviction manager asks of the pod manager (the kubelet's activePodsFunc and
/// killPodFunc).
#[derive(Debug)]
pub enum PodsRequest {
    /// The pods that may be evicted: admitted, not terminal, not being terminated.
    Active(oneshot::Sender<Vec<Arc<Pod>>>),
    /// Stop this pod for good with the eviction's grace period and status; answered true once
    /// its containers are stopped, false when there is no such active pod.
    Evict(plan::Eviction, oneshot::Sender<bool>),
}

/// The answer to a node-level reclaim request, sent once the collection is done.
pub type ReclaimDone = oneshot::Sender<()>;

/// Node-level reclaim before evicting for a disk signal: the garbage collectors to ask and the
/// filesystems to measure again afterwards.
#[derive(Debug, Default)]
pub struct Reclaim {
    /// Container GC (the kubelet's DeleteAllUnusedContainers).
    pub containers: Option<mpsc::Sender<ReclaimDone>>,
    /// Image GC (the kubelet's DeleteUnusedImages).
    pub images: Option<mpsc::Sender<ReclaimDone>>,
    /// The root dir: nodefs.
    pub nodefs: Option<PathBuf>,
    /// The image filesystem's mountpoint: imagefs.
    pub imagefs: Option<PathBuf>,
}

/// How long an eviction may take beyond its grace period before the manager moves on (the
/// kubelet's podCleanupTimeout).
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// How long a disk eviction waits for a sample with the pods' volumes measured again before it
/// ranks on the round's own.
const REMEASURE_TIMEOUT: Duration = Duration::from_secs(10);

/// The eviction manager: thresholds, what earlier rounds saw, and where conditions go.
pub struct Manager {
    config: EvictionConfig,
    stats: StatsProvider,
    state: synchronize::State,
    conditions: watch::Sender<Conditions>,
    /// The pod manager, when pods may be evicted (None: conditions only).
    pods: Option<mpsc::Sender<PodsRequest>>,
    /// True when images live on their own filesystem (the kubelet's dedicatedImageFs).
    dedicated_image_fs: bool,
    /// Node-level reclaim before a disk eviction.
    reclaim: Reclaim,
    /// The kernel's memory threshold notifications (kernelMemcgNotification), when on.
    memcg: Option<memcg::Notifiers>,
    /// Where the node's EvictionThresholdMet events go, and the node's name.
    events: Option<(Recorder, String)>,
}

/// One round's outcome: the thresholds met and the signals observed, to act on.
struct Round {
    met: Vec<crate::config::eviction::Threshold>,
    observations: signals::Observations,
    summary: Arc<Summary>,
}

impl Manager {
    /// A manager reading `stats`, and the receiver of the conditions it decides.
    pub fn new(config: EvictionConfig, stats: StatsProvider) -> (Manager, ConditionsRx) {
        let (tx, rx) = watch::channel(Conditions::new());
        let m = Manager {
            config,
            stats,
            state: synchronize::State::default(),
            conditions: tx,
            pods: None,
            dedicated_image_fs: false,
            reclaim: Reclaim::default(),
            memcg: None,
            events: None,
        };
        (m, rx)
    }

    /// The manager, evicting pods through `pods` when a threshold is met; `dedicated_image_fs`
    /// when images live on a filesystem of their own (ranks disk usage as the kubelet does).
    pub fn with_pods(mut self, pods: mpsc::Sender<PodsRequest>, dedicated_image_fs: bool) -> Self {
        self.pods = Some(pods);
        self.dedicated_image_fs = dedicated_image_fs;
        self
    }

    /// The manager, reclaiming node-level resources through `reclaim` before a disk eviction.
    pub fn with_reclaim(mut self, reclaim: Reclaim) -> Self {
        self.reclaim = reclaim;
        self
    }

    /// The manager, recording the kubelet's EvictionThresholdMet event ("Attempting to reclaim
    /// memory") about the node `node` through `events` each round a threshold is acted on.
    pub fn with_events(mut self, events: Recorder, node: String) -> Self {
        self.events = Some((events, node));
        self
    }

    /// The manager, running a round as soon as one of `notifiers` fires.
    pub fn with_memcg(mut self, notifiers: memcg::Notifiers) -> Self {
        self.memcg = (!notifiers.is_empty()).then_some(notifiers);
        self
    }

    /// Resolves when a memory threshold notifier fired (never without notifiers); its
    /// description.
    async fn memcg_crossed(memcg: &mut Option<memcg::Notifiers>) -> String {
        match memcg {
            Some(n) => n.crossed().await,
            None => std::future::pending().await,
        }
    }

    /// Runs the node-level reclaim the kubelet runs for `signal` ([`plan::node_reclaim`]), then
    /// measures the filesystems again: true when no threshold is met any more (minimum reclaim
    /// included), so no pod needs evicting.
    async fn reclaim_node_level(
        &self,
        signal: Signal,
        observations: &signals::Observations,
    ) -> bool {
        use Signal::*;
        let r = &self.reclaim;
        let funcs: Vec<_> = plan::node_reclaim(signal, self.dedicated_image_fs)
            .iter()
            .filter_map(|c| match c {
                plan::Collector::Containers => r.containers.as_ref(),
                plan::Collector::Images => r.images.as_ref(),
            })
            .collect();
        if funcs.is_empty() {
            return false;
        }
        for gc in funcs {
            let (tx, rx) = oneshot::channel();
            if gc.send(tx).await.is_ok() {
                let _ = rx.await;
            }
        }
        let mut fresh = observations.clone();
        for (path, bytes, inodes) in [
            (&r.nodefs, NodeFsAvailable, NodeFsInodesFree),
            (&r.imagefs, ImageFsAvailable, ImageFsInodesFree),
            // No split container filesystem: the containers' is the images'.
            (&r.imagefs, ContainerFsAvailable, ContainerFsInodesFree),
        ] {
            let Some(c) = path.as_deref().and_then(crate::stats::fs::capacity) else {
                continue;
            };
            let o = |available: u64, capacity: u64| signals::Observation {
                available: available as i64,
                capacity: capacity as i64,
            };
            fresh.insert(bytes, o(c.available, c.capacity));
            fresh.insert(inodes, o(c.inodes_free, c.inodes));
        }
        debug!(observations = ?fresh, "eviction manager: observations after resource reclaim");
        synchronize::thresholds_met(&self.config.thresholds, &fresh, true).is_empty()
    }

    /// One round at `now`: observe, decide, publish the conditions when they changed.
    pub fn synchronize(&mut self, now: Instant) {
        let _ = self.decide(now);
    }

    /// One round at `now`: observe, decide and publish the conditions; the thresholds met, if
    /// any, to evict for.
    fn decide(&mut self, now: Instant) -> Option<Round> {
        if self.config.thresholds.is_empty() {
            return None;
        }
        let Some(summary) = self.stats.latest() else {
            debug!("eviction manager: no stats yet");
            return None;
        };
        let observations = signals::observe(&summary);
        let acted = synchronize::synchronize(
            &mut self.state,
            &self.config.thresholds,
            &observations,
            now,
            self.config.pressure_transition_period,
        );
        let now_reported = self.state.conditions.clone();
        self.conditions.send_if_modified(|c| {
            if *c == now_reported {
                return false;
            }
            let names: Vec<&str> = now_reported.iter().map(|c| c.as_str()).collect();
            info!(conditions = ?names, ?observations, "eviction manager: node pressure conditions changed");
            *c = now_reported;
            true
        });
        (!acted.is_empty()).then_some(Round {
            met: acted,
            observations,
            summary,
        })
    }

    /// Evicts at most one pod for the round's thresholds (the end of the kubelet's synchronize)
    /// and waits until it is stopped; returns the evicted pod's UID.
    async fn evict(&self, round: Round) -> Option<String> {
        let signals: Vec<&str> = round.met.iter().map(|t| t.signal.as_str()).collect();
        let signal = plan::first_signal(&round.met)?;
        let resource = message::resource_of(signal);
        info!(resource, "Eviction manager: attempting to reclaim");
        if let Some((events, node)) = &self.events {
            let message = format!("Attempting to reclaim {resource}");
            events.node(node, EventType::Warning, "EvictionThresholdMet", message);
        }
        let Some(pods) = &self.pods else {
            info!(thresholds = ?signals, "eviction manager: thresholds met; no pod manager to evict from");
            return None;
        };
        if self.reclaim_node_level(signal, &round.observations).await {
            info!(
                resource,
                "Eviction manager: able to reduce resource pressure without evicting pods."
            );
            return None;
        }
        let (tx, rx) = oneshot::channel();
        pods.send(PodsRequest::Active(tx)).await.ok()?;
        let active = rx.await.ok()?;
        if active.is_empty() {
            warn!(thresholds = ?signals, "Eviction manager: eviction thresholds have been met, but no pods are active to evict");
            return None;
        }
        let summary = self.ranking_summary(signal, round.summary).await;
        let candidates = candidates(&active, &summary);
        let Some(eviction) = plan::plan(
            &round.met,
            &round.observations,
            candidates,
            self.dedicated_image_fs,
            i64::from(self.config.max_pod_grace_period),
        ) else {
            info!(thresholds = ?signals, "Eviction manager: unable to evict any pods from the node");
            return None;
        };
        info!(resource = eviction.resource, pod.uid = %eviction.uid, grace_seconds = eviction.grace_seconds,
            message = %eviction.message, "Eviction manager: must evict pod(s) to reclaim");
        self.carry_out(pods, eviction, signal.as_str()).await
    }

    /// The Summary to rank pods on for `signal`. For a disk signal, a fresh sample with every
    /// pod's volumes measured now: the round's volume usage may date from before a pod filled
    /// its emptyDir (it is measured every volumeStatsAggPeriod, the filesystem every sample),
    /// and would rank a quiet pod above the one filling the disk.
    async fn ranking_summary(&self, signal: Signal, round: Arc<Summary>) -> Arc<Summary> {
        if synchronize::Condition::of(signal) != synchronize::Condition::DiskPressure {
            return round;
        }
        let fresh = self.stats.fresh_sample_with_volumes();
        if tokio::time::timeout(REMEASURE_TIMEOUT, fresh)
            .await
            .is_err()
        {
            warn!(
                "eviction manager: no sample with the volumes measured again; ranking on the round's"
            );
            return round;
        }
        self.stats.latest().unwrap_or(round)
    }

    /// Hands `eviction` to the pod manager and waits until the pod is stopped (or the grace
    /// period and [`CLEANUP_TIMEOUT`] passed); counts it under `signal` in kubelet_evictions.
    /// Returns the pod's UID unless it was not active any more.
    async fn carry_out(
        &self,
        pods: &mpsc::Sender<PodsRequest>,
        eviction: plan::Eviction,
        signal: &'static str,
    ) -> Option<String> {
        let uid = eviction.uid.clone();
        let wait = Duration::from_secs(eviction.grace_seconds.max(0) as u64) + CLEANUP_TIMEOUT;
        let (tx, rx) = oneshot::channel();
        pods.send(PodsRequest::Evict(eviction, tx)).await.ok()?;
        let result = tokio::time::timeout(wait, rx).await;
        if !matches!(result, Ok(Ok(false) | Err(_))) {
            crate::metrics::global()
                .evictions
                .get_or_create(&crate::metrics::EvictionSignal {
                    eviction_signal: signal,
                })
                .inc();
        }
        match result {
            Ok(Ok(true)) => {
                info!(pod.uid = %uid, "Eviction manager: pod is evicted successfully");
                Some(uid)
            }
            Ok(_) => {
                warn!(pod.uid = %uid, "Eviction manager: pod failed to evict: not active any more");
                None
            }
            Err(_) => {
                warn!(pod.uid = %uid, ?wait, "Eviction manager: timed out waiting for the evicted pod to stop");
                Some(uid)
            }
        }
    }

    /// The kubelet's localStorageEviction: every active pod over an emptyDir sizeLimit or its
    /// ephemeral-storage limits is evicted; returns the UIDs evicted.
    async fn evict_local_storage(&self) -> Vec<String> {
        let (Some(pods), Some(summary)) = (&self.pods, self.stats.latest()) else {
            return vec![];
        };
        let (tx, rx) = oneshot::channel();
        if pods.send(PodsRequest::Active(tx)).await.is_err() {
            return vec![];
        }
        let Ok(active) = rx.await else {
            return vec![];
        };
        let candidates = candidates(&active, &summary);
        let mut evicted = Vec::new();
        for (eviction, signal) in local_storage::evictions(&candidates, self.dedicated_image_fs) {
            info!(pod.uid = %eviction.uid, message = %eviction.message, "Eviction manager: evicting a pod over its local storage limits");
            evicted.extend(self.carry_out(pods, eviction, signal).await);
        }
        evicted
    }

    /// Synchronizes as each stats sample lands, and at least every `period`, until `cancel`
    /// fires: local storage limits first (a round that evicts for them does nothing else, as
    /// the kubelet's), then the thresholds.
    pub async fn run(mut self, period: Duration, cancel: CancellationToken) {
        info!(
            thresholds = self.config.thresholds.len(),
            ?period,
            "eviction manager: starting control loop"
        );
        loop {
            let now = Instant::now();
            let round = self.decide(now);
            if let (Some(n), Some(summary)) = (self.memcg.as_mut(), self.stats.latest()) {
                n.update(&summary, now);
            }
            let act = async {
                if self.config.local_storage_capacity_isolation
                    && !self.evict_local_storage().await.is_empty()
                {
                    return;
                }
                if let Some(round) = round {
                    self.evict(round).await;
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = act => {}
            }
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(period) => {}
                _ = self.stats.next_sample() => {}
                crossed = Self::memcg_crossed(&mut self.memcg) => {
                    // The kubelet's thresholdHandler: a round now, on a fresh sample.
                    info!("eviction manager: {crossed} crossed");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = tokio::time::timeout(period, self.stats.fresh_sample()) => {}
                    }
                }
            }
        }
    }
}

/// The active pods with their stats in `summary`, for ranking.
fn candidates<'a>(
    active: &'a [Arc<Pod>],
    summary: &'a crate::stats::summary::Summary,
) -> Vec<rank::Candidate<'a>> {
    active
        .iter()
        .map(|p| rank::Candidate {
            pod: p,
            stats: summary
                .pods
                .iter()
                .find(|s| Some(&s.pod_ref.uid) == p.metadata.uid.as_ref()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::eviction::{Signal, Threshold, ThresholdValue};

    #[test]
    fn critical_pods_as_the_kubelet() {
        let pod = |v: serde_json::Value| -> Pod { serde_json::from_value(v).unwrap() };
        let cases = [
            (serde_json::json!({}), false),
            (
                serde_json::json!({"metadata": {"annotations": {"kubernetes.io/config.source": "file"}}}),
                true,
            ),
            (
                serde_json::json!({"metadata": {"annotations": {"kubernetes.io/config.source": "api"}}}),
                false,
            ),
            (
                serde_json::json!({"metadata": {"annotations": {"kubernetes.io/config.mirror": "x"}}}),
                true,
            ),
            (
                serde_json::json!({"spec": {"containers": [], "priority": 2_000_000_000}}),
                true,
            ),
            (
                serde_json::json!({"spec": {"containers": [], "priority": 1_999_999_999}}),
                false,
            ),
        ];
        for (p, want) in cases {
            assert_eq!(is_critical(&pod(p.clone())), want, "{p}");
        }
    }

    /// A provider whose latest Summary has the node's filesystem at `available` of `capacity`
    /// bytes, and `pods` (Summary pod stats, JSON).
    fn disk_summary(available: u64, capacity: u64, pods: serde_json::Value) -> StatsProvider {
        let provider = StatsProvider::new();
        provider.publish(
            serde_json::from_value(serde_json::json!({
                "node": {"nodeName": "n", "startTime": "2026-12-02T20:00:00Z",
                    "fs": {"time": "2026-12-02T20:00:00Z", "availableBytes": available,
                           "capacityBytes": capacity}},
                "pods": pods
            }))
            .unwrap(),
        );
        provider
    }

    /// One hard nodefs.available threshold of `value`.
    fn nodefs_hard(value: ThresholdValue) -> EvictionConfig {
        EvictionConfig {
            thresholds: vec![Threshold {
                signal: Signal::NodeFsAvailable,
                value,
                grace_period: Duration::ZERO,
                min_reclaim: None,
            }],
            pressure_transition_period: Duration::from_secs(300),
            max_pod_grace_period: 0,
            local_storage_capacity_isolation: true,
            kernel_memcg_notification: false,
        }
    }

    /// A pod manager answering the eviction manager: `active` as the active pods, every
    /// eviction recorded and answered true.
    fn fake_pod_manager(
        active: Vec<Arc<Pod>>,
    ) -> (
        mpsc::Sender<PodsRequest>,
        tokio::task::JoinHandle<Vec<plan::Eviction>>,
    ) {
        let (tx, mut rx) = mpsc::channel(4);
        let task = tokio::spawn(async move {
            let mut evicted = Vec::new();
            while let Some(r) = rx.recv().await {
                match r {
                    PodsRequest::Active(reply) => {
                        let _ = reply.send(active.clone());
                    }
                    PodsRequest::Evict(e, done) => {
                        evicted.push(e);
                        let _ = done.send(true);
                    }
                }
            }
            evicted
        });
        (tx, task)
    }

    /// A sampling loop publishing `fresh` whenever a sample is asked for, as the sampler does
    /// with the volumes measured again when asked.
    fn sampler_publishing(provider: &StatsProvider, fresh: Summary) -> tokio::task::JoinHandle<()> {
        let provider = provider.clone();
        tokio::spawn(async move {
            loop {
                provider.sample_wanted().await;
                if let Some(request) = provider.volumes_wanted() {
                    provider.volumes_measured_for(request);
                }
                provider.publish(fresh.clone());
            }
        })
    }

    #[tokio::test]
    async fn evicts_the_top_ranked_pod_that_is_not_critical_once_per_round() {
        let pod = |name: &str, annotations: serde_json::Value| -> Arc<Pod> {
            Arc::new(
                serde_json::from_value(serde_json::json!({
                    "metadata": {"name": name, "namespace": "default", "uid": name,
                                 "annotations": annotations},
                    "spec": {"containers": [{"name": "c", "image": "i"}],
                             "volumes": [{"name": "data", "emptyDir": {}}]},
                }))
                .unwrap(),
            )
        };
        let stats = |name: &str, used: u64| {
            serde_json::json!({
                "podRef": {"name": name, "namespace": "default", "uid": name},
                "startTime": "2026-12-02T20:00:00Z",
                "containers": [{"name": "c", "startTime": "2026-12-02T20:00:00Z"}],
                "volume": [{"time": "2026-12-02T20:00:00Z", "name": "data", "usedBytes": used}]
            })
        };
        // The round's volume usage was measured before the filler filled its emptyDir; the
        // sample asked for before ranking measures it again.
        let provider = disk_summary(
            10 << 20,
            400 << 20,
            serde_json::json!([
                stats("quiet", 1 << 10),
                stats("filler", 0),
                stats("static", 350 << 20)
            ]),
        );
        let fresh = disk_summary(
            10 << 20,
            400 << 20,
            serde_json::json!([
                stats("quiet", 1 << 10),
                stats("filler", 300 << 20),
                stats("static", 350 << 20)
            ]),
        );
        let sampler = sampler_publishing(&provider, (*fresh.latest().unwrap()).clone());
        let config = nodefs_hard(ThresholdValue::Quantity(150 * 1024 * 1024 * 1000));
        let active = vec![
            pod("quiet", serde_json::json!({})),
            pod(
                "static",
                serde_json::json!({"kubernetes.io/config.source": "file"}),
            ),
            pod("filler", serde_json::json!({})),
        ];
        let (tx, task) = fake_pod_manager(active);
        let (m, _rx) = Manager::new(config, provider);
        let mut m = m.with_pods(tx, false);
        let round = m.decide(Instant::now()).expect("threshold met");
        assert_eq!(m.evict(round).await.as_deref(), Some("filler"));
        drop(m);
        sampler.abort();
        let evicted = task.await.unwrap();
        assert_eq!(evicted.len(), 1, "one pod per round: {evicted:?}");
        let e = &evicted[0];
        assert_eq!(
            (e.uid.as_str(), e.grace_seconds, e.resource),
            ("filler", 1, "ephemeral-storage")
        );
        assert_eq!(
            e.message,
            "The node was low on resource: ephemeral-storage. Threshold quantity: 150Mi, \
             available: 10Mi. "
        );
    }

    /// A garbage collector answering reclaim requests; returns how many it got.
    fn fake_gc() -> (mpsc::Sender<ReclaimDone>, tokio::task::JoinHandle<usize>) {
        let (tx, mut rx) = mpsc::channel::<ReclaimDone>(1);
        let task = tokio::spawn(async move {
            let mut n = 0;
            while let Some(done) = rx.recv().await {
                n += 1;
                let _ = done.send(());
            }
            n
        });
        (tx, task)
    }

    #[tokio::test]
    async fn disk_pressure_reclaims_node_level_first_and_evicts_none_once_relieved() {
        // The Summary says the disk is full; measured again after reclaim (a real statvfs of a
        // directory here) it is not, against a threshold of one byte.
        let provider = disk_summary(0, 100, serde_json::json!([]));
        let config = nodefs_hard(ThresholdValue::Quantity(1000));
        let dir = tempfile::tempdir().unwrap();
        let pod: Arc<Pod> = Arc::new(
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "default", "uid": "p"},
                "spec": {"containers": [{"name": "c", "image": "i"}]},
            }))
            .unwrap(),
        );
        let (pods, pm) = fake_pod_manager(vec![pod]);
        let (containers, containers_gc) = fake_gc();
        let (images, images_gc) = fake_gc();
        let (m, _rx) = Manager::new(config, provider);
        let mut m = m.with_pods(pods, false).with_reclaim(Reclaim {
            containers: Some(containers),
            images: Some(images),
            nodefs: Some(dir.path().to_path_buf()),
            imagefs: None,
        });
        let round = m.decide(Instant::now()).expect("threshold met");
        assert_eq!(
            m.evict(round).await,
            None,
            "relieved by reclaim: no eviction"
        );
        drop(m);
        assert!(pm.await.unwrap().is_empty());
        // Images share the node's filesystem: both collectors ran, once each.
        assert_eq!(
            (containers_gc.await.unwrap(), images_gc.await.unwrap()),
            (1, 1)
        );
    }

    #[tokio::test]
    async fn no_eviction_without_active_pods() {
        let provider = disk_summary(1, 100, serde_json::json!([]));
        let config = nodefs_hard(ThresholdValue::Percentage(0.5));
        let (tx, task) = fake_pod_manager(vec![]);
        let (m, _rx) = Manager::new(config, provider);
        let mut m = m.with_pods(tx, false);
        let round = m.decide(Instant::now()).expect("threshold met");
        assert_eq!(m.evict(round).await, None);
        drop(m);
        assert!(task.await.unwrap().is_empty());
    }

    #[test]
    fn publishes_conditions_from_the_latest_summary() {
        let stats = StatsProvider::new();
        let config = EvictionConfig {
            thresholds: vec![Threshold {
                signal: Signal::NodeFsAvailable,
                value: ThresholdValue::Percentage(0.5),
                grace_period: Duration::ZERO,
                min_reclaim: None,
            }],
            pressure_transition_period: Duration::from_secs(300),
            max_pod_grace_period: 0,
            local_storage_capacity_isolation: true,
            kernel_memcg_notification: false,
        };
        let (mut m, rx) = Manager::new(config, stats.clone());
        let t0 = Instant::now();
        m.synchronize(t0);
        assert!(rx.borrow().is_empty(), "no stats: no pressure");
        let summary = |free: u64| {
            serde_json::from_value(serde_json::json!({
                "node": {"nodeName": "n", "startTime": "2026-12-02T20:00:00Z",
                    "fs": {"time": "2026-12-02T20:00:00Z", "availableBytes": free,
                           "capacityBytes": 100}},
                "pods": []
            }))
            .unwrap()
        };
        stats.publish(summary(40));
        m.synchronize(t0 + Duration::from_secs(10));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow(), Conditions::from([Condition::DiskPressure]));
        stats.publish(summary(60));
        m.synchronize(t0 + Duration::from_secs(20));
        assert_eq!(*rx.borrow(), Conditions::from([Condition::DiskPressure]));
        m.synchronize(t0 + Duration::from_secs(310));
        assert!(rx.borrow().is_empty());
    }
}
