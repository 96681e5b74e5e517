//! Node capacity as the kubelet computes it from the machine (cAdvisor's view); allocatable
//! (capacity less the reservations) is a resource computation, in [`crate::resource::allocatable`],
//! re-exported here.

use super::machine::MachineInfo;

pub use crate::resource::allocatable::*;

/// Capacity: cpu, memory, huge pages from the machine; pods = maxPods; ephemeral-storage = size of
/// the filesystem holding the root dir (0 when it cannot be read).
pub fn capacity(machine: &MachineInfo, rootfs_capacity: Option<u64>, max_pods: u32) -> Resources {
    let mut c = Resources::new();
    c.insert(
        "cpu".into(),
        Amount::units(machine.num_cores as i128, Format::DecimalSi),
    );
    c.insert(
        "memory".into(),
        Amount::units(machine.memory_capacity as i128, Format::BinarySi),
    );
    for hp in &machine.huge_pages {
        c.insert(
            huge_page_resource(hp.page_size),
            Amount::units((hp.page_size * hp.count) as i128, Format::BinarySi),
        );
    }
    c.insert(
        "pods".into(),
        Amount::units(max_pods as i128, Format::DecimalSi),
    );
    c.insert(
        "ephemeral-storage".into(),
        Amount::units(rootfs_capacity.unwrap_or(0) as i128, Format::BinarySi),
    );
    c
}

#[cfg(test)]
mod tests {
    use super::super::machine::HugePages;
    use std::collections::BTreeMap;

    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn huge_page_names() {
        assert_eq!(huge_page_resource(2 << 20), "hugepages-2Mi");
        assert_eq!(huge_page_resource(1 << 30), "hugepages-1Gi");
    }

    fn machine() -> MachineInfo {
        MachineInfo {
            num_cores: 2,
            memory_capacity: 8_141_236 * 1024,
            huge_pages: vec![
                HugePages {
                    page_size: 2 << 20,
                    count: 0,
                },
                HugePages {
                    page_size: 1 << 30,
                    count: 0,
                },
            ],
            ..Default::default()
        }
    }

    fn strings(r: &Resources) -> BTreeMap<String, String> {
        r.iter().map(|(k, v)| (k.clone(), v.canonical())).collect()
    }

    #[test]
    fn capacity_from_machine() {
        let c = capacity(&machine(), Some(105_089_261_568), 110);
        assert_eq!(
            strings(&c),
            map(&[
                ("cpu", "2"),
                ("memory", "8141236Ki"),
                ("hugepages-2Mi", "0"),
                ("hugepages-1Gi", "0"),
                ("pods", "110"),
                ("ephemeral-storage", "102626232Ki"),
            ])
        );
        assert_eq!(
            capacity(&machine(), None, 110)["ephemeral-storage"].canonical(),
            "0"
        );
    }

    /// name, machine, systemReserved, kubeReserved, evictionHard, expected allocatable.
    type Case = (
        &'static str,
        MachineInfo,
        BTreeMap<String, String>,
        BTreeMap<String, String>,
        BTreeMap<String, String>,
        Vec<(&'static str, String)>,
    );

    /// Allocatable against the kubelet's formula, on the kubelet's default and custom settings.
    #[test]
    fn allocatable_as_the_kubelet() {
        let default_eviction = map(&[
            ("memory.available", "100Mi"),
            ("nodefs.available", "10%"),
            ("nodefs.inodesFree", "5%"),
            ("imagefs.available", "15%"),
        ]);
        let storage: u64 = 105_089_261_568;
        // int64(float64(capacity) * float64(float32(0.1))): the kubelet's float32 percentage.
        let tenth = (storage as f64 * f64::from(0.1f32)) as u64;
        let mut huge = machine();
        huge.huge_pages[0].count = 512; // 1Gi of 2Mi pages
        let cases: Vec<Case> = vec![
            (
                "kubelet defaults",
                machine(),
                map(&[]),
                map(&[]),
                default_eviction.clone(),
                vec![
                    ("cpu", "2".into()),
                    ("memory", "8038836Ki".into()),
                    ("ephemeral-storage", (storage - tenth).to_string()),
                    ("pods", "110".into()),
                    ("hugepages-2Mi", "0".into()),
                ],
            ),
            (
                "reserved cpu, memory and storage",
                machine(),
                map(&[("cpu", "100m"), ("memory", "256Mi"), ("pid", "1000")]),
                map(&[
                    ("cpu", "200m"),
                    ("memory", "0.5Gi"),
                    ("ephemeral-storage", "1Gi"),
                ]),
                map(&[("memory.available", "5%"), ("nodefs.available", "1Gi")]),
                vec![
                    ("cpu", "1700m".into()),
                    (
                        "memory",
                        Amount::units(
                            8_336_625_664
                                - 256 * 1024 * 1024
                                - 512 * 1024 * 1024
                                - (8_336_625_664f64 * f64::from(0.05f32)) as i128,
                            Format::BinarySi,
                        )
                        .canonical(),
                    ),
                    ("ephemeral-storage", "100529080Ki".into()),
                ],
            ),
            (
                "no thresholds: allocatable is capacity",
                machine(),
                map(&[]),
                map(&[]),
                map(&[]),
                vec![
                    ("memory", "8141236Ki".into()),
                    ("ephemeral-storage", "102626232Ki".into()),
                ],
            ),
            (
                "huge pages come out of memory",
                huge,
                map(&[]),
                map(&[]),
                map(&[("memory.available", "100Mi")]),
                vec![
                    ("memory", "6990260Ki".into()),
                    ("hugepages-2Mi", "1Gi".into()),
                ],
            ),
            (
                "reservation above capacity floors at zero",
                machine(),
                map(&[("cpu", "3")]),
                map(&[]),
                map(&[]),
                vec![("cpu", "0".into())],
            ),
        ];
        for (name, m, system, kube, eviction, want) in cases {
            let c = capacity(&m, Some(storage), 110);
            let none = BTreeMap::new();
            let thresholds = crate::config::eviction::thresholds(crate::config::eviction::Fields {
                hard: &eviction,
                soft: &none,
                soft_grace_period: &none,
                minimum_reclaim: &none,
                enforce_node_allocatable: &[],
            })
            .unwrap();
            let reserved = crate::config::reserved(&system, &kube, &thresholds);
            let a = strings(&allocatable(&c, &reservation(&c, &reserved)));
            for (k, v) in want {
                assert_eq!(a.get(k), Some(&v), "{name}: {k}");
            }
        }
    }
}
