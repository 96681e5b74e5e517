//! Test harness: starts the real runtime, registry and control plane (through `tests/env/up`) and
//! hands each test its own parts: a private containerd per node, deadlines for waiting.

pub mod agent;
pub mod apiserver;
pub mod bench;
pub mod bosun;
pub mod cluster;
pub mod daemon;
pub mod env;
pub mod fixture;
pub mod hollow;
pub mod kubelet;
pub mod logind;
pub mod metrics_server;
pub mod node;
pub mod plugin_registration;
pub mod pod;
pub mod prom;
pub mod proxy;
pub mod standalone;
pub mod upstream;
pub mod vm;
pub mod wait;

pub use agent::{Agent, AgentProcess, facts};
pub use apiserver::ApiServerReplica;
pub use bosun::{Bosun, bosun_bin};
pub use cluster::{ClusterNode, NodeOptions, admin_client, kubectl};
pub use env::{Env, repo_root};
pub use fixture::BosunNode;
pub use kubelet::{KubeletClient, mint_client_cert};
pub use node::{Containerd, cgroup_dirs_under, cgroups_under, mounts_below, mounts_under};
pub use pod::{Container, PodBuilder};
pub use proxy::FaultProxy;
pub use standalone::StandaloneNode;
pub use upstream::Kubelet;
pub use vm::Vm;
pub use wait::{wait_until, wait_until_async};
