//! The cache layer: one [`Cache`] trait, three backends chosen by
//! `JOBYARD_CACHE_BACKEND` through [`build`]:
//! - `memory` ([`MemoryCache`]): in the process, bounded by bytes (quick_cache), TTL honoured;
//! - `redis` ([`RedisCache`] with [`Layering::RedisOnly`]): in Redis, with a memory layer used
//!   only while Redis is unreachable;
//! - `hybrid` ([`RedisCache`] with [`Layering::Hybrid`]): Redis as the source of truth behind a
//!   bounded memory L1, kept coherent across instances over pub/sub.
//!
//! The trait never fails because Redis is down: the Redis backends fall back to memory, report
//! `degraded` health, and return to normal by themselves. Typed access for embedders is
//! [`CacheExt`]. Job results are cached here under [`result_key`].

#[doc(hidden)]
pub mod codec;
mod hot;
mod memory;
mod metrics;
#[cfg(feature = "redis")]
mod redis;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::Serialize;

#[cfg(feature = "redis")]
use crate::config::{CacheBackendKind, Config};
use crate::job::JobId;
#[cfg(feature = "redis")]
use crate::redis::{RedisClient, RedisStats};

pub use hot::HotKeys;
pub use memory::MemoryCache;
pub use metrics::CacheMetrics;
#[cfg(feature = "redis")]
pub use redis::{Layering, RedisCache};

/// Longest accepted cache key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Most tags on one entry.
pub const MAX_TAGS: usize = 32;

/// Errors of the cache layer (Redis trouble is never one: it falls back to memory).
///
/// ```
/// use std::time::Duration;
/// use jobyard::cache::{CacheError, CacheExt, MemoryCache};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let cache = MemoryCache::new(1 << 20);
/// let ttl = Duration::from_secs(60);
/// // Keys and tags are checked before anything is stored:
/// let err = cache.set_json("has space", &1, ttl, vec![]).await.unwrap_err();
/// assert!(matches!(err, CacheError::InvalidKey(_)));
/// let err = cache.set_json("key", &1, ttl, vec!["a,b".into()]).await.unwrap_err();
/// assert!(matches!(err, CacheError::InvalidTag(_)));
/// // A value read as another type:
/// cache.set_json("name", &"jobyard", ttl, vec![]).await.unwrap();
/// let err = cache.get_json::<u64>("name").await.unwrap_err();
/// assert!(matches!(err, CacheError::Decode { ref key, .. } if key == "name"));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CacheError {
    /// The key is empty, longer than [`MAX_KEY_BYTES`], or holds whitespace or control characters;
    /// the message says what a key may be.
    #[error("{0}")]
    InvalidKey(String),
    /// A tag is empty, longer than 128 bytes, or holds a comma, whitespace or control characters.
    #[error("{0}")]
    InvalidTag(String),
    /// A cached value does not decode as the type asked for ([`CacheExt::get_json`]).
    #[error("cached value under '{key}' is not a {expected}: {message}")]
    Decode {
        /// The key read.
        key: String,
        /// The name of the Rust type asked for.
        expected: &'static str,
        /// The decoder's error.
        message: String,
    },
    /// A value cannot be serialised as JSON ([`CacheExt::set_json`]); holds the serialiser's error.
    #[error("value is not serialisable: {0}")]
    Encode(String),
}

/// Checks a cache key: 1 to 512 bytes, no whitespace or control characters.
pub fn validate_key(key: &str) -> Result<(), CacheError> {
    if key.is_empty()
        || key.len() > MAX_KEY_BYTES
        || key.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(CacheError::InvalidKey(format!(
            "cache keys are 1 to {MAX_KEY_BYTES} bytes without spaces or control characters"
        )));
    }
    Ok(())
}

/// Checks a tag: like a key, at most 128 bytes, no commas.
pub fn validate_tag(tag: &str) -> Result<(), CacheError> {
    if tag.is_empty()
        || tag.len() > 128
        || tag.contains(',')
        || tag.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(CacheError::InvalidTag(format!(
            "invalid tag '{tag}': 1 to 128 bytes, no spaces or commas"
        )));
    }
    Ok(())
}

/// The cache key of a job's result.
pub fn result_key(id: JobId) -> String {
    format!("jobs:{id}:result")
}

/// One cached value and what describes it.
///
/// ```
/// use std::time::Duration;
/// use chrono::Utc;
/// use jobyard::cache::Entry;
///
/// let ttl = Duration::from_secs(60);
/// let tags = vec!["health".to_string()];
/// let entry = Entry::new(br#"{"ok":true}"#.to_vec(), "application/json", ttl, tags);
/// assert_eq!(&*entry.value, br#"{"ok":true}"#);
/// assert!(entry.etag.starts_with('"')); // a strong ETag, quoted
/// let now = Utc::now();
/// assert!(entry.is_live(now) && entry.remaining(now) <= ttl);
/// assert!(!entry.is_live(now + chrono::Duration::seconds(61)));
/// assert!(entry.weight() as usize > entry.value.len()); // what the memory bound counts
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The stored bytes, exactly as given: the cache never interprets them.
    pub value: Arc<[u8]>,
    /// The MIME type the value is served with (the `Content-Type` it was stored with).
    pub content_type: String,
    /// A strong validator of the value's bytes.
    pub etag: String,
    /// When the entry was created: the HTTP API's `Last-Modified`, and the start of its `Age`.
    pub stored_at: DateTime<Utc>,
    /// Wall-clock expiry, so that every instance (and Redis) agrees on it.
    pub expires_at: DateTime<Utc>,
    /// What the entry depends on: invalidating a tag removes it.
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
        let now = Utc::now();
        let ttl = chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::days(365 * 100));
        Entry {
            etag: etag_of(&value),
            value,
            content_type: content_type.into(),
            stored_at: now,
            expires_at: now.checked_add_signed(ttl).unwrap_or(DateTime::<Utc>::MAX_UTC),
            tags,
        }
    }

    /// True while the entry may be served.
    pub fn is_live(&self, now: DateTime<Utc>) -> bool {
        self.expires_at > now
    }

    /// Time left before expiry (zero once expired).
    pub fn remaining(&self, now: DateTime<Utc>) -> Duration {
        (self.expires_at - now).to_std().unwrap_or(Duration::ZERO)
    }

    /// Approximate bytes held, for the memory bound.
    pub fn weight(&self) -> u32 {
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

/// The runtime's cache as a job extension: `ctx.extension::<CacheHandle>()` in a handler. It
/// is a [`Cache`] itself (and derefs to the runtime's), so the typed [`CacheExt`] calls work on
/// it directly.
///
/// ```
/// # use jobyard::{JobContext, JobError};
/// use jobyard::cache::{CacheExt, CacheHandle};
///
/// async fn cached_count(ctx: &JobContext) -> Result<Option<u64>, JobError> {
///     let cache = ctx.extension::<CacheHandle>().expect("every runtime provides its cache");
///     Ok(cache.get_json::<u64>("github:stars").await?)
/// }
/// ```
///
/// ```
/// use std::sync::Arc;
/// use jobyard::cache::{Cache, CacheHandle, MemoryCache};
/// use jobyard::testing::TestContext;
///
/// // A runtime gives its handlers one; a test gives its handler one around a cache of its own.
/// let cache: Arc<dyn Cache> = Arc::new(MemoryCache::new(1 << 20));
/// let handle = CacheHandle::new(cache.clone());
/// assert!(Arc::ptr_eq(handle.shared(), &cache));
/// let ctx = TestContext::new().extension(handle);
/// ```
#[derive(Clone)]
pub struct CacheHandle(Arc<dyn Cache>);

impl CacheHandle {
    /// Wraps a cache.
    pub fn new(cache: Arc<dyn Cache>) -> Self {
        CacheHandle(cache)
    }

    /// The shared cache itself.
    pub fn shared(&self) -> &Arc<dyn Cache> {
        &self.0
    }
}

impl std::ops::Deref for CacheHandle {
    type Target = dyn Cache;
    fn deref(&self) -> &(dyn Cache + 'static) {
        &*self.0
    }
}

#[async_trait]
impl Cache for CacheHandle {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    async fn get(&self, key: &str) -> Option<Arc<Entry>> {
        self.0.get(key).await
    }
    async fn set(&self, key: &str, entry: Entry) {
        self.0.set(key, entry).await
    }
    async fn insert_new(&self, key: &str, entry: Entry) {
        self.0.insert_new(key, entry).await
    }
    async fn insert_new_many(&self, entries: Vec<(String, Entry)>) {
        self.0.insert_new_many(entries).await
    }
    async fn delete(&self, key: &str) -> bool {
        self.0.delete(key).await
    }
    async fn invalidate_prefix(&self, prefix: &str) -> u64 {
        self.0.invalidate_prefix(prefix).await
    }
    async fn invalidate_tags(&self, tags: &[String]) -> u64 {
        self.0.invalidate_tags(tags).await
    }
    async fn clear(&self) {
        self.0.clear().await
    }
    fn drop_local(&self, key: &str) {
        self.0.drop_local(key)
    }
    async fn preload(&self, keys: &[String]) -> usize {
        self.0.preload(keys).await
    }
    fn hot_keys(&self, limit: usize) -> Vec<(String, u64)> {
        self.0.hot_keys(limit)
    }
    fn stats(&self) -> CacheStats {
        self.0.stats()
    }
    fn health(&self) -> CacheHealth {
        self.0.health()
    }
}

/// Whether the cache serves as configured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CacheHealth {
    /// Every layer the backend is configured with is in use.
    Ok,
    /// Serving from memory because Redis is unreachable.
    Degraded(String),
}

/// Figures of the memory layer (the memory backend, or the L1 / fallback of a Redis one).
#[derive(Clone, Debug, Default, Serialize)]
pub struct LayerStats {
    /// Reads this layer answered.
    pub hits: u64,
    /// Reads this layer could not answer (absent or expired).
    pub misses: u64,
    /// Entries held.
    pub entries: u64,
    /// Approximate bytes held: the weight checked against the memory bound
    /// (`JOBYARD_CACHE_MAX_BYTES`).
    pub bytes: u64,
    /// Entries pushed out by the memory bound.
    pub evictions: u64,
}

/// Figures of the Redis layer.
#[cfg(feature = "redis")]
#[derive(Clone, Debug, Default, Serialize)]
pub struct RedisLayerStats {
    /// Reads Redis answered.
    pub hits: u64,
    /// Reads that found nothing in Redis.
    pub misses: u64,
    /// Calls that could not use Redis and were served from memory instead.
    pub fallbacks: u64,
    /// Values found in Redis that could not be decoded (read as misses).
    pub corrupt: u64,
    /// Warming passes run at start, and the entries they loaded into the memory layer.
    pub warmings: u64,
    /// Entries the warming passes loaded into the memory layer.
    pub warmed: u64,
    /// The Redis link's own figures (flattened into this object in JSON).
    #[serde(flatten)]
    pub link: RedisStats,
}

/// What `/v1/stats` shows of the cache.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CacheStats {
    /// The backend in use: `memory`, `redis` or `hybrid`.
    pub backend: &'static str,
    /// Reads answered by any layer.
    pub hits: u64,
    /// Reads answered by none.
    pub misses: u64,
    /// `hits / (hits + misses)`, from 0 to 1; 0 before the first read.
    pub hit_ratio: f64,
    /// Entries in memory (the whole memory backend, or the L1).
    pub entries: u64,
    /// Figures of the memory layer.
    pub memory: LayerStats,
    /// Figures of the Redis layer; absent (`None`) for the memory backend.
    #[cfg(feature = "redis")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisLayerStats>,
}

/// The cache interface every backend implements.
///
/// ```
/// use std::time::Duration;
/// use jobyard::cache::{Cache, CacheExt, Entry, MemoryCache};
///
/// #[tokio::main(flavor = "current_thread")]
/// async fn main() -> Result<(), jobyard::cache::CacheError> {
///     // A runtime's cache is `runtime.cache()`; a memory cache also stands alone.
///     let cache = MemoryCache::new(64 << 20);
///     let ttl = Duration::from_secs(300);
///     // Bytes, with their content type and tags:
///     let page = Entry::new(b"<h1>hi</h1>".to_vec(), "text/html", ttl, vec!["pages".into()]);
///     cache.set("page:home", page).await;
///     assert_eq!(&*cache.get("page:home").await.unwrap().value, b"<h1>hi</h1>");
///     // Typed values, as JSON:
///     cache.set_json("github:stars", &1234u64, ttl, vec!["github".into()]).await?;
///     assert_eq!(cache.get_json::<u64>("github:stars").await?, Some(1234));
///     // Invalidation by tag, or by key prefix:
///     assert_eq!(cache.invalidate_tags(&["github".to_string()]).await, 1);
///     assert_eq!(cache.invalidate_prefix("page:").await, 1);
///     assert!(cache.get("page:home").await.is_none());
///     Ok(())
/// }
/// ```
#[async_trait]
pub trait Cache: Send + Sync + 'static {
    /// `"memory"`, `"redis"` or `"hybrid"`.
    fn backend(&self) -> &'static str;

    /// The live entry under `key`; never an expired or invalidated one.
    async fn get(&self, key: &str) -> Option<Arc<Entry>>;

    /// Stores `entry` under `key`, replacing what was there.
    async fn set(&self, key: &str, entry: Entry);

    /// Stores `entry` under a key that held nothing anywhere (a job's result): as [`Cache::set`],
    /// except that other instances are not told to drop their memory copy, since none can
    /// have one.
    async fn insert_new(&self, key: &str, entry: Entry) {
        self.set(key, entry).await
    }

    /// [`Cache::insert_new`] for many entries at once (a batch of job results). By default
    /// they are all written concurrently; a backend that stores without waiting does it in
    /// one pass, with no future per entry.
    async fn insert_new_many(&self, entries: Vec<(String, Entry)>) {
        let writes = entries.into_iter().map(|(key, entry)| async move {
            self.insert_new(&key, entry).await;
        });
        futures_util::future::join_all(writes).await;
    }

    /// Removes `key`; true when a live entry was there.
    async fn delete(&self, key: &str) -> bool;

    /// Removes every key starting with `prefix`; returns how many.
    async fn invalidate_prefix(&self, prefix: &str) -> u64;

    /// Removes every entry naming one of `tags`; returns how many.
    async fn invalidate_tags(&self, tags: &[String]) -> u64;

    /// Removes everything.
    async fn clear(&self);

    /// Drops this instance's memory copy of `key`, leaving the shared layer alone (so the next
    /// read goes to Redis). For the memory backend, memory is all there is: a delete.
    fn drop_local(&self, key: &str);

    /// Loads `keys` from the shared layer into memory (cache warming); returns how many were
    /// found. A memory-only cache has nothing to load from.
    async fn preload(&self, keys: &[String]) -> usize;

    /// The keys read most often, hottest first (cache warming).
    fn hot_keys(&self, limit: usize) -> Vec<(String, u64)>;

    /// Hit, miss, size and latency figures (what `/v1/stats` shows of the cache).
    fn stats(&self) -> CacheStats;

    /// Whether the cache serves as configured: a Redis backend that fell back to memory reports
    /// [`CacheHealth::Degraded`].
    fn health(&self) -> CacheHealth;
}

/// Typed access on top of the byte API: values as JSON through serde.
///
/// ```
/// use std::time::Duration;
/// use jobyard::cache::{CacheExt, MemoryCache};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// struct Repo { stars: u64, forks: u64 }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), jobyard::cache::CacheError> {
/// // Any cache: `runtime.cache()`, a handler's `CacheHandle`, a cache of its own.
/// let cache = MemoryCache::new(1 << 20);
/// let repo = Repo { stars: 1234, forks: 56 };
/// cache.set_json("repo:jobyard", &repo, Duration::from_secs(600), vec!["repos".into()]).await?;
/// assert_eq!(cache.get_json::<Repo>("repo:jobyard").await?, Some(repo));
/// assert_eq!(cache.get_json::<Repo>("repo:other").await?, None);
/// # Ok(()) }
/// ```
#[async_trait]
pub trait CacheExt: Cache {
    /// The value under `key`, decoded as `T`.
    async fn get_json<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, CacheError> {
        let Some(entry) = self.get(key).await else { return Ok(None) };
        serde_json::from_slice(&entry.value).map(Some).map_err(|err| CacheError::Decode {
            key: key.to_owned(),
            expected: std::any::type_name::<T>(),
            message: err.to_string(),
        })
    }

    /// Stores `value` as JSON under `key` for `ttl`, naming `tags`.
    async fn set_json<T: Serialize + Sync>(
        &self,
        key: &str,
        value: &T,
        ttl: Duration,
        tags: Vec<String>,
    ) -> Result<(), CacheError> {
        validate_key(key)?;
        tags.iter().try_for_each(|t| validate_tag(t))?;
        let bytes = serde_json::to_vec(value).map_err(|err| CacheError::Encode(err.to_string()))?;
        self.set(key, Entry::new(bytes, "application/json", ttl, tags)).await;
        Ok(())
    }
}

impl<C: Cache + ?Sized> CacheExt for C {}

/// Builds the cache `config` asks for. `redis` must be given for the Redis backends (and
/// started); must run inside an actix system (the Redis backends start background tasks).
#[cfg(feature = "redis")]
pub fn build(config: &Config, redis: Option<&RedisClient>) -> Arc<dyn Cache> {
    let memory = MemoryCache::new(config.cache_max_bytes);
    let layering = match (config.cache_backend, redis) {
        (CacheBackendKind::Memory, _) | (_, None) => return Arc::new(memory),
        (CacheBackendKind::Redis, Some(_)) => Layering::RedisOnly,
        (CacheBackendKind::Hybrid, Some(_)) => Layering::Hybrid,
    };
    let redis = redis.expect("checked above").clone();
    RedisCache::start(
        redis,
        &config.redis_prefix,
        memory,
        layering,
        config.cache_compress_min_bytes,
    )
}
