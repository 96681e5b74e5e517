//! bosun-cri against a real containerd, runc and CNI, with images from the local registry.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use bosun_cri::types::*;
use bosun_cri::{CriClient, CriError, Timeouts};
use bosun_tests::{Containerd, Env, wait_until_async};

fn labels(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn sandbox_config(ctd: &Containerd, name: &str, uid: &str, log_dir: &str) -> PodSandboxConfig {
    PodSandboxConfig {
        metadata: Some(PodSandboxMetadata {
            name: name.into(),
            uid: uid.into(),
            namespace: "cri-test".into(),
            attempt: 0,
        }),
        hostname: name.into(),
        log_directory: log_dir.into(),
        labels: labels(&[
            ("io.kubernetes.pod.name", name),
            ("io.kubernetes.pod.uid", uid),
        ]),
        linux: Some(LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/pod{uid}", ctd.cgroup_root()),
            security_context: Some(LinuxSandboxSecurityContext {
                namespace_options: Some(NamespaceOption::default()),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn container_config(image: &str, name: &str, script: &str) -> ContainerConfig {
    ContainerConfig {
        metadata: Some(ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: vec!["sh".into(), "-c".into(), script.into()],
        log_path: format!("{name}/0.log"),
        labels: labels(&[("io.kubernetes.container.name", name)]),
        linux: Some(LinuxContainerConfig {
            resources: Some(LinuxContainerResources {
                cpu_period: 100_000,
                cpu_quota: 50_000,
                cpu_shares: 512,
                memory_limit_in_bytes: 64 * 1024 * 1024,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

async fn connect(ctd: &Containerd) -> CriClient {
    CriClient::connect(&ctd.endpoint(), Timeouts::default())
        .await
        .expect("connect to containerd")
}

#[tokio::test]
async fn pod_lifecycle_through_cri() {
    let env = Env::runtime();
    let ctd = Containerd::start("cri-lifecycle");
    let cri = connect(&ctd).await;
    assert_eq!(cri.runtime_version().runtime_name, "containerd");
    assert!(
        cri.runtime_version()
            .node_info_string()
            .starts_with("containerd://1.")
    );

    // Runtime and network report ready.
    let status = cri.status(false).await.expect("status");
    let conds = status.status.expect("runtime status").conditions;
    for want in ["RuntimeReady", "NetworkReady"] {
        let c = conds
            .iter()
            .find(|c| c.r#type == want)
            .unwrap_or_else(|| panic!("no {want} condition"));
        assert!(c.status, "{want} false: {} {}", c.reason, c.message);
    }

    // Pull from the local registry.
    let image_ref = cri
        .pull_image(env.busybox_image(), None, None)
        .await
        .expect("pull busybox");
    assert!(image_ref.starts_with("sha256:"), "image ref {image_ref}");
    let image = cri
        .image_status(env.busybox_image())
        .await
        .expect("image status")
        .expect("image present");
    assert!(
        image.repo_tags.iter().any(|t| t == env.busybox_image()),
        "{:?}",
        image.repo_tags
    );
    assert!(
        cri.list_images()
            .await
            .expect("list images")
            .iter()
            .any(|i| i.id == image.id)
    );

    // Sandbox with a CNI address on this node's bridge.
    let logs = tempfile::tempdir().expect("tempdir");
    let sb_cfg = sandbox_config(
        &ctd,
        "lifecycle",
        "uid-lifecycle-1",
        logs.path().to_str().unwrap(),
    );
    let started = Instant::now();
    let sandbox = cri
        .run_pod_sandbox(sb_cfg.clone(), "")
        .await
        .expect("run sandbox");
    eprintln!("RunPodSandbox took {:?}", started.elapsed());
    let sb_status = cri
        .pod_sandbox_status(&sandbox, false)
        .await
        .expect("sandbox status");
    let sb = sb_status.status.expect("sandbox status body");
    assert_eq!(sb.state, PodSandboxState::SandboxReady as i32);
    let ip = sb.network.expect("sandbox network").ip;
    let prefix = ctd.subnet.trim_end_matches("0/24");
    assert!(ip.starts_with(prefix), "pod IP {ip} not in {}", ctd.subnet);

    // A container with CPU and memory limits that logs a line.
    let cfg = container_config(
        env.busybox_image(),
        "main",
        "echo hello-from-bosun; exec sleep 3600",
    );
    let cid = cri
        .create_container(&sandbox, cfg, sb_cfg.clone())
        .await
        .expect("create container");
    cri.start_container(&cid).await.expect("start container");
    let log_file = logs.path().join("main/0.log");
    let line = wait_until_async(
        "the container's log line",
        Duration::from_secs(20),
        || async {
            let text = std::fs::read_to_string(&log_file).ok()?;
            text.lines()
                .find(|l| l.ends_with("hello-from-bosun"))
                .map(str::to_string)
        },
    )
    .await;
    // CRI log format: <RFC3339Nano time> <stream> <tag> <content>
    let fields: Vec<&str> = line.splitn(4, ' ').collect();
    assert_eq!(
        fields[1..],
        ["stdout", "F", "hello-from-bosun"],
        "log line {line:?}"
    );

    let st = cri
        .container_status(&cid, false)
        .await
        .expect("container status")
        .status
        .expect("status body");
    assert_eq!(st.state, ContainerState::ContainerRunning as i32);
    assert!(st.started_at > 0);

    // The limits reached the container's cgroups (cgroup v1 on these machines, v2 elsewhere).
    let out = cri
        .exec_sync(
            &cid,
            vec![
                "sh".into(),
                "-c".into(),
                "cat /sys/fs/cgroup/memory/memory.limit_in_bytes 2>/dev/null || cat /sys/fs/cgroup/memory.max".into(),
            ],
            Duration::from_secs(10),
        )
        .await
        .expect("exec sync");
    assert_eq!(
        out.exit_code,
        0,
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        (64 * 1024 * 1024).to_string()
    );
    let out = cri
        .exec_sync(
            &cid,
            vec!["sh".into(), "-c".into(), "exit 7".into()],
            Duration::from_secs(10),
        )
        .await
        .expect("exec sync exit 7");
    assert_eq!(out.exit_code, 7);

    // Stats for the container and the sandbox.
    let stats = wait_until_async(
        "container stats with memory usage",
        Duration::from_secs(20),
        || async {
            let s = cri.container_stats(&cid).await.ok()??;
            (s.memory.as_ref()?.working_set_bytes.as_ref()?.value > 0).then_some(s)
        },
    )
    .await;
    assert!(stats.cpu.is_some(), "no cpu stats");
    let listed = cri
        .list_container_stats(Some(ContainerStatsFilter {
            pod_sandbox_id: sandbox.clone(),
            ..Default::default()
        }))
        .await
        .expect("list container stats");
    assert_eq!(listed.len(), 1);
    let sb_stats = cri
        .pod_sandbox_stats(&sandbox)
        .await
        .expect("sandbox stats")
        .expect("sandbox stats body");
    let linux = sb_stats.linux.expect("linux sandbox stats");
    assert!(
        linux
            .memory
            .and_then(|m| m.working_set_bytes)
            .is_some_and(|w| w.value > 0)
    );
    assert_eq!(
        linux.containers.len(),
        1,
        "the sandbox stats list its container"
    );
    let listed = cri
        .list_pod_sandbox_stats(None)
        .await
        .expect("list sandbox stats");
    assert_eq!(listed.len(), 1);

    // Streaming URLs served by the runtime on loopback.
    let url = cri
        .exec(ExecRequest {
            container_id: cid.clone(),
            cmd: vec!["sh".into()],
            stdout: true,
            ..Default::default()
        })
        .await
        .expect("exec url");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let url = cri
        .port_forward(&sandbox, vec![80])
        .await
        .expect("port-forward url");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");

    // Lists with filters.
    let by_label = cri
        .list_pod_sandbox(Some(PodSandboxFilter {
            label_selector: labels(&[("io.kubernetes.pod.uid", "uid-lifecycle-1")]),
            ..Default::default()
        }))
        .await
        .expect("list sandboxes");
    assert_eq!(
        by_label.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [sandbox.as_str()]
    );
    let none = cri
        .list_pod_sandbox(Some(PodSandboxFilter {
            label_selector: labels(&[("io.kubernetes.pod.uid", "nobody")]),
            ..Default::default()
        }))
        .await
        .expect("list sandboxes");
    assert!(none.is_empty());
    let running = cri
        .list_containers(Some(ContainerFilter {
            pod_sandbox_id: sandbox.clone(),
            state: Some(ContainerStateValue {
                state: ContainerState::ContainerRunning as i32,
            }),
            ..Default::default()
        }))
        .await
        .expect("list containers");
    assert_eq!(
        running.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(),
        [cid.as_str()]
    );

    // Stop with a timeout: sleep ignores nothing, sh as pid 1 ignores SIGTERM -> killed at timeout.
    let started = Instant::now();
    cri.stop_container(&cid, Duration::from_secs(1))
        .await
        .expect("stop container");
    assert!(started.elapsed() < Duration::from_secs(30));
    let st = cri
        .container_status(&cid, false)
        .await
        .expect("status")
        .status
        .expect("body");
    assert_eq!(st.state, ContainerState::ContainerExited as i32);
    cri.remove_container(&cid).await.expect("remove container");
    let err = cri
        .container_status(&cid, false)
        .await
        .expect_err("removed container has no status");
    assert!(err.is_not_found(), "{err}");

    cri.stop_pod_sandbox(&sandbox).await.expect("stop sandbox");
    cri.remove_pod_sandbox(&sandbox)
        .await
        .expect("remove sandbox");
    // Removing again: already gone is NotFound or success, never a transport error.
    if let Err(e) = cri.remove_pod_sandbox(&sandbox).await {
        assert!(e.is_not_found(), "{e}");
    }
    assert!(cri.list_pod_sandbox(None).await.expect("list").is_empty());

    let fs = cri.image_fs_info().await.expect("image fs info");
    assert!(!fs.image_filesystems.is_empty());
    cri.remove_image(env.busybox_image())
        .await
        .expect("remove image");
    assert!(
        cri.image_status(env.busybox_image())
            .await
            .expect("image status")
            .is_none()
    );
}

#[tokio::test]
async fn missing_image_is_a_typed_not_found() {
    let env = Env::runtime();
    let ctd = Containerd::start("cri-missing-image");
    let cri = connect(&ctd).await;
    let image = format!("{}/does-not-exist:1", env.registry());
    let err = cri
        .pull_image(&image, None, None)
        .await
        .expect_err("pull of a missing image");
    assert!(err.is_not_found(), "want NotFound, got {err:?}");
    assert!(err.to_string().contains("does-not-exist"), "{err}");
    assert!(
        cri.image_status(&image)
            .await
            .expect("image status")
            .is_none()
    );
}

#[tokio::test]
async fn absent_endpoint_is_a_clear_error_within_the_deadline() {
    let dir = tempfile::tempdir().expect("tempdir");
    let endpoint = format!("unix://{}/nothing.sock", dir.path().display());
    let timeouts = Timeouts {
        quick: Duration::from_secs(3),
        ..Timeouts::default()
    };
    let started = Instant::now();
    let err = CriClient::connect(&endpoint, timeouts)
        .await
        .expect_err("nothing listens");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "took {:?}",
        started.elapsed()
    );
    assert!(matches!(err, CriError::Unavailable { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains(&endpoint),
        "error does not name the endpoint: {text}"
    );
}

#[tokio::test]
async fn reconnects_after_the_runtime_restarts() {
    let env = Env::runtime();
    let mut ctd = Containerd::start("cri-restart");
    let cri = connect(&ctd).await;
    cri.pull_image(env.busybox_image(), None, None)
        .await
        .expect("pull");
    let logs = tempfile::tempdir().expect("tempdir");
    let sb_cfg = sandbox_config(
        &ctd,
        "restart",
        "uid-restart-1",
        logs.path().to_str().unwrap(),
    );
    let sandbox = cri.run_pod_sandbox(sb_cfg, "").await.expect("run sandbox");

    ctd.restart();

    // The same client, no reconnect by the caller: the next call finds the restarted runtime
    // and the sandbox that survived it.
    let items = cri
        .list_pod_sandbox(None)
        .await
        .expect("list after restart");
    assert_eq!(
        items.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [sandbox.as_str()]
    );
    assert_eq!(items[0].state, PodSandboxState::SandboxReady as i32);
    cri.stop_pod_sandbox(&sandbox).await.expect("stop");
    cri.remove_pod_sandbox(&sandbox).await.expect("remove");
}

#[tokio::test]
async fn container_events_unimplemented_on_containerd_1_6() {
    let _env = Env::runtime();
    let ctd = Containerd::start("cri-events");
    let cri = connect(&ctd).await;
    let version = cri.runtime_version().runtime_version.clone();
    match cri.container_events().await {
        Err(e) => assert!(e.is_unimplemented(), "{e:?}"),
        Ok(mut events) => {
            use futures::StreamExt;
            // Some runtimes accept the stream and fail on the first item.
            match tokio::time::timeout(Duration::from_secs(2), events.next()).await {
                Ok(Some(Err(e))) => assert!(e.is_unimplemented(), "{e:?}"),
                other if version.starts_with("1.6") => {
                    panic!(
                        "containerd {version} should not implement events, got {:?}",
                        other.is_ok()
                    )
                }
                _ => {}
            }
        }
    }
}
