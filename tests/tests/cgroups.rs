//! The container manager on a real node: every pod lands in the cgroup the kubelet would give it
//! (`<cgroupRoot>/kubepods[/burstable|/besteffort]/pod<uid>`) with the limits of its containers'
//! sum, the QoS tiers and kubepods carry the kubelet's values, pod cgroups go with their pods,
//! and a container past its memory limit is OOM-killed (read from the cgroup files on this
//! machine's cgroup v1 hierarchies).

use std::path::PathBuf;
use std::time::Duration;

use bosun_tests::BosunNode;
use bosun_tests::pod::{Container, PodBuilder, create, phase, running_uid, wait_pod};
use bosun_tests::{ClusterNode, admin_client, wait_until, wait_until_async};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::DeleteParams;

/// `/sys/fs/cgroup/<controller>/<node's cgroupRoot>/kubepods/<rel>/<file>`.
fn knob(node: &ClusterNode, controller: &str, rel: &str, file: &str) -> PathBuf {
    let root = node.ctd.cgroup_root();
    PathBuf::from(format!("/sys/fs/cgroup/{controller}{root}/kubepods/{rel}")).join(file)
}

fn read(node: &ClusterNode, controller: &str, rel: &str, file: &str) -> String {
    let p = knob(node, controller, rel, file);
    std::fs::read_to_string(&p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .trim()
        .to_string()
}

fn pod(node: &ClusterNode, name: &str, policy: &str, main: Container) -> Pod {
    PodBuilder::new(name)
        .node(&node.name)
        .restart_policy(policy)
        .container(main)
        .build()
}

fn sleeper() -> Container {
    Container::exec("main", &["sleep", "3600"])
}

fn mem_total() -> i64 {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kb: i64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

fn pid_capacity() -> i64 {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .unwrap()
            .trim()
            .parse::<i64>()
            .unwrap()
    };
    read("/proc/sys/kernel/pid_max").min(read("/proc/sys/kernel/threads-max"))
}

#[tokio::test]
async fn qos_classes_land_in_their_cgroups_with_their_limits() {
    let node = ClusterNode::new("cg-qos");
    // Reservations enforced on kubepods (enforceNodeAllocatable defaults to [pods]) and a pod
    // pids limit.
    let cfg = node.path().join("config.yaml");
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str(
        "podPidsLimit: 1024\nsystemReserved:\n  cpu: 500m\n  memory: 256Mi\nkubeReserved:\n  memory: 128Mi\n  pid: \"1000\"\n",
    );
    std::fs::write(&cfg, text).unwrap();
    // A pod cgroup of a pod nobody knows, as a crashed agent would leave it.
    let orphan = "pod00000000-0000-0000-0000-00000000dead";
    for c in ["cpu", "memory", "pids"] {
        std::fs::create_dir_all(knob(&node, c, &format!("besteffort/{orphan}"), "")).unwrap();
    }
    let mut bosun = node.start();

    // kubepods: capacity less the reservations (cpu: 2 cores - 500m).
    wait_until("QoS hierarchy made", Duration::from_secs(60), || {
        bosun
            .log_text()
            .contains("QoS cgroup hierarchy ready")
            .then_some(())
    });
    let cores = std::thread::available_parallelism().unwrap().get() as i64;
    assert_eq!(
        read(&node, "cpu", "", "cpu.shares"),
        ((cores * 1000 - 500) * 1024 / 1000).to_string()
    );
    let page = 4096;
    let want_mem = (mem_total() - (384 << 20)) / page * page;
    assert_eq!(
        read(&node, "memory", "", "memory.limit_in_bytes"),
        want_mem.to_string()
    );
    assert_eq!(
        read(&node, "pids", "", "pids.max"),
        (pid_capacity() - 1000).to_string()
    );
    assert_eq!(read(&node, "cpu", "besteffort", "cpu.shares"), "2");
    // The orphaned cgroup goes once the sources have been seen.
    wait_until(
        "orphaned pod cgroup removed",
        Duration::from_secs(30),
        || {
            (!knob(&node, "cpu", &format!("besteffort/{orphan}"), "").exists()
                && !knob(&node, "memory", &format!("besteffort/{orphan}"), "").exists())
            .then_some(())
        },
    );

    let api: Api<Pod> = Api::namespaced(admin_client().await, "default");
    let names = [
        format!("{}-g", node.name),
        format!("{}-b", node.name),
        format!("{}-e", node.name),
    ];
    let specs = [
        sleeper().limits("250m", "64Mi"),
        sleeper().requests("100m", "16Mi").limits("200m", "32Mi"),
        sleeper(),
    ];
    for (name, main) in names.iter().zip(specs) {
        create(&api, &pod(&node, name, "Always", main)).await;
    }
    let mut uids = Vec::new();
    for name in &names {
        uids.push(running_uid(&api, name, 90).await);
    }
    let g = format!("pod{}", uids[0]);
    let b = format!("burstable/pod{}", uids[1]);
    let e = format!("besteffort/pod{}", uids[2]);

    // Guaranteed: directly under kubepods, shares, quota and memory from the limits.
    assert_eq!(read(&node, "cpu", &g, "cpu.shares"), "256");
    assert_eq!(read(&node, "cpu", &g, "cpu.cfs_quota_us"), "25000");
    assert_eq!(read(&node, "cpu", &g, "cpu.cfs_period_us"), "100000");
    assert_eq!(
        read(&node, "memory", &g, "memory.limit_in_bytes"),
        (64 << 20).to_string()
    );
    assert_eq!(read(&node, "pids", &g, "pids.max"), "1024");
    // Burstable: shares from the request, quota and memory from the (declared) limits.
    assert_eq!(read(&node, "cpu", &b, "cpu.shares"), "102");
    assert_eq!(read(&node, "cpu", &b, "cpu.cfs_quota_us"), "20000");
    assert_eq!(
        read(&node, "memory", &b, "memory.limit_in_bytes"),
        (32 << 20).to_string()
    );
    assert_eq!(read(&node, "pids", &b, "pids.max"), "1024");
    // BestEffort: minimum shares, no quota, no memory limit.
    assert_eq!(read(&node, "cpu", &e, "cpu.shares"), "2");
    assert_eq!(read(&node, "cpu", &e, "cpu.cfs_quota_us"), "-1");
    let unlimited: i64 = read(&node, "memory", &e, "memory.limit_in_bytes")
        .parse()
        .unwrap();
    assert!(unlimited > mem_total(), "{unlimited}");
    // QoS tiers: burstable's shares are the sum of its pods' cpu requests (100m).
    assert_eq!(read(&node, "cpu", "burstable", "cpu.shares"), "102");
    assert_eq!(read(&node, "cpu", "besteffort", "cpu.shares"), "2");
    // The containers (and the pause container) run inside the pod cgroups.
    for rel in [&g, &b, &e] {
        let tasks = std::fs::read_dir(knob(&node, "memory", rel, ""))
            .unwrap()
            .flatten()
            .filter(|d| d.file_type().unwrap().is_dir())
            .count();
        assert!(tasks >= 2, "{rel}: {tasks} container cgroups");
    }

    for name in &names {
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    wait_until("pod cgroups removed", Duration::from_secs(60), || {
        [&g, &b, &e]
            .iter()
            .all(|rel| {
                ["cpu", "memory", "pids", "cpuset"]
                    .iter()
                    .all(|c| !knob(&node, c, rel, "").exists())
            })
            .then_some(())
    });
    assert_eq!(read(&node, "cpu", "burstable", "cpu.shares"), "2");
    assert!(
        bosun.try_exit().is_none(),
        "bosun exited:\n{}",
        bosun.log_text()
    );
}

#[tokio::test]
async fn a_container_past_its_memory_limit_is_oom_killed() {
    let bn = BosunNode::start("cg-oom").await;
    let (node, api) = (&bn.node, &bn.pods);
    let name = format!("{}-oom", node.name);
    let hog = Container::exec("hog", &["tail", "/dev/zero"]).memory_limit("32Mi");
    create(api, &pod(node, &name, "Never", hog)).await;
    let term = wait_until_async("container terminated", Duration::from_secs(90), || async {
        let p = api.get_opt(&name).await.ok()??;
        let cs = p.status?.container_statuses?.into_iter().next()?;
        cs.state?.terminated
    })
    .await;
    assert_eq!(term.reason.as_deref(), Some("OOMKilled"), "{term:?}");
    assert_eq!(term.exit_code, 137, "{term:?}");
    let p = wait_pod(api, &name, "pod Failed", 30, |p| {
        (phase(p) == "Failed").then(|| p.clone())
    })
    .await;
    let uid = p.metadata.uid.clone().unwrap();
    assert_eq!(
        read(
            node,
            "memory",
            &format!("burstable/pod{uid}"),
            "memory.limit_in_bytes"
        ),
        (32 << 20).to_string()
    );
    api.delete(&name, &DeleteParams::default())
        .await
        .expect("delete");
    bn.finish();
}
