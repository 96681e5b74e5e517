//! Faults injected for real (issue #19): the runtime killed with SIGKILL while pods churn, the API
//! server unreachable behind a proxy the test owns, full disks. Each asserts what an operator
//! would check afterwards: Bosun still running, the node's conditions, every pod converged with
//! no container restarted. Longer forms behind `BOSUN_OUTAGE_SECS`; figures in RELIABILITY.md.

use std::time::{Duration, Instant};

use bosun_tests::bench::procfs::rss_kib;
use bosun_tests::cluster::{audit_len, audit_requests};
use bosun_tests::pod::{Container, PodBuilder, container_status, create, phase, running_uid};
use bosun_tests::{
    Agent, AgentProcess, BosunNode, ClusterNode, cgroup_dirs_under, mounts_under, wait_until_async,
};
use k8s_openapi::api::core::v1::{Node, Pod};
use kube::Api;
use kube::api::DeleteParams;

/// A pod bound to `node` running busybox `sleep` (restartPolicy Always).
fn sleeper(node: &str, name: &str) -> Pod {
    PodBuilder::new(name)
        .node(node)
        .container(Container::exec("c", &["sleep", "3600"]))
        .build()
}

/// What an operator compares before and after a fault: the pod's UID, its container's ID,
/// restart count and start time.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Running {
    uid: String,
    container_id: String,
    restarts: i32,
    started_at: String,
}

async fn running(pods: &Api<Pod>, name: &str) -> Option<Running> {
    let p = pods.get_opt(name).await.ok()??;
    if phase(&p) != "Running" {
        return None;
    }
    let s = container_status(&p, "c")?;
    let started_at = s.state.as_ref()?.running.as_ref()?.started_at.as_ref()?;
    Some(Running {
        uid: p.metadata.uid.clone()?,
        container_id: s.container_id.clone()?,
        restarts: s.restart_count,
        started_at: format!("{:?}", started_at.0),
    })
}

/// The Node's Ready condition: (status, reason, message).
async fn ready(nodes: &Api<Node>, name: &str) -> Option<(String, String, String)> {
    let n = nodes.get_opt(name).await.ok()??;
    let c = n
        .status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "Ready")?;
    Some((
        c.status,
        c.reason.unwrap_or_default(),
        c.message.unwrap_or_default(),
    ))
}

/// The sandboxes of pod `uid` in the node's containerd: (id, ready).
async fn sandboxes_of(node: &ClusterNode, uid: &str) -> Vec<(String, bool)> {
    let cri = node.cri().await;
    let filter = bosun_cri::types::PodSandboxFilter {
        label_selector: [("io.kubernetes.pod.uid".to_string(), uid.to_string())].into(),
        ..Default::default()
    };
    cri.list_pod_sandbox(Some(filter))
        .await
        .expect("list sandboxes")
        .into_iter()
        .map(|s| (s.id, s.state == 0))
        .collect()
}

/// The highest CRI attempt number among the containers of pod `uid` (the restart count the
/// runtime holds: dead containers are garbage-collected, the attempt number stays).
async fn last_attempt(node: &ClusterNode, uid: &str) -> u32 {
    let cri = node.cri().await;
    let filter = bosun_cri::types::ContainerFilter {
        label_selector: [("io.kubernetes.pod.uid".to_string(), uid.to_string())].into(),
        ..Default::default()
    };
    cri.list_containers(Some(filter))
        .await
        .expect("list containers")
        .into_iter()
        .filter_map(|c| c.metadata.map(|m| m.attempt))
        .max()
        .unwrap_or(0)
}

/// Bosun still running and never panicked.
fn assert_alive(b: &mut BosunNode, when: &str) {
    if let Some(status) = b.bosun.try_exit() {
        panic!("bosun exited {when} ({status}):\n{}", b.bosun.log_text());
    }
    let log = b.bosun.log_text();
    assert!(!log.contains("panicked"), "bosun panicked {when}:\n{log}");
}

/// containerd SIGKILLed while pods start and others are deleted, then started again: Bosun keeps
/// running, reports the node NotReady with the kubelet's "container runtime is down", and once
/// the runtime is back every pod converges: the running ones untouched (same container, no
/// restart), the ones caught starting run with one sandbox and one container each, the deleted
/// ones are gone with nothing left running, and pods created during the outage start.
#[tokio::test]
async fn containerd_killed_during_churn_then_every_pod_converges() {
    let mut b = BosunNode::start("flt-ctdkill").await;
    let nodes: Api<Node> = Api::all(b.client.clone());
    let name = b.node.name.clone();
    wait_until_async("node Ready", Duration::from_secs(60), || async {
        (ready(&nodes, &name).await?.0 == "True").then_some(())
    })
    .await;
    let pods = b.pods.clone();
    let stable: Vec<String> = (0..4).map(|i| format!("{name}-stable-{i}")).collect();
    let doomed: Vec<String> = (0..3).map(|i| format!("{name}-doomed-{i}")).collect();
    for p in stable.iter().chain(&doomed) {
        create(&pods, &sleeper(&name, p)).await;
    }
    let mut before = Vec::new();
    for p in stable.iter().chain(&doomed) {
        running_uid(&pods, p, 120).await;
    }
    for p in &stable {
        let r = wait_until_async("stable pod running", Duration::from_secs(30), || {
            running(&pods, p)
        })
        .await;
        before.push(r);
    }
    let doomed_uids: Vec<String> = {
        let mut v = Vec::new();
        for p in &doomed {
            v.push(running(&pods, p).await.expect("doomed running").uid);
        }
        v
    };

    // The churn: pods starting and pods being deleted when the runtime dies.
    let starting: Vec<String> = (0..6).map(|i| format!("{name}-starting-{i}")).collect();
    for p in &starting {
        create(&pods, &sleeper(&name, p)).await;
    }
    for p in &doomed {
        pods.delete(p, &DeleteParams::default())
            .await
            .expect("delete doomed pod");
    }
    // Kill once Bosun is in the middle of it: the first starting pod has a sandbox.
    let first_uid = wait_until_async("first starting pod's UID", Duration::from_secs(10), || {
        let pods = pods.clone();
        let p = starting[0].clone();
        async move { pods.get_opt(&p).await.ok()??.metadata.uid }
    })
    .await;
    wait_until_async(
        "a sandbox of a starting pod",
        Duration::from_secs(30),
        || {
            let node = &b.node;
            let uid = first_uid.clone();
            async move { (!sandboxes_of(node, &uid).await.is_empty()).then_some(()) }
        },
    )
    .await;
    let killed = Instant::now();
    b.node.ctd.kill_daemon();

    // Pods bound while the runtime is gone.
    let during: Vec<String> = (0..3).map(|i| format!("{name}-during-{i}")).collect();
    for p in &during {
        create(&pods, &sleeper(&name, p)).await;
    }
    let (_, reason, message) = wait_until_async(
        "Ready=False naming the runtime",
        Duration::from_secs(90),
        || async {
            let r = ready(&nodes, &name).await?;
            (r.0 == "False").then_some(r)
        },
    )
    .await;
    let not_ready_after = killed.elapsed();
    assert_eq!(reason, "KubeletNotReady");
    assert!(
        message.contains("container runtime is down"),
        "Ready=False without the kubelet's message: {message}"
    );
    assert_alive(&mut b, "while containerd was down");

    let restarted = Instant::now();
    b.node.ctd.start_daemon();
    wait_until_async("node Ready again", Duration::from_secs(60), || async {
        (ready(&nodes, &name).await?.0 == "True").then_some(())
    })
    .await;
    let ready_after = restarted.elapsed();
    for p in starting.iter().chain(&during) {
        running_uid(&pods, p, 120).await;
    }
    let converged_after = restarted.elapsed();
    for (p, was) in stable.iter().zip(&before) {
        let now = running(&pods, p).await.expect("stable pod running");
        assert_eq!(&now, was, "pod {p} was touched by the runtime's death");
    }
    // Pods caught starting: one ready sandbox, one running container, no duplicates.
    for p in &starting {
        let uid = running(&pods, p).await.expect("starting pod running").uid;
        let boxes = sandboxes_of(&b.node, &uid).await;
        let ready_boxes = boxes.iter().filter(|s| s.1).count();
        assert_eq!(ready_boxes, 1, "pod {p}: ready sandboxes {boxes:?}");
        let running_containers = b
            .node
            .containers_of(&uid)
            .await
            .into_iter()
            .filter(|c| c.1 == 1)
            .count();
        assert_eq!(running_containers, 1, "pod {p}: running containers");
    }
    // The deleted pods: gone from the API, nothing of theirs left running.
    bosun_tests::pod::wait_gone(
        &pods,
        &doomed.iter().map(String::as_str).collect::<Vec<_>>(),
        60,
    )
    .await;
    for uid in &doomed_uids {
        wait_until_async(
            "the deleted pod's sandbox stopped",
            Duration::from_secs(30),
            || async {
                let boxes = sandboxes_of(&b.node, uid).await;
                let live = b.node.containers_of(uid).await;
                (boxes.iter().all(|s| !s.1) && live.iter().all(|c| c.1 != 1)).then_some(())
            },
        )
        .await;
    }
    assert_alive(&mut b, "after containerd came back");
    eprintln!(
        "containerd killed: NotReady after {not_ready_after:?}; after the restart: Ready in \
         {ready_after:?}, all {} pods Running in {converged_after:?}",
        starting.len() + during.len()
    );
    for p in stable.iter().chain(&starting).chain(&during) {
        let _ = pods.delete(p, &DeleteParams::default()).await;
    }
    b.finish();
}

/// The outage's length: `BOSUN_OUTAGE_SECS` (300 for the issue's 5 minutes), 40 s by default.
fn outage_secs() -> u64 {
    std::env::var("BOSUN_OUTAGE_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
}

/// Running pods kept over the outage: `BOSUN_OUTAGE_PODS` (50 for the issue's figure), 5 by
/// default.
fn outage_pods() -> usize {
    std::env::var("BOSUN_OUTAGE_PODS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
}

/// A pod of `containers` bound to `node` that tolerates its node being unreachable or not
/// ready for ever, so the taint manager never evicts it during a long outage (what is judged is
/// the agent, not the controller's eviction policy).
fn tolerant(node: &str, name: &str, restart: &str, c: Container) -> Pod {
    PodBuilder::new(name)
        .node(node)
        .restart_policy(restart)
        .container(c)
        .spec(
            "tolerations",
            serde_json::json!([
                {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute"},
                {"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute"},
            ]),
        )
        .build()
}

/// Requests of the node in the first 30 s after the API server returns: the bound on the
/// reconnection burst (a relist of pods, the node status, the Lease, one status patch per
/// changed pod, events), stated in RELIABILITY.md.
const RECONNECT_BURST_MAX: usize = 60;
/// Growth of Bosun's RSS over the outage that is still "bounded" (KiB).
const OUTAGE_RSS_GROWTH_MAX_KIB: u64 = 16 * 1024;

/// The API server unreachable for `BOSUN_OUTAGE_SECS` behind a proxy the test owns (half of it
/// swallowing connections, half refusing them; the shared API server is never touched): Bosun
/// keeps its pods running and restarts them locally by their restartPolicy, its memory stays
/// bounded and its reconnection attempts backed off; once the server is reachable the node
/// status, Lease and pod statuses catch up within 10 s, showing what happened meanwhile (restarts,
/// a pod that completed, a pod deleted, a pod bound), with a bounded burst of requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_unreachable_then_status_lease_and_pods_catch_up() {
    let o = outage_on(Agent::Bosun).await;
    assert!(
        o.rss_max <= o.rss_before + OUTAGE_RSS_GROWTH_MAX_KIB,
        "RSS grew from {} KiB to {} KiB during the outage",
        o.rss_before,
        o.rss_max
    );
    assert!(
        o.status_after <= Duration::from_secs(10) && o.lease_after <= Duration::from_secs(10),
        "node status after {:?}, Lease after {:?}: not within 10 s",
        o.status_after,
        o.lease_after
    );
    // The pods too: the watches must not wait out the back-off built up while away.
    assert!(
        o.pods_after <= Duration::from_secs(10),
        "pods caught up {:?} after the return (bound meanwhile Running {:?})",
        o.pods_after,
        o.during_after
    );
    assert!(
        o.burst <= RECONNECT_BURST_MAX,
        "{} requests in the 30 s after the outage",
        o.burst
    );
}

/// The same outage on the upstream kubelet, for the comparison in RELIABILITY.md: what holds
/// for any agent (no exit, pods untouched, local restarts by restartPolicy, everything caught
/// up in the end) is checked; its timings are printed beside Bosun's, not judged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_unreachable_on_the_kubelet_for_comparison() {
    outage_on(Agent::Kubelet).await;
}

/// What an outage showed: memory, and how long each thing took after the return.
struct Outage {
    rss_before: u64,
    rss_max: u64,
    status_after: Duration,
    lease_after: Duration,
    during_after: Duration,
    pods_after: Duration,
    burst: usize,
}

/// Runs the outage on `agent`, checking what any agent must hold to.
async fn outage_on(agent: Agent) -> Outage {
    use bosun_tests::proxy::Mode;
    let outage = Duration::from_secs(outage_secs());
    let node = ClusterNode::new("flt-apiout");
    let upstream = bosun_tests::Env::cluster()
        .var("APISERVER")
        .trim_start_matches("https://")
        .parse()
        .expect("APISERVER is https://ip:port");
    let proxy = bosun_tests::FaultProxy::start(upstream).await;
    proxy.point_kubeconfig(&node.kubeconfig);
    let client = bosun_tests::admin_client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), "kube-node-lease");
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let mut proc = agent.start(&node);
    let who = agent.name();
    let name = node.name.clone();
    wait_until_async("node Ready", Duration::from_secs(60), || async {
        (ready(&nodes, &name).await?.0 == "True").then_some(())
    })
    .await;

    let sleep = || Container::exec("c", &["sleep", "3600"]);
    let steady: Vec<String> = (0..outage_pods())
        .map(|i| format!("{name}-steady-{i}"))
        .collect();
    let crasher = format!("{name}-crasher");
    let oneshot = format!("{name}-oneshot");
    let doomed = format!("{name}-doomed");
    for p in steady.iter().chain([&doomed]) {
        create(&pods, &tolerant(&name, p, "Always", sleep())).await;
    }
    create(
        &pods,
        &tolerant(
            &name,
            &crasher,
            "Always",
            Container::sh("c", "sleep 3; exit 1"),
        ),
    )
    .await;
    // Completes a little after the outage starts (the API must later say Succeeded).
    let oneshot_secs = 25;
    for p in steady.iter().chain([&doomed]) {
        running_uid(&pods, p, 120).await;
    }
    let crasher_uid = running_uid(&pods, &crasher, 120).await;
    let mut before = Vec::new();
    for p in &steady {
        before.push(running(&pods, p).await.expect("steady pod running"));
    }
    create(
        &pods,
        &tolerant(
            &name,
            &oneshot,
            "Never",
            Container::sh("c", &format!("sleep {oneshot_secs}; exit 0")),
        ),
    )
    .await;
    let oneshot_uid = running_uid(&pods, &oneshot, 60).await;
    let pid = proc.pid();
    let rss_before = rss_kib(pid);
    let crasher_restarts_before = last_attempt(&node, &crasher_uid).await;

    // The outage: swallowed connections, then refused ones.
    let cut = Instant::now();
    let cut_at = k8s_openapi::jiff::Timestamp::now();
    let accepted_before = proxy.accepted();
    proxy.set(Mode::Blackhole);
    let during = format!("{name}-during");
    create(&pods, &tolerant(&name, &during, "Always", sleep())).await;
    pods.delete(&doomed, &DeleteParams::default())
        .await
        .expect("delete the doomed pod");
    let mut rss_max = rss_before;
    let mut refused = false;
    while cut.elapsed() < outage {
        if !refused && cut.elapsed() >= outage / 2 {
            proxy.set(Mode::Refuse);
            refused = true;
        }
        if let Some(status) = proc.exited() {
            panic!(
                "{who} exited during the outage ({status}): {:?}",
                proc.log()
            );
        }
        rss_max = rss_max.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let attempts = proxy.accepted() - accepted_before;
    // Restarted locally, by the restartPolicy, without the API server.
    let crasher_restarts = last_attempt(&node, &crasher_uid).await;
    assert!(
        crasher_restarts > crasher_restarts_before,
        "the crashing container was not restarted during the outage (attempt \
         {crasher_restarts_before} before, {crasher_restarts} after)"
    );
    let oneshot_runs = node.containers_of(&oneshot_uid).await;
    assert_eq!(
        oneshot_runs.len(),
        1,
        "restartPolicy Never restarted: {oneshot_runs:?}"
    );

    // Back.
    let audit_from = audit_len();
    let back = Instant::now();
    let back_at = k8s_openapi::jiff::Timestamp::now();
    proxy.set(Mode::Forward);
    wait_until_async(
        "node status posted after the outage",
        Duration::from_secs(30),
        || async {
            let n = nodes.get_opt(&name).await.ok()??;
            let c = n
                .status?
                .conditions?
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            // The API keeps whole seconds: a heartbeat stamped in the second of the return counts.
            let back_second = back_at.as_second();
            (c.status == "True" && c.last_heartbeat_time?.0.as_second() >= back_second)
                .then_some(())
        },
    )
    .await;
    let status_after = back.elapsed();
    wait_until_async(
        "Lease renewed after the outage",
        Duration::from_secs(30),
        || async {
            let l = leases.get_opt(&name).await.ok()??;
            (l.spec?.renew_time?.0 > back_at).then_some(())
        },
    )
    .await;
    let lease_after = back.elapsed();
    running_uid(&pods, &during, 60).await;
    let during_after = back.elapsed();
    bosun_tests::pod::wait_gone(&pods, &[doomed.as_str()], 60).await;
    let doomed_after = back.elapsed();
    bosun_tests::pod::wait_pod(&pods, &oneshot, "one-shot pod Succeeded", 60, |p| {
        (phase(p) == "Succeeded").then_some(())
    })
    .await;
    let oneshot_after = back.elapsed();
    // The restart count the API shows is the runtime's, not the one from before the outage.
    wait_until_async(
        "crasher restarts caught up",
        Duration::from_secs(60),
        || async {
            let p = pods.get_opt(&crasher).await.ok()??;
            let restarts = container_status(&p, "c")?.restart_count;
            (i64::from(restarts) >= i64::from(crasher_restarts)).then_some(())
        },
    )
    .await;
    let pods_after = back.elapsed();
    for (p, was) in steady.iter().zip(&before) {
        let now = running(&pods, p).await.expect("steady pod running");
        assert_eq!(&now, was, "pod {p} changed over the outage");
    }
    // The burst: every request of the node in the 30 s after the return.
    let settle = Duration::from_secs(30).saturating_sub(back.elapsed());
    tokio::time::sleep(settle).await;
    let burst: Vec<String> = audit_requests(audit_from, &format!("system:node:{name}"))
        .into_iter()
        .map(|(verb, res)| format!("{verb} {res}"))
        .collect();
    let mut by_kind = std::collections::BTreeMap::<&str, usize>::new();
    for r in &burst {
        *by_kind.entry(r.as_str()).or_default() += 1;
    }
    if let Some(status) = proc.exited() {
        panic!("{who} exited after the outage ({status}): {:?}", proc.log());
    }
    let log = std::fs::read_to_string(proc.log()).unwrap_or_default();
    assert!(!log.contains("panicked"), "{who} panicked");
    eprintln!(
        "{who}: outage {outage:?} (since {cut_at}), {} running pods: RSS {rss_before} KiB before, \
         {rss_max} KiB max; {attempts} connection attempts; crasher restarted \
         {crasher_restarts_before} -> {crasher_restarts} times; after the return: node status \
         {status_after:?}, Lease {lease_after:?}, pod bound meanwhile Running {during_after:?}, \
         deleted pod gone {doomed_after:?}, one-shot Succeeded {oneshot_after:?}, restart count \
         {pods_after:?}; {} requests in 30 s: {by_kind:?}",
        steady.len(),
        burst.len()
    );
    for p in steady.iter().chain([&crasher, &oneshot, &during]) {
        let _ = pods.delete(p, &DeleteParams::default()).await;
    }
    if let AgentProcess::Bosun(b) = &mut proc {
        let (_, code) = b.terminate(Duration::from_secs(10));
        assert_eq!(code, Some(0), "bosun's exit code after SIGTERM");
    } else {
        proc.stop();
    }
    Outage {
        rss_before,
        rss_max,
        status_after,
        lease_after,
        during_after,
        pods_after,
        burst: burst.len(),
    }
}

/// Fills the filesystem of `file`'s directory: writes `file` until the disk refuses (ENOSPC).
fn fill(file: &std::path::Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(file).expect("create the filler");
    let chunk = vec![0x5a_u8; 64 << 10];
    loop {
        match f.write(&chunk) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(e) => panic!("filling {}: {e}", file.display()),
        }
    }
    // The last partial page too.
    while f.write(&[0x5a]).is_ok_and(|n| n == 1) {}
}

/// Kubelet events about pod `name` in `default`: (reason, message).
async fn pod_events(client: &kube::Client, name: &str) -> Vec<(String, String)> {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), "default");
    let lp = kube::api::ListParams::default().fields(&format!(
        "involvedObject.kind=Pod,involvedObject.name={name}"
    ));
    events
        .list(&lp)
        .await
        .map(|l| l.items)
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.reason.unwrap_or_default(), e.message.unwrap_or_default()))
        .collect()
}

/// The node's root dir (pod directories: /etc/hosts, termination logs, volumes) on a small
/// filesystem that fills up (disk-pressure eviction off, so the writes themselves are what is
/// judged): Bosun keeps running and the node Ready, a running pod is untouched, a pod bound
/// meanwhile does not start and says why in an event naming the full disk, and it starts once
/// space returns, without any restart of Bosun.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn root_dir_full_then_pods_wait_with_the_reason_and_start_when_space_returns() {
    let opts = bosun_tests::NodeOptions {
        root_dir_size: Some("16m".into()),
        eviction_hard: Some(vec![("memory.available".into(), "100Mi".into())]),
        ..Default::default()
    };
    let mut b = BosunNode::start_with("flt-rootfull", &opts).await;
    let nodes: Api<Node> = Api::all(b.client.clone());
    let name = b.node.name.clone();
    wait_until_async("node Ready", Duration::from_secs(60), || async {
        (ready(&nodes, &name).await?.0 == "True").then_some(())
    })
    .await;
    let pods = b.pods.clone();
    let steady = format!("{name}-steady");
    create(&pods, &sleeper(&name, &steady)).await;
    running_uid(&pods, &steady, 120).await;
    let before = running(&pods, &steady).await.expect("steady pod running");

    let filler = b.node.path().join("root/filler");
    fill(&filler);
    let during = format!("{name}-during");
    create(&pods, &sleeper(&name, &during)).await;
    let (reason, message) = wait_until_async(
        "an event naming the full disk",
        Duration::from_secs(60),
        || async {
            pod_events(&b.client, &during)
                .await
                .into_iter()
                .find(|(_, m)| m.to_lowercase().contains("no space left on device"))
        },
    )
    .await;
    let p = pods.get(&during).await.expect("pod");
    assert_ne!(phase(&p), "Running", "pod started on a full disk");
    assert_eq!(
        ready(&nodes, &name).await.map(|r| r.0).as_deref(),
        Some("True"),
        "node not Ready with a full root dir"
    );
    assert_alive(&mut b, "with the root dir full");
    let waiting = container_status(&p, "c")
        .and_then(|s| s.state.as_ref()?.waiting.as_ref()?.reason.clone())
        .unwrap_or_default();

    std::fs::remove_file(&filler).expect("remove the filler");
    let freed = Instant::now();
    running_uid(&pods, &during, 120).await;
    let started_after = freed.elapsed();
    assert_eq!(
        running(&pods, &steady).await.as_ref(),
        Some(&before),
        "the running pod was touched by the full disk"
    );
    assert_alive(&mut b, "after space returned");
    eprintln!(
        "root dir full: event {reason}: {message:?}; container waiting {waiting:?}; started \
         {started_after:?} after space returned"
    );
    for p in [&steady, &during] {
        let _ = pods.delete(p, &DeleteParams::default()).await;
    }
    b.finish();
}

/// The highest `line N` the logger container of pod `uid` has in its log files so far.
fn last_logged(logs: &std::path::Path, name: &str, uid: &str) -> u64 {
    bosun_tests::pod::container_output(logs, "default", name, uid, "c")
        .lines()
        .filter_map(|l| l.strip_prefix("line ")?.trim().parse().ok())
        .max()
        .unwrap_or(0)
}

/// The container log directory (`podLogsDir`) on a small filesystem that fills up while a pod
/// writes to its log: Bosun keeps running and the node Ready, the writing pod keeps running
/// without a restart, a pod bound meanwhile still starts (its log directory needs no space), and
/// once space returns the writer's new lines reach its log again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn container_log_dir_full_then_logging_resumes_when_space_returns() {
    let opts = bosun_tests::NodeOptions {
        pod_logs_dir_size: Some("8m".into()),
        ..Default::default()
    };
    let mut b = BosunNode::start_with("flt-logfull", &opts).await;
    let nodes: Api<Node> = Api::all(b.client.clone());
    let name = b.node.name.clone();
    wait_until_async("node Ready", Duration::from_secs(60), || async {
        (ready(&nodes, &name).await?.0 == "True").then_some(())
    })
    .await;
    let pods = b.pods.clone();
    let logger = format!("{name}-logger");
    let script = "i=0; while true; do i=$((i+1)); echo line $i; sleep 0.2; done";
    create(
        &pods,
        &PodBuilder::new(&logger)
            .node(&name)
            .container(Container::sh("c", script))
            .build(),
    )
    .await;
    let uid = running_uid(&pods, &logger, 120).await;
    let logs = b.node.path().join("pods");
    bosun_tests::wait_until("the logger's lines", Duration::from_secs(30), || {
        (last_logged(&logs, &logger, &uid) >= 5).then_some(())
    });
    let before = running(&pods, &logger).await.expect("logger running");

    let filler = logs.join("filler");
    fill(&filler);
    let during = format!("{name}-during");
    create(&pods, &sleeper(&name, &during)).await;
    running_uid(&pods, &during, 120).await;
    assert_eq!(
        running(&pods, &logger).await.as_ref(),
        Some(&before),
        "the logging pod was restarted by the full log disk"
    );
    assert_eq!(
        ready(&nodes, &name).await.map(|r| r.0).as_deref(),
        Some("True"),
        "node not Ready with a full log disk"
    );
    assert_alive(&mut b, "with the log disk full");
    let at_removal = last_logged(&logs, &logger, &uid);

    std::fs::remove_file(&filler).expect("remove the filler");
    let freed = Instant::now();
    bosun_tests::wait_until(
        "the logger's new lines after space returned",
        Duration::from_secs(60),
        || (last_logged(&logs, &logger, &uid) > at_removal + 5).then_some(()),
    );
    let resumed_after = freed.elapsed();
    assert_eq!(
        running(&pods, &logger).await.as_ref(),
        Some(&before),
        "the logging pod was restarted"
    );
    assert_alive(&mut b, "after space returned");
    eprintln!(
        "log dir full: last line {at_removal} when space returned, logging again after \
         {resumed_after:?}"
    );
    for p in [&logger, &during] {
        let _ = pods.delete(p, &DeleteParams::default()).await;
    }
    b.finish();
}

/// The seed of the kill points: `BOSUN_KILL_SEED` to replay a run, else the clock.
fn kill_seed() -> u64 {
    std::env::var("BOSUN_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
                | 1
        })
}

/// Bosun SIGKILLed at random points while pods are created (one a round pulling its image, one
/// with a token volume) and deleted, and started again each time (as systemd's Restart=always
/// would): afterwards every pod converges. The live ones run
/// with one ready sandbox and one running container each, a container seen running before a
/// kill kept; the deleted ones are gone from the API with nothing of theirs left running. Then
/// every pod is deleted and nothing of any is left: no sandbox, container, network namespace,
/// pod cgroup, volume mount, pod directory or log directory. `BOSUN_KILL_ROUNDS` sets the kill points
/// (6; 20 for the long form). The seed is printed; `BOSUN_KILL_SEED` replays it.
#[tokio::test]
async fn bosun_killed_at_random_points_then_every_pod_converges() {
    let left = killed_during_churn(Agent::Bosun).await;
    assert!(
        left.is_empty(),
        "90 s after deleting every pod, still on the node: {left:?}"
    );
}

/// The same kills on the upstream kubelet, for the comparison in RELIABILITY.md: the same
/// convergence is checked; what it leaves after the pods are deleted is printed, not judged
/// (it removes dead sandboxes and containers at its next garbage collection).
#[tokio::test]
async fn kubelet_killed_at_random_points_for_comparison() {
    let left = killed_during_churn(Agent::Kubelet).await;
    eprintln!("kubelet: 90 s after deleting every pod, still on the node: {left:?}");
}

/// Kills `agent` at random points during churn and checks convergence; returns what is still
/// on the node 90 s after every pod is deleted (at once when nothing is).
async fn killed_during_churn(agent: Agent) -> Vec<String> {
    let client = bosun_tests::admin_client().await;
    let (node, mut proc) = agent
        .on_new_node("flt-kill9", Default::default(), &client)
        .await;
    let who = agent.name();
    let name = node.name.clone();
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let seed = kill_seed();
    eprintln!("kill points from BOSUN_KILL_SEED={seed}");
    let mut rng = seed;
    let mut next = move || {
        // xorshift64: reproducible from the seed.
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let rounds = kill_rounds();
    let mut live: Vec<String> = Vec::new();
    let mut deleted: Vec<(String, String)> = Vec::new();
    let mut seen_running = std::collections::HashMap::new();
    for round in 0..rounds {
        for i in 0..3 {
            let p = format!("{name}-r{round}-{i}");
            // One pod a round pulls its image (Always) and one mounts a token volume, so that
            // kills land in pulls and volume set-up too.
            let pod = match i {
                0 => PodBuilder::new(&p)
                    .node(&name)
                    .container(
                        Container::exec("c", &["sleep", "3600"])
                            .with("imagePullPolicy", serde_json::json!("Always")),
                    )
                    .build(),
                1 => PodBuilder::new(&p)
                    .node(&name)
                    .service_account_token()
                    .container(Container::exec("c", &["sleep", "3600"]))
                    .build(),
                _ => sleeper(&name, &p),
            };
            create(&pods, &pod).await;
            live.push(p);
        }
        // Two pods of an earlier round deleted, so that some die while they start.
        for _ in 0..2.min(live.len().saturating_sub(3)) {
            let p = live.remove(next() as usize % (live.len() - 3));
            let uid = pods
                .get(&p)
                .await
                .expect("pod to delete")
                .metadata
                .uid
                .unwrap_or_default();
            pods.delete(&p, &DeleteParams::default())
                .await
                .expect("delete pod");
            deleted.push((p, uid));
        }
        let after = Duration::from_millis(next() % 1500);
        tokio::time::sleep(after).await;
        // What the API shows running just before the kill must be what runs after it.
        for p in &live {
            if let Some(r) = running(&pods, p).await {
                seen_running.insert(p.clone(), r);
            }
        }
        alive(&mut proc, who, &format!("before kill {round}"));
        proc.kill();
        eprintln!("round {round}: {who} SIGKILLed {after:?} into it");
        proc = agent.start(&node);
    }

    let t0 = Instant::now();
    for p in &live {
        running_uid(&pods, p, 180).await;
    }
    bosun_tests::pod::wait_gone(
        &pods,
        &deleted.iter().map(|(p, _)| p.as_str()).collect::<Vec<_>>(),
        120,
    )
    .await;
    eprintln!(
        "{} pods Running and {} deleted ones gone {:.1?} after the last restart",
        live.len(),
        deleted.len(),
        t0.elapsed()
    );
    for p in &live {
        let r = running(&pods, p).await.expect("live pod running");
        // A container seen running is adopted, never replaced. A pod caught between
        // CreateContainer and StartContainer gets a new container (the next attempt), as the
        // kubelet's ShouldContainerBeRestarted does for a Created one: at most one per kill.
        match seen_running.get(p) {
            Some(before) => assert_eq!(&r, before, "pod {p} was running before a kill"),
            None => {
                // Created in round `k` of the name `<node>-r<k>-<i>`: at most one new
                // container per kill since.
                let round: usize = p
                    .rsplit("-r")
                    .next()
                    .and_then(|s| s.split('-').next())
                    .and_then(|k| k.parse().ok())
                    .expect("round in the pod name");
                assert!(
                    r.restarts as usize <= rounds - round,
                    "pod {p} restarted {} times after {} kills: {:?}",
                    r.restarts,
                    rounds - round,
                    node.containers_of(&r.uid).await
                )
            }
        }
        let boxes = sandboxes_of(&node, &r.uid).await;
        assert_eq!(
            boxes.iter().filter(|s| s.1).count(),
            1,
            "pod {p}: sandboxes {boxes:?}"
        );
        let containers = node.containers_of(&r.uid).await;
        assert_eq!(
            containers.iter().filter(|c| c.1 == 1).count(),
            1,
            "pod {p}: containers {containers:?}"
        );
    }
    for (p, uid) in &deleted {
        wait_until_async(
            "a deleted pod's sandbox and containers stopped",
            Duration::from_secs(60),
            || async {
                let boxes = sandboxes_of(&node, uid).await;
                let live = node.containers_of(uid).await;
                (boxes.iter().all(|s| !s.1) && live.iter().all(|c| c.1 != 1)).then_some(())
            },
        )
        .await;
        eprintln!("deleted pod {p}: nothing left running");
    }
    alive(&mut proc, who, "after the kills");

    // Every pod deleted: nothing of any of them is left on the node.
    let cri = node.cri().await;
    let mut netns = Vec::new();
    for s in cri.list_pod_sandbox(None).await.expect("list sandboxes") {
        netns.extend(netns_of(&node, &s.id).await);
    }
    if netns.is_empty() {
        let first = cri.list_pod_sandbox(None).await.expect("list sandboxes");
        let info = match first.first() {
            Some(s) => format!(
                "{:?}",
                cri.pod_sandbox_status(&s.id, true).await.map(|r| r.info)
            ),
            None => "no sandbox".into(),
        };
        panic!("no network namespace found for the sandboxes: {info}");
    }
    for p in &live {
        pods.delete(p, &DeleteParams::default())
            .await
            .expect("delete pod");
    }
    let names: Vec<&str> = live.iter().map(String::as_str).collect();
    bosun_tests::pod::wait_gone(&pods, &names, 120).await;
    let root = node.path().join("root/pods");
    let logs = node.path().join("pods");
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut left = Vec::new();
        let sandboxes = cri.list_pod_sandbox(None).await.expect("list sandboxes");
        if !sandboxes.is_empty() {
            left.push(format!("{} sandboxes", sandboxes.len()));
        }
        let containers = cri.list_containers(None).await.expect("list containers");
        if !containers.is_empty() {
            left.push(format!("{} containers", containers.len()));
        }
        let cgroups = pod_cgroups(&node.ctd.cgroup_root());
        if !cgroups.is_empty() {
            left.push(format!("pod cgroups {cgroups:?}"));
        }
        let mounts = mounts_under(&root);
        if !mounts.is_empty() {
            left.push(format!("mounts {mounts:?}"));
        }
        for (what, dir) in [("pod dirs", &root), ("log dirs", &logs)] {
            let e = entries(dir);
            if !e.is_empty() {
                left.push(format!("{what} {e:?}"));
            }
        }
        let namespaces: Vec<&String> = netns
            .iter()
            .filter(|n| std::path::Path::new(n).exists())
            .collect();
        if !namespaces.is_empty() {
            left.push(format!("network namespaces {namespaces:?}"));
        }
        if left.is_empty() || Instant::now() >= deadline {
            alive(&mut proc, who, "after the pods were deleted");
            if let AgentProcess::Bosun(b) = &mut proc {
                let (_, code) = b.terminate(Duration::from_secs(10));
                assert_eq!(code, Some(0), "bosun's exit code after SIGTERM");
            } else {
                proc.stop();
            }
            if left.is_empty() {
                eprintln!(
                    "{who}: after deleting every pod, nothing left: {} network namespaces \
                     gone, no pod cgroup, volume mount, pod or log dir",
                    netns.len()
                );
            }
            return left;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Panics when `proc` has exited or logged a panic.
fn alive(proc: &mut AgentProcess, who: &str, when: &str) {
    if let Some(status) = proc.exited() {
        panic!("{who} exited {when} ({status}): {:?}", proc.log());
    }
    let log = std::fs::read_to_string(proc.log()).unwrap_or_default();
    assert!(
        !log.contains("panicked"),
        "{who} panicked {when}: {:?}",
        proc.log()
    );
}

/// Kill points per run: `BOSUN_KILL_ROUNDS` (20 for the issue's long form), 6 by default.
fn kill_rounds() -> usize {
    std::env::var("BOSUN_KILL_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(6)
}

/// The pod cgroups (`pod<uid>`) under the node's cgroup root.
fn pod_cgroups(root: &str) -> Vec<std::path::PathBuf> {
    cgroup_dirs_under(root)
        .into_iter()
        .filter(|d| {
            d.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("pod"))
        })
        .collect()
}

/// The entries of `dir` (none when it does not exist).
fn entries(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .collect()
}

/// The network namespace path containerd holds for sandbox `id` (its verbose status).
async fn netns_of(node: &ClusterNode, id: &str) -> Option<String> {
    let status = node.cri().await.pod_sandbox_status(id, true).await.ok()?;
    let info: serde_json::Value = serde_json::from_str(status.info.get("info")?).ok()?;
    // The sandbox's OCI spec names the network namespace it joined.
    info.pointer("/runtimeSpec/linux/namespaces")?
        .as_array()?
        .iter()
        .find(|n| n.get("type").and_then(|t| t.as_str()) == Some("network"))?
        .get("path")?
        .as_str()
        .filter(|p| !p.is_empty())
        .map(str::to_string)
}
