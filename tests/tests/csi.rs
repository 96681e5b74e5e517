//! Persistent storage through CSI on a Bosun node, with a real CSI driver process
//! (src/bin/csi-driver.rs: the CSI spec's Identity and Node services on a unix socket, backed by
//! real directories, bind mounts for stage and publish) that registers through
//! `<root>/plugins_registry/` like any driver: registration shows in the CSINode and goes with
//! the driver; a statically provisioned PV bound to a claim keeps a pod's data across pods;
//! nothing stays mounted after a pod is deleted; inline and generic ephemeral volumes live and
//! die with their pod; their usage is in /stats/summary from the driver's NodeGetVolumeStats;
//! pods wait with the kubelet's FailedMount texts while a claim is unbound or the driver is not
//! registered.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use bosun_tests::pod::{Container, PodBuilder, container_output, create, delete_and_wait_gone};
use bosun_tests::{BosunNode, ClusterNode, KubeletClient, wait_until_async};
use k8s_openapi::api::core::v1::{Event, PersistentVolume, PersistentVolumeClaim};
use k8s_openapi::api::storage::v1::{CSIDriver, CSINode};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams};
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

/// Mount points at or under `dir`.
fn mounts_under(dir: &Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .map(str::to_string)
        .collect()
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
    let pod = pod_with_claim(
        node,
        &writer,
        &claim,
        "echo persisted > /data/f && sleep 3600",
    );
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
    assert_eq!(mounts_under(&root), Vec::<String>::new(), "left mounted");
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
    assert_eq!(mounts_under(&root), Vec::<String>::new(), "left mounted");

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
    assert_eq!(mounts_under(&root), Vec::<String>::new(), "left mounted");
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
    assert_eq!(mounts_under(&root).len(), 2, "staged and published");

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
    assert_eq!(mounts_under(&root), Vec::<String>::new(), "left mounted");
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
    // The node reports the mounted volume in use (the attach/detach controller detaches only
    // once it is gone), by the kubelet's unique name, until the pod and its mounts are gone.
    let unique = format!("kubernetes.io/csi/{driver_name}^{handle}");
    let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
    let in_use = || async {
        let n = nodes.get(&name).await.ok()?;
        Some(n.status?.volumes_in_use.unwrap_or_default())
    };
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
