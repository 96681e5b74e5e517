//! Starting one container, step by step as the kubelet's startContainer: pull the image, build
//! its config, create it, start it, run its postStart hook. Each step that fails says why with
//! the kubelet's Waiting reason ([`StartError::reason`]). The pod worker's side: the plan's
//! containers started in order (ephemeral ones first, in their target's process namespace),
//! each step's failure kept as the container's Waiting reason.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bosun_cri::types::{ContainerConfig, Mount, PodSandboxConfig};
use k8s_openapi::api::core::v1::{Container, Pod};
use tracing::{Instrument, info, info_span, warn};

use super::context::NodeContext;
use super::image::{PullError, image_present, pull_image};
use super::inputs::{env_objects, pull_credentials, service_env};
use super::lifecycle;
use super::observe::{Observed, termination_log};
use super::plan::{
    ContainerView, PodActions, RunState, SandboxView, StartContainer, container_spec,
    ephemeral_spec, is_restartable_init, restarts_when_killed,
};
use super::runtime::PodRuntime;
use super::teardown;
use super::worker::PodWorker;
use crate::backoff::KeyedBackoff;
use crate::events::EventType;
use crate::metrics::PodStartTracker;
use crate::runtime::container::{ContainerContext, container_config};
use crate::runtime::hostname::PodHostname;
use crate::runtime::hosts;
use crate::runtime::sandbox::{PodKey, sandbox_config};
use crate::runtime::security_context::SecurityInputs;
use crate::status::Waiting;

/// Longest a postStart hook may run (the kubelet has no limit).
pub const POST_START_LIMIT: Duration = Duration::from_secs(120);

/// Why a container did not start; each variant is one of the kubelet's Waiting reasons.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartError {
    /// The image pull is backing off after a failure (ImagePullBackOff).
    #[error("Back-off pulling image {0:?}")]
    PullBackOff(String),
    /// The image is not there: ErrImagePull, ErrImageNeverPull or InvalidImageName.
    #[error("{}", .0.message())]
    Pull(PullError),
    /// The pod's volumes are not set up yet (ContainerCreating).
    #[error("{0}")]
    Volumes(String),
    /// The container's config cannot be built: a missing ConfigMap key, a bad hostname
    /// (CreateContainerConfigError).
    #[error("{0}")]
    Config(String),
    /// The runtime refused to create it (CreateContainerError).
    #[error("{0}")]
    Create(String),
    /// The runtime refused to start it (RunContainerError).
    #[error("{0}")]
    Run(String),
    /// Its postStart hook failed and it was killed (PostStartHookError).
    #[error("{0}")]
    PostStart(String),
}

impl StartError {
    /// The container's Waiting reason, as the kubelet reports it.
    pub fn reason(&self) -> &'static str {
        match self {
            StartError::PullBackOff(_) => "ImagePullBackOff",
            StartError::Pull(e) => e.reason(),
            StartError::Volumes(_) => "ContainerCreating",
            StartError::Config(_) => "CreateContainerConfigError",
            StartError::Create(_) => "CreateContainerError",
            StartError::Run(_) => "RunContainerError",
            StartError::PostStart(_) => "PostStartHookError",
        }
    }

    /// The Waiting state the pod's status shows for it.
    pub fn waiting(&self) -> Waiting {
        Waiting {
            reason: self.reason().into(),
            message: self.to_string(),
        }
    }
}

/// One container to start and what it starts with.
pub struct Start<'a, R> {
    /// The node's shared context.
    pub ctx: &'a NodeContext<R>,
    /// The pod.
    pub pod: &'a Pod,
    /// The ready sandbox it runs in.
    pub sandbox: &'a SandboxView,
    /// Which container, and its restart count.
    pub start: &'a StartContainer,
    /// Its spec.
    pub spec: &'a Container,
    /// For an ephemeral container: the CRI id of the container whose process namespace it
    /// targets.
    pub pid_target: Option<&'a str>,
}

impl<R: PodRuntime> Start<'_, R> {
    fn event(&self, kind: EventType, reason: &str, message: String) {
        let name = Some(self.start.name.as_str());
        self.ctx.events.pod(self.pod, name, kind, reason, message);
    }

    /// Makes sure the image is there by its pull policy, through the pull back-off `pulls` (by
    /// container name) and the node's pull limit; the time it took goes to `sli`.
    pub async fn pull(
        &self,
        pulls: &mut KeyedBackoff,
        sli: &mut PodStartTracker,
    ) -> Result<(), StartError> {
        let name = self.start.name.as_str();
        self.ensure_image(self.spec, name, Some(name), pulls, sli)
            .await
            .map(|_| ())
    }

    /// The image volumes this container mounts, pulled by their pull policy as the kubelet's
    /// getImageVolumes (events about the pod, a back-off per volume): the image ref the runtime
    /// mounts, by volume name. A runtime that cannot mount images is a config error saying so.
    pub async fn pull_image_volumes(
        &self,
        pulls: &mut KeyedBackoff,
        sli: &mut PodStartTracker,
    ) -> Result<HashMap<String, String>, StartError> {
        let mounted: Vec<&str> = self
            .spec
            .volume_mounts
            .iter()
            .flatten()
            .map(|m| m.name.as_str())
            .collect();
        let mut out = HashMap::new();
        for v in self
            .pod
            .spec
            .iter()
            .flat_map(|s| s.volumes.iter().flatten())
        {
            let Some(source) = v
                .image
                .as_ref()
                .filter(|_| mounted.contains(&v.name.as_str()))
            else {
                continue;
            };
            if let Err(why) = &self.ctx.image_volumes {
                let msg = format!("image volume {:?}: {why}", v.name);
                self.event(EventType::Warning, "Failed", format!("Error: {msg}"));
                return Err(StartError::Config(msg));
            }
            let image = Container {
                name: v.name.clone(),
                image: source.reference.clone(),
                image_pull_policy: source.pull_policy.clone(),
                ..Default::default()
            };
            let key = format!("{} (image volume)", v.name);
            let image_ref = self.ensure_image(&image, &key, None, pulls, sli).await?;
            out.insert(v.name.clone(), image_ref);
        }
        Ok(out)
    }

    /// Makes sure `spec`'s image is there: the pull back-off under `key`, events on the
    /// container `field` (None: the pod); the image's ref.
    async fn ensure_image(
        &self,
        spec: &Container,
        key: &str,
        field: Option<&str>,
        pulls: &mut KeyedBackoff,
        sli: &mut PodStartTracker,
    ) -> Result<String, StartError> {
        let event = |kind, reason: &str, message: String| {
            self.ctx.events.pod(self.pod, field, kind, reason, message);
        };
        let image = spec.image.clone().unwrap_or_default();
        let now = Instant::now();
        if pulls.in_backoff(key, now) {
            let e = StartError::PullBackOff(image);
            event(EventType::Normal, "BackOff", e.to_string());
            return Err(e);
        }
        // Present and usable by its policy: no pull, not behind the node's pull limit.
        let present = match image_present(&self.ctx.cri, spec).await {
            Ok(p) => p,
            Err(e) => return Err(self.pull_failed(pulls, key, field, now, e)),
        };
        if let Some(id) = present {
            sli.pulled(Duration::ZERO);
            pulls.reset(key);
            // The kubelet's text with KubeletEnsureSecretPulledImages on (its default).
            let msg = format!(
                "Container image {image:?} already present on machine and can be accessed by the pod"
            );
            event(EventType::Normal, "Pulled", msg);
            return Ok(id);
        }
        let auths = pull_credentials(self.ctx, self.pod, &image).await;
        let waiting = Instant::now();
        let _permit = self.ctx.pulls.acquire().await;
        info!("Pulling: pulling image {image:?}");
        event(
            EventType::Normal,
            "Pulling",
            format!("Pulling image {image:?}"),
        );
        let t = Instant::now();
        let pulled = match auths {
            Ok(auths) => pull_image(&self.ctx.cri, &image, &auths).await,
            Err(e) => Err(PullError::Pull(e)),
        };
        let took = t.elapsed();
        sli.pulled(took);
        match pulled {
            Ok((id, size)) => {
                pulls.reset(key);
                let ms = |d: Duration| Duration::from_millis(d.as_millis() as u64);
                let msg = format!(
                    "Successfully pulled image {image:?} in {} ({} including waiting). Image size: {size} bytes.",
                    crate::config::duration::format(ms(took)),
                    crate::config::duration::format(ms(waiting.elapsed()))
                );
                event(EventType::Normal, "Pulled", msg);
                Ok(id)
            }
            Err(e) => Err(self.pull_failed(pulls, key, field, now, e)),
        }
    }

    /// A failed pull: the next one backs off (a failed pull, not a refused name or policy), and
    /// the kubelet's Failed events.
    fn pull_failed(
        &self,
        pulls: &mut KeyedBackoff,
        key: &str,
        field: Option<&str>,
        now: Instant,
        e: PullError,
    ) -> StartError {
        if matches!(e, PullError::Pull(_)) {
            pulls.next(key, now);
        }
        let events = &self.ctx.events;
        let message = e.message().to_string();
        events.pod(self.pod, field, EventType::Warning, "Failed", message);
        let msg = format!("Error: {}", e.reason());
        events.pod(self.pod, field, EventType::Warning, "Failed", msg);
        StartError::Pull(e)
    }

    /// The container's CRI config and its sandbox's, and the log file it writes: env read from
    /// the API, runAsNonRoot verified against the image's user, the termination log made
    /// empty, the pod's managed /etc/hosts written. A config that cannot be made gets the
    /// kubelet's Failed event ("Error: ...").
    pub async fn config(
        &self,
        volumes: &HashMap<String, String>,
        image_volumes: &HashMap<String, String>,
        pod_ips: &[String],
    ) -> Result<(ContainerConfig, PodSandboxConfig, PathBuf), StartError> {
        let r = self.make_config(volumes, image_volumes, pod_ips).await;
        if let Err(StartError::Config(msg)) = &r {
            self.event(EventType::Warning, "Failed", format!("Error: {msg}"));
        }
        r
    }

    async fn make_config(
        &self,
        volumes: &HashMap<String, String>,
        image_volumes: &HashMap<String, String>,
        pod_ips: &[String],
    ) -> Result<(ContainerConfig, PodSandboxConfig, PathBuf), StartError> {
        let (ctx, pod, spec) = (self.ctx, self.pod, self.spec);
        let key = PodKey::of(pod);
        let (config_maps, secrets) = env_objects(ctx, pod, spec)
            .await
            .map_err(StartError::Config)?;
        let image_user = self.image_user().await?;
        self.verify_run_as_non_root(&image_user)?;
        let service_env = service_env(ctx, pod).await;
        let pod_dir = ctx.dirs.pod_dir(&key.uid);
        let tlog = termination_log(&pod_dir, &self.start.name, self.start.restart_count);
        if let Some(parent) = tlog.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(&tlog, b"")
            .map_err(|e| StartError::Create(format!("termination log {}: {e}", tlog.display())))?;
        let etc_hosts = self.etc_hosts(&pod_dir, pod_ips)?;
        let subpaths_dir = pod_dir.join("volume-subpaths");
        let cctx = ContainerContext {
            etc_hosts: etc_hosts.as_ref(),
            volumes,
            image_volumes,
            subpaths_dir: &subpaths_dir,
            pod_ip: pod_ips.first().map(String::as_str).unwrap_or_default(),
            host_ip: &ctx.host_ip,
            node_name: &ctx.node_name,
            termination_log: &tlog,
            memory_capacity: ctx.memory_capacity,
            allocatable: &ctx.allocatable,
            config_maps: &config_maps,
            secrets: &secrets,
            service_env: &service_env,
            pid_target: self.pid_target,
            security: SecurityInputs {
                seccomp_default: ctx.seccomp_default,
                seccomp_root: &ctx.seccomp_root,
                image_uid: image_user.0,
                image_username: &image_user.1,
            },
        };
        let (restarts, init) = (self.start.restart_count, self.start.init);
        let mut config = container_config(pod, spec, restarts, init, &cctx)
            .map_err(|e| StartError::Config(e.0))?;
        ctx.devices
            .run_options(&key.uid, &spec.name, &mut config)
            .await
            .map_err(StartError::Config)?;
        let log_path = ctx
            .dirs
            .pod_log_dir(&key.namespace, &key.name, &key.uid)
            .join(&config.log_path);
        let sandbox_config = sandbox_config(pod, self.sandbox.attempt, &ctx.dirs)
            .map_err(|e| StartError::Config(e.to_string()))?;
        Ok((config, sandbox_config, log_path))
    }

    /// The image's user as the kubelet's getImageUser (CRI ImageStatus): its numeric uid, else
    /// its user name; an image naming neither runs as root (uid 0).
    async fn image_user(&self) -> Result<(Option<i64>, String), StartError> {
        let image = self.spec.image.as_deref().unwrap_or_default();
        let status = self
            .ctx
            .cri
            .image_status(image)
            .await
            .map_err(|e| StartError::Config(e.to_string()))?;
        let uid = status
            .as_ref()
            .and_then(|i| i.uid.as_ref())
            .map(|u| u.value);
        let username = status.map(|i| i.username).unwrap_or_default();
        Ok(match (uid, username) {
            (Some(u), _) => (Some(u), String::new()),
            (None, name) if !name.is_empty() => (None, name),
            (None, _) => (Some(0), String::new()),
        })
    }

    /// The kubelet's verifyRunAsNonRoot: with runAsNonRoot, the effective runAsUser must not
    /// be 0, and without one the image's user must be numeric and not root.
    fn verify_run_as_non_root(&self, image_user: &(Option<i64>, String)) -> Result<(), StartError> {
        let (pod, spec) = (self.pod, self.spec);
        let pod_sc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
        let sc = spec.security_context.as_ref();
        let non_root = sc
            .and_then(|s| s.run_as_non_root)
            .or(pod_sc.and_then(|s| s.run_as_non_root));
        if non_root != Some(true) {
            return Ok(());
        }
        let key = PodKey::of(pod);
        let who = format!(
            "(pod: \"{}_{}({})\", container: {})",
            key.name, key.namespace, key.uid, spec.name
        );
        let run_as = sc
            .and_then(|s| s.run_as_user)
            .or(pod_sc.and_then(|s| s.run_as_user));
        if let Some(uid) = run_as {
            return match uid {
                0 => Err(StartError::Config(format!(
                    "container's runAsUser breaks non-root policy {who}"
                ))),
                _ => Ok(()),
            };
        }
        match image_user {
            (None, username) => Err(StartError::Config(format!(
                "container has runAsNonRoot and image has non-numeric user ({username}), \
                 cannot verify user is non-root {who}"
            ))),
            (Some(0), _) => Err(StartError::Config(format!(
                "container has runAsNonRoot and image will run as root {who}"
            ))),
            (Some(u), _) if *u < 0 || *u > i64::from(i32::MAX) => Err(StartError::Config(format!(
                "container has runAsNonRoot and image has an invalid user id ({u}). \
                     (Must be 1-({})): must be between 0 and 2147483647, inclusive {who}",
                i32::MAX
            ))),
            _ => Ok(()),
        }
    }

    /// The pod's managed /etc/hosts mount, when the container gets one.
    fn etc_hosts(&self, pod_dir: &Path, pod_ips: &[String]) -> Result<Option<Mount>, StartError> {
        if !hosts::should_mount(self.pod, pod_ips) {
            return Ok(None);
        }
        let name = PodHostname::of(self.pod, &self.ctx.dirs.cluster_domain)
            .map_err(|e| StartError::Config(e.to_string()))?;
        let etc = Path::new(hosts::ETC_HOSTS);
        let mount = hosts::ensure(self.pod, pod_dir, pod_ips, &name, etc)
            .map_err(|e| StartError::Config(format!("cannot write the pod's hosts file: {e}")))?;
        Ok(Some(mount))
    }

    /// Creates the container, links its log under /var/log/containers and starts it; returns
    /// its ID.
    pub async fn create_and_start(
        &self,
        config: ContainerConfig,
        sandbox_config: PodSandboxConfig,
        log_path: &Path,
    ) -> Result<String, StartError> {
        let (ctx, name) = (self.ctx, &self.start.name);
        let id = ctx
            .cri
            .create_container(&self.sandbox.id, config, sandbox_config)
            .await
            .map_err(|e| StartError::Create(e.to_string()))?;
        info!(container.id = %id, "Created: created container {name}");
        // What it runs with, for an in-place resize to compare against.
        ctx.allocations.set_actuated(
            self.pod.metadata.uid.as_deref().unwrap_or_default(),
            name,
            &id,
            self.spec.resources.clone().unwrap_or_default(),
        );
        self.event(
            EventType::Normal,
            "Created",
            format!("Created container: {name}"),
        );
        let key = PodKey::of(self.pod);
        let link = ctx.dirs.container_logs_link_dir.join(format!(
            "{}_{}_{}-{}.log",
            key.name, key.namespace, name, id
        ));
        let _ = std::fs::create_dir_all(&ctx.dirs.container_logs_link_dir);
        let _ = std::fs::remove_file(&link);
        if let Err(e) = std::os::unix::fs::symlink(log_path, &link) {
            warn!(error = %e, link = %link.display(), "cannot create the container log symlink");
        }
        ctx.cri
            .start_container(&id)
            .await
            .map_err(|e| StartError::Run(e.to_string()))?;
        info!(container.id = %id, "Started: started container {name}");
        self.event(
            EventType::Normal,
            "Started",
            format!("Started container {name}"),
        );
        Ok(id)
    }

    /// Runs the postStart hook of container `id`, just started, with `pod_ip` for HTTP hooks; on
    /// failure kills it as the kubelet does (FailedPostStartHook).
    pub async fn post_start(&self, id: &str, pod_ip: &str) -> Result<(), StartError> {
        let spec = self.spec;
        let Some(hook) = spec.lifecycle.as_ref().and_then(|l| l.post_start.as_ref()) else {
            return Ok(());
        };
        // The kubelet waits for postStart without a limit; bosun bounds it so that a hung hook
        // cannot hold the pod's worker forever.
        let run = lifecycle::run(&self.ctx.cri, id, spec, pod_ip, hook, POST_START_LIMIT).await;
        let e = match run {
            Ok(run) => {
                teardown::http_fallback_event(self.ctx, self.pod, &run);
                return Ok(());
            }
            Err(e) => e,
        };
        warn!(container.id = %id, error = %e, "Failed to execute PostStartHook");
        // The hook's message may hold secrets: the event does not carry it.
        let msg = "PostStartHook failed".to_string();
        self.event(EventType::Warning, "FailedPostStartHook", msg);
        let msg = "FailedPostStartHook".to_string();
        self.event(EventType::Normal, "Killing", msg);
        let view = ContainerView {
            id: id.to_string(),
            name: spec.name.clone(),
            sandbox_id: self.sandbox.id.clone(),
            state: RunState::Running,
            restart_count: self.start.restart_count,
            exit_code: 0,
            started_at: 0,
            finished_at: 0,
            reason: String::new(),
            message: String::new(),
            image_ref: String::new(),
            image: String::new(),
            created_at: 0,
            spec_hash: None,
        };
        teardown::stop_container(self.ctx, self.pod, &view, pod_ip, None).await;
        Err(StartError::PostStart(e.to_string()))
    }
}

impl<R: PodRuntime> PodWorker<R> {
    /// Starts the plan's containers in the ready sandbox, in order; returns those that started.
    pub(super) async fn start_containers(
        &mut self,
        obs: &Observed,
        actions: &PodActions,
        now: Instant,
    ) -> Vec<String> {
        let running: Vec<&str> = obs
            .containers
            .iter()
            .filter(|c| c.state == RunState::Running)
            .map(|c| c.name.as_str())
            .collect();
        self.waiting
            .retain(|name, _| !running.contains(&name.as_str()));
        let mut started_now = Vec::new();
        let Some(sb) = obs.sandbox.as_ref().filter(|s| s.ready) else {
            return started_now;
        };
        // As the kubelet's SyncPod: ephemeral containers first, so a debug container runs even
        // while an init container fails.
        if !actions.kill_pod {
            for name in &actions.ephemeral {
                if self.start_ephemeral(sb, obs, name).await {
                    started_now.push(name.clone());
                }
            }
        }
        for start in &actions.start {
            if start.restart_count > 0 {
                self.backoff.next(&start.name, now);
            }
            let started = self.start_container(sb, start).await;
            if started {
                started_now.push(start.name.clone());
            }
            // As the kubelet's SyncPod: a regular init container that failed to start holds
            // back everything after it; a sidecar that failed does not.
            if !started
                && start.init
                && !container_spec(&self.pod, &start.name, true).is_some_and(is_restartable_init)
            {
                break;
            }
        }
        started_now
    }

    /// Creates and starts one container; false when it did not start (the reason is recorded).
    pub(super) async fn start_container(
        &mut self,
        sandbox: &SandboxView,
        start: &StartContainer,
    ) -> bool {
        let pod = self.pod.clone();
        let Some(spec) = container_spec(&pod, &start.name, start.init) else {
            return false;
        };
        self.start_spec(sandbox, start, spec, None).await
    }

    /// Starts the pod's ephemeral container `name` (never restarted, so its restart count is
    /// 0), in the process namespace of its target container if it names one; false when it did
    /// not start (the reason is recorded, and the next sync tries again, as the kubelet's).
    pub(super) async fn start_ephemeral(
        &mut self,
        sandbox: &SandboxView,
        obs: &Observed,
        name: &str,
    ) -> bool {
        let pod = self.pod.clone();
        let Some((spec, target)) = ephemeral_spec(&pod, name) else {
            return false;
        };
        let start = StartContainer {
            name: name.to_string(),
            init: false,
            restart_count: 0,
        };
        let target_id = match target {
            None => None,
            Some(t) => match obs.containers.iter().find(|c| c.name == t) {
                Some(c) => Some(c.id.clone()),
                None => {
                    let msg = format!("unable to find target container {t}");
                    warn!(container.name = %name, "CreateContainerConfigError: {msg}");
                    let event = format!("Error: {msg}");
                    self.event(Some(name), EventType::Warning, "Failed", event);
                    let e = StartError::Config(msg);
                    self.waiting.insert(name.to_string(), e.waiting());
                    return false;
                }
            },
        };
        self.start_spec(sandbox, &start, &spec, target_id.as_deref())
            .await
    }

    /// Creates and starts the container `start` with `spec`; false when it did not start.
    pub(super) async fn start_spec(
        &mut self,
        sandbox: &SandboxView,
        start: &StartContainer,
        spec: &Container,
        pid_target: Option<&str>,
    ) -> bool {
        let pod = self.pod.clone();
        let span = info_span!("container", container.name = %start.name);
        let step = Start {
            ctx: &self.ctx.clone(),
            pod: &pod,
            sandbox,
            start,
            spec,
            pid_target,
        };
        match self.start_steps(&step).instrument(span).await {
            Ok(()) => {
                self.waiting.remove(&start.name);
                true
            }
            Err(e) => {
                warn!(container.name = %start.name, reason = %e.reason(), "{e}");
                // A container killed for its postStart hook that will not run again shows its
                // termination, as the kubelet's status does.
                let final_exit = matches!(e, StartError::PostStart(_))
                    && !is_restartable_init(spec)
                    && !restarts_when_killed(&pod, spec);
                if final_exit {
                    self.waiting.remove(&start.name);
                } else {
                    self.waiting.insert(start.name.clone(), e.waiting());
                }
                false
            }
        }
    }

    /// Pull, volumes, config, create, start, postStart.
    pub(super) async fn start_steps(&mut self, step: &Start<'_, R>) -> Result<(), StartError> {
        step.pull(&mut self.pulls, &mut self.start_sli).await?;
        let image_volumes = step
            .pull_image_volumes(&mut self.pulls, &mut self.start_sli)
            .await?;
        let volumes = self.volumes().await;
        self.volume_retry = match volumes {
            Ok(_) => None,
            Err(_) => Some(super::worker::next_volume_retry(self.volume_retry)),
        };
        let volumes = volumes.map_err(|e| {
            warn!("FailedMount: {e}");
            self.event(None, EventType::Warning, "FailedMount", e.to_string());
            StartError::Volumes(e.to_string())
        })?;
        let pod_ips = self.pod_ips(&step.sandbox.id).await;
        let (config, sandbox_config, log_path) =
            step.config(&volumes, &image_volumes, &pod_ips).await?;
        let id = step
            .create_and_start(config, sandbox_config, &log_path)
            .await?;
        self.start_sli.container_started();
        step.post_start(&id, self.hook_ip(&step.sandbox.id)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_failure_carries_the_kubelets_reason_and_message() {
        let cases = [
            (
                StartError::PullBackOff("busybox:1".into()),
                "ImagePullBackOff",
                "Back-off pulling image \"busybox:1\"",
            ),
            (
                StartError::Pull(PullError::Pull("denied".into())),
                "ErrImagePull",
                "denied",
            ),
            (
                StartError::Pull(PullError::NeverPull("absent".into())),
                "ErrImageNeverPull",
                "absent",
            ),
            (
                StartError::Pull(PullError::InvalidImageName("bad".into())),
                "InvalidImageName",
                "bad",
            ),
            (
                StartError::Volumes("no cm".into()),
                "ContainerCreating",
                "no cm",
            ),
            (
                StartError::Config("configmap \"x\" not found".into()),
                "CreateContainerConfigError",
                "configmap \"x\" not found",
            ),
            (
                StartError::Create("exists".into()),
                "CreateContainerError",
                "exists",
            ),
            (
                StartError::Run("exec failed".into()),
                "RunContainerError",
                "exec failed",
            ),
            (
                StartError::PostStart("exit 1".into()),
                "PostStartHookError",
                "exit 1",
            ),
        ];
        for (e, reason, message) in cases {
            let w = e.waiting();
            assert_eq!(
                (w.reason.as_str(), w.message.as_str()),
                (reason, message),
                "{e:?}"
            );
        }
    }
}
