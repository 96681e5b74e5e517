//! The pod worker's rounds against a scripted runtime: each round observes the runtime through
//! the [`PodObserver`] seam, remembers exited containers and plans, as `PodWorker::sync` does; the
//! test then carries the plan out on the script (sandbox made, containers started, the crash
//! loop's back-off stepped as `PodWorker::start_containers` does) and lets time pass: the rounds
//! check what the worker decides, on a clock the test sets. `worker_tests.rs` drives the real
//! worker through the whole [`super::runtime::PodRuntime`], the e2e tests what containerd does.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bosun_cri::types::{
    Container, ContainerFilter, ContainerState, ContainerStatus, PodSandbox, PodSandboxFilter,
    PodSandboxMetadata, PodSandboxState,
};
use k8s_openapi::api::core::v1::Pod;

use super::backoff::CRASH_LOOP;
use super::observe::{observe, remember_exited};
use super::plan::{ContainerView, PodActions, StartContainer, plan};
use super::runtime::PodObserver;
use crate::backoff::KeyedBackoff;
use crate::runtime::labels;

/// What the scripted runtime holds: sandboxes and containers with their status, and the
/// ContainerStatus calls it was asked.
#[derive(Default)]
struct Held {
    sandboxes: Vec<PodSandbox>,
    containers: Vec<(Container, ContainerStatus)>,
    asked: Vec<String>,
    clock: i64,
}

#[derive(Default)]
struct Scripted(Mutex<Held>);

impl PodObserver for Scripted {
    async fn list_pod_sandbox(
        &self,
        _: Option<PodSandboxFilter>,
    ) -> bosun_cri::Result<Vec<PodSandbox>> {
        Ok(self.0.lock().unwrap().sandboxes.clone())
    }

    async fn list_containers(
        &self,
        _: Option<ContainerFilter>,
    ) -> bosun_cri::Result<Vec<Container>> {
        let held = self.0.lock().unwrap();
        Ok(held.containers.iter().map(|(c, _)| c.clone()).collect())
    }

    async fn container_status(&self, id: &str) -> bosun_cri::Result<ContainerStatus> {
        let mut held = self.0.lock().unwrap();
        held.asked.push(id.to_string());
        Ok(held
            .containers
            .iter()
            .find(|(c, _)| c.id == id)
            .map(|(_, s)| s.clone())
            .unwrap_or_default())
    }
}

impl Scripted {
    fn tick(held: &mut Held) -> i64 {
        held.clock += 1_000_000_000;
        held.clock
    }

    /// Runs a ready sandbox with `attempt`; the ones before it stop.
    fn run_sandbox(&self, attempt: u32) {
        let mut held = self.0.lock().unwrap();
        let created_at = Self::tick(&mut held);
        for s in &mut held.sandboxes {
            s.state = PodSandboxState::SandboxNotready as i32;
        }
        held.sandboxes.push(PodSandbox {
            id: format!("sb-{attempt}"),
            created_at,
            state: PodSandboxState::SandboxReady as i32,
            metadata: Some(PodSandboxMetadata {
                attempt,
                ..Default::default()
            }),
            ..Default::default()
        });
    }

    /// Creates and starts `start` in the newest sandbox.
    fn start(&self, start: &StartContainer) {
        let mut held = self.0.lock().unwrap();
        let now = Self::tick(&mut held);
        let sandbox = held.sandboxes.last().expect("a sandbox").id.clone();
        let id = format!("{}-{}", start.name, start.restart_count);
        let container = Container {
            id: id.clone(),
            pod_sandbox_id: sandbox,
            created_at: now,
            labels: HashMap::from([(labels::CONTAINER_NAME.to_string(), start.name.clone())]),
            annotations: HashMap::from([(
                labels::RESTART_COUNT.to_string(),
                start.restart_count.to_string(),
            )]),
            ..Default::default()
        };
        let status = ContainerStatus {
            id,
            state: ContainerState::ContainerRunning as i32,
            started_at: now,
            ..Default::default()
        };
        held.containers.push((container, status));
    }

    /// The container `id` exits with `code`.
    fn exit(&self, id: &str, code: i32) {
        let mut held = self.0.lock().unwrap();
        let now = Self::tick(&mut held);
        let (_, st) = held
            .containers
            .iter_mut()
            .find(|(c, _)| c.id == id)
            .expect("the container");
        st.state = ContainerState::ContainerExited as i32;
        st.exit_code = code;
        st.finished_at = now;
    }

    /// The sandbox `id` stops (its network went, the runtime restarted it...).
    fn stop_sandbox(&self, id: &str) {
        let mut held = self.0.lock().unwrap();
        let s = held.sandboxes.iter_mut().find(|s| s.id == id).unwrap();
        s.state = PodSandboxState::SandboxNotready as i32;
    }

    fn asked(&self) -> Vec<String> {
        std::mem::take(&mut self.0.lock().unwrap().asked)
    }
}

/// A pod worker's state between rounds, as far as its decisions go.
struct Worker {
    pod: Pod,
    exited: HashMap<String, ContainerView>,
    backoff: KeyedBackoff,
    dir: tempfile::TempDir,
}

impl Worker {
    fn new(policy: &str) -> Worker {
        let pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "uid-1"},
            "spec": {"restartPolicy": policy,
                     "containers": [{"name": "app", "image": "busybox"}]},
        }))
        .unwrap();
        Worker {
            pod,
            exited: HashMap::new(),
            backoff: KeyedBackoff::new(CRASH_LOOP),
            dir: tempfile::tempdir().unwrap(),
        }
    }

    /// One round's decision: observe, remember the exited, plan.
    async fn round(&mut self, rt: &Scripted, now: Instant) -> PodActions {
        let obs = observe(rt, "uid-1", self.dir.path(), &self.exited)
            .await
            .expect("observe");
        remember_exited(&mut self.exited, &obs);
        plan(
            &self.pod,
            obs.sandbox.as_ref(),
            &obs.containers,
            &[],
            &self.backoff,
            now,
        )
    }

    /// The first two rounds, carried out: the sandbox, then the app container running.
    async fn start(&mut self, rt: &Scripted, now: Instant) {
        for _ in 0..2 {
            let a = self.round(rt, now).await;
            self.apply(rt, &a, now);
        }
    }

    /// Carries `actions` out on the script as the worker does.
    fn apply(&mut self, rt: &Scripted, actions: &PodActions, now: Instant) {
        if let Some(attempt) = actions.create_sandbox {
            rt.run_sandbox(attempt);
            return;
        }
        for start in &actions.start {
            if start.restart_count > 0 {
                self.backoff.next(&start.name, now);
            }
            rt.start(start);
        }
    }
}

fn starts(a: &PodActions) -> Vec<(&str, u32)> {
    a.start
        .iter()
        .map(|s| (s.name.as_str(), s.restart_count))
        .collect()
}

#[tokio::test]
async fn start_crash_and_back_off_round_by_round() {
    let rt = Scripted::default();
    let mut w = Worker::new("Always");
    let t0 = Instant::now();

    // Nothing in the runtime: a sandbox first, attempt 0.
    let a = w.round(&rt, t0).await;
    assert_eq!((a.create_sandbox, a.kill_pod), (Some(0), false));
    w.apply(&rt, &a, t0);
    // Then the container, its first run.
    let a = w.round(&rt, t0).await;
    assert_eq!(starts(&a), [("app", 0)]);
    w.apply(&rt, &a, t0);
    // Running: nothing to do.
    let a = w.round(&rt, t0).await;
    assert_eq!(a, PodActions::default());

    // The first crash restarts at once (no back-off yet), restart count 1.
    rt.exit("app-0", 1);
    let a = w.round(&rt, t0).await;
    assert_eq!(starts(&a), [("app", 1)]);
    w.apply(&rt, &a, t0);
    // The second crash waits the crash loop's first 10 s.
    rt.exit("app-1", 1);
    let t1 = t0 + Duration::from_secs(1);
    let a = w.round(&rt, t1).await;
    assert_eq!(
        (starts(&a), a.backing_off.clone()),
        (vec![], vec![("app".into(), 10)])
    );
    // Past it: restart count 2, and the next wait doubles.
    let t2 = t0 + Duration::from_secs(11);
    let a = w.round(&rt, t2).await;
    assert_eq!(starts(&a), [("app", 2)]);
    w.apply(&rt, &a, t2);
    rt.exit("app-2", 2);
    let a = w.round(&rt, t2 + Duration::from_secs(1)).await;
    assert_eq!(a.backing_off, [("app".into(), 20)]);
    assert_eq!(
        w.backoff.next_expiry(t2),
        Some(t2 + Duration::from_secs(20)),
        "the worker sleeps until then"
    );
}

#[tokio::test]
async fn exited_containers_are_asked_once() {
    let rt = Scripted::default();
    let mut w = Worker::new("Always");
    let now = Instant::now();
    w.start(&rt, now).await;
    rt.exit("app-0", 1);
    rt.asked();
    let a = w.round(&rt, now).await;
    assert_eq!(rt.asked(), ["app-0"]);
    w.apply(&rt, &a, now);
    // The next round asks the new instance only: an exited container no longer changes.
    w.round(&rt, now).await;
    assert_eq!(rt.asked(), ["app-1"]);
}

#[tokio::test]
async fn a_dead_sandbox_is_replaced_and_restart_counts_go_on() {
    let rt = Scripted::default();
    let mut w = Worker::new("Always");
    let now = Instant::now();
    w.start(&rt, now).await;
    rt.exit("app-0", 137);
    rt.stop_sandbox("sb-0");
    // Kill what is left and make sandbox attempt 1.
    let a = w.round(&rt, now).await;
    assert_eq!((a.kill_pod, a.create_sandbox), (true, Some(1)));
    w.apply(&rt, &a, now);
    // In the new sandbox the container starts again, counting on from the old one.
    let a = w.round(&rt, now).await;
    assert_eq!(starts(&a), [("app", 1)]);
}

#[tokio::test]
async fn a_pod_done_for_good_stops_and_starts_nothing() {
    for (policy, code, done) in [
        ("Never", 0, true),
        ("Never", 1, true),
        ("OnFailure", 0, true),
        ("OnFailure", 1, false),
        ("Always", 0, false),
    ] {
        let rt = Scripted::default();
        let mut w = Worker::new(policy);
        let now = Instant::now();
        w.start(&rt, now).await;
        rt.exit("app-0", code);
        let a = w.round(&rt, now).await;
        let want = if done {
            PodActions {
                kill_pod: true,
                ..Default::default()
            }
        } else {
            PodActions {
                start: vec![StartContainer {
                    name: "app".into(),
                    init: false,
                    restart_count: 1,
                }],
                ..Default::default()
            }
        };
        assert_eq!(a, want, "{policy}, exit {code}");
        // Once done, a stopped sandbox is not replaced.
        if done {
            rt.stop_sandbox("sb-0");
            let a = w.round(&rt, now).await;
            assert_eq!(a, PodActions::default(), "{policy}, exit {code}");
        }
    }
}
