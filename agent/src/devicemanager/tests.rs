//! The device manager's bookkeeping: capacity, allocation at admission, the grace period, the
//! checkpoint across a restart.

use super::*;

const W: &str = "bosun.test/widget";

fn manager() -> (tempfile::TempDir, DeviceManager) {
    let dir = tempfile::tempdir().unwrap();
    let m = DeviceManager::new(dir.path());
    (dir, m)
}

fn devices(list: &[(&str, &str)]) -> Vec<(String, String, i64)> {
    list.iter()
        .map(|(id, h)| (id.to_string(), h.to_string(), -1))
        .collect()
}

fn pod(uid: &str, app: &[u32], init: &[u32]) -> Pod {
    let c = |name: String, n: u32| serde_json::json!({"name": name, "resources": {"limits": {W: n.to_string()}, "requests": {W: n.to_string()}}});
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": uid, "namespace": "ns", "uid": uid},
        "spec": {
            "initContainers": init.iter().enumerate().map(|(i, n)| c(format!("i{i}"), *n)).collect::<Vec<_>>(),
            "containers": app.iter().enumerate().map(|(i, n)| c(format!("c{i}"), *n)).collect::<Vec<_>>(),
        }
    }))
    .unwrap()
}

#[test]
fn capacity_counts_every_device_allocatable_the_healthy_ones() {
    let (_d, m) = manager();
    let g = m.connected(W, Path::new("/x.sock"), false);
    m.devices_listed(
        W,
        g,
        &devices(&[("w0", HEALTHY), ("w1", HEALTHY), ("w2", "Unhealthy")]),
    );
    let c = m.capacity(Instant::now());
    assert_eq!(c.capacity[W], 3);
    assert_eq!(c.allocatable[W], 2);
    // The plugin goes away: capacity kept, nothing allocatable; removed after the grace period.
    m.disconnected(W, g);
    let c = m.capacity(Instant::now());
    assert_eq!((c.capacity[W], c.allocatable[W]), (3, 0));
    let later = Instant::now() + STOP_GRACE_PERIOD + Duration::from_secs(1);
    let c = m.capacity(later);
    assert!(c.capacity.is_empty());
    assert_eq!(c.removed, [W]);
    // A stale stream's end does not stop a plugin that registered again.
    let g2 = m.connected(W, Path::new("/x.sock"), false);
    m.devices_listed(W, g2, &devices(&[("w0", HEALTHY)]));
    m.disconnected(W, g);
    assert_eq!(m.capacity(Instant::now()).allocatable[W], 1);
}

#[test]
fn admission_allocates_free_healthy_devices_as_the_kubelet() {
    let (_d, m) = manager();
    let g = m.connected(W, Path::new("/x.sock"), false);
    m.devices_listed(
        W,
        g,
        &devices(&[("w0", HEALTHY), ("w1", HEALTHY), ("w2", "Unhealthy")]),
    );
    m.allocate(&pod("a", &[1], &[])).unwrap();
    assert_eq!(m.container_devices("a", "c0")[W], [("w0".to_string(), -1)]);
    let err = m.allocate(&pod("b", &[2], &[])).unwrap_err();
    assert_eq!(
        err.to_string(),
        "requested number of devices unavailable for bosun.test/widget. Requested: 2, Available: 1"
    );
    assert!(
        m.container_devices("b", "c0").is_empty(),
        "nothing stays reserved"
    );
    // A pod no longer active frees its devices.
    m.free_inactive(&["b"].into());
    m.allocate(&pod("b", &[2], &[])).unwrap();
    assert_eq!(m.container_devices("b", "c0")[W].len(), 2);
    assert!(m.container_devices("a", "c0").is_empty());
    // Admitting again (a restart) keeps what the pod holds.
    m.allocate(&pod("b", &[2], &[])).unwrap();
    assert_eq!(m.held_for("b", W), Some(2));
    assert_eq!(m.held_for("zz", W), None);
    let changed = m.allocate(&pod("b", &[1], &[])).unwrap_err();
    assert!(matches!(
        changed,
        AllocateError::Changed { from: 2, to: 1, .. }
    ));
}

#[test]
fn init_container_devices_are_reused_sidecars_keep_theirs() {
    let (_d, m) = manager();
    let g = m.connected(W, Path::new("/x.sock"), false);
    m.devices_listed(W, g, &devices(&[("w0", HEALTHY), ("w1", HEALTHY)]));
    m.allocate(&pod("a", &[2], &[2])).unwrap();
    assert_eq!(m.container_devices("a", "i0")[W].len(), 2);
    assert_eq!(m.container_devices("a", "c0")[W].len(), 2);
}

#[test]
fn no_healthy_device_is_the_kubelets_error() {
    let (_d, m) = manager();
    let g = m.connected(W, Path::new("/x.sock"), false);
    m.devices_listed(W, g, &devices(&[("w0", "Unhealthy")]));
    assert_eq!(
        m.allocate(&pod("a", &[1], &[])).unwrap_err().to_string(),
        "no healthy devices present; cannot allocate unhealthy devices bosun.test/widget"
    );
    // A resource no plugin serves is not the device manager's.
    let (_d2, other) = manager();
    other.allocate(&pod("a", &[1], &[])).unwrap();
}

#[test]
fn allocations_survive_a_restart_through_the_checkpoint() {
    let (dir, m) = manager();
    let g = m.connected(W, Path::new("/x.sock"), false);
    m.devices_listed(W, g, &devices(&[("w0", HEALTHY), ("w1", HEALTHY)]));
    m.allocate(&pod("a", &[1], &[])).unwrap();
    m.answered("a", "c0", W, vec![1, 2]);
    let back = DeviceManager::new(dir.path());
    assert_eq!(
        back.container_devices("a", "c0")[W],
        [("w0".to_string(), -1)]
    );
    assert_eq!(back.responses("a", "c0"), [vec![1u8, 2]]);
    assert!(back.pending("a", "c0").is_empty());
    // Registered but not yet back: no devices until the plugin lists them.
    let c = back.capacity(Instant::now());
    assert_eq!((c.capacity[W], c.allocatable[W]), (0, 0));
    // The pod that holds its device is admitted again before its plugin is back (a pod admitted
    // before it and rejected frees nothing of it); a new one is not given the held device.
    assert!(back.allocate(&pod("z", &[1], &[])).is_err());
    back.allocate(&pod("a", &[1], &[])).unwrap();
    let g = back.connected(W, Path::new("/x.sock"), false);
    back.devices_listed(W, g, &devices(&[("w0", HEALTHY), ("w1", HEALTHY)]));
    back.allocate(&pod("b", &[1], &[])).unwrap();
    assert_eq!(
        back.container_devices("b", "c0")[W],
        [("w1".to_string(), -1)]
    );
}
