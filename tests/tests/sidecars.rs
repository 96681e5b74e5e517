//! Restartable init containers (sidecars) on a bosun node, through the real containerd and API
//! server: started in order during init without waiting for them to finish, kept running next to
//! the app containers, restarted whatever the pod's restart policy, not counted for completion,
//! and stopped after the app containers, in reverse order.

use std::path::Path;
use std::time::Duration;

use bosun_tests::BosunNode;
use bosun_tests::pod::{
    Container, PodBuilder, condition, condition_status, container_status, create,
    delete_and_wait_gone, init_status, is_running, phase, wait_pod,
};
use bosun_tests::{ClusterNode, wait_until_async};
use kube::api::DeleteParams;

/// A pod with `shared` (a host directory) to mount at /shared, a 20 s grace period.
fn pod(node: &ClusterNode, name: &str, policy: &str, shared: &Path) -> PodBuilder {
    PodBuilder::new(name)
        .node(&node.name)
        .restart_policy(policy)
        .grace(20)
        .host_dir("shared", shared)
}

/// A container running `script` with /shared mounted.
fn sh(name: &str, script: &str) -> Container {
    Container::sh(name, script).mount("shared", "/shared")
}

/// A sidecar: logs `<name>-start`, serves HTTP on `port`, exits 1 when /shared/crash-<name>
/// appears, and logs `<name>-term` on SIGTERM.
fn sidecar(name: &str, port: u16) -> Container {
    let script = format!(
        "echo {name}-start >> /shared/log; \
         mkdir -p /www && echo {name} > /www/index.html && httpd -p {port} -h /www; \
         trap 'echo {name}-term >> /shared/log; exit 0' TERM; \
         while :; do if [ -f /shared/crash-{name} ]; then rm /shared/crash-{name}; exit 1; fi; sleep 0.2; done"
    );
    sh(name, &script).sidecar()
}

fn log_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

#[tokio::test]
async fn sidecar_runs_through_init_restarts_under_never_and_ends_with_the_app() {
    let bn = BosunNode::start("sidecar-life").await;
    let (node, api) = (&bn.node, &bn.pods);
    let name = format!("{}-p", node.name);
    let shared = node.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    // The regular init container and the app reach the sidecar over the pod's loopback: it runs
    // alongside them.
    let p = pod(node, &name, "Never", &shared)
        .init_container(sidecar("side", 8080))
        .init_container(sh(
            "init",
            "until wget -qO- http://127.0.0.1:8080/; do sleep 0.2; done; echo init >> /shared/log",
        ))
        .container(sh(
            "app",
            "until wget -qO- http://127.0.0.1:8080/; do sleep 0.2; done; echo app >> /shared/log; \
              while [ ! -f /shared/done ]; do sleep 0.2; done; echo app-exit >> /shared/log",
        ))
        .build();
    create(api, &p).await;
    let p = wait_pod(api, &name, "pod Running and Ready", 180, |p| {
        (phase(p) == "Running"
            && condition_status(p, "Ready") == Some("True")
            && is_running(init_status(p, "side")))
        .then(|| p.clone())
    })
    .await;
    assert_eq!(log_lines(&shared), ["side-start", "init", "app"]);
    let side = init_status(&p, "side").unwrap();
    assert!(
        side.ready && side.started == Some(true) && side.restart_count == 0,
        "{side:?}"
    );
    let init = init_status(&p, "init").unwrap();
    let t = init.state.as_ref().and_then(|s| s.terminated.as_ref());
    assert_eq!(t.and_then(|t| t.reason.as_deref()), Some("Completed"));
    assert!(init.ready && init.started == Some(false), "{init:?}");
    for kind in ["Initialized", "ContainersReady"] {
        assert_eq!(condition_status(&p, kind), Some("True"), "{kind}");
    }

    // The sidecar crashes: restarted although the pod's policy is Never; the app keeps running.
    std::fs::write(shared.join("crash-side"), "").unwrap();
    let p = wait_pod(api, &name, "sidecar restarted", 60, |p| {
        let side = init_status(p, "side")?;
        (side.restart_count == 1 && is_running(Some(side))).then(|| p.clone())
    })
    .await;
    let side = init_status(&p, "side").unwrap();
    let last = side.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    assert_eq!(last.map(|t| t.exit_code), Some(1), "{side:?}");
    let app = container_status(&p, "app").unwrap();
    assert!(is_running(Some(app)) && app.restart_count == 0, "{app:?}");
    assert_eq!(phase(&p), "Running");
    assert_eq!(
        log_lines(&shared),
        ["side-start", "init", "app", "side-start"]
    );

    // The app finishes: the sidecar is stopped and does not count; the pod Succeeded.
    std::fs::write(shared.join("done"), "").unwrap();
    let p = wait_pod(api, &name, "pod Succeeded", 60, |p| {
        (phase(p) == "Succeeded").then(|| p.clone())
    })
    .await;
    assert_eq!(
        log_lines(&shared),
        [
            "side-start",
            "init",
            "app",
            "side-start",
            "app-exit",
            "side-term"
        ]
    );
    let side = init_status(&p, "side").unwrap();
    assert!(
        side.state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some()
            && !side.ready,
        "{side:?}"
    );
    let summary = |kind| {
        let c = condition(&p, kind).unwrap();
        (c.status.as_str(), c.reason.as_deref(), c.message.as_deref())
    };
    assert_eq!(summary("Initialized"), ("True", Some("PodCompleted"), None));
    assert_eq!(
        summary("ContainersReady"),
        ("False", Some("PodCompleted"), None)
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    bn.finish();
}

#[tokio::test]
async fn deletion_stops_the_app_then_the_sidecars_in_reverse_order() {
    let bn = BosunNode::start("sidecar-stop").await;
    let (node, api) = (&bn.node, &bn.pods);
    let name = format!("{}-p", node.name);
    let shared = node.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let p = pod(node, &name, "Always", &shared)
        .init_container(sidecar("first", 8081))
        .init_container(sidecar("second", 8082))
        .container(sh(
            "app",
            "echo app-start >> /shared/log; \
              trap 'sleep 1; echo app-term >> /shared/log; exit 0' TERM; while :; do sleep 0.2; done",
        ))
        .build();
    create(api, &p).await;
    let p = wait_pod(api, &name, "pod Running and Ready", 180, |p| {
        (condition_status(p, "Ready") == Some("True")).then(|| p.clone())
    })
    .await;
    for side in ["first", "second"] {
        let s = init_status(&p, side).unwrap();
        assert!(s.ready && s.started == Some(true), "{s:?}");
    }
    wait_until_async(
        "the app logged its start",
        Duration::from_secs(20),
        || async {
            log_lines(&shared)
                .contains(&"app-start".to_string())
                .then_some(())
        },
    )
    .await;
    let mut started = log_lines(&shared);
    started.sort();
    assert_eq!(started, ["app-start", "first-start", "second-start"]);
    delete_and_wait_gone(api, &[&name], 60).await;
    // The app takes a second to stop; the sidecars still wait for it, the later one first.
    assert_eq!(
        log_lines(&shared)[3..],
        ["app-term", "second-term", "first-term"]
    );
    bn.finish();
}
