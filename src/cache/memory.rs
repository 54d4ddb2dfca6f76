//! The memory cache: a concurrent map bounded by `JOBYARD_CACHE_MAX_BYTES` (quick_cache:
//! sharded, weighted, evicting cold entries before those read again). It is the `memory`
//! backend, and the L1 (or the fallback while Redis is down) of the Redis backends.
//!
//! Why not moka: every finished job's result is stored here, so an insert is on the job
//! pipeline's path. moka spent about 2 µs and 700 bytes per small entry: the eviction listener
//! that counts evictions takes a lock per key on every insert, and per-entry expiry keeps a
//! timer wheel node per entry. quick_cache counts evictions through a hook, and spends about
//! half that time and 30 bytes of its own per entry.
//!
//! Expiry: an expired entry is never returned (every read checks, and drops it), and a sweep
//! drops the expired entries no one reads, on a write or a stats read once [`SWEEP_EVERY`] has
//! passed since the last one. A sweep visits every entry, so it runs on the blocking pool when
//! a tokio runtime is there, and it holds a shard's lock for one entry at a time: neither an
//! event loop nor a reader waits for it. Invalidations by prefix or tag visit entries the same
//! way; only `remove_all` (a clear, or a Redis reconnect for an L1) holds each shard's lock
//! while it frees the shard.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use quick_cache::sync::Cache as Shards;
use quick_cache::{Lifecycle, OptionsBuilder, Weighter};

use super::hot::HotKeys;
use super::metrics::{bump, read, CacheMetrics};
use super::{Cache, CacheHealth, CacheStats, Entry, LayerStats};

/// How often, at most, writes start a sweep of expired entries.
pub const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// Shards of the map. Each holds a share of the bound, and an entry must fit in one.
const SHARDS: usize = 4;

/// An entry weighs its bytes (see [`Entry::weight`]) and its key's.
#[derive(Clone)]
struct ByBytes;

impl Weighter<String, Arc<Entry>> for ByBytes {
    fn weight(&self, key: &String, entry: &Arc<Entry>) -> u64 {
        u64::from(entry.weight()) + key.len() as u64
    }
}

/// What one insert pushed out of the map: entries the bound evicted, one too large to be
/// admitted, or the value the insert replaced (quick_cache reports all of them as evicted).
/// They are dropped after the shard's lock is released.
#[derive(Default)]
struct PushedOut(Vec<(String, Arc<Entry>)>);

#[derive(Clone)]
struct CollectPushedOut;

impl Lifecycle<String, Arc<Entry>> for CollectPushedOut {
    type RequestState = PushedOut;

    fn on_evict(&self, pushed: &mut PushedOut, key: String, entry: Arc<Entry>) {
        pushed.0.push((key, entry));
    }
}

type Entries = Shards<String, Arc<Entry>, ByBytes, std::hash::RandomState, CollectPushedOut>;

/// Removes `entry` from under `key` if it is still there: a fresh one written meanwhile stays.
fn remove_exact(entries: &Entries, key: &str, entry: &Arc<Entry>) -> bool {
    entries.remove_if(key, |current| Arc::ptr_eq(current, entry)).is_some()
}

/// Removes the entries `matches` selects (those stored when it reached them), locking a shard
/// for one entry at a time; returns how many of them were live.
fn remove_matching(entries: &Entries, matches: impl Fn(&str, &Entry) -> bool) -> u64 {
    let now = Utc::now();
    let mut removed = 0;
    for (key, entry) in entries.iter() {
        if matches(&key, &entry) && remove_exact(entries, &key, &entry) {
            removed += u64::from(entry.is_live(now));
        }
    }
    removed
}

/// Drops the expired entries.
fn sweep(entries: &Entries) {
    let now = Utc::now();
    remove_matching(entries, |_, entry| !entry.is_live(now));
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
    entries: Arc<Entries>,
    metrics: Arc<CacheMetrics>,
    hot: HotKeys,
    /// The cache's own clock, so that a wall-clock step does not stop the sweeps.
    born: Instant,
    /// When the last sweep started, in milliseconds since `born`.
    swept_at: AtomicU64,
}

impl MemoryCache {
    /// An empty cache holding at most about `max_bytes` bytes of keys, values and tags
    /// (`JOBYARD_CACHE_MAX_BYTES`); past that bound, entries are evicted. One entry may take
    /// up to about a quarter of the bound.
    pub fn new(max_bytes: u64) -> Self {
        // Sized for small entries (a few hundred bytes): the table is reserved up front, so
        // that it does not grow while it fills (a visible cost under load); capped so that a
        // large bound does not reserve a large table.
        let items = (max_bytes / 256).clamp(32 * SHARDS as u64, 1 << 17) as usize;
        let options = OptionsBuilder::new()
            .shards(SHARDS)
            .estimated_items_capacity(items)
            .weight_capacity(max_bytes)
            .build()
            .expect("every option is set");
        let entries =
            Shards::with_options(options, ByBytes, std::hash::RandomState::new(), CollectPushedOut);
        entries.reserve(items);
        MemoryCache {
            entries: Arc::new(entries),
            metrics: Arc::new(CacheMetrics::default()),
            hot: HotKeys::new(),
            born: Instant::now(),
            swept_at: AtomicU64::new(0),
        }
    }

    /// [`Cache::set`], without a future: stores and records the write's latency.
    fn set_timed(&self, key: String, entry: Entry) {
        let started = Instant::now();
        self.store(key, Arc::new(entry));
        self.metrics.latency.set(started.elapsed());
    }

    /// The counters this layer keeps (shared with a Redis backend using it as its L1).
    pub fn metrics(&self) -> &Arc<CacheMetrics> {
        &self.metrics
    }

    /// The live entry under `key`, counting a hit or a miss. An expired one is dropped.
    pub fn lookup(&self, key: &str) -> Option<Arc<Entry>> {
        let found = match self.entries.get(key) {
            Some(entry) if !entry.is_live(Utc::now()) => {
                remove_exact(&self.entries, key, &entry);
                None
            }
            found => found,
        };
        bump(if found.is_some() { &self.metrics.l1_hits } else { &self.metrics.l1_misses });
        found
    }

    /// Stores `entry` under `key`, replacing what was there; an entry that has already expired
    /// removes `key` instead.
    pub fn insert(&self, key: &str, entry: Arc<Entry>) {
        self.store(key.to_owned(), entry);
    }

    /// [`MemoryCache::insert`] of an owned key.
    fn store(&self, key: String, entry: Arc<Entry>) {
        if entry.is_live(Utc::now()) {
            let mut pushed = PushedOut::default();
            self.entries.insert_with_lifecycle(key, entry.clone(), &mut pushed);
            for (key, out) in pushed.0 {
                // The value this insert replaced is not an eviction: its key now holds `entry`.
                let replaced = !Arc::ptr_eq(&out, &entry)
                    && self.entries.peek(&key).is_some_and(|now| Arc::ptr_eq(&now, &entry));
                if !replaced {
                    bump(&self.metrics.evictions);
                }
            }
        } else {
            self.entries.remove(&key);
        }
        self.sweep_if_due();
    }

    /// Starts a sweep when the last one is [`SWEEP_EVERY`] old; one caller starts it.
    fn sweep_if_due(&self) {
        let now_ms = self.born.elapsed().as_millis() as u64;
        let last = self.swept_at.load(Ordering::Relaxed);
        if now_ms.saturating_sub(last) < SWEEP_EVERY.as_millis() as u64
            || self
                .swept_at
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                let entries = self.entries.clone();
                drop(runtime.spawn_blocking(move || sweep(&entries)));
            }
            Err(_) => sweep(&self.entries),
        }
    }

    /// Removes `key`; true when a live entry was there.
    pub fn remove(&self, key: &str) -> bool {
        self.entries.remove(key).is_some_and(|(_, e)| e.is_live(Utc::now()))
    }

    /// Removes the entries `matches` selects (those stored when it reached them: a value
    /// written meanwhile stays); returns how many of them were live.
    pub fn remove_where(&self, matches: impl Fn(&str, &Entry) -> bool) -> u64 {
        remove_matching(&self.entries, matches)
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
        self.entries.clear();
    }

    /// Records a read of `key` for cache warming.
    pub fn note_read(&self, key: &str) {
        self.hot.note(key);
    }

    /// The sampled read counts of this cache's keys, for cache warming.
    pub fn hot(&self) -> &HotKeys {
        &self.hot
    }

    /// Figures of this layer. Expired entries count until they are read or swept.
    pub fn layer_stats(&self) -> LayerStats {
        self.sweep_if_due();
        LayerStats {
            hits: read(&self.metrics.l1_hits),
            misses: read(&self.metrics.l1_misses),
            entries: self.entries.len() as u64,
            bytes: self.entries.weight(),
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
        self.metrics.latency.get(started.elapsed());
        found
    }

    async fn set(&self, key: &str, entry: Entry) {
        self.set_timed(key.to_owned(), entry);
    }

    async fn insert_new_many(&self, entries: Vec<(String, Entry)>) {
        for (key, entry) in entries {
            self.set_timed(key, entry);
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
    fn expired_entries_are_dropped_when_read_or_swept() {
        let mut cache = MemoryCache::new(1 << 20);
        for key in ["read", "unread"] {
            cache.insert(key, Arc::new(entry(Duration::from_millis(20), &[])));
        }
        cache.insert("live", Arc::new(entry(Duration::from_secs(60), &[])));
        let deadline = Instant::now() + Duration::from_secs(10);
        while cache.entries.get("read").is_some_and(|e| e.is_live(Utc::now())) {
            assert!(Instant::now() < deadline, "the entry never expired");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(cache.lookup("read").is_none());
        assert_eq!(cache.layer_stats().entries, 2, "the expired entry read is gone");
        // The next write after the sweep interval sweeps (here, with no runtime, at once).
        cache.born = cache.born.checked_sub(SWEEP_EVERY * 2).expect("a clock older than a minute");
        cache.insert("other", Arc::new(entry(Duration::from_secs(60), &[])));
        let stats = cache.layer_stats();
        assert_eq!(stats.entries, 2, "the expired entry no one read is swept: {stats:?}");
        assert!(cache.lookup("live").is_some() && cache.lookup("other").is_some());
    }

    #[test]
    fn evictions_are_counted_exactly_and_replacements_are_not_evictions() {
        let cache = MemoryCache::new(64 * 1024);
        let big = || {
            let value = vec![0u8; 1024];
            Arc::new(Entry::new(value, "application/octet-stream", Duration::from_secs(60), vec![]))
        };
        for _ in 0..5 {
            cache.insert("same", big());
        }
        assert_eq!(cache.layer_stats().evictions, 0, "overwriting a key evicts nothing");
        for i in 0..200 {
            cache.insert(&format!("k{i}"), big());
        }
        let stats = cache.layer_stats();
        assert!(stats.evictions > 0, "{stats:?}");
        assert_eq!(stats.evictions + stats.entries, 201, "each entry is there or evicted once");
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
