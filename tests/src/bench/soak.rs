//! `tests/soak/run`: both agents, each on a node of its own and at the same time, carry pods
//! created and deleted without pause (10 a minute, a mix: long sleepers, a crash loop, init
//! containers, a configMap volume, exec probes, a pod that completes), each deleted once it
//! reaches a set age. Every sample (once a minute) records what could leak: the agent's
//! resident memory, open file descriptors and threads, and on its node the cgroups, the mounts
//! and the runtime's sandboxes and containers. The report is each figure's slope over the
//! steady part of the run (after the first pods reached their age), and what is left once
//! every pod is deleted at the end: the runtime's objects at zero, the cgroups and mounts back
//! to what the idle node had.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams};

use super::floor::COMMAND;
use super::pods::Tracker;
use super::procfs;
use super::scenario::{self, Agent, Stage, progress, start_until_ready};
use crate::NodeOptions;
use crate::cluster::ClusterNode;
use crate::node::cgroups_under;
use crate::pod::{Container, PodBuilder};

/// Rate, ages and durations of a soak run.
#[derive(Debug, Clone)]
pub struct SoakParams {
    /// How long pods are created.
    pub duration: Duration,
    /// Pods created per minute.
    pub per_minute: u32,
    /// A pod's age when it is deleted.
    pub lifetime: Duration,
    /// Between two samples.
    pub sample_every: Duration,
    /// Where the agents' logs are copied.
    pub log_dir: PathBuf,
}

impl SoakParams {
    /// The run: `minutes` of 10 pods a minute, each living 2 minutes, sampled each minute.
    pub fn full(minutes: u64, log_dir: PathBuf) -> SoakParams {
        SoakParams {
            duration: Duration::from_secs(minutes * 60),
            per_minute: 10,
            lifetime: Duration::from_secs(120),
            sample_every: Duration::from_secs(60),
            log_dir,
        }
    }

    /// CI's short form: 3 minutes, pods living 40 s, a sample every 20 s.
    pub fn quick(log_dir: PathBuf) -> SoakParams {
        SoakParams {
            duration: Duration::from_secs(180),
            per_minute: 10,
            lifetime: Duration::from_secs(40),
            sample_every: Duration::from_secs(20),
            log_dir,
        }
    }
}

/// What could leak, at one instant.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Seconds since the first pod was created.
    pub at_s: f64,
    /// Pods in the API on the node.
    pub pods: usize,
    /// Agent resident memory, KiB.
    pub rss_kib: u64,
    /// Agent open file descriptors.
    pub fds: u64,
    /// Agent threads.
    pub threads: u64,
    /// Agent tasks: Bosun's live async tasks (`bosun_runtime_alive_tasks`), the kubelet's
    /// goroutines (`go_goroutines`), from its /metrics; 0 when the scrape failed.
    pub tasks: u64,
    /// Cgroups under the node's cgroup root.
    pub cgroups: u64,
    /// Mounts under the node's directories (root dir, logs, the runtime's state).
    pub mounts: u64,
    /// The runtime's pod sandboxes, any state.
    pub sandboxes: u64,
    /// The runtime's containers, any state.
    pub containers: u64,
}

/// One figure of a sample: its metric name, what it is, and how it is read.
pub type Figure = (&'static str, &'static str, fn(&Sample) -> f64);

/// The figures a sample has.
pub const FIGURES: &[Figure] = &[
    ("rss_kib", "agent RSS, KiB", |s| s.rss_kib as f64),
    ("fds", "agent open file descriptors", |s| s.fds as f64),
    ("threads", "agent threads", |s| s.threads as f64),
    ("tasks", "agent tasks (Bosun) / goroutines (kubelet)", |s| {
        s.tasks as f64
    }),
    ("cgroups", "cgroups under the node's root", |s| {
        s.cgroups as f64
    }),
    ("mounts", "mounts under the node's dirs", |s| {
        s.mounts as f64
    }),
    ("sandboxes", "runtime pod sandboxes", |s| s.sandboxes as f64),
    ("containers", "runtime containers", |s| s.containers as f64),
];

/// What one agent's soak measured.
#[derive(Debug)]
pub struct SoakOutcome {
    /// The idle node before the first pod.
    pub idle: Sample,
    /// One per `sample_every` while pods come and go.
    pub samples: Vec<Sample>,
    /// Every pod deleted and gone, the node left alone for a few seconds.
    pub after: Sample,
    /// Pods created.
    pub created: usize,
    /// Pods that never showed Running (or Succeeded, or a crash loop's restart) while they lived.
    pub never_started: Vec<String>,
    /// The node's runtime, e.g. `containerd://2.1.4`.
    pub runtime_version: String,
}

impl SoakOutcome {
    /// The least-squares slope of `figure` per hour over the samples taken after `from_s`.
    pub fn slope_per_hour(&self, figure: fn(&Sample) -> f64, from_s: f64) -> Option<f64> {
        let points: Vec<(f64, f64)> = self
            .samples
            .iter()
            .filter(|s| s.at_s >= from_s)
            .map(|s| (s.at_s / 3600.0, figure(s)))
            .collect();
        slope(&points)
    }
}

/// Least-squares slope of `points` (x, y); `None` with fewer than two distinct x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    if points.len() < 2 {
        return None;
    }
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// The soak's mix, by creation number: what the `i`th pod runs.
fn soak_pod(i: usize, node: &str) -> Pod {
    let name = format!("soak-{i}");
    let base = PodBuilder::new(&name)
        .without_namespace()
        .label("app", "soak")
        .node(node)
        .grace(5);
    let sleeper = || Container::exec("main", COMMAND);
    match i % 6 {
        // A long sleeper with the default token volume.
        0 => base.service_account_token().container(sleeper()),
        // A crash loop: restarted with back-off until deleted.
        1 => base.container(Container::sh("main", "echo crashing; exit 1")),
        // Two init containers before the sleeper.
        2 => base
            .init_container(Container::sh("init-a", "echo a > /work/a").mount("work", "/work"))
            .init_container(Container::sh("init-b", "test -f /work/a").mount("work", "/work"))
            .empty_dir("work")
            .container(sleeper().mount("work", "/work")),
        // A configMap volume read by the container.
        3 => base
            .volume(serde_json::json!({"name": "cfg", "configMap": {"name": "soak"}}))
            .container(
                Container::sh(
                    "main",
                    "cat /cfg/greeting; trap 'exit 0' TERM; sleep 3600 & wait",
                )
                .mount("cfg", "/cfg"),
            ),
        // Exec readiness and liveness probes every 2 s.
        4 => {
            let probe = serde_json::json!({"exec": {"command": ["true"]}, "periodSeconds": 2});
            base.container(
                sleeper()
                    .with("readinessProbe", probe.clone())
                    .with("livenessProbe", probe),
            )
        }
        // A pod that completes.
        _ => base
            .restart_policy("Never")
            .container(Container::sh("main", "echo done")),
    }
    .build()
}

/// True once the pod has shown it ran: Running, Succeeded, or a container that restarted.
fn started(p: &Pod) -> bool {
    let Some(st) = p.status.as_ref() else {
        return false;
    };
    matches!(st.phase.as_deref(), Some("Running" | "Succeeded"))
        || st
            .container_statuses
            .iter()
            .flatten()
            .any(|c| c.restart_count > 0)
}

/// Runs `agent` through the soak on a new node.
pub async fn run(agent: Agent, p: &SoakParams) -> anyhow::Result<SoakOutcome> {
    let stage = Stage::new(agent, "soak", NodeOptions::default()).await?;
    let mut process = None;
    let result = soak(agent, p, &stage, &mut process).await;
    let file = format!("soak-{}", agent.name());
    stage.finish(&mut process, &p.log_dir, &file).await;
    result
}

async fn soak(
    agent: Agent,
    p: &SoakParams,
    stage: &Stage,
    process: &mut Option<crate::agent::AgentProcess>,
) -> anyhow::Result<SoakOutcome> {
    scenario::namespace_ready(&stage.client, &stage.ns).await?;
    let pods: Api<Pod> = Api::namespaced(stage.client.clone(), &stage.ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(stage.client.clone(), &stage.ns);
    config_maps
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "soak"}, "data": {"greeting": "hello"}
            }))?,
        )
        .await
        .context("create the soak configMap")?;
    let tracker = Tracker::start(pods.clone()).await?;
    let proc = start_until_ready(agent, &stage.node, &stage.client, process).await?;
    let pid = proc.pid();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let t0 = Instant::now();
    let idle = sample(pid, &stage.node, 0.0, 0).await;
    let every = Duration::from_secs(60) / p.per_minute.max(1);
    let mut tick = tokio::time::interval(every);
    let mut next_sample = t0 + p.sample_every;
    let mut living: Vec<(String, Instant)> = Vec::new();
    let mut samples = Vec::new();
    let mut never_started = Vec::new();
    let mut created = 0;
    while t0.elapsed() < p.duration {
        tick.tick().await;
        let pod = soak_pod(created, &stage.node.name);
        let name = pod.metadata.name.clone().unwrap_or_default();
        pods.create(&PostParams::default(), &pod)
            .await
            .with_context(|| format!("create {name}"))?;
        living.push((name, Instant::now()));
        created += 1;
        let (old, young): (Vec<_>, Vec<_>) = living
            .into_iter()
            .partition(|(_, at)| at.elapsed() >= p.lifetime);
        living = young;
        for (name, _) in old {
            if !pods.get_opt(&name).await?.as_ref().is_some_and(started) {
                progress(format_args!(
                    "{}: {name} never started in {:?}",
                    agent.name(),
                    p.lifetime
                ));
                never_started.push(name.clone());
            }
            pods.delete(&name, &DeleteParams::default()).await?;
        }
        if Instant::now() >= next_sample {
            next_sample += p.sample_every;
            let s = sample(
                pid,
                &stage.node,
                t0.elapsed().as_secs_f64(),
                tracker.counts().0,
            )
            .await;
            report(agent, &s);
            samples.push(s);
        }
        if let Some(status) = process.as_mut().and_then(|p| p.exited()) {
            anyhow::bail!("{} exited during the soak ({status})", agent.name());
        }
    }
    let names: Vec<String> = (0..created).map(|i| format!("soak-{i}")).collect();
    scenario::delete_all(&pods, &tracker, &names, Duration::from_secs(300)).await?;
    // Give the agent its housekeeping (the runtime's objects of deleted pods go at once, on
    // both agents; orphaned cgroups and mounts at the next cleanup pass).
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = sample(pid, &stage.node, t0.elapsed().as_secs_f64(), 0).await;
    progress(format_args!("{}: after deleting every pod", agent.name()));
    report(agent, &after);
    Ok(SoakOutcome {
        idle,
        samples,
        after,
        created,
        never_started,
        runtime_version: stage.runtime_version.clone(),
    })
}

fn report(agent: Agent, s: &Sample) {
    progress(format_args!(
        "{}: {:.0} s, {} pods: rss {} KiB, fds {}, threads {}, tasks {}, cgroups {}, mounts {}, sandboxes {}, containers {}",
        agent.name(),
        s.at_s,
        s.pods,
        s.rss_kib,
        s.fds,
        s.threads,
        s.tasks,
        s.cgroups,
        s.mounts,
        s.sandboxes,
        s.containers
    ));
}

/// Reads every figure for the agent `pid` on `node`.
async fn sample(pid: u32, node: &ClusterNode, at_s: f64, pods: usize) -> Sample {
    let cri = node.cri().await;
    let sandboxes = cri.list_pod_sandbox(None).await.map_or(0, |v| v.len());
    let containers = cri.list_containers(None).await.map_or(0, |v| v.len());
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let threads = status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count() as u64);
    let tasks = agent_tasks(node).await;
    let dirs = [node.path().to_path_buf(), node.ctd.dir().to_path_buf()];
    Sample {
        at_s,
        pods,
        rss_kib: procfs::rss_kib(pid),
        fds,
        threads,
        tasks,
        cgroups: cgroups_under(&node.ctd.cgroup_root()),
        mounts: mounts_under(&dirs),
        sandboxes: sandboxes as u64,
        containers: containers as u64,
    }
}

/// The agent's live tasks from its /metrics on the kubelet port: Bosun's
/// `bosun_runtime_alive_tasks` or the kubelet's `go_goroutines`; 0 when unread. The serving
/// certificate is checked for the node's name (the kubelet's self-signed one names nothing
/// else).
async fn agent_tasks(node: &ClusterNode) -> u64 {
    let client = node.admin_kubelet().with_server_name(&node.name);
    let Ok(a) = client.get("/metrics").await else {
        return 0;
    };
    a.text()
        .lines()
        .filter(|l| l.starts_with("bosun_runtime_alive_tasks ") || l.starts_with("go_goroutines "))
        .find_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0, |v| v as u64)
}

/// Mounts whose mount point is under one of `dirs`.
fn mounts_under(dirs: &[PathBuf]) -> u64 {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| dirs.iter().any(|d| Path::new(m).starts_with(d)))
        .count() as u64
}

/// Metric names a soak run prints (`tests/soak/run` fails without one).
pub const REQUIRED: &[&str] = &[
    "soak_pods_created",
    "soak_never_started",
    "soak_rss_kib_slope_per_hour",
    "soak_fds_slope_per_hour",
    "soak_threads_slope_per_hour",
    "soak_tasks_slope_per_hour",
    "soak_cgroups_after",
    "soak_mounts_after",
    "soak_sandboxes_after",
    "soak_containers_after",
];

/// What the run shows leaked or went wrong on the agent: a pod that never started, or, once
/// every pod is deleted, a runtime object left or more cgroups or mounts than the idle node had.
pub fn problems(o: &SoakOutcome) -> Vec<String> {
    let mut out: Vec<String> = o
        .never_started
        .iter()
        .map(|n| format!("{n} never started"))
        .collect();
    let left = [
        ("sandboxes", o.after.sandboxes, 0),
        ("containers", o.after.containers, 0),
        ("cgroups", o.after.cgroups, o.idle.cgroups),
        ("mounts", o.after.mounts, o.idle.mounts),
    ];
    for (what, after, idle) in left {
        if after > idle {
            out.push(format!(
                "{what}: {after} after deleting every pod, {idle} on the idle node"
            ));
        }
    }
    out
}

/// The report: per figure and agent, the idle value, the first and last steady samples, the
/// slope per hour over the steady part, and the value after every pod was deleted; as
/// `bench soak_<metric> bosun=<v> kubelet=<v>` lines, with a table before them.
pub fn lines(
    p: &SoakParams,
    bosun: Option<&SoakOutcome>,
    kubelet: Option<&SoakOutcome>,
) -> Vec<String> {
    let steady_from = p.lifetime.as_secs_f64();
    let fmt = |v: Option<f64>, decimals: usize| {
        v.map_or("n/a".to_string(), |v| format!("{v:.decimals$}"))
    };
    let mut out = vec![
        format!(
            "Soak: {:.0} min, {} pods a minute, each deleted at {} s; slopes over the samples \
             after {steady_from:.0} s.",
            p.duration.as_secs_f64() / 60.0,
            p.per_minute,
            p.lifetime.as_secs()
        ),
        String::new(),
        "| figure | agent | idle | first steady | last | slope per hour | after deleting all |"
            .into(),
        "|---|---|---|---|---|---|---|".into(),
    ];
    let mut metric_lines = Vec::new();
    for (figure, what, read) in FIGURES {
        for (name, o) in [("bosun", bosun), ("kubelet", kubelet)] {
            let Some(o) = o else { continue };
            let steady: Vec<&Sample> = o.samples.iter().filter(|s| s.at_s >= steady_from).collect();
            out.push(format!(
                "| {what} | {name} | {} | {} | {} | {} | {} |",
                read(&o.idle),
                fmt(steady.first().map(|s| read(s)), 0),
                fmt(steady.last().map(|s| read(s)), 0),
                fmt(o.slope_per_hour(*read, steady_from), 1),
                read(&o.after),
            ));
        }
        let slope =
            |o: Option<&SoakOutcome>| fmt(o.and_then(|o| o.slope_per_hour(*read, steady_from)), 1);
        metric_lines.push(format!(
            "bench soak_{figure}_slope_per_hour bosun={} kubelet={}",
            slope(bosun),
            slope(kubelet)
        ));
        let after = |o: Option<&SoakOutcome>| fmt(o.map(|o| read(&o.after) - read(&o.idle)), 0);
        metric_lines.push(format!(
            "bench soak_{figure}_after bosun={} kubelet={} (after deleting every pod, minus idle)",
            after(bosun),
            after(kubelet)
        ));
    }
    let created = |o: Option<&SoakOutcome>| fmt(o.map(|o| o.created as f64), 0);
    let never = |o: Option<&SoakOutcome>| fmt(o.map(|o| o.never_started.len() as f64), 0);
    metric_lines.push(format!(
        "bench soak_pods_created bosun={} kubelet={}",
        created(bosun),
        created(kubelet)
    ));
    metric_lines.push(format!(
        "bench soak_never_started bosun={} kubelet={}",
        never(bosun),
        never(kubelet)
    ));
    out.push(String::new());
    out.extend(metric_lines);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slope_of_a_line_and_of_too_few_points() {
        let line: Vec<(f64, f64)> = (0..5).map(|i| (i as f64, 3.0 * i as f64 + 7.0)).collect();
        assert!((slope(&line).unwrap() - 3.0).abs() < 1e-9);
        assert_eq!(slope(&[(1.0, 2.0)]), None);
        assert_eq!(slope(&[(1.0, 2.0), (1.0, 5.0)]), None);
        let flat = [(0.0, 4.0), (1.0, 5.0), (2.0, 4.0), (3.0, 5.0)];
        assert!(slope(&flat).unwrap().abs() < 0.5);
    }
}
