//! The runtime floor: the pod shape the agents run (pause sandbox on the pod network + one
//! busybox container, images present) started by direct CRI calls, with no agent and no API
//! server in between.

use std::collections::HashMap;
use std::time::Instant;

use anyhow::Context;
use bosun_cri::types::*;
use bosun_cri::{CriClient, Timeouts};

use crate::{Containerd, Env};

/// The busybox command every benchmark pod runs: waits, and exits at once on SIGTERM.
pub const COMMAND: &[&str] = &["sh", "-c", "trap 'exit 0' TERM; sleep 3600 & wait"];

/// Time of the three calls that start one pod, milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct FloorRun {
    /// RunPodSandbox (sandbox container, network namespace, CNI).
    pub sandbox_ms: f64,
    /// CreateContainer.
    pub create_ms: f64,
    /// StartContainer.
    pub start_ms: f64,
}

impl FloorRun {
    /// All three.
    pub fn total_ms(&self) -> f64 {
        self.sandbox_ms + self.create_ms + self.start_ms
    }
}

/// Connects to `ctd` and pulls the sandbox and busybox images, so nothing measured pulls.
pub async fn prepare(ctd: &Containerd) -> anyhow::Result<CriClient> {
    let env = Env::runtime();
    let cri = CriClient::connect(&ctd.endpoint(), Timeouts::default())
        .await
        .context("connect to containerd")?;
    for image in [env.pause_image(), env.busybox_image()] {
        cri.pull_image(image, None, None)
            .await
            .with_context(|| format!("pull {image}"))?;
    }
    Ok(cri)
}

/// Starts `runs` pods one after another on a fresh containerd, timing each; everything goes with
/// the containerd afterwards. Also returns the runtime's version (`containerd://1.6.20~ds1`).
pub async fn measure(runs: usize) -> anyhow::Result<(Vec<FloorRun>, String)> {
    let env = Env::runtime();
    let ctd = tokio::task::spawn_blocking(|| Containerd::start("bench-floor")).await?;
    let cri = prepare(&ctd).await?;
    let version = cri.runtime_version().node_info_string();
    let logs = tempfile::tempdir()?;
    let mut out = Vec::with_capacity(runs);
    for i in 0..runs {
        let name = format!("floor-{i}");
        let uid = format!("bench-floor-{}-{i}", std::process::id());
        let log_dir = logs.path().join(&uid);
        std::fs::create_dir_all(&log_dir)?;
        let sandbox = sandbox_config(&ctd, &name, &uid, &log_dir.display().to_string());
        let mounts = pod_files(&log_dir)?;
        let t0 = Instant::now();
        let id = cri.run_pod_sandbox(sandbox.clone(), "").await?;
        let t1 = Instant::now();
        let cid = cri
            .create_container(&id, container_config(env.busybox_image(), mounts), sandbox)
            .await?;
        let t2 = Instant::now();
        cri.start_container(&cid).await?;
        let t3 = Instant::now();
        out.push(FloorRun {
            sandbox_ms: ms(t1 - t0),
            create_ms: ms(t2 - t1),
            start_ms: ms(t3 - t2),
        });
    }
    drop(cri);
    tokio::task::spawn_blocking(move || drop(ctd)).await?;
    Ok((out, version))
}

fn ms(d: std::time::Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// A sandbox as an agent asks for a BestEffort pod on the pod network.
fn sandbox_config(ctd: &Containerd, name: &str, uid: &str, log_dir: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "bench-floor".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.into(),
        dns_config: Some(DnsConfig {
            servers: vec!["10.96.0.10".into()],
            searches: vec![
                "bench-floor.svc.cluster.local".into(),
                "svc.cluster.local".into(),
                "cluster.local".into(),
            ],
            options: vec!["ndots:5".into()],
        }),
        labels: labels(&[
            ("io.kubernetes.pod.name", name),
            ("io.kubernetes.pod.namespace", "bench-floor"),
            ("io.kubernetes.pod.uid", uid),
        ]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/besteffort/pod{uid}", ctd.cgroup_root()),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption::default()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The files an agent mounts into every container of the benchmark pods (the service-account
/// token directory, /etc/hosts, the termination log), made under `dir`: the floor's container
/// gets the same mounts as the agents' so that their CreateContainer/StartContainer compare.
fn pod_files(dir: &std::path::Path) -> anyhow::Result<Vec<Mount>> {
    let token = dir.join("token");
    std::fs::create_dir_all(&token)?;
    for f in ["token", "ca.crt", "namespace"] {
        std::fs::write(token.join(f), "x")?;
    }
    std::fs::write(dir.join("etc-hosts"), "127.0.0.1 localhost\n")?;
    std::fs::write(dir.join("termination-log"), "")?;
    let mount = |host: std::path::PathBuf, container: &str, readonly: bool| Mount {
        container_path: container.into(),
        host_path: host.display().to_string(),
        readonly,
        ..Default::default()
    };
    Ok(vec![
        mount(token, "/var/run/secrets/kubernetes.io/serviceaccount", true),
        mount(dir.join("etc-hosts"), "/etc/hosts", false),
        mount(dir.join("termination-log"), "/dev/termination-log", false),
    ])
}

/// The benchmark pods' container.
fn container_config(image: &str, mounts: Vec<Mount>) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: "main".into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: COMMAND.iter().map(|s| s.to_string()).collect(),
        mounts,
        log_path: "main/0.log".into(),
        labels: labels(&[("io.kubernetes.container.name", "main")]),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_shares: 2,
                oom_score_adj: 1000,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}
