//! The in-memory cache of token validations.
//!
//! Valid tokens are cached each until the earlier of its own expiry and
//! `token_cache_time` from now, as keystonemiddleware does. Unlike keystonemiddleware 13,
//! which asks Keystone again at every presentation of an invalid token, a token Keystone
//! refused is remembered briefly ([`INVALID_TTL`]) in a cache of its own, so a flood of
//! bogus tokens neither reaches Keystone twice per token nor evicts valid ones. Keys are
//! the SHA-256 of the token, never the token itself. The number of entries is capped:
//! inserting beyond the cap drops expired entries at the old end, then the oldest ones.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

/// The default entry cap.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// How long a refused token is remembered (at most `token_cache_time`).
pub const INVALID_TTL: Duration = Duration::from_secs(10);

type Key = [u8; 32];

fn key(token: &str) -> Key {
    Sha256::digest(token.as_bytes()).into()
}

struct Slot<V> {
    value: V,
    deadline: Instant,
    seq: u64,
}

struct Inner<V> {
    map: HashMap<Key, Slot<V>>,
    /// Insertion order; an item whose `seq` differs from its slot's is stale.
    order: VecDeque<(Key, u64)>,
    seq: u64,
}

/// A bounded cache from token (hashed) to `V`, with a time to live.
pub struct TokenCache<V> {
    inner: Mutex<Inner<V>>,
    ttl: Duration,
    capacity: usize,
}

impl<V: Clone> TokenCache<V> {
    /// A cache keeping entries at most `ttl`, and at most `capacity` of them; a zero
    /// `ttl` or `capacity` caches nothing.
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        TokenCache {
            inner: Mutex::new(Inner {
                map: HashMap::new(),
                order: VecDeque::new(),
                seq: 0,
            }),
            ttl,
            capacity,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<V>> {
        // A panic while holding the lock leaves the maps consistent (every mutation is
        // a single std call), so a poisoned lock is still usable.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached value for `token`, if present and not expired.
    pub fn get(&self, token: &str) -> Option<V> {
        let k = key(token);
        let mut inner = self.lock();
        let slot = inner.map.get(&k)?;
        if slot.deadline > Instant::now() {
            return Some(slot.value.clone());
        }
        inner.map.remove(&k);
        None
    }

    /// Caches `value` for `token` until `ttl` from now, or `until` if earlier.
    pub fn insert(&self, token: &str, value: V, until: Option<Instant>) {
        if self.capacity == 0 {
            return;
        }
        let now = Instant::now();
        let mut deadline = now + self.ttl;
        if let Some(until) = until {
            deadline = deadline.min(until);
        }
        if deadline <= now {
            return;
        }
        let k = key(token);
        let mut inner = self.lock();
        inner.seq += 1;
        let seq = inner.seq;
        inner.map.insert(
            k,
            Slot {
                value,
                deadline,
                seq,
            },
        );
        inner.order.push_back((k, seq));
        while inner.map.len() > self.capacity {
            inner.evict_front(now);
        }
        if inner.order.len() > 2 * self.capacity + 16 {
            let Inner { map, order, .. } = &mut *inner;
            order.retain(|(k, s)| map.get(k).is_some_and(|slot| slot.seq == *s));
        }
    }

    /// Forgets `token`.
    pub fn remove(&self, token: &str) {
        self.lock().map.remove(&key(token));
    }

    /// The number of entries (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<V> Inner<V> {
    /// Drops the oldest live entry, and any expired ones before it.
    fn evict_front(&mut self, now: Instant) {
        while let Some((k, seq)) = self.order.pop_front() {
            let live = self.map.get(&k).is_some_and(|slot| slot.seq == seq);
            if !live {
                continue;
            }
            let expired = self.map.get(&k).is_some_and(|slot| slot.deadline <= now);
            self.map.remove(&k);
            if !expired {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_at_its_cap() {
        let cache = TokenCache::new(Duration::from_secs(300), 1_000);
        for i in 0..100_000 {
            cache.insert(&format!("bogus-{i}"), i, None);
            assert!(cache.len() <= 1_000);
        }
        assert_eq!(cache.len(), 1_000);
        assert!(cache.lock().order.len() <= 2 * 1_000 + 16);
        // The newest survive, the oldest are gone.
        assert_eq!(cache.get("bogus-99999"), Some(99_999));
        assert_eq!(cache.get("bogus-0"), None);
    }

    #[test]
    fn reinserting_one_token_keeps_one_entry() {
        let cache = TokenCache::new(Duration::from_secs(300), 10);
        for i in 0..1_000 {
            cache.insert("same", i, None);
        }
        assert_eq!(cache.len(), 1);
        assert!(cache.lock().order.len() <= 36);
        assert_eq!(cache.get("same"), Some(999));
    }

    #[test]
    fn entries_expire_at_the_earlier_deadline() {
        let cache = TokenCache::new(Duration::from_secs(300), 10);
        cache.insert("a", 1, Some(Instant::now() + Duration::from_millis(50)));
        cache.insert("b", 2, Some(Instant::now() - Duration::from_millis(1)));
        assert_eq!(cache.get("a"), Some(1));
        assert_eq!(cache.get("b"), None);
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(cache.get("a"), None);
        assert!(cache.is_empty());
    }

    #[test]
    fn zero_ttl_caches_nothing() {
        let cache = TokenCache::new(Duration::ZERO, 10);
        cache.insert("a", 1, None);
        assert_eq!(cache.get("a"), None);
    }

    #[test]
    fn keys_are_hashed() {
        let cache = TokenCache::new(Duration::from_secs(300), 10);
        cache.insert("gAAAAAB-raw-token", 1, None);
        let inner = cache.lock();
        let stored = inner.map.keys().next().unwrap();
        assert_eq!(
            hex::encode(stored),
            // sha256("gAAAAAB-raw-token")
            hex::encode(Sha256::digest(b"gAAAAAB-raw-token"))
        );
    }
}
