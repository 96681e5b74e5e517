//! One task per pod UID, the sole owner of that pod's lifecycle: it syncs on every spec update,
//! runtime change (PLEG wake) and resync tick, and tears the pod down when told to.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bosun_cri::types::{ContainerFilter, ContainerState, PodSandboxFilter, PodSandboxState};
use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use k8s_openapi::api::node::v1::RuntimeClass;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use super::backoff::{CRASH_LOOP, IMAGE_PULL};
use super::context::NodeContext;
use super::image::{PullError, ensure_image};
use super::keyring::Keyring;
use super::lifecycle::{self, HookError};
use super::ordering::TerminationOrdering;
use super::plan::{
    ContainerView, RestartPolicy, RunState, SandboxView, StartContainer, is_restartable_init, plan,
    starts_unblock_init,
};
use crate::backoff::KeyedBackoff;
use crate::events::EventType;
use crate::runtime::container::{ContainerContext, container_config};
use crate::runtime::hostname::PodHostname;
use crate::runtime::sandbox::{PodKey, sandbox_config};
use crate::runtime::{hosts, labels};
use crate::status::{StatusInput, Waiting, compute};
use crate::volume;
use crate::volume::api::{ApiVolumes, get_config_map, get_secret};

/// How often a worker syncs with no event at all.
const RESYNC: Duration = Duration::from_secs(10);
/// Longest a postStart hook may run (the kubelet has no limit).
const POST_START_LIMIT: Duration = Duration::from_secs(120);

/// What the manager asks of a worker; the newest message wins.
#[derive(Debug, Clone)]
pub enum PodUpdate {
    /// Run this version of the pod.
    Sync(Arc<Pod>),
    /// Stop the pod (grace period in seconds, or the pod's own) and remove it; the newest
    /// version of the pod object when there is one.
    Terminate(Option<i64>, Option<Arc<Pod>>),
}

/// The manager's handle on a running worker.
pub struct WorkerHandle {
    /// Latest-wins mailbox.
    pub tx: watch::Sender<PodUpdate>,
    /// PLEG wake-up.
    pub wake: Arc<Notify>,
    /// The task.
    pub task: tokio::task::JoinHandle<()>,
}

/// Spawns the worker of `pod`.
pub fn spawn(ctx: Arc<NodeContext>, pod: Arc<Pod>, cancel: CancellationToken) -> WorkerHandle {
    let (tx, rx) = watch::channel(PodUpdate::Sync(pod.clone()));
    let wake = Arc::new(Notify::new());
    let key = PodKey::of(&pod);
    let span =
        info_span!("pod", pod.namespace = %key.namespace, pod.name = %key.name, pod.uid = %key.uid);
    let worker = PodWorker {
        ctx,
        pod,
        backoff: KeyedBackoff::new(CRASH_LOOP),
        pulls: KeyedBackoff::new(IMAGE_PULL),
        waiting: HashMap::new(),
        sandbox_ips: HashMap::new(),
        exited: HashMap::new(),
        api_volumes: ApiVolumes::default(),
        volume_paths: None,
        deadline_exceeded: false,
        synced: false,
        start_sli: Default::default(),
    };
    let task = tokio::spawn(worker.run(rx, wake.clone(), cancel).instrument(span));
    WorkerHandle { tx, wake, task }
}

struct PodWorker {
    ctx: Arc<NodeContext>,
    pod: Arc<Pod>,
    /// Crash-loop back-off per container name.
    backoff: KeyedBackoff,
    /// Image-pull back-off per container name.
    pulls: KeyedBackoff,
    waiting: HashMap<String, Waiting>,
    sandbox_ips: HashMap<String, Vec<String>>,
    exited: HashMap<String, ContainerView>,
    api_volumes: ApiVolumes,
    volume_paths: Option<HashMap<String, String>>,
    /// Set once activeDeadlineSeconds passed: the pod is stopped and Failed for good.
    deadline_exceeded: bool,
    /// Synced at least once (kubelet_pod_worker_duration_seconds: create, then update or sync).
    synced: bool,
    /// kubelet_pod_start_sli_duration_seconds of this pod.
    start_sli: crate::metrics::PodStartTracker,
}

/// What the runtime holds for this pod, ready for the plan.
struct Observed {
    sandbox: Option<SandboxView>,
    sandbox_ids: Vec<(String, bool)>,
    containers: Vec<ContainerView>,
}

impl PodWorker {
    async fn run(
        mut self,
        mut rx: watch::Receiver<PodUpdate>,
        wake: Arc<Notify>,
        cancel: CancellationToken,
    ) {
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
                    if let Err(e) = Box::pin(self.sync()).await {
                        warn!(error = %e, "pod sync failed; retrying");
                    }
                    crate::metrics::global().observe_pod_sync(op, started.elapsed());
                    self.synced = true;
                }
                PodUpdate::Terminate(grace, pod) => {
                    // The newest object: a deletionTimestamp on it makes us finish the deletion.
                    if let Some(pod) = pod {
                        self.pod = pod;
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
            let now = Instant::now();
            let until = [&self.backoff, &self.pulls]
                .iter()
                .filter_map(|b| b.next_expiry(now))
                .min()
                .map(|t| t - now)
                .unwrap_or(RESYNC)
                .min(RESYNC);
            tokio::select! {
                _ = cancel.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
                _ = wake.notified() => {}
                _ = tokio::time::sleep(until) => {}
            }
        }
    }

    fn key(&self) -> PodKey {
        PodKey::of(&self.pod)
    }

    async fn observe(&self) -> bosun_cri::Result<Observed> {
        let uid = self.key().uid;
        let selector = HashMap::from([(labels::POD_UID.to_string(), uid)]);
        let cri = &self.ctx.cri;
        let (mut sandboxes, containers) = tokio::try_join!(
            cri.list_pod_sandbox(Some(PodSandboxFilter {
                label_selector: selector.clone(),
                ..Default::default()
            })),
            cri.list_containers(Some(ContainerFilter {
                label_selector: selector,
                ..Default::default()
            })),
        )?;
        sandboxes.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        let sandbox = sandboxes.first().map(|s| SandboxView {
            id: s.id.clone(),
            ready: s.state == PodSandboxState::SandboxReady as i32,
            attempt: s.metadata.as_ref().map(|m| m.attempt).unwrap_or(0),
        });
        let mut views = Vec::new();
        for c in containers {
            if let Some(v) = self.exited.get(&c.id) {
                views.push(v.clone());
                continue;
            }
            let name = c
                .labels
                .get(labels::CONTAINER_NAME)
                .cloned()
                .unwrap_or_default();
            let restart_count = c
                .annotations
                .get(labels::RESTART_COUNT)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let st = match cri.container_status(&c.id, false).await {
                Ok(r) => r.status.unwrap_or_default(),
                Err(e) if e.is_not_found() => continue,
                Err(e) => return Err(e),
            };
            let state = match ContainerState::try_from(st.state) {
                Ok(ContainerState::ContainerCreated) => RunState::Created,
                Ok(ContainerState::ContainerRunning) => RunState::Running,
                Ok(ContainerState::ContainerExited) => RunState::Exited,
                _ => RunState::Unknown,
            };
            let mut message = st.message.clone();
            if state == RunState::Exited && message.is_empty() {
                message = read_termination_message(&self.termination_log(&name, restart_count));
            }
            views.push(ContainerView {
                id: c.id.clone(),
                name,
                sandbox_id: c.pod_sandbox_id.clone(),
                state,
                restart_count,
                exit_code: st.exit_code,
                started_at: st.started_at,
                finished_at: st.finished_at,
                reason: st.reason.clone(),
                message,
                image_ref: st.image_ref.clone(),
                created_at: c.created_at,
            });
        }
        views.sort_by_key(|c| std::cmp::Reverse(c.created_at));
        let sandbox_ids = sandboxes
            .iter()
            .map(|s| {
                (
                    s.id.clone(),
                    s.state == PodSandboxState::SandboxReady as i32,
                )
            })
            .collect();
        Ok(Observed {
            sandbox,
            sandbox_ids,
            containers: views,
        })
    }

    fn remember_exited(&mut self, obs: &Observed) {
        for c in obs
            .containers
            .iter()
            .filter(|c| c.state == RunState::Exited)
        {
            self.exited.entry(c.id.clone()).or_insert_with(|| c.clone());
        }
        let live: std::collections::HashSet<&str> =
            obs.containers.iter().map(|c| c.id.as_str()).collect();
        self.exited.retain(|id, _| live.contains(id.as_str()));
    }

    async fn sync(&mut self) -> bosun_cri::Result<()> {
        // The pod cgroup (with its limits) exists before the sandbox, as the kubelet makes it.
        if let Err(e) = self.ctx.cgroups.ensure_pod(&self.pod) {
            warn!(error = %e, "cannot create the pod cgroup");
            self.event(
                None,
                EventType::Warning,
                "FailedCreatePodContainer",
                format!("unable to ensure pod container exists: {e}"),
            );
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
            let obs = self.observe().await?;
            self.remember_exited(&obs);
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
            if self.deadline_exceeded || self.past_active_deadline() {
                if !self.deadline_exceeded {
                    self.deadline_exceeded = true;
                    warn!(
                        "DeadlineExceeded: Pod was active on the node longer than the specified deadline"
                    );
                    self.event(
                        None,
                        EventType::Normal,
                        "DeadlineExceeded",
                        "Pod was active on the node longer than the specified deadline".into(),
                    );
                }
                if obs.sandbox_ids.iter().any(|(_, ready)| *ready)
                    || obs.containers.iter().any(|c| c.state == RunState::Running)
                {
                    self.kill(&obs, None).await;
                }
                let obs = self.observe().await?;
                self.update_status(&obs).await;
                return Ok(());
            }
            let actions = plan(
                &self.pod,
                obs.sandbox.as_ref(),
                &obs.containers,
                &self.backoff,
                now,
            );
            let mut acted = false;
            if actions.kill_pod {
                self.kill(&obs, None).await;
                acted = true;
            }
            if let Some(attempt) = actions.create_sandbox {
                // The volumes are set up while the runtime makes the sandbox (the kubelet mounts
                // them before creating it): their API round trips (token, config maps) then add
                // nothing to the pod's startup. A failure here is reported when the containers
                // start, which set the volumes up again.
                let mut api_volumes = std::mem::take(&mut self.api_volumes);
                let mut volume_paths = self.volume_paths.take();
                let ((), early) = tokio::join!(
                    self.run_sandbox(attempt),
                    set_up_volumes(&self.ctx, &self.pod, &mut api_volumes, &mut volume_paths),
                );
                self.api_volumes = api_volumes;
                self.volume_paths = volume_paths;
                if let Err(e) = early {
                    debug!(
                        "volumes not set up with the sandbox (retried before the containers): {e}"
                    );
                }
                // Start containers in the new sandbox right away.
                continue;
            }
            let running_names: Vec<String> = obs
                .containers
                .iter()
                .filter(|c| c.state == RunState::Running)
                .map(|c| c.name.clone())
                .collect();
            self.waiting.retain(|name, _| !running_names.contains(name));
            let mut started_now: Vec<&str> = Vec::new();
            if let Some(sb) = obs.sandbox.as_ref().filter(|s| s.ready) {
                for start in &actions.start {
                    let restarting = start.restart_count > 0;
                    if restarting {
                        self.backoff.next(&start.name, now);
                    }
                    let started = self.start_container(sb, start).await;
                    if started {
                        started_now.push(&start.name);
                    }
                    acted = true;
                    // As the kubelet's SyncPod: a regular init container that failed to start
                    // holds back everything after it; a sidecar that failed does not.
                    if !started
                        && start.init
                        && !self
                            .spec_of(&start.name, true)
                            .is_some_and(|c| is_restartable_init(&c))
                    {
                        break;
                    }
                }
            }
            let key = self.key();
            for (name, delay) in &actions.backing_off {
                let message = format!(
                    "back-off {delay}s restarting failed container={name} pod={}_{}({})",
                    key.name, key.namespace, key.uid
                );
                if self.waiting.get(name).map(|w| w.reason.as_str()) != Some("CrashLoopBackOff") {
                    warn!(container.name = %name, "BackOff: {message}");
                }
                self.event(
                    Some(name),
                    EventType::Warning,
                    "BackOff",
                    "Back-off restarting failed container".into(),
                );
                self.waiting.insert(
                    name.clone(),
                    Waiting {
                        reason: "CrashLoopBackOff".into(),
                        message,
                    },
                );
            }
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
            if round + 1 < rounds && starts_unblock_init(&self.pod, &started_now) {
                // A plan made before these starts cannot see them: the next init step waits
                // for no runtime event (whose wake this sync would drop as stale) nor resync.
                continue;
            }
            let obs = if acted { self.observe().await? } else { obs };
            self.update_status(&obs).await;
            return Ok(());
        }
        Ok(())
    }

    async fn update_status(&mut self, obs: &Observed) {
        let sandbox_ready = obs.sandbox.as_ref().is_some_and(|s| s.ready);
        // A host-network pod has the node's IPs from the start, sandbox or not (the kubelet's
        // generateAPIPodStatus); others the IPs of their ready sandbox.
        let ips = if self.host_network() {
            self.ctx.host_ips.clone()
        } else {
            match obs.sandbox.as_ref().filter(|s| s.ready) {
                Some(s) => self.pod_ips(&s.id).await,
                None => vec![],
            }
        };
        let previous = self.ctx.statuses.previous(&self.pod);
        let input = StatusInput {
            pod: &self.pod,
            previous: previous.as_ref(),
            sandbox_ready,
            pod_ips: &ips,
            host_ip: &self.ctx.host_ip,
            containers: &obs.containers,
            sandbox_id: obs.sandbox.as_ref().map(|s| s.id.as_str()),
            waiting: &self.waiting,
            runtime_name: &self.ctx.cri.runtime_version().runtime_name,
            now: crate::status::compute::now(),
            terminal: self.deadline_exceeded.then_some((
                "Failed",
                "DeadlineExceeded",
                "Pod was active on the node longer than the specified deadline",
            )),
        };
        let status = compute(&input);
        self.start_sli.status(&self.pod, &status);
        let old_phase = previous.as_ref().and_then(|p| p.phase.clone());
        if self.ctx.statuses.set(&self.pod, status.clone()) && old_phase != status.phase {
            info!(
                phase = status.phase.as_deref().unwrap_or_default(),
                pod.ip = status.pod_ip.as_deref().unwrap_or_default(),
                "pod phase"
            );
        }
    }

    fn host_network(&self) -> bool {
        self.pod
            .spec
            .as_ref()
            .and_then(|s| s.host_network)
            .unwrap_or(false)
    }

    /// The pod's IPs: the node's on the host network, else those the runtime gave its sandbox.
    async fn pod_ips(&mut self, sandbox_id: &str) -> Vec<String> {
        if self.host_network() {
            return self.ctx.host_ips.clone();
        }
        if let Some(ips) = self.sandbox_ips.get(sandbox_id) {
            return ips.clone();
        }
        let Ok(resp) = self.ctx.cri.pod_sandbox_status(sandbox_id, false).await else {
            return vec![];
        };
        let net = resp.status.and_then(|s| s.network).unwrap_or_default();
        let ips: Vec<String> = std::iter::once(net.ip)
            .chain(net.additional_ips.into_iter().map(|i| i.ip))
            .filter(|i| !i.is_empty())
            .collect();
        self.sandbox_ips.insert(sandbox_id.to_string(), ips.clone());
        ips
    }

    async fn run_sandbox(&self, attempt: u32) {
        let key = self.key();
        let dirs = &self.ctx.dirs;
        if let Err(e) =
            std::fs::create_dir_all(dirs.pod_log_dir(&key.namespace, &key.name, &key.uid))
        {
            warn!(error = %e, "cannot create the pod log directory");
        }
        let config = match sandbox_config(&self.pod, attempt, dirs) {
            Ok(c) => c,
            Err(e) => {
                warn!(error = %e, "FailedCreatePodSandBox: failed to generate sandbox config");
                self.event(
                    None,
                    EventType::Warning,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {e}"),
                );
                return;
            }
        };
        let handler = match self.runtime_handler().await {
            Ok(h) => h,
            Err(e) => {
                warn!("FailedCreatePodSandBox: {e}");
                self.event(
                    None,
                    EventType::Warning,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {e}"),
                );
                return;
            }
        };
        let started = Instant::now();
        match self.ctx.cri.run_pod_sandbox(config, &handler).await {
            Ok(id) => {
                info!(sandbox.id = %id, attempt, runtime.handler = %handler, elapsed_ms = started.elapsed().as_millis() as u64, "sandbox running")
            }
            Err(e) => {
                warn!(error = %e, "FailedCreatePodSandBox: failed to create pod sandbox");
                self.event(
                    None,
                    EventType::Warning,
                    "FailedCreatePodSandBox",
                    format!("Failed to create pod sandbox: {e}"),
                );
            }
        }
    }

    /// The CRI runtime handler of the pod's RuntimeClass (the kubelet's LookupRuntimeHandler):
    /// empty without a runtimeClassName or without an API server (static pods standalone).
    async fn runtime_handler(&self) -> Result<String, String> {
        let name = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.runtime_class_name.as_deref())
            .unwrap_or_default();
        let Some(client) = self.ctx.api.as_ref().filter(|_| !name.is_empty()) else {
            return Ok(String::new());
        };
        let api: kube::Api<RuntimeClass> = kube::Api::all(client.clone());
        match api.get_opt(name).await {
            Ok(Some(rc)) => Ok(rc.handler),
            Ok(None) => Err(format!("runtimeclass.node.k8s.io {name:?} not found")),
            Err(e) => Err(format!("failed to lookup RuntimeClass {name}: {e}")),
        }
    }

    fn termination_log(&self, name: &str, restart_count: u32) -> PathBuf {
        self.ctx
            .dirs
            .pod_dir(&self.key().uid)
            .join("containers")
            .join(name)
            .join(restart_count.to_string())
    }

    fn spec_of(&self, name: &str, init: bool) -> Option<Container> {
        let spec = self.pod.spec.as_ref()?;
        if init {
            spec.init_containers
                .iter()
                .flatten()
                .find(|c| c.name == name)
                .cloned()
        } else {
            spec.containers.iter().find(|c| c.name == name).cloned()
        }
    }

    /// Creates and starts one container; false when it did not start (the reason is recorded).
    async fn start_container(&mut self, sandbox: &SandboxView, start: &StartContainer) -> bool {
        let Some(spec) = self.spec_of(&start.name, start.init) else {
            return false;
        };
        let span = info_span!("container", container.name = %start.name);
        let result = self
            .start_container_inner(sandbox, start, &spec)
            .instrument(span)
            .await;
        match result {
            Ok(()) => {
                self.waiting.remove(&start.name);
                true
            }
            Err(w) => {
                warn!(container.name = %start.name, reason = %w.reason, "{}", w.message);
                // A container killed for its postStart hook that will not run again shows its
                // termination, as the kubelet's status does.
                let final_exit = w.reason == "PostStartHookError"
                    && !is_restartable_init(&spec)
                    && RestartPolicy::of(&self.pod) == RestartPolicy::Never;
                if final_exit {
                    self.waiting.remove(&start.name);
                } else {
                    self.waiting.insert(start.name.clone(), w);
                }
                false
            }
        }
    }

    async fn start_container_inner(
        &mut self,
        sandbox: &SandboxView,
        start: &StartContainer,
        spec: &Container,
    ) -> Result<(), Waiting> {
        let waiting = |reason: &str, message: String| Waiting {
            reason: reason.into(),
            message,
        };
        let image = spec.image.clone().unwrap_or_default();
        let pull_key = &start.name;
        let now = Instant::now();
        if self.pulls.in_backoff(pull_key, now) {
            let msg = format!("Back-off pulling image {image:?}");
            self.event(Some(&start.name), EventType::Normal, "BackOff", msg.clone());
            return Err(waiting("ImagePullBackOff", msg));
        }
        let auths = self.pull_credentials(&image).await;
        let (pulled, took) = {
            let _permit = self.ctx.pulls.acquire().await;
            info!("Pulling: pulling image {image:?}");
            let t = Instant::now();
            let r = match auths {
                Ok(auths) => ensure_image(&self.ctx.cri, spec, &auths).await,
                Err(e) => Err(PullError::Pull(e)),
            };
            (r, t.elapsed())
        };
        self.start_sli.pulled(took);
        match pulled {
            Ok(_) => {
                self.pulls.reset(pull_key);
                self.event(
                    Some(&start.name),
                    EventType::Normal,
                    "Pulled",
                    format!("Container image {image:?} ready after {took:?}"),
                );
            }
            Err(e) => {
                if matches!(e, PullError::Pull(_)) {
                    self.pulls.next(pull_key, now);
                    self.event(
                        Some(&start.name),
                        EventType::Normal,
                        "Pulling",
                        format!("Pulling image {image:?}"),
                    );
                }
                self.event(
                    Some(&start.name),
                    EventType::Warning,
                    "Failed",
                    e.message().to_string(),
                );
                self.event(
                    Some(&start.name),
                    EventType::Warning,
                    "Failed",
                    format!("Error: {}", e.reason()),
                );
                return Err(waiting(e.reason(), e.message().to_string()));
            }
        }
        let key = self.key();
        let volumes = match self.volumes().await {
            Ok(v) => v,
            Err(e) => {
                warn!("FailedMount: {e}");
                self.event(None, EventType::Warning, "FailedMount", e.to_string());
                return Err(waiting("ContainerCreating", e.to_string()));
            }
        };
        let (config_maps, secrets) = self
            .env_objects(spec)
            .await
            .map_err(|e| waiting("CreateContainerConfigError", e))?;
        let service_env = self.service_env().await;
        let tlog = self.termination_log(&start.name, start.restart_count);
        if let Some(parent) = tlog.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(&tlog, b"").map_err(|e| {
            waiting(
                "CreateContainerError",
                format!("termination log {}: {e}", tlog.display()),
            )
        })?;
        let pod_ips = self.pod_ips(&sandbox.id).await;
        let etc_hosts = if hosts::should_mount(&self.pod, &pod_ips) {
            let name = PodHostname::of(&self.pod, &self.ctx.dirs.cluster_domain)
                .map_err(|e| waiting("CreateContainerConfigError", e.to_string()))?;
            let pod_dir = self.ctx.dirs.pod_dir(&key.uid);
            let mount = hosts::ensure(
                &self.pod,
                &pod_dir,
                &pod_ips,
                &name,
                Path::new(hosts::ETC_HOSTS),
            )
            .map_err(|e| {
                waiting(
                    "CreateContainerConfigError",
                    format!("cannot write the pod's hosts file: {e}"),
                )
            })?;
            Some(mount)
        } else {
            None
        };
        let ctx = ContainerContext {
            etc_hosts: etc_hosts.as_ref(),
            volumes: &volumes,
            pod_ip: pod_ips.first().map(String::as_str).unwrap_or_default(),
            host_ip: &self.ctx.host_ip,
            node_name: &self.ctx.node_name,
            termination_log: &tlog,
            memory_capacity: self.ctx.memory_capacity,
            config_maps: &config_maps,
            secrets: &secrets,
            service_env: &service_env,
        };
        let config = container_config(&self.pod, spec, start.restart_count, start.init, &ctx)
            .map_err(|e| waiting("CreateContainerConfigError", e.0))?;
        let log_path = self
            .ctx
            .dirs
            .pod_log_dir(&key.namespace, &key.name, &key.uid)
            .join(&config.log_path);
        let sandbox_config = sandbox_config(&self.pod, sandbox.attempt, &self.ctx.dirs)
            .map_err(|e| waiting("CreateContainerConfigError", e.to_string()))?;
        let id = self
            .ctx
            .cri
            .create_container(&sandbox.id, config, sandbox_config)
            .await
            .map_err(|e| waiting("CreateContainerError", e.to_string()))?;
        info!(container.id = %id, "Created: created container {}", start.name);
        self.event(
            Some(&start.name),
            EventType::Normal,
            "Created",
            format!("Created container: {}", start.name),
        );
        let link = self.ctx.dirs.container_logs_link_dir.join(format!(
            "{}_{}_{}-{}.log",
            key.name, key.namespace, start.name, id
        ));
        let _ = std::fs::create_dir_all(&self.ctx.dirs.container_logs_link_dir);
        let _ = std::fs::remove_file(&link);
        if let Err(e) = std::os::unix::fs::symlink(&log_path, &link) {
            warn!(error = %e, link = %link.display(), "cannot create the container log symlink");
        }
        self.ctx
            .cri
            .start_container(&id)
            .await
            .map_err(|e| waiting("RunContainerError", e.to_string()))?;
        info!(container.id = %id, "Started: started container {}", start.name);
        self.start_sli.container_started();
        self.event(
            Some(&start.name),
            EventType::Normal,
            "Started",
            format!("Started container {}", start.name),
        );
        self.post_start(&sandbox.id, &id, spec, start.restart_count)
            .await
            .map_err(|m| waiting("PostStartHookError", m))
    }

    /// The registry credentials for `image` from the pod's imagePullSecrets (the kubelet reads
    /// only the pod's list: the ServiceAccount admission copies the account's into it).
    async fn pull_credentials(
        &self,
        image: &str,
    ) -> Result<Vec<bosun_cri::types::AuthConfig>, String> {
        let refs = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.image_pull_secrets.clone())
            .unwrap_or_default();
        let Some(objects) = self.ctx.objects.as_ref().filter(|_| !refs.is_empty()) else {
            return Ok(vec![]);
        };
        let ns = self.key().namespace;
        let mut secrets = Vec::new();
        let mut failed = Vec::new();
        for r in refs.iter().filter(|r| !r.name.is_empty()) {
            match get_secret(objects, &ns, &r.name).await {
                Ok(Some(s)) => secrets.push(Secret::clone(&s)),
                Ok(None) | Err(_) => failed.push(r.name.clone()),
            }
        }
        if !failed.is_empty() {
            let msg = format!(
                "Unable to retrieve some image pull secrets ({}); attempting to pull the image may not succeed.",
                failed.join(", ")
            );
            warn!("FailedToRetrieveImagePullSecret: {msg}");
            self.event(
                None,
                EventType::Warning,
                "FailedToRetrieveImagePullSecret",
                msg,
            );
        }
        let ring = Keyring::from_secrets(&secrets)?;
        Ok(ring.lookup(image).iter().map(|c| c.to_cri()).collect())
    }

    /// Host paths of every volume of the pod, setting up (or refreshing) API-backed ones.
    async fn volumes(&mut self) -> Result<HashMap<String, String>, volume::VolumeError> {
        set_up_volumes(
            &self.ctx,
            &self.pod,
            &mut self.api_volumes,
            &mut self.volume_paths,
        )
        .await
    }

    /// The ConfigMaps and Secrets the container's env refers to (None where absent).
    async fn env_objects(&self, c: &Container) -> Result<(EnvObjects, EnvObjects), String> {
        let mut cms: EnvObjects = HashMap::new();
        let mut secrets: EnvObjects = HashMap::new();
        let Some(objects) = &self.ctx.objects else {
            return Ok((cms, secrets));
        };
        let ns = self.key().namespace;
        let mut cm_names: Vec<String> = Vec::new();
        let mut secret_names: Vec<String> = Vec::new();
        for e in c.env.iter().flatten().filter_map(|e| e.value_from.as_ref()) {
            cm_names.extend(e.config_map_key_ref.as_ref().map(|r| r.name.clone()));
            secret_names.extend(e.secret_key_ref.as_ref().map(|r| r.name.clone()));
        }
        for e in c.env_from.iter().flatten() {
            cm_names.extend(e.config_map_ref.as_ref().map(|r| r.name.clone()));
            secret_names.extend(e.secret_ref.as_ref().map(|r| r.name.clone()));
        }
        cm_names.sort();
        cm_names.dedup();
        secret_names.sort();
        secret_names.dedup();
        for name in cm_names {
            let obj = get_config_map(objects, &ns, &name).await?;
            cms.insert(name, obj.map(|o| o.data.clone().unwrap_or_default()));
        }
        for name in secret_names {
            let obj = get_secret(objects, &ns, &name).await?;
            let data = obj.map(|o| {
                o.data
                    .iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), String::from_utf8_lossy(&v.0).into_owned()))
                    .collect()
            });
            secrets.insert(name, data);
        }
        Ok((cms, secrets))
    }

    /// Service link variables: the master service's always, the namespace's services' unless
    /// enableServiceLinks is false.
    async fn service_env(&self) -> Vec<(String, String)> {
        let Some(client) = &self.ctx.api else {
            return vec![];
        };
        let links = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.enable_service_links)
            .unwrap_or(true);
        self.ctx
            .services
            .env(client, &self.key().namespace, links)
            .await
    }

    /// Records an event about this pod (or one of its containers); never waits.
    fn event(&self, container: Option<&str>, kind: EventType, reason: &str, message: String) {
        self.ctx
            .events
            .pod(&self.pod, container, kind, reason, message);
    }

    fn grace_period(&self, grace: Option<i64>) -> Duration {
        let g = grace
            .or_else(|| self.pod.metadata.deletion_grace_period_seconds)
            .or_else(|| {
                self.pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.termination_grace_period_seconds)
            })
            .unwrap_or(30);
        Duration::from_secs(g.max(0) as u64)
    }

    /// Stops every running container (in parallel, with the grace period) and the sandboxes.
    /// True when the pod has run longer than spec.activeDeadlineSeconds since its startTime.
    fn past_active_deadline(&self) -> bool {
        let Some(deadline) = self
            .pod
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
        else {
            return false;
        };
        let Some(start) = self
            .ctx
            .statuses
            .previous(&self.pod)
            .and_then(|s| s.start_time)
        else {
            return false;
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        now - start.0.as_second() >= deadline
    }

    /// Runs the container's preStop hook (exec or sleep) within `budget`; returns the time it took.
    async fn pre_stop(&self, c: &ContainerView, budget: Duration) -> Duration {
        let started = Instant::now();
        let Some(spec) = self
            .spec_of(&c.name, false)
            .or_else(|| self.spec_of(&c.name, true))
        else {
            return Duration::ZERO;
        };
        let Some(hook) = spec.lifecycle.as_ref().and_then(|l| l.pre_stop.as_ref()) else {
            return Duration::ZERO;
        };
        let pod_ip = self
            .sandbox_ips
            .get(&c.sandbox_id)
            .and_then(|ips| ips.first())
            .map(String::as_str)
            .unwrap_or_default();
        match lifecycle::run(&self.ctx.cri, &c.id, &spec, pod_ip, hook, budget).await {
            Ok(run) => self.http_fallback_event(&run),
            // As the kubelet: a hook cut short by the grace period is only logged.
            Err(e @ HookError::TimedOut(_)) => {
                info!(container.name = %c.name, "PreStop hook not completed in grace period: {e}")
            }
            Err(HookError::Failed(msg)) => {
                warn!(container.name = %c.name, "FailedPreStopHook: {msg}");
                self.event(Some(&c.name), EventType::Warning, "FailedPreStopHook", msg);
            }
        }
        started.elapsed()
    }

    /// The kubelet's LifecycleHTTPFallback event: an HTTPS hook answered in plain HTTP.
    fn http_fallback_event(&self, run: &lifecycle::HookRun) {
        if let Some(host) = &run.http_fallback {
            self.event(
                None,
                EventType::Warning,
                "LifecycleHTTPFallback",
                format!(
                    "request to HTTPS lifecycle hook {host} got HTTP response, retry with HTTP succeeded"
                ),
            );
        }
    }

    /// Runs the postStart hook of a container just started; on failure kills it as the kubelet
    /// does (FailedPostStartHook) and returns the message.
    async fn post_start(
        &self,
        sandbox_id: &str,
        id: &str,
        spec: &Container,
        restart_count: u32,
    ) -> Result<(), String> {
        let Some(hook) = spec.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
            return Ok(());
        };
        let pod_ip = self
            .sandbox_ips
            .get(sandbox_id)
            .and_then(|ips| ips.first())
            .map(String::as_str)
            .unwrap_or_default();
        // The kubelet waits for postStart without a limit; bosun bounds it so that a hung hook
        // cannot hold the pod's worker forever.
        let e = match lifecycle::run(&self.ctx.cri, id, spec, pod_ip, hook, POST_START_LIMIT).await
        {
            Ok(run) => {
                self.http_fallback_event(&run);
                return Ok(());
            }
            Err(e) => e,
        };
        warn!(container.id = %id, error = %e, "Failed to execute PostStartHook");
        // The hook's message may hold secrets: the event does not carry it.
        self.event(
            Some(&spec.name),
            EventType::Warning,
            "FailedPostStartHook",
            "PostStartHook failed".into(),
        );
        self.event(
            Some(&spec.name),
            EventType::Normal,
            "Killing",
            "FailedPostStartHook".into(),
        );
        let view = ContainerView {
            id: id.to_string(),
            name: spec.name.clone(),
            sandbox_id: sandbox_id.to_string(),
            state: RunState::Running,
            restart_count,
            exit_code: 0,
            started_at: 0,
            finished_at: 0,
            reason: String::new(),
            message: String::new(),
            image_ref: String::new(),
            created_at: 0,
        };
        let grace = self.grace_period(None);
        let left = grace.saturating_sub(self.pre_stop(&view, grace).await);
        let left = left.max(Duration::from_secs(2).min(grace));
        if let Err(e) = self.ctx.cri.stop_container(id, left).await
            && !e.is_not_found()
        {
            warn!(container.id = %id, error = %e, "stop container failed");
        }
        Err(e.to_string())
    }

    async fn kill(&self, obs: &Observed, grace: Option<i64>) {
        let grace = self.grace_period(grace);
        let cri = &self.ctx.cri;
        let live: Vec<&ContainerView> = obs
            .containers
            .iter()
            .filter(|c| {
                matches!(
                    c.state,
                    RunState::Running | RunState::Created | RunState::Unknown
                )
            })
            .collect();
        let ordering = TerminationOrdering::new(&self.pod, live.iter().map(|c| c.name.clone()));
        let ordering = &ordering;
        let stops = live.into_iter().map(|c| async move {
            info!(container.name = %c.name, "Killing: stopping container {}", c.name);
            self.event(
                Some(&c.name),
                EventType::Normal,
                "Killing",
                format!("Stopping container {}", c.name),
            );
            // preStop runs first, within the grace period; sidecars then wait for the app
            // containers and later sidecars; stop gets what is left (min 2 s, as the kubelet).
            let mut left = grace;
            if c.state == RunState::Running {
                left = left.saturating_sub(self.pre_stop(c, left).await);
            }
            left = left.saturating_sub(ordering.wait_for_turn(&c.name, left).await);
            let left = left.max(Duration::from_secs(2).min(grace));
            if let Err(e) = cri.stop_container(&c.id, left).await
                && !e.is_not_found()
            {
                warn!(container.name = %c.name, error = %e, "stop container failed");
            }
            ordering.terminated(&c.name);
        });
        futures::future::join_all(stops).await;
        for (id, ready) in &obs.sandbox_ids {
            if *ready
                && let Err(e) = cri.stop_pod_sandbox(id).await
                && !e.is_not_found()
            {
                warn!(sandbox.id = %id, error = %e, "stop sandbox failed");
            }
        }
    }

    async fn terminate(&mut self, grace: Option<i64>) {
        let key = self.key();
        info!("terminating pod");
        let obs = match self.observe().await {
            Ok(o) => o,
            Err(e) => {
                warn!(error = %e, "cannot list the pod's containers to stop them");
                return;
            }
        };
        self.kill(&obs, grace).await;
        for (id, _) in &obs.sandbox_ids {
            if let Err(e) = self.ctx.cri.remove_pod_sandbox(id).await
                && !e.is_not_found()
            {
                warn!(sandbox.id = %id, error = %e, "remove sandbox failed");
            }
        }
        if let Err(e) = self.ctx.cgroups.remove_pod(&self.pod) {
            warn!(error = %e, "cannot remove the pod cgroup; orphan cleanup retries");
        }
        let dirs = &self.ctx.dirs;
        if let Err(e) = volume::tear_down(&dirs.pod_dir(&key.uid)) {
            warn!(error = %e, "cannot remove the pod directory");
        }
        let _ = std::fs::remove_dir_all(dirs.pod_log_dir(&key.namespace, &key.name, &key.uid));
        let prefix = format!("{}_{}_", key.name, key.namespace);
        if let Ok(entries) = std::fs::read_dir(&dirs.container_logs_link_dir) {
            for e in entries.flatten() {
                if e.file_name().to_string_lossy().starts_with(&prefix) {
                    let _ = std::fs::remove_file(e.path());
                }
            }
        }
        self.ctx.statuses.remove(&key.uid);
        if let (Some(client), Some(_)) = (&self.ctx.api, &self.pod.metadata.deletion_timestamp) {
            // Everything is stopped: finish the graceful deletion, as the kubelet does.
            let api: kube::Api<Pod> = kube::Api::namespaced(client.clone(), &key.namespace);
            let dp = kube::api::DeleteParams {
                grace_period_seconds: Some(0),
                preconditions: Some(kube::api::Preconditions {
                    uid: Some(key.uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            match api.delete(&key.name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => warn!(error = %e, "cannot delete the terminated pod from the API"),
            }
        }
        info!("pod removed");
    }
}

/// ConfigMap or Secret data by object name; None where the object does not exist.
type EnvObjects = HashMap<String, Option<std::collections::BTreeMap<String, String>>>;

/// Host paths of every volume of `pod`, setting up (or refreshing, when due) the API-backed ones
/// and remembering their paths in `known`.
async fn set_up_volumes(
    ctx: &NodeContext,
    pod: &Pod,
    api_volumes: &mut ApiVolumes,
    known: &mut Option<HashMap<String, String>>,
) -> Result<HashMap<String, String>, volume::VolumeError> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let dir = ctx.dirs.pod_dir(uid);
    let mut paths = volume::set_up(pod, &dir)?;
    if let (Some(client), Some(objects)) = (&ctx.api, &ctx.objects) {
        if known.is_none() || api_volumes.due() {
            let api_paths = api_volumes.set_up(client, objects, pod, &dir).await?;
            paths.extend(api_paths);
            *known = Some(paths.clone());
        } else if let Some(known) = known.as_ref() {
            paths.extend(known.clone());
        }
    } else if pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .any(volume::api::is_api_volume)
    {
        return Err(volume::VolumeError {
            volume: "*".into(),
            reason: "configMap, secret and projected volumes need an API server".into(),
        });
    } else {
        *known = Some(paths.clone());
    }
    Ok(paths)
}

fn read_termination_message(path: &std::path::Path) -> String {
    let mut text = std::fs::read(path).unwrap_or_default();
    text.truncate(4096);
    String::from_utf8_lossy(&text).into_owned()
}
