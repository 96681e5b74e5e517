//! The runtime side of a pod: pod spec -> CRI sandbox and container configs, what CRI says exists
//! for a pod, and the calls that start and stop it.

pub mod container;
pub mod hash;
pub mod hostname;
pub mod hosts;
pub mod labels;
pub mod observed;
pub mod restart;
pub mod sandbox;
pub mod security_context;
pub mod subpath;

pub use observed::{
    ContainerView, ObservedContainer, ObservedPod, ObservedSandbox, RunState, SandboxView, latest,
    observe_all,
};
pub use sandbox::PodDirs;
