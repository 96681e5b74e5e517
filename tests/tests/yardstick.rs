//! The yardstick: the upstream kubelet joins the test control plane, runs a
//! busybox pod from the local registry to Running on a containerd of its
//! own, and the pod is deleted and disappears.
//!
//! This is the proof that the environment is a real cluster and the reference
//! every Bosun test and benchmark is compared with. It drives
//! `tests/cluster/kubelet-smoke` (which people can run by hand as well).

use std::process::Command;

use bosun_tests::env::env_dir;
use bosun_tests::{Containerd, Env, repo_root};

#[test]
fn upstream_kubelet_runs_a_pod() {
    let env = Env::cluster();
    // Own node name per run, and its own containerd: a kubelet kills pods on
    // its runtime that it does not know, so nodes never share one.
    let name = format!("yardstick-{}", std::process::id());
    let containerd = Containerd::start(&name);

    let out = Command::new(repo_root().join("tests/cluster/kubelet-smoke"))
        .arg(&name)
        .env("BOSUN_ENV_DIR", env_dir())
        .env("SMOKE_RUNTIME_ENDPOINT", containerd.endpoint())
        .output()
        .expect("cannot run tests/cluster/kubelet-smoke");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");

    assert!(
        out.status.success(),
        "kubelet-smoke failed ({}):\n{stderr}",
        out.status
    );
    let version = env.var("KUBE_VERSION");
    assert!(
        stdout.contains(&format!(
            "kubelet Kubernetes {version} started as node {name}"
        )),
        "not the upstream kubelet {version}:\n{stdout}"
    );
    assert!(
        stdout.contains(&format!("node {name} Ready after")),
        "node never reported Ready:\n{stdout}"
    );
    assert!(
        stdout.contains("/busybox Running after"),
        "pod never reported Running:\n{stdout}"
    );
    assert!(
        stdout.contains("/busybox deleted and gone after"),
        "pod never disappeared:\n{stdout}"
    );
    assert!(stdout.contains("SMOKE OK"), "no SMOKE OK line:\n{stdout}");
}
