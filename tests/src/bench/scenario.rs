//! One agent through the whole benchmark on a fresh node: idle window, pods one after another,
//! a burst, a steady window with the burst running, scrapes, teardown.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};

use super::audit::{self, Cursor};
use super::pods::{self, Tracker};
use super::procfs::{self, Usage};
use super::{floor, scrape};
use crate::{ClusterNode, Env, NodeOptions, admin_client};

pub use crate::agent::Agent;
use crate::agent::AgentProcess as Process;

/// Sizes and durations of a run.
#[derive(Debug, Clone)]
pub struct Params {
    /// Pods created one after another (startup latency).
    pub pods: usize,
    /// Pods created at once (burst, steady state, scrapes, teardown).
    pub burst: usize,
    /// `maxPods` of both nodes.
    pub max_pods: u32,
    /// Pause before each steady window (after node Ready, after the burst).
    pub settle: Duration,
    /// Length of each steady window.
    pub window: Duration,
    /// Timed scrapes per endpoint (and `/run` round trips).
    pub scrapes: usize,
    /// Size of the file downloaded through port-forward, MiB.
    pub stream_mib: usize,
    /// Where the agents' logs are copied.
    pub log_dir: PathBuf,
    /// MiB of container log followed for `logs_follow_mb_s`.
    pub log_mib: u64,
    /// Evictions measured for `eviction_reaction_ms`, each on real disk pressure.
    pub eviction_runs: usize,
}

/// A steady window: process usage and the API requests made during it.
#[derive(Debug, Clone)]
pub struct Window {
    /// CPU and memory of the agent process.
    pub usage: Usage,
    /// Requests by `verb resource`.
    pub requests: BTreeMap<String, usize>,
    /// The window's length.
    pub length: Duration,
}

impl Window {
    /// API requests per minute over the window.
    pub fn requests_per_minute(&self) -> f64 {
        audit::total(&self.requests) as f64 * 60.0 / self.length.as_secs_f64()
    }
}

/// What one agent measured.
#[derive(Debug)]
pub struct Outcome {
    /// From start to the Node's Ready condition True, seconds.
    pub node_ready_s: f64,
    /// Per sequential pod: create call returned -> watch shows Running and Ready, ms.
    pub startup_ms: Vec<f64>,
    /// From the first create of the burst to the last pod Ready, seconds.
    pub burst_all_ready_s: f64,
    /// Per burst pod: its create call returned -> Running and Ready, ms.
    pub burst_ms: Vec<f64>,
    /// No pods.
    pub idle: Window,
    /// The burst's pods running.
    pub steady: Window,
    /// Median `/stats/summary` latency, ms, or why not.
    pub summary_ms: Result<f64, String>,
    /// Median `/metrics/resource` latency, ms, or why not.
    pub resource_ms: Result<f64, String>,
    /// `/run` round trips and port-forward throughput.
    pub streaming: super::streaming::Figures,
    /// A container's log followed on the node port, or why not.
    pub logs_follow: Result<super::logs::Follow, String>,
    /// From the delete call to every burst pod gone from the API, seconds.
    pub teardown_s: f64,
    /// Every request of the node's user from the agent's start to the end of the teardown.
    pub run_requests: BTreeMap<String, usize>,
    /// The probe phase (after the teardown: `burst` probed pods), or why not.
    pub probes: Result<super::probes::Figures, String>,
    /// Threshold crossed -> pod evicted, per run, ms (a node of its own), or why not.
    pub eviction_ms: Result<Vec<f64>, String>,
}

/// Prints a progress line on stderr.
pub fn progress(msg: impl std::fmt::Display) {
    eprintln!("[bench {}] {msg}", Timestamp::now().strftime("%H:%M:%S"));
}

/// A fresh node for one agent's run: its own name, containerd and credentials, the images
/// present (nothing measured pulls) and a namespace named after it.
pub struct Stage {
    /// The node.
    pub node: ClusterNode,
    /// An admin client.
    pub client: kube::Client,
    /// The namespace of the run's pods.
    pub ns: String,
    /// The node's runtime as CRI names it, e.g. `containerd://2.1.4`.
    pub runtime_version: String,
}

impl Stage {
    /// Makes the node (`bench-<prefix>-<agent>`) and its namespace.
    pub async fn new(agent: Agent, prefix: &str, opts: NodeOptions) -> anyhow::Result<Stage> {
        let prefix = format!("{prefix}-{}", agent.name());
        let node =
            tokio::task::spawn_blocking(move || ClusterNode::with_options(&prefix, &opts)).await?;
        progress(format_args!("{}: node {}", agent.name(), node.name));
        let runtime_version = floor::prepare(&node.ctd)
            .await?
            .runtime_version()
            .node_info_string();
        let client = admin_client().await;
        let ns = node.name.clone();
        create_namespace(&Api::all(client.clone()), &ns).await?;
        Ok(Stage {
            node,
            client,
            ns,
            runtime_version,
        })
    }

    /// Stops the agent (its log copied into `log_dir` as `<file>.log`), deletes the namespace
    /// and the node.
    pub async fn finish(self, process: &mut Option<Process>, log_dir: &Path, file: &str) {
        if let Some(proc) = process.as_mut() {
            proc.stop();
            let to = log_dir.join(format!("{file}.log"));
            if std::fs::copy(proc.log(), &to).is_ok() {
                progress(format_args!("{file}: log in {}", to.display()));
            }
        }
        *process = None;
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        let _ = namespaces.delete(&self.ns, &DeleteParams::default()).await;
        let node = self.node;
        let _ = tokio::task::spawn_blocking(move || drop(node)).await;
    }
}

/// Runs `agent` through the benchmark on a new node (own name, containerd and credentials).
pub async fn run(agent: Agent, p: &Params) -> anyhow::Result<Outcome> {
    let opts = NodeOptions {
        max_pods: Some(p.max_pods),
        // The followed log stays one file: a rotation while it is written (10Mi by default)
        // would leave the follow, which starts at the current file, short of its bytes.
        extra_config: format!("containerLogMaxSize: {}Mi\n", 2 * p.log_mib + 10),
        ..Default::default()
    };
    let stage = Stage::new(agent, "bench", opts).await?;
    let mut process = None;
    let result = measure(
        agent,
        p,
        &stage.node,
        &stage.client,
        &stage.ns,
        &mut process,
    )
    .await;
    stage.finish(&mut process, &p.log_dir, agent.name()).await;
    let mut outcome = result?;
    progress(format_args!(
        "{}: eviction reaction, {} runs on a node of its own",
        agent.name(),
        p.eviction_runs
    ));
    outcome.eviction_ms = super::eviction::measure(agent, p.eviction_runs)
        .await
        .map_err(|e| format!("{e:#}"));
    match &outcome.eviction_ms {
        Ok(v) => progress(format_args!(
            "{}: eviction reaction {v:.0?} ms",
            agent.name()
        )),
        Err(e) => progress(format_args!("{}: eviction not measured: {e}", agent.name())),
    }
    Ok(outcome)
}

async fn measure(
    agent: Agent,
    p: &Params,
    node: &ClusterNode,
    client: &kube::Client,
    ns: &str,
    process: &mut Option<Process>,
) -> anyhow::Result<Outcome> {
    let env = Env::cluster();
    let audit_log = PathBuf::from(env.var("AUDIT_LOG"));
    let user = format!("system:node:{}", node.name);
    namespace_ready(client, ns).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let tracker = Tracker::start(pods.clone()).await?;

    let run_cursor = Cursor::at_end(&audit_log)?;
    let run_from = Timestamp::now();
    let t_start = Instant::now();
    let proc = start_until_ready(agent, node, client, process).await?;
    let pid = proc.pid();
    let node_ready_s = t_start.elapsed().as_secs_f64();
    progress(format_args!(
        "{}: node Ready after {node_ready_s:.1} s",
        agent.name()
    ));

    tokio::time::sleep(p.settle).await;
    let idle = window(pid, &user, &audit_log, p.window).await?;
    progress(format_args!(
        "{}: idle {:.0} s: cpu {:.3} s, rss {:.1} MiB, {:.1} API requests/min",
        agent.name(),
        p.window.as_secs_f64(),
        idle.usage.cpu_seconds,
        idle.usage.rss_mean_mb,
        idle.requests_per_minute()
    ));

    // Startup latency: one pod after another.
    let mut startup_ms = Vec::with_capacity(p.pods);
    let seq: Vec<String> = (0..p.pods).map(|i| format!("seq-{i}")).collect();
    for name in &seq {
        pods.create(&PostParams::default(), &pods::pod(name, &node.name))
            .await
            .with_context(|| format!("create pod {name}"))?;
        let created = Instant::now();
        let ready = tracker
            .ready(std::slice::from_ref(name), Duration::from_secs(120))
            .await?;
        startup_ms.push(ms(ready[0].saturating_duration_since(created)));
    }
    progress(format_args!(
        "{}: {} pods one by one: {startup_ms:.0?} ms",
        agent.name(),
        p.pods
    ));
    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    tracker.gone(&seq, Duration::from_secs(180)).await?;

    // Burst: all at once.
    let names: Vec<String> = (0..p.burst).map(|i| format!("burst-{i}")).collect();
    let t_burst = Instant::now();
    let created = futures::future::join_all(names.iter().map(|name| {
        let pods = pods.clone();
        let pod = pods::pod(name, &node.name);
        async move {
            pods.create(&PostParams::default(), &pod)
                .await
                .with_context(|| format!("create pod {}", pod.metadata.name.unwrap_or_default()))
                .map(|_| Instant::now())
        }
    }))
    .await
    .into_iter()
    .collect::<anyhow::Result<Vec<_>>>()?;
    let ready = tracker.ready(&names, Duration::from_secs(600)).await?;
    let last = ready.iter().max().copied().unwrap_or(t_burst);
    let burst_all_ready_s = last.saturating_duration_since(t_burst).as_secs_f64();
    let burst_ms: Vec<f64> = ready
        .iter()
        .zip(&created)
        .map(|(r, c)| ms(r.saturating_duration_since(*c)))
        .collect();
    progress(format_args!(
        "{}: burst of {} all Ready after {burst_all_ready_s:.2} s",
        agent.name(),
        p.burst
    ));

    tokio::time::sleep(p.settle).await;
    let steady = window(pid, &user, &audit_log, p.window).await?;
    progress(format_args!(
        "{}: {} pods {:.0} s: cpu {:.3} s, rss {:.1} MiB, {:.1} API requests/min",
        agent.name(),
        p.burst,
        p.window.as_secs_f64(),
        steady.usage.cpu_seconds,
        steady.usage.rss_mean_mb,
        steady.requests_per_minute()
    ));

    let scraper = scrape::client(env.var("NODE_IP"), node.server_port()).await;
    let (summary_ms, resource_ms) = match &scraper {
        Ok(c) => (
            scrape::median_ms(c, "/stats/summary", p.scrapes)
                .await
                .map_err(|e| format!("{e:#}")),
            scrape::median_ms(c, "/metrics/resource", p.scrapes)
                .await
                .map_err(|e| format!("{e:#}")),
        ),
        Err(e) => (Err(format!("{e:#}")), Err(format!("{e:#}"))),
    };
    let logs_follow = match &scraper {
        Ok(c) => super::logs::measure(&pods, &tracker, c, ns, &node.name, pid, p.log_mib)
            .await
            .map_err(|e| format!("{e:#}")),
        Err(e) => Err(format!("{e:#}")),
    };
    match &logs_follow {
        Ok(f) => progress(format_args!(
            "{}: {} MiB log followed at {:.1} MiB/s, agent cpu {:.3} s",
            agent.name(),
            p.log_mib,
            f.mib_s,
            f.cpu_seconds
        )),
        Err(e) => progress(format_args!(
            "{}: log follow not measured: {e}",
            agent.name()
        )),
    }
    for (path, r) in [
        ("/stats/summary", &summary_ms),
        ("/metrics/resource", &resource_ms),
    ] {
        match r {
            Ok(v) => progress(format_args!("{}: {path} median {v:.1} ms", agent.name())),
            Err(e) => progress(format_args!("{}: {path} not measured: {e}", agent.name())),
        }
    }

    let streaming = super::streaming::measure(
        scraper.as_ref().ok(),
        &pods,
        &tracker,
        &node.name,
        ns,
        p.scrapes,
        p.stream_mib,
    )
    .await?;
    progress(format_args!(
        "{}: /run median {:?} ms, port-forward median {:?} MiB/s",
        agent.name(),
        streaming.exec_ms,
        streaming.forward_mib_s
    ));

    let teardown_s = delete_all(&pods, &tracker, &names, Duration::from_secs(600)).await?;
    progress(format_args!(
        "{}: {} pods gone after {teardown_s:.2} s",
        agent.name(),
        p.burst
    ));
    let run_to = Timestamp::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let run_requests = audit::requests(&run_cursor.read_since()?, &user, run_from, run_to);
    let runtime_pid: Option<u32> = std::fs::read_to_string(node.ctd.dir().join("pid"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let probes = match runtime_pid {
        Some(runtime_pid) => super::probes::measure(
            &pods,
            &tracker,
            &node.name,
            pid,
            runtime_pid,
            p.burst,
            p.settle,
            p.window,
        )
        .await
        .map_err(|e| format!("{e:#}")),
        None => Err("no pid file of the node's containerd".into()),
    };
    match &probes {
        Ok(f) => progress(format_args!(
            "{}: {} probed pods {:.0} s: cpu {:.3} s, rss {:.1} MiB, containerd cpu {:.3} s, \
             {} probes, lag p99 {:.1} ms",
            agent.name(),
            p.burst,
            p.window.as_secs_f64(),
            f.cpu_seconds,
            f.rss_mb,
            f.runtime_cpu_seconds,
            f.probes,
            f.lag_p99_ms
        )),
        Err(e) => progress(format_args!("{}: probes not measured: {e}", agent.name())),
    }
    if let Some(status) = proc.exited() {
        bail!(
            "{} exited during the run ({status}); log: {}",
            agent.name(),
            proc.log().display()
        );
    }
    Ok(Outcome {
        node_ready_s,
        startup_ms,
        burst_all_ready_s,
        burst_ms,
        idle,
        steady,
        summary_ms,
        resource_ms,
        streaming,
        logs_follow,
        teardown_s,
        run_requests,
        probes,
        eviction_ms: Err("not measured yet".into()),
    })
}

/// Starts `agent` on `node` into `process` and waits (up to 120 s) for the Node's Ready
/// condition; fails when the agent exits first.
pub async fn start_until_ready<'a>(
    agent: Agent,
    node: &ClusterNode,
    client: &kube::Client,
    process: &'a mut Option<Process>,
) -> anyhow::Result<&'a mut Process> {
    *process = Some(agent.start(node));
    let proc = process.as_mut().expect("just set");
    proc.wait_ready(node, client, 120)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(proc)
}

/// Deletes every pod of the namespace at once and waits (up to `timeout`) for `names` to be gone
/// from the watch; seconds from the delete call to the last one gone.
pub async fn delete_all(
    pods: &Api<Pod>,
    tracker: &Tracker,
    names: &[String],
    timeout: Duration,
) -> anyhow::Result<f64> {
    let t_delete = Instant::now();
    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    let gone = tracker.gone(names, timeout).await?;
    Ok(gone
        .iter()
        .max()
        .map(|g| g.saturating_duration_since(t_delete).as_secs_f64())
        .unwrap_or(0.0))
}

/// Measures the agent over `length` and counts the node's API requests received meanwhile.
pub async fn window(
    pid: u32,
    user: &str,
    audit_log: &Path,
    length: Duration,
) -> anyhow::Result<Window> {
    let cursor = Cursor::at_end(audit_log)?;
    let from = Timestamp::now();
    let usage = procfs::measure(pid, length)
        .await
        .context("the agent process went away")?;
    let to = Timestamp::now();
    // Requests received just before `to` may still be writing their ResponseComplete event.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let requests = audit::requests(&cursor.read_since()?, user, from, to);
    Ok(Window {
        usage,
        requests,
        length,
    })
}

/// Creates namespace `ns`.
pub async fn create_namespace(namespaces: &Api<Namespace>, ns: &str) -> anyhow::Result<()> {
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))?,
        )
        .await
        .context("create namespace")?;
    Ok(())
}

/// Waits until namespace `ns` has what pods need for their token volume: the `default`
/// service account and the `kube-root-ca.crt` config map.
pub async fn namespace_ready(client: &kube::Client, ns: &str) -> anyhow::Result<()> {
    wait_for(
        Duration::from_secs(60),
        "service account and kube-root-ca.crt",
        || async {
            let sa: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
            let cm: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
            Ok(sa.get_opt("default").await?.is_some()
                && cm.get_opt("kube-root-ca.crt").await?.is_some())
        },
    )
    .await
}

/// Polls `check` every 100 ms until it returns true; fails after `timeout`.
pub async fn wait_for<F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + timeout;
    while !check().await? {
        if Instant::now() > deadline {
            bail!("{what}: not there after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
