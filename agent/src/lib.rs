//! bosun: a Kubernetes node agent. The library holds one module per kubelet concept; `main` wires.

pub mod app;
pub mod atomic_file;
pub mod backoff;
pub mod cgroup;
pub mod client;
pub mod config;
pub mod csi;
pub mod devicemanager;
pub mod events;
pub mod eviction;
pub mod gc;
pub mod healthz;
pub mod logging;
pub mod logs;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod nodeshutdown;
pub mod objects;
pub mod pod;
pub mod podresources;
pub mod prober;
pub mod resource;
pub mod runtime;
pub mod sdnotify;
pub mod server;
pub mod stats;
pub mod status;
pub mod tasks;
pub mod version;
pub mod volume;

#[cfg(test)]
mod fuzz;
