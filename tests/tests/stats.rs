//! The stats provider and the pod-resources API against a real containerd: the Summary a bosun
//! node samples agrees with the cgroup files of its pods' containers and with procfs, and the
//! pod-resources socket lists the pods bosun runs.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use bosun::runtime::PodDirs;
use bosun::stats::summary::{PodStats, Summary};
use bosun::stats::{NodeFacts, SamplerConfig, StatsProvider};
use bosun_cri::CriClient;
use bosun_cri::types::{ContainerFilter, ContainerState};
use bosun_proto::podresources_v1 as pr;
use bosun_tests::metrics_server::MetricsServer;
use bosun_tests::{Container, Env, PodBuilder, StandaloneNode, wait_until, wait_until_async};
use tokio_util::sync::CancellationToken;

/// The node's stats provider, run in this test process against the node's containerd,
/// directories and cgroupRoot, sampling every second.
async fn sampler(node: &StandaloneNode, cancel: &CancellationToken) -> StatsProvider {
    let d = node.path();
    bosun::stats::spawn(
        node.cri().await,
        NodeFacts {
            node_name: node.name.clone(),
            csi: Default::default(),
            dirs: PodDirs {
                root_dir: node.root(),
                pod_logs_dir: d.join("pods"),
                container_logs_link_dir: d.join("containers"),
                cluster_dns: vec![],
                cluster_domain: String::new(),
                resolv_conf: d.join("resolv.conf"),
                cgroups: bosun::cgroup::Hierarchy::new(
                    bosun::config::CgroupDriver::Cgroupfs,
                    &node.ctd.cgroup_root(),
                    true,
                ),
            },
        },
        SamplerConfig {
            interval: Duration::from_secs(1),
            first_interval: Duration::from_secs(1),
            volume_interval: Duration::from_secs(1),
        },
        cancel.child_token(),
    )
}

/// A static pod: `mem` holds ~24 MiB of anonymous memory and logs a line, `spin` burns CPU
/// under a 100m limit, an emptyDir gets a 1 MiB file.
fn stats_pod(name: &str) -> String {
    PodBuilder::new(name)
        .empty_dir("scratch")
        .container(
            Container::sh(
                "mem",
                r#"echo started; dd if=/dev/zero of=/scratch/f bs=1024 count=1024 2>/dev/null; x=$(head -c 25165824 /dev/zero | tr "\000" a); echo held; while :; do sleep 3600; done"#,
            )
            .mount("scratch", "/scratch")
            .memory_limit("128Mi"),
        )
        .container(Container::sh("spin", "while :; do :; done").limits("100m", "16Mi"))
        .manifest()
}

/// The pod of the Summary named `name`.
fn pod<'a>(s: &'a Summary, name: &str) -> Option<&'a PodStats> {
    s.pods.iter().find(|p| p.pod_ref.name == name)
}

/// The container's memory cgroup directory, from its process's /proc/<pid>/cgroup (found through
/// CRI, independently of bosun's cgroup naming).
async fn memory_cgroup(cri: &CriClient, pod: &str, container: &str) -> PathBuf {
    let sel = HashMap::from([
        ("io.kubernetes.pod.name".to_string(), pod.to_string()),
        (
            "io.kubernetes.container.name".to_string(),
            container.to_string(),
        ),
    ]);
    let cs = cri
        .list_containers(Some(ContainerFilter {
            label_selector: sel,
            ..Default::default()
        }))
        .await
        .expect("list containers");
    let c = cs
        .iter()
        .find(|c| c.state == ContainerState::ContainerRunning as i32)
        .expect("running container");
    let st = cri.container_status(&c.id, true).await.expect("status");
    let info: serde_json::Value =
        serde_json::from_str(st.info.get("info").expect("verbose info")).expect("info json");
    let pid = info["pid"].as_u64().expect("pid");
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).expect("proc cgroup");
    let rel = cg
        .lines()
        .find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, ctrl, path) = (f.next()?, f.next()?, f.next()?);
            ctrl.split(',')
                .any(|c| c == "memory")
                .then(|| path.to_string())
        })
        .expect("memory cgroup of the container");
    PathBuf::from("/sys/fs/cgroup/memory").join(rel.trim_start_matches('/'))
}

fn read_u64(p: &Path) -> u64 {
    std::fs::read_to_string(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .parse()
        .unwrap()
}

fn meminfo(key: &str) -> u64 {
    let t = std::fs::read_to_string("/proc/meminfo").unwrap();
    t.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .expect("meminfo field")
        * 1024
}

#[tokio::test]
async fn summary_agrees_with_the_cgroups_and_procfs() {
    let node = StandaloneNode::new(&format!("stats-sum-{}", std::process::id()));
    let _bosun = node.start();
    let pod_name = format!("sum-{}", node.name);
    node.manifest("sum.yaml", &stats_pod("sum"));
    let cri = node.cri().await;
    let cancel = CancellationToken::new();
    let stats = sampler(&node, &cancel).await;

    // Both containers running, `mem` holding its memory, nanocores from two samples everywhere.
    let s: Arc<Summary> = wait_until_async(
        "a Summary with the pod, its containers and their rates",
        Duration::from_secs(180),
        || async {
            let s = stats.latest()?;
            let p = pod(&s, &pod_name)?;
            let ok = p.containers.len() == 2
                && p.containers
                    .iter()
                    .all(|c| c.cpu.as_ref().is_some_and(|c| c.usage_nano_cores.is_some()))
                && p.cpu.as_ref()?.usage_nano_cores.is_some()
                && p.volume_stats
                    .iter()
                    .any(|v| v.name == "scratch" && v.fs.used_bytes >= Some(1 << 20))
                && std::fs::read_to_string(
                    node.path()
                        .join("pods")
                        .join(format!("default_{pod_name}_{}", p.pod_ref.uid))
                        .join("mem/0.log"),
                )
                .is_ok_and(|l| l.contains("held"));
            ok.then_some(s)
        },
    )
    .await;
    let p = pod(&s, &pod_name).unwrap();
    assert_eq!(p.pod_ref.namespace, "default");
    assert!(!p.pod_ref.uid.is_empty());

    // Container memory vs its memory cgroup (the shell is idle in `sleep`: values are stable),
    // from a sample taken after the memory was held.
    let mem_cg = memory_cgroup(&cri, &pod_name, "mem").await;
    let held = k8s_openapi::jiff::Timestamp::now();
    let s = wait_until_async(
        "a sample after the log said held",
        Duration::from_secs(30),
        || async {
            let s = stats.latest()?;
            (s.node.cpu.as_ref()?.time.0 > held).then_some(s)
        },
    )
    .await;
    let p = pod(&s, &pod_name).unwrap();
    let mem = p.containers.iter().find(|c| c.name == "mem").unwrap();
    let m = mem.memory.as_ref().expect("container memory");
    let cg_usage = read_u64(&mem_cg.join("memory.usage_in_bytes"));
    let usage = m.usage_bytes.expect("usageBytes");
    let ws = m.working_set_bytes.expect("workingSetBytes");
    assert!(
        usage.abs_diff(cg_usage) <= cg_usage / 10 + (1 << 20),
        "usageBytes {usage} vs memory.usage_in_bytes {cg_usage}"
    );
    assert!(usage >= 24 << 20, "mem holds 24 MiB: usageBytes {usage}");
    assert!(
        ws <= usage && ws >= 20 << 20,
        "workingSet {ws} usage {usage}"
    );
    assert_eq!(
        m.available_bytes,
        Some((128u64 << 20) - ws),
        "availableBytes = limit - workingSet"
    );
    assert!(m.rss_bytes.is_some_and(|r| r >= 20 << 20), "{m:?}");
    // The pod's memory includes its containers'.
    let pm = p.memory.as_ref().expect("pod memory");
    assert!(pm.usage_bytes.unwrap() >= usage, "{pm:?} vs {m:?}");

    // CPU: the spinner uses about its 100m limit; cumulative values only grow.
    let spin = p.containers.iter().find(|c| c.name == "spin").unwrap();
    let c1 = spin.cpu.clone().unwrap();
    assert!(
        c1.usage_nano_cores.unwrap() <= 300_000_000,
        "spin is throttled to 100m: {c1:?}"
    );
    let node_cpu1 = s.node.cpu.clone().expect("node cpu");
    let pod_cpu1 = p.cpu.clone().unwrap();
    let s2 = wait_until_async("a later sample", Duration::from_secs(30), || async {
        let s2 = stats.latest()?;
        (s2.node.cpu.as_ref()?.time.0 > node_cpu1.time.0).then_some(s2)
    })
    .await;
    let p2 = pod(&s2, &pod_name).unwrap();
    let spin2 = p2.containers.iter().find(|c| c.name == "spin").unwrap();
    let c2 = spin2.cpu.clone().unwrap();
    assert!(c2.usage_core_nano_seconds > c1.usage_core_nano_seconds);
    assert!(p2.cpu.as_ref().unwrap().usage_core_nano_seconds >= pod_cpu1.usage_core_nano_seconds);
    assert!(
        s2.node.cpu.as_ref().unwrap().usage_core_nano_seconds > node_cpu1.usage_core_nano_seconds
    );
    assert!(s2.node.cpu.as_ref().unwrap().usage_nano_cores.is_some());

    // Logs, rootfs, network, ephemeral storage.
    assert!(mem.logs.as_ref().and_then(|l| l.used_bytes).unwrap_or(0) > 0);
    assert!(mem.rootfs.is_some(), "writable layer from CRI");
    let net = p.network.as_ref().expect("pod network");
    assert_eq!(net.default.name, "eth0");
    assert!(net.default.rx_bytes.is_some());
    let eph = p.ephemeral_storage.as_ref().unwrap().used_bytes.unwrap();
    assert!(
        eph >= 1 << 20,
        "ephemeral storage counts the emptyDir: {eph}"
    );

    // Node against procfs and the root cgroup.
    let total = meminfo("MemTotal");
    let nm = s2.node.memory.as_ref().expect("node memory");
    let nws = nm.working_set_bytes.unwrap();
    assert!(nws <= nm.usage_bytes.unwrap() && nws <= total);
    assert_eq!(nm.available_bytes.unwrap() + nws, total);
    let root_usage = read_u64(Path::new("/sys/fs/cgroup/memory/memory.usage_in_bytes"));
    assert!(
        nm.usage_bytes.unwrap().abs_diff(root_usage) <= root_usage / 5,
        "node usage {:?} vs root cgroup {root_usage}",
        nm.usage_bytes
    );
    let fs = s2.node.fs.as_ref().expect("nodefs");
    assert!(fs.capacity_bytes.unwrap() > 0 && fs.available_bytes <= fs.capacity_bytes);
    let imagefs = s2
        .node
        .runtime
        .as_ref()
        .and_then(|r| r.image_fs.as_ref())
        .expect("imageFs");
    // containerd refreshes its snapshot usage every 10 s: a fresh one may still say 0 bytes.
    assert!(imagefs.used_bytes.is_some() && imagefs.capacity_bytes.unwrap() > 0);
    assert!(imagefs.available_bytes <= imagefs.capacity_bytes);
    let rl = s2.node.rlimit.as_ref().unwrap();
    assert!(rl.max_pid.unwrap() > rl.num_of_running_processes.unwrap());
    assert!(rl.num_of_running_processes.unwrap() > 0);
    assert_eq!(s2.node.node_name, node.name);

    // The wire form reads back the same.
    let json = serde_json::to_string(&*s2).unwrap();
    let back: Summary = serde_json::from_str(&json).unwrap();
    assert_eq!(back.pods.len(), s2.pods.len());
    cancel.cancel();
}

/// A pod-resources client on the node's socket.
async fn pod_resources(
    root: &Path,
) -> pr::pod_resources_lister_client::PodResourcesListerClient<tonic::transport::Channel> {
    let path = root.join("pod-resources/kubelet.sock");
    wait_until("the pod-resources socket", Duration::from_secs(30), || {
        path.exists().then_some(())
    });
    let channel = tonic::transport::Endpoint::from_static("http://pod-resources.invalid")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .expect("connect pod-resources socket");
    pr::pod_resources_lister_client::PodResourcesListerClient::new(channel)
}

#[tokio::test]
async fn pod_resources_socket_lists_the_running_pods() {
    let node = StandaloneNode::new(&format!("stats-podres-{}", std::process::id()));
    let _bosun = node.start();
    let sleeper = |name| Container::exec(name, &["sleep", "3600"]);
    node.manifest(
        "pr.yaml",
        &PodBuilder::new("pr")
            .init_container(Container::exec("setup", &["true"]))
            .container(sleeper("a"))
            .container(sleeper("b"))
            .manifest(),
    );
    let pod_name = format!("pr-{}", node.name);
    let mut client = pod_resources(&node.root()).await;
    let listed = wait_until_async("the pod in List", Duration::from_secs(60), || {
        let mut client = client.clone();
        let pod_name = pod_name.clone();
        async move {
            let r = client
                .list(pr::ListPodResourcesRequest {})
                .await
                .ok()?
                .into_inner();
            r.pod_resources.into_iter().find(|p| p.name == pod_name)
        }
    })
    .await;
    assert_eq!(listed.namespace, "default");
    let names: Vec<&str> = listed.containers.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["a", "b"], "app containers, not the plain init one");
    assert!(
        listed
            .containers
            .iter()
            .all(|c| c.devices.is_empty() && c.cpu_ids.is_empty() && c.memory.is_empty())
    );

    let got = client
        .get(pr::GetPodResourcesRequest {
            pod_name: pod_name.clone(),
            pod_namespace: "default".into(),
        })
        .await
        .expect("Get")
        .into_inner();
    assert_eq!(got.pod_resources, Some(listed));
    let missing = client
        .get(pr::GetPodResourcesRequest {
            pod_name: "nope".into(),
            pod_namespace: "default".into(),
        })
        .await
        .expect_err("Get of an unknown pod");
    assert_eq!(missing.code(), tonic::Code::NotFound);
    let alloc = client
        .get_allocatable_resources(pr::AllocatableResourcesRequest {})
        .await
        .expect("GetAllocatableResources")
        .into_inner();
    assert!(alloc.devices.is_empty() && alloc.cpu_ids.is_empty() && alloc.memory.is_empty());

    // The pod leaves the list when its manifest goes.
    std::fs::remove_file(node.path().join("manifests/pr.yaml")).unwrap();
    wait_until_async("the pod gone from List", Duration::from_secs(60), || {
        let mut client = client.clone();
        let pod_name = pod_name.clone();
        async move {
            let r = client
                .list(pr::ListPodResourcesRequest {})
                .await
                .ok()?
                .into_inner();
            (!r.pod_resources.iter().any(|p| p.name == pod_name)).then_some(())
        }
    })
    .await;
}

/// A resource quantity of metrics-server (`123456n`, `1234Ki`) as a number (nanocores, bytes).
fn quantity(q: &serde_json::Value) -> u64 {
    let s = q.as_str().expect("quantity string");
    let (num, mult): (&str, u64) = if let Some(n) = s.strip_suffix('n') {
        (n, 1)
    } else if let Some(n) = s.strip_suffix('u') {
        (n, 1_000)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 1_000_000)
    } else if let Some(n) = s.strip_suffix("Ki") {
        (n, 1 << 10)
    } else if let Some(n) = s.strip_suffix("Mi") {
        (n, 1 << 20)
    } else if let Some(n) = s.strip_suffix("Gi") {
        (n, 1 << 30)
    } else {
        (s, 1)
    };
    num.parse::<u64>()
        .unwrap_or_else(|_| panic!("quantity {s}"))
        * mult
}

#[tokio::test]
async fn metrics_server_scrapes_bosun_and_kubectl_top_works() {
    let node = bosun_tests::ClusterNode::new("stats-ms");
    let _bosun = node.start();
    let name = node.name.clone();
    wait_until("node registered", Duration::from_secs(60), || {
        std::process::Command::new(Env::cluster().var("KUBECTL"))
            .args(["get", "node", &name])
            .env("KUBECONFIG", Env::cluster().var("KUBECONFIG"))
            .output()
            .ok()?
            .status
            .success()
            .then_some(())
    });
    node.kubectl(&[
        "label",
        "node",
        &name,
        &format!("bosun.test/metrics={name}"),
        "--overwrite",
    ]);
    let pod_name = format!("{name}-top");
    let pod = PodBuilder::new(&pod_name)
        .node(&name)
        .container(Container::sh(
            "main",
            r"x=$(head -c 8388608 /dev/zero | tr '\000' a); while :; do sleep 3600; done",
        ));
    let file = node.path().join("top-pod.json");
    std::fs::write(&file, pod.manifest()).unwrap();
    node.kubectl(&["apply", "-f", &file.display().to_string()]);

    let mut ms = MetricsServer::start(&name, node.path(), &[]);
    let node_metrics = wait_until(
        "metrics-server serving the node's metrics",
        Duration::from_secs(120),
        || {
            let v = ms.get(&format!("/apis/metrics.k8s.io/v1beta1/nodes/{name}"))?;
            (v["usage"]["cpu"].is_string() && v["usage"]["memory"].is_string()).then_some(v)
        },
    );
    let mem = quantity(&node_metrics["usage"]["memory"]);
    assert!(
        mem > 0 && mem <= meminfo("MemTotal"),
        "node memory {node_metrics}"
    );
    let pod_metrics = wait_until(
        "metrics-server serving the pod's metrics",
        Duration::from_secs(120),
        || {
            let v = ms.get(&format!(
                "/apis/metrics.k8s.io/v1beta1/namespaces/default/pods/{pod_name}"
            ))?;
            let c = v["containers"].as_array()?.first()?.clone();
            (c["name"] == "main" && c["usage"]["memory"].is_string()).then_some(c)
        },
    );
    assert!(
        quantity(&pod_metrics["usage"]["memory"]) >= 8 << 20,
        "the container holds 8 MiB: {pod_metrics}"
    );
    let log = ms.log_text();
    assert!(
        !log.lines()
            .any(|l| l.contains("Failed to scrape") && l.contains(&name)),
        "metrics-server failed scraping {name}:\n{log}"
    );

    // Through the aggregation layer: kubectl top.
    ms.register(node.path());
    let top_node = wait_until("kubectl top node", Duration::from_secs(60), || {
        let out = std::process::Command::new(Env::cluster().var("KUBECTL"))
            .args(["top", "node", &name, "--no-headers"])
            .env("KUBECONFIG", Env::cluster().var("KUBECONFIG"))
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    });
    assert!(top_node.starts_with(&name), "{top_node}");
    let top_pod = node.kubectl(&["top", "pod", &pod_name, "-n", "default", "--no-headers"]);
    assert!(top_pod.starts_with(&pod_name), "{top_pod}");
    node.kubectl(&["delete", "pod", &pod_name, "--wait=false"]);
}
