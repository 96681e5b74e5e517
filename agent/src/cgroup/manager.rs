//! The container manager: creates the QoS hierarchy at start, each pod's cgroup with its limits
//! before the sandbox, keeps the QoS tiers' shares in step as pods come and go, and removes the
//! cgroups of pods that are gone (qos_container_manager_linux.go, pod_container_manager_linux.go,
//! node_container_manager_linux.go). With the systemd driver every cgroup is first a transient
//! slice unit with its limits as unit properties, then its files are written, as the kubelet's
//! cgroup_manager_linux.go Create (Apply(-1), then Set), Update (Set) and Destroy (StopUnit, then
//! rmdir) do through libcontainer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::Pod;
use tracing::{info, warn};

use super::dbus::Units;
use super::fs::Backend;
use super::name::Hierarchy;
use super::resources::{MIN_SHARES, ResourceConfig, milli_cpu_to_shares, pod_resource_config};
use super::systemd::{resource_properties, slice_unit, start_properties};
use super::{CgroupError, CgroupName};
use crate::resource::allocatable::{self, Resources};
use crate::resource::{QosClass, pod_request, qos_class};

/// The pod cgroups and QoS tiers of one node.
pub struct ContainerManager {
    backend: Box<dyn Backend>,
    /// systemd's units, with the systemd driver: every cgroup is a slice unit made first.
    units: Option<Arc<dyn Units>>,
    names: Hierarchy,
    pod_pids_limit: Option<u64>,
    /// Pods with a cgroup, by UID: their QoS class and cpu request (millicores), the input of
    /// the burstable tier's shares.
    active: Mutex<HashMap<String, (QosClass, i64)>>,
}

/// A pod cgroup found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodCgroup {
    /// The pod's UID.
    pub uid: String,
    /// The cgroup's literal path.
    pub path: String,
}

impl ContainerManager {
    /// A manager writing through `backend` with the names of `names`; `pod_pids_limit` is
    /// podPidsLimit (None: no per-pod limit).
    pub fn new(
        backend: Box<dyn Backend>,
        names: Hierarchy,
        pod_pids_limit: Option<u64>,
    ) -> ContainerManager {
        ContainerManager {
            backend,
            units: None,
            names,
            pod_pids_limit,
            active: Mutex::new(HashMap::new()),
        }
    }

    /// The manager with every cgroup made, updated and removed as a systemd slice unit through
    /// `units` before its files are written (the systemd driver).
    pub fn with_units(mut self, units: Arc<dyn Units>) -> ContainerManager {
        self.units = Some(units);
        self
    }

    /// The names this manager uses.
    pub fn names(&self) -> &Hierarchy {
        &self.names
    }

    /// The backend (cgroup version, reads for diagnostics).
    pub fn backend(&self) -> &dyn Backend {
        self.backend.as_ref()
    }

    /// The cgroup parent of the pod's sandbox, in the driver's syntax.
    pub fn cgroup_parent(&self, pod: &Pod) -> String {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        self.names.cgroup_parent(qos_class(pod), uid)
    }

    /// Checks that cgroupRoot exists, then creates (or updates) kubepods with `node_allocatable`
    /// and the burstable and besteffort tiers below it. Nothing without cgroupsPerQOS.
    pub async fn start(&self, node_allocatable: &ResourceConfig) -> Result<(), CgroupError> {
        if !self.names.per_qos {
            return Ok(());
        }
        let root = self.names.literal(&self.names.root);
        if !self.backend.exists(&root) {
            return Err(CgroupError::RootMissing(root));
        }
        self.create_or_update(&self.names.node(), node_allocatable)
            .await?;
        for qos in [QosClass::Burstable, QosClass::BestEffort] {
            let res = ResourceConfig {
                cpu_shares: (qos == QosClass::BestEffort).then_some(MIN_SHARES),
                ..Default::default()
            };
            self.create_or_update(&self.names.qos(qos), &res).await?;
        }
        self.update_qos().await?;
        info!(
            cgroup.node = %self.names.literal(&self.names.node()),
            cgroup.version = ?self.backend.version(),
            ?node_allocatable,
            "QoS cgroup hierarchy ready"
        );
        Ok(())
    }

    async fn create_or_update(
        &self,
        name: &CgroupName,
        res: &ResourceConfig,
    ) -> Result<(), CgroupError> {
        let path = self.names.literal(name);
        if self.backend.exists(&path) && self.units.is_none() {
            self.backend.update(&path, res)
        } else {
            self.create(&path, res).await
        }
    }

    /// Creates the cgroup at `path` with `res` (Create: with units, Apply(-1) starts the slice,
    /// a slice that exists already is fine, then Set).
    async fn create(&self, path: &str, res: &ResourceConfig) -> Result<(), CgroupError> {
        if let (Some(units), Some(unit)) = (&self.units, slice_unit(path)) {
            let props = start_properties(&unit, self.backend.version());
            units.start(&unit.name, &props).await?;
        }
        let res = self.set_unit(path, res).await?;
        self.backend.create(path, &res)
    }

    /// Applies `res` to the existing cgroup at `path` (Update: Set).
    async fn update(&self, path: &str, res: &ResourceConfig) -> Result<(), CgroupError> {
        let res = self.set_unit(path, res).await?;
        self.backend.update(path, &res)
    }

    /// With units, sets `res` as the slice's properties (SetUnitProperties); the config to write
    /// to its files, the quota as systemd rounded it.
    async fn set_unit(
        &self,
        path: &str,
        res: &ResourceConfig,
    ) -> Result<ResourceConfig, CgroupError> {
        let (Some(units), Some(unit)) = (&self.units, slice_unit(path)) else {
            return Ok(res.clone());
        };
        let (props, files) = resource_properties(res, self.backend.version(), units.version());
        if !props.is_empty() {
            units.set_properties(&unit.name, &props).await?;
        }
        Ok(files)
    }

    /// Removes the cgroup at `path` (Destroy: with units, StopUnit, then the directories).
    async fn destroy(&self, path: &str) -> Result<(), CgroupError> {
        if let (Some(units), Some(unit)) = (&self.units, slice_unit(path)) {
            units.stop(&unit.name).await?;
        }
        self.backend.remove(path)
    }

    /// Sets the QoS tiers from the active pods: burstable's shares from the sum of its pods'
    /// cpu requests, besteffort's always the minimum (QoS memory limits need qosReserved, which
    /// bosun does not take).
    pub async fn update_qos(&self) -> Result<(), CgroupError> {
        if !self.names.per_qos {
            return Ok(());
        }
        let burstable: i64 = {
            let active = self.active.lock().unwrap_or_else(|e| e.into_inner());
            active
                .values()
                .filter(|(q, _)| *q == QosClass::Burstable)
                .map(|(_, cpu)| *cpu)
                .sum()
        };
        let shares = |s| ResourceConfig {
            cpu_shares: Some(s),
            ..Default::default()
        };
        let b = self.names.literal(&self.names.qos(QosClass::Burstable));
        self.update(&b, &shares(milli_cpu_to_shares(burstable)))
            .await?;
        let be = self.names.literal(&self.names.qos(QosClass::BestEffort));
        self.update(&be, &shares(MIN_SHARES)).await
    }

    /// Makes sure the pod's cgroup exists with its limits, updating the QoS tiers first when the
    /// pod is new (or its requests changed), as the kubelet does before the sandbox.
    pub async fn ensure_pod(&self, pod: &Pod) -> Result<(), CgroupError> {
        if !self.names.per_qos {
            return Ok(());
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let qos = qos_class(pod);
        let entry = (qos, pod_request(pod, "cpu") as i64);
        let changed = {
            let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
            active.insert(uid.clone(), entry) != Some(entry)
        };
        if changed {
            self.update_qos().await?;
        }
        let path = self.names.literal(&self.names.pod(qos, &uid));
        if !self.backend.exists(&path) {
            let res = pod_resource_config(pod, true, self.pod_pids_limit);
            self.create(&path, &res).await?;
            info!(cgroup = %path, ?res, "pod cgroup created");
        }
        Ok(())
    }

    /// Writes `res` (the values a resize changes, the rest None) to the pod's cgroup (the
    /// kubelet's SetPodCgroupConfig).
    pub async fn resize_pod(&self, pod: &Pod, res: &ResourceConfig) -> Result<(), CgroupError> {
        if !self.names.per_qos {
            return Ok(());
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let path = self.names.literal(&self.names.pod(qos_class(pod), &uid));
        self.update(&path, res).await?;
        info!(cgroup = %path, ?res, "pod cgroup resized");
        Ok(())
    }

    /// Removes the pod's cgroup once its containers and sandbox are gone, then updates the tiers.
    pub async fn remove_pod(&self, pod: &Pod) -> Result<(), CgroupError> {
        if !self.names.per_qos {
            return Ok(());
        }
        let uid = pod.metadata.uid.clone().unwrap_or_default();
        let path = self.names.literal(&self.names.pod(qos_class(pod), &uid));
        self.remove(&uid, &path, false).await
    }

    /// Every pod cgroup under kubepods and the QoS tiers (GetAllPodsFromCgroups).
    pub fn pod_cgroups(&self) -> Vec<PodCgroup> {
        if !self.names.per_qos {
            return vec![];
        }
        let mut out = Vec::new();
        for qos in [
            QosClass::Guaranteed,
            QosClass::Burstable,
            QosClass::BestEffort,
        ] {
            let parent = self.names.qos(qos);
            for dir in self.backend.children(&self.names.literal(&parent)) {
                if let Some(uid) = self.names.pod_uid_of(&dir) {
                    let path = match self.names.driver {
                        crate::config::CgroupDriver::Cgroupfs => {
                            self.names.literal(&parent.child(&dir))
                        }
                        crate::config::CgroupDriver::Systemd => {
                            format!("{}/{dir}", self.names.literal(&parent))
                        }
                    };
                    out.push(PodCgroup { uid, path });
                }
            }
        }
        out
    }

    /// Removes the cgroup of a pod no longer known, killing what still runs in it first.
    pub async fn remove_orphan(&self, orphan: &PodCgroup) -> Result<(), CgroupError> {
        self.remove(&orphan.uid, &orphan.path, true).await
    }

    async fn remove(&self, uid: &str, path: &str, kill: bool) -> Result<(), CgroupError> {
        if kill {
            for pid in self.backend.pids(path) {
                warn!(cgroup = %path, pid, "killing a process left in an orphaned pod cgroup");
                if pid > 0 {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
            }
        }
        let removed = self.destroy(path).await;
        if removed.is_ok() {
            info!(cgroup = %path, pod.uid = %uid, "pod cgroup removed");
        }
        let was_active = {
            let mut active = self.active.lock().unwrap_or_else(|e| e.into_inner());
            active.remove(uid).is_some()
        };
        if was_active {
            self.update_qos().await?;
        }
        removed
    }
}

/// The maximum number of processes on the node: the smaller of pid_max and threads-max.
pub fn pid_capacity() -> Option<i64> {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .and_then(|s| s.trim().parse::<i64>().ok())
    };
    match (
        read("/proc/sys/kernel/pid_max"),
        read("/proc/sys/kernel/threads-max"),
    ) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// What kubepods gets (the kubelet's enforceNodeAllocatableCgroups): cpu shares, memory and pids
/// of the capacity, minus systemReserved and kubeReserved when `pods` is enforced (eviction
/// thresholds are not subtracted here; huge pages come off memory).
pub fn node_allocatable_config(
    capacity: &Resources,
    pids: Option<i64>,
    reserved: &allocatable::Reserved,
    enforce_pods: bool,
) -> ResourceConfig {
    let mut cap = capacity.clone();
    if let Some(p) = pids {
        cap.insert(
            "pid".into(),
            allocatable::Amount::units(p as i128, allocatable::Format::DecimalSi),
        );
    }
    let alloc = if enforce_pods {
        let reserved = allocatable::reservation(&cap, &reserved.without_eviction());
        allocatable::allocatable(&cap, &reserved)
    } else {
        cap
    };
    let get = |k: &str| alloc.get(k).map(|a| a.milli);
    ResourceConfig {
        cpu_shares: get("cpu").map(|m| milli_cpu_to_shares(m as i64)),
        memory: get("memory").map(|m| (m / 1000) as i64),
        pids: get("pid").map(|m| (m / 1000) as i64),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::fs::V2;
    use crate::config::CgroupDriver;
    use std::collections::BTreeMap;

    fn pod(uid: &str, containers: serde_json::Value) -> Pod {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": uid, "uid": uid},
            "spec": {"containers": containers},
        }))
        .unwrap()
    }

    /// A v2 manager on a temp tree with cgroupRoot /bosun.
    fn v2_manager(t: &tempfile::TempDir) -> ContainerManager {
        std::fs::write(t.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        std::fs::create_dir(t.path().join("bosun")).unwrap();
        ContainerManager::new(
            Box::new(V2::new(t.path())),
            Hierarchy::new(CgroupDriver::Cgroupfs, "/bosun", true),
            Some(256),
        )
    }

    fn read(t: &tempfile::TempDir, path: &str) -> String {
        std::fs::read_to_string(t.path().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[tokio::test]
    async fn hierarchy_pods_and_tiers_on_a_v2_tree() {
        let t = tempfile::tempdir().unwrap();
        let m = v2_manager(&t);
        let alloc = ResourceConfig {
            cpu_shares: Some(2048),
            memory: Some(4 << 30),
            pids: Some(32768),
            ..Default::default()
        };
        m.start(&alloc).await.unwrap();
        assert_eq!(read(&t, "bosun/kubepods/cpu.weight"), "79");
        assert_eq!(
            read(&t, "bosun/kubepods/memory.max"),
            (4u64 << 30).to_string()
        );
        assert_eq!(read(&t, "bosun/kubepods/pids.max"), "32768");
        assert_eq!(read(&t, "bosun/kubepods/besteffort/cpu.weight"), "1");
        assert_eq!(read(&t, "bosun/kubepods/burstable/cpu.weight"), "1");

        let g = pod(
            "g-1",
            serde_json::json!([{"name": "c", "resources": {"limits": {"cpu": "500m", "memory": "64Mi"}}}]),
        );
        let b = pod(
            "b-1",
            serde_json::json!([{"name": "c", "resources": {"requests": {"cpu": "1"}}}]),
        );
        let be = pod("e-1", serde_json::json!([{"name": "c"}]));
        for p in [&g, &b, &be] {
            m.ensure_pod(p).await.unwrap();
        }
        assert_eq!(m.cgroup_parent(&g), "/bosun/kubepods/podg-1");
        assert_eq!(read(&t, "bosun/kubepods/podg-1/cpu.max"), "50000 100000");
        assert_eq!(
            read(&t, "bosun/kubepods/podg-1/memory.max"),
            (64 << 20).to_string()
        );
        assert_eq!(read(&t, "bosun/kubepods/podg-1/pids.max"), "256");
        assert_eq!(read(&t, "bosun/kubepods/burstable/podb-1/cpu.weight"), "39");
        assert!(
            !t.path()
                .join("bosun/kubepods/burstable/podb-1/memory.max")
                .exists()
        );
        assert_eq!(read(&t, "bosun/kubepods/besteffort/pode-1/cpu.weight"), "1");
        // The burstable tier's shares follow its pods' requests: 1 cpu = 1024 shares.
        assert_eq!(read(&t, "bosun/kubepods/burstable/cpu.weight"), "39");
        let mut found: Vec<String> = m.pod_cgroups().into_iter().map(|p| p.uid).collect();
        found.sort();
        assert_eq!(found, ["b-1", "e-1", "g-1"]);

        m.remove_pod(&b).await.unwrap();
        assert!(!t.path().join("bosun/kubepods/burstable/podb-1").exists());
        assert_eq!(read(&t, "bosun/kubepods/burstable/cpu.weight"), "1");
        let orphan = m
            .pod_cgroups()
            .into_iter()
            .find(|p| p.uid == "e-1")
            .unwrap();
        assert_eq!(orphan.path, "/bosun/kubepods/besteffort/pode-1");
        m.remove_orphan(&orphan).await.unwrap();
        assert_eq!(m.pod_cgroups().len(), 1);
    }

    #[tokio::test]
    async fn a_missing_cgroup_root_is_a_startup_error() {
        let t = tempfile::tempdir().unwrap();
        let m = ContainerManager::new(
            Box::new(V2::new(t.path())),
            Hierarchy::new(CgroupDriver::Cgroupfs, "/absent", true),
            None,
        );
        let e = m.start(&ResourceConfig::default()).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid configuration: cgroup-root \"/absent\" doesn't exist"
        );
    }

    #[tokio::test]
    async fn systemd_names_on_disk() {
        let t = tempfile::tempdir().unwrap();
        let m = ContainerManager::new(
            Box::new(V2::new(t.path())),
            Hierarchy::new(CgroupDriver::Systemd, "/", true),
            None,
        );
        m.start(&ResourceConfig::default()).await.unwrap();
        let b = pod(
            "b-2",
            serde_json::json!([{"name": "c", "resources": {"requests": {"cpu": "100m"}}}]),
        );
        m.ensure_pod(&b).await.unwrap();
        let dir = "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-podb_2.slice";
        assert!(t.path().join(dir).is_dir());
        assert_eq!(
            m.pod_cgroups(),
            [PodCgroup {
                uid: "b-2".into(),
                path: format!("/{dir}")
            }]
        );
    }

    /// systemd's units as a script: every call recorded as `op unit [property=value ...]`.
    #[derive(Default)]
    struct FakeUnits(Mutex<Vec<String>>);

    impl FakeUnits {
        fn record(&self, op: &str, unit: &str, props: &[crate::cgroup::systemd::Property]) {
            let mut line = format!("{op} {unit}");
            for (n, v) in props {
                line.push_str(&format!(" {n}={v:?}"));
            }
            self.0.lock().unwrap().push(line);
        }
    }

    impl Units for FakeUnits {
        fn version(&self) -> u32 {
            252
        }
        fn start<'a>(
            &'a self,
            unit: &'a str,
            props: &'a [crate::cgroup::systemd::Property],
        ) -> futures::future::BoxFuture<'a, Result<(), CgroupError>> {
            self.record("start", unit, &props[..2]);
            Box::pin(async { Ok(()) })
        }
        fn set_properties<'a>(
            &'a self,
            unit: &'a str,
            props: &'a [crate::cgroup::systemd::Property],
        ) -> futures::future::BoxFuture<'a, Result<(), CgroupError>> {
            self.record("set", unit, props);
            Box::pin(async { Ok(()) })
        }
        fn stop<'a>(
            &'a self,
            unit: &'a str,
        ) -> futures::future::BoxFuture<'a, Result<(), CgroupError>> {
            self.record("stop", unit, &[]);
            Box::pin(async { Ok(()) })
        }
    }

    #[tokio::test]
    async fn systemd_driver_makes_slice_units_before_the_files() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("cgroup.controllers"), "cpu memory pids\n").unwrap();
        let units = Arc::new(FakeUnits::default());
        let m = ContainerManager::new(
            Box::new(V2::new(t.path())),
            Hierarchy::new(CgroupDriver::Systemd, "/", true),
            Some(1024),
        )
        .with_units(units.clone());
        let alloc = ResourceConfig {
            cpu_shares: Some(2048),
            memory: Some(2 << 30),
            pids: Some(4096),
            ..Default::default()
        };
        m.start(&alloc).await.unwrap();
        let g = pod(
            "g-3",
            serde_json::json!([{"name": "c", "resources": {"limits": {"cpu": "250m", "memory": "64Mi"}}}]),
        );
        m.ensure_pod(&g).await.unwrap();
        m.remove_pod(&g).await.unwrap();
        let calls = units.0.lock().unwrap().clone();
        let want = [
            r#"start kubepods.slice Description=Str("libcontainer container kubepods.slice") Wants=Strs(["-.slice"])"#,
            "set kubepods.slice MemoryMax=U64(2147483648) CPUWeight=U64(79) TasksMax=U64(4096)",
            r#"start kubepods-burstable.slice Description=Str("libcontainer container kubepods-burstable.slice") Wants=Strs(["kubepods.slice"])"#,
            r#"start kubepods-besteffort.slice Description=Str("libcontainer container kubepods-besteffort.slice") Wants=Strs(["kubepods.slice"])"#,
            "set kubepods-besteffort.slice CPUWeight=U64(1)",
            // The tiers from the active pods: at start, then for the new pod.
            "set kubepods-burstable.slice CPUWeight=U64(1)",
            "set kubepods-besteffort.slice CPUWeight=U64(1)",
            "set kubepods-burstable.slice CPUWeight=U64(1)",
            "set kubepods-besteffort.slice CPUWeight=U64(1)",
            r#"start kubepods-podg_3.slice Description=Str("libcontainer container kubepods-podg_3.slice") Wants=Strs(["kubepods.slice"])"#,
            "set kubepods-podg_3.slice MemoryMax=U64(67108864) CPUWeight=U64(10) CPUQuotaPeriodUSec=U64(100000) CPUQuotaPerSecUSec=U64(250000) TasksMax=U64(1024)",
            "stop kubepods-podg_3.slice",
            // and once it is gone.
            "set kubepods-burstable.slice CPUWeight=U64(1)",
            "set kubepods-besteffort.slice CPUWeight=U64(1)",
        ];
        assert_eq!(calls, want);
        // The files are written after the unit, as libcontainer's Set.
        let read = |p: &str| std::fs::read_to_string(t.path().join(p)).unwrap();
        assert_eq!(read("kubepods.slice/cpu.weight"), "79");
        assert_eq!(
            read("kubepods.slice/kubepods-besteffort.slice/cpu.weight"),
            "1"
        );
        assert!(
            !t.path()
                .join("kubepods.slice/kubepods-podg_3.slice")
                .exists()
        );
    }

    #[test]
    fn node_allocatable_subtracts_reservations_only_when_enforced() {
        use allocatable::{Amount, Format};
        let mut cap = Resources::new();
        cap.insert("cpu".into(), Amount::units(2, Format::DecimalSi));
        cap.insert("memory".into(), Amount::units(4 << 30, Format::BinarySi));
        let sys = BTreeMap::from([("cpu".to_string(), "500m".to_string())]);
        let kube = BTreeMap::from([
            ("memory".to_string(), "1Gi".to_string()),
            ("pid".to_string(), "1000".to_string()),
        ]);
        // A hard memory.available threshold is not taken off the pods cgroup's limit.
        let none = BTreeMap::new();
        let thresholds = crate::config::eviction::thresholds(crate::config::eviction::Fields {
            hard: &BTreeMap::from([("memory.available".to_string(), "100Mi".to_string())]),
            soft: &none,
            soft_grace_period: &none,
            minimum_reclaim: &none,
            enforce_node_allocatable: &[],
        })
        .unwrap();
        let reserved = &crate::config::reserved(&sys, &kube, &thresholds);
        let off = node_allocatable_config(&cap, Some(32768), reserved, false);
        assert_eq!(
            (off.cpu_shares, off.memory, off.pids),
            (Some(2048), Some(4 << 30), Some(32768))
        );
        let on = node_allocatable_config(&cap, Some(32768), reserved, true);
        assert_eq!(
            (on.cpu_shares, on.memory, on.pids),
            (Some(1536), Some(3 << 30), Some(31768))
        );
    }
}
