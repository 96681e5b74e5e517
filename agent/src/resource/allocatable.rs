//! Node allocatable, as the kubelet computes it from the node's capacity (which
//! `node::allocatable` reads from the machine): allocatable = capacity - systemReserved -
//! kubeReserved - hard eviction thresholds (`memory.available`, `nodefs.available`), minus huge pages for memory, floored at 0.
//! Quantities are written in the API server's canonical form so a patch compares equal to what
//! the kubelet would write.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity as ApiQuantity;

use super::parse_quantity;

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

/// A hard eviction threshold's value against `capacity` (bytes), as the kubelet's
/// GetThresholdQuantity: a quantity, or a percentage parsed as a float32 fraction.
fn threshold_bytes(value: &str, capacity: i128) -> Option<i128> {
    if let Some(p) = value.trim().strip_suffix('%') {
        let pct: f32 = p.trim().parse::<f64>().ok()? as f32 / 100.0;
        return Some(((capacity as f64) * f64::from(pct)) as i64 as i128);
    }
    parse_quantity(value).ok().map(|q| q.value() as i128)
}

/// The reservation per capacity resource (thousandths): systemReserved + kubeReserved + hard
/// eviction (`memory.available` against memory, `nodefs.available` against ephemeral-storage).
/// Resources with a zero reservation are absent, as in the kubelet.
pub fn reservation(
    capacity: &Resources,
    system_reserved: &BTreeMap<String, String>,
    kube_reserved: &BTreeMap<String, String>,
    eviction_hard: &BTreeMap<String, String>,
) -> BTreeMap<String, i128> {
    let mut eviction = BTreeMap::new();
    for (signal, resource) in [
        ("memory.available", "memory"),
        ("nodefs.available", "ephemeral-storage"),
    ] {
        if let (Some(value), Some(cap)) = (eviction_hard.get(signal), capacity.get(resource))
            && let Some(bytes) = threshold_bytes(value, cap.milli / 1000)
        {
            eviction.insert(resource.to_string(), bytes * 1000);
        }
    }
    let reserved = |m: &BTreeMap<String, String>, k: &str| -> i128 {
        m.get(k)
            .and_then(|v| parse_quantity(v).ok())
            .map(|q| q.milli_value() as i128)
            .unwrap_or(0)
    };
    capacity
        .keys()
        .filter_map(|k| {
            let v = reserved(system_reserved, k)
                + reserved(kube_reserved, k)
                + eviction.get(k).copied().unwrap_or(0);
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
pub fn node_allocatable(
    capacity: &Resources,
    system_reserved: &BTreeMap<String, String>,
    kube_reserved: &BTreeMap<String, String>,
    eviction_hard: &BTreeMap<String, String>,
) -> Resources {
    let reserved = reservation(capacity, system_reserved, kube_reserved, eviction_hard);
    allocatable(capacity, &reserved)
}

/// As the API's resource list.
pub fn to_api(resources: &Resources) -> BTreeMap<String, ApiQuantity> {
    resources
        .iter()
        .map(|(k, v)| (k.clone(), v.to_api()))
        .collect()
}
