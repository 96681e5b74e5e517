//! The sampling loop: every `interval` (the kubelet's housekeeping period) it asks the runtime
//! once for its pods and their stats, reads the pod cgroups the runtime left unanswered, procfs
//! and the root cgroup for the node, and publishes one [`Summary`]. Scrapes never sample.
//! Volume usage (a directory walk) is refreshed on a slower interval.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use bosun_cri::CriClient;
use bosun_cri::types::{
    ContainerState, ContainerStats as CriContainerStats, LinuxPodSandboxStats, PodSandboxStats,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::StatsProvider;
use super::cgroup::{CgroupSample, Layout, MemorySample, Pressure, Psi};
use super::fs::{self as sfs, FsCapacity, Usage};
use super::node_proc;
use super::rate::CpuRates;
use super::summary::*;
use super::volume_stats::{self, CsiVolumeStats};
use crate::resource::QosClass;
use crate::runtime::{ObservedContainer, ObservedPod, PodDirs, observe_all};
use crate::volume::csi::CsiVolumes;

/// How often to sample.
#[derive(Clone, Copy, Debug)]
pub struct SamplerConfig {
    /// Between samples (the kubelet's housekeeping interval: 10 s).
    pub interval: Duration,
    /// Between the first and second sample, so rates exist soon after start.
    pub first_interval: Duration,
    /// Between walks of the pods' volume directories.
    pub volume_interval: Duration,
}

impl Default for SamplerConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(10),
            first_interval: Duration::from_secs(1),
            volume_interval: Duration::from_secs(60),
        }
    }
}

/// What the sampler needs of the node.
pub struct NodeFacts {
    /// This node's name.
    pub node_name: String,
    /// The CSI volumes published for pods (measured by their drivers).
    pub csi: CsiVolumes,
    /// Paths and cgroup naming (`dirs.cgroups`: the container manager's [`Hierarchy`], the one
    /// source of pod cgroup names).
    pub dirs: PodDirs,
}

/// The sampler's memory between samples; everything the blocking half reads and updates.
struct State {
    facts: NodeFacts,
    layout: Option<Layout>,
    rates: CpuRates,
    pod_cgroups: HashMap<String, String>,
    volumes: HashMap<String, Vec<(VolumeStats, bool)>>,
    volumes_at: Option<Instant>,
    volume_interval: Duration,
    /// The latest usage of the pods' CSI volumes, from their drivers.
    csi: CsiVolumeStats,
    boot: Time,
    /// The identities of the round being assembled.
    ids: super::Identities,
}

/// What the runtime answered in one round.
struct Answers {
    pods: HashMap<String, ObservedPod>,
    /// Per sandbox id, when the runtime implements ListPodSandboxStats.
    sandboxes: HashMap<String, PodSandboxStats>,
    /// Per container id.
    containers: HashMap<String, CriContainerStats>,
    image_fs: Option<bosun_cri::types::ImageFsInfoResponse>,
}

/// Samples until `cancel`, publishing into `provider`; the pods' CSI volumes are measured
/// beside it every `cfg.volume_interval`.
pub async fn run(
    cri: CriClient,
    facts: NodeFacts,
    provider: StatsProvider,
    cfg: SamplerConfig,
    cancel: CancellationToken,
) {
    let csi = CsiVolumeStats::default();
    let calculator = volume_stats::run(
        facts.csi.clone(),
        csi.clone(),
        cfg.volume_interval,
        cancel.clone(),
    );
    tokio::join!(calculator, sample(cri, facts, provider, cfg, csi, cancel));
}

async fn sample(
    cri: CriClient,
    facts: NodeFacts,
    provider: StatsProvider,
    cfg: SamplerConfig,
    csi: CsiVolumeStats,
    cancel: CancellationToken,
) {
    let boot = node_proc::boot_time()
        .and_then(|s| k8s_openapi::jiff::Timestamp::from_second(s).ok())
        .map(Time)
        .unwrap_or_else(|| time_of(SystemTime::now()));
    let mut state = Some(State {
        layout: Layout::detect(),
        facts,
        rates: CpuRates::default(),
        pod_cgroups: HashMap::new(),
        volumes: HashMap::new(),
        volumes_at: None,
        volume_interval: cfg.volume_interval,
        csi,
        boot,
        ids: super::Identities::default(),
    });
    if state.as_ref().is_some_and(|s| s.layout.is_none()) {
        warn!("no cgroup v1 cpuacct+memory or v2 mount found: node and pod cgroup stats left out");
    }
    let mut sandbox_stats = true;
    let mut first = true;
    loop {
        let answers = ask_runtime(&cri, &mut sandbox_stats).await;
        let Some(mut st) = state.take() else { return };
        let volumes_request = provider.volumes_wanted();
        if volumes_request.is_some() {
            st.volumes_at = None;
        }
        let joined = tokio::task::spawn_blocking(move || {
            let cpu = cpu_time();
            let s = assemble(&mut st, answers, SystemTime::now());
            let ids = std::mem::take(&mut st.ids);
            (st, s, ids, cpu_time().saturating_sub(cpu))
        })
        .await;
        match joined {
            Ok((st, summary, ids, cpu)) => {
                debug!(
                    pods = summary.pods.len(),
                    files_cpu_us = cpu.as_micros() as u64,
                    "stats sampled"
                );
                if let Some(request) = volumes_request {
                    provider.volumes_measured_for(request);
                }
                provider.publish_with(summary, ids);
                state = Some(st);
            }
            Err(e) => {
                warn!(error = %e, "stats sampling task failed; stats stop");
                return;
            }
        }
        let wait = if std::mem::take(&mut first) {
            cfg.first_interval
        } else {
            cfg.interval
        };
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
            _ = provider.sample_wanted() => {}
        }
    }
}

/// This thread's CPU time (for the debug log of the sampling cost).
fn cpu_time() -> Duration {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .map(Duration::from)
        .unwrap_or_default()
}

/// One round of questions: the pods, the image filesystem, and the stats of every sandbox
/// (ListPodSandboxStats) or, where the runtime does not implement it, of every container.
async fn ask_runtime(cri: &CriClient, sandbox_stats: &mut bool) -> Answers {
    let (pods, image_fs) = tokio::join!(observe_all(cri), cri.image_fs_info());
    let pods = pods.unwrap_or_else(|e| {
        warn!(error = %e, "stats: listing pods from the runtime failed");
        HashMap::new()
    });
    let image_fs = image_fs
        .map_err(|e| warn!(error = %e, "stats: ImageFsInfo failed"))
        .ok();
    let mut sandboxes = HashMap::new();
    if *sandbox_stats {
        match cri.list_pod_sandbox_stats(None).await {
            Ok(v) => {
                sandboxes = v
                    .into_iter()
                    .filter_map(|s| Some((s.attributes.as_ref()?.id.clone(), s)))
                    .collect();
            }
            Err(e) if e.is_unimplemented() => {
                debug!(
                    "runtime does not implement ListPodSandboxStats: ListContainerStats and cgroups"
                );
                *sandbox_stats = false;
            }
            Err(e) => warn!(error = %e, "stats: ListPodSandboxStats failed"),
        }
    }
    let containers = if *sandbox_stats && !sandboxes.is_empty() {
        HashMap::new()
    } else {
        cri.list_container_stats(None)
            .await
            .map(|v| {
                v.into_iter()
                    .filter_map(|c| Some((c.attributes.as_ref()?.id.clone(), c)))
                    .collect()
            })
            .unwrap_or_else(|e| {
                warn!(error = %e, "stats: ListContainerStats failed");
                HashMap::new()
            })
    };
    Answers {
        pods,
        sandboxes,
        containers,
        image_fs,
    }
}

fn time_of(t: SystemTime) -> Time {
    Time(k8s_openapi::jiff::Timestamp::try_from(t).unwrap_or_default())
}

fn time_ns(ns: i64) -> Option<Time> {
    (ns > 0)
        .then(|| k8s_openapi::jiff::Timestamp::from_nanosecond(ns as i128).ok())
        .flatten()
        .map(Time)
}

fn nanos(t: &Time) -> i128 {
    t.0.as_nanosecond()
}

/// The value of an optional CRI `UInt64Value`.
macro_rules! u {
    ($e:expr) => {
        $e.as_ref().map(|v| v.value)
    };
}

fn assemble(st: &mut State, a: Answers, now: SystemTime) -> Summary {
    let now = time_of(now);
    let root_dir = st.facts.dirs.root_dir.clone();
    let nodefs = sfs::capacity(&root_dir);
    let image_fs = a.image_fs.as_ref().and_then(|r| image_fs(r, &now));
    if st
        .volumes_at
        .is_none_or(|t| t.elapsed() >= st.volume_interval)
    {
        st.volumes = a
            .pods
            .keys()
            .map(|uid| (uid.clone(), volumes(&st.facts.dirs.pod_dir(uid), &now)))
            .collect();
        st.volumes_at = Some(Instant::now());
    }
    let mut pods = Vec::new();
    for (uid, p) in &a.pods {
        let Some(sandbox) = p.sandboxes.iter().find(|s| s.ready) else {
            continue;
        };
        pods.push(pod_stats(
            st,
            &a,
            uid,
            p,
            &sandbox.id,
            sandbox.created_at,
            &now,
            nodefs,
        ));
    }
    pods.sort_by(|x, y| {
        (&x.pod_ref.namespace, &x.pod_ref.name).cmp(&(&y.pod_ref.namespace, &y.pod_ref.name))
    });
    let node = node_stats(st, &now, nodefs, image_fs);
    st.rates.end_round();
    Summary { node, pods }
}

#[allow(clippy::too_many_arguments)]
fn pod_stats(
    st: &mut State,
    a: &Answers,
    uid: &str,
    p: &ObservedPod,
    sandbox_id: &str,
    created_at: i64,
    now: &Time,
    nodefs: Option<FsCapacity>,
) -> PodStats {
    let cg_rel = locate_pod_cgroup(st, uid);
    if let Some(rel) = &cg_rel {
        st.ids
            .pod_cgroups
            .insert(uid.to_string(), cadvisor_name(rel));
    }
    let (cg, pressure) = match (&st.layout, &cg_rel) {
        (Some(l), Some(rel)) => (l.sample(rel), Some(l.pressure(rel))),
        _ => (CgroupSample::default(), None),
    };
    let linux = a.sandboxes.get(sandbox_id).and_then(|s| s.linux.as_ref());
    let cpu = cpu_stats(
        &mut st.rates,
        &format!("pod/{uid}"),
        linux.and_then(|l| l.cpu.as_ref()),
        cg.cpu_usage_ns,
        now,
    )
    .map(|c| with_cpu_psi(c, pressure.as_ref()));
    let memory = memory_stats(linux.and_then(|l| l.memory.as_ref()), cg.memory, now)
        .map(|m| with_memory_psi(m, pressure.as_ref()));
    let network = match linux.and_then(|l| l.network.as_ref()) {
        Some(n) => Some(cri_network(n, now)),
        None => pod_net_dev(st, cg_rel.as_deref(), sandbox_id, now),
    };
    let process_stats = linux
        .and_then(|l| l.process.as_ref())
        .and_then(|pr| u!(pr.process_count))
        .map(|n| ProcessStats {
            process_count: Some(n),
        });
    let log_dir = st.facts.dirs.pod_log_dir(&p.namespace, &p.name, uid);
    let pod = PodSample {
        uid,
        linux,
        cg_rel: cg_rel.as_deref(),
        log_fs: sfs::capacity(&log_dir),
        log_dir: &log_dir,
        now,
    };
    let mut containers = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for c in &p.containers {
        if c.sandbox_id != sandbox_id
            || c.state != ContainerState::ContainerRunning
            || !seen.insert(c.name.as_str())
        {
            continue;
        }
        containers.push(container_stats(st, a, &pod, c));
    }
    containers.sort_by(|x, y| x.name.cmp(&y.name));
    let mut vols = st.volumes.get(uid).cloned().unwrap_or_default();
    vols.extend(st.csi.of(uid).into_iter().map(|v| (v, false)));
    vols.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    let eph = ephemeral_usage(&containers, &vols);
    PodStats {
        pod_ref: PodReference {
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            uid: uid.to_string(),
        },
        start_time: time_ns(created_at).unwrap_or_else(|| now.clone()),
        containers,
        cpu,
        memory,
        io: pressure.as_ref().map(|p| io_stats(p, now)),
        network,
        volume_stats: vols.into_iter().map(|(v, _)| v).collect(),
        ephemeral_storage: Some(FsStats {
            used_bytes: Some(eph.bytes),
            inodes_used: Some(eph.inodes),
            ..fs_of(nodefs, now)
        }),
        process_stats,
        swap: cg.memory.and_then(|m| m.swap_usage).map(|s| SwapStats {
            time: now.clone(),
            swap_available_bytes: None,
            swap_usage_bytes: Some(s),
        }),
    }
}

/// What the containers of one pod's sample share.
struct PodSample<'a> {
    uid: &'a str,
    /// The runtime's stats of the sandbox, when it implements ListPodSandboxStats.
    linux: Option<&'a LinuxPodSandboxStats>,
    /// The pod's cgroup, relative to the hierarchy mounts.
    cg_rel: Option<&'a str>,
    log_dir: &'a Path,
    log_fs: Option<FsCapacity>,
    now: &'a Time,
}

/// One running container's stats: the runtime's, completed from its cgroup when the runtime
/// leaves CPU or memory out; its identity remembered for cAdvisor's metrics.
fn container_stats(
    st: &mut State,
    a: &Answers,
    pod: &PodSample<'_>,
    c: &ObservedContainer,
) -> ContainerStats {
    let now = pod.now;
    let from_sandbox = pod.linux.and_then(|l| {
        l.containers
            .iter()
            .find(|s| s.attributes.as_ref().is_some_and(|at| at.id == c.id))
    });
    let cri = from_sandbox.or_else(|| a.containers.get(&c.id));
    let cg_rel = match (&st.layout, pod.cg_rel) {
        (Some(l), Some(rel)) => container_cgroup(l, rel, &c.id),
        _ => None,
    };
    let cgroup = cg_rel.as_deref().map(cadvisor_name);
    st.ids.containers.insert(
        (pod.uid.to_string(), c.name.clone()),
        super::ContainerIdentity {
            id: c.id.clone(),
            image_ref: c.image_ref.clone(),
            cgroup,
        },
    );
    let cri_cpu = cri.and_then(|s| s.cpu.as_ref());
    let cri_mem = cri.and_then(|s| s.memory.as_ref());
    let complete = cri_cpu.is_some_and(|c| c.usage_core_nano_seconds.is_some())
        && cri_mem.is_some_and(|m| m.usage_bytes.is_some() && m.working_set_bytes.is_some());
    let ccg = match (&st.layout, &cg_rel, complete) {
        (Some(l), Some(rel), false) => l.sample(rel),
        _ => CgroupSample::default(),
    };
    // Pressure from the container's cgroup files, as the kubelet's cAdvisor reads it.
    let pressure = match (&st.layout, &cg_rel) {
        (Some(l), Some(rel)) => Some(l.pressure(rel)),
        _ => None,
    };
    let logs = sfs::usage(&pod.log_dir.join(&c.name)).map(|us| FsStats {
        used_bytes: Some(us.bytes),
        inodes_used: Some(us.inodes),
        ..fs_of(pod.log_fs, now)
    });
    let rootfs = cri
        .and_then(|s| s.writable_layer.as_ref())
        .map(|w| FsStats {
            used_bytes: u!(w.used_bytes),
            inodes_used: u!(w.inodes_used),
            ..fs_of(
                w.fs_id
                    .as_ref()
                    .and_then(|f| sfs::capacity(Path::new(&f.mountpoint))),
                &time_ns(w.timestamp).unwrap_or_else(|| now.clone()),
            )
        });
    let swap = match cri.and_then(|s| s.swap.as_ref()) {
        Some(s) => Some(SwapStats {
            time: time_ns(s.timestamp).unwrap_or_else(|| now.clone()),
            swap_available_bytes: u!(s.swap_available_bytes),
            swap_usage_bytes: u!(s.swap_usage_bytes),
        }),
        None => ccg.memory.and_then(|m| m.swap_usage).map(|s| SwapStats {
            time: now.clone(),
            swap_available_bytes: None,
            swap_usage_bytes: Some(s),
        }),
    };
    ContainerStats {
        name: c.name.clone(),
        start_time: time_ns(c.created_at).unwrap_or_else(|| now.clone()),
        cpu: cpu_stats(&mut st.rates, &c.id, cri_cpu, ccg.cpu_usage_ns, now)
            .map(|s| with_cpu_psi(s, pressure.as_ref())),
        memory: memory_stats(cri_mem, ccg.memory, now)
            .map(|m| with_memory_psi(m, pressure.as_ref())),
        io: pressure.as_ref().map(|p| io_stats(p, now)),
        accelerators: vec![],
        rootfs,
        logs,
        user_defined_metrics: vec![],
        swap,
    }
}

/// The pod's ephemeral storage: its containers' writable layers and logs, and its local
/// volumes (the kubelet's calcEphemeralStorage).
fn ephemeral_usage(containers: &[ContainerStats], vols: &[(VolumeStats, bool)]) -> Usage {
    let mut eph = Usage::default();
    for c in containers {
        for f in [&c.rootfs, &c.logs].into_iter().flatten() {
            eph += Usage {
                bytes: f.used_bytes.unwrap_or(0),
                inodes: f.inodes_used.unwrap_or(0),
            };
        }
    }
    for (v, local) in vols {
        if *local {
            eph += Usage {
                bytes: v.fs.used_bytes.unwrap_or(0),
                inodes: v.fs.inodes_used.unwrap_or(0),
            };
        }
    }
    eph
}

/// A cgroup relative to the hierarchy mounts as cAdvisor names it: absolute, no trailing slash.
fn cadvisor_name(rel: &str) -> String {
    format!("/{}", rel.trim_matches('/'))
}

/// The pod's cgroup, relative to the hierarchy mounts: the container manager's name for it in
/// each QoS tier (the sampler does not know the pod's class), looked up once and remembered while
/// it exists. `None` without cgroupsPerQOS: pods then have no cgroup of their own.
fn locate_pod_cgroup(st: &mut State, uid: &str) -> Option<String> {
    let layout = st.layout.as_ref()?;
    let names = &st.facts.dirs.cgroups;
    if !names.per_qos {
        return None;
    }
    if let Some(rel) = st.pod_cgroups.get(uid)
        && layout.exists(rel)
    {
        return Some(rel.clone());
    }
    let found = [
        QosClass::Guaranteed,
        QosClass::Burstable,
        QosClass::BestEffort,
    ]
    .into_iter()
    .map(|q| names.cgroup_parent(q, uid))
    .find(|c| layout.exists(c))?;
    st.pod_cgroups.insert(uid.to_string(), found.clone());
    Some(found)
}

/// The cgroup the runtime made for container (or sandbox) `id` under the pod cgroup `pod`: the
/// runtime names it, not the kubelet (`<pod>/<id>` with cgroupfs; a `<prefix>-<id>.scope` unit
/// with systemd, `cri-containerd-` or `crio-`).
fn container_cgroup(layout: &Layout, pod: &str, id: &str) -> Option<String> {
    let plain = format!("{}/{id}", pod.trim_end_matches('/'));
    if layout.exists(&plain) {
        return Some(plain);
    }
    let scope = format!("-{id}.scope");
    layout
        .children(pod)
        .into_iter()
        .find(|c| c.ends_with(&scope))
        .map(|c| format!("{}/{c}", pod.trim_end_matches('/')))
}

/// The pod's interfaces from the network namespace of its sandbox's process.
fn pod_net_dev(
    st: &State,
    pod: Option<&str>,
    sandbox_id: &str,
    now: &Time,
) -> Option<NetworkStats> {
    let layout = st.layout.as_ref()?;
    let pid = *layout
        .procs(&container_cgroup(layout, pod?, sandbox_id)?)
        .first()?;
    let ifs = node_proc::net_dev(Some(pid))?;
    Some(network_of(ifs, now))
}

fn network_of(ifs: Vec<node_proc::NetDev>, now: &Time) -> NetworkStats {
    let interfaces: Vec<InterfaceStats> = ifs
        .into_iter()
        .map(|i| InterfaceStats {
            name: i.name,
            rx_bytes: Some(i.rx_bytes),
            rx_errors: Some(i.rx_errors),
            tx_bytes: Some(i.tx_bytes),
            tx_errors: Some(i.tx_errors),
        })
        .collect();
    NetworkStats {
        time: now.clone(),
        default: interfaces
            .iter()
            .find(|i| i.name == DEFAULT_INTERFACE)
            .cloned()
            .unwrap_or_default(),
        interfaces,
    }
}

/// The interface the kubelet reports inline as the pod's and node's network.
const DEFAULT_INTERFACE: &str = "eth0";

fn cri_network(n: &bosun_cri::types::NetworkUsage, now: &Time) -> NetworkStats {
    macro_rules! conv {
        ($i:expr) => {
            InterfaceStats {
                name: $i.name.clone(),
                rx_bytes: u!($i.rx_bytes),
                rx_errors: u!($i.rx_errors),
                tx_bytes: u!($i.tx_bytes),
                tx_errors: u!($i.tx_errors),
            }
        };
    }
    NetworkStats {
        time: time_ns(n.timestamp).unwrap_or_else(|| now.clone()),
        default: n
            .default_interface
            .as_ref()
            .map(|i| conv!(i))
            .unwrap_or_default(),
        interfaces: n.interfaces.iter().map(|i| conv!(i)).collect(),
    }
}

/// CPU from the runtime where it answered, else the cgroup; nanocores from this and the previous
/// sample of `key`, else the runtime's.
fn cpu_stats(
    rates: &mut CpuRates,
    key: &str,
    cri: Option<&bosun_cri::types::CpuUsage>,
    cgroup_ns: Option<u64>,
    now: &Time,
) -> Option<CpuStats> {
    let (usage, time) = match cri.and_then(|c| Some((u!(c.usage_core_nano_seconds)?, c.timestamp)))
    {
        Some((v, ts)) => (v, time_ns(ts).unwrap_or_else(|| now.clone())),
        None => (cgroup_ns?, now.clone()),
    };
    let computed = rates.rate(key, usage, nanos(&time));
    Some(CpuStats {
        // Our own two samples first, as the kubelet's default stats provider: consistent with
        // the cumulative value published; the runtime's figure only before a second sample.
        usage_nano_cores: computed.or_else(|| cri.and_then(|c| u!(c.usage_nano_cores))),
        usage_core_nano_seconds: Some(usage),
        time,
        psi: None,
    })
}

/// The summary's form of one pressure file.
fn psi_stats(p: &Psi) -> PsiStats {
    let data = |l: &super::cgroup::PsiLine| PsiData {
        total: l.total,
        avg10: l.avg10,
        avg60: l.avg60,
        avg300: l.avg300,
    };
    PsiStats {
        full: data(&p.full),
        some: data(&p.some),
    }
}

/// `cpu` with the CPU pressure of its cgroup, when the cgroup was found.
fn with_cpu_psi(mut cpu: CpuStats, p: Option<&Pressure>) -> CpuStats {
    cpu.psi = p.map(|p| psi_stats(&p.cpu));
    cpu
}

/// `memory` with the memory pressure of its cgroup, when the cgroup was found.
fn with_memory_psi(mut memory: MemoryStats, p: Option<&Pressure>) -> MemoryStats {
    memory.psi = p.map(|p| psi_stats(&p.memory));
    memory
}

/// The IO stats of a cgroup: its IO pressure.
fn io_stats(p: &Pressure, now: &Time) -> IoStats {
    IoStats {
        time: now.clone(),
        psi: Some(psi_stats(&p.io)),
    }
}

/// Memory from the runtime's fields where present, each missing one from the cgroup.
fn memory_stats(
    cri: Option<&bosun_cri::types::MemoryUsage>,
    cg: Option<MemorySample>,
    now: &Time,
) -> Option<MemoryStats> {
    if cri.is_none() && cg.is_none() {
        return None;
    }
    let time = cri
        .and_then(|m| time_ns(m.timestamp))
        .unwrap_or_else(|| now.clone());
    let pick = |f: fn(&bosun_cri::types::MemoryUsage) -> Option<u64>,
                g: fn(&MemorySample) -> u64| {
        cri.and_then(f).or_else(|| cg.as_ref().map(g))
    };
    let working_set = pick(|m| u!(m.working_set_bytes), |c| c.working_set);
    Some(MemoryStats {
        available_bytes: cri.and_then(|m| u!(m.available_bytes)).or_else(|| {
            let limit = cg.as_ref()?.limit?;
            Some(limit.saturating_sub(working_set?))
        }),
        usage_bytes: pick(|m| u!(m.usage_bytes), |c| c.usage),
        working_set_bytes: working_set,
        rss_bytes: pick(|m| u!(m.rss_bytes), |c| c.rss),
        page_faults: pick(|m| u!(m.page_faults), |c| c.page_faults),
        major_page_faults: pick(|m| u!(m.major_page_faults), |c| c.major_page_faults),
        time,
        psi: None,
    })
}

fn fs_of(c: Option<FsCapacity>, time: &Time) -> FsStats {
    FsStats {
        available_bytes: c.map(|c| c.available),
        capacity_bytes: c.map(|c| c.capacity),
        inodes_free: c.map(|c| c.inodes_free),
        inodes: c.map(|c| c.inodes),
        ..FsStats::at(time.clone())
    }
}

fn image_fs(r: &bosun_cri::types::ImageFsInfoResponse, now: &Time) -> Option<FsStats> {
    let f = r.image_filesystems.first()?;
    let cap = f
        .fs_id
        .as_ref()
        .and_then(|id| sfs::capacity(Path::new(&id.mountpoint)));
    Some(FsStats {
        used_bytes: u!(f.used_bytes),
        inodes_used: u!(f.inodes_used),
        ..fs_of(cap, &time_ns(f.timestamp).unwrap_or_else(|| now.clone()))
    })
}

/// Usage of every volume directory of a pod (`volumes/<plugin>/<name>`) but its CSI volumes
/// (their drivers measure them: volume_stats.rs); the flag is true for emptyDir volumes on the
/// node's disk (they count towards ephemeral storage).
fn volumes(pod_dir: &Path, now: &Time) -> Vec<(VolumeStats, bool)> {
    let mut out = Vec::new();
    let pod_dev = std::fs::metadata(pod_dir).ok().map(|m| {
        use std::os::unix::fs::MetadataExt;
        m.dev()
    });
    let Ok(plugins) = std::fs::read_dir(pod_dir.join("volumes")) else {
        return out;
    };
    for plugin in plugins.flatten() {
        if plugin.file_name() == "kubernetes.io~csi" {
            continue;
        }
        let empty_dir = plugin.file_name() == "kubernetes.io~empty-dir";
        let Ok(vols) = std::fs::read_dir(plugin.path()) else {
            continue;
        };
        for v in vols.flatten() {
            let path: PathBuf = v.path();
            let Some(us) = sfs::usage(&path) else {
                continue;
            };
            let dev = std::fs::metadata(&path).ok().map(|m| {
                use std::os::unix::fs::MetadataExt;
                m.dev()
            });
            let stats = VolumeStats {
                fs: FsStats {
                    used_bytes: Some(us.bytes),
                    inodes_used: Some(us.inodes),
                    ..fs_of(sfs::capacity(&path), now)
                },
                name: v.file_name().to_string_lossy().into_owned(),
                pvc_ref: None,
                volume_health_stats: None,
            };
            out.push((stats, empty_dir && dev.is_some() && dev == pod_dev));
        }
    }
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    out
}

fn node_stats(
    st: &mut State,
    now: &Time,
    nodefs: Option<FsCapacity>,
    image_fs: Option<FsStats>,
) -> NodeStats {
    let root = st
        .layout
        .as_ref()
        .map(|l| l.sample("/"))
        .unwrap_or_default();
    let root_pressure = st.layout.as_ref().map(|l| l.pressure("/"));
    let meminfo = node_proc::meminfo();
    let total = meminfo.as_ref().map(|m| m.mem_total);
    let memory = root.memory.map(|m| MemoryStats {
        time: now.clone(),
        available_bytes: total.map(|t| t.saturating_sub(m.working_set)),
        usage_bytes: Some(m.usage),
        working_set_bytes: Some(m.working_set),
        rss_bytes: Some(m.rss),
        page_faults: Some(m.page_faults),
        major_page_faults: Some(m.major_page_faults),
        psi: root_pressure.as_ref().map(|p| psi_stats(&p.memory)),
    });
    let cpu = root.cpu_usage_ns.map(|usage| CpuStats {
        usage_nano_cores: st.rates.rate("node", usage, nanos(now)),
        usage_core_nano_seconds: Some(usage),
        time: now.clone(),
        psi: root_pressure.as_ref().map(|p| psi_stats(&p.cpu)),
    });
    let swap = meminfo.as_ref().map(|m| {
        let (t, free) = (m.swap_total, m.swap_free);
        SwapStats {
            time: now.clone(),
            swap_available_bytes: Some(free),
            swap_usage_bytes: Some(t.saturating_sub(free)),
        }
    });
    let pods_cg = st.layout.as_ref().map(|l| {
        let names = &st.facts.dirs.cgroups;
        let rel = names.literal(&names.node());
        (l.sample(&rel), l.pressure(&rel))
    });
    let system_containers = pods_cg
        .filter(|(s, _)| s.memory.is_some() || s.cpu_usage_ns.is_some())
        .map(|(s, p)| {
            let cpu = s.cpu_usage_ns.map(|usage| CpuStats {
                usage_nano_cores: st.rates.rate("system/pods", usage, nanos(now)),
                usage_core_nano_seconds: Some(usage),
                time: now.clone(),
                psi: Some(psi_stats(&p.cpu)),
            });
            ContainerStats {
                name: SYSTEM_CONTAINER_PODS.into(),
                start_time: st.boot.clone(),
                cpu,
                memory: memory_stats(None, s.memory, now).map(|m| with_memory_psi(m, Some(&p))),
                io: Some(io_stats(&p, now)),
                accelerators: vec![],
                rootfs: None,
                logs: None,
                user_defined_metrics: vec![],
                swap: None,
            }
        })
        .into_iter()
        .collect();
    NodeStats {
        node_name: st.facts.node_name.clone(),
        system_containers,
        start_time: st.boot.clone(),
        cpu,
        memory,
        io: root_pressure.as_ref().map(|p| io_stats(p, now)),
        network: node_proc::net_dev(None).map(|ifs| network_of(ifs, now)),
        fs: nodefs.map(|c| FsStats {
            used_bytes: Some(c.used),
            inodes_used: Some(c.inodes.saturating_sub(c.inodes_free)),
            ..fs_of(Some(c), now)
        }),
        runtime: Some(RuntimeStats {
            image_fs,
            container_fs: None,
        }),
        rlimit: Some(RlimitStats {
            time: now.clone(),
            max_pid: node_proc::max_pid(),
            num_of_running_processes: node_proc::tasks(),
        }),
        swap,
    }
}

/// Starts the sampling loop on the runtime and returns the handle scrapes read.
pub fn spawn(
    cri: CriClient,
    facts: NodeFacts,
    cfg: SamplerConfig,
    cancel: CancellationToken,
) -> StatsProvider {
    let provider = StatsProvider::new();
    tokio::spawn(run(cri, facts, provider.clone(), cfg, cancel));
    provider
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::Hierarchy;
    use crate::config::CgroupDriver;
    use crate::runtime::{ObservedContainer, ObservedSandbox};

    fn state(dir: &Path, layout: Option<Layout>, cgroups: Hierarchy) -> State {
        State {
            facts: NodeFacts {
                node_name: "n".into(),
                csi: CsiVolumes::default(),
                dirs: PodDirs {
                    root_dir: dir.into(),
                    pod_logs_dir: dir.into(),
                    container_logs_link_dir: dir.into(),
                    cluster_dns: vec![],
                    cluster_domain: String::new(),
                    resolv_conf: dir.join("resolv.conf"),
                    cgroups,
                },
            },
            layout,
            rates: CpuRates::default(),
            pod_cgroups: HashMap::new(),
            volumes: HashMap::new(),
            volumes_at: None,
            volume_interval: Duration::from_secs(60),
            csi: CsiVolumeStats::default(),
            boot: time_of(SystemTime::now()),
            ids: crate::stats::Identities::default(),
        }
    }

    fn no_answers() -> Answers {
        Answers {
            pods: HashMap::new(),
            sandboxes: HashMap::new(),
            containers: HashMap::new(),
            image_fs: None,
        }
    }

    #[test]
    fn node_stats_of_this_machine_round_trip_through_json() {
        let d = tempfile::tempdir().unwrap();
        let mut st = state(
            d.path(),
            Layout::detect(),
            Hierarchy::new(CgroupDriver::Cgroupfs, "", true),
        );
        let t0 = SystemTime::now();
        assemble(&mut st, no_answers(), t0);
        let s = assemble(&mut st, no_answers(), t0 + Duration::from_secs(1));
        let json = serde_json::to_string(&s).unwrap();
        let back: Summary = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}: {json}"));
        assert_eq!(back.node.node_name, "n");
        assert!(s.node.fs.is_some() && s.node.rlimit.is_some());
        if st.layout.is_some() {
            assert!(s.node.cpu.unwrap().usage_nano_cores.is_some());
        }
    }

    /// The directory walk measures emptyDir (and the other local) volumes, never a CSI volume's
    /// directory, which its driver measures.
    #[test]
    fn the_walk_leaves_csi_volumes_to_their_drivers() {
        let d = tempfile::tempdir().unwrap();
        let scratch = d.path().join("volumes/kubernetes.io~empty-dir/scratch");
        let pv = d.path().join("volumes/kubernetes.io~csi/pv-1/mount");
        std::fs::create_dir_all(&scratch).unwrap();
        std::fs::create_dir_all(&pv).unwrap();
        std::fs::write(scratch.join("f"), [0u8; 8192]).unwrap();
        std::fs::write(pv.join("f"), [0u8; 8192]).unwrap();
        let now = time_of(SystemTime::now());
        let names: Vec<(String, bool)> = volumes(d.path(), &now)
            .into_iter()
            .map(|(v, local)| (v.name, local))
            .collect();
        assert_eq!(names, [("scratch".to_string(), true)]);
    }

    /// Writes a cgroup's CPU time (ns) and memory usage where `layout` reads them.
    fn write_cgroup(layout: &Layout, rel: &str, cpu_ns: u64, memory: u64) {
        let rel = rel.trim_start_matches('/');
        match layout {
            Layout::V1 {
                cpuacct,
                memory: mem,
            } => {
                std::fs::create_dir_all(cpuacct.join(rel)).unwrap();
                std::fs::create_dir_all(mem.join(rel)).unwrap();
                std::fs::write(cpuacct.join(rel).join("cpuacct.usage"), cpu_ns.to_string())
                    .unwrap();
                std::fs::write(
                    mem.join(rel).join("memory.usage_in_bytes"),
                    memory.to_string(),
                )
                .unwrap();
                std::fs::write(mem.join(rel).join("memory.stat"), "total_rss 4096\n").unwrap();
            }
            Layout::V2 { root } => {
                let d = root.join(rel);
                std::fs::create_dir_all(&d).unwrap();
                let us = cpu_ns / 1000;
                std::fs::write(d.join("cpu.stat"), format!("usage_usec {us}\n")).unwrap();
                std::fs::write(d.join("memory.current"), memory.to_string()).unwrap();
                std::fs::write(d.join("memory.stat"), "anon 4096\n").unwrap();
            }
        }
    }

    /// The sampler finds the pod, container and kubepods cgroups at the kubelet's names for the
    /// driver and cgroupRoot (written out literally here), v1 and v2, and reads their files when
    /// the runtime answers no stats.
    #[test]
    fn reads_the_kubelet_named_cgroups_of_each_driver_and_layout() {
        const UID: &str = "1a-2b";
        const CID: &str = "c0ffee";
        const SID: &str = "5a4d";
        let cases = [
            (
                CgroupDriver::Cgroupfs,
                "/bosun-bsn3",
                "/bosun-bsn3/kubepods",
                "/bosun-bsn3/kubepods/burstable/pod1a-2b",
                "c0ffee",
            ),
            (
                CgroupDriver::Systemd,
                "/bosun-bsn3",
                "/bosun_bsn3.slice/bosun_bsn3-kubepods.slice",
                "/bosun_bsn3.slice/bosun_bsn3-kubepods.slice/bosun_bsn3-kubepods-burstable.slice/bosun_bsn3-kubepods-burstable-pod1a_2b.slice",
                "cri-containerd-c0ffee.scope",
            ),
            (
                CgroupDriver::Systemd,
                "/",
                "/kubepods.slice",
                "/kubepods.slice/kubepods-pod1a_2b.slice",
                "crio-c0ffee.scope",
            ),
            (
                CgroupDriver::Cgroupfs,
                "",
                "/kubepods",
                "/kubepods/besteffort/pod1a-2b",
                "c0ffee",
            ),
        ];
        for v2 in [false, true] {
            for (driver, root, kubepods, pod, container) in cases {
                let what = format!("{driver:?} root {root:?} v2 {v2}");
                let d = tempfile::tempdir().unwrap();
                let layout = if v2 {
                    Layout::V2 {
                        root: d.path().join("unified"),
                    }
                } else {
                    Layout::V1 {
                        cpuacct: d.path().join("cpuacct"),
                        memory: d.path().join("memory"),
                    }
                };
                write_cgroup(&layout, kubepods, 9_000_000, 900_000);
                write_cgroup(&layout, pod, 5_000_000, 500_000);
                write_cgroup(&layout, &format!("{pod}/{container}"), 3_000_000, 300_000);
                let mut st = state(d.path(), Some(layout), Hierarchy::new(driver, root, true));
                let mut a = no_answers();
                a.pods.insert(
                    UID.into(),
                    ObservedPod {
                        name: "p".into(),
                        namespace: "ns".into(),
                        sandboxes: vec![ObservedSandbox {
                            id: SID.into(),
                            ready: true,
                            attempt: 0,
                            created_at: 1,
                        }],
                        containers: vec![ObservedContainer {
                            id: CID.into(),
                            name: "c".into(),
                            sandbox_id: SID.into(),
                            state: ContainerState::ContainerRunning,
                            restart_count: 0,
                            created_at: 2,
                            image_ref: String::new(),
                            init: false,
                        }],
                    },
                );
                let s = assemble(&mut st, a, SystemTime::now());
                let p = s.pods.first().unwrap_or_else(|| panic!("{what}: no pod"));
                let cpu = |c: &Option<CpuStats>| c.as_ref().and_then(|c| c.usage_core_nano_seconds);
                let mem = |m: &Option<MemoryStats>| m.as_ref().and_then(|m| m.usage_bytes);
                assert_eq!(cpu(&p.cpu), Some(5_000_000), "{what}: pod cpu");
                assert_eq!(mem(&p.memory), Some(500_000), "{what}: pod memory");
                let c = &p.containers[0];
                assert_eq!(cpu(&c.cpu), Some(3_000_000), "{what}: container cpu");
                assert_eq!(mem(&c.memory), Some(300_000), "{what}: container memory");
                let pods = s
                    .node
                    .system_containers
                    .iter()
                    .find(|c| c.name == SYSTEM_CONTAINER_PODS)
                    .unwrap_or_else(|| panic!("{what}: no pods system container"));
                assert_eq!(cpu(&pods.cpu), Some(9_000_000), "{what}: kubepods cpu");
                assert_eq!(mem(&pods.memory), Some(900_000), "{what}: kubepods memory");
                // The names cAdvisor's series carry, from the same round.
                assert_eq!(
                    st.ids.pod_cgroups.get(UID),
                    Some(&pod.to_string()),
                    "{what}"
                );
                let c = &st.ids.containers[&(UID.to_string(), "c".to_string())];
                assert_eq!(c.id, CID, "{what}");
                assert_eq!(c.cgroup, Some(format!("{pod}/{container}")), "{what}");
            }
        }
    }

    /// Without cgroupsPerQOS pods have no cgroup of their own: the root's usage is not theirs.
    #[test]
    fn no_pod_cgroup_without_cgroups_per_qos() {
        let d = tempfile::tempdir().unwrap();
        let layout = Layout::V2 {
            root: d.path().into(),
        };
        write_cgroup(&layout, "/r", 1_000, 1_000);
        let mut st = state(
            d.path(),
            Some(layout),
            Hierarchy::new(CgroupDriver::Cgroupfs, "/r", false),
        );
        assert_eq!(locate_pod_cgroup(&mut st, "u"), None);
    }
}
