//! The hollow-node scale benchmark (`tests/bench/run --nodes N`, issue #20): N hollow nodes of one
//! agent (crate::hollow: Bosun on fake-cri, or kubemark's hollow kubelet) against the test control
//! plane; a Deployment of `pods_per_node` x N pods on them; a hold; the Deployment deleted. What
//! it measures: the API server's CPU and RSS, the nodes' API requests by verb and resource (audit
//! log), each agent's CPU and RSS, and pod startup (first watch event of the pod -> Running and
//! Ready in the API).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};

use super::audit::{self, Cursor};
use super::pods::Tracker;
use super::procfs::{self, Usage};
use super::scenario::{create_namespace, namespace_ready, progress};
use super::stats;
use crate::agent::node_ready;
use crate::env::Env;
use crate::hollow::{
    HOLLOW_LABEL, HollowAgent, HollowNode, HollowProcess, SharedFakeCri, deployment,
};
use crate::{admin_client, env::env_dir};

/// How long the API server's CPU is sampled before a phase's agents start.
const IDLE_BASELINE: Duration = Duration::from_secs(30);

/// Sizes and durations of one phase.
#[derive(Debug, Clone)]
pub struct HollowParams {
    /// Hollow nodes.
    pub nodes: usize,
    /// Pods per node in the Deployment.
    pub pods_per_node: usize,
    /// How long the pods run while measured.
    pub hold: Duration,
    /// Pause between all nodes Ready and the Deployment.
    pub settle: Duration,
    /// Where the first node's agent log is copied.
    pub log_dir: PathBuf,
    /// Bosun's nodes per fake-cri process (1: each its own process; more: one process serving
    /// a runtime of its own to each of that many nodes, see [`SharedFakeCri`]).
    pub nodes_per_runtime: usize,
}

/// What one phase measured.
#[derive(Debug)]
pub struct HollowOutcome {
    /// The agent.
    pub agent: HollowAgent,
    /// Nodes.
    pub nodes: usize,
    /// Pods.
    pub pods: usize,
    /// Agents started -> every Node Ready, seconds.
    pub register_s: f64,
    /// Deployment created -> every pod Running and Ready, seconds.
    pub all_ready_s: f64,
    /// Per pod: first seen -> Running and Ready, ms.
    pub startup_ms: Vec<f64>,
    /// Per pod: first seen bound to its node -> Running and Ready (the agent's share), ms.
    pub bound_to_ready_ms: Vec<f64>,
    /// The API server's CPU before any agent started (its controllers and the scheduler alone),
    /// cores: subtracted to get what the nodes cost it.
    pub apiserver_idle_cores: f64,
    /// The API server over the hold.
    pub apiserver: Usage,
    /// The API server's CPU from the first agent start to the last pod gone, seconds.
    pub apiserver_phase_cpu_s: f64,
    /// The hold's length, seconds.
    pub hold_s: f64,
    /// The hollow nodes' API requests over the hold, by `verb resource`.
    pub requests: BTreeMap<String, usize>,
    /// Mean agent CPU per node over the hold, seconds.
    pub agent_cpu_s: f64,
    /// Mean agent RSS per node at the end of the hold, MiB.
    pub agent_rss_mb: f64,
    /// Mean fake-cri CPU per node over the hold, seconds (Bosun: a process of its own; kubemark
    /// runs the fake runtime inside the agent, so its agent figures include it).
    pub fake_cri_cpu_s: Option<f64>,
    /// Mean fake-cri RSS per node, MiB.
    pub fake_cri_rss_mb: Option<f64>,
    /// Deployment deleted -> every pod gone, seconds.
    pub teardown_s: f64,
}

impl HollowOutcome {
    /// Pod startup percentile `p` (0-100), ms.
    pub fn startup(&self, p: f64) -> Option<f64> {
        stats::percentile(&self.startup_ms, p)
    }

    /// The API server's CPU over the hold, cores.
    pub fn apiserver_cores(&self) -> f64 {
        self.apiserver.cpu_seconds / self.hold_s
    }

    /// The API server's CPU over the hold above its idle baseline, per node, millicores: what
    /// one node's agent costs the control plane.
    pub fn apiserver_millicores_per_node_above_idle(&self) -> f64 {
        (self.apiserver_cores() - self.apiserver_idle_cores) * 1000.0 / self.nodes as f64
    }

    /// The hollow nodes' API requests per second over the hold.
    pub fn requests_per_s(&self) -> f64 {
        audit::total(&self.requests) as f64 / self.hold_s
    }
}

/// The pid of the test control plane's kube-apiserver.
fn apiserver_pid() -> anyhow::Result<u32> {
    let path = env_dir().join("cluster/pids/kube-apiserver.pid");
    let text = std::fs::read_to_string(&path).with_context(|| format!("{}", path.display()))?;
    text.trim()
        .parse()
        .with_context(|| format!("{}: not a pid", path.display()))
}

/// Runs one phase: `agent` on `p.nodes` hollow nodes.
pub async fn run(agent: HollowAgent, p: &HollowParams) -> anyhow::Result<HollowOutcome> {
    let client = admin_client().await;
    let group = format!("{}-{}", agent.name(), std::process::id());
    let ns = format!("hollow-{group}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    create_namespace(&namespaces, &ns).await?;
    namespace_ready(&client, &ns).await?;
    let nodes = {
        let (n, group) = (p.nodes, group.clone());
        tokio::task::spawn_blocking(move || {
            let prefix = format!("hollow-{}", agent.name());
            (0..n)
                .map(|_| HollowNode::new(&prefix, &group))
                .collect::<Vec<_>>()
        })
        .await?
    };
    progress(format_args!(
        "{}: {} hollow nodes prepared",
        agent.name(),
        nodes.len()
    ));
    let mut procs = Vec::new();
    let mut runtimes = Vec::new();
    let result = measure(agent, p, &client, &ns, &nodes, (&mut procs, &mut runtimes)).await;
    if let Some(first) = procs.first() {
        let _ = std::fs::create_dir_all(&p.log_dir);
        let to = p
            .log_dir
            .join(format!("hollow-{}-{}.log", agent.name(), p.nodes));
        let _ = std::fs::copy(&first.log, to);
    }
    drop(procs);
    drop(runtimes);
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    let _ = std::process::Command::new(Env::cluster().var("KUBECTL"))
        .args(["delete", "nodes", "-l", &format!("{HOLLOW_LABEL}={group}")])
        .args(["--wait=false"])
        .env("KUBECONFIG", Env::cluster().var("KUBECONFIG"))
        .output();
    tokio::task::spawn_blocking(move || drop(nodes)).await?;
    result
}

async fn measure(
    agent: HollowAgent,
    p: &HollowParams,
    client: &kube::Client,
    ns: &str,
    nodes: &[HollowNode],
    (procs, runtimes): (&mut Vec<HollowProcess>, &mut Vec<SharedFakeCri>),
) -> anyhow::Result<HollowOutcome> {
    let api_pid = apiserver_pid()?;
    let idle = procfs::measure(api_pid, IDLE_BASELINE)
        .await
        .context("API server gone before the phase")?;
    let apiserver_idle_cores = idle.cpu_seconds / IDLE_BASELINE.as_secs_f64();
    let api_cpu0 = procfs::cpu_seconds(api_pid).context("API server gone")?;
    let started = Instant::now();
    if agent == HollowAgent::Bosun && p.nodes_per_runtime > 1 {
        for chunk in nodes.chunks(p.nodes_per_runtime) {
            runtimes.push(SharedFakeCri::start(chunk));
        }
        for n in nodes {
            procs.push(n.start_on_shared_runtime());
        }
    } else {
        for n in nodes {
            procs.push(n.start(agent));
        }
    }
    let fake_pids: Vec<u32> = procs
        .iter()
        .filter_map(HollowProcess::fake_cri_pid)
        .chain(runtimes.iter().map(SharedFakeCri::pid))
        .collect();
    let group = &nodes.first().context("no nodes")?.group;
    wait_nodes_ready(client, group, nodes.len(), procs).await?;
    let register_s = started.elapsed().as_secs_f64();
    progress(format_args!(
        "{}: {} nodes Ready in {register_s:.1} s",
        agent.name(),
        nodes.len()
    ));
    tokio::time::sleep(p.settle).await;

    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let tracker = Tracker::start(pods.clone()).await?;
    let total = p.nodes * p.pods_per_node;
    let deploys: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let d: Deployment = serde_json::from_value(deployment("load", total, group, None))?;
    let created = Instant::now();
    deploys.create(&PostParams::default(), &d).await?;
    wait_counts(
        &tracker,
        Duration::from_secs(300 + total as u64),
        |_, ready| ready >= total,
    )
    .await
    .with_context(|| format!("{total} pods Running and Ready"))?;
    let all_ready_s = created.elapsed().as_secs_f64();
    progress(format_args!(
        "{}: {total} pods Ready in {all_ready_s:.1} s; holding {} s",
        agent.name(),
        p.hold.as_secs()
    ));

    let audit_log = PathBuf::from(Env::cluster().var("AUDIT_LOG"));
    let cursor = Cursor::at_end(&audit_log)?;
    let from = Timestamp::now();
    let agents0 = cpu_of(procs.iter().map(HollowProcess::pid))?;
    let fakes0 = cpu_of(fake_pids.iter().copied());
    let apiserver = procfs::measure(api_pid, p.hold)
        .await
        .context("API server gone during the hold")?;
    let agents1 = cpu_of(procs.iter().map(HollowProcess::pid))?;
    let fakes1 = cpu_of(fake_pids.iter().copied());
    let to = Timestamp::now();
    let rss = rss_of(procs.iter().map(HollowProcess::pid));
    let fake_rss = rss_of(fake_pids.iter().copied());
    if let Some(i) = procs.iter_mut().position(|p| p.exited().is_some()) {
        bail!(
            "an agent exited during the hold; log: {}",
            procs[i].log.display()
        );
    }
    let requests = audit::requests_of_users(&cursor.read_since()?, "system:node:hollow-", from, to);
    let startup_ms = tracker.startups_ms();
    let bound_to_ready_ms = tracker.bound_to_ready_ms();

    let deleted = Instant::now();
    deploys.delete("load", &DeleteParams::default()).await?;
    wait_counts(
        &tracker,
        Duration::from_secs(300 + total as u64),
        |present, _| present == 0,
    )
    .await
    .context("pods gone")?;
    let teardown_s = deleted.elapsed().as_secs_f64();
    let api_cpu1 = procfs::cpu_seconds(api_pid).context("API server gone")?;
    let n = p.nodes as f64;
    Ok(HollowOutcome {
        agent,
        nodes: p.nodes,
        pods: total,
        register_s,
        all_ready_s,
        startup_ms,
        bound_to_ready_ms,
        apiserver_idle_cores,
        apiserver,
        apiserver_phase_cpu_s: api_cpu1 - api_cpu0,
        hold_s: p.hold.as_secs_f64(),
        requests,
        agent_cpu_s: (agents1 - agents0) / n,
        agent_rss_mb: rss.0 / n,
        fake_cri_cpu_s: fakes0
            .ok()
            .zip(fakes1.ok())
            .filter(|_| fake_rss.1 > 0)
            .map(|(a, b)| (b - a) / n),
        fake_cri_rss_mb: (fake_rss.1 > 0).then(|| fake_rss.0 / n),
        teardown_s,
    })
}

/// Waits until `n` Nodes of `group` are Ready, failing early when an agent exits.
async fn wait_nodes_ready(
    client: &kube::Client,
    group: &str,
    n: usize,
    procs: &mut [HollowProcess],
) -> anyhow::Result<()> {
    let nodes: Api<Node> = Api::all(client.clone());
    let lp = ListParams::default().labels(&format!("{HOLLOW_LABEL}={group}"));
    let deadline = Instant::now() + Duration::from_secs(120 + n as u64);
    loop {
        if let Some(i) = procs.iter_mut().position(|p| p.exited().is_some()) {
            bail!(
                "a hollow node's agent exited; log: {}",
                procs[i].log.display()
            );
        }
        let ready = nodes
            .list(&lp)
            .await?
            .items
            .iter()
            .filter(|n| node_ready(n))
            .count();
        if ready >= n {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{ready} of {n} hollow nodes Ready after the deadline");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Polls the tracker's (present, ready) counts every 100 ms until `done`.
async fn wait_counts(
    tracker: &Tracker,
    timeout: Duration,
    done: impl Fn(usize, usize) -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let (present, ready) = tracker.counts();
        if done(present, ready) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("after {timeout:?}: {present} pods present, {ready} were Ready");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Summed CPU seconds of `pids`; an error when one is gone.
fn cpu_of(pids: impl Iterator<Item = u32>) -> anyhow::Result<f64> {
    pids.map(|pid| procfs::cpu_seconds(pid).with_context(|| format!("process {pid} gone")))
        .sum()
}

/// Summed RSS of `pids`, MiB, and how many were read.
fn rss_of(pids: impl Iterator<Item = u32>) -> (f64, usize) {
    pids.filter_map(procfs::rss_mb)
        .fold((0.0, 0), |(sum, n), r| (sum + r, n + 1))
}

/// `bench hollow_<metric> nodes=<N> bosun=<v> kubemark=<v> ratio=<r>`, one line per metric, and
/// the hollow nodes' requests per second by verb and resource for each agent.
pub fn lines(bosun: Option<&HollowOutcome>, kubemark: Option<&HollowOutcome>) -> Vec<String> {
    let nodes = bosun.or(kubemark).map(|o| o.nodes).unwrap_or(0);
    let metric = |name: &str, decimals: usize, f: &dyn Fn(&HollowOutcome) -> Option<f64>| {
        let b = bosun.and_then(f);
        let k = kubemark.and_then(f);
        let ratio = match (b, k) {
            (Some(b), Some(k)) if k != 0.0 => Some(b / k),
            _ => None,
        };
        format!(
            "bench hollow_{name} nodes={nodes} bosun={} kubemark={} ratio={}",
            super::report::fmt(b, decimals),
            super::report::fmt(k, decimals),
            super::report::fmt(ratio, 2)
        )
    };
    let mut out = vec![
        metric("register_s", 1, &|o| Some(o.register_s)),
        metric("all_ready_s", 1, &|o| Some(o.all_ready_s)),
        metric("startup_p50_ms", 0, &|o| o.startup(50.0)),
        metric("startup_p99_ms", 0, &|o| o.startup(99.0)),
        metric("bound_to_ready_p50_ms", 0, &|o| {
            stats::percentile(&o.bound_to_ready_ms, 50.0)
        }),
        metric("bound_to_ready_p99_ms", 0, &|o| {
            stats::percentile(&o.bound_to_ready_ms, 99.0)
        }),
        metric("slo_met", 0, &|o| {
            o.startup(99.0).map(|p| f64::from(u8::from(p <= 5000.0)))
        }),
        metric("apiserver_cpu_cores", 3, &|o| Some(o.apiserver_cores())),
        metric("apiserver_cpu_millicores_per_node", 2, &|o| {
            Some(o.apiserver_cores() * 1000.0 / o.nodes as f64)
        }),
        metric("apiserver_idle_cpu_cores", 3, &|o| {
            Some(o.apiserver_idle_cores)
        }),
        metric("apiserver_cpu_millicores_per_node_above_idle", 3, &|o| {
            Some(o.apiserver_millicores_per_node_above_idle())
        }),
        metric("apiserver_rss_mb", 0, &|o| Some(o.apiserver.rss_mean_mb)),
        metric("apiserver_phase_cpu_s", 1, &|o| {
            Some(o.apiserver_phase_cpu_s)
        }),
        metric("api_requests_per_s", 2, &|o| Some(o.requests_per_s())),
        metric("api_requests_per_s_per_node", 3, &|o| {
            Some(o.requests_per_s() / o.nodes as f64)
        }),
        metric("agent_cpu_millicores_per_node", 2, &|o| {
            Some(o.agent_cpu_s * 1000.0 / o.hold_s)
        }),
        metric("agent_rss_mb_per_node", 1, &|o| Some(o.agent_rss_mb)),
        metric("fake_cri_cpu_millicores_per_node", 2, &|o| {
            o.fake_cri_cpu_s.map(|c| c * 1000.0 / o.hold_s)
        }),
        metric("fake_cri_rss_mb_per_node", 1, &|o| o.fake_cri_rss_mb),
        metric("teardown_s", 1, &|o| Some(o.teardown_s)),
    ];
    for o in [bosun, kubemark].into_iter().flatten() {
        for (kind, count) in &o.requests {
            out.push(format!(
                "bench hollow_api_rps nodes={nodes} agent={} request=\"{kind}\" per_s={:.3}",
                o.agent.name(),
                *count as f64 / o.hold_s
            ));
        }
    }
    out
}
