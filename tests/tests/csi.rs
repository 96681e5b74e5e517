//! Persistent storage through CSI on a Bosun node, with a real CSI driver process
//! (src/bin/csi-driver.rs: the CSI spec's Identity and Node services on a unix socket, backed by
//! real directories, bind mounts for stage and publish) that registers through
//! `<root>/plugins_registry/` like any driver: registration shows in the CSINode and goes with
//! the driver; a statically provisioned PV bound to a claim keeps a pod's data across pods;
//! nothing stays mounted after a pod is deleted; inline and generic ephemeral volumes live and
//! die with their pod; their usage is in /stats/summary from the driver's NodeGetVolumeStats;
//! pods wait with the kubelet's FailedMount texts while a claim is unbound or the driver is not
//! registered. The claimed-volume story runs side by side on the upstream kubelet with the same
//! facts. Bosun SIGKILLed while the driver is inside NodeStageVolume or NodePublishVolume (the
//! driver's hang knobs) and started again finishes the pod, or tears down the volume of a pod
//! deleted meanwhile, leaving no stale mount.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use bosun_tests::pod::{Container, PodBuilder, container_output, create, delete_and_wait_gone};
use bosun_tests::{
    Agent, BosunNode, ClusterNode, KubeletClient, admin_client, mounts_below, wait_until,
    wait_until_async,
};
use k8s_openapi::api::core::v1::{Event, Node, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

/// The test driver running for one node, killed on drop.
struct Driver {
    state: PathBuf,
    child: Child,
}

impl Driver {
    /// Starts the driver `name` for `node` (its registration socket in the node's root dir).
    fn start(node: &ClusterNode, name: &str) -> Driver {
        let state = node.path().join("csi-driver");
        std::fs::create_dir_all(&state).expect("mkdir driver state");
        let log = std::fs::File::create(state.join("driver.log")).expect("driver log");
        let child = Command::new(env!("CARGO_BIN_EXE_csi-driver"))
            .args(["--name", name, "--node-id", &node.name])
            .arg("--root-dir")
            .arg(node.path().join("root"))
            .arg("--state-dir")
            .arg(&state)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the CSI driver");
        Driver { state, child }
    }

    /// The calls the driver has served, one line each.
    fn calls(&self) -> Vec<String> {
        std::fs::read_to_string(self.state.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The lines of calls of `rpc`.
    fn calls_of(&self, rpc: &str) -> Vec<String> {
        let prefix = format!("{rpc} ");
        self.calls()
            .into_iter()
            .filter(|l| l.starts_with(&prefix))
            .collect()
    }

    /// Stops the driver with SIGTERM (it removes its sockets) and waits for it.
    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Cluster-scoped objects of one test, deleted on drop (kubectl, so a failing test cleans up).
struct Cleanup(Vec<(&'static str, String)>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for (kind, name) in self.0.iter().rev() {
            let _ = std::panic::catch_unwind(|| {
                bosun_tests::kubectl(&["delete", kind, name, "--ignore-not-found", "--wait=false"])
            });
        }
    }
}

/// The CSIDriver object of the test driver: no attach, pod info on mount, both lifecycle modes.
async fn create_csidriver(client: &kube::Client, name: &str) {
    create_csidriver_with(client, name, false).await
}

/// The CSIDriver object of the test driver, with `attach` for attachRequired.
async fn create_csidriver_with(client: &kube::Client, name: &str, attach: bool) {
    let d: CSIDriver = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "attachRequired": attach,
            "podInfoOnMount": true,
            "volumeLifecycleModes": ["Persistent", "Ephemeral"],
        },
    }))
    .unwrap();
    Api::<CSIDriver>::all(client.clone())
        .create(&PostParams::default(), &d)
        .await
        .expect("create CSIDriver");
}

/// A PV of the test driver with handle `handle`, pre-bound to claim `default/claim`.
async fn create_pv(client: &kube::Client, name: &str, driver: &str, handle: &str, claim: &str) {
    let pv: PersistentVolume = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "capacity": {"storage": "1Gi"},
            "accessModes": ["ReadWriteOnce"],
            "persistentVolumeReclaimPolicy": "Retain",
            "storageClassName": "",
            "claimRef": {"namespace": "default", "name": claim},
            "csi": {"driver": driver, "volumeHandle": handle, "volumeAttributes": {"kind": "dir"}},
        },
    }))
    .unwrap();
    Api::<PersistentVolume>::all(client.clone())
        .create(&PostParams::default(), &pv)
        .await
        .expect("create PV");
}

/// A claim in `default` for PV `pv`.
async fn create_pvc(client: &kube::Client, name: &str, pv: &str) {
    let pvc: PersistentVolumeClaim = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "volumeName": pv,
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }))
    .unwrap();
    Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default")
        .create(&PostParams::default(), &pvc)
        .await
        .expect("create PVC");
}

async fn wait_bound(client: &kube::Client, claim: &str) {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    wait_until_async(
        &format!("claim {claim} Bound"),
        Duration::from_secs(60),
        || async {
            let c = api.get_opt(claim).await.ok()??;
            (c.status?.phase.as_deref() == Some("Bound")).then_some(())
        },
    )
    .await;
}

/// Waits for a FailedMount event of pod `pod` whose message contains `text`; returns it.
async fn wait_failed_mount(client: &kube::Client, pod: &str, text: &str) -> String {
    let api: Api<Event> = Api::namespaced(client.clone(), "default");
    let lp = ListParams::default().fields(&format!("involvedObject.name={pod}"));
    wait_until_async(
        &format!("FailedMount event of {pod} with {text:?}"),
        Duration::from_secs(60),
        || async {
            let list = api.list(&lp).await.ok()?;
            list.items.into_iter().find_map(|e| {
                let msg = e.message.unwrap_or_default();
                (e.reason.as_deref() == Some("FailedMount") && msg.contains(text)).then_some(msg)
            })
        },
    )
    .await
}

/// This node's CSINode entry of `driver`, when there is one.
async fn csinode_driver(
    client: &kube::Client,
    node: &str,
    driver: &str,
) -> Option<k8s_openapi::api::storage::v1::CSINodeDriver> {
    let api: Api<CSINode> = Api::all(client.clone());
    let n = api.get_opt(node).await.ok()??;
    n.spec.drivers.into_iter().find(|d| d.name == driver)
}

/// Whether `root` is a mount point in a shared peer group (the kubelet's MakeRShared: this
/// machine's `/` is a private mount, so the agent bind-mounts its root dir rshared).
fn root_is_a_shared_mount(root: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.get(4).is_some_and(|m| Path::new(m) == root)
            && f.iter()
                .take_while(|x| **x != "-")
                .any(|x| x.starts_with("shared:"))
    })
}

fn sha256_hex(s: &str) -> String {
    let out = Command::new("sha256sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            c.stdin.take().unwrap().write_all(s.as_bytes())?;
            c.wait_with_output()
        })
        .expect("sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split(' ')
        .next()
        .unwrap_or_default()
        .to_string()
}

/// Pod `pod`'s entry of volume `volume` in the node's /stats/summary, once there.
async fn volume_in_summary(kubelet: &KubeletClient, pod: &str, volume: &str) -> serde_json::Value {
    wait_until_async(
        &format!("volume {volume} of pod {pod} in /stats/summary"),
        Duration::from_secs(90),
        || async {
            let s = kubelet.get("/stats/summary").await.ok()?.json();
            let p = s["pods"]
                .as_array()?
                .iter()
                .find(|p| p["podRef"]["name"] == pod)?
                .clone();
            p["volume"]
                .as_array()?
                .iter()
                .find(|v| v["name"] == volume)
                .cloned()
        },
    )
    .await
}

fn pod_with_claim(node: &ClusterNode, name: &str, claim: &str, script: &str) -> PodBuilder {
    PodBuilder::new(name)
        .node(&node.name)
        .grace(1)
        .container(Container::sh("app", script).mount("data", "/data"))
        .volume(json!({"name": "data", "persistentVolumeClaim": {"claimName": claim}}))
}

/// A pod with a claim waits (FailedMount, the kubelet's texts) while the claim is unbound and
/// while the driver is not registered; then the driver registers (CSINode entry), the volume is
/// staged and published at the kubelet's paths with its vol_data.json, the pod writes to it;
/// deleted, its volume is unpublished and unstaged with nothing left mounted; a second pod on
/// the node reads the data the first wrote; the driver stopped, its CSINode entry goes.
#[tokio::test(flavor = "multi_thread")]
async fn a_claimed_volume_keeps_its_data_across_pods() {
    let t = BosunNode::start("csi-pv").await;
    let node = &t.node;
    let client = &t.client;
    let driver_name = format!("{}.csi.bosun.test", node.name);
    let (pv, claim, handle) = (
        format!("pv-{}", node.name),
        format!("claim-{}", node.name),
        format!("vol-{}", node.name),
    );
    let _cleanup = Cleanup(vec![
        ("csidriver", driver_name.clone()),
        ("pv", pv.clone()),
        ("pvc", claim.clone()),
    ]);
    create_csidriver(client, &driver_name).await;
    create_pvc(client, &claim, &pv).await;

    let writer = format!("writer-{}", node.name);
    // The claim mounted whole at /data and, through subPath "dir", at /sub.
    let pod = PodBuilder::new(&writer)
        .node(&node.name)
        .grace(1)
        .container(
            Container::sh(
                "app",
                "echo persisted > /data/f && echo below > /sub/g && sleep 3600",
            )
            .with(
                "volumeMounts",
                json!([
                    {"name": "data", "mountPath": "/data"},
                    {"name": "data", "mountPath": "/sub", "subPath": "dir"},
                ]),
            ),
        )
        .volume(json!({"name": "data", "persistentVolumeClaim": {"claimName": claim}}));
    create(&t.pods, &pod.build()).await;
    let msg = wait_failed_mount(client, &writer, "PVC is not bound").await;
    assert_eq!(
        msg,
        format!(
            "Unable to attach or mount volumes: unmounted volumes=[data], unattached volumes=[], failed to process volumes=[data]: error processing PVC default/{claim}: PVC is not bound"
        )
    );

    create_pv(client, &pv, &driver_name, &handle, &claim).await;
    wait_bound(client, &claim).await;
    let msg = wait_failed_mount(client, &writer, "not found in the list of registered").await;
    assert_eq!(
        msg,
        format!(
            "MountVolume.MountDevice failed for volume \"{pv}\" : kubernetes.io/csi: attacher.MountDevice failed to create newCsiDriverClient: driver name {driver_name} not found in the list of registered CSI drivers"
        )
    );

    let mut driver = Driver::start(node, &driver_name);
    let entry = wait_until_async("the driver in the CSINode", Duration::from_secs(30), || {
        csinode_driver(client, &node.name, &driver_name)
    })
    .await;
    assert_eq!(entry.node_id, node.name);
    assert_eq!(
        entry.topology_keys,
        Some(vec!["topology.csi.bosun.test/node".to_string()])
    );
    assert_eq!(entry.allocatable.and_then(|a| a.count), Some(10));
    // On the Node: the driver's node ID in the kubelet's annotation, its topology as a label.
    let nodes: Api<Node> = Api::all(client.clone());
    let n = nodes.get(&node.name).await.expect("node");
    let annotations = n.metadata.annotations.unwrap_or_default();
    let ids = annotations
        .get("csi.volume.kubernetes.io/nodeid")
        .expect("the nodeid annotation");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(ids).expect("JSON"),
        json!({ driver_name.as_str(): node.name.as_str() })
    );
    assert_eq!(
        n.metadata
            .labels
            .unwrap_or_default()
            .get("topology.csi.bosun.test/node"),
        Some(&node.name)
    );
    // The driver hears of its registration once the CSINode has it.
    wait_until_async("registration notified", Duration::from_secs(10), || async {
        let notified = "NotifyRegistrationStatus registered=true error=\"\"";
        driver.calls().iter().any(|l| l == notified).then_some(())
    })
    .await;

    let uid = bosun_tests::pod::running_uid(&t.pods, &writer, 90).await;
    let root = node.path().join("root");
    let global = root
        .join("plugins/kubernetes.io/csi")
        .join(&driver_name)
        .join(sha256_hex(&handle));
    let target = root
        .join("pods")
        .join(&uid)
        .join("volumes/kubernetes.io~csi")
        .join(&pv)
        .join("mount");
    assert_eq!(
        driver.calls_of("NodeStageVolume"),
        [format!(
            "NodeStageVolume {handle} {}",
            global.join("globalmount").display()
        )]
    );
    assert_eq!(
        driver.calls_of("NodePublishVolume"),
        [format!(
            "NodePublishVolume {handle} {} readonly=false ephemeral=false",
            target.display()
        )]
    );
    let vol_data: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(target.parent().unwrap().join("vol_data.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(vol_data["specVolID"], pv.as_str());
    assert_eq!(vol_data["volumeHandle"], handle.as_str());
    assert_eq!(vol_data["driverName"], driver_name.as_str());
    assert_eq!(vol_data["volumeLifecycleMode"], "Persistent");
    let written = driver.state.join("volumes").join(&handle).join("f");
    wait_until_async(
        "the pod's write in the volume",
        Duration::from_secs(30),
        || async { (std::fs::read_to_string(&written).ok()? == "persisted\n").then_some(()) },
    )
    .await;
    let below = driver.state.join("volumes").join(&handle).join("dir/g");
    assert_eq!(
        std::fs::read_to_string(&below).ok().as_deref(),
        Some("below\n"),
        "the write through the subPath"
    );

    // The volume in /stats/summary as the kubelet reports it: the pod's volume name, the claim,
    // the driver's figures for the publish path (statvfs of the volume's directory).
    let kubelet = node.admin_kubelet();
    let v = volume_in_summary(&kubelet, &writer, "data").await;
    assert_eq!(
        v["pvcRef"],
        json!({"name": claim.as_str(), "namespace": "default"}),
        "{v}"
    );
    let fs = nix::sys::statvfs::statvfs(&driver.state.join("volumes").join(&handle))
        .expect("statvfs of the volume");
    let capacity = fs.blocks() as u64 * fs.fragment_size() as u64;
    assert_eq!(v["capacityBytes"], capacity, "{v}");
    let figure = |k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    let (available, used) = (figure("availableBytes"), figure("usedBytes"));
    assert!(
        available > 0 && used > 0 && available + used <= capacity,
        "{v}"
    );
    assert!(figure("inodes") > 0 && figure("inodesUsed") > 0, "{v}");
    assert!(v["time"].is_string(), "{v}");
    let asked = driver.calls_of("NodeGetVolumeStats");
    assert_eq!(
        asked.first(),
        Some(&format!("NodeGetVolumeStats {handle} {}", target.display()))
    );
    // Scrapes read the latest figures: the driver is asked once per volumeStatsAggPeriod (1m).
    for _ in 0..5 {
        let a = kubelet.get("/stats/summary").await.expect("scrape");
        assert_eq!(a.status, 200);
    }
    let asked_after = driver.calls_of("NodeGetVolumeStats").len();
    assert!(asked_after <= asked.len() + 1, "{asked_after} calls");

    delete_and_wait_gone(&t.pods, &[&writer], 60).await;
    assert_eq!(
        driver.calls_of("NodeUnpublishVolume"),
        [format!("NodeUnpublishVolume {handle} {}", target.display())]
    );
    assert_eq!(
        driver.calls_of("NodeUnstageVolume"),
        [format!(
            "NodeUnstageVolume {handle} {}",
            global.join("globalmount").display()
        )]
    );
    assert_eq!(mounts_below(&root), Vec::<String>::new(), "left mounted");
    assert!(!root.join("pods").join(&uid).exists(), "pod dir removed");
    assert!(!global.exists(), "global mount dir removed");

    let reader = format!("reader-{}", node.name);
    let pod = pod_with_claim(node, &reader, &claim, "cat /data/f; sleep 3600");
    create(&t.pods, &pod.build()).await;
    let uid = bosun_tests::pod::running_uid(&t.pods, &reader, 90).await;
    let logs = node.path().join("pods");
    wait_until_async("the reader's output", Duration::from_secs(30), || async {
        container_output(&logs, "default", &reader, &uid, "app")
            .contains("persisted")
            .then_some(())
    })
    .await;
    delete_and_wait_gone(&t.pods, &[&reader], 60).await;
    assert_eq!(driver.calls_of("NodeUnstageVolume").len(), 2);
    assert_eq!(mounts_below(&root), Vec::<String>::new(), "left mounted");

    driver.stop();
    wait_until_async(
        "the driver gone from the CSINode",
        Duration::from_secs(30),
        || async {
            csinode_driver(client, &node.name, &driver_name)
                .await
                .is_none()
                .then_some(())
        },
    )
    .await;
    let n = nodes.get(&node.name).await.expect("node");
    assert_eq!(
        n.metadata
            .annotations
            .unwrap_or_default()
            .get("csi.volume.kubernetes.io/nodeid"),
        None,
        "the driver's node ID stays on the Node after it went"
    );
    let _ = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default")
        .delete(&claim, &DeleteParams::default())
        .await;
    t.finish();
}

/// An inline CSI volume and a generic ephemeral volume (the claim the ephemeral volume
/// controller creates, bound here to a PV the test provisions) are published for their pod
/// (the inline one unstaged, with the pod's info in its context) and unpublished when it goes.
#[tokio::test(flavor = "multi_thread")]
async fn ephemeral_volumes_live_and_die_with_their_pod() {
    let t = BosunNode::start("csi-eph").await;
    let node = &t.node;
    let client = &t.client;
    let driver_name = format!("{}.csi.bosun.test", node.name);
    let pod_name = format!("eph-{}", node.name);
    let claim = format!("{pod_name}-scratch");
    let pv = format!("pv-{}", node.name);
    let handle = format!("vol-{}", node.name);
    let _cleanup = Cleanup(vec![("csidriver", driver_name.clone()), ("pv", pv.clone())]);
    create_csidriver(client, &driver_name).await;
    let driver = Driver::start(node, &driver_name);
    wait_until_async("the driver in the CSINode", Duration::from_secs(30), || {
        csinode_driver(client, &node.name, &driver_name)
    })
    .await;
    create_pv(client, &pv, &driver_name, &handle, &claim).await;

    let pod = PodBuilder::new(&pod_name)
        .node(&node.name)
        .grace(1)
        .container(
            Container::sh("app", "echo a > /inline/f && echo b > /scratch/f && sleep 3600")
                .mount("inline", "/inline")
                .mount("scratch", "/scratch"),
        )
        .volume(json!({"name": "inline", "csi": {"driver": driver_name, "volumeAttributes": {"size": "small"}}}))
        .volume(json!({"name": "scratch", "ephemeral": {"volumeClaimTemplate": {"spec": {
            "accessModes": ["ReadWriteOnce"],
            "storageClassName": "",
            "resources": {"requests": {"storage": "1Gi"}},
        }}}}));
    create(&t.pods, &pod.build()).await;
    let uid = bosun_tests::pod::running_uid(&t.pods, &pod_name, 120).await;
    let root = node.path().join("root");
    let csi_dir = root
        .join("pods")
        .join(&uid)
        .join("volumes/kubernetes.io~csi");
    let inline_handle = format!("csi-{}", sha256_hex(&format!("{uid}inline")));
    let publishes = driver.calls_of("NodePublishVolume");
    assert!(
        publishes.contains(&format!(
            "NodePublishVolume {inline_handle} {} readonly=false ephemeral=true",
            csi_dir.join("inline/mount").display()
        )),
        "{publishes:?}"
    );
    assert!(
        publishes.contains(&format!(
            "NodePublishVolume {handle} {} readonly=false ephemeral=false",
            csi_dir.join(&pv).join("mount").display()
        )),
        "{publishes:?}"
    );
    // The inline volume is never staged; the claimed one is.
    assert_eq!(driver.calls_of("NodeStageVolume").len(), 1);
    let volumes = driver.state.join("volumes");
    wait_until_async("both writes", Duration::from_secs(30), || async {
        let a = std::fs::read_to_string(volumes.join(&inline_handle).join("f")).ok()?;
        let b = std::fs::read_to_string(volumes.join(&handle).join("f")).ok()?;
        (a == "a\n" && b == "b\n").then_some(())
    })
    .await;

    // Both in /stats/summary: the generic ephemeral one with its claim, the inline one without.
    let kubelet = node.admin_kubelet();
    let scratch = volume_in_summary(&kubelet, &pod_name, "scratch").await;
    assert_eq!(
        scratch["pvcRef"],
        json!({"name": claim.as_str(), "namespace": "default"})
    );
    let inline = volume_in_summary(&kubelet, &pod_name, "inline").await;
    assert!(inline.get("pvcRef").is_none(), "{inline}");
    assert!(inline["capacityBytes"].as_u64() > Some(0), "{inline}");

    delete_and_wait_gone(&t.pods, &[&pod_name], 60).await;
    assert_eq!(driver.calls_of("NodeUnpublishVolume").len(), 2);
    assert_eq!(driver.calls_of("NodeUnstageVolume").len(), 1);
    assert_eq!(mounts_below(&root), Vec::<String>::new(), "left mounted");
    t.finish();
}

/// Bosun stopped while a pod with a claimed volume runs, the pod deleted meanwhile: started
/// again, Bosun finds the volume from its vol_data.json on disk, unpublishes and unstages it
/// once the driver has registered again, and leaves nothing mounted.
#[tokio::test(flavor = "multi_thread")]
async fn volumes_of_a_pod_deleted_while_bosun_was_down_are_torn_down() {
    let mut t = BosunNode::start("csi-restart").await;
    let client = t.client.clone();
    let name = t.node.name.clone();
    let driver_name = format!("{name}.csi.bosun.test");
    let (pv, claim, handle) = (
        format!("pv-{name}"),
        format!("claim-{name}"),
        format!("vol-{name}"),
    );
    let _cleanup = Cleanup(vec![
        ("csidriver", driver_name.clone()),
        ("pv", pv.clone()),
        ("pvc", claim.clone()),
    ]);
    create_csidriver(&client, &driver_name).await;
    create_pv(&client, &pv, &driver_name, &handle, &claim).await;
    create_pvc(&client, &claim, &pv).await;
    let driver = Driver::start(&t.node, &driver_name);
    wait_bound(&client, &claim).await;
    let pod_name = format!("app-{name}");
    let pod = pod_with_claim(&t.node, &pod_name, &claim, "sleep 3600");
    create(&t.pods, &pod.build()).await;
    let uid = bosun_tests::pod::running_uid(&t.pods, &pod_name, 90).await;
    let root = t.node.path().join("root");
    assert_eq!(mounts_below(&root).len(), 2, "staged and published");

    let (_, code) = t.bosun.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    t.pods
        .delete(&pod_name, &DeleteParams::default())
        .await
        .expect("delete the pod");
    t.bosun = t.node.start();
    bosun_tests::pod::wait_gone(&t.pods, &[&pod_name], 90).await;
    assert_eq!(driver.calls_of("NodeUnpublishVolume").len(), 1);
    assert_eq!(driver.calls_of("NodeUnstageVolume").len(), 1);
    assert_eq!(mounts_below(&root), Vec::<String>::new(), "left mounted");
    assert!(!root.join("pods").join(&uid).exists(), "pod dir removed");
    let _ = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default")
        .delete(&claim, &DeleteParams::default())
        .await;
    t.finish();
}

/// With a CSIDriver that requires attach, the pod waits (FailedMount, WaitForAttach) until the
/// VolumeAttachment the attach/detach controller creates for it is attached (here the test plays
/// the external attacher and sets status.attached), then the volume is staged and published and
/// the Node's status.volumesInUse holds it until the pod is deleted.
#[tokio::test(flavor = "multi_thread")]
async fn a_volume_needing_attach_waits_for_its_volume_attachment() {
    use k8s_openapi::api::storage::v1::VolumeAttachment;
    use kube::api::{Patch, PatchParams};
    let t = BosunNode::start("csi-attach").await;
    let client = t.client.clone();
    let name = t.node.name.clone();
    let driver_name = format!("{name}.csi.bosun.test");
    let (pv, claim, handle) = (
        format!("pv-{name}"),
        format!("claim-{name}"),
        format!("vol-{name}"),
    );
    let attachment = format!(
        "csi-{}",
        sha256_hex(&format!("{handle}{driver_name}{name}"))
    );
    let _cleanup = Cleanup(vec![
        ("csidriver", driver_name.clone()),
        ("pv", pv.clone()),
        ("pvc", claim.clone()),
        ("volumeattachment", attachment.clone()),
    ]);
    create_csidriver_with(&client, &driver_name, true).await;
    create_pv(&client, &pv, &driver_name, &handle, &claim).await;
    create_pvc(&client, &claim, &pv).await;
    let driver = Driver::start(&t.node, &driver_name);
    wait_until_async("the driver in the CSINode", Duration::from_secs(30), || {
        csinode_driver(&client, &name, &driver_name)
    })
    .await;
    wait_bound(&client, &claim).await;
    let pod_name = format!("app-{name}");
    let pod = pod_with_claim(&t.node, &pod_name, &claim, "sleep 3600");
    create(&t.pods, &pod.build()).await;
    let msg = wait_failed_mount(&client, &pod_name, "MountVolume.WaitForAttach failed").await;
    assert!(
        msg.starts_with(&format!(
            "MountVolume.WaitForAttach failed for volume \"{pv}\" : "
        )),
        "{msg}"
    );
    assert!(driver.calls_of("NodeStageVolume").is_empty());
    // While it waits to be attached, the node already reports the volume in use (the kubelet's
    // desired state: the attach/detach controller must not detach a volume being mounted).
    let unique = format!("kubernetes.io/csi/{driver_name}^{handle}");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let in_use = || async {
        let n = nodes.get(&name).await.ok()?;
        Some(n.status?.volumes_in_use.unwrap_or_default())
    };
    assert_eq!(in_use().await, Some(vec![unique.clone()]));

    let api: Api<VolumeAttachment> = Api::all(client.clone());
    wait_until_async(
        "the controller's VolumeAttachment",
        Duration::from_secs(60),
        || async { api.get_opt(&attachment).await.ok()?.map(|_| ()) },
    )
    .await;
    let status = json!({"status": {"attached": true, "attachmentMetadata": {"device": "test"}}});
    api.patch_status(&attachment, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("mark the volume attached");
    bosun_tests::pod::running_uid(&t.pods, &pod_name, 60).await;
    assert_eq!(driver.calls_of("NodeStageVolume").len(), 1);
    // Mounted only once the attach/detach controller listed it attached on the node.
    let n = nodes.get(&name).await.expect("node");
    let attached: Vec<String> = n
        .status
        .and_then(|s| s.volumes_attached)
        .unwrap_or_default()
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(attached, std::slice::from_ref(&unique));
    // The node reports the mounted volume in use (the attach/detach controller detaches only
    // once it is gone), by the kubelet's unique name, until the pod and its mounts are gone.
    wait_until_async("the volume in use", Duration::from_secs(60), || async {
        (in_use().await? == [unique.clone()]).then_some(())
    })
    .await;
    delete_and_wait_gone(&t.pods, &[&pod_name], 60).await;
    assert_eq!(driver.calls_of("NodeUnstageVolume").len(), 1);
    wait_until_async(
        "the volume no longer in use",
        Duration::from_secs(60),
        || async { in_use().await?.is_empty().then_some(()) },
    )
    .await;
    let _ = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default")
        .delete(&claim, &DeleteParams::default())
        .await;
    t.finish();
}

/// Online expansion: with the pod running on its claim, the test plays the external resizer
/// (the PV grown to 2Gi, the claim's allocatedResources 2Gi and NodeResizePending, its
/// FileSystemResizePending condition); Bosun calls the driver's NodeExpandVolume on the
/// published volume with the new size and its staging path, the claim's status capacity becomes
/// 2Gi with the resize state cleared, and the pod and the claim get the kubelet's
/// FileSystemResizeSuccess event.
#[tokio::test(flavor = "multi_thread")]
async fn a_resized_claim_is_grown_on_the_node() {
    let opts = bosun_tests::NodeOptions {
        extra_config: "syncFrequency: 10s\n".into(),
        ..Default::default()
    };
    let t = BosunNode::start_with("csi-grow", &opts).await;
    let node = &t.node;
    let client = &t.client;
    let driver_name = format!("{}.csi.bosun.test", node.name);
    let (pv, claim, handle) = (
        format!("pv-{}", node.name),
        format!("claim-{}", node.name),
        format!("vol-{}", node.name),
    );
    let _cleanup = Cleanup(vec![
        ("csidriver", driver_name.clone()),
        ("pv", pv.clone()),
        ("pvc", claim.clone()),
    ]);
    create_csidriver(client, &driver_name).await;
    create_pv(client, &pv, &driver_name, &handle, &claim).await;
    create_pvc(client, &claim, &pv).await;
    wait_bound(client, &claim).await;
    let driver = Driver::start(node, &driver_name);
    let pod_name = format!("grow-{}", node.name);
    let pod = pod_with_claim(node, &pod_name, &claim, "sleep 3600");
    create(&t.pods, &pod.build()).await;
    let uid = bosun_tests::pod::running_uid(&t.pods, &pod_name, 90).await;
    // A second pod with the claim readOnly: published read-only, its writes refused, and left
    // alone by the expansion (the kubelet grows no read-only volume).
    let ro_name = format!("ro-{}", node.name);
    let ro = PodBuilder::new(&ro_name)
        .node(&node.name)
        .grace(1)
        .container(
            Container::sh(
                "app",
                "(touch /data/ro 2>/dev/null && echo writable) || echo read-only; sleep 3600",
            )
            .mount("data", "/data"),
        )
        .volume(json!({"name": "data", "persistentVolumeClaim": {"claimName": claim, "readOnly": true}}));
    create(&t.pods, &ro.build()).await;
    let ro_uid = bosun_tests::pod::running_uid(&t.pods, &ro_name, 90).await;
    let ro_target = node
        .path()
        .join("root/pods")
        .join(&ro_uid)
        .join("volumes/kubernetes.io~csi")
        .join(&pv)
        .join("mount");
    assert!(
        driver.calls_of("NodePublishVolume").contains(&format!(
            "NodePublishVolume {handle} {} readonly=true ephemeral=false",
            ro_target.display()
        )),
        "{:?}",
        driver.calls_of("NodePublishVolume")
    );
    let logs = node.path().join("pods");
    let out = wait_until_async(
        "the read-only pod's write",
        Duration::from_secs(30),
        || async {
            let out = container_output(&logs, "default", &ro_name, &ro_uid, "app");
            (!out.is_empty()).then_some(out)
        },
    )
    .await;
    assert_eq!(out.trim(), "read-only");

    let pvs: Api<PersistentVolume> = Api::all(client.clone());
    let patch = json!({"spec": {"capacity": {"storage": "2Gi"}}});
    pvs.patch(&pv, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("grow the PV");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), "default");
    let patch = json!({"status": {
        "allocatedResources": {"storage": "2Gi"},
        "allocatedResourceStatuses": {"storage": "NodeResizePending"},
        "conditions": [{
            "type": "FileSystemResizePending", "status": "True",
            "message": "Waiting for user to (re-)start a pod to finish file system resize of volume on node.",
        }],
    }});
    claims
        .patch_status(&claim, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("mark the claim NodeResizePending");

    let root = node.path().join("root");
    let target = root
        .join("pods")
        .join(&uid)
        .join("volumes/kubernetes.io~csi")
        .join(&pv)
        .join("mount");
    let staging = root
        .join("plugins/kubernetes.io/csi")
        .join(&driver_name)
        .join(sha256_hex(&handle))
        .join("globalmount");
    let call = wait_until_async("NodeExpandVolume", Duration::from_secs(60), || async {
        driver.calls_of("NodeExpandVolume").into_iter().next()
    })
    .await;
    assert_eq!(
        call,
        format!(
            "NodeExpandVolume {handle} {} {} staging={}",
            target.display(),
            2u64 << 30,
            staging.display()
        )
    );
    let status = wait_until_async("the claim at 2Gi", Duration::from_secs(30), || async {
        let c = claims.get(&claim).await.ok()?;
        let s = c.status?;
        (s.capacity.as_ref()?.get("storage")?.0 == "2Gi").then_some(s)
    })
    .await;
    assert_eq!(status.allocated_resource_statuses, None, "{status:?}");
    assert!(
        status
            .conditions
            .iter()
            .flatten()
            .all(|c| c.type_ != "FileSystemResizePending"),
        "{status:?}"
    );
    let message = format!(
        "MountVolume.NodeExpandVolume succeeded for volume \"{pv}\" {}",
        node.name
    );
    for (kind, name) in [("Pod", &pod_name), ("PersistentVolumeClaim", &claim)] {
        let events: Api<Event> = Api::namespaced(client.clone(), "default");
        let lp = ListParams::default().fields(&format!(
            "involvedObject.kind={kind},involvedObject.name={name},reason=FileSystemResizeSuccess"
        ));
        let e = wait_until_async(
            &format!("FileSystemResizeSuccess on the {kind}"),
            Duration::from_secs(30),
            || async { api_first(&events, &lp).await },
        )
        .await;
        assert_eq!(e.message.as_deref(), Some(message.as_str()));
        assert_eq!(e.type_.as_deref(), Some("Normal"));
    }
    assert_eq!(driver.calls_of("NodeExpandVolume").len(), 1, "grown once");
    delete_and_wait_gone(&t.pods, &[&pod_name, &ro_name], 60).await;
    assert_eq!(mounts_below(&root), Vec::<String>::new(), "left mounted");
    t.finish();
}

/// The first event `lp` lists.
async fn api_first(events: &Api<Event>, lp: &ListParams) -> Option<Event> {
    events.list(lp).await.ok()?.items.into_iter().next()
}

/// Polls `done` every 100 ms for up to `timeout`; whether it became true (the caller records
/// what it finds either way, so a side-by-side test shows the difference rather than a timeout).
async fn settled(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while !done() {
        if std::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    true
}

/// A node's own names in a fact replaced by placeholders, so both agents' facts compare.
struct Masks(Vec<(String, &'static str)>);

impl Masks {
    fn apply(&self, s: &str) -> String {
        self.0
            .iter()
            .fold(s.to_string(), |s, (from, to)| s.replace(from.as_str(), to))
    }
}

/// The driver's stage and publish calls so far, one line each (stats calls left out: their
/// timing is each agent's own).
fn volume_calls(driver: &Driver, masks: &Masks) -> String {
    let rpcs = [
        "NodeStageVolume ",
        "NodePublishVolume ",
        "NodeUnpublishVolume ",
        "NodeUnstageVolume ",
    ];
    let lines: Vec<String> = driver
        .calls()
        .into_iter()
        .filter(|l| rpcs.iter().any(|r| l.starts_with(r)))
        .map(|l| masks.apply(&l))
        .collect();
    lines.join("; ")
}

/// The vol_data.json in `dir`, keys sorted.
fn vol_data(dir: &Path, masks: &Masks) -> String {
    let text = std::fs::read_to_string(dir.join("vol_data.json")).unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
    masks.apply(&v.to_string())
}

/// Where a side-by-side test looks for a claimed volume: its driver, the node's root dir and the
/// volume's global mount directory.
#[derive(Clone, Copy)]
struct Seen<'a> {
    driver: &'a Driver,
    root: &'a Path,
    global: &'a Path,
}

/// What a user sees once a pod using the claim is deleted on the node: the driver's calls, what
/// is still mounted under the root dir, whether the pod's and the volume's directories remain.
async fn after_delete(
    pods: &Api<k8s_openapi::api::core::v1::Pod>,
    pod: &str,
    uid: &str,
    unstages: usize,
    volume: &Seen<'_>,
    masks: &Masks,
) -> Vec<(String, String)> {
    let Seen {
        driver,
        root,
        global,
    } = *volume;
    delete_and_wait_gone(pods, &[pod], 90).await;
    let pod_dir = root.join("pods").join(uid);
    settled(Duration::from_secs(60), || {
        driver.calls_of("NodeUnstageVolume").len() >= unstages
            && mounts_below(root).is_empty()
            && !pod_dir.exists()
            && !global.exists()
    })
    .await;
    vec![
        (
            format!("{}: volume calls", masks.apply(pod)),
            volume_calls(driver, masks),
        ),
        (
            format!("{}: mounted under the root", masks.apply(pod)),
            format!("{:?}", mounts_below(root)),
        ),
        (
            format!("{}: pod dir left", masks.apply(pod)),
            pod_dir.exists().to_string(),
        ),
        (
            format!("{}: global dir left", masks.apply(pod)),
            global.exists().to_string(),
        ),
    ]
}

/// The claimed-volume story of `a_claimed_volume_keeps_its_data_across_pods` on a node run by
/// `agent`, as the facts a user checks: the FailedMount texts while the claim is unbound and
/// while the driver is not registered, the CSINode entry and the Node's annotation and label,
/// the registration calls, the stage/publish calls and their paths under the root dir, both
/// vol_data.json files, what is mounted, the teardown after a delete, and the second pod
/// reading what the first wrote. Names, root dir and UIDs masked.
async fn claimed_volume_facts(agent: Agent) -> Vec<(String, String)> {
    let client = admin_client().await;
    let (node, mut proc) = agent
        .on_new_node("csi-side", Default::default(), &client)
        .await;
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), "default");
    let name = node.name.clone();
    let driver_name = format!("{name}.csi.bosun.test");
    let (pv, claim, handle) = (
        format!("pv-{name}"),
        format!("claim-{name}"),
        format!("vol-{name}"),
    );
    let _cleanup = Cleanup(vec![
        ("csidriver", driver_name.clone()),
        ("pv", pv.clone()),
        ("pvc", claim.clone()),
    ]);
    let root = node.path().join("root");
    let global = root
        .join("plugins/kubernetes.io/csi")
        .join(&driver_name)
        .join(sha256_hex(&handle));
    let mut masks = Masks(vec![
        (root.display().to_string(), "ROOT"),
        (sha256_hex(&handle), "SHA"),
        (
            sha256_hex(&format!("{handle}{driver_name}{name}")),
            "ATTACHMENT",
        ),
        (name.clone(), "NODE"),
    ]);
    let mut facts = vec![(
        "root dir a shared mount".to_string(),
        root_is_a_shared_mount(&root).to_string(),
    )];
    create_csidriver(&client, &driver_name).await;
    create_pvc(&client, &claim, &pv).await;
    let writer = format!("{name}-w");
    let pod = pod_with_claim(
        &node,
        &writer,
        &claim,
        "echo persisted > /data/f && sleep 3600",
    );
    create(&pods, &pod.build()).await;
    let msg = wait_failed_mount(&client, &writer, "PVC is not bound").await;
    facts.push(("claim unbound".to_string(), masks.apply(&msg)));

    create_pv(&client, &pv, &driver_name, &handle, &claim).await;
    wait_bound(&client, &claim).await;
    let msg = wait_failed_mount(&client, &writer, "not found in the list of registered").await;
    facts.push(("driver not registered".into(), masks.apply(&msg)));

    let driver = Driver::start(&node, &driver_name);
    let entry = wait_until_async("the driver in the CSINode", Duration::from_secs(60), || {
        csinode_driver(&client, &name, &driver_name)
    })
    .await;
    facts.push((
        "CSINode entry".into(),
        masks.apply(&format!(
            "nodeID={} topologyKeys={:?} allocatable={:?}",
            entry.node_id,
            entry.topology_keys,
            entry.allocatable.and_then(|a| a.count)
        )),
    ));
    let n = Api::<Node>::all(client.clone())
        .get(&name)
        .await
        .expect("node");
    let meta = n.metadata;
    let annotation = meta
        .annotations
        .unwrap_or_default()
        .get("csi.volume.kubernetes.io/nodeid")
        .cloned()
        .unwrap_or_default();
    facts.push(("nodeid annotation".into(), masks.apply(&annotation)));
    let label = meta
        .labels
        .unwrap_or_default()
        .get("topology.csi.bosun.test/node")
        .cloned()
        .unwrap_or_default();
    facts.push(("topology label".into(), masks.apply(&label)));
    settled(Duration::from_secs(10), || {
        let notified = "NotifyRegistrationStatus registered=true error=\"\"";
        driver.calls().iter().any(|l| l == notified)
    })
    .await;
    let registration: Vec<String> = driver
        .calls()
        .into_iter()
        .filter(|l| !l.starts_with("Node") || l.starts_with("NodeGetInfo"))
        .collect();
    facts.push(("registration calls".into(), registration.join("; ")));

    let uid = bosun_tests::pod::running_uid(&pods, &writer, 120).await;
    masks.0.push((uid.clone(), "UID"));
    let written = driver.state.join("volumes").join(&handle).join("f");
    settled(Duration::from_secs(30), || {
        std::fs::read_to_string(&written).is_ok_and(|s| s == "persisted\n")
    })
    .await;
    facts.push((
        "the writer's data".into(),
        std::fs::read_to_string(&written).unwrap_or_default(),
    ));
    facts.push((
        "volume calls while the writer runs".into(),
        volume_calls(&driver, &masks),
    ));
    let vol_dir = root
        .join("pods")
        .join(&uid)
        .join("volumes/kubernetes.io~csi")
        .join(&pv);
    facts.push(("pod vol_data.json".into(), vol_data(&vol_dir, &masks)));
    facts.push(("global vol_data.json".into(), vol_data(&global, &masks)));
    let mut mounted: Vec<String> = mounts_below(&root).iter().map(|m| masks.apply(m)).collect();
    mounted.sort();
    facts.push(("mounted while the writer runs".into(), mounted.join(" ")));
    let seen = Seen {
        driver: &driver,
        root: &root,
        global: &global,
    };
    facts.extend(after_delete(&pods, &writer, &uid, 1, &seen, &masks).await);

    let reader = format!("{name}-r");
    let pod = pod_with_claim(&node, &reader, &claim, "cat /data/f; sleep 3600");
    create(&pods, &pod.build()).await;
    let uid = bosun_tests::pod::running_uid(&pods, &reader, 120).await;
    masks.0.push((uid.clone(), "UID2"));
    let logs = node.path().join("pods");
    let read = || container_output(&logs, "default", &reader, &uid, "app");
    settled(Duration::from_secs(30), || read().contains("persisted")).await;
    facts.push(("the reader reads".into(), read()));
    facts.extend(after_delete(&pods, &reader, &uid, 2, &seen, &masks).await);
    let _ = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default")
        .delete(&claim, &DeleteParams::default())
        .await;
    proc.stop();
    facts
}

/// The claimed-volume story on Bosun and on the upstream kubelet, side by side: the same facts.
#[tokio::test(flavor = "multi_thread")]
async fn a_claimed_volume_as_the_kubelet() {
    let (bosun, kubelet) = tokio::join!(
        claimed_volume_facts(Agent::Bosun),
        claimed_volume_facts(Agent::Kubelet)
    );
    for ((k, b), (_, u)) in bosun.iter().zip(&kubelet) {
        if b != u {
            eprintln!("DIFF {k}:\n  bosun:   {b}\n  kubelet: {u}");
        }
    }
    assert_eq!(bosun, kubelet);
}

/// Whether `path` is a mount point.
fn is_mounted(path: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4).is_some_and(|m| Path::new(m) == path))
}

/// Bosun SIGKILLed while the driver is inside `rpc` (NodeStageVolume or NodePublishVolume) for a
/// pod's claim; the driver finishes the call with Bosun gone (the mount is made behind its back).
/// With `delete_while_down` the pod is deleted before Bosun starts again: the volume is torn
/// down from what is on disk. Otherwise the restarted Bosun stages and publishes again (the
/// driver finds both done), the pod runs and writes to its volume, and once deleted nothing is
/// left: one unpublish, one unstage, no mount under the root, the pod dir and global dir gone.
async fn bosun_killed_inside(rpc: &str, delete_while_down: bool) {
    let prefix = match (rpc, delete_while_down) {
        ("NodeStageVolume", _) => "csi-kill-stage",
        (_, false) => "csi-kill-pub",
        (_, true) => "csi-kill-del",
    };
    let mut t = BosunNode::start(prefix).await;
    let client = t.client.clone();
    let name = t.node.name.clone();
    let driver_name = format!("{name}.csi.bosun.test");
    let (pv, claim, handle) = (
        format!("pv-{name}"),
        format!("claim-{name}"),
        format!("vol-{name}"),
    );
    let _cleanup = Cleanup(vec![
        ("csidriver", driver_name.clone()),
        ("pv", pv.clone()),
        ("pvc", claim.clone()),
    ]);
    create_csidriver(&client, &driver_name).await;
    create_pv(&client, &pv, &driver_name, &handle, &claim).await;
    create_pvc(&client, &claim, &pv).await;
    let driver = Driver::start(&t.node, &driver_name);
    wait_until_async("the driver in the CSINode", Duration::from_secs(30), || {
        csinode_driver(&client, &name, &driver_name)
    })
    .await;
    wait_bound(&client, &claim).await;
    let knob = driver.state.join(format!("hang-{rpc}"));
    std::fs::write(&knob, "").expect("hang knob");
    let pod_name = format!("app-{name}");
    let pod = pod_with_claim(
        &t.node,
        &pod_name,
        &claim,
        "echo alive > /data/f && sleep 3600",
    );
    create(&t.pods, &pod.build()).await;
    wait_until_async(
        &format!("Bosun inside {rpc}"),
        Duration::from_secs(60),
        || async { (!driver.calls_of(rpc).is_empty()).then_some(()) },
    )
    .await;
    t.bosun.kill();
    let uid = t
        .pods
        .get(&pod_name)
        .await
        .expect("the pod")
        .metadata
        .uid
        .expect("its UID");
    let root = t.node.path().join("root");
    let global = root
        .join("plugins/kubernetes.io/csi")
        .join(&driver_name)
        .join(sha256_hex(&handle));
    let staging = global.join("globalmount");
    let pod_dir = root.join("pods").join(&uid);
    let target = pod_dir
        .join("volumes/kubernetes.io~csi")
        .join(&pv)
        .join("mount");
    if delete_while_down {
        t.pods
            .delete(&pod_name, &DeleteParams::default())
            .await
            .expect("delete the pod");
    }
    // The driver completes the call Bosun died in.
    std::fs::remove_file(&knob).expect("release the call");
    let made = if rpc == "NodeStageVolume" {
        &staging
    } else {
        &target
    };
    wait_until(
        "the interrupted call's mount",
        Duration::from_secs(30),
        || is_mounted(made).then_some(()),
    );

    t.bosun = t.node.start();
    if delete_while_down {
        bosun_tests::pod::wait_gone(&t.pods, &[&pod_name], 90).await;
        assert_eq!(driver.calls_of(rpc).len(), 1, "{rpc} never made again");
    } else {
        bosun_tests::pod::running_uid(&t.pods, &pod_name, 120).await;
        let written = driver.state.join("volumes").join(&handle).join("f");
        wait_until(
            "the pod's write in its volume",
            Duration::from_secs(30),
            || (std::fs::read_to_string(&written).ok()? == "alive\n").then_some(()),
        );
        // The interrupted call made again, finding its mount there: staged and published once.
        assert_eq!(driver.calls_of(rpc).len(), 2, "{rpc} made again");
        let mut mounted = mounts_below(&root);
        mounted.sort();
        let want = [&staging, &target].map(|p| p.display().to_string());
        assert_eq!(mounted, want, "mounts while the pod runs");
        delete_and_wait_gone(&t.pods, &[&pod_name], 60).await;
    }
    wait_until("the volume torn down", Duration::from_secs(30), || {
        (driver.calls_of("NodeUnstageVolume").len() == 1).then_some(())
    });
    assert_eq!(
        driver.calls_of("NodeUnpublishVolume"),
        [format!("NodeUnpublishVolume {handle} {}", target.display())]
    );
    assert_eq!(mounts_below(&root), Vec::<String>::new(), "left mounted");
    assert!(!pod_dir.exists(), "pod dir removed");
    assert!(!global.exists(), "global mount dir removed");
    let _ = Api::<PersistentVolumeClaim>::namespaced(client.clone(), "default")
        .delete(&claim, &DeleteParams::default())
        .await;
    t.finish();
}

/// Bosun killed inside NodeStageVolume, started again: the pod runs with its volume, and its
/// deletion leaves nothing mounted.
#[tokio::test(flavor = "multi_thread")]
async fn bosun_killed_while_staging_finishes_the_pod_without_stale_mounts() {
    bosun_killed_inside("NodeStageVolume", false).await;
}

/// Bosun killed inside NodePublishVolume, started again: the pod runs with its volume, one mount
/// on the target, and its deletion leaves nothing mounted.
#[tokio::test(flavor = "multi_thread")]
async fn bosun_killed_while_publishing_finishes_the_pod_without_stale_mounts() {
    bosun_killed_inside("NodePublishVolume", false).await;
}

/// Bosun killed inside NodePublishVolume and the pod deleted before it is back: the volume is
/// unpublished and unstaged from what is on disk, nothing left mounted.
#[tokio::test(flavor = "multi_thread")]
async fn a_pod_deleted_after_bosun_died_publishing_leaves_no_stale_mounts() {
    bosun_killed_inside("NodePublishVolume", true).await;
}
