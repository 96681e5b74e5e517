//! A small map whose entries expire: the TokenReview and SubjectAccessReview answer caches.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Entries live for the TTL given at insertion; at most `capacity` entries are kept.
pub struct TtlCache<K, V> {
    entries: Mutex<HashMap<K, (V, Instant)>>,
    capacity: usize,
}

impl<K: Eq + Hash, V: Clone> TtlCache<K, V> {
    /// An empty cache holding at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        TtlCache {
            entries: Mutex::new(HashMap::new()),
            capacity,
        }
    }

    /// The value for `key` if present and not expired.
    pub fn get(&self, key: &K) -> Option<V> {
        let map = self.entries.lock().ok()?;
        let (v, until) = map.get(key)?;
        (Instant::now() < *until).then(|| v.clone())
    }

    /// Stores `value` for `ttl`; a zero TTL stores nothing.
    pub fn insert(&self, key: K, value: V, ttl: Duration) {
        if ttl.is_zero() {
            return;
        }
        let Ok(mut map) = self.entries.lock() else {
            return;
        };
        if map.len() >= self.capacity {
            let now = Instant::now();
            map.retain(|_, (_, until)| *until > now);
            if map.len() >= self.capacity {
                map.clear();
            }
        }
        map.insert(key, (value, Instant::now() + ttl));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_zero_ttl_and_capacity() {
        let c = TtlCache::new(2);
        c.insert(1, "a", Duration::from_secs(60));
        assert_eq!(c.get(&1), Some("a"));
        c.insert(2, "b", Duration::ZERO);
        assert_eq!(c.get(&2), None);
        c.insert(3, "c", Duration::from_nanos(1));
        std::thread::sleep(Duration::from_millis(1));
        assert_eq!(c.get(&3), None);
        // Full: the expired entry goes first, the live one stays.
        c.insert(4, "d", Duration::from_secs(60));
        assert_eq!(c.get(&1), Some("a"));
        assert_eq!(c.get(&4), Some("d"));
    }
}
