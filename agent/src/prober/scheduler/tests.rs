//! The scheduler on a paused clock with a scripted runner: when probes fire, what the thresholds
//! publish, and the bounds of the jitter.

use super::*;
use crate::prober::{PodProbes, ProbeFuture, Prober, RunningContainer};
use std::sync::Mutex;

/// Answers from `script` per probe type, recording when each probe ran.
struct Scripted {
    calls: Mutex<Vec<(Duration, ProbeType)>>,
    t0: Instant,
    script: fn(ProbeType, usize) -> ProbeResult,
}

impl Runner for Scripted {
    fn run(&self, req: ProbeRequest) -> ProbeFuture {
        let mut calls = self.calls.lock().unwrap();
        let n = calls.iter().filter(|(_, k)| *k == req.spec.kind).count();
        calls.push((self.t0.elapsed(), req.spec.kind));
        let r = (self.script)(req.spec.kind, n);
        Box::pin(async move { r })
    }
}

fn pod(probes: serde_json::Value) -> Arc<Pod> {
    let mut c = serde_json::json!({"name": "c", "image": "busybox"});
    for (k, v) in probes.as_object().unwrap() {
        c[k] = v.clone();
    }
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": "u1"},
            "spec": {"containers": [c]},
        }))
        .unwrap(),
    )
}

fn start(
    probes: serde_json::Value,
    running_for: Duration,
    script: fn(ProbeType, usize) -> ProbeResult,
) -> (Prober, Arc<Scripted>, Arc<Notify>) {
    let runner = Arc::new(Scripted {
        calls: Mutex::default(),
        t0: Instant::now(),
        script,
    });
    let prober = Prober::spawn(
        runner.clone(),
        Recorder::disabled(),
        CancellationToken::new(),
    );
    let wake = Arc::new(Notify::new());
    prober.sync_pod(PodProbes {
        pod: pod(probes),
        pod_ip: "10.0.0.1".into(),
        running: vec![RunningContainer {
            name: "c".into(),
            id: "cid".into(),
            running_for,
            started_before: false,
        }],
        wake: wake.clone(),
    });
    (prober, runner, wake)
}

fn ok(_: ProbeType, _: usize) -> ProbeResult {
    ProbeResult::Success(String::new())
}

fn times(r: &Scripted, kind: ProbeType) -> Vec<f64> {
    let calls = r.calls.lock().unwrap();
    calls
        .iter()
        .filter(|(_, k)| *k == kind)
        .map(|(t, _)| t.as_secs_f64())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn probes_fire_at_their_period_after_the_initial_delay() {
    let exec = serde_json::json!({"exec": {"command": ["true"]}});
    let mut live = exec.clone();
    live["initialDelaySeconds"] = 3.into();
    live["periodSeconds"] = 2.into();
    let mut ready = exec.clone();
    ready["periodSeconds"] = 5.into();
    let (_p, r, _w) = start(
        serde_json::json!({"livenessProbe": live, "readinessProbe": ready}),
        Duration::ZERO,
        ok,
    );
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    // Readiness: at once (the kubelet's manual trigger), then every 5 s.
    assert_eq!(times(&r, ProbeType::Readiness), vec![0.0, 5.0, 10.0]);
    // Liveness: after the 3 s delay plus a jitter under 1 s, then every 2 s on that phase.
    let l = times(&r, ProbeType::Liveness);
    assert!(l.len() >= 3, "{l:?}");
    assert!((3.0..4.0).contains(&l[0]), "first liveness at {}", l[0]);
    for w in l.windows(2) {
        assert!((w[1] - w[0] - 2.0).abs() < 1e-6, "{l:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn liveness_failures_publish_at_the_threshold_then_hold() {
    let mut live = serde_json::json!({"exec": {"command": ["false"]}});
    live["periodSeconds"] = 1.into();
    live["failureThreshold"] = 3.into();
    let (p, r, wake) = start(
        serde_json::json!({"livenessProbe": live}),
        Duration::ZERO,
        |_, n| {
            if n == 0 {
                ProbeResult::Success(String::new())
            } else {
                ProbeResult::Failure("boom".into())
            }
        },
    );
    tokio::time::sleep(Duration::from_millis(2_900)).await;
    assert_eq!(
        p.kill_reason("cid"),
        None,
        "two failures: under the threshold"
    );
    // The first run is jittered by up to one period, so the third failure lands by 4 s.
    tokio::time::sleep(Duration::from_millis(1_150)).await;
    assert_eq!(p.kill_reason("cid"), Some(ProbeType::Liveness));
    tokio::time::timeout(Duration::from_millis(1), wake.notified())
        .await
        .expect("the pod worker was woken");
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        times(&r, ProbeType::Liveness).len(),
        4,
        "no probing of a container that is being killed"
    );
}

#[tokio::test(start_paused = true)]
async fn startup_holds_the_other_probes_off_until_it_passes() {
    let exec = serde_json::json!({"exec": {"command": ["true"]}, "periodSeconds": 1});
    let mut startup = exec.clone();
    startup["failureThreshold"] = 5.into();
    let (p, r, _w) = start(
        serde_json::json!({"startupProbe": startup, "livenessProbe": exec, "readinessProbe": exec}),
        Duration::ZERO,
        |k, n| match (k, n) {
            (ProbeType::Startup, 0..=2) => ProbeResult::Failure("not yet".into()),
            _ => ProbeResult::Success(String::new()),
        },
    );
    tokio::time::sleep(Duration::from_millis(2_950)).await;
    assert!(times(&r, ProbeType::Liveness).is_empty());
    assert!(times(&r, ProbeType::Readiness).is_empty());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let s = times(&r, ProbeType::Startup);
    assert_eq!(s.len(), 4, "startup stops once passed: {s:?}");
    // Readiness runs as soon as the container started.
    assert_eq!(times(&r, ProbeType::Readiness).first(), Some(&s[3]));
    assert!(!times(&r, ProbeType::Liveness).is_empty());
    assert_eq!(p.kill_reason("cid"), None);
}

#[tokio::test(start_paused = true)]
async fn adopted_containers_spread_their_first_probes_over_a_period() {
    let mut firsts = Vec::new();
    for _ in 0..20 {
        let probe = serde_json::json!({"exec": {"command": ["true"]}, "periodSeconds": 10});
        let (_p, r, _w) = start(
            serde_json::json!({"readinessProbe": probe}),
            Duration::from_secs(60),
            ok,
        );
        tokio::time::sleep(Duration::from_secs(10)).await;
        let t = times(&r, ProbeType::Readiness);
        assert_eq!(t.len(), 1, "{t:?}");
        firsts.push(t[0]);
    }
    assert!(firsts.iter().all(|t| (0.0..10.0).contains(t)), "{firsts:?}");
    let spread = firsts.iter().cloned().fold(f64::MIN, f64::max)
        - firsts.iter().cloned().fold(f64::MAX, f64::min);
    assert!(spread > 2.0, "jittered, not all at once: {firsts:?}");
}

#[tokio::test(start_paused = true)]
async fn a_hung_probe_costs_its_timeout_and_others_keep_their_period() {
    struct Hang(Mutex<Vec<(Duration, ProbeType)>>, Instant);
    impl Runner for Hang {
        fn run(&self, req: ProbeRequest) -> ProbeFuture {
            self.0
                .lock()
                .unwrap()
                .push((self.1.elapsed(), req.spec.kind));
            if req.spec.kind == ProbeType::Liveness {
                Box::pin(std::future::pending())
            } else {
                Box::pin(async { ProbeResult::Success(String::new()) })
            }
        }
    }
    let runner = Arc::new(Hang(Mutex::default(), Instant::now()));
    let prober = Prober::spawn(
        runner.clone(),
        Recorder::disabled(),
        CancellationToken::new(),
    );
    let exec =
        serde_json::json!({"exec": {"command": ["x"]}, "periodSeconds": 1, "failureThreshold": 1});
    prober.sync_pod(PodProbes {
        pod: pod(serde_json::json!({"livenessProbe": exec, "readinessProbe": exec})),
        pod_ip: String::new(),
        running: vec![RunningContainer {
            name: "c".into(),
            id: "cid".into(),
            running_for: Duration::ZERO,
            started_before: false,
        }],
        wake: Arc::new(Notify::new()),
    });
    tokio::time::sleep(Duration::from_millis(5_500)).await;
    let calls = runner.0.lock().unwrap().clone();
    let ready = calls
        .iter()
        .filter(|(_, k)| *k == ProbeType::Readiness)
        .count();
    assert_eq!(ready, 6, "readiness kept its period: {calls:?}");
    // The hung liveness probe timed out (1 s + slack) and failed.
    assert_eq!(prober.kill_reason("cid"), Some(ProbeType::Liveness));
}

#[tokio::test(start_paused = true)]
async fn probes_of_many_containers_fire_together_on_a_coarse_grid() {
    let runner = Arc::new(Scripted {
        calls: Mutex::default(),
        t0: Instant::now(),
        script: ok,
    });
    let prober = Prober::spawn(
        runner.clone(),
        Recorder::disabled(),
        CancellationToken::new(),
    );
    let exec = serde_json::json!({"exec": {"command": ["true"]}, "periodSeconds": 1});
    for i in 0..40 {
        let mut p = (*pod(serde_json::json!({"livenessProbe": exec}))).clone();
        p.metadata.uid = Some(format!("u{i}"));
        prober.sync_pod(PodProbes {
            pod: Arc::new(p),
            pod_ip: String::new(),
            running: vec![RunningContainer {
                name: "c".into(),
                id: format!("cid{i}"),
                running_for: Duration::ZERO,
                started_before: false,
            }],
            wake: Arc::new(Notify::new()),
        });
    }
    tokio::time::sleep(Duration::from_millis(4_050)).await;
    let t = times(&runner, ProbeType::Liveness);
    assert!(
        t.len() >= 40 * 3,
        "every container probed each second: {}",
        t.len()
    );
    // Jittered first runs, but all on a grid of TICK: at most 1 s / TICK wake-ups a second
    // however many probes, each a whole number of ticks from the start.
    let tick = TICK.as_secs_f64();
    let mut instants: Vec<i64> = t.iter().map(|s| (s * 1000.0).round() as i64).collect();
    instants.sort();
    instants.dedup();
    for ms in &instants {
        let ticks = *ms as f64 / 1000.0 / tick;
        assert!(
            (ticks - ticks.round()).abs() < 1e-6,
            "{ms} ms is off the grid"
        );
    }
    assert!(
        instants.len() <= (4.05 / tick) as usize + 1,
        "{} distinct fire instants",
        instants.len()
    );
}
