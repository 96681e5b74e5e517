//! The kubelet's configmap and secret managers (`pkg/kubelet/{configmap,secret}`,
//! `pkg/kubelet/util/manager`): pods register the ConfigMaps and Secrets they refer to (volumes,
//! env, envFrom, imagePullSecrets) when they are added or updated and release them when removed;
//! reads are served according to `configMapAndSecretChangeDetectionStrategy`:
//!
//! - `Watch` (default, [`watch`]): one watch per referenced object, shared by every pod using it;
//! - `Cache` ([`ttl`]): a GET at most once a minute per object, shared by every pod using it;
//! - `Get`: a GET at every read.

pub mod ttl;
pub mod watch;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::{ConfigMap, EnvFromSource, EnvVarSource, Pod, Secret};
use kube::{Api, Resource};
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use crate::config::ChangeDetectionStrategy;

/// A kind of object the managers keep: ConfigMap or Secret.
pub trait Object:
    Resource<Scope = NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + Sync
    + 'static
{
    /// The kubelet's name of the resource in its messages: `configmap` or `secret`.
    const RESOURCE: &'static str;
    /// True when the object is marked `immutable: true`.
    fn is_immutable(&self) -> bool;
}

impl Object for ConfigMap {
    const RESOURCE: &'static str = "configmap";
    fn is_immutable(&self) -> bool {
        self.immutable == Some(true)
    }
}

impl Object for Secret {
    const RESOURCE: &'static str = "secret";
    fn is_immutable(&self) -> bool {
        self.immutable == Some(true)
    }
}

/// Why an object could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// No registered pod refers to the object.
    #[error("object {namespace:?}/{name:?} not registered")]
    NotRegistered {
        /// Namespace.
        namespace: String,
        /// Name.
        name: String,
    },
    /// The object's watch did not complete its first list in time.
    #[error("failed to sync {resource} cache: timed out waiting for the condition")]
    SyncTimeout {
        /// `configmap` or `secret`.
        resource: &'static str,
    },
    /// The API server answered with an error.
    #[error("{resource} {name:?}: {message}")]
    Api {
        /// `configmap` or `secret`.
        resource: &'static str,
        /// Name.
        name: String,
        /// The error.
        message: String,
    },
}

/// Namespace and name of an object.
pub type Key = (String, String);

/// Reads one kind of object for the pods registered with it.
pub struct Manager<K: Object> {
    store: Store<K>,
    /// Names each registered pod (by UID) refers to, with its namespace.
    pods: Mutex<HashMap<String, (String, BTreeSet<String>)>>,
}

enum Store<K: Object> {
    Get(kube::Client),
    Cache(ttl::TtlCache<K>),
    Watch(watch::WatchCache<K>),
}

impl<K: Object> Manager<K> {
    /// A manager with the given strategy; `sync_frequency` sets how long an unread watch lives.
    pub fn new(
        client: kube::Client,
        strategy: ChangeDetectionStrategy,
        sync_frequency: Duration,
        cancel: CancellationToken,
    ) -> Self {
        let store = match strategy {
            ChangeDetectionStrategy::Get => Store::Get(client),
            ChangeDetectionStrategy::Cache => Store::Cache(ttl::TtlCache::new(client, ttl::TTL)),
            ChangeDetectionStrategy::Watch => Store::Watch(watch::WatchCache::new(
                client,
                watch::max_idle(sync_frequency),
                cancel,
            )),
        };
        Manager {
            store,
            pods: Mutex::new(HashMap::new()),
        }
    }

    /// Records that pod `uid` in `namespace` refers to `names` (replacing what it referred to).
    pub fn register(&self, uid: &str, namespace: &str, names: BTreeSet<String>) {
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        // New references first, then the old ones go: an object both use keeps its watch.
        for name in &names {
            self.add_reference(namespace, name);
        }
        if let Some((ns, old)) = pods.insert(uid.to_string(), (namespace.to_string(), names)) {
            for name in &old {
                self.delete_reference(&ns, name);
            }
        }
    }

    /// Releases every object pod `uid` referred to.
    pub fn unregister(&self, uid: &str) {
        let mut pods = self.pods.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((ns, old)) = pods.remove(uid) {
            for name in &old {
                self.delete_reference(&ns, name);
            }
        }
    }

    fn add_reference(&self, ns: &str, name: &str) {
        match &self.store {
            Store::Get(_) => {}
            Store::Cache(c) => c.add_reference(ns, name),
            Store::Watch(w) => w.add_reference(ns, name),
        }
    }

    fn delete_reference(&self, ns: &str, name: &str) {
        match &self.store {
            Store::Get(_) => {}
            Store::Cache(c) => c.delete_reference(ns, name),
            Store::Watch(w) => w.delete_reference(ns, name),
        }
    }

    /// The object, or None when it does not exist.
    pub async fn get(&self, ns: &str, name: &str) -> Result<Option<Arc<K>>, ObjectError> {
        match &self.store {
            Store::Get(client) => fetch(client, ns, name).await,
            Store::Cache(c) => c.get(ns, name).await,
            Store::Watch(w) => w.get(ns, name).await,
        }
    }
}

/// One GET of the object; None when it does not exist.
pub(crate) async fn fetch<K: Object>(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<Arc<K>>, ObjectError> {
    Api::<K>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map(|o| o.map(Arc::new))
        .map_err(|e| ObjectError::Api {
            resource: K::RESOURCE,
            name: name.to_string(),
            message: e.to_string(),
        })
}

/// The ConfigMap and Secret managers of the node.
pub struct Objects {
    /// ConfigMaps.
    pub config_maps: Manager<ConfigMap>,
    /// Secrets.
    pub secrets: Manager<Secret>,
}

impl Objects {
    /// Both managers with one strategy.
    pub fn new(
        client: kube::Client,
        strategy: ChangeDetectionStrategy,
        sync_frequency: Duration,
        cancel: CancellationToken,
    ) -> Self {
        Objects {
            config_maps: Manager::new(client.clone(), strategy, sync_frequency, cancel.clone()),
            secrets: Manager::new(client, strategy, sync_frequency, cancel),
        }
    }

    /// Registers what `pod` refers to (the kubelet's RegisterPod on pod add and update).
    pub fn register_pod(&self, pod: &Pod) {
        let uid = pod.metadata.uid.as_deref().unwrap_or_default();
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        self.config_maps.register(uid, ns, config_map_names(pod));
        self.secrets.register(uid, ns, secret_names(pod));
    }

    /// Releases what pod `uid` referred to (the kubelet's UnregisterPod on pod removal).
    pub fn unregister_pod(&self, uid: &str) {
        self.config_maps.unregister(uid);
        self.secrets.unregister(uid);
    }
}

/// The `valueFrom` of every env var and every `envFrom` of the pod's init, app and ephemeral
/// containers: where a pod's environment may name ConfigMaps and Secrets.
fn env_sources(pod: &Pod) -> (Vec<&EnvVarSource>, Vec<&EnvFromSource>) {
    let Some(spec) = &pod.spec else {
        return (vec![], vec![]);
    };
    let envs = spec
        .init_containers
        .iter()
        .flatten()
        .chain(spec.containers.iter())
        .map(|c| (c.env.as_ref(), c.env_from.as_ref()))
        .chain(
            spec.ephemeral_containers
                .iter()
                .flatten()
                .map(|c| (c.env.as_ref(), c.env_from.as_ref())),
        );
    let (mut values, mut froms) = (Vec::new(), Vec::new());
    for (env, env_from) in envs {
        values.extend(
            env.into_iter()
                .flatten()
                .filter_map(|e| e.value_from.as_ref()),
        );
        froms.extend(env_from.into_iter().flatten());
    }
    (values, froms)
}

/// Names of the ConfigMaps `pod` refers to: configMap volumes, projected configMap sources, and
/// env/envFrom of its containers (the kubelet's VisitPodConfigmapNames).
pub fn config_map_names(pod: &Pod) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        out.extend(v.config_map.as_ref().map(|c| c.name.clone()));
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            out.extend(src.config_map.as_ref().map(|c| c.name.clone()));
        }
    }
    let (values, froms) = env_sources(pod);
    for e in values {
        out.extend(e.config_map_key_ref.as_ref().map(|r| r.name.clone()));
    }
    for e in froms {
        out.extend(e.config_map_ref.as_ref().map(|r| r.name.clone()));
    }
    out.retain(|n| !n.is_empty());
    out
}

/// Names of the Secrets `pod` refers to: imagePullSecrets, secret volumes, projected secret
/// sources, and env/envFrom of its containers (the kubelet's VisitPodSecretNames, less the
/// volume plugins bosun does not have).
pub fn secret_names(pod: &Pod) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let Some(spec) = &pod.spec else {
        return out;
    };
    for r in spec.image_pull_secrets.iter().flatten() {
        out.insert(r.name.clone());
    }
    for v in spec.volumes.iter().flatten() {
        out.extend(v.secret.as_ref().and_then(|s| s.secret_name.clone()));
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            out.extend(src.secret.as_ref().map(|s| s.name.clone()));
        }
    }
    let (values, froms) = env_sources(pod);
    for e in values {
        out.extend(e.secret_key_ref.as_ref().map(|r| r.name.clone()));
    }
    for e in froms {
        out.extend(e.secret_ref.as_ref().map(|r| r.name.clone()));
    }
    out.retain(|n| !n.is_empty());
    out
}

#[cfg(test)]
mod tests;
