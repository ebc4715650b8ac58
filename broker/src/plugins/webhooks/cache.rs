//! The answer cache of the auth hooks (`specs/webhooks.md` 5): only `ok` answers that came
//! with `cache-control: max-age=N`, keyed by endpoint, hook and the request without payload
//! and peer port ([`Key`]: 128 bits of keyed SipHash over those fields, so a lookup costs no
//! serialization and no allocation, and nobody can craft a request that collides with
//! another's without the process's random keys); an entry lives N whole seconds (VerneMQ's rule: valid while
//! `expiry >= now` in seconds, so `max-age=0` still hits within the second). Expired entries
//! go when looked up, or when the cache is full and room is needed. Bounded in entries: when
//! full of live entries, new answers are not cached (counted).

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

use parking_lot::Mutex;
use tokio::time::Instant;

use crate::hooks::{PublishModifiers, RegisterModifiers, TopicVerdict};

/// A cached decision.
#[derive(Clone, Debug)]
pub enum Cached {
    /// `auth_on_register(_m5)`: ok, with modifiers if any.
    Register(Option<RegisterModifiers>),
    /// `auth_on_publish(_m5)`: ok, with modifiers (never the payload) if any.
    Publish(Option<PublishModifiers>),
    /// `auth_on_subscribe(_m5)`: the verdict per topic.
    Subscribe(Vec<TopicVerdict>),
}

/// `hits`, `misses`, `entries` of one (endpoint, hook), as `webhooks cache show` lists them.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Lookups that found a live entry.
    pub hits: AtomicU64,
    /// Lookups that did not.
    pub misses: AtomicU64,
    /// Entries stored and not yet removed.
    pub entries: AtomicU64,
}

impl CacheStats {
    fn reset(&self) {
        self.hits.store(0, Relaxed);
        self.misses.store(0, Relaxed);
        self.entries.store(0, Relaxed);
    }
}

/// Builds a cache key: the fields of a request, fed in a fixed order.
pub struct Key {
    a: std::collections::hash_map::DefaultHasher,
    b: std::collections::hash_map::DefaultHasher,
}

/// The process's two SipHash keys for [`Key`].
static KEYS: std::sync::LazyLock<(RandomState, RandomState)> =
    std::sync::LazyLock::new(|| (RandomState::new(), RandomState::new()));

impl Key {
    /// A key for `endpoint` and hook `hook`.
    pub fn new(endpoint: &str, hook: usize) -> Key {
        let mut k = Key {
            a: KEYS.0.build_hasher(),
            b: KEYS.1.build_hasher(),
        };
        k.add(endpoint).add(hook);
        k
    }

    /// Feeds one field.
    pub fn add(&mut self, v: impl Hash) -> &mut Key {
        v.hash(&mut self.a);
        v.hash(&mut self.b);
        self
    }

    /// The key.
    pub fn finish(&self) -> u128 {
        (u128::from(self.a.finish()) << 64) | u128::from(self.b.finish())
    }
}

struct Entry {
    expires: u64,
    value: Cached,
    stats: Arc<CacheStats>,
}

const SHARDS: usize = 16;

/// The cache, shared by every endpoint.
pub struct Cache {
    shards: [Mutex<HashMap<u128, Entry, foldhash::fast::RandomState>>; SHARDS],
    len: AtomicUsize,
    max: usize,
    /// Answers not cached because the cache was full of live entries.
    pub full: AtomicU64,
    start: Instant,
}

impl std::fmt::Debug for Cache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cache")
            .field("len", &self.len.load(Relaxed))
            .field("max", &self.max)
            .finish()
    }
}

impl Cache {
    /// An empty cache of at most `max` entries.
    pub fn new(max: usize) -> Cache {
        Cache {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::default())),
            len: AtomicUsize::new(0),
            max,
            full: AtomicU64::new(0),
            start: Instant::now(),
        }
    }

    fn now(&self) -> u64 {
        self.start.elapsed().as_secs()
    }

    fn shard(&self, key: u128) -> &Mutex<HashMap<u128, Entry, foldhash::fast::RandomState>> {
        // The key is a keyed hash already: its low bits are as good as any.
        &self.shards[key as usize % SHARDS]
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.len.load(Relaxed)
    }

    /// The live entry for `key`, counted in `stats`.
    pub fn get(&self, key: u128, stats: &CacheStats) -> Option<Cached> {
        let now = self.now();
        let mut shard = self.shard(key).lock();
        match shard.get(&key) {
            Some(e) if e.expires >= now => {
                stats.hits.fetch_add(1, Relaxed);
                return Some(e.value.clone());
            }
            Some(_) => {
                if let Some(e) = shard.remove(&key) {
                    self.removed(&e);
                }
            }
            None => {}
        }
        stats.misses.fetch_add(1, Relaxed);
        None
    }

    /// A live entry, counted as a hit; nothing is counted or removed when there is none (the
    /// caller then asks [`Cache::get`]).
    pub fn hit(&self, key: u128, stats: &CacheStats) -> Option<Cached> {
        let now = self.now();
        let shard = self.shard(key).lock();
        let e = shard.get(&key).filter(|e| e.expires >= now)?;
        stats.hits.fetch_add(1, Relaxed);
        Some(e.value.clone())
    }

    fn removed(&self, e: &Entry) {
        self.len.fetch_sub(1, Relaxed);
        // Saturating: `cache show --reset` may have zeroed it since.
        let _ = e
            .stats
            .entries
            .fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_sub(1)));
    }

    /// Stores an answer for `max_age` seconds.
    pub fn put(&self, key: u128, value: Cached, max_age: u64, stats: &Arc<CacheStats>) {
        let now = self.now();
        let mut shard = self.shard(key).lock();
        if !shard.contains_key(&key) && self.len.load(Relaxed) >= self.max {
            let expired: Vec<u128> = shard
                .iter()
                .filter(|(_, e)| e.expires < now)
                .map(|(k, _)| *k)
                .collect();
            for k in expired {
                if let Some(e) = shard.remove(&k) {
                    self.removed(&e);
                }
            }
            if self.len.load(Relaxed) >= self.max {
                self.full.fetch_add(1, Relaxed);
                return;
            }
        }
        let entry = Entry {
            expires: now.saturating_add(max_age),
            value,
            stats: stats.clone(),
        };
        if shard.insert(key, entry).is_none() {
            self.len.fetch_add(1, Relaxed);
            stats.entries.fetch_add(1, Relaxed);
        }
    }

    /// Empties the cache (`webhooks cache clear`).
    pub fn clear(&self, stats: &[Arc<CacheStats>]) {
        for s in &self.shards {
            let mut s = s.lock();
            self.len.fetch_sub(s.len(), Relaxed);
            s.clear();
        }
        for s in stats {
            s.reset();
        }
    }

    /// Zeroes the counters only (`webhooks cache show --reset`).
    pub fn reset_stats(stats: &[Arc<CacheStats>]) {
        for s in stats {
            s.hits.store(0, Relaxed);
            s.misses.store(0, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn whole_seconds_lazy_expiry_and_a_bound() {
        let cache = Cache::new(2);
        let stats = Arc::new(CacheStats::default());
        let key = |s: &str| Key::new("http://e", 0).add(s).finish();
        assert_ne!(key("a"), key("b"));
        assert_ne!(key("a"), Key::new("http://e", 1).add("a").finish());
        assert!(cache.get(key("a"), &stats).is_none());
        cache.put(key("a"), Cached::Register(None), 1, &stats);
        assert!(cache.get(key("a"), &stats).is_some());
        tokio::time::sleep(Duration::from_millis(1500)).await;
        // Second 1: still valid (expiry 1 >= now 1), as in VerneMQ.
        assert!(cache.get(key("a"), &stats).is_some());
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(cache.get(key("a"), &stats).is_none());
        assert_eq!(stats.hits.load(Relaxed), 2);
        assert_eq!(stats.misses.load(Relaxed), 2);
        assert_eq!(stats.entries.load(Relaxed), 0);
        // Full of live entries: the third is not stored, and counted.
        cache.put(key("b"), Cached::Register(None), 60, &stats);
        cache.put(key("c"), Cached::Register(None), 60, &stats);
        cache.put(key("d"), Cached::Register(None), 60, &stats);
        assert_eq!(cache.len(), 2);
        assert_eq!(cache.full.load(Relaxed), 1);
        cache.clear(std::slice::from_ref(&stats));
        assert_eq!(cache.len(), 0);
        assert_eq!(stats.entries.load(Relaxed), 0);
    }
}
