//! Standalone mode end to end: bosun runs static pods from a manifest directory through a real
//! containerd, with the kubelet's restart policies, removal, and restarts of bosun itself.

use std::collections::HashMap;
use std::time::Duration;

use bosun_cri::CriClient;
use bosun_cri::types::{ContainerFilter, ContainerState, PodSandboxFilter, PodSandboxState};
use bosun_tests::{Container, PodBuilder, StandaloneNode, wait_until_async};

/// A static pod manifest: `main` runs `script` with POD_NAME from the downward API, limited to
/// 200m and 32Mi, a 2 s grace period.
fn pod_manifest(name: &str, policy: &str, script: &str) -> String {
    PodBuilder::new(name)
        .label("app", name)
        .restart_policy(policy)
        .grace(2)
        .container(
            Container::sh("main", script)
                .env(
                    "POD_NAME",
                    serde_json::json!({"valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
                )
                .limits("200m", "32Mi"),
        )
        .manifest()
}

/// Containers of the pod named `name` (static pod name: `<name>-<node>`), newest first.
async fn containers(cri: &CriClient, pod: &str) -> Vec<bosun_cri::types::Container> {
    let sel = HashMap::from([("io.kubernetes.pod.name".to_string(), pod.to_string())]);
    let mut cs = cri
        .list_containers(Some(ContainerFilter {
            label_selector: sel,
            ..Default::default()
        }))
        .await
        .expect("list containers");
    cs.sort_by_key(|c| std::cmp::Reverse(c.created_at));
    cs
}

async fn ready_sandboxes(cri: &CriClient, pod: &str) -> usize {
    let sel = HashMap::from([("io.kubernetes.pod.name".to_string(), pod.to_string())]);
    cri.list_pod_sandbox(Some(PodSandboxFilter {
        label_selector: sel,
        ..Default::default()
    }))
    .await
    .expect("list sandboxes")
    .iter()
    .filter(|s| s.state == PodSandboxState::SandboxReady as i32)
    .count()
}

fn restart_count(c: &bosun_cri::types::Container) -> u32 {
    c.annotations
        .get("io.kubernetes.container.restartCount")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn static_pod_runs_logs_and_is_removed() {
    let node = StandaloneNode::new("sa-run");
    node.manifest(
        "web.yaml",
        &pod_manifest(
            "web",
            "Always",
            "echo hello from $POD_NAME; exec sleep 3600",
        ),
    );
    let mut bosun = node.start();
    let cri = node.cri().await;
    let pod = "web-sa-run";
    let running = wait_until_async(
        "static pod container running",
        Duration::from_secs(60),
        || async {
            let cs = containers(&cri, pod).await;
            cs.into_iter()
                .find(|c| c.state == ContainerState::ContainerRunning as i32)
        },
    )
    .await;
    // The kubelet's log layout: /var/log/pods/<ns>_<name>_<uid>/<container>/<restart>.log and
    // the /var/log/containers symlink.
    let uid = running
        .labels
        .get("io.kubernetes.pod.uid")
        .cloned()
        .unwrap();
    let log = node
        .path()
        .join("pods")
        .join(format!("default_{pod}_{uid}"))
        .join("main/0.log");
    let line = wait_until_async(
        "the container's first log line",
        Duration::from_secs(20),
        || async {
            std::fs::read_to_string(&log)
                .ok()
                .filter(|t| t.contains("hello from"))
                .map(|t| t.lines().next().unwrap_or_default().to_string())
        },
    )
    .await;
    assert!(
        line.ends_with(&format!("stdout F hello from {pod}")),
        "{line}"
    );
    let link = node
        .path()
        .join("containers")
        .join(format!("{pod}_default_main-{}.log", running.id));
    assert_eq!(
        std::fs::read_to_string(&link).expect("log symlink"),
        std::fs::read_to_string(&log).unwrap()
    );
    // CPU and memory limits from the spec reached the runtime.
    let st = cri
        .container_status(&running.id, false)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.state, ContainerState::ContainerRunning as i32);
    let out = cri
        .exec_sync(
            &running.id,
            vec![
                "cat".into(),
                "/sys/fs/cgroup/memory/memory.limit_in_bytes".into(),
            ],
            Duration::from_secs(10),
        )
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        (32 << 20).to_string()
    );

    // Removing the manifest stops and removes the pod.
    std::fs::remove_file(node.path().join("manifests/web.yaml")).unwrap();
    wait_until_async(
        "pod removed from the runtime",
        Duration::from_secs(60),
        || async { containers(&cri, pod).await.is_empty().then_some(()) },
    )
    .await;
    assert_eq!(ready_sandboxes(&cri, pod).await, 0);
    // Its logs go with it (the last step of the teardown).
    wait_until_async("pod log dir removed", Duration::from_secs(30), || async {
        (!log.exists() && !link.exists()).then_some(())
    })
    .await;
    let (took, code) = bosun.terminate(Duration::from_secs(10));
    assert_eq!(
        code,
        Some(0),
        "exit after {took:?}; log:\n{}",
        bosun.log_text()
    );
}

/// A static pod whose manifest is removed and put back during its grace period runs again once
/// its old instance is terminated (the kubelet's restartRequested): the pending Terminate is
/// neither overwritten nor the pod forgotten.
#[tokio::test]
async fn static_pod_put_back_during_grace_period_runs_again() {
    let node = StandaloneNode::new("sa-back");
    // The container ignores SIGTERM: it lives the whole 8 s grace period.
    let manifest = PodBuilder::new("back")
        .restart_policy("Always")
        .grace(8)
        .container(Container::sh(
            "main",
            "trap '' TERM; while true; do sleep 1; done",
        ))
        .manifest();
    node.manifest("back.yaml", &manifest);
    let mut bosun = node.start();
    let cri = node.cri().await;
    let pod = "back-sa-back";
    let running = |cs: Vec<bosun_cri::types::Container>| {
        cs.into_iter()
            .find(|c| c.state == ContainerState::ContainerRunning as i32)
    };
    let first = wait_until_async("static pod running", Duration::from_secs(60), || async {
        running(containers(&cri, pod).await)
    })
    .await;

    std::fs::remove_file(node.path().join("manifests/back.yaml")).unwrap();
    wait_until_async(
        "the worker terminating",
        Duration::from_secs(30),
        || async { bosun.log_text().contains("terminating pod").then_some(()) },
    )
    .await;
    node.manifest("back.yaml", &manifest);
    // Still within the grace period: the old container has not stopped yet.
    let st = cri
        .container_status(&first.id, false)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.state, ContainerState::ContainerRunning as i32);

    let second = wait_until_async(
        "the pod running again after its termination",
        Duration::from_secs(90),
        || async {
            let cs = containers(&cri, pod).await;
            let old_gone = cs.iter().all(|c| c.id != first.id);
            running(cs).filter(|_| old_gone)
        },
    )
    .await;
    assert_eq!(
        restart_count(&second),
        0,
        "a new pod instance, not a restart"
    );
    assert_eq!(ready_sandboxes(&cri, pod).await, 1);
    assert!(
        bosun
            .log_text()
            .contains("pod wanted again while terminating"),
        "{}",
        bosun.log_text()
    );
    bosun.terminate(Duration::from_secs(10));
}

#[tokio::test]
async fn restart_policies_and_crash_loop_backoff() {
    let node = StandaloneNode::new("sa-policy");
    node.manifest("once.yaml", &pod_manifest("once", "Never", "exit 3"));
    node.manifest("crash.yaml", &pod_manifest("crash", "Always", "exit 1"));
    node.manifest("done.yaml", &pod_manifest("done", "OnFailure", "exit 0"));
    let mut bosun = node.start();
    let cri = node.cri().await;

    // Never: runs once, exit code 3 kept, never restarted; the sandbox is stopped.
    let exited = wait_until_async(
        "restartPolicy Never container exited",
        Duration::from_secs(60),
        || async {
            let cs = containers(&cri, "once-sa-policy").await;
            cs.into_iter()
                .find(|c| c.state == ContainerState::ContainerExited as i32)
        },
    )
    .await;
    let st = cri
        .container_status(&exited.id, false)
        .await
        .unwrap()
        .status
        .unwrap();
    assert_eq!(st.exit_code, 3);
    wait_until_async(
        "finished pod's sandbox stopped",
        Duration::from_secs(30),
        || async { (ready_sandboxes(&cri, "once-sa-policy").await == 0).then_some(()) },
    )
    .await;

    // OnFailure with exit 0: completed, not restarted.
    let done = wait_until_async(
        "OnFailure container completed",
        Duration::from_secs(60),
        || async {
            let cs = containers(&cri, "done-sa-policy").await;
            cs.into_iter()
                .find(|c| c.state == ContainerState::ContainerExited as i32)
        },
    )
    .await;

    // Always with exit 1: restarted with growing back-off (first restart at once, then 10 s).
    let restarted = wait_until_async(
        "crashing container restarted twice",
        Duration::from_secs(60),
        || async {
            let cs = containers(&cri, "crash-sa-policy").await;
            cs.first().filter(|c| restart_count(c) >= 2).cloned()
        },
    )
    .await;
    let instances = containers(&cri, "crash-sa-policy").await;
    let created: Vec<i64> = instances.iter().map(|c| c.created_at).collect();
    // The gap before the 2nd restart is the 10 s back-off.
    let gap = Duration::from_nanos((created[0] - created[1]) as u64);
    assert!(
        gap >= Duration::from_secs(9),
        "second restart came after {gap:?}, want >= 10 s back-off"
    );
    assert!(restart_count(&restarted) >= 2);
    assert!(
        bosun.log_text().contains("CrashLoopBackOff") || bosun.log_text().contains("back-off"),
        "no back-off logged"
    );

    // Nothing else was restarted meanwhile.
    assert_eq!(containers(&cri, "once-sa-policy").await.len(), 1);
    assert_eq!(containers(&cri, "done-sa-policy").await.len(), 1);
    assert_eq!(containers(&cri, "done-sa-policy").await[0].id, done.id);
    bosun.terminate(Duration::from_secs(10));
}

#[tokio::test]
async fn sigterm_leaves_pods_running_and_restart_adopts_them() {
    let node = StandaloneNode::new("sa-restart");
    node.manifest("a.yaml", &pod_manifest("a", "Always", "exec sleep 3600"));
    node.manifest("b.yaml", &pod_manifest("b", "Always", "exec sleep 3600"));
    let mut bosun = node.start();
    let cri = node.cri().await;
    let mut ids = Vec::new();
    for pod in ["a-sa-restart", "b-sa-restart"] {
        let c = wait_until_async("pod running", Duration::from_secs(60), || async {
            containers(&cri, pod)
                .await
                .into_iter()
                .find(|c| c.state == ContainerState::ContainerRunning as i32)
        })
        .await;
        ids.push(c.id);
    }
    let (took, code) = bosun.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    assert!(took < Duration::from_secs(10), "exit took {took:?}");
    for pod in ["a-sa-restart", "b-sa-restart"] {
        assert_eq!(
            ready_sandboxes(&cri, pod).await,
            1,
            "{pod}'s sandbox stopped with bosun"
        );
    }

    // A new bosun adopts them: same containers, still running, nothing restarted, for a while.
    let bosun2 = node.start();
    wait_until_async(
        "bosun relisted the runtime",
        Duration::from_secs(30),
        || async {
            bosun2
                .log_text()
                .contains("container runtime connected")
                .then_some(())
        },
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        for (pod, id) in ["a-sa-restart", "b-sa-restart"].iter().zip(&ids) {
            let cs = containers(&cri, pod).await;
            assert_eq!(cs.len(), 1, "{pod} got a new container after the restart");
            assert_eq!(&cs[0].id, id);
            assert_eq!(cs[0].state, ContainerState::ContainerRunning as i32);
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    drop(bosun2);
    // Clean up the pods: a bosun with no manifests removes what no source wants.
    for f in ["a.yaml", "b.yaml"] {
        std::fs::remove_file(node.path().join("manifests").join(f)).unwrap();
    }
    let mut bosun3 = node.start();
    wait_until_async("pods removed", Duration::from_secs(60), || async {
        (containers(&cri, "a-sa-restart").await.is_empty()
            && containers(&cri, "b-sa-restart").await.is_empty())
        .then_some(())
    })
    .await;
    bosun3.terminate(Duration::from_secs(10));
}

#[test]
fn invalid_config_exits_non_zero_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\nhealthzPort: 70000\n").unwrap();
    let out = std::process::Command::new(bosun_tests::bosun_bin())
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("healthzPort"),
        "error does not name the field: {err}"
    );
}

#[test]
fn version_is_kubeadm_parseable() {
    let out = std::process::Command::new(bosun_tests::bosun_bin())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v = String::from_utf8_lossy(&out.stdout);
    let rest = v
        .trim()
        .strip_prefix("Kubernetes v")
        .unwrap_or_else(|| panic!("{v}"));
    let nums: Vec<&str> = rest.split(['.', '-']).take(3).collect();
    assert!(nums.iter().all(|n| n.parse::<u32>().is_ok()), "{v}");
}
