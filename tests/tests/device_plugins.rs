//! Device plugins on a Bosun node (issue #18), with a real device plugin process
//! (src/bin/device-plugin.rs: the kubelet's v1beta1 DevicePlugin service on a socket in
//! `<root>/device-plugins/`, registered on `kubelet.sock`, two fake widgets backed by files): the
//! Node's capacity and allocatable show the devices; a pod asking for one gets the plugin's env
//! var and the device's file mounted; a pod asking for more than remain is rejected as the
//! kubelet's device manager rejects it at admission (UnexpectedAdmissionError); an unhealthy
//! device leaves the allocatable; after a restart of Bosun the running pod keeps its device
//! (the checkpoint) and the plugin, registered again, is counted as before. A plugin registering
//! through `<root>/plugins_registry` (the plugin watcher) is served the same; once it is gone
//! its devices stay in the capacity, none allocatable, and a pod asking for one is rejected.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use bosun_proto::podresources_v1 as pr;
use bosun_tests::pod::{
    Container, PodBuilder, container_output, create, delete_and_wait_gone, wait_pod,
};
use bosun_tests::{BosunNode, ClusterNode, wait_until_async};
use k8s_openapi::api::core::v1::Node;
use kube::Api;
use serde_json::json;

const WIDGET: &str = "bosun.test/widget";

/// The test device plugin running for one node, killed on drop.
struct Plugin {
    state: PathBuf,
    child: Child,
}

impl Plugin {
    /// Starts the plugin with `count` widgets, registering on `kubelet.sock`.
    fn start(node: &ClusterNode, count: usize) -> Plugin {
        Plugin::start_with(node, count, &[])
    }

    /// Starts the plugin with `count` widgets and the extra flags `extra`.
    fn start_with(node: &ClusterNode, count: usize, extra: &[&str]) -> Plugin {
        let state = node.path().join("device-plugin");
        std::fs::create_dir_all(&state).expect("mkdir plugin state");
        let log = std::fs::File::create(state.join("plugin.log")).expect("plugin log");
        let child = Command::new(env!("CARGO_BIN_EXE_device-plugin"))
            .args(["--resource", WIDGET, "--count", &count.to_string()])
            .arg("--root-dir")
            .arg(node.path().join("root"))
            .arg("--state-dir")
            .arg(&state)
            .args(extra)
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the device plugin");
        Plugin { state, child }
    }

    fn calls(&self, prefix: &str) -> Vec<String> {
        std::fs::read_to_string(self.state.join("calls.log"))
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with(prefix))
            .map(str::to_string)
            .collect()
    }
}

impl Plugin {
    /// Stops the plugin with SIGTERM (it removes its sockets) and waits for it.
    fn stop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let _ = self.child.wait();
    }
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until the Node reports `capacity` and `allocatable` widgets.
async fn wait_widgets(client: &kube::Client, node: &str, capacity: &str, allocatable: &str) {
    let nodes: Api<Node> = Api::all(client.clone());
    wait_until_async(
        &format!("{WIDGET} capacity {capacity}, allocatable {allocatable}"),
        Duration::from_secs(60),
        || async {
            let n = nodes.get(node).await.ok()?;
            let s = n.status?;
            let c = s.capacity?.get(WIDGET)?.0.clone();
            let a = s.allocatable?.get(WIDGET)?.0.clone();
            (c == capacity && a == allocatable).then_some(())
        },
    )
    .await
}

/// A pod-resources client on the node's socket.
async fn pod_resources(
    root: &Path,
) -> pr::pod_resources_lister_client::PodResourcesListerClient<tonic::transport::Channel> {
    let path = root.join("pod-resources/kubelet.sock");
    let channel = tonic::transport::Endpoint::from_static("http://pod-resources.invalid")
        .connect_with_connector(tower::service_fn(move |_: http::Uri| {
            let path = path.clone();
            async move {
                let s = tokio::net::UnixStream::connect(path).await?;
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(s))
            }
        }))
        .await
        .expect("connect pod-resources socket");
    pr::pod_resources_lister_client::PodResourcesListerClient::new(channel)
}

/// The widgets pod-resources lists for container `container` of pod `pod`, and the allocatable
/// ones.
async fn listed_widgets(root: &Path, pod: &str, container: &str) -> (Vec<String>, Vec<String>) {
    let mut c = pod_resources(root).await;
    let list = c
        .list(pr::ListPodResourcesRequest {})
        .await
        .expect("List")
        .into_inner();
    let held = list
        .pod_resources
        .iter()
        .filter(|p| p.name == pod)
        .flat_map(|p| p.containers.iter().filter(|c| c.name == container))
        .flat_map(|c| c.devices.iter().filter(|d| d.resource_name == WIDGET))
        .flat_map(|d| d.device_ids.clone())
        .collect();
    let alloc = c
        .get_allocatable_resources(pr::AllocatableResourcesRequest {})
        .await
        .expect("GetAllocatableResources")
        .into_inner();
    let mut free: Vec<String> = alloc
        .devices
        .iter()
        .filter(|d| d.resource_name == WIDGET)
        .flat_map(|d| d.device_ids.clone())
        .collect();
    free.sort();
    (held, free)
}

/// Waits up to 30 s for the `app` container of pod `name` to have printed something that
/// satisfies `done`; returns all it printed.
async fn app_output(logs: &Path, name: &str, uid: &str, done: impl Fn(&str) -> bool) -> String {
    wait_until_async(
        &format!("the output of {name}"),
        Duration::from_secs(30),
        || async {
            let o = container_output(logs, "default", name, uid, "app");
            done(&o).then_some(o)
        },
    )
    .await
}

/// A pod on `node` whose `app` container runs `script` with `count` widgets requested and limited.
fn widget_pod(node: &ClusterNode, name: &str, count: u32, script: &str) -> PodBuilder {
    PodBuilder::new(name)
        .node(&node.name)
        .grace(1)
        .container(Container::sh("app", script).with(
            "resources",
            json!({"limits": {WIDGET: count.to_string()}, "requests": {WIDGET: count.to_string()}}),
        ))
}

#[tokio::test(flavor = "multi_thread")]
async fn devices_of_a_plugin_are_counted_allocated_and_kept_across_a_restart() {
    let mut t = BosunNode::start("devplug").await;
    let client = t.client.clone();
    let name = t.node.name.clone();
    let plugin = Plugin::start(&t.node, 2);
    wait_widgets(&client, &name, "2", "2").await;
    assert_eq!(plugin.calls("Registered").len(), 1);

    // A pod asking for one widget: the plugin's env var, its device file mounted, its annotation.
    let first = format!("first-{name}");
    let script = "echo ids=$WIDGET_IDS; cat /dev/widgets/$WIDGET_IDS; sleep 3600";
    create(&t.pods, &widget_pod(&t.node, &first, 1, script).build()).await;
    let uid = bosun_tests::pod::running_uid(&t.pods, &first, 90).await;
    let logs = t.node.path().join("pods");
    let out = app_output(&logs, &first, &uid, |o| o.contains("widget w0")).await;
    assert_eq!(out, "ids=w0\nwidget w0\n");
    assert_eq!(plugin.calls("Allocate"), ["Allocate w0"]);
    let root = t.node.path().join("root");
    let (held, allocatable) = listed_widgets(&root, &first, "app").await;
    assert_eq!(
        (held, allocatable),
        (
            vec!["w0".to_string()],
            vec!["w0".to_string(), "w1".to_string()]
        )
    );

    // Two more than the one left: rejected at admission as the kubelet's device manager.
    let second = format!("second-{name}");
    create(
        &t.pods,
        &widget_pod(&t.node, &second, 2, "sleep 3600").build(),
    )
    .await;
    let (reason, message) = wait_pod(&t.pods, &second, "second rejected", 60, |p| {
        let s = p.status.as_ref()?;
        (s.phase.as_deref() == Some("Failed")).then(|| (s.reason.clone(), s.message.clone()))
    })
    .await;
    assert_eq!(reason.as_deref(), Some("UnexpectedAdmissionError"));
    assert_eq!(
        message.as_deref(),
        Some(
            "Pod was rejected: Allocate failed due to requested number of devices unavailable for bosun.test/widget. Requested: 2, Available: 1, which is unexpected"
        )
    );

    // An unhealthy device leaves the allocatable, not the capacity.
    std::fs::write(plugin.state.join("unhealthy"), "w1\n").expect("mark w1 unhealthy");
    wait_widgets(&client, &name, "2", "1").await;

    // Restart: the checkpoint keeps the pod's device; the plugin registers again.
    let (_, code) = t.bosun.terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    let checkpoint = t
        .node
        .path()
        .join("root/device-plugins/kubelet_internal_checkpoint");
    let cp: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&checkpoint).expect("the checkpoint")).expect("JSON");
    let entry = &cp["Data"]["PodDeviceEntries"][0];
    assert_eq!(entry["PodUID"], uid.as_str());
    assert_eq!(entry["ResourceName"], WIDGET);
    assert_eq!(entry["DeviceIDs"]["-1"], json!(["w0"]));
    t.bosun = t.node.start();
    wait_until_async(
        "the plugin registered again",
        Duration::from_secs(60),
        || async { (plugin.calls("Registered").len() == 2).then_some(()) },
    )
    .await;
    wait_widgets(&client, &name, "2", "1").await;
    let p = t.pods.get(&first).await.expect("first pod");
    let status = p.status.expect("status");
    assert_eq!(status.phase.as_deref(), Some("Running"));
    let cs = &status.container_statuses.expect("container statuses")[0];
    assert_eq!(cs.restart_count, 0, "the pod kept running");
    assert_eq!(
        plugin.calls("Allocate"),
        ["Allocate w0"],
        "no new allocation"
    );
    // The device is still the first pod's: a pod asking for the healthy one left is refused.
    std::fs::write(plugin.state.join("unhealthy"), "").expect("w1 healthy again");
    wait_widgets(&client, &name, "2", "2").await;
    let third = format!("third-{name}");
    create(
        &t.pods,
        &widget_pod(&t.node, &third, 1, "echo ids=$WIDGET_IDS; sleep 3600").build(),
    )
    .await;
    let uid3 = bosun_tests::pod::running_uid(&t.pods, &third, 90).await;
    let out = app_output(&logs, &third, &uid3, |o| !o.is_empty()).await;
    assert_eq!(
        out, "ids=w1\n",
        "the device left is given, not the held one"
    );

    // Deleted pods free their devices: a pod asking for both gets them.
    delete_and_wait_gone(&t.pods, &[&first, &third, &second], 90).await;
    let both = format!("both-{name}");
    create(
        &t.pods,
        &widget_pod(&t.node, &both, 2, "echo ids=$WIDGET_IDS; sleep 3600").build(),
    )
    .await;
    let uid4 = bosun_tests::pod::running_uid(&t.pods, &both, 90).await;
    let out = app_output(&logs, &both, &uid4, |o| !o.is_empty()).await;
    assert_eq!(out, "ids=w0,w1\n");
    let (held, _) = listed_widgets(&root, &both, "app").await;
    assert_eq!(held, ["w0", "w1"]);
    t.finish();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_plugin_registered_through_the_plugin_watcher_and_gone() {
    let t = BosunNode::start("devplug-reg").await;
    let client = t.client.clone();
    let name = t.node.name.clone();
    let mut plugin = Plugin::start_with(&t.node, 3, &["--via", "registry"]);
    wait_widgets(&client, &name, "3", "3").await;
    wait_until_async("registration notified", Duration::from_secs(10), || async {
        (plugin.calls("Registered").len() == 1).then_some(())
    })
    .await;
    let pod = format!("one-{name}");
    create(
        &t.pods,
        &widget_pod(&t.node, &pod, 1, "echo ids=$WIDGET_IDS; sleep 3600").build(),
    )
    .await;
    let uid = bosun_tests::pod::running_uid(&t.pods, &pod, 90).await;
    let logs = t.node.path().join("pods");
    let out = app_output(&logs, &pod, &uid, |o| !o.is_empty()).await;
    assert_eq!(out, "ids=w0\n");

    // The plugin goes away: capacity kept (the kubelet's grace period), nothing allocatable.
    plugin.stop();
    wait_widgets(&client, &name, "3", "0").await;
    let late = format!("late-{name}");
    create(
        &t.pods,
        &widget_pod(&t.node, &late, 1, "sleep 3600").build(),
    )
    .await;
    let (reason, message) = wait_pod(&t.pods, &late, "late rejected", 60, |p| {
        let s = p.status.as_ref()?;
        (s.phase.as_deref() == Some("Failed")).then(|| (s.reason.clone(), s.message.clone()))
    })
    .await;
    assert_eq!(reason.as_deref(), Some("UnexpectedAdmissionError"));
    assert_eq!(
        message.as_deref(),
        Some(
            "Pod was rejected: Allocate failed due to no healthy devices present; cannot allocate unhealthy devices bosun.test/widget, which is unexpected"
        )
    );
    t.finish();
}
