//! The kubelet's device manager (pkg/kubelet/cm/devicemanager, issue #18): device plugins
//! register on `<root>/device-plugins/kubelet.sock` (registration.rs), each plugin's
//! ListAndWatch stream keeps its resource's healthy and unhealthy devices (plugin.rs is the
//! client), admission reserves free healthy devices for a pod's containers (the kubelet's
//! Allocate at admission: "UnexpectedAdmissionError" when too few are free), the plugin's
//! Allocate answer is asked for at the container's start and applied to its CRI config
//! (options.rs), and the allocations live in the kubelet's checkpoint file (checkpoint.rs) so
//! that they survive a restart. The node status reports the capacity (every device) and the
//! allocatable (the healthy ones); pod-resources reports the devices.

pub mod checkpoint;
pub mod options;
pub mod plugin;
pub mod registration;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use tracing::{info, warn};

/// How long a resource whose plugin went away keeps its capacity (the kubelet's
/// endpointStopGracePeriod).
pub const STOP_GRACE_PERIOD: Duration = Duration::from_secs(5 * 60);
/// The checkpoint's file name in the device-plugins directory.
pub const CHECKPOINT_FILE: &str = "kubelet_internal_checkpoint";
/// The health a plugin reports for a usable device.
pub const HEALTHY: &str = "Healthy";

/// The directory of device plugin sockets under the root dir.
pub fn plugins_dir(root_dir: &Path) -> PathBuf {
    root_dir.join("device-plugins")
}

/// One resource's devices as its plugin last listed them.
#[derive(Debug, Clone, Default)]
struct Resource {
    /// The plugin's socket; None until a plugin registers after a restart.
    endpoint: Option<PathBuf>,
    healthy: BTreeSet<String>,
    unhealthy: BTreeSet<String>,
    /// NUMA node of each device (-1: none), as the plugin listed it.
    numa: BTreeMap<String, i64>,
    /// When its plugin went away (the kubelet's endpoint stopTime).
    stopped: Option<Instant>,
    /// Whether the plugin wants PreStartContainer before each container starts.
    pre_start: bool,
    /// Its registration's number, so that a replaced plugin's ended stream does not stop the new one.
    generation: u64,
}

/// The devices one container holds of one resource, and the plugin's Allocate answer once asked
/// (protobuf bytes of a ContainerAllocateResponse, as the kubelet checkpoints it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allocation {
    /// The device IDs.
    pub devices: BTreeSet<String>,
    /// The encoded ContainerAllocateResponse; None until the plugin's Allocate answered.
    pub response: Option<Vec<u8>>,
}

/// Allocations by pod UID, container name and resource.
pub type PodDevices = BTreeMap<String, BTreeMap<String, BTreeMap<String, Allocation>>>;

#[derive(Debug, Default)]
struct State {
    resources: BTreeMap<String, Resource>,
    pods: PodDevices,
    /// The last registration number given.
    registrations: u64,
}

/// Why devices could not be allocated: the kubelet's devicesToAllocate errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AllocateError {
    /// No healthy device of the resource at all.
    #[error("no healthy devices present; cannot allocate unhealthy devices {0}")]
    NoHealthy(String),
    /// Fewer free healthy devices than asked for.
    #[error(
        "requested number of devices unavailable for {resource}. Requested: {requested}, Available: {available}"
    )]
    Unavailable {
        /// The resource.
        resource: String,
        /// Devices asked for.
        requested: usize,
        /// Free healthy devices.
        available: usize,
    },
    /// A container's request changed after its devices were allocated.
    #[error(
        "pod {pod:?} container {container:?} changed request for resource {resource:?} from {from} to {to}"
    )]
    Changed {
        /// The pod's UID.
        pod: String,
        /// The container.
        container: String,
        /// The resource.
        resource: String,
        /// Devices held.
        from: usize,
        /// Devices now asked for.
        to: usize,
    },
}

/// The node's device plugin resources: capacity (all devices), allocatable (the healthy ones),
/// and resources whose plugin left more than the grace period ago (capacity 0).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capacity {
    /// Devices by resource.
    pub capacity: BTreeMap<String, i64>,
    /// Healthy devices by resource.
    pub allocatable: BTreeMap<String, i64>,
    /// Resources no longer served: reported with capacity 0.
    pub removed: Vec<String>,
}

/// The device manager, shared by the registration server, admission, the pod workers, the
/// node status and pod-resources.
#[derive(Debug, Clone)]
pub struct DeviceManager {
    dir: PathBuf,
    state: Arc<Mutex<State>>,
    /// Wakes the node status loop when devices change.
    nudge: Arc<tokio::sync::Notify>,
}

/// The number of devices `c` asks for of each device plugin resource in `resources` (its
/// limits, as the kubelet reads them; requests equal limits for extended resources).
fn container_requests(
    c: &Container,
    resources: &BTreeMap<String, Resource>,
) -> Vec<(String, usize)> {
    let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
    let mut out = Vec::new();
    for (name, q) in limits.into_iter().flatten() {
        if !resources.contains_key(name) {
            continue;
        }
        let n = crate::resource::parse_quantity(&q.0)
            .map(|q| q.value())
            .unwrap_or(0);
        if n > 0 {
            out.push((name.clone(), n as usize));
        }
    }
    out
}

impl DeviceManager {
    /// A manager of the plugins in `<root>/device-plugins`, its allocations read back from the
    /// checkpoint there (resources listed in it have no devices until their plugin registers).
    pub fn new(root_dir: &Path) -> DeviceManager {
        let dir = plugins_dir(root_dir);
        let mut state = State::default();
        match checkpoint::read(&dir.join(CHECKPOINT_FILE)) {
            Ok(Some((pods, registered))) => {
                info!(
                    pods = pods.len(),
                    "device allocations read from the checkpoint"
                );
                state.pods = pods;
                for r in registered {
                    state.resources.insert(
                        r,
                        Resource {
                            stopped: Some(Instant::now()),
                            ..Default::default()
                        },
                    );
                }
            }
            Ok(None) => {}
            Err(e) => warn!(error = %e, "continuing without the device checkpoint"),
        }
        DeviceManager {
            dir,
            state: Arc::new(Mutex::new(state)),
            nudge: Arc::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The device-plugins directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Resolves when the devices changed (for the node status loop).
    pub async fn changed(&self) {
        self.nudge.notified().await
    }

    fn save(&self, st: &State) {
        let registered: BTreeMap<String, Vec<String>> = st
            .resources
            .iter()
            .map(|(k, r)| (k.clone(), r.healthy.iter().cloned().collect()))
            .collect();
        let path = self.dir.join(CHECKPOINT_FILE);
        if let Err(e) = checkpoint::write(&path, &st.pods, &registered) {
            warn!(error = %e, path = %path.display(), "writing the device checkpoint failed");
        }
    }

    /// A plugin registered for `resource` at `endpoint`: its registration number.
    pub fn connected(&self, resource: &str, endpoint: &Path, pre_start: bool) -> u64 {
        let mut st = self.lock();
        st.registrations += 1;
        let generation = st.registrations;
        let r = st.resources.entry(resource.to_string()).or_default();
        r.endpoint = Some(endpoint.to_path_buf());
        r.pre_start = pre_start;
        r.stopped = None;
        r.generation = generation;
        generation
    }

    /// The plugin of registration `generation` listed `devices` (ID, health, NUMA node).
    pub fn devices_listed(
        &self,
        resource: &str,
        generation: u64,
        devices: &[(String, String, i64)],
    ) {
        let mut st = self.lock();
        let Some(r) = st.resources.get_mut(resource) else {
            return;
        };
        if r.generation != generation {
            return;
        }
        r.healthy.clear();
        r.unhealthy.clear();
        r.numa.clear();
        for (id, health, numa) in devices {
            if health == HEALTHY {
                r.healthy.insert(id.clone());
            } else {
                r.unhealthy.insert(id.clone());
            }
            r.numa.insert(id.clone(), *numa);
        }
        info!(
            resource,
            total = devices.len(),
            healthy = r.healthy.len(),
            "device plugin listed its devices"
        );
        self.save(&st);
        self.nudge.notify_one();
    }

    /// The plugin of registration `generation` went away: its devices are unhealthy (capacity
    /// kept, nothing allocatable) until it registers again or the grace period passes.
    pub fn disconnected(&self, resource: &str, generation: u64) {
        let mut st = self.lock();
        let Some(r) = st.resources.get_mut(resource) else {
            return;
        };
        if r.generation != generation {
            return;
        }
        let healthy = std::mem::take(&mut r.healthy);
        r.unhealthy.extend(healthy);
        r.stopped = Some(Instant::now());
        r.endpoint = None;
        drop(st);
        self.nudge.notify_one();
    }

    /// The plugin's socket of `resource`, when one is registered.
    pub fn endpoint(&self, resource: &str) -> Option<PathBuf> {
        self.lock()
            .resources
            .get(resource)
            .and_then(|r| r.endpoint.clone())
    }

    /// The kubelet's GetCapacity at `now`: resources past the grace period are dropped (and
    /// reported removed).
    pub fn capacity(&self, now: Instant) -> Capacity {
        let mut st = self.lock();
        let mut out = Capacity::default();
        let expired: Vec<String> = st
            .resources
            .iter()
            .filter(|(_, r)| {
                r.stopped
                    .is_some_and(|t| now.duration_since(t) > STOP_GRACE_PERIOD)
            })
            .map(|(k, _)| k.clone())
            .collect();
        for k in &expired {
            st.resources.remove(k);
        }
        for (k, r) in &st.resources {
            out.capacity
                .insert(k.clone(), (r.healthy.len() + r.unhealthy.len()) as i64);
            out.allocatable.insert(k.clone(), r.healthy.len() as i64);
        }
        if !expired.is_empty() {
            self.save(&st);
        }
        out.removed = expired;
        out
    }

    /// Healthy devices by resource (the pod-resources GetAllocatableResources), with NUMA nodes.
    pub fn allocatable_devices(&self) -> BTreeMap<String, Vec<(String, i64)>> {
        let st = self.lock();
        st.resources
            .iter()
            .map(|(k, r)| {
                let ids = r
                    .healthy
                    .iter()
                    .map(|d| (d.clone(), r.numa.get(d).copied().unwrap_or(-1)));
                (k.clone(), ids.collect())
            })
            .collect()
    }

    /// The devices `container` of pod `uid` holds, by resource, with NUMA nodes.
    pub fn container_devices(
        &self,
        uid: &str,
        container: &str,
    ) -> BTreeMap<String, Vec<(String, i64)>> {
        let st = self.lock();
        let Some(held) = st.pods.get(uid).and_then(|p| p.get(container)) else {
            return BTreeMap::new();
        };
        held.iter()
            .map(|(res, a)| {
                let numa = st.resources.get(res).map(|r| &r.numa);
                let ids = a.devices.iter().map(|d| {
                    (
                        d.clone(),
                        numa.and_then(|n| n.get(d)).copied().unwrap_or(-1),
                    )
                });
                (res.clone(), ids.collect())
            })
            .collect()
    }

    /// How many devices of `resource` pods hold, when pod `uid` holds some of them (the
    /// kubelet's sanitizeNodeAllocatable: a pod already holding devices fits whatever the Node
    /// says, as after a restart before its plugin registered again).
    pub fn held_for(&self, uid: &str, resource: &str) -> Option<usize> {
        let st = self.lock();
        let holds = st
            .pods
            .get(uid)
            .is_some_and(|p| p.values().any(|c| c.contains_key(resource)));
        holds.then(|| allocated(&st.pods, resource).len())
    }

    /// The kubelet's UpdateAllocatedDevices: frees the devices of every pod not in `active` (the
    /// pods known and not terminated, admitted or still to be).
    pub fn free_inactive(&self, active: &std::collections::HashSet<&str>) {
        let mut st = self.lock();
        let before = st.pods.len();
        st.pods.retain(|u, _| active.contains(u.as_str()));
        if before != st.pods.len() {
            info!(
                pods = before - st.pods.len(),
                "devices of pods no longer active freed"
            );
            self.save(&st);
        }
    }

    /// The kubelet's Allocate at admission (resourceAllocator): reserves free healthy devices for
    /// each of `pod`'s init and app containers; init containers' devices are reused by the later
    /// containers; what a container already holds (a restart) it keeps.
    pub fn allocate(&self, pod: &Pod) -> Result<(), AllocateError> {
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let mut st = self.lock();
        let result = allocate_pod(&mut st, pod, &uid);
        if result.is_ok() {
            self.save(&st);
        }
        result
    }

    /// Drops the allocations of pod `uid` (a pod rejected after its devices were reserved).
    pub fn release(&self, uid: &str) {
        let mut st = self.lock();
        if st.pods.remove(uid).is_some() {
            self.save(&st);
        }
    }

    /// The devices held by container `container` of pod `uid` for which the plugin's Allocate
    /// has not answered yet, by resource.
    pub fn pending(&self, uid: &str, container: &str) -> Vec<(String, Vec<String>)> {
        let st = self.lock();
        let Some(held) = st.pods.get(uid).and_then(|p| p.get(container)) else {
            return Vec::new();
        };
        held.iter()
            .filter(|(_, a)| a.response.is_none())
            .map(|(r, a)| (r.clone(), a.devices.iter().cloned().collect()))
            .collect()
    }

    /// Records the plugin's Allocate answer for a container's devices of `resource`.
    pub fn answered(&self, uid: &str, container: &str, resource: &str, response: Vec<u8>) {
        let mut st = self.lock();
        if let Some(a) = st
            .pods
            .get_mut(uid)
            .and_then(|p| p.get_mut(container))
            .and_then(|c| c.get_mut(resource))
        {
            a.response = Some(response);
            self.save(&st);
        }
    }

    /// The kubelet's GetDeviceRunContainerOptions: asks each plugin whose devices container
    /// `container` of pod `uid` holds for its Allocate answer (once: the answer is
    /// checkpointed), calls PreStartContainer when the plugin wants it, and applies the answers
    /// to `config`. An error is the container's CreateContainerConfigError.
    pub async fn run_options(
        &self,
        uid: &str,
        container: &str,
        config: &mut bosun_cri::types::ContainerConfig,
    ) -> Result<(), String> {
        for (resource, ids) in self.pending(uid, container) {
            let Some(socket) = self.endpoint(&resource) else {
                return Err(format!("cannot allocate unregistered device {resource}"));
            };
            let answer = plugin::PluginClient::new(&socket)
                .allocate(ids)
                .await
                .map_err(|e| e.to_string())?;
            self.answered(uid, container, &resource, answer);
        }
        for (resource, ids) in self.held(uid, container) {
            let pre_start = self
                .lock()
                .resources
                .get(&resource)
                .is_some_and(|r| r.pre_start);
            if let (true, Some(socket)) = (pre_start, self.endpoint(&resource)) {
                plugin::PluginClient::new(&socket)
                    .pre_start(ids)
                    .await
                    .map_err(|e| e.to_string())?;
            }
        }
        let mut answers = Vec::new();
        for bytes in self.responses(uid, container) {
            answers.push(
                options::decode(&bytes)
                    .map_err(|e| format!("device allocation of {container}: {e}"))?,
            );
        }
        options::apply(config, &answers);
        Ok(())
    }

    /// The devices container `container` of pod `uid` holds, by resource.
    fn held(&self, uid: &str, container: &str) -> Vec<(String, Vec<String>)> {
        let st = self.lock();
        st.pods
            .get(uid)
            .and_then(|p| p.get(container))
            .into_iter()
            .flatten()
            .map(|(r, a)| (r.clone(), a.devices.iter().cloned().collect()))
            .collect()
    }

    /// The Allocate answers of a container, by resource.
    pub fn responses(&self, uid: &str, container: &str) -> Vec<Vec<u8>> {
        let st = self.lock();
        st.pods
            .get(uid)
            .and_then(|p| p.get(container))
            .into_iter()
            .flat_map(|c| c.values())
            .filter_map(|a| a.response.clone())
            .collect()
    }
}

/// The devices of `resource` held by any container.
fn allocated(pods: &PodDevices, resource: &str) -> BTreeSet<String> {
    pods.values()
        .flat_map(|p| p.values())
        .filter_map(|c| c.get(resource))
        .flat_map(|a| a.devices.iter().cloned())
        .collect()
}

/// Reserves devices for every container of `pod` (init containers first, their devices
/// reusable by the containers after them unless they are sidecars); on an error nothing new
/// stays reserved.
fn allocate_pod(st: &mut State, pod: &Pod, uid: &str) -> Result<(), AllocateError> {
    let Some(spec) = pod.spec.as_ref() else {
        return Ok(());
    };
    let saved = st.pods.get(uid).cloned();
    let mut reusable: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let inits = spec.init_containers.iter().flatten().map(|c| (c, true));
    let apps = spec.containers.iter().map(|c| (c, false));
    for (c, init) in inits.chain(apps) {
        let sidecar = init && c.restart_policy.as_deref() == Some("Always");
        for (resource, n) in container_requests(c, &st.resources) {
            let got = match allocate_container(st, uid, &c.name, &resource, n, &reusable) {
                Ok(got) => got,
                Err(e) => {
                    match saved {
                        Some(s) => st.pods.insert(uid.to_string(), s),
                        None => st.pods.remove(uid),
                    };
                    return Err(e);
                }
            };
            let pool = reusable.entry(resource).or_default();
            if init && !sidecar {
                pool.extend(got);
            } else {
                pool.retain(|d| !got.contains(d));
            }
        }
    }
    Ok(())
}

/// The kubelet's devicesToAllocate for one container: what it already holds stays (a changed
/// count is an error), else reusable devices first, then free healthy ones in ID order.
fn allocate_container(
    st: &mut State,
    uid: &str,
    container: &str,
    resource: &str,
    n: usize,
    reusable: &BTreeMap<String, BTreeSet<String>>,
) -> Result<BTreeSet<String>, AllocateError> {
    if let Some(held) = st
        .pods
        .get(uid)
        .and_then(|p| p.get(container))
        .and_then(|c| c.get(resource))
    {
        if held.devices.len() != n {
            return Err(AllocateError::Changed {
                pod: uid.into(),
                container: container.into(),
                resource: resource.into(),
                from: held.devices.len(),
                to: n,
            });
        }
        return Ok(held.devices.clone());
    }
    let healthy = st
        .resources
        .get(resource)
        .map(|r| r.healthy.clone())
        .unwrap_or_default();
    if healthy.is_empty() {
        return Err(AllocateError::NoHealthy(resource.into()));
    }
    let mut got: BTreeSet<String> = reusable
        .get(resource)
        .into_iter()
        .flatten()
        .filter(|d| healthy.contains(*d))
        .take(n)
        .cloned()
        .collect();
    if got.len() < n {
        let used = allocated(&st.pods, resource);
        let free: Vec<&String> = healthy
            .iter()
            .filter(|d| !used.contains(*d) && !got.contains(*d))
            .collect();
        let needed = n - got.len();
        if free.len() < needed {
            return Err(AllocateError::Unavailable {
                resource: resource.into(),
                requested: needed,
                available: free.len(),
            });
        }
        got.extend(free.into_iter().take(needed).cloned());
    }
    st.pods
        .entry(uid.into())
        .or_default()
        .entry(container.into())
        .or_default()
        .insert(
            resource.into(),
            Allocation {
                devices: got.clone(),
                response: None,
            },
        );
    Ok(got)
}

#[cfg(test)]
mod tests;
