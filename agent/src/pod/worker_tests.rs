//! The real pod worker ([`worker::spawn`]) against a scripted runtime: a start, a crash and its
//! back-off, a Terminate arriving in the middle of a start, and the final delete of a pod deleted
//! in the API. The runtime is [`Scripted`] behind the [`PodRuntime`] seam (it holds a call the
//! test names until the test releases it), the API server a tower service that records its
//! requests, the events a channel. `manager.rs` drives its workers on the same script.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bosun_cri::types::{
    AuthConfig, Container, ContainerConfig, ContainerFilter, ContainerState, ContainerStatus,
    Image, LinuxContainerResources, PodSandbox, PodSandboxConfig, PodSandboxFilter,
    PodSandboxNetworkStatus, PodSandboxState, PodSandboxStatus, StatusResponse,
};
use bosun_cri::{Code, CriError, ExecSyncOutput};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use k8s_openapi::api::core::v1::{Pod, PodStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;

use super::context::NodeContext;
use super::runtime::{PodObserver, PodRuntime};
use super::runtime_class::RuntimeClasses;
use super::worker::{self, PodUpdate, WorkerHandle};
use crate::cgroup::fs::V2;
use crate::cgroup::{ContainerManager, Hierarchy};
use crate::events::{PodEvent, Recorder};
use crate::prober::{ProbeFuture, ProbeRequest, ProbeResult, Prober, Runner};
use crate::runtime::PodDirs;
use crate::status::StatusStore;

/// The UID of the pod of [`pod`].
pub(super) const UID: &str = "uid-1";

/// What the scripted runtime holds, and the calls that change it, in order.
#[derive(Default)]
pub(super) struct Held {
    /// Sandboxes, oldest first.
    pub sandboxes: Vec<PodSandbox>,
    /// Containers with their status, oldest first.
    pub containers: Vec<(Container, ContainerStatus)>,
    images: HashSet<String>,
    sandboxes_made: usize,
    /// `<CRI call> <what it named>` of every call but the reads.
    pub calls: Vec<String>,
    /// The reads of one pod (lists by its UID, ContainerStatus), counted.
    pub pod_reads: usize,
    clock: i64,
}

impl Held {
    fn tick(&mut self) -> i64 {
        self.clock += 1_000_000_000;
        self.clock
    }

    /// Container `id` and its status, if the runtime holds it.
    fn container_mut(&mut self, id: &str) -> Option<&mut (Container, ContainerStatus)> {
        self.containers.iter_mut().find(|(c, _)| c.id == id)
    }

    /// Ids of the running containers.
    pub fn running(&self) -> Vec<&str> {
        self.containers
            .iter()
            .filter(|(_, s)| s.state == ContainerState::ContainerRunning as i32)
            .map(|(c, _)| c.id.as_str())
            .collect()
    }

    /// How many calls begin with `prefix`.
    pub fn count(&self, prefix: &str) -> usize {
        self.calls.iter().filter(|c| c.starts_with(prefix)).count()
    }
}

/// A call held until the test releases it: `entered` is notified when the worker makes it.
#[derive(Clone)]
struct Gate {
    entered: Arc<Notify>,
    release: Arc<Semaphore>,
}

/// A runtime answering from [`Held`]; RunPodSandbox, PullImage, CreateContainer, StopContainer
/// and the like can be held (see [`Scripted::hold`]).
#[derive(Default)]
pub(super) struct Scripted {
    held: Mutex<Held>,
    gates: Mutex<HashMap<&'static str, Gate>>,
}

fn not_found(op: &'static str) -> CriError {
    CriError::Status {
        op,
        code: Code::NotFound,
        message: "scripted".into(),
    }
}

fn selected(labels: &HashMap<String, String>, selector: &HashMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

impl Scripted {
    /// Holds every call `op` (a CRI method name) from now until [`Scripted::release`]; the
    /// returned Notify fires when the worker makes one.
    pub fn hold(&self, op: &'static str) -> Arc<Notify> {
        let gate = Gate {
            entered: Arc::new(Notify::new()),
            release: Arc::new(Semaphore::new(0)),
        };
        let entered = gate.entered.clone();
        self.gates.lock().unwrap().insert(op, gate);
        entered
    }

    /// Lets the held calls `op` go on, and the later ones through.
    pub fn release(&self, op: &'static str) {
        if let Some(g) = self.gates.lock().unwrap().remove(op) {
            g.release.add_permits(Semaphore::MAX_PERMITS / 2);
        }
    }

    /// Records `call` and waits while `op` is held.
    async fn enter(&self, op: &'static str, call: String) {
        self.held.lock().unwrap().calls.push(call);
        let gate = self.gates.lock().unwrap().get(op).cloned();
        if let Some(g) = gate {
            g.entered.notify_one();
            let _ = g.release.acquire().await.map(|p| p.forget());
        }
    }

    /// Reads what the runtime holds.
    pub fn with<T>(&self, f: impl FnOnce(&Held) -> T) -> T {
        f(&self.held.lock().unwrap())
    }

    /// Container `id` exits with `code`, as a crash.
    pub fn exit(&self, id: &str, code: i32) {
        let mut held = self.held.lock().unwrap();
        let now = held.tick();
        let (c, st) = held
            .container_mut(id)
            .unwrap_or_else(|| panic!("no container {id}"));
        c.state = ContainerState::ContainerExited as i32;
        st.state = ContainerState::ContainerExited as i32;
        st.exit_code = code;
        st.finished_at = now;
    }

    /// Waits (10 s at most) until `cond` holds of the runtime.
    pub async fn wait_for(&self, what: &str, cond: impl Fn(&Held) -> bool) {
        for _ in 0..2000 {
            if self.with(&cond) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!(
            "{what}: not within 10 s; calls: {:?}",
            self.with(|h| h.calls.clone())
        );
    }
}

impl PodObserver for Scripted {
    async fn list_pod_sandbox(
        &self,
        f: Option<PodSandboxFilter>,
    ) -> bosun_cri::Result<Vec<PodSandbox>> {
        let mut held = self.held.lock().unwrap();
        let selector = f.map(|f| f.label_selector).unwrap_or_default();
        held.pod_reads += usize::from(!selector.is_empty());
        let all = held.sandboxes.iter();
        Ok(all
            .filter(|s| selected(&s.labels, &selector))
            .cloned()
            .collect())
    }

    async fn list_containers(
        &self,
        f: Option<ContainerFilter>,
    ) -> bosun_cri::Result<Vec<Container>> {
        let mut held = self.held.lock().unwrap();
        let selector = f.map(|f| f.label_selector).unwrap_or_default();
        held.pod_reads += usize::from(!selector.is_empty());
        let all = held.containers.iter().map(|(c, _)| c);
        Ok(all
            .filter(|c| selected(&c.labels, &selector))
            .cloned()
            .collect())
    }

    async fn container_status(&self, id: &str) -> bosun_cri::Result<ContainerStatus> {
        let mut held = self.held.lock().unwrap();
        held.pod_reads += 1;
        let found = held.containers.iter().find(|(c, _)| c.id == id);
        found
            .map(|(_, s)| s.clone())
            .ok_or_else(|| not_found("ContainerStatus"))
    }
}

impl PodRuntime for Scripted {
    fn runtime_name(&self) -> &str {
        "scripted"
    }

    async fn status(&self) -> bosun_cri::Result<StatusResponse> {
        Ok(StatusResponse::default())
    }

    async fn run_pod_sandbox(
        &self,
        config: PodSandboxConfig,
        _handler: &str,
    ) -> bosun_cri::Result<String> {
        let attempt = config.metadata.as_ref().map_or(0, |m| m.attempt);
        self.enter("RunPodSandbox", format!("RunPodSandbox {attempt}"))
            .await;
        let mut held = self.held.lock().unwrap();
        let id = format!("sb-{}", held.sandboxes_made);
        held.sandboxes_made += 1;
        let created_at = held.tick();
        held.sandboxes.push(PodSandbox {
            id: id.clone(),
            metadata: config.metadata,
            state: PodSandboxState::SandboxReady as i32,
            created_at,
            labels: config.labels,
            annotations: config.annotations,
            ..Default::default()
        });
        Ok(id)
    }

    async fn pod_sandbox_status(&self, id: &str) -> bosun_cri::Result<Option<PodSandboxStatus>> {
        Ok(Some(PodSandboxStatus {
            id: id.into(),
            network: Some(PodSandboxNetworkStatus {
                ip: "10.0.0.5".into(),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn stop_pod_sandbox(&self, id: &str) -> bosun_cri::Result<()> {
        self.enter("StopPodSandbox", format!("StopPodSandbox {id}"))
            .await;
        let mut held = self.held.lock().unwrap();
        let now = held.tick();
        for s in held.sandboxes.iter_mut().filter(|s| s.id == id) {
            s.state = PodSandboxState::SandboxNotready as i32;
        }
        // As the runtime: its containers are killed with it.
        for (c, st) in held
            .containers
            .iter_mut()
            .filter(|(c, _)| c.pod_sandbox_id == id)
            .filter(|(_, s)| s.state != ContainerState::ContainerExited as i32)
        {
            c.state = ContainerState::ContainerExited as i32;
            st.state = ContainerState::ContainerExited as i32;
            st.exit_code = 137;
            st.finished_at = now;
        }
        Ok(())
    }

    async fn remove_pod_sandbox(&self, id: &str) -> bosun_cri::Result<()> {
        self.enter("RemovePodSandbox", format!("RemovePodSandbox {id}"))
            .await;
        let mut held = self.held.lock().unwrap();
        held.sandboxes.retain(|s| s.id != id);
        held.containers.retain(|(c, _)| c.pod_sandbox_id != id);
        Ok(())
    }

    async fn image_status(&self, image: &str) -> bosun_cri::Result<Option<Image>> {
        let held = self.held.lock().unwrap();
        Ok(held.images.contains(image).then(|| Image {
            id: format!("sha256:{image}"),
            ..Default::default()
        }))
    }

    async fn pull_image(
        &self,
        image: &str,
        _auth: Option<AuthConfig>,
    ) -> bosun_cri::Result<String> {
        self.enter("PullImage", format!("PullImage {image}")).await;
        self.held.lock().unwrap().images.insert(image.to_string());
        Ok(format!("sha256:{image}"))
    }

    async fn create_container(
        &self,
        sandbox_id: &str,
        config: ContainerConfig,
        _sandbox_config: PodSandboxConfig,
    ) -> bosun_cri::Result<String> {
        let meta = config.metadata.clone().unwrap_or_default();
        let call = format!("CreateContainer {}", meta.name);
        self.enter("CreateContainer", call).await;
        let mut held = self.held.lock().unwrap();
        let id = format!("{}-{}", meta.name, meta.attempt);
        let created_at = held.tick();
        let container = Container {
            id: id.clone(),
            pod_sandbox_id: sandbox_id.into(),
            metadata: config.metadata,
            image: config.image,
            state: ContainerState::ContainerCreated as i32,
            created_at,
            labels: config.labels,
            annotations: config.annotations,
            ..Default::default()
        };
        let status = ContainerStatus {
            id: id.clone(),
            state: ContainerState::ContainerCreated as i32,
            created_at,
            ..Default::default()
        };
        held.containers.push((container, status));
        Ok(id)
    }

    async fn start_container(&self, id: &str) -> bosun_cri::Result<()> {
        self.enter("StartContainer", format!("StartContainer {id}"))
            .await;
        let mut held = self.held.lock().unwrap();
        let now = held.tick();
        let (c, st) = held
            .container_mut(id)
            .ok_or_else(|| not_found("StartContainer"))?;
        c.state = ContainerState::ContainerRunning as i32;
        st.state = ContainerState::ContainerRunning as i32;
        st.started_at = now;
        Ok(())
    }

    async fn stop_container(&self, id: &str, _timeout: Duration) -> bosun_cri::Result<()> {
        self.enter("StopContainer", format!("StopContainer {id}"))
            .await;
        let mut held = self.held.lock().unwrap();
        let now = held.tick();
        let Some((c, st)) = held.container_mut(id) else {
            return Err(not_found("StopContainer"));
        };
        if st.state != ContainerState::ContainerExited as i32 {
            c.state = ContainerState::ContainerExited as i32;
            st.state = ContainerState::ContainerExited as i32;
            st.exit_code = 137;
            st.finished_at = now;
        }
        Ok(())
    }

    async fn exec_sync(
        &self,
        id: &str,
        cmd: Vec<String>,
        _timeout: Duration,
    ) -> bosun_cri::Result<ExecSyncOutput> {
        let call = format!("ExecSync {id} {}", cmd.join(" "));
        self.enter("ExecSync", call).await;
        Ok(ExecSyncOutput {
            stdout: vec![],
            stderr: vec![],
            exit_code: 0,
        })
    }

    async fn update_container_resources(
        &self,
        id: &str,
        linux: LinuxContainerResources,
    ) -> bosun_cri::Result<()> {
        let call = format!(
            "UpdateContainerResources {id} cpu_quota={} memory={}",
            linux.cpu_quota, linux.memory_limit_in_bytes
        );
        self.enter("UpdateContainerResources", call).await;
        Ok(())
    }
}

/// Probes that always pass (none of these pods has one).
struct NoProbes;

impl Runner for NoProbes {
    fn run(&self, _: ProbeRequest) -> ProbeFuture {
        Box::pin(async { ProbeResult::Success(String::new()) })
    }
}

/// The API server: `<METHOD> <path>?<query> <body>` of every request, in order.
pub(super) type Requests = Arc<Mutex<Vec<String>>>;

/// An API server that lists no services, deletes pods, and knows nothing else; it records
/// every request in `requests`.
fn api(requests: Requests) -> kube::Client {
    let svc = tower::service_fn(move |req: http::Request<kube::client::Body>| {
        let requests = requests.clone();
        async move {
            let (method, uri) = (req.method().clone(), req.uri().clone());
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let line = format!("{method} {uri} {}", String::from_utf8_lossy(&body));
            requests.lock().unwrap().push(line);
            let (code, answer) = match (method.as_str(), uri.path()) {
                ("GET", "/api/v1/services") => (
                    200,
                    serde_json::json!({"apiVersion": "v1", "kind": "ServiceList",
                        "metadata": {}, "items": []}),
                ),
                ("DELETE", p) if p.starts_with("/api/v1/namespaces/default/pods/") => (
                    200,
                    serde_json::json!({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": "p", "namespace": "default", "uid": UID}}),
                ),
                _ => (
                    404,
                    serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                        "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
            };
            let res = http::Response::builder()
                .status(code)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(answer.to_string())))
                .unwrap();
            Ok::<_, Infallible>(res)
        }
    });
    kube::Client::new(svc, "default")
}

/// A node whose pod workers run on a [`Scripted`] runtime, with an API server and an event
/// channel the test reads.
pub(super) struct TestNode {
    /// The context the workers share; `ctx.cri` is the script.
    pub ctx: Arc<NodeContext<Scripted>>,
    /// The RuntimeClass reader (no classes).
    pub classes: Arc<RuntimeClasses>,
    /// What the API server was asked.
    pub requests: Requests,
    events: mpsc::Receiver<PodEvent>,
    /// Ends the prober and the workers.
    pub cancel: CancellationToken,
    _dir: tempfile::TempDir,
}

impl TestNode {
    /// A node on a fresh script, its directories in a temporary one.
    pub fn new() -> TestNode {
        Self::with_qos_cgroups(false)
    }

    /// [`TestNode::new`], with pod cgroups under QoS tiers (cgroupsPerQOS) when `per_qos`.
    pub fn with_qos_cgroups(per_qos: bool) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let cancel = CancellationToken::new();
        let (events, rx) = Recorder::channel(1024);
        let requests = Requests::default();
        let names = Hierarchy::new(crate::config::CgroupDriver::Cgroupfs, "/", per_qos);
        let dirs = PodDirs {
            root_dir: dir.path().join("root"),
            pod_logs_dir: dir.path().join("pods"),
            container_logs_link_dir: dir.path().join("containers"),
            cluster_dns: vec![],
            cluster_domain: "cluster.local".into(),
            resolv_conf: "".into(),
            cgroups: names.clone(),
        };
        let ctx = NodeContext {
            cri: Scripted::default(),
            dirs,
            node_name: "node-1".into(),
            host_ip: "192.168.0.2".into(),
            host_ips: vec!["192.168.0.2".into()],
            memory_capacity: 1 << 30,
            allocatable: Default::default(),
            statuses: StatusStore::default(),
            pulls: Arc::new(Semaphore::new(1)),
            api: Some(api(requests.clone())),
            csi: Default::default(),
            devices: crate::devicemanager::DeviceManager::new(dir.path()),
            objects: None,
            services: Default::default(),
            events,
            cgroups: ContainerManager::new(Box::new(V2::new(dir.path())), names, None),
            prober: Prober::spawn(Arc::new(NoProbes), Recorder::disabled(), cancel.clone()),
            seccomp_default: false,
            seccomp_root: dir.path().join("seccomp"),
            sync_frequency: std::time::Duration::from_secs(60),
            image_volumes: Ok(()),
            allocations: Default::default(),
            pod_cache: Default::default(),
        };
        TestNode {
            ctx: Arc::new(ctx),
            classes: Arc::new(RuntimeClasses::new(None)),
            requests,
            events: rx,
            cancel,
            _dir: dir,
        }
    }

    /// Spawns the worker of `pod`.
    pub fn spawn(&self, pod: Arc<Pod>) -> WorkerHandle {
        let cancel = self.cancel.child_token();
        worker::spawn(self.ctx.clone(), self.classes.clone(), pod, cancel)
    }

    /// The script.
    pub fn rt(&self) -> &Scripted {
        &self.ctx.cri
    }

    /// The reasons of the events recorded since the last call.
    pub fn events(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Ok(e) = self.events.try_recv() {
            out.push(e.reason);
        }
        out
    }

    /// Waits (10 s at most) until the pod's stored status satisfies `cond`.
    pub async fn wait_for_status(&self, what: &str, cond: impl Fn(&PodStatus) -> bool) {
        for _ in 0..2000 {
            if self.ctx.statuses.get(UID).is_some_and(|s| cond(&s)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let calls = self.rt().with(|h| h.calls.clone());
        panic!(
            "{what}: not within 10 s; status {:?}; calls {calls:?}",
            self.ctx.statuses.get(UID)
        );
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Pod `p` in `default` with one container `app` (busybox:1, pulled if not present), restart
/// policy Always, a grace period of 1 s.
pub(super) fn pod() -> Arc<Pod> {
    Arc::new(
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "default", "uid": UID},
            "spec": {"restartPolicy": "Always", "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "app", "image": "busybox:1"}]},
        }))
        .unwrap(),
    )
}

/// [`pod`] deleted in the API with a grace period of 1 s.
fn deleted() -> Arc<Pod> {
    let mut p = Pod::clone(&pod());
    p.metadata.deletion_timestamp = Some(Time(k8s_openapi::jiff::Timestamp::now()));
    p.metadata.deletion_grace_period_seconds = Some(1);
    Arc::new(p)
}

/// The state of container `name` in `status`: `running`, `terminated`, or the waiting reason.
pub(super) fn state_of(status: &PodStatus, name: &str) -> Option<String> {
    let c = status
        .container_statuses
        .iter()
        .flatten()
        .find(|c| c.name == name)?;
    let st = c.state.as_ref()?;
    if st.running.is_some() {
        return Some("running".into());
    }
    if st.terminated.is_some() {
        return Some("terminated".into());
    }
    st.waiting.as_ref().and_then(|w| w.reason.clone())
}

/// Waits (10 s at most) for the worker's task to end.
async fn ended(w: WorkerHandle) {
    tokio::time::timeout(Duration::from_secs(10), w.task)
        .await
        .expect("the worker ends within 10 s")
        .expect("the worker does not panic");
}

#[tokio::test]
async fn a_pod_starts_sandbox_then_image_then_container() {
    let mut node = TestNode::new();
    let _w = node.spawn(pod());
    node.wait_for_status("app running", |s| {
        state_of(s, "app").as_deref() == Some("running")
    })
    .await;
    let calls = node.rt().with(|h| h.calls.clone());
    let want = [
        "RunPodSandbox 0",
        "PullImage busybox:1",
        "CreateContainer app",
        "StartContainer app-0",
    ];
    assert_eq!(calls, want);
    let status = node.ctx.statuses.get(UID).unwrap();
    assert_eq!(status.phase.as_deref(), Some("Running"));
    assert_eq!(status.pod_ip.as_deref(), Some("10.0.0.5"));
    assert_eq!(node.events(), ["Pulling", "Pulled", "Created", "Started"]);
}

#[tokio::test]
async fn a_crash_restarts_at_once_then_backs_off() {
    let mut node = TestNode::new();
    let w = node.spawn(pod());
    let rt = node.rt();
    rt.wait_for("app-0 running", |h| h.running() == ["app-0"])
        .await;
    // The first crash: restarted at once, restart count 1.
    rt.exit("app-0", 1);
    w.wake.notify_one();
    rt.wait_for("app-1 running", |h| h.running() == ["app-1"])
        .await;
    node.wait_for_status("app running again", |s| {
        state_of(s, "app").as_deref() == Some("running")
    })
    .await;
    node.events();
    // The second: the crash loop's first 10 s back-off, CrashLoopBackOff in the status.
    node.rt().exit("app-1", 1);
    w.wake.notify_one();
    node.wait_for_status("CrashLoopBackOff", |s| {
        state_of(s, "app").as_deref() == Some("CrashLoopBackOff")
    })
    .await;
    let status = node.ctx.statuses.get(UID).unwrap();
    let app = &status.container_statuses.as_ref().unwrap()[0];
    let waiting = app.state.as_ref().unwrap().waiting.as_ref().unwrap();
    assert_eq!(
        waiting.message.as_deref(),
        Some("back-off 10s restarting failed container=app pod=p_default(uid-1)")
    );
    assert!(node.events().contains(&"BackOff".to_string()));
    // Woken again within the back-off, it still starts nothing.
    w.wake.notify_one();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rt = node.rt();
    assert_eq!(rt.with(|h| h.count("CreateContainer")), 2);
    assert!(rt.with(|h| h.running().is_empty()));
}

/// Holds `op` while the pod starts, sends `update` in the middle of it, then lets the start go
/// on; returns the node once the worker has ended.
async fn terminate_during(op: &'static str, update: PodUpdate) -> TestNode {
    let node = TestNode::new();
    let entered = node.rt().hold(op);
    let w = node.spawn(pod());
    tokio::time::timeout(Duration::from_secs(10), entered.notified())
        .await
        .unwrap_or_else(|_| panic!("{op} not called"));
    w.tx.send(update).unwrap();
    node.rt().release(op);
    ended(w).await;
    node
}

#[tokio::test]
async fn terminate_during_start_stops_and_removes_what_the_start_made() {
    for op in [
        "RunPodSandbox",
        "PullImage",
        "CreateContainer",
        "StartContainer",
    ] {
        let update = PodUpdate::Terminate(None, Some(deleted()));
        let node = terminate_during(op, update).await;
        let rt = node.rt();
        // The start went on to the end, then the termination stopped and removed it all.
        let calls = rt.with(|h| h.calls.clone());
        let tail = &calls[calls.len() - 3..];
        assert_eq!(
            tail,
            [
                "StopContainer app-0",
                "StopPodSandbox sb-0",
                "RemovePodSandbox sb-0"
            ],
            "{op}: {calls:?}"
        );
        assert!(
            rt.with(|h| h.sandboxes.is_empty() && h.containers.is_empty()),
            "{op}"
        );
        assert_eq!(node.ctx.statuses.get(UID), None, "{op}: the status is gone");
        // The pod deleted in the API: its deletion finished with grace 0 and its UID.
        let requests = node.requests.lock().unwrap().clone();
        let deletes: Vec<&String> = requests
            .iter()
            .filter(|r| r.starts_with("DELETE"))
            .collect();
        assert_eq!(deletes.len(), 1, "{op}: {requests:?}");
        let delete = deletes[0];
        assert!(
            delete.starts_with("DELETE /api/v1/namespaces/default/pods/p"),
            "{delete}"
        );
        let body: serde_json::Value =
            serde_json::from_str(delete.split_once(' ').unwrap().1.split_once(' ').unwrap().1)
                .unwrap();
        assert_eq!(body["gracePeriodSeconds"], 0, "{delete}");
        assert_eq!(body["preconditions"]["uid"], UID, "{delete}");
    }
}

#[tokio::test]
async fn a_pod_no_longer_wanted_is_removed_but_not_deleted_from_the_api() {
    let node = terminate_during("PullImage", PodUpdate::Terminate(None, None)).await;
    let rt = node.rt();
    assert!(rt.with(|h| h.sandboxes.is_empty() && h.containers.is_empty()));
    assert_eq!(node.ctx.statuses.get(UID), None);
    let requests = node.requests.lock().unwrap().clone();
    assert!(
        !requests.iter().any(|r| r.starts_with("DELETE")),
        "{requests:?}"
    );
}

/// A start held back by its volumes is retried at 2 s, then less often as the failures go on,
/// never less often than the resync: FailedMount events slow down as the kubelet's do.
#[test]
fn volume_retries_back_off_to_the_resync() {
    let mut waits = Vec::new();
    let mut prev = None;
    for _ in 0..5 {
        let next = worker::next_volume_retry(prev);
        waits.push(next.as_secs());
        prev = Some(next);
    }
    assert_eq!(waits, [2, 4, 8, 10, 10]);
}

/// [`pod`] with requests and limits on `app`, at generation `generation`.
fn sized(cpu: &str, memory: &str, generation: i64) -> Arc<Pod> {
    let mut p = Pod::clone(&pod());
    p.metadata.generation = Some(generation);
    let c = &mut p.spec.as_mut().unwrap().containers[0];
    c.resources = Some(
        serde_json::from_value(serde_json::json!({
            "requests": {"cpu": cpu, "memory": memory},
            "limits": {"cpu": cpu, "memory": memory}
        }))
        .unwrap(),
    );
    Arc::new(p)
}

#[tokio::test]
async fn an_allocated_resize_is_applied_memory_first_without_a_restart() {
    let mut node = TestNode::with_qos_cgroups(true);
    node.ctx
        .cgroups
        .start(&Default::default())
        .await
        .expect("QoS tiers");
    let first = sized("200m", "64Mi", 1);
    node.ctx.allocations.allocate(&first);
    let w = node.spawn(first);
    node.rt()
        .wait_for("app-0 running", |h| h.running() == ["app-0"])
        .await;
    node.wait_for_status("app running", |s| {
        state_of(s, "app").as_deref() == Some("running")
    })
    .await;
    let ctx = node.ctx.clone();
    let cgroups = &ctx.cgroups;
    let path = cgroups.names().literal(
        &cgroups
            .names()
            .pod(crate::resource::QosClass::Guaranteed, UID),
    );
    let read = |f: &str| cgroups.backend().read(&path, f).unwrap_or_default();
    assert_eq!(read("cpu.max").trim(), "20000 100000");
    // The manager accepted the resize: the worker gets the pod at its new allocation.
    let grown = sized("300m", "96Mi", 2);
    node.ctx.allocations.allocate(&grown);
    node.ctx.allocations.set_in_progress(UID, "", "", Some(2));
    node.events();
    let _ = w.tx.send(PodUpdate::Sync(grown));
    node.wait_for_status("the new limits reported", |s| {
        let c = &s.container_statuses.as_ref().unwrap()[0];
        let limits = c.resources.as_ref().and_then(|r| r.limits.as_ref());
        limits.is_some_and(|l| l["cpu"].0 == "300m" && l["memory"].0 == "96Mi")
            && !s
                .conditions
                .iter()
                .flatten()
                .any(|c| c.type_ == "PodResizeInProgress")
    })
    .await;
    // Memory, then cpu, on the running container: no restart; the pod cgroup follows.
    let calls = node.rt().with(|h| h.calls.clone());
    let updates: Vec<&String> = calls
        .iter()
        .filter(|c| c.starts_with("UpdateContainerResources"))
        .collect();
    assert_eq!(
        updates,
        [
            "UpdateContainerResources app-0 cpu_quota=20000 memory=100663296",
            "UpdateContainerResources app-0 cpu_quota=30000 memory=100663296"
        ]
    );
    assert!(node.rt().with(|h| h.running() == ["app-0"]));
    assert_eq!(read("cpu.max").trim(), "30000 100000");
    assert_eq!(read("memory.max").trim(), "100663296");
    assert_eq!(node.events(), ["ResizeCompleted"]);
    let status = node.ctx.statuses.get(UID).unwrap();
    let c = &status.container_statuses.as_ref().unwrap()[0];
    assert_eq!(c.allocated_resources.as_ref().unwrap()["cpu"].0, "300m");
    assert_eq!(c.restart_count, 0);
}
