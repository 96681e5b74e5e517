//! The TTL object cache (the kubelet's `configMapAndSecretChangeDetectionStrategy: Cache`): a
//! GET at most once per [`TTL`] per object, shared by every pod referring to it; a new reference
//! makes the next read fetch again, so a starting pod sees the newest version.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Key, Object, ObjectError, fetch};

/// How long a read object is served from the cache (the kubelet's default TTL).
pub const TTL: Duration = Duration::from_secs(60);

struct Item<K> {
    refs: usize,
    fetched: Option<(Instant, Option<Arc<K>>)>,
}

/// Objects of one kind, each read again once its TTL passed.
pub struct TtlCache<K: Object> {
    client: kube::Client,
    ttl: Duration,
    items: Mutex<HashMap<Key, Item<K>>>,
}

impl<K: Object> TtlCache<K> {
    /// An empty cache.
    pub fn new(client: kube::Client, ttl: Duration) -> Self {
        TtlCache {
            client,
            ttl,
            items: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Item<K>>> {
        self.items.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One more pod refers to the object; its next read fetches it.
    pub fn add_reference(&self, ns: &str, name: &str) {
        let mut items = self.lock();
        let item = items
            .entry((ns.to_string(), name.to_string()))
            .or_insert(Item {
                refs: 0,
                fetched: None,
            });
        item.refs += 1;
        item.fetched = None;
    }

    /// One pod fewer refers to the object.
    pub fn delete_reference(&self, ns: &str, name: &str) {
        let mut items = self.lock();
        let key = (ns.to_string(), name.to_string());
        if let Some(item) = items.get_mut(&key) {
            item.refs = item.refs.saturating_sub(1);
            if item.refs == 0 {
                items.remove(&key);
            }
        }
    }

    /// The object (None when it does not exist), fetched when not read within the TTL.
    pub async fn get(&self, ns: &str, name: &str) -> Result<Option<Arc<K>>, ObjectError> {
        let key = (ns.to_string(), name.to_string());
        {
            let items = self.lock();
            let Some(item) = items.get(&key) else {
                return Err(ObjectError::NotRegistered {
                    namespace: ns.to_string(),
                    name: name.to_string(),
                });
            };
            if let Some((at, v)) = &item.fetched
                && at.elapsed() < self.ttl
            {
                return Ok(v.clone());
            }
        }
        let v = fetch::<K>(&self.client, ns, name).await?;
        if let Some(item) = self.lock().get_mut(&key) {
            item.fetched = Some((Instant::now(), v.clone()));
        }
        Ok(v)
    }
}
