//! Wiring: build every part from the config, spawn the loops, stop them on SIGTERM/SIGINT.
//! Stopping bosun stops bosun, never the pods.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use bosun_cri::{CriClient, Timeouts};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::backoff::{Policy, retry};
use crate::config::{
    Config, ContainerGcPolicy, ContainerLogsConfig, ImagesConfig, PodsConfig, RuntimeConfig,
    ServerConfig, eviction::EvictionConfig,
};
use crate::node::machine::MachineInfo;
use crate::pod::{NodeContext, PodManager, source};
use crate::runtime::PodDirs;
use crate::status::StatusStore;
use crate::tasks::Tasks;

/// Waiting for the runtime to answer: 200 ms doubling to 10 s.
const RUNTIME_CONNECT: Policy =
    Policy::exponential(Duration::from_millis(200), Duration::from_secs(10));

/// Connects to the runtime, retrying with back-off until it answers or `cancel` fires.
async fn connect_runtime(
    cfg: &RuntimeConfig,
    cancel: &CancellationToken,
) -> anyhow::Result<CriClient> {
    use bosun_cri::CriError;
    let timeouts = Timeouts {
        long: cfg.request_timeout,
        ..Timeouts::default()
    };
    let endpoint = &cfg.endpoint;
    let connected = retry(
        RUNTIME_CONNECT,
        cancel,
        &mut (),
        |s| async move {
            let r = match CriClient::connect(endpoint, timeouts).await {
                Ok(c) => Ok(Ok(c)),
                // No retry fixes these: the attempt's value, not an error to retry.
                Err(
                    e @ (CriError::InvalidEndpoint { .. } | CriError::UnsupportedVersion { .. }),
                ) => Ok(Err(e)),
                Err(e) => Err(e),
            };
            (s, r)
        },
        |e, delay| warn!(error = %e, "container runtime not ready; retrying in {delay:?}"),
    )
    .await;
    match connected {
        Some(c) => Ok(c?),
        None => anyhow::bail!("stopped before the runtime answered"),
    }
}

/// How long the tasks get to stop after SIGTERM before they are aborted.
const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// Runs bosun until SIGTERM or SIGINT: binds its ports, builds the node's parts, spawns every
/// loop as a named task, then drains them within [`SHUTDOWN_DEADLINE`].
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let cancel = CancellationToken::new();
    let mut tasks = Tasks::default();
    let health = crate::healthz::Health::default();
    let notifier = crate::sdnotify::Notifier::from_env();
    spawn_healthz(&cfg.server, &health, &cancel, &mut tasks).await?;
    // Bind the kubelet port first: a port in use is a clear error and a non-zero exit.
    let server_listener = crate::server::bind(&cfg.server.address, cfg.server.port).await?;
    // serverTLSBootstrap: the port serves the certificate the cluster signs, once it is.
    let serving = cfg
        .server
        .server_tls_bootstrap
        .then(|| Arc::new(crate::client::serving::ServingResolver::default()));
    let tls_source = server_tls(&cfg, serving.clone())?;
    let (tls_tx, server_tls) = tokio::sync::watch::channel(tls_source.build()?);
    tasks.spawn(
        "tls-reload",
        crate::server::tls_reload::run(tls_source, tls_tx, cancel.child_token()),
    );
    tasks.spawn("signals", on_signal(cancel.clone(), notifier.clone()));
    tasks.spawn("memory", crate::memory::run(cancel.child_token()));

    let mut cri = connect_runtime(&cfg.runtime, &cancel).await?;
    cri.set_observer(Arc::new(|op, took, ok| {
        crate::metrics::global().observe_cri(op, took, ok)
    }));
    let v = cri.runtime_version();
    info!(runtime = %v.node_info_string(), endpoint = %cfg.runtime.endpoint, "container runtime connected");
    health.set_started();
    let pleg = spawn_watchdog(&health, &notifier, &cancel, &mut tasks);

    // The machine's facts (cores, MemTotal, huge pages) read once for the cgroups, the runtime's
    // OOM scores and admission; the node status re-reads them on its own period.
    let machine = MachineInfo::read();
    let client =
        crate::client::connect(&cfg.api, &cfg.node.name, &cfg.paths.cert_dir, &cancel).await?;
    if client.is_none() {
        info!(node = %cfg.node.name, "no kubeconfig: standalone mode, static pods only");
    }
    let ctx = node_context(&cfg, cri, &machine, client.clone(), &cancel).await?;
    if let (Some(client), Some(resolver)) = (&client, serving) {
        spawn_serving_cert(&cfg, client.clone(), resolver, &cancel, &mut tasks);
    }

    // The stats sampler publishes into this provider; the server reads the latest sample.
    let stats = crate::stats::StatsProvider::new();
    let state = server_state(&cfg, &ctx, client.clone(), stats.clone(), health.clone());
    let serve = crate::server::serve(
        server_listener,
        server_tls,
        Arc::new(state),
        cancel.child_token(),
    );
    tasks.spawn("server", serve);
    spawn_stats(&cfg.pods, &ctx, &stats, &cancel, &mut tasks);
    let eviction = spawn_eviction(&cfg.eviction, &ctx, &stats, &cancel, &mut tasks).await;
    let shutting_down = spawn_node_shutdown(&cfg, &ctx, &eviction, &cancel, &mut tasks);
    if let Err(e) = crate::podresources::spawn(
        &cfg.paths.root_dir,
        (ctx.statuses.clone(), ctx.devices.clone()),
        cancel.child_token(),
    ) {
        warn!(error = %e, "pod-resources API not served");
    }
    if let Err(e) =
        crate::devicemanager::registration::spawn(ctx.devices.clone(), cancel.child_token())
    {
        warn!(error = %e, "device plugin registration not served");
    }

    // The Node's labels for admission: the ones bosun registers with until the Node is seen.
    let (labels_tx, labels_rx) = tokio::sync::watch::channel(crate::node::NodeView {
        labels: crate::node::register::initial_labels(&cfg.node.name, &cfg.node.labels),
        taints: crate::node::register::api_taints(&cfg.node.register_with_taints),
        allocatable: Default::default(),
    });
    let (sources, rx) = spawn_pod_sources(
        &cfg,
        &client,
        ApiLoopInputs {
            ctx: &ctx,
            notifier: &notifier,
            labels: labels_tx,
            pressure: eviction.pressure.clone(),
            shutting_down: shutting_down.clone(),
            pleg: pleg.clone(),
        },
        &cancel,
        &mut tasks,
    );
    let manager = PodManager::new(
        ctx.clone(),
        sources,
        admission(
            &cfg.pods,
            &ctx,
            labels_rx,
            (eviction.pressure, shutting_down),
        ),
        cancel.child_token(),
    )
    .with_pleg(pleg);
    spawn_gc(
        (cfg.container_gc, &cfg.images),
        &ctx,
        manager.known_pods(),
        eviction.reclaim,
        &cancel,
        &mut tasks,
    );
    spawn_log_rotation(&cfg.container_logs, &ctx, &cancel, &mut tasks);
    spawn_plugin_watcher(&ctx, &client, &cancel, &mut tasks);
    tasks.spawn("pod-manager", manager.run(rx, Some(eviction.pods)));
    info!(tasks = ?tasks.running(), "bosun running");
    cancel.cancelled().await;
    tasks.drain(SHUTDOWN_DEADLINE).await;
    info!("bosun stopped");
    Ok(())
}

/// Spawns the plugin watcher: CSI drivers and device plugins registering under
/// `<root>/plugins_registry`, and the CSINode object kept with the drivers when there is a client.
fn spawn_plugin_watcher(
    ctx: &NodeContext,
    client: &Option<kube::Client>,
    cancel: &CancellationToken,
    tasks: &mut Tasks,
) {
    let watcher = crate::csi::pluginwatcher::run(
        ctx.dirs.root_dir.clone(),
        (ctx.csi.drivers.clone(), ctx.devices.clone()),
        client
            .clone()
            .map(|c| crate::csi::csinode::CsiNodeWriter::new(c, &ctx.node_name)),
        cancel.child_token(),
    );
    tasks.spawn("plugin-watcher", watcher);
}

/// Spawns the serving certificate's CSR loop (serverTLSBootstrap): the node's name and IPs as
/// SANs, served through `resolver` once approved.
fn spawn_serving_cert(
    cfg: &Config,
    client: kube::Client,
    resolver: Arc<crate::client::serving::ServingResolver>,
    cancel: &CancellationToken,
    tasks: &mut Tasks,
) {
    let serving = crate::client::serving::Serving {
        client,
        node: cfg.node.name.clone(),
        hostnames: vec![cfg.node.name.clone()],
        ips: crate::node::node_ips(&cfg.node),
        cert_dir: cfg.paths.cert_dir.clone(),
        resolver,
    };
    tasks.spawn("serving-cert", serving.run(cancel.child_token()));
}

/// What the API loops share with the rest of the node besides the client and config.
struct ApiLoopInputs<'a> {
    ctx: &'a Arc<NodeContext>,
    notifier: &'a crate::sdnotify::Notifier,
    labels: crate::node::LabelsTx,
    pressure: crate::eviction::ConditionsRx,
    shutting_down: crate::nodeshutdown::ShuttingDown,
    pleg: crate::pod::pleg::PlegHealth,
}

/// Spawns the pod sources (the static pod path; with a client the API loops, else READY=1 at
/// once) and returns their names and the channel the pod manager reads.
fn spawn_pod_sources(
    cfg: &Config,
    client: &Option<kube::Client>,
    shared: ApiLoopInputs<'_>,
    cancel: &CancellationToken,
    tasks: &mut Tasks,
) -> (Vec<&'static str>, mpsc::Receiver<source::SourceUpdate>) {
    let (tx, rx) = mpsc::channel(16);
    let mut sources = Vec::new();
    if let Some(dir) = cfg.pods.static_pod_path.clone() {
        sources.push("file");
        let watch = source::run_static(
            dir,
            cfg.node.name.clone(),
            cfg.pods.file_check_frequency,
            tx.clone(),
            cancel.child_token(),
        );
        tasks.spawn("static-pods", watch);
    }
    match &client {
        Some(client) => {
            sources.push("api");
            let loops = ApiLoops {
                client: client.clone(),
                cfg,
                shared,
                pods: tx.clone(),
                cancel,
            };
            loops.spawn(tasks);
        }
        None => shared.notifier.notify("READY=1"),
    }
    drop(tx);
    (sources, rx)
}

/// The memory threshold notifiers of the eviction thresholds when kernelMemcgNotification is
/// on (none otherwise): memory.available on the memory hierarchy's root, allocatableMemory on
/// the pods cgroup.
fn memcg_notifiers(cfg: &EvictionConfig, ctx: &NodeContext) -> crate::eviction::memcg::Notifiers {
    let thresholds: &[_] = if cfg.kernel_memcg_notification {
        &cfg.thresholds
    } else {
        &[]
    };
    let root = std::path::Path::new(crate::cgroup::CGROUP_ROOT);
    let v2 = matches!(
        crate::cgroup::fs::detect(root),
        Ok(crate::cgroup::fs::CgroupVersion::V2)
    );
    let memory_root = if v2 {
        root.to_path_buf()
    } else {
        root.join("memory")
    };
    let names = &ctx.dirs.cgroups;
    let pods = names.literal(&names.node());
    crate::eviction::memcg::Notifiers::new(thresholds, &memory_root, &pods, v2)
}

/// Serves the plain-HTTP /healthz on healthzBindAddress:healthzPort (none with port 0).
async fn spawn_healthz(
    cfg: &ServerConfig,
    health: &crate::healthz::Health,
    cancel: &CancellationToken,
    tasks: &mut Tasks,
) -> anyhow::Result<()> {
    if cfg.healthz_port != 0 {
        let addr = format!("{}:{}", cfg.healthz_bind_address, cfg.healthz_port);
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .with_context(|| format!("healthz: cannot listen on {addr}"))?;
        let serve = crate::healthz::serve(listener, health.clone(), cancel.child_token());
        tasks.spawn("healthz", serve);
    }
    Ok(())
}

/// The PLEG relist's health as the syncloop check (the kubelet's, and node readiness), and the
/// systemd watchdog fed while every check passes; returns the PLEG health for the pod manager.
fn spawn_watchdog(
    health: &crate::healthz::Health,
    notifier: &crate::sdnotify::Notifier,
    cancel: &CancellationToken,
    tasks: &mut Tasks,
) -> crate::pod::pleg::PlegHealth {
    let pleg = crate::pod::pleg::PlegHealth::new();
    {
        let pleg = pleg.clone();
        health.add_check("syncloop", move || pleg.check(std::time::Instant::now()));
    }
    let health = health.clone();
    let watchdog = notifier
        .clone()
        .watchdog(move || health.is_healthy(), cancel.child_token());
    tasks.spawn("watchdog", watchdog);
    pleg
}

/// Node, pod and container usage, sampled in the background into `stats`; the :10250 server
/// and the eviction manager read it.
fn spawn_stats(
    cfg: &PodsConfig,
    ctx: &NodeContext,
    stats: &crate::stats::StatsProvider,
    cancel: &CancellationToken,
    tasks: &mut Tasks,
) {
    let facts = crate::stats::NodeFacts {
        node_name: ctx.node_name.clone(),
        csi: ctx.csi.clone(),
        dirs: ctx.dirs.clone(),
    };
    let sampler = crate::stats::sampler::run(
        ctx.cri.clone(),
        facts,
        stats.clone(),
        crate::stats::SamplerConfig {
            volume_interval: cfg.volume_stats_agg_period,
            ..Default::default()
        },
        cancel.child_token(),
    );
    tasks.spawn("stats", sampler);
}

/// What the eviction manager hands the other parts.
struct EvictionLinks {
    /// The pressure conditions, for the node status and admission.
    pressure: crate::eviction::ConditionsRx,
    /// Its requests to the pod manager (the active pods, evict one).
    pods: mpsc::Receiver<crate::eviction::PodsRequest>,
    /// Where others (the node shutdown manager) send the same requests.
    pods_tx: mpsc::Sender<crate::eviction::PodsRequest>,
    /// Its requests to the container and image GC tasks.
    reclaim: (crate::gc::ReclaimRx, crate::gc::ReclaimRx),
}

/// The eviction manager: pressure conditions from the sampled stats, node-level reclaim through
/// the GC tasks, evictions through the pod manager.
async fn spawn_eviction(
    cfg: &EvictionConfig,
    ctx: &NodeContext,
    stats: &crate::stats::StatsProvider,
    cancel: &CancellationToken,
    tasks: &mut Tasks,
) -> EvictionLinks {
    let (eviction, pressure) = crate::eviction::Manager::new(cfg.clone(), stats.clone());
    let (evict_tx, evict_rx) = mpsc::channel(4);
    let image_fs = image_fs_mountpoint(ctx).await;
    let dedicated = image_fs
        .as_deref()
        .is_some_and(|m| on_other_device(m, &ctx.dirs.root_dir));
    let (reclaim_containers, containers_rx) = mpsc::channel(1);
    let (reclaim_images, images_rx) = mpsc::channel(1);
    let eviction = eviction
        .with_memcg(memcg_notifiers(cfg, ctx))
        .with_pods(evict_tx.clone(), dedicated)
        .with_events(ctx.events.clone(), ctx.node_name.clone())
        .with_reclaim(crate::eviction::Reclaim {
            containers: Some(reclaim_containers),
            images: Some(reclaim_images),
            nodefs: Some(ctx.dirs.root_dir.clone()),
            imagefs: image_fs,
        });
    tasks.spawn(
        "eviction",
        eviction.run(crate::eviction::MONITORING_PERIOD, cancel.child_token()),
    );
    EvictionLinks {
        pressure,
        pods: evict_rx,
        pods_tx: evict_tx,
        reclaim: (containers_rx, images_rx),
    }
}

/// The node shutdown manager when shutdownGracePeriod (or its by-priority form) is set: it
/// stops pods through the pod manager as the eviction manager does. Whether the node is
/// shutting down, for the node status and admission (never, without the manager).
fn spawn_node_shutdown(
    cfg: &Config,
    ctx: &NodeContext,
    eviction: &EvictionLinks,
    cancel: &CancellationToken,
    tasks: &mut Tasks,
) -> crate::nodeshutdown::ShuttingDown {
    let (manager, shutting_down) =
        crate::nodeshutdown::Manager::new(&cfg.node, eviction.pods_tx.clone(), ctx.events.clone());
    if let Some(manager) = manager {
        let manager = manager
            .with_state_in(&ctx.dirs.root_dir)
            .with_status_writes(ctx.statuses.clone());
        tasks.spawn("node-shutdown", manager.run(cancel.child_token()));
    }
    shutting_down
}

/// The image filesystem's mountpoint, as the runtime's ImageFsInfo names it.
async fn image_fs_mountpoint(ctx: &NodeContext) -> Option<std::path::PathBuf> {
    let info = ctx.cri.image_fs_info().await.ok()?;
    let fs = info.image_filesystems.first()?.fs_id.as_ref()?;
    Some(std::path::PathBuf::from(&fs.mountpoint))
}

/// True when `a` and `b` are on different devices (the kubelet's dedicatedImageFs, for the
/// image filesystem and the root dir); false when either cannot be read.
fn on_other_device(a: &std::path::Path, b: &std::path::Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => a.dev() != b.dev(),
        _ => false,
    }
}

/// Spawns the garbage collectors on the kubelet's periods; `reclaim` brings the eviction
/// manager's node-level reclaim requests (containers, images).
fn spawn_gc(
    (policy, images): (ContainerGcPolicy, &ImagesConfig),
    ctx: &Arc<NodeContext>,
    known: crate::pod::manager::KnownPods,
    reclaim: (crate::gc::ReclaimRx, crate::gc::ReclaimRx),
    cancel: &CancellationToken,
    tasks: &mut Tasks,
) {
    use crate::gc;
    let containers = gc::container::ContainerGc {
        cri: ctx.cri.clone(),
        policy,
        known,
        statuses: ctx.statuses.clone(),
        pod_logs_dir: ctx.dirs.pod_logs_dir.clone(),
        container_logs_link_dir: ctx.dirs.container_logs_link_dir.clone(),
    };
    let period = gc::period_from_env("BOSUN_CONTAINER_GC_PERIOD", gc::CONTAINER_GC_PERIOD);
    tasks.spawn(
        "container-gc",
        gc::run_containers(
            containers,
            period,
            ctx.events.clone(),
            ctx.node_name.clone(),
            Some(reclaim.0),
            cancel.child_token(),
        ),
    );
    let images = gc::image::ImageGc::new(
        ctx.cri.clone(),
        gc::image_policy::ImageGcPolicy {
            high_threshold_percent: images.gc_high_threshold_percent,
            low_threshold_percent: images.gc_low_threshold_percent,
            min_age: images.minimum_gc_age,
            max_age: images.maximum_gc_age,
        },
        ctx.events.clone(),
        ctx.node_name.clone(),
    );
    let period = gc::period_from_env("BOSUN_IMAGE_GC_PERIOD", gc::IMAGE_GC_PERIOD);
    tasks.spawn(
        "image-gc",
        gc::run_images(images, period, Some(reclaim.1), cancel.child_token()),
    );
}

/// Spawns the container log manager (the kubelet's `containerLogManager`).
fn spawn_log_rotation(
    cfg: &ContainerLogsConfig,
    ctx: &Arc<NodeContext>,
    cancel: &CancellationToken,
    tasks: &mut Tasks,
) {
    let logs = crate::logs::manager::LogManager {
        cri: ctx.cri.clone(),
        max_size: cfg.max_size,
        max_files: cfg.max_files,
        workers: cfg.max_workers as usize,
        interval: cfg.monitor_interval,
        log_paths: Default::default(),
    };
    tasks.spawn("log-rotation", logs.run(cancel.child_token()));
}

/// Waits for SIGTERM or SIGINT, then tells systemd and cancels everything.
async fn on_signal(cancel: CancellationToken, notifier: crate::sdnotify::Notifier) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => info!("SIGTERM: stopping bosun (pods keep running)"),
        _ = int.recv() => info!("SIGINT: stopping bosun (pods keep running)"),
        _ = cancel.cancelled() => return,
    }
    notifier.notify("STOPPING=1");
    cancel.cancel();
}

/// What every pod worker shares: paths, the container manager (started here: the QoS tiers and
/// node allocatable cgroup exist before any pod), the API-backed managers and the status store.
async fn node_context(
    cfg: &Config,
    cri: CriClient,
    machine: &MachineInfo,
    client: Option<kube::Client>,
    cancel: &CancellationToken,
) -> anyhow::Result<Arc<NodeContext>> {
    let (paths, pods) = (&cfg.paths, &cfg.pods);
    let dirs = PodDirs {
        root_dir: paths.root_dir.clone(),
        pod_logs_dir: paths.pod_logs_dir.clone(),
        container_logs_link_dir: paths.container_logs_link_dir.clone(),
        cluster_dns: pods.cluster_dns.clone(),
        cluster_domain: pods.cluster_domain.clone(),
        resolv_conf: pods.resolv_conf.clone().into(),
        cgroups: crate::cgroup::Hierarchy::new(
            cfg.cgroups.driver,
            &cfg.cgroups.root,
            cfg.cgroups.per_qos,
        ),
    };
    let cgroups = crate::cgroup::start(
        &cfg.cgroups,
        &cri,
        dirs.cgroups.clone(),
        &node_allocatable_cgroup(cfg, machine),
    )
    .await
    .context("container manager")?;
    for d in [&dirs.root_dir, &dirs.pod_logs_dir] {
        std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
    }
    // The kubelet's setupDataDirs: the root dir on a shared mount, else bind-mounted rshared.
    match crate::volume::rshared::make_rshared(&dirs.root_dir) {
        Ok(true) => info!(root_dir = %dirs.root_dir.display(), "root dir bind-mounted rshared"),
        Ok(false) => {}
        Err(e) => anyhow::bail!("error configuring root directory: {e}"),
    }
    // One detection of the node's addresses: the first is status.hostIP.
    let host_ips: Vec<String> = crate::node::node_ips(&cfg.node)
        .iter()
        .map(ToString::to_string)
        .collect();
    let events = match &client {
        Some(c) => {
            crate::events::Recorder::spawn(c.clone(), cfg.node.name.clone(), cancel.child_token())
        }
        None => crate::events::Recorder::disabled(),
    };
    let prober = crate::prober::Prober::spawn(
        Arc::new(crate::prober::Handlers::new(cri.clone())),
        events.clone(),
        cancel.child_token(),
    );
    let image_volumes = cri.runtime_version().mounts_images();
    let csi = crate::volume::csi::CsiVolumes::default();
    let in_use = csi.reconstruct(&paths.root_dir, client.as_ref()).await;
    if in_use > 0 {
        info!(
            volumes = in_use,
            "attachable CSI volumes still published: reported in use"
        );
    }
    Ok(Arc::new(NodeContext {
        cri,
        dirs,
        node_name: cfg.node.name.clone(),
        host_ip: host_ips.first().cloned().unwrap_or_default(),
        host_ips,
        memory_capacity: machine.memory_capacity as i64,
        allocatable: node_allocatable(cfg, machine),
        statuses: StatusStore::default(),
        pulls: Arc::new(Semaphore::new(cfg.images.parallel_pulls())),
        api: client.clone(),
        csi,
        devices: crate::devicemanager::DeviceManager::new(&paths.root_dir),
        allocations: crate::pod::allocation::Allocations::load(
            paths.root_dir.join(crate::pod::allocation::STATE_FILE),
        ),
        objects: client.clone().map(|c| {
            Arc::new(crate::objects::Objects::new(
                c,
                pods.change_detection,
                pods.sync_frequency,
                cancel.child_token(),
            ))
        }),
        services: Default::default(),
        events,
        cgroups,
        prober,
        seccomp_default: pods.seccomp_default,
        sync_frequency: pods.sync_frequency,
        image_volumes,
        seccomp_root: paths.root_dir.join("seccomp"),
        pod_cache: Default::default(),
    }))
}

/// The loops that need the API server: the node (registration, status, Lease), the pod watch,
/// mirror pods and the status writer.
struct ApiLoops<'a> {
    client: kube::Client,
    cfg: &'a Config,
    shared: ApiLoopInputs<'a>,
    pods: mpsc::Sender<source::SourceUpdate>,
    cancel: &'a CancellationToken,
}

impl ApiLoops<'_> {
    fn spawn(self, tasks: &mut Tasks) {
        let (client, cfg, cancel) = (self.client, self.cfg, self.cancel);
        let ApiLoopInputs {
            ctx,
            notifier,
            labels,
            pressure,
            shutting_down,
            pleg,
        } = self.shared;
        // READY=1 once the node is registered (the runtime already answered).
        let (registered, is_registered) = tokio::sync::oneshot::channel();
        let ready = notifier.clone();
        tasks.spawn("sd-ready", async move {
            if is_registered.await.is_ok() {
                ready.notify("READY=1");
            }
        });
        let node = crate::node::run(
            client.clone(),
            (Arc::new(cfg.node.clone()), cfg.server.port),
            crate::node::status::Observer::new(ctx.cri.clone(), ctx.dirs.root_dir.clone())
                .with_pressure(pressure)
                .with_pleg(pleg)
                .with_shutdown(shutting_down)
                .with_csi(ctx.csi.clone())
                .with_devices(ctx.devices.clone()),
            registered,
            labels,
            ctx.events.clone(),
            cancel.child_token(),
        );
        tasks.spawn("node", node);
        let pods = crate::pod::api_source::run(
            client.clone(),
            ctx.node_name.clone(),
            self.pods,
            cancel.child_token(),
        );
        tasks.spawn("pod-watch", pods);
        let mirror = crate::pod::mirror::run(
            client.clone(),
            ctx.node_name.clone(),
            ctx.statuses.clone(),
            cancel.child_token(),
        );
        tasks.spawn("mirror-pods", mirror);
        let writer =
            crate::status::manager::run(client, ctx.statuses.clone(), cancel.child_token());
        tasks.spawn("status-writer", writer);
    }
}

/// What the kubepods cgroup gets: capacity, less systemReserved and kubeReserved when
/// enforceNodeAllocatable has `pods`.
fn node_allocatable_cgroup(cfg: &Config, machine: &MachineInfo) -> crate::cgroup::ResourceConfig {
    use crate::node::allocatable;
    let cap = allocatable::capacity(machine, None, cfg.node.max_pods);
    crate::cgroup::node_allocatable_config(
        &cap,
        crate::cgroup::manager::pid_capacity(),
        &cfg.node.reserved,
        cfg.cgroups.enforces_pods(),
    )
}

/// The node's allocatable as its status reports it, in thousandths by resource.
fn node_allocatable(
    cfg: &Config,
    machine: &MachineInfo,
) -> std::collections::BTreeMap<String, i128> {
    use crate::node::allocatable;
    use crate::node::machine::fs_capacity;
    let cap = allocatable::capacity(
        machine,
        fs_capacity(&cfg.paths.root_dir).ok(),
        cfg.node.max_pods,
    );
    allocatable::node_allocatable(&cap, &cfg.node.reserved)
        .into_iter()
        .map(|(k, v)| (k, v.milli))
        .collect()
}

/// What admission checks pods against: allocatable as the node reports it (computed once, in
/// the node context), the node's labels as `node_labels` has them, the eviction manager's
/// pressure conditions and whether the node is shutting down.
fn admission(
    pods: &PodsConfig,
    ctx: &NodeContext,
    node_labels: tokio::sync::watch::Receiver<crate::node::NodeView>,
    (pressure, shutting_down): (
        crate::eviction::ConditionsRx,
        crate::nodeshutdown::ShuttingDown,
    ),
) -> crate::pod::admission::Admission {
    crate::pod::admission::Admission {
        allocatable: ctx.allocatable.clone(),
        node_labels,
        sysctls: pods.sysctls.clone(),
        apparmor_enabled: crate::pod::admission::host_apparmor_enabled(),
        pressure,
        shutting_down: Some(shutting_down),
        devices: Some(ctx.devices.clone()),
    }
}

/// The TLS configuration of the kubelet port: with serverTLSBootstrap the certificate `serving`
/// holds, else the configured or self-signed serving certificate.
fn server_tls(
    cfg: &Config,
    serving: Option<Arc<crate::client::serving::ServingResolver>>,
) -> anyhow::Result<crate::server::tls::TlsSource> {
    use crate::server::tls;
    let client_ca = cfg.server.authentication.client_ca_file.clone();
    if let Some(resolver) = serving {
        return Ok(tls::TlsSource {
            serving: tls::ServingSource::Resolver(resolver),
            client_ca,
        });
    }
    let ips = crate::node::node_ips(&cfg.node);
    let files = tls::ServingCert::resolve(
        cfg.server.tls_cert_file.as_deref(),
        cfg.server.tls_private_key_file.as_deref(),
        &cfg.paths.cert_dir,
        &cfg.node.name,
        &ips,
    )?;
    Ok(tls::TlsSource {
        serving: tls::ServingSource::Files(files),
        client_ca,
    })
}

/// The effective configuration `/configz` serves: with no serving certificate configured, the
/// self-signed one's paths, as the kubelet fills them in.
fn configz(cfg: &Config) -> serde_json::Value {
    let mut k = cfg.effective.clone();
    if k.tls_cert_file.is_empty() && k.tls_private_key_file.is_empty() {
        k.tls_cert_file = cfg.paths.cert_dir.join("kubelet.crt").display().to_string();
        k.tls_private_key_file = cfg.paths.cert_dir.join("kubelet.key").display().to_string();
    }
    crate::config::file::effective(&k)
}

/// What the server's handlers and auth filter need.
fn server_state(
    cfg: &Config,
    ctx: &NodeContext,
    client: Option<kube::Client>,
    stats: crate::stats::StatsProvider,
    health: crate::healthz::Health,
) -> crate::server::Server {
    use crate::server::auth::{Authenticator, TokenReviewer};
    use crate::server::authz::{AccessReviewer, Authorizer};
    let server = &cfg.server;
    let (authn, authz) = (&server.authentication, &server.authorization);
    if client.is_none() && authn.webhook_enabled {
        warn!("no API client: bearer tokens cannot be reviewed and are refused");
    }
    if client.is_none() && authz.mode == crate::config::AuthorizationMode::Webhook {
        warn!("no API client: webhook authorization denies every request to the kubelet port");
    }
    let tokens = client
        .clone()
        .filter(|_| authn.webhook_enabled)
        .map(|c| Arc::new(c) as Arc<dyn TokenReviewer>);
    let reviews = client.map(|c| Arc::new(c) as Arc<dyn AccessReviewer>);
    crate::server::Server {
        node_name: ctx.node_name.clone(),
        statuses: ctx.statuses.clone(),
        stats,
        health,
        authn: Authenticator::new(tokens, authn.webhook_cache_ttl, authn.anonymous_enabled),
        authz: Authorizer::new(
            authz.mode,
            reviews,
            authz.cache_authorized_ttl,
            authz.cache_unauthorized_ttl,
        ),
        streaming_runtime: Some(ctx.cri.clone()),
        stream_idle_timeout: server.streaming_connection_idle_timeout,
        runtime: Arc::new(ctx.cri.clone()),
        pod_logs_dir: ctx.dirs.pod_logs_dir.clone(),
        node_log_dir: "/var/log".into(),
        endpoints: crate::server::Endpoints {
            debugging_handlers: server.enable_debugging_handlers,
            system_log_handler: server.enable_system_log_handler,
        },
        configz: configz(cfg),
    }
}
