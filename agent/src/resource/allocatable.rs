//! Node allocatable, as the kubelet computes it from the node's capacity (which
//! `node::allocatable` reads from the machine): allocatable = capacity - systemReserved -
//! kubeReserved - hard eviction thresholds (`memory.available`, `nodefs.available`), minus huge pages for memory, floored at 0.
//! Quantities are written in the API server's canonical form so a patch compares equal to what
//! the kubelet would write.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

pub use super::amount::{Amount, Format};

/// Resource name -> amount.
pub type Resources = BTreeMap<String, Amount>;

/// `hugepages-<size>` for a page size in bytes (`hugepages-2Mi`).
pub fn huge_page_resource(page_size: u64) -> String {
    format!(
        "hugepages-{}",
        Amount::units(page_size as i128, Format::BinarySi).canonical()
    )
}

/// An amount given absolutely or as a fraction of a capacity: an eviction threshold's value (the
/// kubelet's `evictionapi.ThresholdValue`), also what a hard threshold takes off allocatable.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ThresholdValue {
    /// In milli-units (milli-bytes, milli-inodes, milli-pids).
    Quantity(i128),
    /// A fraction of capacity (0.1 for `10%`), single precision as the kubelet's float32.
    Percentage(f32),
}

impl ThresholdValue {
    /// The value in milli-units against `capacity` (whole units), as the kubelet's
    /// GetThresholdQuantity: `int64(float64(capacity) * float64(percentage))`.
    pub fn milli_of(self, capacity: i64) -> i128 {
        match self {
            ThresholdValue::Quantity(m) => m,
            ThresholdValue::Percentage(p) => {
                i128::from((capacity as f64 * f64::from(p)) as i64) * 1000
            }
        }
    }
}

/// What comes off capacity before pods, parsed once at load: systemReserved and kubeReserved
/// (thousandths by resource) and the hard eviction thresholds that guard a capacity resource
/// (`memory.available` for memory, `nodefs.available` for ephemeral-storage).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Reserved {
    /// systemReserved, thousandths by resource.
    pub system: BTreeMap<String, i128>,
    /// kubeReserved, thousandths by resource.
    pub kube: BTreeMap<String, i128>,
    /// Hard eviction thresholds by the capacity resource they guard.
    pub hard_eviction: BTreeMap<String, ThresholdValue>,
}

impl Reserved {
    /// systemReserved and kubeReserved only: what the pods cgroup's limit leaves out, as the
    /// kubelet's getNodeAllocatableAbsolute.
    pub fn without_eviction(&self) -> Reserved {
        Reserved {
            hard_eviction: BTreeMap::new(),
            ..self.clone()
        }
    }
}

/// The reservation per capacity resource (thousandths): systemReserved + kubeReserved + hard
/// eviction, as the kubelet's GetNodeAllocatableReservation. Resources with a zero reservation
/// are absent, as in the kubelet.
pub fn reservation(capacity: &Resources, reserved: &Reserved) -> BTreeMap<String, i128> {
    capacity
        .iter()
        .filter_map(|(k, cap)| {
            let eviction = reserved
                .hard_eviction
                .get(k)
                .map_or(0, |t| t.milli_of((cap.milli / 1000) as i64));
            let v = reserved.system.get(k).copied().unwrap_or(0)
                + reserved.kube.get(k).copied().unwrap_or(0)
                + eviction;
            (v != 0).then(|| (k.clone(), v))
        })
        .collect()
}

/// Allocatable: capacity minus the reservation, then memory minus every huge page capacity; never
/// negative. Amounts keep the capacity's format.
pub fn allocatable(capacity: &Resources, reservation: &BTreeMap<String, i128>) -> Resources {
    let mut a: Resources = capacity
        .iter()
        .map(|(k, v)| {
            let milli = (v.milli - reservation.get(k).copied().unwrap_or(0)).max(0);
            (k.clone(), Amount { milli, ..*v })
        })
        .collect();
    let huge: i128 = capacity
        .iter()
        .filter(|(k, _)| k.starts_with("hugepages-"))
        .map(|(_, v)| v.milli)
        .sum();
    if let Some(mem) = a.get_mut("memory") {
        mem.milli = (mem.milli - huge).max(0);
    }
    a
}

/// The node's allocatable as it reports it and admission checks it: `capacity` less
/// [`reservation`], as [`allocatable`].
pub fn node_allocatable(capacity: &Resources, reserved: &Reserved) -> Resources {
    allocatable(capacity, &reservation(capacity, reserved))
}

/// As the API's resource list.
pub fn to_api(resources: &Resources) -> BTreeMap<String, ApiQuantity> {
    resources
        .iter()
        .map(|(k, v)| (k.clone(), v.to_api()))
        .collect()
}
