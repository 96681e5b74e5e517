//! Restartable init containers (sidecars) on a bosun node, through the real containerd and API
//! server: started in order during init without waiting for them to finish, kept running next to
//! the app containers, restarted whatever the pod's restart policy, not counted for completion,
//! and stopped after the app containers, in reverse order.

use std::path::Path;
use std::time::Duration;

use bosun_tests::{ClusterNode, Env, admin_client, wait_until_async};
use k8s_openapi::api::core::v1::{ContainerStatus, Pod};
use kube::Api;
use kube::api::{DeleteParams, PostParams};

/// A pod with `shared` (a host directory) mounted at /shared in every container.
fn pod(
    node: &ClusterNode,
    name: &str,
    policy: &str,
    shared: &Path,
    init: serde_json::Value,
    containers: serde_json::Value,
) -> Pod {
    let mount = serde_json::json!([{"name": "shared", "mountPath": "/shared"}]);
    let with_mount = |list: serde_json::Value| {
        let mut list = list;
        for c in list.as_array_mut().unwrap() {
            c["image"] = Env::runtime().busybox_image().into();
            c["volumeMounts"] = mount.clone();
        }
        list
    };
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {
            "nodeName": node.name,
            "restartPolicy": policy,
            "automountServiceAccountToken": false,
            "terminationGracePeriodSeconds": 20,
            "initContainers": with_mount(init),
            "containers": with_mount(containers),
            "volumes": [{"name": "shared", "hostPath": {"path": shared, "type": "Directory"}}],
        }
    }))
    .unwrap()
}

/// A sidecar: logs `<name>-start`, serves HTTP on `port`, exits 1 when /shared/crash-<name>
/// appears, and logs `<name>-term` on SIGTERM.
fn sidecar(name: &str, port: u16) -> serde_json::Value {
    let script = format!(
        "echo {name}-start >> /shared/log; \
         mkdir -p /www && echo {name} > /www/index.html && httpd -p {port} -h /www; \
         trap 'echo {name}-term >> /shared/log; exit 0' TERM; \
         while :; do if [ -f /shared/crash-{name} ]; then rm /shared/crash-{name}; exit 1; fi; sleep 0.2; done"
    );
    serde_json::json!({"name": name, "restartPolicy": "Always", "command": ["sh", "-c", script]})
}

fn log_lines(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("log"))
        .unwrap_or_default()
        .lines()
        .map(String::from)
        .collect()
}

fn phase(p: &Pod) -> &str {
    p.status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .unwrap_or("")
}

fn init_status<'a>(p: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    p.status
        .as_ref()?
        .init_container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

fn app_status<'a>(p: &'a Pod, name: &str) -> Option<&'a ContainerStatus> {
    p.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.name == name)
}

/// (status, reason, message) of the pod condition `kind`.
fn condition(p: &Pod, kind: &str) -> Option<(String, Option<String>, Option<String>)> {
    p.status
        .as_ref()?
        .conditions
        .as_ref()?
        .iter()
        .find(|c| c.type_ == kind)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

fn is_running(s: Option<&ContainerStatus>) -> bool {
    s.and_then(|s| s.state.as_ref())
        .is_some_and(|s| s.running.is_some())
}

async fn wait_pod<T>(
    api: &Api<Pod>,
    name: &str,
    what: &str,
    secs: u64,
    check: impl Fn(&Pod) -> Option<T>,
) -> T {
    wait_until_async(what, Duration::from_secs(secs), || async {
        let p = api.get_opt(name).await.ok()??;
        check(&p)
    })
    .await
}

#[tokio::test]
async fn sidecar_runs_through_init_restarts_under_never_and_ends_with_the_app() {
    let node = ClusterNode::new("sidecar-life");
    let mut bosun = node.start();
    let api: Api<Pod> = Api::namespaced(admin_client().await, "default");
    let name = format!("{}-p", node.name);
    let shared = node.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    // The regular init container and the app reach the sidecar over the pod's loopback: it runs
    // alongside them.
    let p = pod(
        &node,
        &name,
        "Never",
        &shared,
        serde_json::json!([
            sidecar("side", 8080),
            {"name": "init", "command": ["sh", "-c", "until wget -qO- http://127.0.0.1:8080/; do sleep 0.2; done; echo init >> /shared/log"]}
        ]),
        serde_json::json!([
            {"name": "app", "command": ["sh", "-c", "until wget -qO- http://127.0.0.1:8080/; do sleep 0.2; done; echo app >> /shared/log; \
              while [ ! -f /shared/done ]; do sleep 0.2; done; echo app-exit >> /shared/log"]}
        ]),
    );
    api.create(&PostParams::default(), &p).await.unwrap();
    let p = wait_pod(&api, &name, "pod Running and Ready", 180, |p| {
        (phase(p) == "Running"
            && condition(p, "Ready").is_some_and(|c| c.0 == "True")
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
        assert_eq!(condition(&p, kind).unwrap().0, "True", "{kind}");
    }

    // The sidecar crashes: restarted although the pod's policy is Never; the app keeps running.
    std::fs::write(shared.join("crash-side"), "").unwrap();
    let p = wait_pod(&api, &name, "sidecar restarted", 60, |p| {
        let side = init_status(p, "side")?;
        (side.restart_count == 1 && is_running(Some(side))).then(|| p.clone())
    })
    .await;
    let side = init_status(&p, "side").unwrap();
    let last = side.last_state.as_ref().and_then(|s| s.terminated.as_ref());
    assert_eq!(last.map(|t| t.exit_code), Some(1), "{side:?}");
    let app = app_status(&p, "app").unwrap();
    assert!(is_running(Some(app)) && app.restart_count == 0, "{app:?}");
    assert_eq!(phase(&p), "Running");
    assert_eq!(
        log_lines(&shared),
        ["side-start", "init", "app", "side-start"]
    );

    // The app finishes: the sidecar is stopped and does not count; the pod Succeeded.
    std::fs::write(shared.join("done"), "").unwrap();
    let p = wait_pod(&api, &name, "pod Succeeded", 60, |p| {
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
    assert_eq!(
        condition(&p, "Initialized").unwrap(),
        ("True".into(), Some("PodCompleted".into()), None)
    );
    assert_eq!(
        condition(&p, "ContainersReady").unwrap(),
        ("False".into(), Some("PodCompleted".into()), None)
    );
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    assert!(
        bosun.try_exit().is_none(),
        "bosun exited:\n{}",
        bosun.log_text()
    );
    bosun.terminate(Duration::from_secs(10));
}

#[tokio::test]
async fn deletion_stops_the_app_then_the_sidecars_in_reverse_order() {
    let node = ClusterNode::new("sidecar-stop");
    let mut bosun = node.start();
    let api: Api<Pod> = Api::namespaced(admin_client().await, "default");
    let name = format!("{}-p", node.name);
    let shared = node.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let p = pod(
        &node,
        &name,
        "Always",
        &shared,
        serde_json::json!([sidecar("first", 8081), sidecar("second", 8082)]),
        serde_json::json!([
            {"name": "app", "command": ["sh", "-c", "echo app-start >> /shared/log; \
              trap 'sleep 1; echo app-term >> /shared/log; exit 0' TERM; while :; do sleep 0.2; done"]}
        ]),
    );
    api.create(&PostParams::default(), &p).await.unwrap();
    let p = wait_pod(&api, &name, "pod Running and Ready", 180, |p| {
        (condition(p, "Ready").is_some_and(|c| c.0 == "True")).then(|| p.clone())
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
    api.delete(&name, &DeleteParams::default()).await.unwrap();
    wait_until_async("pod gone from the API", Duration::from_secs(60), || async {
        api.get_opt(&name)
            .await
            .ok()
            .and_then(|p| p.is_none().then_some(()))
    })
    .await;
    // The app takes a second to stop; the sidecars still wait for it, the later one first.
    assert_eq!(
        log_lines(&shared)[3..],
        ["app-term", "second-term", "first-term"]
    );
    assert!(
        bosun.try_exit().is_none(),
        "bosun exited:\n{}",
        bosun.log_text()
    );
    bosun.terminate(Duration::from_secs(10));
}
