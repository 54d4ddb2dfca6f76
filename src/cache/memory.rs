//! The memory cache: moka (size-aware eviction, per-entry expiry) bounded by
//! `JOBYARD_CACHE_MAX_BYTES`. It is the `memory` backend, and the L1 (or the fallback while
//! Redis is down) of the Redis backends.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use moka::notification::RemovalCause;
use moka::sync::Cache as Moka;

use super::hot::HotKeys;
use super::metrics::{bump, read, CacheMetrics};
use super::{Cache, CacheHealth, CacheStats, Entry, LayerStats};

/// The expiry policy: each entry lives until its own `expires_at`.
struct PerEntryExpiry;

impl moka::Expiry<String, Arc<Entry>> for PerEntryExpiry {
    fn expire_after_create(
        &self,
        _key: &String,
        entry: &Arc<Entry>,
        _now: Instant,
    ) -> Option<Duration> {
        Some(entry.remaining(Utc::now()))
    }

    fn expire_after_update(
        &self,
        _key: &String,
        entry: &Arc<Entry>,
        _now: Instant,
        _current: Option<Duration>,
    ) -> Option<Duration> {
        Some(entry.remaining(Utc::now()))
    }
}

/// The in-memory cache.
///
/// ```
/// use std::sync::atomic::Ordering;
/// use std::sync::Arc;
/// use std::time::Duration;
/// use jobyard::cache::{Cache, CacheHealth, Entry, MemoryCache};
///
/// let cache = MemoryCache::new(64 << 20); // about 64 MiB of keys, values and tags
/// let entry = |tag: &str| {
///     Arc::new(Entry::new(b"x".to_vec(), "text/plain", Duration::from_secs(60), vec![tag.into()]))
/// };
/// // The layer's own calls, synchronous (the `Cache` trait's are async):
/// cache.insert("user:1:name", entry("user:1"));
/// cache.insert("user:1:avatar", entry("user:1"));
/// cache.insert("user:2:name", entry("user:2"));
/// cache.insert("page:home", entry("pages"));
/// assert!(cache.lookup("user:1:name").is_some());
/// assert!(cache.lookup("user:3:name").is_none());
/// assert_eq!(cache.remove_tags(&["user:1".to_string()]), 2);
/// assert_eq!(cache.remove_prefix("user:"), 1);
/// assert_eq!(cache.remove_where(|_, entry| entry.tags.iter().any(|tag| tag == "pages")), 1);
/// assert!(!cache.remove("page:home")); // gone already
/// cache.remove_all();
///
/// let stats = cache.layer_stats();
/// assert_eq!((stats.hits, stats.misses), (1, 1));
/// println!("{} evicted by the bound", cache.metrics().evictions.load(Ordering::Relaxed));
/// // Reads through `Cache::get` are sampled for cache warming; `note_read` counts one by hand.
/// cache.note_read("page:home");
/// println!("hottest keys: {:?}", cache.hot().top(10));
/// assert_eq!((cache.backend(), cache.health()), ("memory", CacheHealth::Ok));
/// ```
pub struct MemoryCache {
    entries: Moka<String, Arc<Entry>>,
    metrics: Arc<CacheMetrics>,
    hot: HotKeys,
}

impl MemoryCache {
    /// An empty cache holding at most about `max_bytes` bytes of keys, values and tags
    /// (`JOBYARD_CACHE_MAX_BYTES`); past that bound, entries are evicted.
    pub fn new(max_bytes: u64) -> Self {
        let metrics = Arc::new(CacheMetrics::default());
        let evicted = metrics.clone();
        let entries = Moka::builder()
            // Sized up front for small entries (a few hundred bytes), so the table does not
            // rehash while it fills, a visible cost under load; capped so that a large bound
            // does not allocate a large table up front.
            .initial_capacity((max_bytes / 256).min(1 << 17) as usize)
            .max_capacity(max_bytes)
            .weigher(|key: &String, entry: &Arc<Entry>| {
                entry.weight().saturating_add(key.len() as u32)
            })
            .expire_after(PerEntryExpiry)
            .eviction_listener(move |_key, _entry, cause| {
                if cause == RemovalCause::Size {
                    bump(&evicted.evictions);
                }
            })
            .build();
        MemoryCache { entries, metrics, hot: HotKeys::new() }
    }

    /// [`Cache::set`], without a future: stores and records the write's latency.
    fn set_timed(&self, key: &str, entry: Entry) {
        let started = Instant::now();
        self.insert(key, Arc::new(entry));
        self.metrics.set_latency.record(started.elapsed());
    }

    /// The counters this layer keeps (shared with a Redis backend using it as its L1).
    pub fn metrics(&self) -> &Arc<CacheMetrics> {
        &self.metrics
    }

    /// The live entry under `key`, counting a hit or a miss.
    pub fn lookup(&self, key: &str) -> Option<Arc<Entry>> {
        let found = self.entries.get(key).filter(|e| e.is_live(Utc::now()));
        bump(if found.is_some() { &self.metrics.l1_hits } else { &self.metrics.l1_misses });
        found
    }

    /// Stores `entry` under `key`, replacing what was there; an entry that has already expired
    /// removes `key` instead.
    pub fn insert(&self, key: &str, entry: Arc<Entry>) {
        if entry.is_live(Utc::now()) {
            self.entries.insert(key.to_owned(), entry);
        } else {
            self.entries.invalidate(key);
        }
    }

    /// Removes `key`; true when a live entry was there.
    pub fn remove(&self, key: &str) -> bool {
        self.entries.remove(key).is_some_and(|e| e.is_live(Utc::now()))
    }

    /// Removes the live entries `matches` selects; returns how many.
    pub fn remove_where(&self, matches: impl Fn(&str, &Entry) -> bool) -> u64 {
        let now = Utc::now();
        let doomed: Vec<(Arc<String>, bool)> = self
            .entries
            .iter()
            .filter(|(key, entry)| matches(key, entry))
            .map(|(key, entry)| (key, entry.is_live(now)))
            .collect();
        let mut removed = 0;
        for (key, live) in doomed {
            self.entries.invalidate(key.as_str());
            removed += u64::from(live);
        }
        removed
    }

    /// Removes every entry whose key starts with `prefix`; returns how many of them were live.
    pub fn remove_prefix(&self, prefix: &str) -> u64 {
        self.remove_where(|key, _| key.starts_with(prefix))
    }

    /// Removes every entry naming one of `tags`; returns how many of them were live.
    pub fn remove_tags(&self, tags: &[String]) -> u64 {
        self.remove_where(|_, entry| entry.tags.iter().any(|t| tags.contains(t)))
    }

    /// Removes every entry.
    pub fn remove_all(&self) {
        self.entries.invalidate_all();
    }

    /// Records a read of `key` for cache warming.
    pub fn note_read(&self, key: &str) {
        self.hot.note(key);
    }

    /// The sampled read counts of this cache's keys, for cache warming.
    pub fn hot(&self) -> &HotKeys {
        &self.hot
    }

    /// Figures of this layer.
    pub fn layer_stats(&self) -> LayerStats {
        self.entries.run_pending_tasks();
        LayerStats {
            hits: read(&self.metrics.l1_hits),
            misses: read(&self.metrics.l1_misses),
            entries: self.entries.entry_count(),
            bytes: self.entries.weighted_size(),
            evictions: read(&self.metrics.evictions),
        }
    }
}

#[async_trait]
impl Cache for MemoryCache {
    fn backend(&self) -> &'static str {
        "memory"
    }

    async fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let started = Instant::now();
        self.note_read(key);
        let found = self.lookup(key);
        self.metrics.get_latency.record(started.elapsed());
        found
    }

    async fn set(&self, key: &str, entry: Entry) {
        self.set_timed(key, entry);
    }

    async fn insert_new_many(&self, entries: Vec<(String, Entry)>) {
        for (key, entry) in entries {
            self.set_timed(&key, entry);
        }
    }

    async fn delete(&self, key: &str) -> bool {
        self.remove(key)
    }

    async fn invalidate_prefix(&self, prefix: &str) -> u64 {
        self.remove_prefix(prefix)
    }

    async fn invalidate_tags(&self, tags: &[String]) -> u64 {
        self.remove_tags(tags)
    }

    async fn clear(&self) {
        self.remove_all();
    }

    fn drop_local(&self, key: &str) {
        self.remove(key);
    }

    async fn preload(&self, _keys: &[String]) -> usize {
        0
    }

    fn hot_keys(&self, limit: usize) -> Vec<(String, u64)> {
        self.hot.top(limit)
    }

    fn stats(&self) -> CacheStats {
        let memory = self.layer_stats();
        let lookups = memory.hits + memory.misses;
        CacheStats {
            backend: "memory",
            hits: memory.hits,
            misses: memory.misses,
            hit_ratio: if lookups == 0 { 0.0 } else { memory.hits as f64 / lookups as f64 },
            entries: memory.entries,
            memory,
            #[cfg(feature = "redis")]
            redis: None,
            get_latency: self.metrics.get_latency.snapshot(),
            set_latency: self.metrics.set_latency.snapshot(),
        }
    }

    fn health(&self) -> CacheHealth {
        CacheHealth::Ok
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ttl: Duration, tags: &[&str]) -> Entry {
        Entry::new(b"v".to_vec(), "text/plain", ttl, tags.iter().map(|t| t.to_string()).collect())
    }

    #[test]
    fn an_expired_entry_is_never_returned() {
        let cache = MemoryCache::new(1 << 20);
        cache.insert("k", Arc::new(entry(Duration::ZERO, &[])));
        assert!(cache.lookup("k").is_none());
    }

    #[test]
    fn the_byte_bound_evicts() {
        let cache = MemoryCache::new(64 * 1024);
        for i in 0..200 {
            let e = Entry::new(
                vec![0u8; 1024],
                "application/octet-stream",
                Duration::from_secs(60),
                vec![],
            );
            cache.insert(&format!("k{i}"), Arc::new(e));
        }
        let stats = cache.layer_stats();
        assert!(stats.bytes <= 64 * 1024, "{stats:?}");
        assert!(stats.evictions > 0, "{stats:?}");
    }

    #[test]
    fn memory_has_nothing_to_preload_and_reports_hot_keys() {
        let cache = MemoryCache::new(1 << 20);
        use futures_util::FutureExt;
        assert_eq!(cache.preload(&["k".into()]).now_or_never(), Some(0));
        for _ in 0..1_000 {
            cache.note_read("k");
        }
        assert_eq!(cache.hot_keys(5)[0].0, "k");
        cache.drop_local("k");
        assert_eq!(cache.health(), CacheHealth::Ok);
    }

    #[test]
    fn prefix_and_tag_removal_count_what_they_removed() {
        let cache = MemoryCache::new(1 << 20);
        cache.insert("tool:github:1", Arc::new(entry(Duration::from_secs(60), &["github"])));
        cache.insert("tool:github:2", Arc::new(entry(Duration::from_secs(60), &[])));
        cache.insert("tool:jira:1", Arc::new(entry(Duration::from_secs(60), &["github", "jira"])));
        assert_eq!(cache.remove_prefix("tool:github:"), 2);
        assert_eq!(cache.remove_tags(&["github".into()]), 1);
        assert!(cache.lookup("tool:jira:1").is_none());
    }
}
