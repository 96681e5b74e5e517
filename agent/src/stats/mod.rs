//! The stats provider: one sampling loop reads the runtime, the cgroups and procfs on an
//! interval and keeps the latest [`summary::Summary`] in memory; scrapes only read it.

pub mod cgroup;
pub mod fs;
pub mod node_proc;
pub mod rate;
pub mod sampler;
pub mod summary;

pub use sampler::{NodeFacts, SamplerConfig, spawn};

use std::sync::{Arc, RwLock};

use summary::Summary;

/// A cheap, clonable handle on the latest sampled Summary.
#[derive(Clone, Debug, Default)]
pub struct StatsProvider {
    latest: Arc<RwLock<Option<Arc<Summary>>>>,
}

impl StatsProvider {
    /// A provider with no sample yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The latest Summary; `None` until the first sample.
    pub fn latest(&self) -> Option<Arc<Summary>> {
        self.latest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the latest Summary (the sampling loop, or tests).
    pub fn publish(&self, summary: Summary) {
        *self.latest.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(summary));
    }
}
