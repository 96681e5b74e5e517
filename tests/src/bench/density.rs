//! `tests/bench/run --density`: how many pods one node carries. Each agent gets a node with
//! maxPods 250 and fills it in steps: the first level's pods are created one every 100 ms (the
//! interval of the kubelet's own node density test, test/e2e_node/density_test.go), every later
//! level's pods at once (a burst); after each level, a steady window measures the agent's CPU,
//! RSS and API requests with that many pods running. Then every pod is deleted at once.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::PostParams;

use super::pods::{self, Tracker};
use super::report::Row;
use super::scenario::{self, Agent, Stage, Window, progress, start_until_ready};
use super::stats;
use crate::NodeOptions;

/// Sizes and durations of a density run.
#[derive(Debug, Clone)]
pub struct DensityParams {
    /// Pods running after each step, increasing (the last is the node's maxPods).
    pub levels: Vec<usize>,
    /// Between two creations of the first step.
    pub interval: Duration,
    /// Pause before each steady window.
    pub settle: Duration,
    /// Length of each steady window.
    pub window: Duration,
    /// Where the agents' logs are copied.
    pub log_dir: PathBuf,
}

impl DensityParams {
    /// The run: 110 pods paced, then a burst to 250; 60 s windows after 10 s.
    pub fn full(log_dir: PathBuf) -> DensityParams {
        DensityParams {
            levels: vec![110, 250],
            interval: Duration::from_millis(100),
            settle: Duration::from_secs(10),
            window: Duration::from_secs(60),
            log_dir,
        }
    }

    /// CI's check that the harness works: 4 then 8 pods, 5 s windows.
    pub fn quick(log_dir: PathBuf) -> DensityParams {
        DensityParams {
            levels: vec![4, 8],
            interval: Duration::from_millis(100),
            settle: Duration::from_secs(1),
            window: Duration::from_secs(5),
            log_dir,
        }
    }
}

/// One step: its pods' startup and the steady window after it.
#[derive(Debug)]
pub struct Level {
    /// Pods running during the window.
    pub pods: usize,
    /// Per pod created in this step: create returned -> Running and Ready, ms.
    pub startup_ms: Vec<f64>,
    /// From the step's first create to its last pod Ready, s.
    pub all_ready_s: f64,
    /// The agent and its API requests with `pods` running.
    pub window: Window,
}

/// What one agent measured.
#[derive(Debug)]
pub struct DensityOutcome {
    /// No pods.
    pub idle: Window,
    /// Each step, in order.
    pub levels: Vec<Level>,
    /// From the delete call to every pod gone from the API, s.
    pub teardown_s: f64,
    /// The node's runtime, e.g. `containerd://2.1.4`.
    pub runtime_version: String,
}

impl DensityOutcome {
    /// Every pod's startup, all steps together.
    pub fn all_startup_ms(&self) -> Vec<f64> {
        self.levels
            .iter()
            .flat_map(|l| l.startup_ms.iter().copied())
            .collect()
    }
}

/// Runs `agent` through the density steps on a new node.
pub async fn run(agent: Agent, p: &DensityParams) -> anyhow::Result<DensityOutcome> {
    let max = p.levels.last().copied().unwrap_or(0);
    let opts = NodeOptions {
        max_pods: Some(max as u32),
        ..Default::default()
    };
    let stage = Stage::new(agent, "density", opts).await?;
    let mut process = None;
    let result = measure(agent, p, &stage, &mut process).await;
    let file = format!("density-{}", agent.name());
    stage.finish(&mut process, &p.log_dir, &file).await;
    result
}

async fn measure(
    agent: Agent,
    p: &DensityParams,
    stage: &Stage,
    process: &mut Option<crate::agent::AgentProcess>,
) -> anyhow::Result<DensityOutcome> {
    let env = crate::Env::cluster();
    let audit_log = PathBuf::from(env.var("AUDIT_LOG"));
    let user = format!("system:node:{}", stage.node.name);
    scenario::namespace_ready(&stage.client, &stage.ns).await?;
    let pods: Api<Pod> = Api::namespaced(stage.client.clone(), &stage.ns);
    let tracker = Tracker::start(pods.clone()).await?;
    let proc = start_until_ready(agent, &stage.node, &stage.client, process).await?;
    let pid = proc.pid();
    tokio::time::sleep(p.settle).await;
    let idle = scenario::window(pid, &user, &audit_log, p.window).await?;
    report_window(agent, 0, &idle);

    let mut levels = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (step, &level) in p.levels.iter().enumerate() {
        let first = names.len();
        names.extend((first..level).map(|i| format!("density-{i}")));
        let batch = &names[first..];
        // The first step paced, the later ones at once.
        let interval = (step == 0).then_some(p.interval);
        let t0 = Instant::now();
        let created = create(&pods, batch, &stage.node.name, interval).await?;
        let ready = tracker.ready(batch, Duration::from_secs(900)).await?;
        let last = ready.iter().max().copied().unwrap_or(t0);
        let startup_ms: Vec<f64> = ready
            .iter()
            .zip(&created)
            .map(|(r, c)| r.saturating_duration_since(*c).as_secs_f64() * 1000.0)
            .collect();
        let all_ready_s = last.saturating_duration_since(t0).as_secs_f64();
        progress(format_args!(
            "{}: {} pods {} Ready after {all_ready_s:.1} s; startup p50 {:.0?} p99 {:.0?} ms",
            agent.name(),
            batch.len(),
            if interval.is_some() {
                "one every 100 ms"
            } else {
                "at once"
            },
            stats::median(&startup_ms),
            stats::percentile(&startup_ms, 99.0),
        ));
        tokio::time::sleep(p.settle).await;
        let window = scenario::window(pid, &user, &audit_log, p.window).await?;
        report_window(agent, level, &window);
        levels.push(Level {
            pods: level,
            startup_ms,
            all_ready_s,
            window,
        });
    }

    let teardown_s =
        scenario::delete_all(&pods, &tracker, &names, Duration::from_secs(900)).await?;
    progress(format_args!(
        "{}: {} pods gone after {teardown_s:.1} s",
        agent.name(),
        names.len()
    ));
    if let Some(status) = proc.exited() {
        anyhow::bail!("{} exited during the run ({status})", agent.name());
    }
    Ok(DensityOutcome {
        idle,
        levels,
        teardown_s,
        runtime_version: stage.runtime_version.clone(),
    })
}

/// Creates `names` on `node`, one every `interval` or all at once; when each create returned.
async fn create(
    pods: &Api<Pod>,
    names: &[String],
    node: &str,
    interval: Option<Duration>,
) -> anyhow::Result<Vec<Instant>> {
    let one = |name: &String| {
        let pods = pods.clone();
        let pod = pods::pod(name, node);
        let name = name.clone();
        async move {
            pods.create(&PostParams::default(), &pod)
                .await
                .with_context(|| format!("create pod {name}"))
                .map(|_| Instant::now())
        }
    };
    let Some(interval) = interval else {
        return futures::future::join_all(names.iter().map(one))
            .await
            .into_iter()
            .collect();
    };
    // Paced: each create starts on its tick whatever the previous one's latency.
    let mut tick = tokio::time::interval(interval);
    let mut pending = Vec::with_capacity(names.len());
    for name in names {
        tick.tick().await;
        pending.push(tokio::spawn(one(name)));
    }
    let mut created = Vec::with_capacity(names.len());
    for h in pending {
        created.push(h.await??);
    }
    Ok(created)
}

fn report_window(agent: Agent, pods: usize, w: &Window) {
    progress(format_args!(
        "{}: {pods} pods, {:.0} s: cpu {:.3} s, rss {:.1} MiB, {:.1} API requests/min",
        agent.name(),
        w.length.as_secs_f64(),
        w.usage.cpu_seconds,
        w.usage.rss_mean_mb,
        w.requests_per_minute()
    ));
}

/// Metric names a density run prints (`tests/bench/run --density --quick` fails without one).
pub const REQUIRED: &[&str] = &[
    "density_startup_p50_ms",
    "density_startup_p99_ms",
    "density_all_ready_s",
    "density_cpu_seconds_0",
    "density_rss_mb_0",
    "density_cpu_seconds_max",
    "density_rss_mb_max",
    "density_api_requests_per_min_max",
    "density_teardown_s",
];

/// The `density_*` rows of both agents. Per level `n`: `density_{cpu_seconds,rss_mb}_<n>`,
/// the last level also as `_max`.
pub fn rows(
    p: &DensityParams,
    bosun: Option<&DensityOutcome>,
    kubelet: Option<&DensityOutcome>,
) -> Vec<Row> {
    let mut rows = Vec::new();
    let mut row =
        |name: String, what: String, decimals, f: &dyn Fn(&DensityOutcome) -> Option<f64>| {
            rows.push(Row {
                name,
                what,
                bosun: bosun.and_then(f),
                kubelet: kubelet.and_then(f),
                decimals,
            })
        };
    let total = p.levels.last().copied().unwrap_or(0);
    for (q, label) in [(50.0, "p50"), (90.0, "p90"), (99.0, "p99")] {
        row(
            format!("density_startup_{label}_ms"),
            format!("pod startup over all {total} pods (paced, then burst), {label}, ms"),
            0,
            &|o| stats::percentile(&o.all_startup_ms(), q),
        );
    }
    for (i, level) in p.levels.iter().enumerate() {
        let how = if i == 0 {
            format!("{level} pods one every {} ms", p.interval.as_millis())
        } else {
            format!("{} more at once", level - p.levels[i - 1])
        };
        row(
            format!("density_step{}_p99_ms", i + 1),
            format!("pod startup p99 of the step to {level} ({how}), ms"),
            0,
            &|o| stats::percentile(&o.levels.get(i)?.startup_ms, 99.0),
        );
        row(
            format!("density_step{}_all_ready_s", i + 1),
            format!("step to {level} ({how}): first create -> last pod Running+Ready, s"),
            1,
            &|o| o.levels.get(i).map(|l| l.all_ready_s),
        );
    }
    row(
        "density_all_ready_s".into(),
        format!("all {total} pods: sum of the steps' times to all Ready, s"),
        1,
        &|o| Some(o.levels.iter().map(|l| l.all_ready_s).sum()),
    );
    let w = p.window.as_secs();
    let level_window = |o: &DensityOutcome, n: usize| -> Option<Window> {
        if n == 0 {
            return Some(o.idle.clone());
        }
        o.levels
            .iter()
            .find(|l| l.pods == n)
            .map(|l| l.window.clone())
    };
    let mut counts = vec![0];
    counts.extend(&p.levels);
    for &n in &counts {
        let tag = |what: &str| format!("density_{what}_{n}");
        row(
            tag("cpu_seconds"),
            format!("agent CPU over {w} s with {n} pods, s"),
            3,
            &|o| level_window(o, n).map(|w| w.usage.cpu_seconds),
        );
        row(
            tag("rss_mb"),
            format!("agent RSS, mean over {w} s with {n} pods, MiB"),
            1,
            &|o| level_window(o, n).map(|w| w.usage.rss_mean_mb),
        );
        row(
            tag("api_requests_per_min"),
            format!("API requests per minute with {n} pods"),
            1,
            &|o| level_window(o, n).map(|w| w.requests_per_minute()),
        );
    }
    row(
        "density_cpu_seconds_max".into(),
        format!("agent CPU over {w} s with {total} pods (maxPods), s"),
        3,
        &|o| level_window(o, total).map(|w| w.usage.cpu_seconds),
    );
    row(
        "density_rss_mb_max".into(),
        format!("agent RSS with {total} pods (maxPods), MiB"),
        1,
        &|o| level_window(o, total).map(|w| w.usage.rss_mean_mb),
    );
    row(
        "density_api_requests_per_min_max".into(),
        format!("API requests per minute with {total} pods"),
        1,
        &|o| level_window(o, total).map(|w| w.requests_per_minute()),
    );
    row(
        "density_teardown_s".into(),
        format!("all {total} pods deleted at once -> gone from the API, s"),
        1,
        &|o| Some(o.teardown_s),
    );
    rows
}
