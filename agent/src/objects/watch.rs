//! The watch-based object cache (the kubelet's `configMapAndSecretChangeDetectionStrategy:
//! Watch`): one watch per referenced object (`fieldSelector=metadata.name=<name>` in its
//! namespace), reference-counted across pods, relisting at once on 410 Gone and backing off on
//! other errors as the kubelet's reflectors ([`crate::client::watch`]). A read waits for the
//! watch's first list (at most [`SYNC_WAIT`]); an object seen `immutable: true` stops being
//! watched and keeps its last value; a watch nobody read for [`max_idle`] is stopped and
//! restarted by the next read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Api;
use kube::runtime::watcher::{self, Event};
use tokio::sync::watch as channel;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Key, Object, ObjectError};

/// How long a read waits for an object's first list (the kubelet polls for 1 s).
pub const SYNC_WAIT: Duration = Duration::from_secs(1);
/// How often idle watches are looked for.
const RECYCLE_EVERY: Duration = Duration::from_secs(60);

/// How long a watch may go unread before it stops: 5 sync periods, at least a minute, as the
/// kubelet (volumes are re-read every sync period; only env-only references go idle).
pub fn max_idle(sync_frequency: Duration) -> Duration {
    (sync_frequency * 5).max(Duration::from_secs(60))
}

/// What a watch knows of its object.
#[derive(Debug)]
enum Slot<K> {
    /// The first list is not complete (or the watch was stopped).
    Unsynced,
    /// The object as last seen; None when it does not exist.
    Synced(Option<Arc<K>>),
}

impl<K> Clone for Slot<K> {
    fn clone(&self) -> Self {
        match self {
            Slot::Unsynced => Slot::Unsynced,
            Slot::Synced(v) => Slot::Synced(v.clone()),
        }
    }
}

struct Item<K> {
    refs: usize,
    slot: Arc<channel::Sender<Slot<K>>>,
    /// Stops the running watch; None when stopped.
    running: Option<CancellationToken>,
    immutable: bool,
    last_access: Instant,
}

/// Objects of one kind, each kept current by its own watch while a pod refers to it.
pub struct WatchCache<K: Object> {
    client: kube::Client,
    items: Arc<Mutex<HashMap<Key, Item<K>>>>,
    cancel: CancellationToken,
}

impl<K: Object> WatchCache<K> {
    /// An empty cache; watches stop when `cancel` fires. Spawns the idle-watch recycler.
    pub fn new(client: kube::Client, max_idle: Duration, cancel: CancellationToken) -> Self {
        let items: Arc<Mutex<HashMap<Key, Item<K>>>> = Arc::default();
        let recycled = Arc::downgrade(&items);
        let stop = cancel.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(RECYCLE_EVERY) => {}
                }
                let Some(items) = recycled.upgrade() else {
                    return;
                };
                let mut items = items.lock().unwrap_or_else(|e| e.into_inner());
                for ((ns, name), item) in items.iter_mut() {
                    let synced = matches!(*item.slot.borrow(), Slot::Synced(_));
                    if item.running.is_some() && synced && item.last_access.elapsed() > max_idle {
                        debug!(namespace = %ns, name = %name, resource = K::RESOURCE, "not read for long: stopped watching");
                        stop_item(item);
                    }
                }
            }
        });
        WatchCache {
            client,
            items,
            cancel,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Item<K>>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One more pod refers to the object: its watch starts with the first reference.
    pub fn add_reference(&self, ns: &str, name: &str) {
        let mut items = self.lock();
        let key = (ns.to_string(), name.to_string());
        let item = items.entry(key).or_insert_with(|| Item {
            refs: 0,
            slot: Arc::new(channel::Sender::new(Slot::Unsynced)),
            running: None,
            immutable: false,
            last_access: Instant::now(),
        });
        item.refs += 1;
        if item.refs == 1 {
            self.start(ns, name, item);
        }
    }

    /// One pod fewer refers to the object: its watch stops with the last reference.
    pub fn delete_reference(&self, ns: &str, name: &str) {
        let mut items = self.lock();
        let key = (ns.to_string(), name.to_string());
        if let Some(item) = items.get_mut(&key) {
            item.refs = item.refs.saturating_sub(1);
            if item.refs == 0 {
                stop_item(item);
                items.remove(&key);
            }
        }
    }

    fn start(&self, ns: &str, name: &str, item: &mut Item<K>) {
        if item.running.is_some() || item.immutable {
            return;
        }
        let token = self.cancel.child_token();
        item.running = Some(token.clone());
        let api: Api<K> = Api::namespaced(self.client.clone(), ns);
        tokio::spawn(run(api, name.to_string(), item.slot.clone(), token));
    }

    /// True while the object's watch runs (for tests and diagnostics).
    pub fn watching(&self, ns: &str, name: &str) -> bool {
        self.lock()
            .get(&(ns.to_string(), name.to_string()))
            .is_some_and(|i| i.running.is_some())
    }

    /// The object from its watch (None when it does not exist), waiting for the first list.
    pub async fn get(&self, ns: &str, name: &str) -> Result<Option<Arc<K>>, ObjectError> {
        let key = (ns.to_string(), name.to_string());
        let mut rx = {
            let mut items = self.lock();
            let Some(item) = items.get_mut(&key) else {
                return Err(ObjectError::NotRegistered {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                });
            };
            item.last_access = Instant::now();
            self.start(ns, name, item);
            item.slot.subscribe()
        };
        let synced =
            tokio::time::timeout(SYNC_WAIT, rx.wait_for(|s| matches!(s, Slot::Synced(_)))).await;
        let value = match synced {
            Ok(Ok(slot)) => match &*slot {
                Slot::Synced(v) => v.clone(),
                Slot::Unsynced => None,
            },
            _ => {
                return Err(ObjectError::SyncTimeout {
                    resource: K::RESOURCE,
                });
            }
        };
        if value.as_ref().is_some_and(|v| v.is_immutable()) {
            let mut items = self.lock();
            if let Some(item) = items.get_mut(&key)
                && !item.immutable
            {
                item.immutable = true;
                stop_item(item);
                debug!(namespace = %ns, name = %name, resource = K::RESOURCE, "object is immutable: stopped watching");
            }
        }
        Ok(value)
    }
}

/// Stops the item's watch; what it saw is forgotten unless the object is immutable.
fn stop_item<K>(item: &mut Item<K>) {
    if let Some(token) = item.running.take() {
        token.cancel();
        if !item.immutable {
            item.slot.send_replace(Slot::Unsynced);
        }
    }
}

/// Watches one object until cancelled, publishing what it sees into `slot`.
async fn run<K: Object>(
    api: Api<K>,
    name: String,
    slot: Arc<channel::Sender<Slot<K>>>,
    cancel: CancellationToken,
) {
    let cfg = crate::client::watch::config().fields(&format!("metadata.name={name}"));
    let mut stream = crate::client::watch::with_backoff(watcher::watcher(api, cfg).boxed()).boxed();
    // The object of the list in progress, if any (a relist replaces what was known).
    let mut listing: Option<Option<Arc<K>>> = None;
    loop {
        let ev = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            ev = stream.next() => ev,
        };
        let publish = |v: Option<Arc<K>>| {
            if !cancel.is_cancelled() {
                slot.send_replace(Slot::Synced(v));
            }
        };
        let ours = |o: &K| o.meta().name.as_deref() == Some(name.as_str());
        match ev {
            None => {
                warn!(name = %name, resource = K::RESOURCE, "object watch ended");
                return;
            }
            Some(Ok(Event::Init)) => listing = Some(None),
            Some(Ok(Event::InitApply(o))) => {
                if let Some(l) = listing.as_mut().filter(|_| ours(&o)) {
                    *l = Some(Arc::new(o));
                }
            }
            Some(Ok(Event::InitDone)) => publish(listing.take().flatten()),
            Some(Ok(Event::Apply(o))) if ours(&o) => publish(Some(Arc::new(o))),
            Some(Ok(Event::Delete(o))) if ours(&o) => publish(None),
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                warn!(name = %name, resource = K::RESOURCE, error = %e, "object watch failed; retrying with back-off")
            }
        }
    }
}
