//! CSI on the node, as the kubelet's CSI plugin: the drivers registered through the plugin
//! watcher (their node service clients by driver name), the CSINode object that publishes them,
//! and the client of a driver's socket. The pod-side volume operations are `volume::csi`.

pub mod client;
pub mod csinode;
pub mod pluginwatcher;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};

pub use client::{CsiClient, CsiError, NodeInfo};

/// A registered CSI driver.
#[derive(Debug, Clone)]
pub struct Driver {
    /// Its node service's socket.
    pub endpoint: PathBuf,
    /// The client of that socket.
    pub client: CsiClient,
    /// What NodeGetInfo answered at registration.
    pub info: NodeInfo,
}

/// The registered CSI drivers by name (the kubelet's csiDrivers store), shared by the plugin
/// watcher that fills it and the pod workers that mount through it.
#[derive(Debug, Clone, Default)]
pub struct Drivers(Arc<RwLock<HashMap<String, Driver>>>);

impl Drivers {
    /// The client of driver `name`, when it is registered.
    pub fn client(&self, name: &str) -> Option<CsiClient> {
        let map = self.0.read().ok()?;
        map.get(name).map(|d| d.client.clone())
    }

    /// Records driver `name` (a newer registration replaces an older one).
    pub fn insert(&self, name: &str, driver: Driver) {
        if let Ok(mut map) = self.0.write() {
            map.insert(name.to_string(), driver);
        }
    }

    /// Forgets driver `name`; true when it was registered.
    pub fn remove(&self, name: &str) -> bool {
        self.0
            .write()
            .map(|mut m| m.remove(name).is_some())
            .unwrap_or(false)
    }

    /// The registered drivers' names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .0
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default();
        names.sort();
        names
    }
}
