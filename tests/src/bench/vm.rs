//! `bench --vm`: both agents' startup, CPU and RSS figures inside the VM node (`tests/vm/up`: a
//! qemu guest with systemd as PID 1, cgroup v2 and `cgroupDriver: systemd`), one agent after the
//! other on the same guest, each joined to the host's test cluster as node `vm`. Under TCG (no
//! hardware virtualization here) every figure is emulated: the ratios are what compare.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};

use super::floor::COMMAND;
use super::pods::Tracker;
use super::procfs::{Usage, parse_cpu_ticks, parse_rss_kb};
use super::report::{Machine, Row};
use super::scenario::{Agent, progress};
use super::stats;
use crate::agent::node_ready;
use crate::pod::{Container, PodBuilder};
use crate::{Vm, admin_client};

/// The guest's node name in the cluster.
pub const NODE: &str = "vm";

/// Sizes and durations of a VM run.
#[derive(Debug, Clone)]
pub struct VmParams {
    /// Pods created one after another (startup latency).
    pub pods: usize,
    /// Pods created at once, then measured in the steady window.
    pub burst: usize,
    /// Pause before each window.
    pub settle: Duration,
    /// Length of each window.
    pub window: Duration,
}

/// What one agent measured in the guest.
#[derive(Debug, Clone)]
pub struct VmOutcome {
    /// Agent started -> Node Ready, seconds.
    pub node_ready_s: f64,
    /// Per sequential pod: create returned -> Running and Ready, ms.
    pub startup_ms: Vec<f64>,
    /// First create of the burst -> last pod Ready, seconds.
    pub burst_all_ready_s: f64,
    /// No pods.
    pub idle: Usage,
    /// The burst's pods running.
    pub steady: Usage,
}

/// Both agents' KubeletConfiguration in the guest (kubeadm's path).
fn config(max_pods: usize) -> String {
    format!(
        "apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: systemd
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
maxPods: {max_pods}
authentication:
  x509:
    clientCAFile: /etc/kubernetes/pki/ca.crt
"
    )
}

/// The systemd unit the agent runs as in the guest.
fn unit(agent: Agent) -> &'static str {
    match agent {
        Agent::Bosun => "bosun",
        Agent::Kubelet => "kubelet-bench",
    }
}

/// Runs `f` (blocking ssh calls) off the async workers.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// The guest's cores, memory, kernel and containerd, for the table.
pub fn machine(vm: &Vm) -> Machine {
    let out = blocking(|| {
        vm.sh("nproc; awk '/MemTotal/ {print $2}' /proc/meminfo; uname -r; containerd --version | awk '{print $3}'")
    });
    let l: Vec<&str> = out.lines().collect();
    Machine {
        cores: l.first().and_then(|v| v.parse().ok()).unwrap_or(0),
        memory_gib: l.get(1).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0) / 1024.0 / 1024.0,
        kernel: format!(
            "{} (qemu {}, cgroup v2, systemd driver)",
            l.get(2).unwrap_or(&"?"),
            vm.var("BOSUN_VM_ACCEL")
        ),
        containerd: format!("containerd://{}", l.get(3).unwrap_or(&"?")),
        kubernetes: String::new(),
    }
}

/// The agent installed in the guest, configured for the cluster and stopped; no pod containers,
/// no Node `vm` left; the images pulled (nothing measured pulls).
fn prepare(vm: &Vm, agent: Agent, p: &VmParams) {
    vm.sh("systemctl stop bosun kubelet-bench 2>/dev/null || true; systemctl reset-failed kubelet-bench 2>/dev/null || true");
    vm.remove_pod_containers();
    crate::kubectl(&["delete", "node", NODE, "--ignore-not-found", "--wait=true"]);
    match agent {
        Agent::Bosun => {
            vm.install_bosun();
            vm.sh("rm -f /etc/systemd/system/bosun.service.d/20-standalone.conf && systemctl daemon-reload");
        }
        Agent::Kubelet => vm.install_kubelet(),
    }
    vm.join_cluster(NODE);
    vm.write(
        "/var/lib/kubelet/config.yaml",
        &config(p.pods + p.burst + 10),
    );
    vm.sh(&format!(
        "for i in {} {}; do ctr -n k8s.io images pull --plain-http $i >/dev/null; done",
        vm.busybox_image(),
        vm.var("BOSUN_VM_PAUSE_IMAGE")
    ));
}

/// Starts the agent's unit without waiting for it (bosun's Type=notify start would wait for
/// READY=1, that is for the Node's registration).
fn start(vm: &Vm, agent: Agent) {
    match agent {
        Agent::Bosun => vm.sh("systemctl start --no-block bosun"),
        Agent::Kubelet => vm.sh(
            "systemd-run --unit=kubelet-bench --property=KillMode=process \
               /usr/local/bin/kubelet --config /var/lib/kubelet/config.yaml \
               --kubeconfig /etc/kubernetes/kubelet.conf",
        ),
    };
}

/// The CPU time and RSS of guest process `pid` over `window`, sampled in the guest itself:
/// /proc/<pid>/stat at both ends, VmRSS every second; CPU scaled to the window's length.
fn guest_usage(vm: &Vm, pid: &str, window: Duration) -> anyhow::Result<Usage> {
    let secs = window.as_secs().max(1);
    let out = blocking(|| {
        vm.sh(&format!(
            "getconf CLK_TCK; date +%s.%N; cat /proc/{pid}/stat
             for i in $(seq {secs}); do grep VmRSS /proc/{pid}/status; sleep 1; done
             cat /proc/{pid}/stat; date +%s.%N"
        ))
    });
    let lines: Vec<&str> = out.lines().collect();
    let parsed = (|| {
        let ticks: f64 = lines.first()?.parse().ok()?;
        let t0: f64 = lines.get(1)?.parse().ok()?;
        let cpu0 = parse_cpu_ticks(lines.get(2)?)?;
        let n = lines.len();
        let cpu1 = parse_cpu_ticks(lines.get(n - 2)?)?;
        let t1: f64 = lines.get(n - 1)?.parse().ok()?;
        let rss: Vec<f64> = lines[3..n - 2]
            .iter()
            .filter_map(|l| parse_rss_kb(l))
            .map(|kb| kb as f64 / 1024.0)
            .collect();
        let cpu = (cpu1.checked_sub(cpu0)?) as f64 / ticks;
        Some(Usage {
            cpu_seconds: cpu * secs as f64 / (t1 - t0).max(1.0),
            rss_mean_mb: stats::mean(&rss)?,
            rss_peak_mb: stats::max(&rss)?,
        })
    })();
    parsed.with_context(|| format!("the guest's /proc of pid {pid}: {out}"))
}

/// A benchmark pod on the VM node: busybox from the registry as the guest reaches it.
fn pod(vm: &Vm, name: &str) -> Pod {
    PodBuilder::new(name)
        .without_namespace()
        .label("app", "bench")
        .node(NODE)
        .grace(10)
        .service_account_token()
        .container(Container::exec_in(vm.busybox_image(), "main", COMMAND))
        .build()
}

/// Runs `agent` through the VM benchmark.
pub async fn run(agent: Agent, vm: &Vm, p: &VmParams) -> anyhow::Result<VmOutcome> {
    let name = agent.name();
    progress(format_args!("{name} in the guest: installing"));
    blocking(|| prepare(vm, agent, p));
    let client = admin_client().await;
    let ns = format!("bench-vm-{name}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    super::scenario::wait_for(Duration::from_secs(120), "old namespace gone", || async {
        Ok(namespaces.get_opt(&ns).await?.is_none())
    })
    .await?;
    super::scenario::create_namespace(&namespaces, &ns).await?;
    let result = measure(agent, vm, p, &client, &ns).await;
    if result.is_err() {
        let journal = blocking(|| {
            vm.try_sh(&format!(
                "journalctl -u {} --no-pager -n 40 -o cat",
                unit(agent)
            ))
        });
        eprintln!("{}", String::from_utf8_lossy(&journal.stdout));
    }
    blocking(|| {
        vm.sh(&format!("systemctl stop {} || true", unit(agent)));
        crate::kubectl(&["delete", "node", NODE, "--ignore-not-found", "--wait=true"]);
    });
    let _ = namespaces.delete(&ns, &DeleteParams::default()).await;
    result
}

async fn measure(
    agent: Agent,
    vm: &Vm,
    p: &VmParams,
    client: &kube::Client,
    ns: &str,
) -> anyhow::Result<VmOutcome> {
    let name = agent.name();
    super::scenario::namespace_ready(client, ns).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let tracker = Tracker::start(pods.clone()).await?;
    let nodes: Api<Node> = Api::all(client.clone());

    let t0 = Instant::now();
    blocking(|| start(vm, agent));
    super::scenario::wait_for(Duration::from_secs(300), "node vm Ready", || async {
        Ok(nodes.get_opt(NODE).await?.as_ref().is_some_and(node_ready))
    })
    .await?;
    let node_ready_s = t0.elapsed().as_secs_f64();
    let pid = blocking(|| {
        vm.sh(&format!(
            "systemctl show -p MainPID --value {}",
            unit(agent)
        ))
    });
    if pid == "0" {
        bail!("{} has no main process", unit(agent));
    }
    progress(format_args!("{name}: node Ready after {node_ready_s:.1} s"));

    tokio::time::sleep(p.settle).await;
    let idle = guest_usage(vm, &pid, p.window)?;
    progress(format_args!(
        "{name}: idle: cpu {:.3} s, rss {:.1} MiB",
        idle.cpu_seconds, idle.rss_mean_mb
    ));

    let mut startup_ms = Vec::with_capacity(p.pods);
    for i in 0..p.pods {
        let pod_name = format!("seq-{i}");
        pods.create(&PostParams::default(), &pod(vm, &pod_name))
            .await?;
        let created = Instant::now();
        let ready = tracker
            .ready(std::slice::from_ref(&pod_name), Duration::from_secs(300))
            .await?;
        startup_ms.push(ready[0].saturating_duration_since(created).as_secs_f64() * 1000.0);
    }
    progress(format_args!("{name}: startup {startup_ms:.0?} ms"));

    let burst: Vec<String> = (0..p.burst).map(|i| format!("burst-{i}")).collect();
    let first = Instant::now();
    for b in &burst {
        pods.create(&PostParams::default(), &pod(vm, b)).await?;
    }
    let ready = tracker.ready(&burst, Duration::from_secs(900)).await?;
    let burst_all_ready_s = ready
        .iter()
        .map(|t| t.saturating_duration_since(first))
        .max()
        .unwrap_or_default()
        .as_secs_f64();
    progress(format_args!(
        "{name}: burst of {} Ready after {burst_all_ready_s:.1} s",
        p.burst
    ));

    tokio::time::sleep(p.settle).await;
    let steady = guest_usage(vm, &pid, p.window)?;
    progress(format_args!(
        "{name}: steady with {} pods: cpu {:.3} s, rss {:.1} MiB",
        p.pods + p.burst,
        steady.cpu_seconds,
        steady.rss_mean_mb
    ));

    let all: Vec<String> = (0..p.pods)
        .map(|i| format!("seq-{i}"))
        .chain(burst)
        .collect();
    pods.delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    tracker.gone(&all, Duration::from_secs(600)).await?;
    Ok(VmOutcome {
        node_ready_s,
        startup_ms,
        burst_all_ready_s,
        idle,
        steady,
    })
}

/// The VM run's rows (names prefixed `vm_`).
pub fn rows(p: &VmParams, bosun: Option<&VmOutcome>, kubelet: Option<&VmOutcome>) -> Vec<Row> {
    let both = |f: &dyn Fn(&VmOutcome) -> Option<f64>| (bosun.and_then(f), kubelet.and_then(f));
    let row = |name: &str, what: String, decimals, f: &dyn Fn(&VmOutcome) -> Option<f64>| {
        let (b, k) = both(f);
        Row {
            name: name.into(),
            what,
            bosun: b,
            kubelet: k,
            decimals,
        }
    };
    let w = p.window.as_secs();
    vec![
        row(
            "vm_pod_startup_p50_ms",
            format!(
                "pod startup (create -> Running+Ready), p50 of {}, ms",
                p.pods
            ),
            1,
            &|o| stats::median(&o.startup_ms),
        ),
        row(
            "vm_burst_all_ready_s",
            format!("burst of {} created at once: all Running+Ready, s", p.burst),
            2,
            &|o| Some(o.burst_all_ready_s),
        ),
        row(
            "vm_cpu_seconds",
            format!("agent CPU, {} pods, {w} s window, s", p.pods + p.burst),
            3,
            &|o| Some(o.steady.cpu_seconds),
        ),
        row(
            "vm_cpu_seconds_idle",
            format!("agent CPU, 0 pods, {w} s window, s"),
            3,
            &|o| Some(o.idle.cpu_seconds),
        ),
        row(
            "vm_rss_mb",
            format!("agent RSS mean, {} pods, MiB", p.pods + p.burst),
            1,
            &|o| Some(o.steady.rss_mean_mb),
        ),
        row(
            "vm_rss_mb_idle",
            "agent RSS mean, 0 pods, MiB".into(),
            1,
            &|o| Some(o.idle.rss_mean_mb),
        ),
        row(
            "vm_node_ready_s",
            "agent start -> Node Ready (one ssh command included), s".into(),
            2,
            &|o| Some(o.node_ready_s),
        ),
    ]
}
