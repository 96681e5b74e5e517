//! One task per pod UID, the sole owner of that pod's lifecycle: it syncs on every spec update,
//! runtime change (PLEG wake) and resync tick, and tears the pod down when told to. This file
//! holds the loop and its state (mailbox, back-offs, Waiting reasons); the steps are their own
//! modules: [`super::observe`], [`super::start`], [`super::teardown`], [`super::runtime_class`],
//! and the worker's own steps are in `evict.rs` (stop for good), `probing.rs` and `start.rs`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Pod;
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::backoff::{CRASH_LOOP, IMAGE_PULL};
use super::context::NodeContext;
use super::inputs::{expand_claims, set_up_volumes};
use super::observe::{Observed, observe, remember_exited};
use super::plan::{ContainerView, PodActions, RunState, plan, starts_unblock_init};
use super::report::{Terminal, report_status};
use super::runtime::PodRuntime;
use super::runtime_class::RuntimeClasses;
use super::sandbox::{run_sandbox, sandbox_ips};
use super::teardown;
use crate::backoff::KeyedBackoff;
use crate::events::EventType;
use crate::eviction::plan::Eviction;
use crate::runtime::hosts;
use crate::runtime::sandbox::PodKey;
use crate::status::Waiting;
use crate::volume;
use crate::volume::api::ApiVolumes;

use super::resync;

/// The longest wait between two volume retries.
const RESYNC: Duration = resync::UNSETTLED;
/// How soon a start held back by volumes not set up (a claim not bound yet, a CSI driver not
/// registered yet) is first tried again: the kubelet polls its volume manager every 300 ms; every
/// retry here reads the API (and records a FailedMount event), so a little less often, doubling
/// on each failure up to [`RESYNC`] as the kubelet's operations back off.
pub(super) const VOLUME_RETRY: Duration = Duration::from_secs(2);

/// The wait before the next volume retry after one that failed `prev` (None: the first failure).
pub(super) fn next_volume_retry(prev: Option<Duration>) -> Duration {
    prev.map_or(VOLUME_RETRY, |d| (d * 2).min(RESYNC))
}

/// What the manager asks of a worker; the newest message wins.
#[derive(Debug, Clone)]
pub enum PodUpdate {
    /// Run this version of the pod.
    Sync(Arc<Pod>),
    /// Stop the pod (grace period in seconds, or the pod's own) and remove it; the newest
    /// version of the pod object when there is one.
    Terminate(Option<i64>, Option<Arc<Pod>>),
}

/// An eviction waiting for the worker, and who waits for it to be done.
type EvictSlot = Arc<Mutex<Option<(Eviction, oneshot::Sender<bool>)>>>;

/// The manager's handle on a running worker.
pub struct WorkerHandle {
    /// Latest-wins mailbox.
    pub tx: watch::Sender<PodUpdate>,
    /// PLEG wake-up.
    pub wake: Arc<Notify>,
    /// The task.
    pub task: tokio::task::JoinHandle<()>,
    /// The eviction the worker is to carry out next.
    evict: EvictSlot,
}

impl WorkerHandle {
    /// Hands the worker an eviction (the kubelet's killPodNow): it stops the pod for good and
    /// answers `done` once its containers are stopped. An eviction still pending is dropped.
    pub fn evict(&self, eviction: Eviction, done: oneshot::Sender<bool>) {
        let replaced = match self.evict.lock() {
            Ok(mut slot) => slot.replace((eviction, done)),
            Err(_) => return,
        };
        if let Some((_, earlier)) = replaced {
            let _ = earlier.send(false);
        }
        self.wake.notify_one();
    }
}

/// Spawns the worker of `pod`; `classes` reads the RuntimeClass of its sandboxes.
pub fn spawn<R: PodRuntime>(
    ctx: Arc<NodeContext<R>>,
    classes: Arc<RuntimeClasses>,
    pod: Arc<Pod>,
    cancel: CancellationToken,
) -> WorkerHandle {
    let (tx, rx) = watch::channel(PodUpdate::Sync(pod.clone()));
    let wake = Arc::new(Notify::new());
    let evict = EvictSlot::default();
    let key = PodKey::of(&pod);
    let span =
        info_span!("pod", pod.namespace = %key.namespace, pod.name = %key.name, pod.uid = %key.uid);
    let api_volumes = ApiVolumes::new(ctx.allocatable.clone());
    let worker = PodWorker {
        ctx,
        classes,
        pod,
        backoff: KeyedBackoff::new(CRASH_LOOP),
        pulls: KeyedBackoff::new(IMAGE_PULL),
        waiting: HashMap::new(),
        sandbox_ips: HashMap::new(),
        exited: HashMap::new(),
        api_volumes,
        volume_paths: None,
        volume_retry: None,
        resize_checked: None,
        terminal: None,
        evict: evict.clone(),
        synced: false,
        seen: None,
        synced_at: None,
        start_sli: Default::default(),
        wake: wake.clone(),
    };
    let task = tokio::spawn(worker.run(rx, wake.clone(), cancel).instrument(span));
    WorkerHandle {
        tx,
        wake,
        task,
        evict,
    }
}

pub(super) struct PodWorker<R> {
    pub(super) ctx: Arc<NodeContext<R>>,
    pub(super) classes: Arc<RuntimeClasses>,
    pub(super) pod: Arc<Pod>,
    /// Crash-loop back-off per container name.
    pub(super) backoff: KeyedBackoff,
    /// Image-pull back-off per container name.
    pub(super) pulls: KeyedBackoff,
    pub(super) waiting: HashMap<String, Waiting>,
    pub(super) sandbox_ips: HashMap<String, Vec<String>>,
    pub(super) exited: HashMap<String, ContainerView>,
    pub(super) api_volumes: ApiVolumes,
    pub(super) volume_paths: Option<HashMap<String, String>>,
    /// The last container start failed on its volumes: the next sync comes after this wait
    /// (sooner than a resync at first, backing off while the failures go on).
    pub(super) volume_retry: Option<Duration>,
    /// When the pod's claims were last checked for a resize to carry out on the node.
    pub(super) resize_checked: Option<Instant>,
    /// Set once the pod is stopped for good (past activeDeadlineSeconds, evicted): it stays
    /// stopped and Failed.
    pub(super) terminal: Option<Terminal>,
    /// An eviction handed over by the manager, not carried out yet.
    pub(super) evict: EvictSlot,
    /// Synced at least once (kubelet_pod_worker_duration_seconds: create, then update or sync).
    pub(super) synced: bool,
    /// What the last sync observed of the runtime: the next sync plans from it when the pod
    /// cache shows nothing changed since (see [`super::cache`]).
    pub(super) seen: Option<Observed>,
    /// When the last sync ended.
    pub(super) synced_at: Option<Instant>,
    /// kubelet_pod_start_sli_duration_seconds of this pod.
    pub(super) start_sli: crate::metrics::PodStartTracker,
    /// This worker's wake-up (PLEG, and the prober on a changed result).
    pub(super) wake: Arc<Notify>,
}

impl<R: PodRuntime> PodWorker<R> {
    async fn run(
        mut self,
        mut rx: watch::Receiver<PodUpdate>,
        wake: Arc<Notify>,
        cancel: CancellationToken,
    ) {
        let mut next_sync: Duration;
        loop {
            let update = rx.borrow_and_update().clone();
            match update {
                PodUpdate::Sync(pod) => {
                    let op = match (self.synced, Arc::ptr_eq(&self.pod, &pod)) {
                        (false, _) => "create",
                        (true, false) => "update",
                        (true, true) => "sync",
                    };
                    if op != "sync"
                        && let Some(objects) = &self.ctx.objects
                    {
                        // The kubelet's RegisterPod: watch what the pod refers to.
                        objects.register_pod(&pod);
                    }
                    self.pod = pod;
                    let started = Instant::now();
                    // Boxed: the sync's state lives only while it runs, not in every idle worker's task.
                    let ok = match Box::pin(self.sync()).await {
                        Ok(()) => true,
                        Err(e) => {
                            warn!(error = %e, "pod sync failed; retrying");
                            false
                        }
                    };
                    next_sync = self.resync_delay(ok);
                    crate::metrics::global().observe_pod_sync(op, started.elapsed());
                    self.synced = true;
                    self.synced_at = Some(Instant::now());
                }
                PodUpdate::Terminate(grace, pod) => {
                    // The newest object: a deletionTimestamp on it makes us finish the deletion.
                    if let Some(pod) = pod {
                        self.pod = pod;
                    }
                    self.ctx.prober.remove_pod(&self.key().uid);
                    if let Some((_, done)) = self.take_eviction() {
                        let _ = done.send(false);
                    }
                    Box::pin(self.terminate(grace)).await;
                    if let Some(objects) = &self.ctx.objects {
                        objects.unregister_pod(&self.key().uid);
                    }
                    return;
                }
            }
            // The sync just read the runtime: PLEG wakes that arrived during it are stale.
            {
                use futures::FutureExt;
                let _ = wake.notified().now_or_never();
            }
            if self.evict.lock().is_ok_and(|s| s.is_some()) {
                // An eviction came during the sync: carry it out now.
                continue;
            }
            let now = Instant::now();
            let until = [&self.backoff, &self.pulls]
                .iter()
                .filter_map(|b| b.next_expiry(now))
                .min()
                .map(|t| t - now)
                .unwrap_or(next_sync)
                .min(next_sync)
                .min(self.volume_retry.unwrap_or(next_sync));
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
                _ = wake.notified() => {}
                _ = tokio::time::sleep(until) => {}
            }
        }
    }

    /// The wait before the next periodic sync, after one that succeeded (`ok`) or not.
    fn resync_delay(&self, ok: bool) -> Duration {
        let settled = ok
            && self
                .ctx
                .statuses
                .previous(&self.pod)
                .is_some_and(|s| resync::settled(&s));
        resync::delay(
            settled,
            self.ctx.sync_frequency,
            crate::backoff::jitter(),
            self.until_active_deadline(),
        )
    }

    pub(super) fn key(&self) -> PodKey {
        PodKey::of(&self.pod)
    }

    pub(super) async fn observe(&self) -> bosun_cri::Result<Observed> {
        let uid = self.key().uid;
        let pod_dir = self.ctx.dirs.pod_dir(&uid);
        observe(&self.ctx.cri, &uid, &pod_dir, &self.exited).await
    }

    /// What the runtime holds for this pod, for a sync: at the start of one (`first`), what the
    /// last sync observed when a relist since it ended saw the same (the kubelet's pod cache);
    /// otherwise, or after this sync acted, asked of the runtime.
    async fn observe_for_sync(&mut self, first: bool) -> bosun_cri::Result<Observed> {
        if first
            && let (Some(seen), Some(since)) = (&self.seen, self.synced_at)
            && self
                .ctx
                .pod_cache
                .unchanged_since(&self.key().uid, since, &seen.fingerprint)
        {
            return Ok(seen.clone());
        }
        let obs = self.observe().await?;
        self.seen = Some(obs.clone());
        Ok(obs)
    }

    /// Records an event about this pod (or one of its containers); never waits.
    pub(super) fn event(
        &self,
        container: Option<&str>,
        kind: EventType,
        reason: &str,
        message: String,
    ) {
        self.ctx
            .events
            .pod(&self.pod, container, kind, reason, message);
    }

    async fn sync(&mut self) -> bosun_cri::Result<()> {
        // The pod cgroup (with its limits) exists before the sandbox, as the kubelet makes it.
        if let Err(e) = self.ctx.cgroups.ensure_pod(&self.pod).await {
            warn!(error = %e, "cannot create the pod cgroup");
            let msg = format!("unable to ensure pod container exists: {e}");
            self.event(None, EventType::Warning, "FailedCreatePodContainer", msg);
            return Ok(());
        }
        // Rounds: one that makes the sandbox, then one per sidecar started on the way (each
        // unblocks the next init step), then the one that finds everything started.
        let inits = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.init_containers.as_ref())
            .map_or(0, Vec::len);
        let rounds = 2 + inits;
        for round in 0..rounds {
            let obs = self.observe_for_sync(round == 0).await?;
            remember_exited(&mut self.exited, &obs);
            if self.kill_unhealthy(&obs).await {
                // Plan with the killed containers exited: they restart per restartPolicy.
                continue;
            }
            if self.terminal.is_none() && self.resize(&obs).await {
                // Containers whose resizePolicy restarts them were stopped: plan their start.
                continue;
            }
            let now = Instant::now();
            // A container that ran long enough before exiting starts its back-off over.
            for c in obs
                .containers
                .iter()
                .filter(|c| c.state == RunState::Exited)
            {
                if CRASH_LOOP
                    .reset_after
                    .is_some_and(|d| c.finished_at - c.started_at >= d.as_nanos() as i64)
                {
                    self.backoff.reset(&c.name);
                }
            }
            if let Some((eviction, done)) = self.take_eviction() {
                return self.evict(&obs, eviction, done).await;
            }
            if self.terminal.is_none() && self.past_active_deadline() {
                let t = Terminal::deadline();
                warn!("DeadlineExceeded: {}", t.message);
                self.event(None, EventType::Normal, t.reason, t.message.clone());
                self.terminal = Some(t);
            }
            if self.terminal.is_some() {
                return self.stop_for_good(&obs).await;
            }
            let unstarted = self.unstarted_sidecars(&obs);
            let unstarted: Vec<&str> = unstarted.iter().map(String::as_str).collect();
            let actions = plan(
                &self.pod,
                obs.sandbox.as_ref(),
                &obs.containers,
                &unstarted,
                &self.backoff,
                now,
            );
            let mut acted = false;
            if actions.kill_pod {
                teardown::kill(&self.ctx, &self.pod, &obs, &self.sandbox_ips, None).await;
                acted = true;
            }
            if let Some(attempt) = actions.create_sandbox {
                self.create_sandbox(attempt).await;
                // Start containers in the new sandbox right away.
                continue;
            }
            acted |= self.kill_changed(&obs, &actions).await;
            let started_now = self.start_containers(&obs, &actions, now).await;
            acted |= !actions.start.is_empty() && obs.sandbox.as_ref().is_some_and(|s| s.ready);
            self.back_off(&actions);
            if !acted
                && obs.sandbox.as_ref().is_some_and(|s| s.ready)
                && self.volume_paths.is_some()
                && self.api_volumes.due()
            {
                // Keep configMap, secret and token files current.
                if let Err(e) = self.volumes().await {
                    warn!("FailedMount: {e}");
                }
            }
            if !acted
                && obs.sandbox.as_ref().is_some_and(|s| s.ready)
                && self.volume_paths.is_some()
                && self
                    .resize_checked
                    .is_none_or(|t| t.elapsed() >= self.ctx.sync_frequency)
            {
                // Grow claims the resizer has grown (the kubelet checks at each pod sync).
                self.resize_checked = Some(Instant::now());
                expand_claims(&self.ctx, &self.pod).await;
            }
            let started: Vec<&str> = started_now.iter().map(String::as_str).collect();
            if round + 1 < rounds && starts_unblock_init(&self.pod, &started) {
                // A plan made before these starts cannot see them: the next init step waits
                // for no runtime event (whose wake this sync would drop as stale) nor resync.
                continue;
            }
            let obs = if acted {
                self.observe_for_sync(false).await?
            } else {
                obs
            };
            self.update_status(&obs).await;
            return Ok(());
        }
        Ok(())
    }

    /// Runs a new sandbox while the pod's volumes are set up (the kubelet mounts them before
    /// creating it): their API round trips (token, config maps) then add nothing to the pod's
    /// startup. A volume failure here is reported when the containers start, which set the
    /// volumes up again.
    async fn create_sandbox(&mut self, attempt: u32) {
        let mut api_volumes = std::mem::take(&mut self.api_volumes);
        let mut volume_paths = self.volume_paths.take();
        let ((), early) = tokio::join!(
            run_sandbox(&self.ctx, &self.classes, &self.pod, attempt),
            set_up_volumes(&self.ctx, &self.pod, &mut api_volumes, &mut volume_paths),
        );
        self.api_volumes = api_volumes;
        self.volume_paths = volume_paths;
        if let Err(e) = early {
            debug!("volumes not set up with the sandbox (retried before the containers): {e}");
        }
    }

    /// CrashLoopBackOff for each container the plan holds back.
    fn back_off(&mut self, actions: &PodActions) {
        let key = self.key();
        for (name, delay) in &actions.backing_off {
            let message = format!(
                "back-off {delay}s restarting failed container={name} pod={}_{}({})",
                key.name, key.namespace, key.uid
            );
            if self.waiting.get(name).map(|w| w.reason.as_str()) != Some("CrashLoopBackOff") {
                warn!(container.name = %name, "BackOff: {message}");
            }
            let msg = "Back-off restarting failed container".to_string();
            self.event(Some(name), EventType::Warning, "BackOff", msg);
            let reason = "CrashLoopBackOff".into();
            self.waiting
                .insert(name.clone(), Waiting { reason, message });
        }
    }

    pub(super) async fn update_status(&mut self, obs: &Observed) {
        // A host-network pod has the node's IPs from the start, sandbox or not (the kubelet's
        // generateAPIPodStatus); others the IPs of their ready sandbox.
        let ips = match obs.sandbox.as_ref().filter(|s| s.ready) {
            _ if self.host_network() => self.ctx.host_ips.clone(),
            Some(s) => self.pod_ips(&s.id).await,
            None => vec![],
        };
        if self.terminal.is_none() {
            self.resize_progress(obs);
        }
        let terminal = self.terminal.as_ref();
        let probes = self.probes(obs, ips.first().map(String::as_str).unwrap_or_default());
        let status = report_status(
            &self.ctx,
            &self.pod,
            obs,
            &ips,
            &self.waiting,
            &probes,
            terminal,
        );
        self.start_sli.status(&self.pod, &status);
    }

    /// Stops the containers the plan restarts (their definition changed, or their state is
    /// unknown), with the kubelet's Killing event; true when any.
    async fn kill_changed(&mut self, obs: &Observed, actions: &PodActions) -> bool {
        let pod = self.pod.clone();
        for (id, message) in &actions.kill {
            let Some(c) = obs.containers.iter().find(|c| &c.id == id) else {
                continue;
            };
            info!(container.name = %c.name, "Killing: {message}");
            self.event(Some(&c.name), EventType::Normal, "Killing", message.clone());
            let ip = self.hook_ip(&c.sandbox_id).to_string();
            teardown::stop_container(&self.ctx, &pod, c, &ip, None).await;
        }
        !actions.kill.is_empty()
    }

    pub(super) fn host_network(&self) -> bool {
        hosts::host_network(&self.pod)
    }

    /// The pod's IPs: the node's on the host network, else those the runtime gave its sandbox.
    pub(super) async fn pod_ips(&mut self, sandbox_id: &str) -> Vec<String> {
        if self.host_network() {
            return self.ctx.host_ips.clone();
        }
        if let Some(ips) = self.sandbox_ips.get(sandbox_id) {
            return ips.clone();
        }
        let ips = sandbox_ips(&self.ctx.cri, sandbox_id).await;
        self.sandbox_ips.insert(sandbox_id.to_string(), ips.clone());
        ips
    }

    /// The IP lifecycle hooks of containers in `sandbox_id` reach: the first the runtime gave.
    pub(super) fn hook_ip(&self, sandbox_id: &str) -> &str {
        self.sandbox_ips
            .get(sandbox_id)
            .and_then(|ips| ips.first())
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// Host paths of every volume of the pod, setting up (or refreshing) API-backed ones.
    pub(super) async fn volumes(&mut self) -> Result<HashMap<String, String>, volume::VolumeError> {
        let (ctx, pod) = (&self.ctx, &self.pod);
        set_up_volumes(ctx, pod, &mut self.api_volumes, &mut self.volume_paths).await
    }

    async fn terminate(&mut self, grace: Option<i64>) {
        info!("terminating pod");
        let obs = match self.observe().await {
            Ok(o) => o,
            Err(e) => {
                warn!(error = %e, "cannot list the pod's containers to stop them");
                return;
            }
        };
        teardown::kill(&self.ctx, &self.pod, &obs, &self.sandbox_ips, grace).await;
        teardown::remove(&self.ctx, &self.pod, &obs).await;
        info!("pod removed");
    }
}
