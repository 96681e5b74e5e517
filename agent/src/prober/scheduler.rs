//! The one task that runs every probe on the node: a min-heap of due times (one timer for all
//! probes), each probe fired at its period with its first run jittered, the handlers polled by
//! this same task (no task spawned per run: no hand-off to another thread and back), exec ones
//! bounded by a semaphore, each within a deadline (a hung target costs its timeout, never the
//! scheduler), their results counted against the thresholds and published.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::hash::{BuildHasher, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;

use k8s_openapi::api::core::v1::{Container, Pod};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, debug_span};

use super::spec::{ProbeSpec, ProbeType};
use super::state::{Outcome, ProbeState};
use super::{Command, PodProbes, ProbeRequest, ProbeResult, RESTART_GRACE, Results, Runner};
use crate::events::{EventType, Recorder};
use crate::metrics::probes::{self as pm, ProbeLabels, ProbeSeries};

/// Exec probes running at once, node-wide: they cost the runtime (a runc exec each). Network
/// probes (HTTP, TCP, gRPC) are not bounded beyond one in flight per probe, as the kubelet's, so a
/// slow runtime never makes them late.
pub const MAX_IN_FLIGHT: usize = 32;

/// The most a fresh container's first liveness or startup probe is delayed past its initial
/// delay, to spread probes that would otherwise fire together.
pub const FIRST_JITTER: Duration = Duration::from_secs(1);

/// The grid every probe run is placed on after its first (the kubelet's probes have no set
/// phase): probes due within one tick fire together, so 100 probes a second wake the node up
/// 10 times, not 100, and their CRI calls share the runtime connection's writes.
pub const TICK: Duration = Duration::from_millis(100);

/// What a handler gets beyond the probe's timeout before the scheduler gives up on it (an exec
/// probe's runtime needs a moment to kill the command).
const SLACK: Duration = Duration::from_secs(2);

type TargetId = u64;

struct Target {
    uid: String,
    name: String,
    spec: Arc<ProbeSpec>,
    container: Arc<Container>,
    id: Arc<str>,
    /// When the container started, on the scheduler's clock.
    started: Instant,
    state: ProbeState,
    due: Instant,
    in_flight: bool,
    series: ProbeSeries,
}

struct PodEntry {
    pod: Arc<Pod>,
    pod_ip: Arc<str>,
    wake: Arc<Notify>,
    targets: HashMap<(String, ProbeType), TargetId>,
}

/// A probe a pod sync asks for: (container name, type, probe, container spec, container id,
/// when it started, whether its previous status said started).
type Wanted = (
    String,
    ProbeType,
    Arc<ProbeSpec>,
    Arc<Container>,
    String,
    Instant,
    bool,
);

/// The probes `p` asks for: each probe of its running containers and sidecars, but only
/// readiness for a pod being deleted (the kubelet's liveness and startup workers end with
/// Success then).
fn wanted(p: &PodProbes, now: Instant) -> Vec<Wanted> {
    let deleting = p.pod.metadata.deletion_timestamp.is_some();
    let mut wanted: Vec<Wanted> = Vec::new();
    let Some(spec) = p.pod.spec.as_ref() else {
        return wanted;
    };
    let sidecars = spec
        .init_containers
        .iter()
        .flatten()
        .filter(|c| c.restart_policy.as_deref() == Some("Always"));
    for c in spec.containers.iter().chain(sidecars) {
        let Some(run) = p.running.iter().find(|r| r.name == c.name) else {
            continue;
        };
        let container = Arc::new(c.clone());
        for kind in ProbeType::ALL {
            if deleting && kind != ProbeType::Readiness {
                continue;
            }
            if let Some(s) = ProbeSpec::of(c, kind) {
                let started = now.checked_sub(run.running_for).unwrap_or(now);
                wanted.push((
                    c.name.clone(),
                    kind,
                    Arc::new(s),
                    container.clone(),
                    run.id.clone(),
                    started,
                    run.started_before,
                ));
            }
        }
    }
    wanted
}

/// `t` put on the next tick of the grid counted from `start` (the scheduler's start).
fn on_grid(start: Instant, t: Instant) -> Instant {
    let since = t.saturating_duration_since(start).as_nanos();
    let tick = TICK.as_nanos();
    start + Duration::from_nanos((since.div_ceil(tick) * tick) as u64)
}

/// A finished probe run.
struct Done {
    target: TargetId,
    result: ProbeResult,
    took: Duration,
}

/// A probe run in progress, polled by the scheduler's task.
type Running = Pin<Box<dyn Future<Output = Done> + Send>>;

/// The scheduler's state; [`Scheduler::run`] owns it.
pub struct Scheduler {
    runner: Arc<dyn Runner>,
    events: Recorder,
    results: Arc<Results>,
    pods: HashMap<String, PodEntry>,
    targets: HashMap<TargetId, Target>,
    heap: BinaryHeap<Reverse<(Instant, TargetId)>>,
    next_id: TargetId,
    slots: Arc<Semaphore>,
    running: FuturesUnordered<Running>,
    start: Instant,
    rng: u64,
}

impl Scheduler {
    /// A scheduler publishing into `results`.
    pub fn new(runner: Arc<dyn Runner>, events: Recorder, results: Arc<Results>) -> Self {
        let seed = std::collections::hash_map::RandomState::new().build_hasher();
        Scheduler {
            runner,
            events,
            results,
            pods: HashMap::new(),
            targets: HashMap::new(),
            heap: BinaryHeap::new(),
            next_id: 0,
            slots: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
            running: FuturesUnordered::new(),
            start: Instant::now(),
            rng: seed.finish() | 1,
        }
    }

    /// Runs until `cancel`: commands from the pod workers, due probes, finished probes.
    pub async fn run(
        mut self,
        mut rx: mpsc::UnboundedReceiver<Command>,
        cancel: CancellationToken,
    ) {
        loop {
            let next = self.heap.peek().map(|Reverse((t, _))| *t);
            let sleep = async {
                match next {
                    Some(t) => tokio::time::sleep_until(t).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                cmd = rx.recv() => match cmd {
                    Some(Command::Sync(p)) => self.sync_pod(p),
                    Some(Command::Remove(uid)) => self.remove_pod(&uid),
                    None => return,
                },
                Some(done) = self.running.next(), if !self.running.is_empty() => self.finish(done),
                _ = sleep => self.fire_due(),
            }
        }
    }

    /// A uniform random duration in [0, max).
    fn jitter(&mut self, max: Duration) -> Duration {
        // xorshift64*: plenty for spreading timers.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let nanos = max.as_nanos() as u64;
        if nanos == 0 {
            return Duration::ZERO;
        }
        Duration::from_nanos(r % nanos)
    }

    fn sync_pod(&mut self, p: PodProbes) {
        let uid = p.pod.metadata.uid.clone().unwrap_or_default();
        let now = Instant::now();
        let wanted = wanted(&p, now);
        let entry = self.pods.entry(uid.clone()).or_insert_with(|| PodEntry {
            pod: p.pod.clone(),
            pod_ip: p.pod_ip.as_str().into(),
            wake: p.wake.clone(),
            targets: HashMap::new(),
        });
        entry.pod = p.pod.clone();
        if *entry.pod_ip != *p.pod_ip {
            entry.pod_ip = p.pod_ip.as_str().into();
        }
        entry.wake = p.wake;
        // Probes of instances that no longer run (or of a new instance) stop.
        let stale: Vec<((String, ProbeType), TargetId)> = entry
            .targets
            .iter()
            .filter(|((name, kind), tid)| {
                !wanted.iter().any(|w| {
                    &w.0 == name
                        && w.1 == *kind
                        && self.targets.get(tid).is_some_and(|t| *t.id == *w.4)
                })
            })
            .map(|(k, v)| (k.clone(), *v))
            .collect();
        for (key, tid) in stale {
            if let Some(e) = self.pods.get_mut(&uid) {
                e.targets.remove(&key);
            }
            self.drop_target(tid);
        }
        for w in wanted {
            let exists = self
                .pods
                .get(&uid)
                .is_some_and(|e| e.targets.contains_key(&(w.0.clone(), w.1)));
            if !exists {
                self.add_target(&uid, w, now);
            }
        }
    }

    /// Starts probing `w` of pod `uid`: its initial result, its first run due after the
    /// initial delay and a jitter.
    fn add_target(&mut self, uid: &str, w: Wanted, now: Instant) {
        let (name, kind, spec, container, id, started, started_before) = w;
        let adopted = started + RESTART_GRACE < self.start;
        let mut state = ProbeState::default();
        // The kubelet's initial results; an adopted container keeps what its pod had until
        // probed, and one that had passed its startup probe stays started.
        if !adopted {
            let initial = match kind {
                ProbeType::Readiness => Some(Outcome::Failure),
                ProbeType::Liveness => Some(Outcome::Success),
                ProbeType::Startup => None,
            };
            self.results.set(&id, kind, initial);
        } else if kind == ProbeType::Startup && started_before {
            self.results.set(&id, kind, Some(Outcome::Success));
            state.on_hold = true;
        }
        let first = (started + spec.initial_delay).max(now);
        // Under the bound less a tick: the grid rounds up.
        let jitter = if adopted {
            // After a restart every probe would fire at once: spread over a period.
            self.jitter(spec.period.saturating_sub(TICK))
        } else if kind == ProbeType::Readiness {
            // The kubelet triggers a readiness probe as soon as the status shows it unready.
            Duration::ZERO
        } else {
            self.jitter(FIRST_JITTER.min(spec.period).saturating_sub(TICK))
        };
        // A readiness probe of a new container goes at once; the others on the grid.
        let due = if jitter.is_zero() {
            first
        } else {
            on_grid(self.start, first + jitter)
        };
        let pod = &self.pods[uid].pod;
        let labels = ProbeLabels::new(kind.as_str(), &name, pod);
        let tid = self.next_id;
        self.next_id += 1;
        self.targets.insert(
            tid,
            Target {
                uid: uid.to_string(),
                name: name.clone(),
                spec,
                container,
                id: id.into(),
                started,
                state,
                due,
                in_flight: false,
                series: ProbeSeries::new(labels),
            },
        );
        self.heap.push(Reverse((due, tid)));
        if let Some(e) = self.pods.get_mut(uid) {
            e.targets.insert((name, kind), tid);
        }
    }

    fn remove_pod(&mut self, uid: &str) {
        if let Some(e) = self.pods.remove(uid) {
            for tid in e.targets.into_values() {
                self.drop_target(tid);
            }
        }
    }

    fn drop_target(&mut self, tid: TargetId) {
        if let Some(t) = self.targets.remove(&tid) {
            self.results.set(&t.id, t.spec.kind, None);
            t.series.forget();
        }
    }

    /// True when the container's startup probe passed, or it has none.
    fn started(&self, t: &Target) -> bool {
        self.pods[&t.uid]
            .targets
            .get(&(t.name.clone(), ProbeType::Startup))
            .and_then(|tid| self.targets.get(tid))
            .is_none_or(|s| self.results.get(&s.id, ProbeType::Startup) == Some(Outcome::Success))
    }

    fn fire_due(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((due, tid))) = self.heap.peek().copied() {
            if due > now {
                break;
            }
            self.heap.pop();
            let Some(t) = self.targets.get(&tid) else {
                continue;
            };
            if t.due != due || t.state.on_hold {
                continue;
            }
            let gated = t.spec.kind != ProbeType::Startup && !self.started(t);
            let Some(t) = self.targets.get_mut(&tid) else {
                continue;
            };
            let ready_at = t.started + t.spec.initial_delay;
            if now < ready_at {
                t.due = ready_at;
                self.heap.push(Reverse((ready_at, tid)));
                continue;
            }
            // Fixed rate: the next period after this one, on the grid; periods missed while late
            // are dropped.
            let mut next = due + t.spec.period;
            while next <= now {
                next += t.spec.period;
            }
            let next = on_grid(self.start, next);
            t.due = next;
            self.heap.push(Reverse((next, tid)));
            if gated || t.in_flight {
                continue;
            }
            t.in_flight = true;
            let req = ProbeRequest {
                spec: t.spec.clone(),
                container: t.container.clone(),
                container_id: t.id.clone(),
                pod_ip: self.pods[&t.uid].pod_ip.clone(),
            };
            // At debug level: a span's fields are formatted when it is made, and at the default
            // level nothing is logged inside a probe run (a failure is an Unhealthy event).
            let span = debug_span!("probe", pod.namespace = %t.series.labels.namespace, pod.name = %t.series.labels.pod,
                pod.uid = %t.uid, container.name = %t.name, probe = %t.spec.kind);
            let (runner, slots) = (self.runner.clone(), self.slots.clone());
            let lag = now.saturating_duration_since(due);
            self.running.push(Box::pin(tracing::Instrument::instrument(
                async move {
                    let _permit = match req.spec.handler {
                        super::Handler::Exec(_) => Some(slots.acquire_owned().await),
                        _ => None,
                    };
                    let started = Instant::now();
                    pm::observe_lag(lag + started.saturating_duration_since(now));
                    let budget = req.spec.timeout + SLACK;
                    let result = match tokio::time::timeout(budget, runner.run(req)).await {
                        Ok(r) => r,
                        Err(_) => {
                            ProbeResult::Failure(format!("probe did not finish within {budget:?}"))
                        }
                    };
                    Done {
                        target: tid,
                        result,
                        took: started.elapsed(),
                    }
                },
                span,
            )));
        }
    }

    fn finish(&mut self, done: Done) {
        let Some(t) = self.targets.get_mut(&done.target) else {
            return;
        };
        t.in_flight = false;
        let kind = t.spec.kind;
        let pod = self.pods[&t.uid].pod.clone();
        let event = |kind_: EventType, reason: &str, msg: String| {
            self.events.pod(&pod, Some(&t.name), kind_, reason, msg);
        };
        let outcome = match &done.result {
            ProbeResult::Success(_) => Outcome::Success,
            ProbeResult::Warning(out) => {
                event(
                    EventType::Warning,
                    "ProbeWarning",
                    format!("{kind} probe warning: {out}"),
                );
                Outcome::Success
            }
            ProbeResult::Failure(out) => {
                debug!(container.name = %t.name, probe = %kind, output = %out, "probe failed");
                event(
                    EventType::Warning,
                    "Unhealthy",
                    format!("{kind} probe failed: {out}"),
                );
                Outcome::Failure
            }
            ProbeResult::Error(e) => {
                let msg = format!("{kind} probe errored and resulted in unknown state: {e}");
                event(EventType::Warning, "Unhealthy", msg);
                return;
            }
        };
        t.series.observe(outcome == Outcome::Success, done.took);
        if t.state.on_hold {
            return;
        }
        let Some(publish) = t.state.record(&t.spec, outcome) else {
            return;
        };
        let (uid, name, id) = (t.uid.clone(), t.name.clone(), t.id.clone());
        if self.results.set(&id, kind, Some(publish)) {
            self.pods[&uid].wake.notify_one();
            if kind == ProbeType::Startup && publish == Outcome::Success {
                // Started: the readiness probe runs now (the kubelet's manual trigger).
                let now = Instant::now();
                if let Some(rt) = self.pods[&uid]
                    .targets
                    .get(&(name, ProbeType::Readiness))
                    .copied()
                    && let Some(r) = self.targets.get_mut(&rt)
                {
                    r.due = now.max(r.started + r.spec.initial_delay);
                    self.heap.push(Reverse((r.due, rt)));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
