//! The pod manager: the desired pods by UID, one worker each; and the PLEG relist that wakes the
//! worker of every pod whose runtime state changed, and removes what belongs to no pod.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::admission::Admission;
use super::allocation::{INFEASIBLE, resize_message};
use super::context::NodeContext;
use super::runtime::PodRuntime;
use super::runtime_class::RuntimeClasses;
use super::source::SourceUpdate;
use super::worker::{self, PodUpdate, WorkerHandle};
use crate::eviction::PodsRequest;
use crate::runtime::ObservedPod;
use crate::runtime::observed::group;

/// PLEG relist period (the kubelet's generic PLEG relists every second).
pub const RELIST: Duration = Duration::from_secs(1);

/// The sweep for orphaned pod cgroups and directories runs at a relist when the pods known
/// (workers, sources, runtime) changed since the last sweep that found none, or when one
/// is pending; and at least this often whatever changed.
const SWEEP_AT_LEAST_EVERY: Duration = Duration::from_secs(60);

/// Owns the workers of all pods of the node; `R` is the runtime (the CRI client, or a scripted
/// one in unit tests).
pub struct PodManager<R = bosun_cri::CriClient> {
    ctx: Arc<NodeContext<R>>,
    sources: Vec<&'static str>,
    desired: HashMap<&'static str, BTreeMap<String, Arc<Pod>>>,
    workers: HashMap<String, WorkerHandle>,
    /// Orphans being removed, by UID.
    reaping: HashSet<String>,
    /// Directories of pods no longer known being removed, by UID.
    sweeping: Arc<std::sync::Mutex<HashSet<String>>>,
    /// Each pod's fingerprint in the last relist (the map the pod cache holds too).
    last_relist: Arc<HashMap<String, String>>,
    /// The last sweep that found no orphan: a digest of the pods known then, and when.
    swept: Option<(u64, std::time::Instant)>,
    admission: Admission,
    /// Pods that failed admission, by UID: they never get a worker.
    rejected: HashSet<String>,
    /// Pods wanted again while their worker terminates them (a static pod's manifest removed
    /// and put back), by UID: a new worker runs them once the old one is done.
    restart: HashSet<String>,
    /// Every source's pods, merged: what `reconcile` works from.
    all: BTreeMap<String, Arc<Pod>>,
    /// The RuntimeClass reader the workers share.
    classes: Arc<RuntimeClasses>,
    /// Publishes the UIDs of the pods with a worker, for garbage collection.
    known: tokio::sync::watch::Sender<Option<Arc<HashSet<String>>>>,
    /// When the relist last succeeded: the node's Ready condition and healthz read it.
    pleg: super::pleg::PlegHealth,
    /// Pods whose resize waits for room (the allocation manager's podsWithPendingResizes).
    pending_resizes: Vec<String>,
    /// The version of each pod last checked for a resize request.
    resize_seen: HashMap<String, Arc<Pod>>,
    /// When pending resizes were last retried.
    resizes_retried: std::time::Instant,
    cancel: CancellationToken,
}

/// How often pending resizes are retried when nothing else triggers it (the kubelet's
/// allocation manager retryDelay).
const RESIZE_RETRY: Duration = Duration::from_secs(180);

/// The pods the manager has a worker for (running or terminating), by UID, once every source has
/// sent its first full set (`None` before): the kubelet's `ShouldPodContentBeRemoved` is true for
/// the others. Published whenever the workers change.
#[derive(Clone)]
pub struct KnownPods(tokio::sync::watch::Receiver<Option<Arc<HashSet<String>>>>);

impl KnownPods {
    /// A fixed set (`None`: the sources are not all seen yet), for tests.
    pub fn fixed(uids: Option<HashSet<String>>) -> Self {
        KnownPods(tokio::sync::watch::channel(uids.map(Arc::new)).1)
    }

    /// True when the pod's sandboxes, containers and logs may all be removed: every source has
    /// been seen and no worker owns the pod.
    pub fn content_removable(&self, uid: &str) -> bool {
        self.0.borrow().as_ref().is_some_and(|k| !k.contains(uid))
    }

    /// True once every source has sent its first full set.
    pub fn all_sources_ready(&self) -> bool {
        self.0.borrow().is_some()
    }
}

/// What the manager does with a worker's mailbox for a new desired version of its pod.
#[derive(Debug)]
enum Mailbox {
    /// Nothing: the mailbox already says this.
    Keep,
    /// Replace the message.
    Send(PodUpdate),
    /// A Terminate is pending or running: it stays, and a new worker runs the pod after it.
    RestartAfterTermination,
}

/// The mailbox decision for `pod`, desired by the sources, against the worker's current message:
/// a pending Terminate is never overwritten by a Sync (the kubelet's pod workers mark such a pod
/// restartRequested and start it again once terminated), nor by a second Terminate.
fn mailbox(current: &PodUpdate, pod: &Arc<Pod>) -> Mailbox {
    let terminating = matches!(current, PodUpdate::Terminate(..));
    if pod.metadata.deletion_timestamp.is_some() {
        // Graceful deletion: the worker stops the pod with the remaining grace period.
        return match terminating {
            true => Mailbox::Keep,
            false => Mailbox::Send(PodUpdate::Terminate(
                pod.metadata.deletion_grace_period_seconds,
                Some(pod.clone()),
            )),
        };
    }
    match current {
        PodUpdate::Terminate(..) => Mailbox::RestartAfterTermination,
        PodUpdate::Sync(p) if p == pod => Mailbox::Keep,
        PodUpdate::Sync(_) => Mailbox::Send(PodUpdate::Sync(pod.clone())),
    }
}

impl<R: PodRuntime> PodManager<R> {
    /// A manager expecting updates from the named sources before it removes anything.
    pub fn new(
        ctx: Arc<NodeContext<R>>,
        sources: Vec<&'static str>,
        admission: Admission,
        cancel: CancellationToken,
    ) -> Self {
        let classes = Arc::new(RuntimeClasses::new(ctx.api.clone()));
        PodManager {
            ctx,
            sources,
            desired: HashMap::new(),
            workers: HashMap::new(),
            reaping: HashSet::new(),
            sweeping: Arc::default(),
            last_relist: Arc::default(),
            swept: None,
            admission,
            rejected: HashSet::new(),
            restart: HashSet::new(),
            all: BTreeMap::new(),
            classes,
            known: tokio::sync::watch::channel(None).0,
            pleg: super::pleg::PlegHealth::new(),
            pending_resizes: Vec::new(),
            resize_seen: HashMap::new(),
            resizes_retried: std::time::Instant::now(),
            cancel,
        }
    }

    /// The manager, recording its relists in `pleg`.
    pub fn with_pleg(mut self, pleg: super::pleg::PlegHealth) -> Self {
        self.pleg = pleg;
        self
    }

    /// The pods this manager owns, as garbage collection reads them.
    pub fn known_pods(&self) -> KnownPods {
        KnownPods(self.known.subscribe())
    }

    /// Publishes the UIDs with a worker, once every source has been seen.
    fn publish_known(&self) {
        if self.all_sources_seen() {
            let uids: HashSet<String> = self.workers.keys().cloned().collect();
            self.known.send_if_modified(|k| {
                let changed = k.as_deref() != Some(&uids);
                if changed {
                    *k = Some(Arc::new(uids));
                }
                changed
            });
        }
    }

    /// True once every source has sent its first full set: only then are unknown pods removed.
    fn all_sources_seen(&self) -> bool {
        self.sources.iter().all(|s| self.desired.contains_key(s))
    }

    /// Runs until cancelled: applies source updates, answers the eviction manager's `requests`
    /// (when there is one) and relists the runtime every second.
    pub async fn run(
        mut self,
        mut updates: mpsc::Receiver<SourceUpdate>,
        mut requests: Option<mpsc::Receiver<PodsRequest>>,
    ) {
        let mut tick = tokio::time::interval(RELIST);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let request = async {
                match requests.as_mut() {
                    Some(r) => r.recv().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                u = updates.recv() => match u {
                    Some(u) => self.apply(u),
                    None => break,
                },
                r = request => match r {
                    Some(r) => self.answer(r),
                    None => requests = None,
                },
                _ = tick.tick() => self.relist().await,
            }
        }
        // Stopping bosun never stops pods: workers just end.
        for (_, w) in self.workers.drain() {
            w.task.abort();
        }
    }

    /// Answers the eviction manager: the active pods, or an eviction handed to the pod's worker.
    fn answer(&mut self, request: PodsRequest) {
        match request {
            PodsRequest::Active(tx) => {
                let _ = tx.send(self.active_pods());
            }
            PodsRequest::Evict(eviction, done) => {
                let active = self.workers.get(&eviction.uid).filter(|w| {
                    matches!(&*w.tx.borrow(), PodUpdate::Sync(_))
                        && !self.is_terminal(&eviction.uid)
                });
                match active {
                    Some(w) => w.evict(eviction, done),
                    None => {
                        let _ = done.send(false);
                    }
                }
            }
        }
    }

    /// True when the pod's last status has a terminal phase (Succeeded or Failed).
    fn is_terminal(&self, uid: &str) -> bool {
        let phase = self.ctx.statuses.get(uid).and_then(|s| s.phase);
        matches!(phase.as_deref(), Some("Succeeded" | "Failed"))
    }

    /// Frees the devices of pods no longer active (the device manager's UpdateAllocatedDevices
    /// over the kubelet's GetActivePods: every pod known, admitted or still to be, whose phase is
    /// not terminal and that was not rejected), before admission reserves devices again; only
    /// once every source has sent its first full set.
    fn free_devices(&self, all: &BTreeMap<String, Arc<Pod>>) {
        // As the kubelet (sourcesReady.AllReady): a pod a source has not sent yet is not gone.
        let Some(devices) = self
            .admission
            .devices
            .as_ref()
            .filter(|_| self.all_sources_seen())
        else {
            return;
        };
        let api_terminal = |p: &Pod| {
            matches!(
                p.status.as_ref().and_then(|s| s.phase.as_deref()),
                Some("Succeeded" | "Failed")
            )
        };
        let active: std::collections::HashSet<&str> = all
            .iter()
            .filter(|(uid, p)| {
                !self.is_terminal(uid) && !api_terminal(p) && !self.rejected.contains(*uid)
            })
            .map(|(uid, _)| uid.as_str())
            .collect();
        devices.free_inactive(&active);
    }

    /// The pods admitted and still to run (the kubelet's GetActivePods): a worker syncing them
    /// and a phase that is not terminal.
    fn active_pods(&self) -> Vec<Arc<Pod>> {
        self.workers
            .iter()
            .filter_map(|(uid, w)| match &*w.tx.borrow() {
                PodUpdate::Sync(p) => (!self.is_terminal(uid)).then(|| p.clone()),
                PodUpdate::Terminate(..) => None,
            })
            .collect()
    }

    fn apply(&mut self, update: SourceUpdate) {
        self.desired.insert(update.source, update.pods);
        let mut all: BTreeMap<String, Arc<Pod>> = BTreeMap::new();
        for pods in self.desired.values() {
            all.extend(pods.iter().map(|(k, v)| (k.clone(), v.clone())));
        }
        self.all = all;
        self.reconcile();
    }

    /// Brings the workers in line with the desired pods: a worker for each new pod, the newest
    /// version to each running one, Terminate to those of pods no longer wanted.
    fn reconcile(&mut self) {
        let all = std::mem::take(&mut self.all);
        self.admit_new(&all);
        self.note_resizes(&all);
        self.retry_pending_resizes(&all);
        self.restart.retain(|uid| {
            all.get(uid)
                .is_some_and(|p| p.metadata.deletion_timestamp.is_none())
        });
        for (uid, pod) in &all {
            if self.rejected.contains(uid) {
                continue;
            }
            // Workers run the pod as allocated: a resize not accepted yet is not theirs.
            let pod = &self.ctx.allocations.allocated_pod(pod);
            let Some(w) = self.workers.get(uid) else {
                let w = worker::spawn(
                    self.ctx.clone(),
                    self.classes.clone(),
                    pod.clone(),
                    self.cancel.child_token(),
                );
                if let Mailbox::Send(u @ PodUpdate::Terminate(..)) =
                    mailbox(&PodUpdate::Sync(pod.clone()), pod)
                {
                    let _ = w.tx.send(u);
                }
                self.workers.insert(uid.clone(), w);
                continue;
            };
            let decision = mailbox(&w.tx.borrow(), pod);
            match decision {
                Mailbox::Keep => {}
                Mailbox::Send(u) => {
                    let _ = w.tx.send(u);
                }
                Mailbox::RestartAfterTermination => {
                    if self.restart.insert(uid.clone()) {
                        info!(pod.uid = %uid, "pod wanted again while terminating: it restarts once terminated");
                    }
                }
            }
        }
        let gone: Vec<String> = self
            .workers
            .keys()
            .filter(|u| !all.contains_key(*u))
            .cloned()
            .collect();
        if self.all_sources_seen() {
            self.ctx
                .allocations
                .retain(&|uid: &str| all.contains_key(uid));
        }
        for uid in gone {
            if let Some(w) = self.workers.get(&uid)
                && !matches!(&*w.tx.borrow(), PodUpdate::Terminate(..))
            {
                let _ = w.tx.send(PodUpdate::Terminate(None, None));
            }
        }
        self.all = all;
        self.publish_known();
    }

    /// Runs admission for pods without a worker, oldest first, against the pods already running;
    /// a rejected pod gets phase Failed with the reason, an event, and no worker.
    fn admit_new(&mut self, all: &BTreeMap<String, Arc<Pod>>) {
        let mut new: Vec<&Arc<Pod>> = all
            .iter()
            .filter(|(uid, p)| {
                !self.workers.contains_key(*uid)
                    && !self.rejected.contains(*uid)
                    && p.metadata.deletion_timestamp.is_none()
                    && !crate::runtime::labels::is_static(p)
            })
            .map(|(_, p)| p)
            .collect();
        new.sort_by_key(|p| {
            p.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.as_second())
                .unwrap_or(0)
        });
        self.free_devices(all);
        let mut admitted = self.active_pods();
        let allocations = self.ctx.allocations.clone();
        for pod in new {
            let refs: Vec<&Pod> = admitted.iter().map(|p| p.as_ref()).collect();
            // After a restart a pod is admitted at the resources it was allocated, which its
            // spec may have outgrown since (the kubelet's AddPod).
            let pod = &allocations.allocated_pod(pod);
            match self.admission.admit(pod, &refs) {
                Ok(()) => {
                    if !allocations.has(pod.metadata.uid.as_deref().unwrap_or_default()) {
                        allocations.allocate(pod);
                    }
                    allocations.backfill(pod);
                    for w in super::not_acted_on::warnings(pod) {
                        warn!(
                            pod.name = pod.metadata.name.as_deref().unwrap_or_default(),
                            "{w}"
                        );
                    }
                    admitted.push(pod.clone());
                }
                Err(r) => {
                    let uid = pod.metadata.uid.clone().unwrap_or_default();
                    warn!(pod.uid = %uid, pod.name = pod.metadata.name.as_deref().unwrap_or_default(), reason = %r.reason, "{}", r.message);
                    self.ctx.events.pod(
                        pod,
                        None,
                        crate::events::EventType::Warning,
                        &r.reason,
                        r.message.clone(),
                    );
                    self.ctx.statuses.set(pod, rejected_status(pod, &r));
                    self.rejected.insert(uid);
                }
            }
        }
        self.rejected.retain(|uid| all.contains_key(uid));
    }

    /// Notes the pods whose spec now asks for other resources than allocated (the kubelet's
    /// HandlePodUpdates with recordResizeOperations): they join the pending resizes; a resize
    /// reverted before it was allocated clears PodResizePending.
    fn note_resizes(&mut self, all: &BTreeMap<String, Arc<Pod>>) {
        let allocations = self.ctx.allocations.clone();
        for (uid, pod) in all {
            if self
                .resize_seen
                .get(uid)
                .is_some_and(|p| Arc::ptr_eq(p, pod))
                || !allocations.has(uid)
                || pod.metadata.deletion_timestamp.is_some()
            {
                continue;
            }
            self.resize_seen.insert(uid.clone(), pod.clone());
            if allocations.resize_requested(pod) {
                if !self.pending_resizes.contains(uid) {
                    self.pending_resizes.push(uid.clone());
                }
            } else if allocations.conditions(uid).pending.is_some() {
                allocations.clear_pending(uid);
                self.pending_resizes.retain(|u| u != uid);
                if let Some(w) = self.workers.get(uid) {
                    w.wake.notify_one();
                }
            }
        }
        self.resize_seen.retain(|uid, _| all.contains_key(uid));
    }

    /// Decides the pending resizes (the allocation manager's retryPendingResizes): those that
    /// shrink first, then by priority; each admitted against the other pods as allocated is
    /// allocated (PodResizeInProgress, ResizeStarted), else PodResizePending with the admission's
    /// reason (Deferred, retried later; Infeasible, not) and a ResizeDeferred or ResizeInfeasible
    /// event when that changes.
    fn retry_pending_resizes(&mut self, all: &BTreeMap<String, Arc<Pod>>) {
        if self.pending_resizes.is_empty() || !self.all_sources_seen() {
            return;
        }
        self.resizes_retried = std::time::Instant::now();
        let allocations = self.ctx.allocations.clone();
        let mut pending: Vec<Arc<Pod>> = std::mem::take(&mut self.pending_resizes)
            .iter()
            .filter_map(|uid| all.get(uid).cloned())
            .collect();
        let grows = |p: &Arc<Pod>| {
            let allocated = allocations.allocated_pod(p);
            ["cpu", "memory"].iter().any(|r| {
                super::admission::pod_request(p, r) > super::admission::pod_request(&allocated, r)
            })
        };
        pending.sort_by_key(|p| {
            (
                grows(p),
                std::cmp::Reverse(p.spec.as_ref().and_then(|s| s.priority).unwrap_or(0)),
            )
        });
        for pod in pending {
            let uid = pod.metadata.uid.clone().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() || self.is_terminal(&uid) {
                continue;
            }
            if !allocations.resize_requested(&pod) {
                allocations.clear_pending(&uid);
                continue;
            }
            let others: Vec<Arc<Pod>> = self
                .active_pods()
                .into_iter()
                .filter(|p| p.metadata.uid.as_deref() != Some(uid.as_str()))
                .map(|p| {
                    let source = p.metadata.uid.as_ref().and_then(|u| all.get(u));
                    allocations.allocated_pod(source.unwrap_or(&p))
                })
                .collect();
            let refs: Vec<&Pod> = others.iter().map(|p| p.as_ref()).collect();
            let generation = pod.metadata.generation;
            let events = &self.ctx.events;
            match self.admission.admit_resize(&pod, &refs) {
                Ok(()) => {
                    allocations.allocate(&pod);
                    allocations.clear_pending(&uid);
                    allocations.clear_in_progress(&uid);
                    allocations.set_in_progress(&uid, "", "", generation);
                    let msg = resize_message("Pod resize started", &pod, generation, "");
                    info!(pod.uid = %uid, "ResizeStarted: {msg}");
                    events.pod(
                        &pod,
                        None,
                        crate::events::EventType::Normal,
                        "ResizeStarted",
                        msg,
                    );
                }
                Err(r) => {
                    if allocations.set_pending(&uid, &r.reason, &r.message, generation) {
                        let kind = if r.reason == INFEASIBLE {
                            "ResizeInfeasible"
                        } else {
                            "ResizeDeferred"
                        };
                        let prefix = format!("Pod resize {}", r.reason);
                        let msg = resize_message(&prefix, &pod, generation, &r.message);
                        info!(pod.uid = %uid, "{kind}: {msg}");
                        events.pod(&pod, None, crate::events::EventType::Warning, kind, msg);
                    }
                    if r.reason != INFEASIBLE {
                        self.pending_resizes.push(uid.clone());
                    }
                }
            }
            if let Some(w) = self.workers.get(&uid) {
                w.wake.notify_one();
            }
        }
    }

    async fn relist(&mut self) {
        if !self.pending_resizes.is_empty() && self.resizes_retried.elapsed() >= RESIZE_RETRY {
            // Retries the pending resizes, and hands accepted ones to their workers.
            self.reconcile();
        }
        self.workers.retain(|_, w| !w.task.is_finished());
        if self
            .restart
            .iter()
            .any(|uid| !self.workers.contains_key(uid))
        {
            // A pod wanted again has been terminated: its new worker starts it.
            self.restart.retain(|uid| self.workers.contains_key(uid));
            self.reconcile();
        }
        self.publish_known();
        // Every sandbox and container, as runtime::observe_all lists them.
        let cri = &self.ctx.cri;
        let listed_at = std::time::Instant::now();
        let listed = tokio::try_join!(cri.list_pod_sandbox(None), cri.list_containers(None));
        let observed = match listed.map(|(sandboxes, containers)| group(sandboxes, containers)) {
            Ok(o) => {
                self.pleg.relisted(std::time::Instant::now());
                o
            }
            Err(e) => {
                warn!(error = %e, "PLEG relist failed");
                return;
            }
        };
        let mut now: HashMap<String, String> = HashMap::new();
        for (uid, pod) in &observed {
            now.insert(uid.clone(), super::cache::fingerprint(pod));
        }
        let now = Arc::new(now);
        // Published before the wakes: a woken worker must not plan from the relist before.
        self.ctx.pod_cache.relisted(listed_at, now.clone());
        for (uid, fp) in now.iter() {
            if self.last_relist.get(uid) != Some(fp)
                && let Some(w) = self.workers.get(uid)
            {
                w.wake.notify_one();
            }
        }
        if self.all_sources_seen() {
            for (uid, pod) in &observed {
                if !self.workers.contains_key(uid) && !self.reaping.contains(uid) {
                    self.reap(uid.clone(), pod.clone());
                }
            }
        }
        self.reaping.retain(|u| now.contains_key(u));
        if self.all_sources_seen() {
            // Nothing becomes an orphan while the pods known stay the same: the cgroups and
            // directories are made by workers, of pods already known.
            let digest = self.known_digest(&now);
            let due = self
                .swept
                .is_none_or(|(d, at)| d != digest || at.elapsed() >= SWEEP_AT_LEAST_EVERY);
            if due {
                let found =
                    self.remove_orphaned_cgroups(&now).await | self.remove_orphaned_pod_dirs(&now);
                self.swept = (!found).then(|| (digest, std::time::Instant::now()));
            }
        }
        self.last_relist = now;
    }

    /// A digest of the UIDs of the pods with a worker, those of the sources and those in the
    /// runtime (`in_runtime`).
    fn known_digest(&self, in_runtime: &HashMap<String, String>) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        for set in [
            self.workers.keys().collect::<Vec<_>>(),
            self.all.keys().collect(),
            in_runtime.keys().collect(),
        ] {
            let mut set = set;
            set.sort_unstable();
            set.hash(&mut h);
        }
        h.finish()
    }

    /// Removes the cgroups of pods with neither a worker nor anything in the runtime; true when
    /// there was one.
    async fn remove_orphaned_cgroups(&self, in_runtime: &HashMap<String, String>) -> bool {
        let mut found = false;
        for orphan in self.ctx.cgroups.pod_cgroups() {
            if self.workers.contains_key(&orphan.uid) || in_runtime.contains_key(&orphan.uid) {
                continue;
            }
            found = true;
            info!(pod.uid = %orphan.uid, cgroup = %orphan.path, "removing the cgroup of a pod no longer known");
            if let Err(e) = self.ctx.cgroups.remove_orphan(&orphan).await {
                warn!(pod.uid = %orphan.uid, error = %e, "cannot remove an orphaned pod cgroup");
            }
        }
        found
    }

    /// Removes the directories (volumes torn down first) of pods no source has, with neither a
    /// worker nor anything in the runtime: those deleted while bosun was down (the kubelet's
    /// cleanupOrphanedPodDirs, in housekeeping). A mount that will not go keeps the directory
    /// and is retried at the next relist. True when there was one (being removed or not).
    fn remove_orphaned_pod_dirs(&self, in_runtime: &HashMap<String, String>) -> bool {
        let Ok(entries) = std::fs::read_dir(self.ctx.dirs.root_dir.join("pods")) else {
            return false;
        };
        let mut found = false;
        for e in entries.flatten() {
            let uid = e.file_name().to_string_lossy().into_owned();
            if self.workers.contains_key(&uid)
                || self.all.contains_key(&uid)
                || in_runtime.contains_key(&uid)
            {
                continue;
            }
            found = true;
            let Ok(mut sweeping) = self.sweeping.lock() else {
                return found;
            };
            if !sweeping.insert(uid.clone()) {
                continue;
            }
            drop(sweeping);
            let (ctx, sweeping) = (self.ctx.clone(), self.sweeping.clone());
            tokio::spawn(async move {
                info!(pod.uid = %uid, "Orphaned pod found, removing");
                let dir = ctx.dirs.pod_dir(&uid);
                let result = match super::teardown::tear_down_csi(&ctx, &uid).await {
                    Ok(()) => crate::volume::tear_down(&dir).map_err(|e| e.to_string()),
                    Err(e) => Err(e),
                };
                if let Err(e) = result {
                    warn!(pod.uid = %uid, error = %e, "orphaned pod found, but its directory cannot be removed yet");
                }
                if let Ok(mut s) = sweeping.lock() {
                    s.remove(&uid);
                }
            });
        }
        found
    }

    /// Removes the sandboxes and containers of a pod that no source wants.
    fn reap(&mut self, uid: String, pod: ObservedPod) {
        info!(pod.uid = %uid, pod.name = %pod.name, pod.namespace = %pod.namespace, "removing a pod that no source wants");
        self.reaping.insert(uid);
        let ctx = self.ctx.clone();
        tokio::spawn(async move {
            let cri = &ctx.cri;
            for c in pod
                .containers
                .iter()
                .filter(|c| c.state == bosun_cri::types::ContainerState::ContainerRunning)
            {
                let _ = cri.stop_container(&c.id, Duration::from_secs(30)).await;
            }
            for s in &pod.sandboxes {
                let _ = cri.stop_pod_sandbox(&s.id).await;
                if let Err(e) = cri.remove_pod_sandbox(&s.id).await
                    && !e.is_not_found()
                {
                    warn!(sandbox.id = %s.id, error = %e, "cannot remove an orphaned sandbox");
                }
            }
        });
    }
}
/// The status of a pod that failed admission: phase Failed with the reason and the message
/// after "Pod was rejected: ".
fn rejected_status(
    pod: &Pod,
    r: &super::admission::Rejection,
) -> k8s_openapi::api::core::v1::PodStatus {
    let now = crate::status::compute::now();
    let message = r.status_message();
    let input = crate::status::StatusInput {
        pod,
        previous: None,
        sandbox_ready: false,
        pod_ips: &[],
        host_ip: "",
        containers: &[],
        sandbox_id: None,
        waiting: &HashMap::new(),
        runtime_name: "",
        now,
        terminal: Some(("Failed", &r.reason, &message)),
        probes: &HashMap::new(),
    };
    crate::status::compute(&input)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(uid: &str, image: &str, deleted: Option<i64>) -> Arc<Pod> {
        let mut p: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": uid},
            "spec": {"containers": [{"name": "c", "image": image}]},
        }))
        .unwrap();
        if let Some(grace) = deleted {
            p.metadata.deletion_timestamp =
                Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ));
            p.metadata.deletion_grace_period_seconds = Some(grace);
        }
        Arc::new(p)
    }

    fn kind(m: &Mailbox) -> String {
        match m {
            Mailbox::Keep => "keep".into(),
            Mailbox::RestartAfterTermination => "restart after termination".into(),
            Mailbox::Send(PodUpdate::Sync(p)) => {
                format!(
                    "sync {}",
                    p.spec.as_ref().unwrap().containers[0]
                        .image
                        .as_deref()
                        .unwrap()
                )
            }
            Mailbox::Send(PodUpdate::Terminate(g, p)) => {
                format!("terminate {g:?} with pod: {}", p.is_some())
            }
        }
    }

    #[test]
    fn a_pending_terminate_is_never_overwritten() {
        let v1 = pod("u", "a:1", None);
        let v2 = pod("u", "a:2", None);
        let deleted = pod("u", "a:1", Some(5));
        let terminate = PodUpdate::Terminate(None, None);
        let deleting = PodUpdate::Terminate(Some(5), Some(deleted.clone()));
        let cases: [(&str, PodUpdate, &Arc<Pod>, &str); 8] = [
            ("same version", PodUpdate::Sync(v1.clone()), &v1, "keep"),
            ("new version", PodUpdate::Sync(v1.clone()), &v2, "sync a:2"),
            (
                "deleted while syncing",
                PodUpdate::Sync(v1.clone()),
                &deleted,
                "terminate Some(5) with pod: true",
            ),
            // The static pod whose manifest is removed, then put back during its grace period.
            (
                "back while terminating",
                terminate.clone(),
                &v1,
                "restart after termination",
            ),
            (
                "new version while terminating",
                terminate.clone(),
                &v2,
                "restart after termination",
            ),
            ("deleted while terminating", terminate, &deleted, "keep"),
            ("deletion pending, same", deleting.clone(), &deleted, "keep"),
            (
                "deletion pending, undeleted version",
                deleting,
                &v2,
                "restart after termination",
            ),
        ];
        for (name, current, desired, want) in cases {
            assert_eq!(kind(&mailbox(&current, desired)), want, "{name}");
        }
    }

    use super::super::worker_tests::{self, TestNode, UID};

    /// Admission for a node with room (static pods skip it anyway).
    fn admission() -> Admission {
        Admission {
            allocatable: BTreeMap::new(),
            node_labels: tokio::sync::watch::channel(Default::default()).1,
            sysctls: super::super::sysctls::SysctlAllowlist::new(&[]).unwrap(),
            apparmor_enabled: false,
            pressure: tokio::sync::watch::channel(Default::default()).1,
            shutting_down: None,
            devices: None,
        }
    }

    /// The file source wanting `pod` (or nothing).
    fn manifests(pod: Option<&Arc<Pod>>) -> SourceUpdate {
        let pods = pod.map(|p| (UID.to_string(), p.clone())).into_iter();
        SourceUpdate {
            source: "file",
            pods: pods.collect(),
        }
    }

    /// A settled pod synced again (here for a new generation) after a relist that saw nothing
    /// change plans from the pod cache and asks the runtime nothing; once a relist sees its
    /// container exit, the worker it wakes asks the runtime and restarts the container.
    #[tokio::test]
    async fn syncs_plan_from_the_relist_until_it_sees_a_change() {
        let node = TestNode::new();
        let rt = node.rt();
        let static_pod = |generation: i64| {
            let mut p = Pod::clone(&worker_tests::pod());
            let annotations = p.metadata.annotations.get_or_insert_with(Default::default);
            annotations.insert(crate::runtime::labels::CONFIG_SOURCE.into(), "file".into());
            p.metadata.generation = Some(generation);
            Arc::new(p)
        };
        let cancel = node.cancel.child_token();
        let mut m = PodManager::new(node.ctx.clone(), vec!["file"], admission(), cancel);
        m.apply(manifests(Some(&static_pod(1))));
        node.wait_for_status("app running", |s| {
            worker_tests::state_of(s, "app").as_deref() == Some("running")
        })
        .await;
        // A relist that lists before the last sync ended does not count: try a few rounds.
        let mut from_cache = None;
        for generation in 2..50 {
            m.relist().await;
            let before = rt.with(|h| h.pod_reads);
            m.apply(manifests(Some(&static_pod(generation))));
            node.wait_for_status("the new generation observed", |s| {
                s.observed_generation == Some(generation)
            })
            .await;
            if rt.with(|h| h.pod_reads) == before {
                from_cache = Some(generation);
                break;
            }
        }
        assert!(from_cache.is_some(), "every sync asked the runtime again");
        rt.exit("app-0", 1);
        m.relist().await;
        rt.wait_for("app-1 running", |h| h.running() == ["app-1"])
            .await;
    }

    /// The sweep for orphaned pod directories runs when the pods known change, not at every
    /// relist: a directory of a pod nobody knows, made while nothing changes, stays until the
    /// next change (or a minute), then goes; the known pod's directory stays.
    #[tokio::test]
    async fn orphaned_pod_directories_are_swept_when_the_pods_known_change() {
        let node = TestNode::new();
        let cancel = node.cancel.child_token();
        let mut m = PodManager::new(node.ctx.clone(), vec!["file"], admission(), cancel);
        let mut p = Pod::clone(&worker_tests::pod());
        let annotations = p.metadata.annotations.get_or_insert_with(Default::default);
        annotations.insert(crate::runtime::labels::CONFIG_SOURCE.into(), "file".into());
        let p = Arc::new(p);
        m.apply(manifests(Some(&p)));
        node.wait_for_status("app running", |s| {
            worker_tests::state_of(s, "app").as_deref() == Some("running")
        })
        .await;
        m.relist().await;
        let dirs = &node.ctx.dirs;
        std::fs::create_dir_all(dirs.pod_dir(UID)).unwrap();
        m.relist().await;
        let ghost = dirs.pod_dir("ghost");
        std::fs::create_dir_all(&ghost).unwrap();
        m.relist().await;
        assert!(ghost.exists(), "swept although nothing changed");
        // Another pod: the known pods changed, the next relist sweeps.
        let mut other = Pod::clone(&p);
        other.metadata.uid = Some("uid-2".into());
        other.metadata.name = Some("q".into());
        m.apply(SourceUpdate {
            source: "file",
            pods: [
                (UID.to_string(), p.clone()),
                ("uid-2".to_string(), Arc::new(other)),
            ]
            .into_iter()
            .collect(),
        });
        for _ in 0..2000 {
            m.relist().await;
            if !ghost.exists() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(!ghost.exists(), "the orphan's directory is still there");
        assert!(dirs.pod_dir(UID).exists(), "the known pod's directory went");
    }

    /// A static pod's manifest removed, then put back while its worker still has the Terminate:
    /// pending behind a sync (held in PullImage), or running (held in StopContainer). The
    /// Terminate is never overwritten, the pod is stopped and removed, and a new worker runs it
    /// again.
    #[tokio::test]
    async fn a_static_pod_removed_and_put_back_during_its_grace_period_runs_again() {
        for held in ["PullImage", "StopContainer"] {
            let node = TestNode::new();
            let rt = node.rt();
            let mut p = Pod::clone(&worker_tests::pod());
            let annotations = p.metadata.annotations.get_or_insert_with(Default::default);
            annotations.insert(crate::runtime::labels::CONFIG_SOURCE.into(), "file".into());
            let p = Arc::new(p);
            let cancel = node.cancel.child_token();
            let mut m = PodManager::new(node.ctx.clone(), vec!["file"], admission(), cancel);
            let entered = rt.hold(held);
            let held_now = || async {
                tokio::time::timeout(Duration::from_secs(10), entered.notified())
                    .await
                    .unwrap_or_else(|_| panic!("{held}: not called"))
            };
            m.apply(manifests(Some(&p)));
            if held == "PullImage" {
                // The worker syncs, held: the Terminate waits in its mailbox.
                held_now().await;
                m.apply(manifests(None));
            } else {
                // The worker terminates, held in the stop.
                rt.wait_for("app running", |h| h.running() == ["app-0"])
                    .await;
                m.apply(manifests(None));
                held_now().await;
            }
            // Put back during the grace period: the Terminate stays, the restart is noted.
            m.apply(manifests(Some(&p)));
            let update = m.workers[UID].tx.borrow().clone();
            assert!(matches!(update, PodUpdate::Terminate(..)), "{held}");
            assert!(m.restart.contains(UID), "{held}");
            rt.release(held);
            // Once the old worker is done, a relist starts the new one, which runs the pod.
            for _ in 0..2000 {
                m.relist().await;
                if rt.with(|h| h.count("RunPodSandbox") == 2 && h.running().len() == 1) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            let calls = rt.with(|h| h.calls.clone());
            let removed = calls.iter().position(|c| c == "RemovePodSandbox sb-0");
            let again = calls.iter().rposition(|c| c == "RunPodSandbox 0");
            assert!(removed.is_some() && removed < again, "{held}: {calls:?}");
            assert_eq!(rt.with(|h| h.running().len()), 1, "{held}: {calls:?}");
            assert_eq!(rt.with(|h| h.sandboxes[0].id.clone()), "sb-1", "{held}");
            assert!(m.restart.is_empty(), "{held}");
        }
    }
}
