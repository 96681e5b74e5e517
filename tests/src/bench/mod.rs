//! The benchmark (`tests/bench/run`): Bosun against the upstream kubelet on the same machine,
//! containerd, control plane, images and pods, one after the other in one run.

pub mod audit;
pub mod density;
pub mod eviction;
pub mod floor;
pub mod hollow;
pub mod logs;
pub mod pods;
pub mod probes;
pub mod procfs;
pub mod report;
pub mod scenario;
pub mod scrape;
pub mod soak;
pub mod stats;
pub mod streaming;
pub mod vm;
