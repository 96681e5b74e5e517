//! The node status loop: every nodeStatusUpdateFrequency observe the machine and the runtime,
//! run the setters over the Node last seen (kept current by a watch of this one Node), and patch
//! nodes/status only when something other than a heartbeat changed or nodeStatusReportFrequency
//! has passed since the last write, as the kubelet's updateNodeStatus.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bosun_cri::CriClient;
use k8s_openapi::api::core::v1::{
    ContainerImage, Node, NodeFeatures, NodeRuntimeHandler, NodeRuntimeHandlerFeatures, NodeStatus,
};
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{Patch, PatchParams};
use kube::runtime::reflector::{ObjectRef, Store};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::machine::{self, MachineInfo};
use super::setters::{self, Facts, Settings};
use crate::backoff::{Policy, retry};
use crate::events::{EventType, Recorder};

/// The runtime is "down" when its status was last good this long ago (the kubelet's
/// baseRuntimeSyncThreshold, set from maxWaitForContainerRuntime = 30 s).
const RUNTIME_SYNC_THRESHOLD: Duration = Duration::from_secs(30);
/// Patch attempts per round (the kubelet's nodeStatusUpdateRetry).
const UPDATE_RETRIES: usize = 5;

/// Observes what the setters need: the machine, the root filesystem and the runtime.
pub struct Observer {
    cri: CriClient,
    root_dir: PathBuf,
    runtime_version: String,
    last_runtime_sync: Option<Instant>,
    pressure: Option<crate::eviction::ConditionsRx>,
    pleg: Option<crate::pod::pleg::PlegHealth>,
    shutdown: Option<crate::nodeshutdown::ShuttingDown>,
    csi: Option<crate::volume::csi::CsiVolumes>,
    devices: Option<crate::devicemanager::DeviceManager>,
}

/// The runtime's view of a CRI condition, written as the kubelet's `%v` of it.
fn describe(c: Option<&bosun_cri::types::RuntimeCondition>) -> String {
    match c {
        Some(c) => format!(
            "{}={} reason:{} message:{}",
            c.r#type, c.status, c.reason, c.message
        ),
        None => "<nil>".into(),
    }
}

impl Observer {
    /// An observer of `cri` and of the filesystem holding `root_dir`.
    pub fn new(cri: CriClient, root_dir: PathBuf) -> Observer {
        let runtime_version = cri.runtime_version().node_info_string();
        Observer {
            cri,
            root_dir,
            runtime_version,
            last_runtime_sync: None,
            pressure: None,
            pleg: None,
            shutdown: None,
            csi: None,
            devices: None,
        }
    }

    /// Reports the device plugins' resources `devices` holds in capacity and allocatable
    /// (written at once when they change).
    pub fn with_devices(mut self, devices: crate::devicemanager::DeviceManager) -> Observer {
        self.devices = Some(devices);
        self
    }

    /// Reports the attachable CSI volumes `csi` has mounted or is setting up in `volumesInUse`
    /// (written at once when a set-up asks), and tells it what was written.
    pub fn with_csi(mut self, csi: crate::volume::csi::CsiVolumes) -> Observer {
        self.csi = Some(csi);
        self
    }

    /// Reports the node NotReady while `shutdown` says it is shutting down; the status is
    /// written at once when that changes (the kubelet's syncNodeStatus from the shutdown
    /// manager).
    pub fn with_shutdown(mut self, shutdown: crate::nodeshutdown::ShuttingDown) -> Observer {
        self.shutdown = Some(shutdown);
        self
    }

    /// Reports the node NotReady while `pleg` is not healthy ("PLEG is not healthy: ...").
    pub fn with_pleg(mut self, pleg: crate::pod::pleg::PlegHealth) -> Observer {
        self.pleg = Some(pleg);
        self
    }

    /// Reports the pressure conditions `pressure` holds (none without it).
    pub fn with_pressure(mut self, pressure: crate::eviction::ConditionsRx) -> Observer {
        self.pressure = Some(pressure);
        self
    }

    /// Everything the setters need, now.
    pub async fn observe(&mut self) -> Facts {
        let now = Timestamp::now();
        let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
        let mut runtime_errors = Vec::new();
        let mut network_errors = Vec::new();
        let mut handlers = Vec::new();
        let mut features = None;
        match self.cri.status(false).await {
            Ok(s) => {
                let conditions = s.status.map(|s| s.conditions).unwrap_or_default();
                let find = |t: &str| conditions.iter().find(|c| c.r#type == t);
                let network = find("NetworkReady");
                if !network.is_some_and(|c| c.status) {
                    network_errors.push(format!(
                        "container runtime network not ready: {}",
                        describe(network)
                    ));
                }
                let runtime = find("RuntimeReady");
                if runtime.is_some_and(|c| c.status) {
                    self.last_runtime_sync = Some(Instant::now());
                    handlers = s
                        .runtime_handlers
                        .iter()
                        .map(|h| NodeRuntimeHandler {
                            name: Some(h.name.clone()),
                            features: Some(NodeRuntimeHandlerFeatures {
                                recursive_read_only_mounts: h
                                    .features
                                    .map(|f| f.recursive_read_only_mounts),
                                user_namespaces: h.features.map(|f| f.user_namespaces),
                            }),
                        })
                        .collect();
                    features = s.features.map(|f| NodeFeatures {
                        supplemental_groups_policy: Some(f.supplemental_groups_policy),
                    });
                } else {
                    runtime_errors.push(format!(
                        "container runtime not ready: {}",
                        describe(runtime)
                    ));
                }
            }
            Err(e) => warn!(error = %e, "container runtime status check failed"),
        }
        // As the kubelet's runtimeErrors: the runtime sync, the health checks, the rest.
        if let Some(Err(e)) = self.pleg.as_ref().map(|p| p.check(Instant::now())) {
            runtime_errors.insert(0, format!("PLEG is not healthy: {e}"));
        }
        match self.last_runtime_sync {
            None => runtime_errors.insert(
                0,
                "container runtime status check may not have completed yet".into(),
            ),
            Some(t) if t.elapsed() >= RUNTIME_SYNC_THRESHOLD => {
                runtime_errors.insert(0, "container runtime is down".into())
            }
            Some(_) => {}
        }
        let images = match self.cri.list_images().await {
            Ok(list) => node_images(list),
            Err(e) => {
                warn!(error = %e, "listing images for the node status failed");
                Vec::new()
            }
        };
        let rootfs_capacity = match machine::fs_capacity(&self.root_dir) {
            Ok(c) => Some(c),
            Err(e) => {
                warn!(error = %e, dir = %self.root_dir.display(), "cannot read the root filesystem's size");
                None
            }
        };
        Facts {
            now,
            machine: MachineInfo::read(),
            rootfs_capacity,
            runtime_version: self.runtime_version.clone(),
            runtime_errors,
            network_errors,
            runtime_handlers: handlers,
            runtime_features: features,
            images,
            pressure: self
                .pressure
                .as_ref()
                .map(|p| p.borrow().clone())
                .unwrap_or_default(),
            shutting_down: self.shutdown.as_ref().is_some_and(|s| *s.borrow()),
            volumes_in_use: self
                .csi
                .as_ref()
                .map(|c| c.volumes_in_use())
                .unwrap_or_default(),
            devices: self
                .devices
                .as_ref()
                .map(|d| d.capacity(Instant::now()))
                .unwrap_or_default(),
        }
    }
}

/// The node's images from the runtime's list, largest first and, at equal size, by ID
/// descending (the kubelet's sliceutils.ByImageSize): an order that does not follow the runtime's
/// listing order, which may change between calls (the fake runtime lists from a Go map), so that
/// an unchanged set of images never reads as a status change.
fn node_images(mut list: Vec<bosun_cri::types::Image>) -> Vec<ContainerImage> {
    list.sort_by(|a, b| b.size.cmp(&a.size).then_with(|| b.id.cmp(&a.id)));
    list.into_iter()
        .map(|i| ContainerImage {
            names: Some(i.repo_digests.into_iter().chain(i.repo_tags).collect()),
            // sizeBytes is omitempty: a 0 reads back absent, so it is written absent, or every
            // round would see a change (the fake runtime's images have no size).
            size_bytes: (i.size > 0).then(|| i.size.min(i64::MAX as u64) as i64),
        })
        .collect()
}

/// The strategic merge patch of nodes/status writing every field the setters own: conditions
/// merge by type (others' conditions stay), addresses are replaced when they changed.
pub fn status_patch(base: &NodeStatus, desired: &NodeStatus) -> Value {
    let ours = ["MemoryPressure", "DiskPressure", "PIDPressure", "Ready"];
    let conditions: Vec<_> = desired
        .conditions
        .iter()
        .flatten()
        .filter(|c| ours.contains(&c.type_.as_str()))
        .collect();
    let mut status = json!({
        "capacity": desired.capacity,
        "allocatable": desired.allocatable,
        "conditions": conditions,
        "daemonEndpoints": desired.daemon_endpoints,
        "nodeInfo": desired.node_info,
        "images": desired.images,
        "runtimeHandlers": desired.runtime_handlers,
        "volumesInUse": desired.volumes_in_use,
    });
    if desired.features.is_some() {
        status["features"] = json!(desired.features);
    }
    if base.addresses != desired.addresses {
        let mut list = vec![json!({"$patch": "replace"})];
        list.extend(desired.addresses.iter().flatten().map(|a| json!(a)));
        status["addresses"] = Value::Array(list);
    }
    json!({ "status": status })
}

/// The resource version as a number, to tell which of two copies is newer.
fn rv(node: &Node) -> Option<u64> {
    node.metadata.resource_version.as_deref()?.parse().ok()
}

/// Writes the node status.
pub struct StatusUpdater {
    api: Api<Node>,
    name: String,
    settings: Settings,
    observer: Observer,
    watched: Store<Node>,
    last: Option<Node>,
    last_report: Option<Instant>,
    report_every: Duration,
    events: Recorder,
    timeout: Duration,
}

impl StatusUpdater {
    /// An updater starting from `registered` (`written`: its status was just written).
    pub fn new(
        api: Api<Node>,
        settings: Settings,
        observer: Observer,
        watched: Store<Node>,
        registered: Node,
        written: bool,
        report_every: Duration,
    ) -> StatusUpdater {
        StatusUpdater {
            api,
            name: settings.node_name.clone(),
            settings,
            observer,
            watched,
            last: Some(registered),
            last_report: written.then(Instant::now),
            report_every,
            events: Recorder::disabled(),
            timeout: super::heartbeat_timeout(Duration::from_secs(10), 40),
        }
    }

    /// Each request fails after `timeout` (the kubelet's heartbeat client timeout; 10 s until
    /// set), so a write caught on a silent connection does not carry a stale heartbeat later.
    pub fn with_timeout(mut self, timeout: Duration) -> StatusUpdater {
        self.timeout = timeout;
        self
    }

    /// Records the node's condition changes as events through `events`.
    pub fn with_events(mut self, events: Recorder) -> StatusUpdater {
        self.events = events;
        self
    }

    /// The freshest copy of the Node: the watched one or the last written, whichever is newer.
    fn base(&self) -> Option<Node> {
        let watched = self
            .watched
            .get(&ObjectRef::new(&self.name))
            .map(Arc::unwrap_or_clone);
        match (watched, &self.last) {
            (Some(w), Some(l)) if rv(l) > rv(&w) => Some(l.clone()),
            (Some(w), _) => Some(w),
            (None, l) => l.clone(),
        }
    }

    /// One round: compute, and write when due. Returns whether the API accepted what was due.
    pub async fn update(&mut self) -> bool {
        let facts = self.observer.observe().await;
        for attempt in 0..UPDATE_RETRIES {
            let base = match self.base() {
                Some(b) if attempt == 0 => b,
                _ => match super::bounded(self.timeout, self.api.get(&self.name)).await {
                    Ok(n) => n,
                    Err(e) => {
                        warn!(node = %self.name, error = %e, "error getting node");
                        self.last = None;
                        return false;
                    }
                },
            };
            let old = base.status.clone().unwrap_or_default();
            let mut desired = old.clone();
            setters::apply(&mut desired, &self.settings, &facts);
            let due = self
                .last_report
                .is_none_or(|t| t.elapsed() >= self.report_every);
            if !due && !setters::changed(&old, &desired) {
                debug!(node = %self.name, "node status unchanged");
                if let Some(csi) = &self.observer.csi {
                    csi.mark_reported(old.volumes_in_use.as_deref().unwrap_or_default());
                }
                return true;
            }
            let patch = status_patch(&old, &desired);
            let (params, patch) = (PatchParams::default(), Patch::Strategic(&patch));
            let write = self.api.patch_status(&self.name, &params, &patch);
            match super::bounded(self.timeout, write).await {
                Ok(n) => {
                    let ready = setters::condition(&desired, "Ready").map(|c| c.status.clone());
                    info!(node = %self.name, ready = ?ready, "node status written");
                    for reason in setters::transition_events(&old, &desired) {
                        self.events.node(
                            &self.name,
                            EventType::Normal,
                            reason,
                            format!("Node {} status is now: {reason}", self.name),
                        );
                    }
                    self.last = Some(n);
                    self.last_report = Some(Instant::now());
                    if let Some(csi) = &self.observer.csi {
                        csi.mark_reported(desired.volumes_in_use.as_deref().unwrap_or_default());
                    }
                    return true;
                }
                Err(e) => {
                    warn!(node = %self.name, error = %e, attempt, "error updating node status");
                    self.last = None;
                    if matches!(&e, kube::Error::Api(s) if s.is_not_found()) {
                        return false;
                    }
                }
            }
        }
        false
    }

    /// Updates every `every` until cancelled; after a failure the next round comes sooner
    /// (back-off from 100 ms doubling to `every`) so the status converges when the API server
    /// returns. [`Self::update`] logs its own failures.
    pub async fn run(mut self, every: Duration, cancel: CancellationToken) {
        let policy = Policy::exponential(Duration::from_millis(100), every);
        let mut shutdown = self.observer.shutdown.clone();
        let shutdown_changed = async |s: &mut Option<crate::nodeshutdown::ShuttingDown>| match s {
            Some(s) => {
                if s.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
            None => std::future::pending().await,
        };
        loop {
            let updated = retry(
                policy,
                &cancel,
                &mut self,
                |updater| async move {
                    let ok = updater.update().await;
                    (updater, if ok { Ok(()) } else { Err(()) })
                },
                |_, _| {},
            )
            .await;
            if updated.is_none() {
                return;
            }
            let csi = self.observer.csi.clone();
            let report_asked = async {
                match &csi {
                    Some(c) => c.report_asked().await,
                    None => std::future::pending().await,
                }
            };
            let devices = self.observer.devices.clone();
            let devices_changed = async {
                match &devices {
                    Some(d) => d.changed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
                () = shutdown_changed(&mut shutdown) => {}
                () = report_asked => {}
                () = devices_changed => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{NodeAddress, NodeCondition};

    fn status(addresses: &[(&str, &str)]) -> NodeStatus {
        NodeStatus {
            addresses: Some(
                addresses
                    .iter()
                    .map(|(t, a)| NodeAddress {
                        type_: t.to_string(),
                        address: a.to_string(),
                    })
                    .collect(),
            ),
            conditions: Some(vec![
                NodeCondition {
                    type_: "NetworkUnavailable".into(),
                    status: "False".into(),
                    ..Default::default()
                },
                NodeCondition {
                    type_: "Ready".into(),
                    status: "True".into(),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        }
    }

    #[test]
    fn patch_writes_only_our_conditions_and_replaces_changed_addresses() {
        let base = status(&[("InternalIP", "10.0.0.1"), ("Hostname", "n1")]);
        let same = status_patch(&base, &base);
        assert!(same["status"].get("addresses").is_none());
        let types: Vec<&str> = same["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["Ready"]);
        assert_eq!(
            same["status"]["images"],
            Value::Null,
            "absent images are removed"
        );

        assert_eq!(
            same["status"]["volumesInUse"],
            Value::Null,
            "no volumes in use: the list is removed"
        );
        let mut in_use = base.clone();
        in_use.volumes_in_use = Some(vec!["kubernetes.io/csi/d^h".into()]);
        assert_eq!(
            status_patch(&base, &in_use)["status"]["volumesInUse"],
            json!(["kubernetes.io/csi/d^h"])
        );

        let moved = status(&[("InternalIP", "10.0.0.2"), ("Hostname", "n1")]);
        let p = status_patch(&base, &moved);
        assert_eq!(
            p["status"]["addresses"],
            json!([{"$patch": "replace"}, {"type": "InternalIP", "address": "10.0.0.2"}, {"type": "Hostname", "address": "n1"}])
        );
    }

    #[test]
    fn images_order_is_the_kubelets_whatever_the_runtime_lists() {
        let image = |id: &str, size: u64| bosun_cri::types::Image {
            id: id.into(),
            repo_tags: vec![id.into()],
            size,
            ..Default::default()
        };
        let names = |l: Vec<ContainerImage>| -> Vec<String> {
            l.into_iter()
                .flat_map(|i| i.names.unwrap_or_default())
                .collect()
        };
        let want = ["big", "b", "a"];
        for list in [
            vec![image("a", 1), image("b", 1), image("big", 9)],
            vec![image("b", 1), image("big", 9), image("a", 1)],
        ] {
            assert_eq!(names(node_images(list)), want);
        }
        // The API drops a sizeBytes of 0 (omitempty): written as absent, it reads back equal.
        let sizes: Vec<Option<i64>> = node_images(vec![image("a", 0), image("b", 5)])
            .into_iter()
            .map(|i| i.size_bytes)
            .collect();
        assert_eq!(sizes, [Some(5), None]);
    }

    #[test]
    fn runtime_condition_text() {
        let c = bosun_cri::types::RuntimeCondition {
            r#type: "NetworkReady".into(),
            status: false,
            reason: "NetworkPluginNotReady".into(),
            message: "Network plugin returns error: cni plugin not initialized".into(),
        };
        assert_eq!(
            describe(Some(&c)),
            "NetworkReady=false reason:NetworkPluginNotReady message:Network plugin returns error: cni plugin not initialized"
        );
        assert_eq!(describe(None), "<nil>");
    }
}
