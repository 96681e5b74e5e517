//! The prober (the kubelet's prober manager): liveness, readiness and startup probes of every
//! running container on the node, run by ONE scheduler task ([`scheduler`]) that fires each
//! probe at its period (first one jittered), runs the handlers ([`exec`], [`http`], [`tcp`],
//! [`grpc`]) with bounded concurrency and a deadline each, counts results against the thresholds
//! ([`state`]) and publishes them in a results cache the pod workers read; a changed result wakes
//! the pod's worker, which recomputes `ready`/`started` ([`Prober::container_status`]) and kills a
//! container that failed its liveness or startup probe.

pub mod exec;
pub mod grpc;
pub mod http;
pub mod scheduler;
pub mod spec;
pub mod state;
pub mod tcp;
pub mod tls;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, PodStatus};
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

pub use spec::{Handler, ProbeSpec, ProbeType};
pub use state::Outcome;

/// A container adopted at start (running since before the prober started, less this) keeps
/// the readiness its pod had until probed (the kubelet's kubeletRestartGracePeriod).
pub const RESTART_GRACE: Duration = Duration::from_secs(10);

/// What one probe run found (the kubelet's probe.Result with its output).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProbeResult {
    /// Passed; the handler's output.
    Success(String),
    /// Passed with a warning (an HTTP redirect not followed): a ProbeWarning event.
    Warning(String),
    /// Failed; the message of the Unhealthy event.
    Failure(String),
    /// The probe could not run (the kubelet's prober error): the result is thrown away.
    Error(String),
}

/// One probe run: the probe and where it goes.
#[derive(Debug, Clone)]
pub struct ProbeRequest {
    /// The probe.
    pub spec: Arc<ProbeSpec>,
    /// The container's spec (named ports).
    pub container: Arc<Container>,
    /// CRI id of the container instance.
    pub container_id: Arc<str>,
    /// The pod's IP (the host of httpGet, tcpSocket and grpc without one).
    pub pod_ip: Arc<str>,
}

/// A boxed probe future.
pub type ProbeFuture = Pin<Box<dyn Future<Output = ProbeResult> + Send>>;

/// Runs probe handlers: the seam the scheduler's tests replace.
pub trait Runner: Send + Sync + 'static {
    /// Runs `req` (the scheduler bounds it by the probe's timeout).
    fn run(&self, req: ProbeRequest) -> ProbeFuture;
}

/// The real handlers: CRI ExecSync, one shared HTTP client, TCP connect, gRPC health.
pub struct Handlers {
    cri: bosun_cri::CriClient,
    http: http::HttpProber,
}

impl Handlers {
    /// Handlers calling `cri` for exec probes.
    pub fn new(cri: bosun_cri::CriClient) -> Self {
        Handlers {
            cri,
            http: http::HttpProber::new(),
        }
    }
}

impl Runner for Handlers {
    fn run(&self, req: ProbeRequest) -> ProbeFuture {
        let timeout = req.spec.timeout;
        let (cri, http) = (self.cri.clone(), self.http.clone());
        Box::pin(async move {
            match &req.spec.handler {
                Handler::Exec(cmd) => exec::probe(&cri, &req.container_id, cmd, timeout).await,
                Handler::Http(get) => http.probe(get, &req.container, &req.pod_ip, timeout).await,
                Handler::Tcp { host, port } => {
                    let host: &str = if host.is_empty() { &req.pod_ip } else { host };
                    match crate::prober::http::resolve_port(port, &req.container) {
                        Ok(port) => tcp::probe(host, port, timeout).await,
                        Err(e) => ProbeResult::Error(e),
                    }
                }
                Handler::Grpc { port, service } => {
                    grpc::probe(&req.pod_ip, *port, service, timeout).await
                }
                Handler::Missing => {
                    ProbeResult::Error(format!("missing probe handler for {}", req.container.name))
                }
            }
        })
    }
}

/// A running container of a pod, as the pod worker tells the prober.
#[derive(Debug, Clone)]
pub struct RunningContainer {
    /// Spec name.
    pub name: String,
    /// CRI id.
    pub id: String,
    /// How long it has run (now minus its startedAt).
    pub running_for: Duration,
    /// The previous status of this very instance said `started: true` (an adopted container
    /// that passed its startup probe before the agent restarted).
    pub started_before: bool,
}

/// A pod's probe targets: its running containers and whom to wake on a changed result.
pub struct PodProbes {
    /// The pod.
    pub pod: Arc<Pod>,
    /// Its IP.
    pub pod_ip: String,
    /// Containers (and sidecars) running now; any other probe of the pod stops.
    pub running: Vec<RunningContainer>,
    /// The pod worker's wake-up.
    pub wake: Arc<Notify>,
}

pub use crate::status::ProbeStatus;

/// The results cache: the last published result of each probe, by container id.
#[derive(Default)]
pub struct Results {
    inner: Mutex<HashMap<String, [Option<Outcome>; 3]>>,
}

fn slot(kind: ProbeType) -> usize {
    match kind {
        ProbeType::Readiness => 0,
        ProbeType::Liveness => 1,
        ProbeType::Startup => 2,
    }
}

impl Results {
    /// The result of `kind` for container `id`.
    pub fn get(&self, id: &str, kind: ProbeType) -> Option<Outcome> {
        let map = self.inner.lock().ok()?;
        map.get(id).and_then(|r| r[slot(kind)])
    }

    /// Publishes a result; true when it changed.
    pub fn set(&self, id: &str, kind: ProbeType, v: Option<Outcome>) -> bool {
        let Ok(mut map) = self.inner.lock() else {
            return false;
        };
        let e = map.entry(id.to_string()).or_default();
        let changed = e[slot(kind)] != v;
        e[slot(kind)] = v;
        if e.iter().all(Option::is_none) {
            map.remove(id);
        }
        changed
    }
}

/// What the pod workers ask of the scheduler.
pub enum Command {
    /// The pod's running containers now.
    Sync(PodProbes),
    /// The pod is gone.
    Remove(String),
}

/// The node's prober; cheap to clone.
#[derive(Clone)]
pub struct Prober {
    tx: mpsc::UnboundedSender<Command>,
    results: Arc<Results>,
    /// When the prober started (adopted containers ran before it).
    started: std::time::SystemTime,
}

impl Prober {
    /// Starts the scheduler as a task of the current runtime (stopped by `cancel`), running
    /// probes through `runner` and recording Unhealthy and ProbeWarning events with `events`.
    pub fn spawn(
        runner: Arc<dyn Runner>,
        events: crate::events::Recorder,
        cancel: CancellationToken,
    ) -> Prober {
        let (tx, rx) = mpsc::unbounded_channel();
        let results = Arc::new(Results::default());
        let sched = scheduler::Scheduler::new(runner, events, results.clone());
        tokio::spawn(sched.run(rx, cancel));
        Prober {
            tx,
            results,
            started: std::time::SystemTime::now(),
        }
    }

    /// Tells the prober which of the pod's containers run now: probes start for new instances
    /// and stop for instances that are gone.
    pub fn sync_pod(&self, probes: PodProbes) {
        let _ = self.tx.send(Command::Sync(probes));
    }

    /// Stops every probe of the pod.
    pub fn remove_pod(&self, uid: &str) {
        let _ = self.tx.send(Command::Remove(uid.to_string()));
    }

    /// The probe that failed for container `id` and wants it killed: liveness, else startup.
    pub fn kill_reason(&self, id: &str) -> Option<ProbeType> {
        [ProbeType::Liveness, ProbeType::Startup]
            .into_iter()
            .find(|k| self.results.get(id, *k) == Some(Outcome::Failure))
    }

    /// `started` and `ready` of running container `c` (instance `id`, started at `started_at`,
    /// ns since the epoch) of `pod`, as the kubelet's UpdatePodStatus computes them; `previous`
    /// is the pod's previous status.
    pub fn container_status(
        &self,
        pod: &Pod,
        c: &Container,
        id: &str,
        started_at: i64,
        previous: Option<&PodStatus>,
    ) -> ProbeStatus {
        let started_before = previous_started(previous, &c.name, id);
        let started = match self.results.get(id, ProbeType::Startup) {
            Some(r) => r == Outcome::Success,
            None => started_before || c.startup_probe.is_none(),
        };
        if !started {
            return ProbeStatus::default();
        }
        let result = self.results.get(id, ProbeType::Readiness);
        let mut ready = match result {
            Some(r) => r == Outcome::Success,
            None => c.readiness_probe.is_none(),
        };
        let since_epoch = |t: std::time::SystemTime| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as i64)
                .unwrap_or(0)
        };
        let adopted = started_at > 0
            && started_at < since_epoch(self.started) - RESTART_GRACE.as_nanos() as i64;
        if adopted && result != Some(Outcome::Success) {
            // setReadyStateOnKubeletRestart: an unprobed adopted container keeps the pod's
            // readiness as the API holds it.
            if result.is_none() {
                ready = true;
            }
            if c.readiness_probe.is_some() && !pod_ready(pod) {
                ready = false;
            }
        }
        ProbeStatus { started, ready }
    }
}

/// Now, in ns since the epoch (the unit of a container's startedAt).
pub fn now_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// The pod's Ready condition as the API server holds it.
fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// True when `previous` shows instance `id` of container `name` started.
pub fn previous_started(previous: Option<&PodStatus>, name: &str, id: &str) -> bool {
    let Some(p) = previous else { return false };
    p.container_statuses
        .iter()
        .flatten()
        .chain(p.init_container_statuses.iter().flatten())
        .any(|s| {
            s.name == name
                && s.started == Some(true)
                && s.container_id
                    .as_deref()
                    .is_some_and(|cid| cid.rsplit("://").next() == Some(id))
        })
}
