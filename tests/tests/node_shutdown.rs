//! Graceful node shutdown, against a real dbus-daemon on a private bus with a logind stand-in
//! (tests/src/logind.rs) and Bosun on a real cluster node: with shutdownGracePeriod 8s and
//! shutdownGracePeriodCriticalPods 4s Bosun holds logind's delay inhibitor lock; on
//! PrepareForShutdown(true) the node turns NotReady ("node is shutting down"), a new pod is
//! rejected (NodeShutdown), the regular pod is stopped within its 4 s, then the critical one
//! (system-node-critical) within its 4 s, both Failed with reason Terminated, the kubelet's message
//! and the DisruptionTarget condition, and the lock is released only then. PrepareForShutdown(false)
//! takes the lock again and the node is Ready. Without the configuration no lock is taken.

use std::time::{Duration, Instant, SystemTime};

use bosun_tests::logind::{Logind, PrivateBus};
use bosun_tests::pod::{Container, PodBuilder, condition, create, phase, running_uid, wait_pod};
use bosun_tests::{ClusterNode, NodeOptions, admin_client, wait_until_async};
use k8s_openapi::api::core::v1::{Node, NodeCondition, Pod};
use kube::Api;

const MESSAGE: &str = "Pod was terminated in response to imminent node shutdown.";

/// The Node's Ready condition.
async fn ready(nodes: &Api<Node>, name: &str) -> Option<NodeCondition> {
    let n = nodes.get_opt(name).await.ok()??;
    n.status?
        .conditions?
        .into_iter()
        .find(|c| c.type_ == "Ready")
}

/// When the pod's container `main` finished, from its terminated state.
fn finished_at(p: &Pod) -> Option<SystemTime> {
    let s = bosun_tests::pod::container_status(p, "main")?;
    let t = s
        .state
        .as_ref()?
        .terminated
        .as_ref()?
        .finished_at
        .as_ref()?;
    Some(SystemTime::UNIX_EPOCH + Duration::from_secs(t.0.as_second().try_into().ok()?))
}

/// The closing: Bosun did not exit during the test and stops with 0 on SIGTERM.
fn finish(mut bosun: bosun_tests::Bosun) {
    if let Some(status) = bosun.try_exit() {
        panic!(
            "bosun exited during the test ({status}):\n{}",
            bosun.log_text()
        );
    }
    let (took, code) = bosun.terminate(Duration::from_secs(10));
    assert_eq!(
        code,
        Some(0),
        "bosun exited with {code:?} {took:?}:\n{}",
        bosun.log_text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_pods_by_priority_then_releases_the_lock() {
    let bus = PrivateBus::start();
    let logind = Logind::serve(&bus.address(), Duration::from_secs(30)).await;
    let opts = NodeOptions {
        extra_config: "shutdownGracePeriod: 8s\nshutdownGracePeriodCriticalPods: 4s\n".into(),
        ..Default::default()
    };
    let node = ClusterNode::with_options("shutdown", &opts);
    let bosun = node.start_with_env(&[("DBUS_SYSTEM_BUS_ADDRESS", &bus.address())]);
    let client = admin_client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client, "default");

    // The lock is taken at start, as the kubelet takes it.
    let first = wait_until_async(
        "Bosun takes the inhibitor lock",
        Duration::from_secs(60),
        || async { logind.inhibitors().first().cloned() },
    )
    .await;
    assert_eq!(
        first.args,
        (
            "shutdown".to_string(),
            "kubelet".to_string(),
            "Kubelet needs time to handle node shutdown".to_string(),
            "delay".to_string()
        )
    );
    assert!(first.released.is_none(), "the lock was released at once");

    // Both pods ignore SIGTERM (sleep as PID 1) and ask for 30 s: each group's grace period
    // (4 s) is what stops them.
    let regular = format!("{}-regular", node.name);
    let critical = format!("{}-critical", node.name);
    for (name, class) in [(&regular, None), (&critical, Some("system-node-critical"))] {
        let mut b = PodBuilder::new(name)
            .node(&node.name)
            .restart_policy("Never")
            .grace(30)
            .container(Container::exec("main", &["sleep", "3600"]));
        if let Some(class) = class {
            b = b.spec("priorityClassName", serde_json::json!(class));
        }
        create(&pods, &b.build()).await;
    }
    running_uid(&pods, &regular, 90).await;
    running_uid(&pods, &critical, 90).await;
    let p = pods.get(&critical).await.expect("critical pod");
    assert_eq!(
        p.spec.as_ref().and_then(|s| s.priority),
        Some(2_000_001_000),
        "the API server resolved system-node-critical"
    );
    wait_until_async("node Ready", Duration::from_secs(60), || async {
        ready(&nodes, &node.name)
            .await
            .filter(|c| c.status == "True")
    })
    .await;

    let (t0, wall0) = (Instant::now(), SystemTime::now());
    logind.prepare_for_shutdown(true).await;

    let not_ready = wait_until_async("node NotReady", Duration::from_secs(10), || async {
        ready(&nodes, &node.name)
            .await
            .filter(|c| c.status == "False")
    })
    .await;
    eprintln!(
        "node NotReady {:?} after PrepareForShutdown(true)",
        t0.elapsed()
    );
    assert_eq!(
        (not_ready.reason.as_deref(), not_ready.message.as_deref()),
        (Some("KubeletNotReady"), Some("node is shutting down"))
    );

    // A pod arriving now is rejected as the kubelet rejects it.
    let late = format!("{}-late", node.name);
    let b = PodBuilder::new(&late)
        .node(&node.name)
        .restart_policy("Never")
        .container(Container::exec("main", &["sleep", "3600"]));
    create(&pods, &b.build()).await;
    let st = wait_pod(&pods, &late, "late pod Failed", 30, |p| {
        (phase(p) == "Failed").then(|| p.status.clone().unwrap_or_default())
    })
    .await;
    assert_eq!(
        (st.reason.as_deref(), st.message.as_deref()),
        (
            Some("NodeShutdown"),
            Some("Pod was rejected: Pod was rejected as the node is shutting down.")
        )
    );

    let mut finished = Vec::new();
    for name in [&regular, &critical] {
        let p = wait_pod(&pods, name, &format!("{name} Failed"), 40, |p| {
            (phase(p) == "Failed" && finished_at(p).is_some()).then(|| p.clone())
        })
        .await;
        let st = p.status.clone().unwrap_or_default();
        assert_eq!(
            (st.reason.as_deref(), st.message.as_deref()),
            (Some("Terminated"), Some(MESSAGE)),
            "{name}"
        );
        let c = condition(&p, "DisruptionTarget").expect("DisruptionTarget");
        assert_eq!(
            (c.status.as_str(), c.reason.as_deref(), c.message.as_deref()),
            ("True", Some("TerminationByKubelet"), Some(MESSAGE)),
            "{name}"
        );
        let at = finished_at(&p).unwrap();
        let after = at.duration_since(wall0).unwrap_or_default();
        eprintln!("{name} finished {after:?} after PrepareForShutdown(true) (to the second)");
        finished.push(at);
    }
    // finishedAt is to the second: allow one second of rounding either way.
    let since = |t: SystemTime| {
        t.duration_since(wall0)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0)
    };
    let (regular_done, critical_done) = (since(finished[0]), since(finished[1]));
    assert!(
        regular_done <= 4.0 + 2.0,
        "the regular pod stopped {regular_done} s in, past its 4 s share"
    );
    assert!(
        critical_done >= regular_done + 3.0,
        "the critical pod stopped {critical_done} s in, too soon after the regular one \
         ({regular_done} s): it was not given its own 4 s after the regular group"
    );
    assert!(
        critical_done <= 8.0 + 3.0,
        "the critical pod stopped {critical_done} s in, past the 8 s"
    );

    // The lock is released once both groups are done, not before.
    let released = wait_until_async("the lock released", Duration::from_secs(20), || async {
        logind.inhibitors().first().and_then(|i| i.released)
    })
    .await;
    let held = released - t0;
    eprintln!("inhibitor lock released {held:?} after PrepareForShutdown(true)");
    assert!(
        held >= Duration::from_secs(7),
        "the lock was released {held:?} in, before the pods were stopped"
    );
    assert!(
        held <= Duration::from_secs(15),
        "the lock was held {held:?}"
    );
    // The shutdown's start and end in the kubelet's state file, for the gauges after a reboot.
    let file = node.path().join("root/graceful_node_shutdown_state");
    let text = std::fs::read_to_string(&file).expect("graceful_node_shutdown_state");
    let v: serde_json::Value = serde_json::from_str(&text).expect("state JSON");
    let time = |k: &str| -> k8s_openapi::jiff::Timestamp {
        v[k].as_str()
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("{k} in {text}"))
    };
    let took = time("endTime").duration_since(time("startTime"));
    assert!(
        took.as_secs_f64() >= 7.0 && took <= held.try_into().unwrap(),
        "shutdown recorded as taking {took:?}: {text}"
    );

    // Cancelled: the lock is taken again and the node is Ready.
    logind.prepare_for_shutdown(false).await;
    let again = wait_until_async("the lock taken again", Duration::from_secs(10), || async {
        logind.inhibitors().get(1).cloned()
    })
    .await;
    assert_eq!(again.args.3, "delay");
    wait_until_async("node Ready again", Duration::from_secs(30), || async {
        ready(&nodes, &node.name)
            .await
            .filter(|c| c.status == "True")
    })
    .await;
    assert!(
        logind.inhibitors()[1].released.is_none(),
        "the new lock is held"
    );
    finish(bosun);
    // Bosun gone: its lock is gone with it.
    wait_until_async(
        "the lock released with Bosun",
        Duration::from_secs(10),
        || async { logind.inhibitors()[1].released },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_grace_period_no_lock_is_taken() {
    let bus = PrivateBus::start();
    let logind = Logind::serve(&bus.address(), Duration::from_secs(30)).await;
    let node = ClusterNode::new("noshutdown");
    let bosun = node.start_with_env(&[("DBUS_SYSTEM_BUS_ADDRESS", &bus.address())]);
    let client = admin_client().await;
    let nodes: Api<Node> = Api::all(client.clone());
    let pods: Api<Pod> = Api::namespaced(client, "default");
    // A pod running on the node: Bosun is well past its start.
    let name = format!("{}-pod", node.name);
    let b = PodBuilder::new(&name)
        .node(&node.name)
        .container(Container::exec("main", &["sleep", "3600"]));
    create(&pods, &b.build()).await;
    running_uid(&pods, &name, 90).await;
    wait_until_async("node Ready", Duration::from_secs(60), || async {
        ready(&nodes, &node.name)
            .await
            .filter(|c| c.status == "True")
    })
    .await;
    // A shutdown announced now changes nothing: no lock, the node stays Ready, the pod runs.
    // (An absence: the 3 s are what a node with the manager takes to turn NotReady, well
    // under a second in the test above.)
    logind.prepare_for_shutdown(true).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        logind.inhibitors().is_empty(),
        "a lock was taken: {:?}",
        logind.inhibitors()
    );
    let r = ready(&nodes, &node.name).await.expect("Ready");
    assert_eq!(r.status, "True");
    assert_eq!(phase(&pods.get(&name).await.expect("pod")), "Running");
    finish(bosun);
}
