//! Garbage collection and log rotation on a bosun node, against its own containerd: dead
//! containers of a crash loop collected down to what `--previous` and lastState need; images
//! over the high threshold removed down to the low one, in-use and pause images kept; the
//! directory of a pod deleted while bosun was down removed once it is back.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bosun_tests::pod::{Container, PodBuilder, container_status, create, wait_pod};
use bosun_tests::{ClusterNode, NodeOptions, admin_client, mounts_under};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;

/// Files under `dir`, recursively, sorted.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in entries.flatten() {
        let p = e.path();
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_crash_loop_keeps_only_the_current_and_the_newest_dead_container() {
    let started = Instant::now();
    let node = ClusterNode::with_options("gc-crash", &NodeOptions::default());
    // The kubelet collects every minute; 10 s here so the test sees several collections.
    let _bosun = node.start_with_env(&[("BOSUN_CONTAINER_GC_PERIOD", "10s")]);
    let api: Api<Pod> = Api::namespaced(admin_client().await, "default");
    let name = format!("{}-loop", node.name);
    let pod = PodBuilder::new(&name)
        .node(&node.name)
        .restart_policy("Always")
        .grace(1)
        .container(Container::sh("crash", "echo run $$$$; sleep 3; exit 3"))
        .build();
    create(&api, &pod).await;
    // Back-off 10 s, 20 s, 40 s: the fourth instance starts about 75 s in.
    let uid = wait_pod(&api, &name, "restartCount 3", 150, |p| {
        let st = container_status(p, "crash")?;
        (st.restart_count >= 3).then(|| p.metadata.uid.clone().unwrap_or_default())
    })
    .await;
    let log_dir = node
        .path()
        .join("pods")
        .join(format!("default_{name}_{uid}"))
        .join("crash");
    // Four instances ran; at most the current one and the newest dead one may remain, in
    // containerd and on disk (log files and /var/log/containers symlinks).
    let deadline = Instant::now() + Duration::from_secs(40);
    let (containers, logs, links) = loop {
        let containers = node.containers_of(&uid).await;
        let logs = files_under(&log_dir);
        let links: Vec<PathBuf> = files_under(&node.path().join("containers"))
            .into_iter()
            .filter(|l| l.to_string_lossy().contains(&name))
            .collect();
        if containers.len() <= 2 && logs.len() <= 2 && links.len() <= 2 {
            break (containers, logs, links);
        }
        assert!(
            Instant::now() < deadline,
            "dead containers not collected: {} containers {containers:?}, logs {logs:?}, links {links:?}",
            containers.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    eprintln!(
        "after {:?}: {} containers, {} log files, {} symlinks left",
        started.elapsed(),
        containers.len(),
        logs.len(),
        links.len()
    );
    // The status still counts every restart and remembers the last termination: the newest dead
    // instance is kept for it.
    let p = api.get(&name).await.expect("pod");
    let st = container_status(&p, "crash").expect("status");
    assert!(st.restart_count >= 3, "restartCount went back: {st:?}");
    let terminated = st
        .last_state
        .as_ref()
        .and_then(|s| s.terminated.as_ref())
        .or_else(|| st.state.as_ref().and_then(|s| s.terminated.as_ref()))
        .unwrap_or_else(|| panic!("no lastState.terminated: {st:?}"));
    assert_eq!(terminated.exit_code, 3, "{st:?}");
    // What `kubectl logs --previous` reads: the newest dead instance's log, still on disk.
    let previous = log_dir.join(format!("{}.log", st.restart_count - 1));
    let running_now = st.state.as_ref().is_some_and(|s| s.running.is_some());
    let kept = if running_now {
        previous
    } else {
        log_dir.join(format!("{}.log", st.restart_count))
    };
    let text = std::fs::read_to_string(&kept)
        .unwrap_or_else(|e| panic!("previous log {} gone: {e}; left {logs:?}", kept.display()));
    assert!(text.contains("run "), "previous log: {text}");
    let _ = api.delete(&name, &Default::default()).await;
}

/// Builds (once) and pushes `<registry>/bosun-gc-fill:<n>`: one layer of `mib` MiB of random
/// bytes, so each copy is a distinct image whose removal frees its own space.
fn push_fill_image(n: u32, mib: u32) -> String {
    let env = bosun_tests::Env::runtime();
    let reference = format!("{}/bosun-gc-fill:{n}", env.registry());
    let manifest = format!("http://{}/v2/bosun-gc-fill/manifests/{n}", env.registry());
    let present = std::process::Command::new("curl")
        .args(["-sf", "-o", "/dev/null", "-H"])
        .arg("Accept: application/vnd.oci.image.manifest.v1+json")
        .arg(&manifest)
        .status()
        .is_ok_and(|s| s.success());
    if present {
        return reference;
    }
    let work = tempfile::tempdir().expect("tempdir");
    let layout = work.path().join("layout");
    let bundle = work.path().join("bundle");
    let image = format!("{}:{n}", layout.display());
    let run = |args: &[&str]| {
        let out = std::process::Command::new(args[0])
            .args(&args[1..])
            .output()
            .expect("run image tool");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&["umoci", "init", "--layout", &layout.display().to_string()]);
    run(&["umoci", "new", "--image", &image]);
    run(&[
        "umoci",
        "unpack",
        "--image",
        &image,
        &bundle.display().to_string(),
    ]);
    let fill = bundle.join("rootfs/fill");
    run(&[
        "dd",
        "if=/dev/urandom",
        &format!("of={}", fill.display()),
        "bs=1M",
        &format!("count={mib}"),
    ]);
    run(&[
        "umoci",
        "repack",
        "--image",
        &image,
        &bundle.display().to_string(),
    ]);
    run(&[
        "skopeo",
        "copy",
        "-q",
        "--dest-tls-verify=false",
        &format!("oci:{image}"),
        &format!("docker://{reference}"),
    ]);
    reference
}

/// Capacity and available bytes of the filesystem holding `path` (statvfs, as bosun reads the
/// image filesystem).
fn fs_bytes(path: &Path) -> (u64, u64) {
    let s = nix::sys::statvfs::statvfs(path).expect("statvfs");
    (
        s.blocks() * s.fragment_size(),
        s.blocks_available() * s.fragment_size(),
    )
}

/// Usage in percent as the kubelet computes it: `100 - available*100/capacity`.
fn usage_percent(path: &Path) -> u64 {
    let (cap, avail) = fs_bytes(path);
    100 - avail * 100 / cap
}

/// Which of `wanted` the node's containerd holds (by tag).
async fn held<'a>(cri: &bosun_cri::CriClient, wanted: &'a [String]) -> Vec<&'a String> {
    let images = cri.list_images().await.expect("list images");
    wanted
        .iter()
        .filter(|w| images.iter().any(|i| i.repo_tags.contains(w)))
        .collect()
}

#[tokio::test]
async fn images_over_the_high_threshold_are_removed_down_to_the_low_one_in_use_kept() {
    let started = Instant::now();
    let env = bosun_tests::Env::runtime();
    let fills: Vec<String> = (1..=4).map(|n| push_fill_image(n, 8)).collect();
    // A 128 MiB image filesystem of the node's own: each 8 MiB fill image takes ~16 MiB of it
    // (blob and snapshot), while the runtime reports ~8 MiB as its size.
    let opts = NodeOptions {
        containerd_root_size: Some("128m".into()),
        ..Default::default()
    };
    let node = ClusterNode::with_options("gc-images", &opts);
    let root = node.ctd.dir().join("root");
    let cri = bosun_cri::CriClient::connect(&node.ctd.endpoint(), Default::default())
        .await
        .expect("connect");
    // Everything the node will hold is pulled before bosun starts, so that the thresholds can
    // be set from the usage measured with all of it.
    let mut all = vec![
        env.pause_image().to_string(),
        env.busybox_image().to_string(),
    ];
    all.extend(fills.iter().cloned());
    for image in &all {
        cri.pull_image(image, None, None)
            .await
            .unwrap_or_else(|e| panic!("pull {image}: {e}"));
    }
    let fill_size = cri
        .list_images()
        .await
        .expect("list images")
        .iter()
        .filter(|i| i.repo_tags.iter().any(|t| fills.contains(t)))
        .map(|i| i.size)
        .max()
        .expect("fill images listed");
    let (cap, avail) = fs_bytes(&root);
    let usage = 100 - avail * 100 / cap;
    // Over the high threshold from the start; the low one asks for 1.5 fill images' reported
    // size, so exactly two go (the kubelet counts the sizes the runtime reports).
    let high = usage - 2;
    let low = 100 - ((avail + fill_size * 3 / 2) * 100 + cap / 2) / cap;
    eprintln!(
        "image fs {cap} B, usage {usage}% with every image, fill image size {fill_size} B: \
         high {high}%, low {low}%"
    );
    assert!(low < high, "thresholds: low {low}% high {high}%");
    let mut config = std::fs::read_to_string(node.path().join("config.yaml")).expect("config");
    // imageMinimumGCAge: nothing goes before the pod's container uses busybox.
    config.push_str(&format!(
        "imageGCHighThresholdPercent: {high}\nimageGCLowThresholdPercent: {low}\n\
         imageMinimumGCAge: 30s\n"
    ));
    std::fs::write(node.path().join("config.yaml"), config).expect("config");
    // The kubelet collects every 5 minutes; 2 s here.
    let _bosun = node.start_with_env(&[("BOSUN_IMAGE_GC_PERIOD", "2s")]);
    let api: Api<Pod> = Api::namespaced(admin_client().await, "default");
    let name = format!("{}-user", node.name);
    let pod = PodBuilder::new(&name)
        .node(&node.name)
        .restart_policy("Always")
        .grace(1)
        .container(Container::sh("main", "sleep 3600"))
        .build();
    create(&api, &pod).await;
    bosun_tests::pod::running_uid(&api, &name, 30).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    let left = loop {
        let left = held(&cri, &fills).await;
        // The runtime frees about twice the size it reports: wait for the second removal.
        if left.len() <= 2 {
            break left;
        }
        assert!(
            Instant::now() < deadline,
            "image fs still at {}% (high {high}%); fill images left {left:?}; log {}",
            usage_percent(&root),
            node.path().join("bosun.log").display()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let after = usage_percent(&root);
    eprintln!(
        "after {:?}: usage {after}%, fill images left {left:?}",
        started.elapsed()
    );
    // Down to the low threshold, not to nothing: the collection stops once the reported sizes
    // removed reach the amount, and usage is under the high threshold after it.
    assert_eq!(left.len(), 2, "fill images left: {left:?}");
    assert!(after <= low, "usage {after}% over the low threshold {low}%");
    let kept = [
        env.busybox_image().to_string(),
        env.pause_image().to_string(),
    ];
    assert_eq!(
        held(&cri, &kept).await.len(),
        2,
        "the running pod's image or the pause image was removed"
    );
    let p = api.get(&name).await.expect("pod");
    assert_eq!(bosun_tests::pod::phase(&p), "Running");
    let _ = api.delete(&name, &Default::default()).await;
}

#[tokio::test]
async fn a_chatty_container_keeps_at_most_max_files_logs_older_ones_gzipped() {
    let started = Instant::now();
    let opts = NodeOptions {
        // The kubelet's minimum interval, so that the test sees several rotations quickly.
        extra_config: "containerLogMaxSize: 1Mi\ncontainerLogMaxFiles: 3\n\
                       containerLogMonitorInterval: 3s\n"
            .into(),
        ..Default::default()
    };
    let node = ClusterNode::with_options("gc-logs", &opts);
    let _bosun = node.start();
    let api: Api<Pod> = Api::namespaced(admin_client().await, "default");
    let name = format!("{}-chatty", node.name);
    // About 1 MB of 100-character lines a second.
    let pod = PodBuilder::new(&name)
        .node(&node.name)
        .restart_policy("Always")
        .grace(1)
        .container(Container::sh(
            "chatty",
            "while true; do head -c 1000000 /dev/zero | tr '\\0' x | fold -w 100; sleep 1; done",
        ))
        .build();
    create(&api, &pod).await;
    let uid = bosun_tests::pod::running_uid(&api, &name, 60).await;
    let log_dir = node
        .path()
        .join("pods")
        .join(format!("default_{name}_{uid}"))
        .join("chatty");
    // Every look: at most 3 files (the live log, the newest rotated one, one gzipped); until
    // three rotations were seen.
    let mut rotated = std::collections::BTreeSet::new();
    let deadline = Instant::now() + Duration::from_secs(90);
    let files = loop {
        let files = files_under(&log_dir);
        assert!(files.len() <= 3, "more than 3 log files: {files:?}");
        for f in &files {
            let n = f.file_name().unwrap().to_string_lossy().into_owned();
            if n != "0.log" {
                rotated.insert(n.trim_end_matches(".gz").to_string());
            }
        }
        let gz = files.iter().any(|f| f.to_string_lossy().ends_with(".gz"));
        if rotated.len() >= 3 && gz && files.len() == 3 {
            break files;
        }
        assert!(
            Instant::now() < deadline,
            "rotations seen {rotated:?}; files now {files:?}; log {}",
            node.path().join("bosun.log").display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!(
        "after {:?}: {} rotations seen, files {files:?}",
        started.elapsed(),
        rotated.len()
    );
    // The live log, the newest rotated one as is, the older one gzipped (CRI log lines inside).
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names[0], "0.log", "{names:?}");
    assert!(
        names[1].starts_with("0.log.") && names[1].ends_with(".gz"),
        "{names:?}"
    );
    assert!(
        names[2].starts_with("0.log.") && !names[2].ends_with(".gz"),
        "{names:?}"
    );
    let out = std::process::Command::new("gzip")
        .arg("-dc")
        .arg(&files[1])
        .output()
        .expect("run gzip");
    assert!(out.status.success(), "gzip -dc {}", files[1].display());
    let first = String::from_utf8_lossy(&out.stdout);
    let first = first.lines().next().unwrap_or_default();
    assert!(
        first.contains(" stdout F ") && first.ends_with(&"x".repeat(100)),
        "first line of {}: {first:?}",
        files[1].display()
    );
    // The container kept writing through the rotations.
    let p = api.get(&name).await.expect("pod");
    let st = container_status(&p, "chatty").expect("status");
    assert_eq!(st.restart_count, 0, "{st:?}");
    let _ = api.delete(&name, &Default::default()).await;
}

/// A pod deleted from the API while bosun was down (killed): once bosun is back, the pod's
/// containers are removed and, as the kubelet's cleanupOrphanedPodDirs does during
/// housekeeping, its directory under the root dir goes with its volumes (an emptyDir holding a
/// file, a memory-backed emptyDir mounted as tmpfs, the token volume); nothing stays mounted.
#[tokio::test]
async fn the_directory_of_a_pod_deleted_while_bosun_was_down_is_removed_once_back() {
    let node = ClusterNode::new("gc-orphan-dir");
    let mut bosun = node.start();
    let client = admin_client().await;
    let api: Api<Pod> = Api::namespaced(client.clone(), "default");
    let name = format!("{}-p", node.name);
    let pod = PodBuilder::new(&name)
        .node(&node.name)
        .grace(1)
        .service_account_token()
        .empty_dir("data")
        .volume(serde_json::json!({"name": "mem", "emptyDir": {"medium": "Memory"}}))
        .container(
            Container::sh(
                "main",
                "echo kept > /data/f; echo kept > /mem/f; exec sleep 3600",
            )
            .mount("data", "/data")
            .mount("mem", "/mem"),
        )
        .build();
    create(&api, &pod).await;
    let uid = bosun_tests::pod::running_uid(&api, &name, 120).await;
    let dir = node.path().join("root/pods").join(&uid);
    assert!(dir.is_dir(), "the pod directory {}", dir.display());
    assert!(
        !mounts_under(&dir).is_empty(),
        "the memory-backed emptyDir is a mount under {}",
        dir.display()
    );

    bosun.kill();
    api.delete(
        &name,
        &kube::api::DeleteParams {
            grace_period_seconds: Some(0),
            ..Default::default()
        },
    )
    .await
    .expect("force delete");
    bosun_tests::wait_until_async(
        "the pod gone from the API",
        Duration::from_secs(30),
        || async { matches!(api.get_opt(&name).await, Ok(None)).then_some(()) },
    )
    .await;
    let bosun = node.start();
    bosun_tests::wait_until_async(
        "the deleted pod's containers, directory and mounts gone",
        Duration::from_secs(90),
        || async {
            let left = node.containers_of(&uid).await;
            (left.is_empty() && !dir.exists() && mounts_under(&dir).is_empty()).then_some(())
        },
    )
    .await;
    drop(bosun);
}
