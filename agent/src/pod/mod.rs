//! Pods: where they come from (sources), who owns each one (the manager and one worker per pod),
//! and how a sync is decided (plan) and applied (worker).

pub mod admission;
pub mod allocation;
pub mod api_source;
pub mod backoff;
pub mod cache;
pub mod context;
mod evict;
pub mod image;
pub mod inputs;
pub mod keyring;
pub mod lifecycle;
pub mod manager;
pub mod mirror;
pub mod not_acted_on;
pub mod observe;
pub mod ordering;
pub mod plan;
pub mod pleg;
mod probing;
pub mod report;
mod resize;
pub mod resync;
#[cfg(test)]
mod rounds;
pub mod runtime;
pub mod runtime_class;
pub mod sandbox;
pub mod services;
pub mod source;
pub mod start;
pub mod sysctls;
pub mod teardown;
pub mod worker;
#[cfg(test)]
mod worker_tests;

pub use context::NodeContext;
pub use manager::PodManager;
