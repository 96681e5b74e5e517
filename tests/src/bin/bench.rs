//! `bench [--quick] [--pods N] [--burst M] [--window SECS] [--settle SECS] [--scrapes K]
//! [--log-mib L] [--eviction-runs E] [--floor-runs R] [--only bosun|kubelet] [--vm] [--density
//! [--levels N,M,..]]`: Bosun against the upstream kubelet, side by side, in one run. Run
//! through `tests/bench/run`, which builds Bosun in release mode. `--vm`: startup, CPU and RSS
//! inside the VM node (cgroup v2, systemd driver; bench::vm). `--density`: a node filled to
//! maxPods in steps (bench::density).
//! `bench --nodes N[,N...] [--hold SECS] [--pods-per-node P] [--nodes-per-runtime K]`: the
//! hollow-node scale benchmark (bench::hollow), Bosun's hollow nodes then kubemark's, for each N;
//! K > 1: one fake-cri process serves K of Bosun's nodes, a runtime each.
//! `bench --soak [--minutes N] [--quick]`: both agents at once under pods created and deleted
//! without pause (bench::soak); exits non-zero when Bosun leaked or a pod never started.
//! `bench --check FILE [--density|--soak]` exits non-zero unless FILE (a run's output) has every
//! required line.

use std::time::Duration;

use anyhow::{Context, bail};
use bosun_tests::bench::density::{self, DensityParams};
use bosun_tests::bench::hollow::{self as hollow_bench, HollowParams};
use bosun_tests::bench::report::{self, Machine, Row};
use bosun_tests::bench::scenario::{self, Agent, Outcome, Params, progress};
use bosun_tests::bench::soak::{self, SoakParams};
use bosun_tests::bench::vm::{self, VmParams};
use bosun_tests::bench::{audit, floor, stats};
use bosun_tests::hollow::HollowAgent;
use bosun_tests::{Env, admin_client, bosun_bin};

struct Args {
    params: Params,
    floor_runs: usize,
    agents: Vec<Agent>,
    quick: bool,
    vm: bool,
    /// `--density` with its `--levels`.
    density: Option<Vec<usize>>,
    /// `--nodes`: the hollow-node benchmark for each of these N.
    nodes: Vec<usize>,
    /// `--hold` (hollow-node benchmark), seconds.
    hold: Option<u64>,
    /// `--pods-per-node` (hollow-node benchmark).
    pods_per_node: usize,
    /// `--nodes-per-runtime` (hollow-node benchmark: Bosun's nodes per fake-cri process).
    nodes_per_runtime: usize,
    /// `--soak`, with `--minutes` when given.
    soak: Option<Option<u64>>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("--check") {
        check_output(
            argv.get(1)
                .context("--check needs the file of a run's output")?,
            argv.iter().any(|a| a == "--density"),
            argv.iter().any(|a| a == "--soak"),
        );
    }
    let quick = argv.iter().any(|a| a == "--quick");
    let vm = argv.iter().any(|a| a == "--vm");
    let mut density = argv.iter().any(|a| a == "--density").then(Vec::new);
    let mut soak = argv.iter().any(|a| a == "--soak").then_some(None);
    argv.retain(|a| a != "--quick" && a != "--vm" && a != "--density" && a != "--soak");
    let log_dir = bosun_tests::env::env_dir().join("bench");
    let mut params = if quick {
        Params {
            pods: 3,
            burst: 5,
            max_pods: 110,
            settle: Duration::from_secs(1),
            window: Duration::from_secs(5),
            scrapes: 3,
            stream_mib: 4,
            log_dir,
            log_mib: 8,
            eviction_runs: 1,
        }
    } else {
        Params {
            pods: 20,
            burst: 50,
            max_pods: 110,
            settle: Duration::from_secs(10),
            window: Duration::from_secs(60),
            scrapes: 20,
            stream_mib: 64,
            log_dir,
            log_mib: 100,
            eviction_runs: 3,
        }
    };
    let mut floor_runs = params.pods;
    let mut agents = vec![Agent::Bosun, Agent::Kubelet];
    let (mut nodes, mut hold, mut pods_per_node) = (Vec::new(), None, 10);
    let mut nodes_per_runtime = 1;
    let mut it = argv.into_iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        let number = |v: String| -> anyhow::Result<u64> {
            v.parse()
                .with_context(|| format!("{flag}: not a number: {v}"))
        };
        match flag.as_str() {
            "--pods" => params.pods = number(value()?)? as usize,
            "--burst" => params.burst = number(value()?)? as usize,
            "--window" => params.window = Duration::from_secs(number(value()?)?),
            "--settle" => params.settle = Duration::from_secs(number(value()?)?),
            "--scrapes" => params.scrapes = number(value()?)? as usize,
            "--log-mib" => params.log_mib = number(value()?)?,
            "--eviction-runs" => params.eviction_runs = number(value()?)? as usize,
            "--floor-runs" => floor_runs = number(value()?)? as usize,
            "--levels" => {
                let levels = value()?
                    .split(',')
                    .map(|v| number(v.to_string()).map(|n| n as usize))
                    .collect::<anyhow::Result<Vec<_>>>()?;
                anyhow::ensure!(
                    !levels.is_empty() && levels[0] > 0 && levels.is_sorted_by(|a, b| a < b),
                    "--levels: increasing pod counts, the first at least 1"
                );
                density = Some(levels);
            }
            "--nodes" => {
                for n in value()?.split(',') {
                    nodes.push(number(n.to_string())? as usize);
                }
            }
            "--hold" => hold = Some(number(value()?)?),
            "--minutes" => soak = Some(Some(number(value()?)?)),
            "--pods-per-node" => pods_per_node = number(value()?)? as usize,
            "--nodes-per-runtime" => nodes_per_runtime = number(value()?)?.max(1) as usize,
            "--only" => {
                agents = match value()?.as_str() {
                    "bosun" => vec![Agent::Bosun],
                    "kubelet" => vec![Agent::Kubelet],
                    other => bail!("--only: bosun or kubelet, not {other}"),
                }
            }
            "-h" | "--help" => {
                println!(
                    "usage: bench [--quick] [--pods N] [--burst M] [--window SECS] [--settle SECS] \
                     [--scrapes K] [--log-mib L] [--eviction-runs E] [--floor-runs R] \
                     [--only bosun|kubelet] [--vm] [--density [--levels N,M,..]] | [--quick] \
                     --nodes N[,N...] [--hold SECS] [--pods-per-node P] [--only bosun|kubelet] | \
                     --soak [--minutes N] [--quick] [--only bosun|kubelet]"
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other} (see --help)"),
        }
    }
    anyhow::ensure!(
        params.pods > 0
            && params.burst > 0
            && params.scrapes > 0
            && floor_runs > 0
            && params.eviction_runs > 0,
        "--pods, --burst, --scrapes, --eviction-runs and --floor-runs must be at least 1"
    );
    anyhow::ensure!(!params.window.is_zero(), "--window must be at least 1 s");
    // The burst plus nothing else on the node: maxPods at least the burst (same for both).
    params.max_pods = params.max_pods.max(params.burst as u32);
    Ok(Args {
        params,
        floor_runs,
        agents,
        quick,
        vm,
        density,
        nodes,
        hold,
        pods_per_node,
        nodes_per_runtime,
        soak,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    if args.vm {
        return run_vm(&args).await;
    }
    if let Some(levels) = &args.density {
        return run_density(&args, levels).await;
    }
    if let Some(minutes) = args.soak {
        return run_soak(&args, minutes).await;
    }
    if !args.nodes.is_empty() {
        return run_hollow(&args).await;
    }
    let p = &args.params;
    let env = Env::cluster();
    std::fs::create_dir_all(&p.log_dir)?;
    progress(format_args!(
        "{} mode: {} pods one by one, burst {}, windows {} s after {} s, {} scrapes, floor {} runs; bosun {}",
        if args.quick { "quick" } else { "full" },
        p.pods,
        p.burst,
        p.window.as_secs(),
        p.settle.as_secs(),
        p.scrapes,
        args.floor_runs,
        bosun_bin().display()
    ));

    let mut machine = Machine::read();
    let client = admin_client().await;
    let apiserver = client
        .apiserver_version()
        .await
        .map(|v| v.git_version)
        .unwrap_or_else(|_| "?".into());
    machine.kubernetes = format!("{apiserver} (kubelet {})", env.var("KUBE_VERSION"));

    progress("CRI floor");
    let (floor_runs, containerd) = floor::measure(args.floor_runs).await.context("CRI floor")?;
    machine.containerd = containerd;
    let floor_ms: Vec<f64> = floor_runs.iter().map(|r| r.total_ms()).collect();
    let floor_p50 = stats::median(&floor_ms);
    progress(format_args!("CRI floor: {floor_ms:.0?} ms"));

    let mut bosun = None;
    let mut kubelet = None;
    for agent in &args.agents {
        let outcome = scenario::run(*agent, p)
            .await
            .with_context(|| format!("{} run", agent.name()))?;
        match agent {
            Agent::Bosun => bosun = Some(outcome),
            Agent::Kubelet => kubelet = Some(outcome),
        }
    }

    let rows = rows(p, &floor_runs, floor_p50, bosun.as_ref(), kubelet.as_ref());
    println!();
    print!("{}", report::table(&rows, &machine));
    println!();
    for (name, o) in [("bosun", &bosun), ("kubelet", &kubelet)] {
        if let Some(o) = o {
            println!(
                "{name} API requests, steady with {} pods over {} s: {}",
                p.burst,
                o.steady.length.as_secs(),
                breakdown(&o.steady.requests)
            );
            println!(
                "{name} API requests, whole run: {}",
                breakdown(&o.run_requests)
            );
            if let Err(e) = &o.summary_ms {
                println!("{name} /stats/summary: n/a ({e})");
            }
            if let Err(e) = &o.resource_ms {
                println!("{name} /metrics/resource: n/a ({e})");
            }
            if let Err(e) = &o.streaming.exec_ms {
                println!("{name} /run: n/a ({e})");
            }
            if let Err(e) = &o.streaming.forward_mib_s {
                println!("{name} port-forward: n/a ({e})");
            }
            if let Err(e) = &o.logs_follow {
                println!("{name} log follow: n/a ({e})");
            }
            match &o.probes {
                Ok(f) => println!("{name} probes: {} readiness probes received", f.probes),
                Err(e) => println!("{name} probes: n/a ({e})"),
            }
            match &o.eviction_ms {
                Ok(v) => println!("{name} eviction reactions: {v:.0?} ms"),
                Err(e) => println!("{name} eviction: n/a ({e})"),
            }
        }
    }
    println!();
    print_lines(&rows, &machine);
    Ok(())
}

/// `--vm`: both agents in the VM node, one after the other: the `vm_*` rows. Sizes: `--pods`
/// and `--burst` when given, else 10 and 20 (every container start is emulated); `--window`
/// and `--settle` as given.
async fn run_vm(args: &Args) -> anyhow::Result<()> {
    let given = |flag: &str| std::env::args().any(|a| a == flag);
    let p = VmParams {
        pods: if given("--pods") {
            args.params.pods
        } else if args.quick {
            2
        } else {
            10
        },
        burst: if given("--burst") {
            args.params.burst
        } else if args.quick {
            3
        } else {
            20
        },
        settle: args.params.settle,
        window: args.params.window,
    };
    let env = Env::cluster();
    let Some(vm) = tokio::task::block_in_place(bosun_tests::Vm::get) else {
        bail!("no VM node (tests/vm/up): see above");
    };
    let mut machine = vm::machine(vm);
    machine.kubernetes = format!("kubelet {}", env.var("KUBE_VERSION"));
    progress(format_args!(
        "VM mode: {} pods one by one, burst {}, windows {} s after {} s; {}",
        p.pods,
        p.burst,
        p.window.as_secs(),
        p.settle.as_secs(),
        machine.kernel
    ));
    let mut bosun = None;
    let mut kubelet = None;
    for agent in &args.agents {
        let outcome = vm::run(*agent, vm, &p)
            .await
            .with_context(|| format!("{} in the VM", agent.name()))?;
        match agent {
            Agent::Bosun => bosun = Some(outcome),
            Agent::Kubelet => kubelet = Some(outcome),
        }
    }
    let rows = vm::rows(&p, bosun.as_ref(), kubelet.as_ref());
    print_report(&rows, &machine);
    Ok(())
}

/// `--density`: both agents fill a node to maxPods in steps: the `density_*` rows. Levels:
/// `--levels` when given, else 110,250 (quick: 4,8); `--window` and `--settle` when given.
async fn run_density(args: &Args, levels: &[usize]) -> anyhow::Result<()> {
    let given = |flag: &str| std::env::args().any(|a| a == flag);
    let log_dir = args.params.log_dir.clone();
    std::fs::create_dir_all(&log_dir)?;
    let mut p = if args.quick {
        DensityParams::quick(log_dir)
    } else {
        DensityParams::full(log_dir)
    };
    if !levels.is_empty() {
        p.levels = levels.to_vec();
    }
    if given("--window") {
        p.window = args.params.window;
    }
    if given("--settle") {
        p.settle = args.params.settle;
    }
    let env = Env::cluster();
    let mut machine = Machine::read();
    machine.kubernetes = format!("kubelet {}", env.var("KUBE_VERSION"));
    progress(format_args!(
        "density mode: levels {:?} (the first one every {} ms, then bursts), windows {} s after {} s",
        p.levels,
        p.interval.as_millis(),
        p.window.as_secs(),
        p.settle.as_secs()
    ));
    let mut bosun = None;
    let mut kubelet = None;
    for agent in &args.agents {
        let outcome = density::run(*agent, &p)
            .await
            .with_context(|| format!("{} density run", agent.name()))?;
        match agent {
            Agent::Bosun => bosun = Some(outcome),
            Agent::Kubelet => kubelet = Some(outcome),
        }
    }
    machine.containerd = bosun
        .iter()
        .chain(&kubelet)
        .map(|o: &density::DensityOutcome| o.runtime_version.clone())
        .next()
        .unwrap_or_default();
    let rows = density::rows(&p, bosun.as_ref(), kubelet.as_ref());
    print_report(&rows, &machine);
    Ok(())
}

/// `--soak`: both agents at once, each on its own node, under the soak's churn; the report,
/// then a non-zero exit when Bosun leaked or left a pod unstarted.
async fn run_soak(args: &Args, minutes: Option<u64>) -> anyhow::Result<()> {
    let log_dir = args.params.log_dir.clone();
    std::fs::create_dir_all(&log_dir)?;
    let p = match (minutes, args.quick) {
        (Some(m), _) => SoakParams::full(m, log_dir),
        (None, true) => SoakParams::quick(log_dir),
        (None, false) => SoakParams::full(60, log_dir),
    };
    progress(format_args!(
        "soak: {} s of {} pods a minute, each deleted at {} s, a sample every {} s; agents {:?}",
        p.duration.as_secs(),
        p.per_minute,
        p.lifetime.as_secs(),
        p.sample_every.as_secs(),
        args.agents.iter().map(|a| a.name()).collect::<Vec<_>>()
    ));
    let run = |agent: Agent| {
        let p = p.clone();
        let wanted = args.agents.contains(&agent);
        async move {
            if !wanted {
                return Ok(None);
            }
            soak::run(agent, &p)
                .await
                .map(Some)
                .with_context(|| format!("{} soak", agent.name()))
        }
    };
    let (bosun, kubelet) = tokio::join!(run(Agent::Bosun), run(Agent::Kubelet));
    let (bosun, kubelet) = (bosun?, kubelet?);
    println!();
    for l in soak::lines(&p, bosun.as_ref(), kubelet.as_ref()) {
        println!("{l}");
    }
    if let Some(k) = &kubelet {
        for problem in soak::problems(k) {
            progress(format_args!("kubelet (not checked): {problem}"));
        }
    }
    let problems = bosun.as_ref().map(soak::problems).unwrap_or_default();
    if !problems.is_empty() {
        bail!("bosun: {}", problems.join("; "));
    }
    Ok(())
}

/// Prints the table of `rows`, then the machine's and every row's `bench` line.
fn print_report(rows: &[Row], machine: &Machine) {
    println!();
    print!("{}", report::table(rows, machine));
    println!();
    print_lines(rows, machine);
}

/// Prints the machine's `bench` line and every row's.
fn print_lines(rows: &[Row], machine: &Machine) {
    println!("{}", machine.line());
    for r in rows {
        println!("{}", r.line());
    }
}

/// The hollow-node benchmark: for each N, Bosun's hollow nodes then kubemark's; a `bench hollow_*`
/// line per metric, and the largest N each agent ran with p99 startup <= 5 s.
async fn run_hollow(args: &Args) -> anyhow::Result<()> {
    let hold = args.hold.unwrap_or(if args.quick { 20 } else { 300 });
    let mut largest: [Option<usize>; 2] = [None, None];
    for &n in &args.nodes {
        let p = HollowParams {
            nodes: n,
            pods_per_node: args.pods_per_node,
            hold: Duration::from_secs(hold),
            settle: Duration::from_secs(if args.quick { 2 } else { 10 }),
            log_dir: args.params.log_dir.clone(),
            nodes_per_runtime: args.nodes_per_runtime,
        };
        let mut outcomes = [None, None];
        for (i, agent) in [HollowAgent::Bosun, HollowAgent::Kubemark]
            .into_iter()
            .enumerate()
        {
            let wanted = if i == 0 { Agent::Bosun } else { Agent::Kubelet };
            if !args.agents.contains(&wanted) {
                continue;
            }
            progress(format_args!(
                "hollow: {} x {n}, hold {hold} s",
                agent.name()
            ));
            match hollow_bench::run(agent, &p).await {
                Ok(o) => {
                    if o.startup(99.0).is_some_and(|p99| p99 <= 5000.0) {
                        largest[i] = Some(largest[i].map_or(n, |l| l.max(n)));
                    }
                    outcomes[i] = Some(o);
                }
                Err(e) => progress(format_args!("hollow: {} x {n} failed: {e:#}", agent.name())),
            }
        }
        for l in hollow_bench::lines(outcomes[0].as_ref(), outcomes[1].as_ref()) {
            println!("{l}");
        }
    }
    let fmt = |v: Option<usize>| v.map_or("n/a".to_string(), |v| v.to_string());
    println!(
        "bench hollow_max_nodes_slo bosun={} kubemark={} (largest N run with p99 pod startup <= 5 s; N tried: {:?})",
        fmt(largest[0]),
        fmt(largest[1]),
        args.nodes
    );
    Ok(())
}

/// `--check FILE`: exits 0 if FILE has every required `bench <metric>` line (of a density run
/// with `density`, a soak with `soak`), else 1 naming them.
fn check_output(file: &str, density: bool, soak: bool) -> ! {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let required = if density {
        density::REQUIRED
    } else if soak {
        soak::REQUIRED
    } else {
        report::REQUIRED
    };
    let missing = report::missing(&text, required);
    if missing.is_empty() {
        std::process::exit(0);
    }
    eprintln!("bench: no line for {}", missing.join(", "));
    std::process::exit(1);
}

fn breakdown(by: &std::collections::BTreeMap<String, usize>) -> String {
    let mut v: Vec<_> = by.iter().collect();
    v.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let parts: Vec<String> = v.iter().map(|(k, n)| format!("{k}={n}")).collect();
    format!("{} total [{}]", audit::total(by), parts.join(", "))
}

fn rows(
    p: &Params,
    floor: &[floor::FloorRun],
    floor_p50: Option<f64>,
    bosun: Option<&Outcome>,
    kubelet: Option<&Outcome>,
) -> Vec<Row> {
    let n = p.pods;
    let m = p.burst;
    let w = p.window.as_secs();
    let mut rows = Vec::new();
    let mut row =
        |name: &'static str, what: String, decimals: usize, f: &dyn Fn(&Outcome) -> Option<f64>| {
            rows.push(Row {
                name: name.into(),
                what,
                bosun: bosun.and_then(f),
                kubelet: kubelet.and_then(f),
                decimals,
            })
        };
    row(
        "pod_startup_p50_ms",
        format!("pod startup (create returned -> Running+Ready), p50 of {n}, ms"),
        1,
        &|o| stats::median(&o.startup_ms),
    );
    row(
        "pod_startup_p90_ms",
        format!("pod startup, p90 of {n}, ms"),
        1,
        &|o| stats::percentile(&o.startup_ms, 90.0),
    );
    row(
        "pod_startup_max_ms",
        format!("pod startup, max of {n}, ms"),
        1,
        &|o| stats::max(&o.startup_ms),
    );
    row(
        "agent_share_p50_ms",
        "pod startup p50 minus CRI floor p50, ms".into(),
        1,
        &|o| Some(stats::median(&o.startup_ms)? - floor_p50?),
    );
    row(
        "burst_all_ready_s",
        format!("burst of {m} created at once: all Running+Ready, s"),
        2,
        &|o| Some(o.burst_all_ready_s),
    );
    row(
        "burst_p50_ms",
        format!("burst of {m}: per-pod startup p50, ms"),
        1,
        &|o| stats::median(&o.burst_ms),
    );
    row(
        "burst_p90_ms",
        format!("burst of {m}: per-pod startup p90, ms"),
        1,
        &|o| stats::percentile(&o.burst_ms, 90.0),
    );
    row(
        "cpu_seconds",
        format!("agent CPU (utime+stime), {m} pods, {w} s window, s"),
        3,
        &|o| Some(o.steady.usage.cpu_seconds),
    );
    row(
        "cpu_seconds_idle",
        format!("agent CPU, 0 pods, {w} s window, s"),
        3,
        &|o| Some(o.idle.usage.cpu_seconds),
    );
    row(
        "rss_mb",
        format!("agent RSS mean, {m} pods, MiB"),
        1,
        &|o| Some(o.steady.usage.rss_mean_mb),
    );
    row(
        "rss_peak_mb",
        format!("agent RSS peak, {m} pods, MiB"),
        1,
        &|o| Some(o.steady.usage.rss_peak_mb),
    );
    row(
        "rss_mb_idle",
        "agent RSS mean, 0 pods, MiB".into(),
        1,
        &|o| Some(o.idle.usage.rss_mean_mb),
    );
    row(
        "api_requests",
        format!("API requests per minute, {m} pods, steady"),
        1,
        &|o| Some(o.steady.requests_per_minute()),
    );
    row(
        "api_requests_idle",
        "API requests per minute, 0 pods, steady".into(),
        1,
        &|o| Some(o.idle.requests_per_minute()),
    );
    row(
        "api_requests_run",
        "API requests, whole run (start to teardown)".into(),
        0,
        &|o| Some(audit::total(&o.run_requests) as f64),
    );
    row(
        "summary_scrape_ms",
        format!("/stats/summary, {m} pods, median of {}, ms", p.scrapes),
        1,
        &|o| o.summary_ms.as_ref().ok().copied(),
    );
    row(
        "resource_scrape_ms",
        format!("/metrics/resource, {m} pods, median of {}, ms", p.scrapes),
        1,
        &|o| o.resource_ms.as_ref().ok().copied(),
    );
    row(
        "exec_roundtrip_ms",
        format!(
            "/run of `true` through the node port (CRI ExecSync), median of {}, ms",
            p.scrapes
        ),
        1,
        &|o| o.streaming.exec_ms.as_ref().ok().copied(),
    );
    row(
        "port_forward_mib_s",
        format!(
            "{} MiB over HTTP through kubectl port-forward, median of 3, MiB/s",
            p.stream_mib
        ),
        1,
        &|o| o.streaming.forward_mib_s.as_ref().ok().copied(),
    );
    row(
        "logs_follow_mb_s",
        format!(
            "{} MiB container log followed on the node port, MiB/s",
            p.log_mib
        ),
        1,
        &|o| o.logs_follow.as_ref().ok().map(|f| f.mib_s),
    );
    row(
        "logs_follow_cpu_s",
        format!("agent CPU while following the {} MiB log, s", p.log_mib),
        3,
        &|o| o.logs_follow.as_ref().ok().map(|f| f.cpu_seconds),
    );
    row(
        "teardown_s",
        format!("delete {m} pods -> all gone from the API, s"),
        2,
        &|o| Some(o.teardown_s),
    );
    let probes = |o: &Outcome| o.probes.as_ref().ok().cloned();
    row(
        "probe_cpu_seconds",
        format!(
            "{m} host-network pods, httpGet readiness + exec liveness every 1 s: agent CPU, {w} s, s"
        ),
        3,
        &|o| probes(o).map(|f| f.cpu_seconds),
    );
    row(
        "probe_rss_mb",
        format!("agent RSS mean, {m} probed pods, MiB"),
        1,
        &|o| probes(o).map(|f| f.rss_mb),
    );
    row(
        "probe_runtime_cpu_seconds",
        format!("containerd CPU, {m} probed pods, {w} s (exec probes), s"),
        3,
        &|o| probes(o).map(|f| f.runtime_cpu_seconds),
    );
    row(
        "probe_lag_p99_ms",
        format!("readiness probe arrival behind its 1 s grid, p99 over {m} pods x {w} s, ms"),
        1,
        &|o| probes(o).map(|f| f.lag_p99_ms),
    );
    row(
        "eviction_reaction_ms",
        format!(
            "nodefs.available 150Mi crossed (statvfs, 2 ms) -> the filling pod Failed/Evicted, \
             median of {}, ms",
            p.eviction_runs
        ),
        0,
        &|o| o.eviction_ms.as_ref().ok().and_then(|v| stats::median(v)),
    );
    row(
        "node_ready_s",
        "agent start -> Node Ready, s".into(),
        2,
        &|o| Some(o.node_ready_s),
    );
    // The floor is the runtime's, the same for both agents.
    let floor_row = |name: &'static str, what: String, v: Option<f64>| Row {
        name: name.into(),
        what,
        bosun: v,
        kubelet: v,
        decimals: 1,
    };
    let part =
        |f: fn(&floor::FloorRun) -> f64| stats::median(&floor.iter().map(f).collect::<Vec<_>>());
    rows.push(floor_row(
        "cri_floor_ms",
        format!(
            "CRI floor: RunPodSandbox+CreateContainer+StartContainer, no agent, p50 of {}, ms",
            floor.len()
        ),
        floor_p50,
    ));
    rows.push(floor_row(
        "cri_floor_sandbox_ms",
        "CRI floor: RunPodSandbox p50, ms".into(),
        part(|r| r.sandbox_ms),
    ));
    rows.push(floor_row(
        "cri_floor_create_ms",
        "CRI floor: CreateContainer p50, ms".into(),
        part(|r| r.create_ms),
    ));
    rows.push(floor_row(
        "cri_floor_start_ms",
        "CRI floor: StartContainer p50, ms".into(),
        part(|r| r.start_ms),
    ));
    rows
}
