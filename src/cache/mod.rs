//! The cache: entries with content type, ETag, stored-at, expiry and tags, held in memory and
//! bounded by bytes. Job results are cached here under [`result_key`].
//!
//! The memory cache is built on moka (a well-kept concurrent cache with size-aware eviction and
//! per-entry expiry); hit and miss counters are ours, since moka keeps none.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use moka::sync::Cache;
use serde::Serialize;

use crate::job::JobId;

/// The cache key of a job's result.
pub fn result_key(id: JobId) -> String {
    format!("jobs:{id}:result")
}

/// One cached value and what describes it.
#[derive(Clone, Debug)]
pub struct Entry {
    pub value: Arc<[u8]>,
    pub content_type: String,
    /// A strong validator of the value's bytes.
    pub etag: String,
    pub stored_at: DateTime<Utc>,
    /// When the entry stops being served.
    pub expires_at: Instant,
    pub tags: Vec<String>,
}

impl Entry {
    /// A new entry for `value`, expiring after `ttl`.
    pub fn new(
        value: impl Into<Arc<[u8]>>,
        content_type: impl Into<String>,
        ttl: Duration,
        tags: Vec<String>,
    ) -> Self {
        let value = value.into();
        Entry {
            etag: etag_of(&value),
            value,
            content_type: content_type.into(),
            stored_at: Utc::now(),
            expires_at: Instant::now() + ttl,
            tags,
        }
    }

    /// Approximate bytes held, for the cache's bound.
    fn weight(&self) -> u32 {
        let tags: usize = self.tags.iter().map(String::len).sum();
        (self.value.len() + self.content_type.len() + self.etag.len() + tags + 128)
            .min(u32::MAX as usize) as u32
    }
}

/// A strong ETag: a 64-bit FNV-1a hash of the bytes, quoted.
pub fn etag_of(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("\"{hash:016x}\"")
}

/// Counters of one cache, as `/v1/stats` shows them.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CacheStats {
    pub backend: &'static str,
    pub hits: u64,
    pub misses: u64,
    pub hit_ratio: f64,
    pub entries: u64,
}

/// The expiry policy: each entry lives until its own `expires_at`.
struct PerEntryExpiry;

impl moka::Expiry<String, Arc<Entry>> for PerEntryExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        entry: &Arc<Entry>,
        now: Instant,
    ) -> Option<Duration> {
        Some(entry.expires_at.saturating_duration_since(now))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Arc<Entry>,
        now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.expires_at.saturating_duration_since(now))
    }
}

/// The in-memory cache, bounded by `max_bytes`.
pub struct MemoryCache {
    entries: Cache<String, Arc<Entry>>,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl MemoryCache {
    pub fn new(max_bytes: u64) -> Self {
        let entries = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Arc<Entry>| {
                entry.weight().saturating_add(key.len() as u32)
            })
            .expire_after(PerEntryExpiry)
            .build();
        MemoryCache { entries, hits: AtomicU64::new(0), misses: AtomicU64::new(0) }
    }

    /// The live entry under `key`; an expired entry is never returned.
    pub fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let found = self.entries.get(key).filter(|e| e.expires_at > Instant::now());
        let counter = if found.is_some() { &self.hits } else { &self.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    pub fn set(&self, key: String, entry: Entry) {
        self.entries.insert(key, Arc::new(entry));
    }

    /// Removes `key`; true when a live entry was there.
    pub fn delete(&self, key: &str) -> bool {
        self.entries.remove(key).is_some_and(|e| e.expires_at > Instant::now())
    }

    pub fn stats(&self) -> CacheStats {
        let hits = self.hits.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        let lookups = hits + misses;
        CacheStats {
            backend: "memory",
            hits,
            misses,
            hit_ratio: if lookups == 0 { 0.0 } else { hits as f64 / lookups as f64 },
            entries: self.entries.entry_count(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_entry_is_read_back_and_counted() {
        let cache = MemoryCache::new(1 << 20);
        cache.set(
            "k".into(),
            Entry::new(b"v".to_vec(), "text/plain", Duration::from_secs(60), vec![]),
        );
        assert_eq!(&*cache.get("k").unwrap().value, b"v");
        assert!(cache.get("other").is_none());
        let stats = cache.stats();
        assert_eq!((stats.hits, stats.misses), (1, 1));
    }

    #[test]
    fn an_expired_entry_is_never_returned() {
        let cache = MemoryCache::new(1 << 20);
        cache.set("k".into(), Entry::new(b"v".to_vec(), "text/plain", Duration::ZERO, vec![]));
        assert!(cache.get("k").is_none());
    }

    #[test]
    fn etags_differ_for_different_bytes() {
        assert_ne!(etag_of(b"a"), etag_of(b"b"));
        assert_eq!(etag_of(b"a"), etag_of(b"a"));
    }
}
