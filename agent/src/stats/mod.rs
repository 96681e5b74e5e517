//! The stats provider: one sampling loop reads the runtime, the cgroups and procfs on an
//! interval and keeps the latest [`summary::Summary`] in memory; scrapes only read it.

pub mod cgroup;
pub mod fs;
pub mod node_proc;
pub mod rate;
pub mod sampler;
pub mod summary;
pub mod volume_stats;

pub use sampler::{NodeFacts, SamplerConfig, spawn};

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};
use std::sync::{Arc, RwLock};

use summary::Summary;

/// What the runtime and the cgroups call the sampled pods and containers (the `id` and `name`
/// labels of cAdvisor's series), from the same round as the Summary.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Identities {
    /// Pod UID -> its cgroup as cAdvisor names it (`/kubepods/burstable/pod<uid>`).
    pub pod_cgroups: HashMap<String, String>,
    /// (pod UID, container name) -> the running instance.
    pub containers: HashMap<(String, String), ContainerIdentity>,
}

/// One running container's runtime ID, image and cgroup.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ContainerIdentity {
    /// The runtime's container ID.
    pub id: String,
    /// The image reference the runtime reports.
    pub image_ref: String,
    /// Its cgroup as cAdvisor names it (`/kubepods/.../pod<uid>/<id>`), if found.
    pub cgroup: Option<String>,
}

/// A cheap, clonable handle on the latest sampled Summary.
#[derive(Clone, Debug, Default)]
pub struct StatsProvider {
    latest: Arc<RwLock<Option<Arc<Summary>>>>,
    identities: Arc<RwLock<Arc<Identities>>>,
    /// Wakes those waiting for the next sample.
    published: Arc<tokio::sync::Notify>,
    /// Asks the sampling loop for a sample now.
    wanted: Arc<tokio::sync::Notify>,
    /// Requests for the pods' volumes measured again off their interval, numbered from 1.
    volumes_requested: Arc<AtomicU64>,
    /// The last request a published sample answered.
    volumes_served: Arc<AtomicU64>,
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
        self.published.notify_waiters();
    }

    /// Returns once the next Summary is published (the eviction manager acts on each sample as
    /// it lands).
    pub async fn next_sample(&self) {
        self.published.notified().await;
    }

    /// Asks the sampling loop for a sample now and returns once it is published (the eviction
    /// manager, when a memory threshold notifier fires between samples).
    pub async fn fresh_sample(&self) {
        // Created before the request, so the publication cannot slip past it.
        let published = self.published.notified();
        self.wanted.notify_one();
        published.await;
    }

    /// As [`Self::fresh_sample`], with every pod's volumes measured again in that sample rather
    /// than on their interval (the eviction manager, before ranking pods for disk pressure:
    /// usage measured before a pod filled its emptyDir would rank a quiet pod first).
    pub async fn fresh_sample_with_volumes(&self) {
        let request = self.volumes_requested.fetch_add(1, SeqCst) + 1;
        // A sample already past its measurement when asked does not answer: wait for one that
        // saw the request before measuring.
        while self.volumes_served.load(SeqCst) < request {
            self.fresh_sample().await;
        }
    }

    /// The newest request for the volumes measured again, if a sample has not answered it yet
    /// (the sampling loop, before it measures; it passes the number to
    /// [`Self::volumes_measured_for`] before publishing).
    pub fn volumes_wanted(&self) -> Option<u64> {
        let requested = self.volumes_requested.load(SeqCst);
        (requested > self.volumes_served.load(SeqCst)).then_some(requested)
    }

    /// Records that the sample about to be published measured the volumes for `request`.
    pub fn volumes_measured_for(&self, request: u64) {
        self.volumes_served.fetch_max(request, SeqCst);
    }

    /// Returns once somebody asked for a sample now (the sampling loop).
    pub async fn sample_wanted(&self) {
        self.wanted.notified().await;
    }

    /// The identities of the latest round.
    pub fn identities(&self) -> Arc<Identities> {
        self.identities
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Replaces the latest Summary and the identities of its round.
    pub fn publish_with(&self, summary: Summary, identities: Identities) {
        *self.identities.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(identities);
        self.publish(summary);
    }
}
