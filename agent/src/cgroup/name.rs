//! Cgroup names as the kubelet keeps them: a driver-neutral list of components
//! (`["kubepods", "burstable", "pod<uid>"]`), written as a cgroupfs path
//! (`/kubepods/burstable/pod<uid>`) or as nested systemd slices
//! (`/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice`).

use crate::config::CgroupDriver;
use crate::resource::QosClass;

/// The suffix of systemd slice units.
const SLICE: &str = ".slice";
/// The prefix of pod cgroup names.
pub const POD_PREFIX: &str = "pod";
/// The node allocatable cgroup under the cgroup root.
pub const KUBEPODS: &str = "kubepods";

/// A cgroup name: its components from the root, independent of the driver.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct CgroupName(pub Vec<String>);

impl CgroupName {
    /// `parent` with `child` appended.
    pub fn child(&self, child: &str) -> CgroupName {
        let mut c = self.0.clone();
        c.push(child.to_string());
        CgroupName(c)
    }

    /// Parses a cgroupfs path (`/a/b`; `/` or empty is the root), as ParseCgroupfsToCgroupName.
    pub fn from_cgroupfs(path: &str) -> CgroupName {
        CgroupName(
            path.split('/')
                .filter(|p| !p.is_empty())
                .map(str::to_string)
                .collect(),
        )
    }

    /// The cgroupfs path: `/` + components joined by `/`.
    pub fn to_cgroupfs(&self) -> String {
        format!("/{}", self.0.join("/"))
    }

    /// The systemd path: each component's `-` escaped to `_`, joined by `-` into one slice name,
    /// expanded into its parent slices (`a-b.slice` -> `/a.slice/a-b.slice`); `/` for the root.
    pub fn to_systemd(&self) -> String {
        if self.0.iter().all(|p| p.is_empty()) {
            return "/".into();
        }
        let escaped: Vec<String> = self.0.iter().map(|p| p.replace('-', "_")).collect();
        let mut out = String::new();
        for i in 1..=escaped.len() {
            out.push('/');
            out.push_str(&escaped[..i].join("-"));
            out.push_str(SLICE);
        }
        out
    }

    /// Parses a systemd slice path back into components (`_` unescaped to `-`), from its last
    /// element, as ParseSystemdToCgroupName.
    pub fn from_systemd(path: &str) -> CgroupName {
        let base = path.rsplit('/').next().unwrap_or_default();
        let base = base.strip_suffix(SLICE).unwrap_or(base);
        if base.is_empty() {
            return CgroupName::default();
        }
        CgroupName(base.split('-').map(|p| p.replace('_', "-")).collect())
    }

    /// The literal path in the driver's syntax (the cgroup manager's `Name`).
    pub fn literal(&self, driver: CgroupDriver) -> String {
        match driver {
            CgroupDriver::Cgroupfs => self.to_cgroupfs(),
            CgroupDriver::Systemd => self.to_systemd(),
        }
    }

    /// The last component.
    pub fn base(&self) -> &str {
        self.0.last().map(String::as_str).unwrap_or_default()
    }
}

/// The names of the kubelet's hierarchy under one cgroup root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// The cgroup driver (which syntax literal paths use).
    pub driver: CgroupDriver,
    /// `cgroupRoot`, parsed.
    pub root: CgroupName,
    /// `cgroupsPerQOS`: kubepods, QoS tiers and pod cgroups exist only when true.
    pub per_qos: bool,
}

impl Hierarchy {
    /// The hierarchy of `cgroupRoot` (empty: `/`) with the given driver. The root is always
    /// given in cgroupfs syntax, whatever the driver, as the kubelet reads it.
    pub fn new(driver: CgroupDriver, cgroup_root: &str, per_qos: bool) -> Hierarchy {
        Hierarchy {
            driver,
            root: CgroupName::from_cgroupfs(cgroup_root),
            per_qos,
        }
    }

    /// The node allocatable cgroup: `<root>/kubepods` (the root itself without cgroupsPerQOS).
    pub fn node(&self) -> CgroupName {
        if self.per_qos {
            self.root.child(KUBEPODS)
        } else {
            self.root.clone()
        }
    }

    /// The cgroup of a QoS class: kubepods for Guaranteed, kubepods/burstable, kubepods/besteffort.
    pub fn qos(&self, qos: QosClass) -> CgroupName {
        match qos {
            QosClass::Guaranteed => self.node(),
            QosClass::Burstable => self.node().child("burstable"),
            QosClass::BestEffort => self.node().child("besteffort"),
        }
    }

    /// The pod's cgroup: `pod<uid>` under its QoS cgroup (the root without cgroupsPerQOS).
    pub fn pod(&self, qos: QosClass, uid: &str) -> CgroupName {
        if !self.per_qos {
            return self.root.clone();
        }
        self.qos(qos).child(&format!("{POD_PREFIX}{uid}"))
    }

    /// The cgroup parent handed to the runtime for the pod's sandbox: the pod cgroup, literal.
    pub fn cgroup_parent(&self, qos: QosClass, uid: &str) -> String {
        self.pod(qos, uid).literal(self.driver)
    }

    /// The literal path of `name` in this hierarchy's driver syntax.
    pub fn literal(&self, name: &CgroupName) -> String {
        name.literal(self.driver)
    }

    /// The pod UID of a child cgroup's directory name (`pod<uid>` or `...-pod<uid_>.slice`).
    pub fn pod_uid_of(&self, dir_name: &str) -> Option<String> {
        let base = match self.driver {
            CgroupDriver::Cgroupfs => dir_name.to_string(),
            CgroupDriver::Systemd => CgroupName::from_systemd(dir_name).base().to_string(),
        };
        base.strip_prefix(POD_PREFIX)
            .filter(|u| !u.is_empty())
            .map(str::to_string)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroupfs_names() {
        let h = Hierarchy::new(CgroupDriver::Cgroupfs, "", true);
        assert_eq!(h.literal(&h.node()), "/kubepods");
        assert_eq!(
            h.literal(&h.qos(QosClass::Burstable)),
            "/kubepods/burstable"
        );
        assert_eq!(
            h.cgroup_parent(QosClass::Guaranteed, "a-b"),
            "/kubepods/poda-b"
        );
        assert_eq!(
            h.cgroup_parent(QosClass::BestEffort, "a-b"),
            "/kubepods/besteffort/poda-b"
        );
        let h = Hierarchy::new(CgroupDriver::Cgroupfs, "/bosun-bsn3/", true);
        assert_eq!(
            h.cgroup_parent(QosClass::Burstable, "u1"),
            "/bosun-bsn3/kubepods/burstable/podu1"
        );
        assert_eq!(h.pod_uid_of("podu1"), Some("u1".into()));
        assert_eq!(h.pod_uid_of("burstable"), None);
        let flat = Hierarchy::new(CgroupDriver::Cgroupfs, "/r", false);
        assert_eq!(flat.cgroup_parent(QosClass::Burstable, "u1"), "/r");
        assert_eq!(flat.literal(&flat.node()), "/r");
    }

    #[test]
    fn systemd_names() {
        let h = Hierarchy::new(CgroupDriver::Systemd, "/", true);
        assert_eq!(h.literal(&h.node()), "/kubepods.slice");
        assert_eq!(
            h.literal(&h.qos(QosClass::BestEffort)),
            "/kubepods.slice/kubepods-besteffort.slice"
        );
        assert_eq!(
            h.cgroup_parent(QosClass::Burstable, "1a-2b"),
            "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1a_2b.slice"
        );
        assert_eq!(
            h.cgroup_parent(QosClass::Guaranteed, "1a-2b"),
            "/kubepods.slice/kubepods-pod1a_2b.slice"
        );
        assert_eq!(
            h.pod_uid_of("kubepods-burstable-pod1a_2b.slice"),
            Some("1a-2b".into())
        );
        assert_eq!(h.pod_uid_of("kubepods-burstable.slice"), None);
        assert_eq!(CgroupName::default().to_systemd(), "/");
        // A root below /, and escaping of dashes inside components.
        let h = Hierarchy::new(CgroupDriver::Systemd, "/bosun/n-1", true);
        assert_eq!(
            h.literal(&h.node()),
            "/bosun.slice/bosun-n_1.slice/bosun-n_1-kubepods.slice"
        );
    }

    #[test]
    fn round_trips() {
        for path in ["/", "/a", "/a/b/c"] {
            assert_eq!(CgroupName::from_cgroupfs(path).to_cgroupfs(), path);
        }
        let n = CgroupName(vec!["kubepods".into(), "pod-x".into()]);
        assert_eq!(CgroupName::from_systemd(&n.to_systemd()), n);
    }
}
