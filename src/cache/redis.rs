//! The Redis backends: `redis` (entries in Redis; memory only while Redis is unreachable) and
//! `hybrid` (Redis as the source of truth behind a bounded memory L1).
//!
//! Coherence (cache.md rule 3): every write, delete and invalidation is published on the
//! cache channel, and every instance drops the named entries from its memory layer; an instance
//! whose link or subscription was lost drops its whole memory layer when it comes back, since
//! it may have missed messages. Fallback (rule 4): while Redis is down, reads and writes go to
//! the memory layer and health says `degraded`; the client fails fast, so no call waits on a
//! dead Redis.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ::redis::Script;
use async_trait::async_trait;
use chrono::Utc;
use serde::{Deserialize, Serialize};

use super::codec;
use super::memory::MemoryCache;
use super::metrics::{bump, read, CacheMetrics};
use super::{Cache, CacheHealth, CacheStats, Entry, RedisLayerStats};
use crate::redis::{Keys, RedisClient, RedisError};

/// Which memory layer a Redis backend keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layering {
    /// `redis`: memory is used only while Redis is unreachable.
    RedisOnly,
    /// `hybrid`: memory is an L1 in front of Redis.
    Hybrid,
}

/// SCAN page size for prefix invalidation.
const SCAN_COUNT: usize = 1_000;
/// Keys per MGET when warming.
const PRELOAD_CHUNK: usize = 100;

/// Removes every value that names one of the given tags, and the tag sets: one atomic step.
/// KEYS: the tag sets; ARGV[1]: the prefix of value keys; ARGV[i+1]: the tag of KEYS[i].
/// A set may still list a key that was re-stored without the tag (sets are only ever added
/// to), so each value's own tags are checked before it is removed. Returns how many values
/// were removed.
const INVALIDATE_TAGS: &str = r"
local removed = 0
for i, set in ipairs(KEYS) do
  local tag = ARGV[i + 1]
  for _, key in ipairs(redis.call('SMEMBERS', set)) do
    local name = ARGV[1] .. key
    local value = redis.call('GET', name)
    if value then
      local names = true
      if string.sub(value, 1, 2) == 'JY' and #value >= 8 then
        local ok, tags = pcall(function()
          local len = struct.unpack('<I4', value, 5)
          return cjson.decode(string.sub(value, 9, 8 + len)).tags
        end)
        if ok and type(tags) == 'table' then
          names = false
          for _, t in ipairs(tags) do
            if t == tag then names = true break end
          end
        end
      end
      if names then removed = removed + redis.call('UNLINK', name) end
    end
  end
  redis.call('UNLINK', set)
end
return removed
";

/// An invalidation as published to the other instances.
#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Event {
    /// The publishing instance, which ignores its own events.
    o: String,
    #[serde(flatten)]
    op: Op,
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
#[serde(tag = "op", rename_all = "lowercase")]
enum Op {
    Keys { keys: Vec<String> },
    Prefix { prefix: String },
    Tags { tags: Vec<String> },
    Clear,
}

/// A Redis-backed cache; see the module doc.
pub struct RedisCache {
    redis: RedisClient,
    keys: Keys,
    memory: MemoryCache,
    layering: Layering,
    compress_min: usize,
    /// This instance, in published events.
    origin: String,
    tag_script: Script,
    /// Counts invalidations heard from other instances (and whole-layer drops). A read or write
    /// fills the memory layer only if no invalidation arrived while it talked to Redis, so an
    /// entry deleted elsewhere in the meantime is never put back into L1.
    epoch: AtomicU64,
}

impl RedisCache {
    /// Builds the cache and starts its coherence tasks (subscription, reconnect watch). Must run
    /// inside an actix system.
    pub fn start(
        redis: RedisClient,
        prefix: &str,
        memory: MemoryCache,
        layering: Layering,
        compress_min: usize,
    ) -> Arc<Self> {
        let cache = Arc::new(RedisCache {
            keys: Keys::new(prefix),
            memory,
            layering,
            compress_min,
            origin: format!(
                "{}-{:016x}",
                crate::actors::supervisor::instance_name(),
                fastrand::u64(..)
            ),
            tag_script: Script::new(INVALIDATE_TAGS),
            epoch: AtomicU64::new(0),
            redis,
        });
        let (on_message, on_reset) = (Arc::downgrade(&cache), Arc::downgrade(&cache));
        cache.redis.subscribe(
            cache.keys.cache_events(),
            move |payload| {
                if let Some(cache) = on_message.upgrade() {
                    cache.apply(payload);
                }
            },
            move || {
                if let Some(cache) = on_reset.upgrade() {
                    tracing::info!("cache subscription re-established; memory layer dropped");
                    cache.drop_memory();
                }
            },
        );
        let mut generation = cache.redis.generation();
        let watcher = Arc::downgrade(&cache);
        actix_rt::spawn(async move {
            while generation.changed().await.is_ok() {
                let Some(cache) = watcher.upgrade() else { return };
                tracing::info!(
                    "redis link (re)established; memory layer dropped before it is trusted"
                );
                cache.memory.remove_all();
            }
        });
        cache
    }

    fn metrics(&self) -> &CacheMetrics {
        self.memory.metrics()
    }

    /// Drops the whole memory layer (its contents can no longer be trusted).
    fn drop_memory(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.memory.remove_all();
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// Puts `entry` in the memory layer unless an invalidation arrived since `since`.
    fn fill(&self, key: &str, entry: Arc<Entry>, since: u64) {
        if self.epoch() == since {
            self.memory.insert(key, entry);
        }
    }

    /// Applies another instance's invalidation to the memory layer.
    fn apply(&self, payload: &[u8]) {
        let event: Event = match serde_json::from_slice(payload) {
            Ok(event) => event,
            Err(err) => {
                tracing::warn!("ignoring an unreadable cache event: {err}");
                return;
            }
        };
        if event.o == self.origin {
            return;
        }
        self.epoch.fetch_add(1, Ordering::AcqRel);
        match event.op {
            Op::Keys { keys } => keys.iter().for_each(|k| {
                self.memory.remove(k);
            }),
            Op::Prefix { prefix } => {
                self.memory.remove_prefix(&prefix);
            }
            Op::Tags { tags } => {
                self.memory.remove_tags(&tags);
            }
            Op::Clear => self.memory.remove_all(),
        }
    }

    fn event(&self, op: Op) -> String {
        serde_json::to_string(&Event { o: self.origin.clone(), op }).expect("events serialise")
    }

    async fn publish(&self, op: Op) {
        let cmd = ::redis::cmd("PUBLISH").arg(self.keys.cache_events()).arg(self.event(op)).clone();
        if let Err(err) = self.redis.cmd::<i64>(&cmd, true).await {
            tracing::warn!("cache invalidation not published: {err}");
        }
    }

    /// Reads `key` from Redis; undecodable bytes are a miss and a warning.
    async fn fetch(&self, key: &str) -> Result<Option<Entry>, RedisError> {
        let cmd = ::redis::cmd("GET").arg(self.keys.cache_value(key)).clone();
        match self.redis.cmd::<Option<Vec<u8>>>(&cmd, true).await {
            Ok(bytes) => Ok(bytes.and_then(|bytes| self.decode(key, &bytes))),
            // Something else lives under our key (a list, say): foreign data, a miss.
            Err(RedisError::Command(err)) => {
                bump(&self.metrics().corrupt);
                tracing::warn!(
                    key,
                    "cache key in redis holds something else ({err}); treated as a miss"
                );
                Ok(None)
            }
            Err(err) => Err(err),
        }
    }

    fn decode(&self, key: &str, bytes: &[u8]) -> Option<Entry> {
        match codec::decode(bytes) {
            Ok(entry) => Some(entry).filter(|e| e.is_live(Utc::now())),
            Err(err) => {
                bump(&self.metrics().corrupt);
                tracing::warn!(
                    key,
                    "cache value in redis is unreadable ({err}); treated as a miss"
                );
                None
            }
        }
    }

    async fn store(&self, key: &str, entry: &Entry) -> Result<(), RedisError> {
        let ttl_ms = entry.remaining(Utc::now()).as_millis().max(1) as u64;
        let mut pipe = ::redis::pipe();
        pipe.cmd("SET")
            .arg(self.keys.cache_value(key))
            .arg(codec::encode(entry, self.compress_min))
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
        for tag in &entry.tags {
            // A tag set lives as long as its longest-lived entry: NX sets a first expiry, GT
            // only ever extends it.
            let set = self.keys.cache_tag(tag);
            pipe.cmd("SADD").arg(&set).arg(key).ignore();
            pipe.cmd("PEXPIRE").arg(&set).arg(ttl_ms).arg("NX").ignore();
            pipe.cmd("PEXPIRE").arg(&set).arg(ttl_ms).arg("GT").ignore();
        }
        pipe.cmd("PUBLISH")
            .arg(self.keys.cache_events())
            .arg(self.event(Op::Keys { keys: vec![key.to_owned()] }))
            .ignore();
        self.redis.pipe::<()>(&pipe, true).await
    }

    /// Unlinks every key matching `pattern`, a SCAN page at a time; returns how many existed.
    async fn unlink_matching(&self, pattern: &str) -> Result<u64, RedisError> {
        let mut cursor: u64 = 0;
        let mut removed = 0;
        loop {
            let scan = ::redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(SCAN_COUNT)
                .clone();
            let (next, keys): (u64, Vec<String>) = self.redis.cmd(&scan, true).await?;
            if !keys.is_empty() {
                removed += self.redis.cmd::<u64>(::redis::cmd("UNLINK").arg(&keys), true).await?;
            }
            if next == 0 {
                return Ok(removed);
            }
            cursor = next;
        }
    }

    /// Notes that Redis could not be used and memory answered instead.
    fn fell_back(&self, err: &RedisError) {
        bump(&self.metrics().fallbacks);
        tracing::debug!("cache served from memory: {err}");
    }

    fn hybrid(&self) -> bool {
        self.layering == Layering::Hybrid
    }
}

#[async_trait]
impl Cache for RedisCache {
    fn backend(&self) -> &'static str {
        match self.layering {
            Layering::RedisOnly => "redis",
            Layering::Hybrid => "hybrid",
        }
    }

    async fn get(&self, key: &str) -> Option<Arc<Entry>> {
        let started = Instant::now();
        self.memory.note_read(key);
        let since = self.epoch();
        let found = match self.hybrid().then(|| self.memory.lookup(key)).flatten() {
            Some(entry) => Some(entry),
            None => match self.fetch(key).await {
                Ok(Some(entry)) => {
                    bump(&self.metrics().redis_hits);
                    let entry = Arc::new(entry);
                    if self.hybrid() {
                        self.fill(key, entry.clone(), since);
                    }
                    Some(entry)
                }
                Ok(None) => {
                    bump(&self.metrics().redis_misses);
                    None
                }
                Err(err) => {
                    self.fell_back(&err);
                    // The hybrid's L1 was just asked; the redis backend's memory holds what
                    // was written while Redis was away.
                    if self.hybrid() {
                        None
                    } else {
                        self.memory.lookup(key)
                    }
                }
            },
        };
        bump(if found.is_some() { &self.metrics().hits } else { &self.metrics().misses });
        self.metrics().get_latency.record(started.elapsed());
        found
    }

    async fn set(&self, key: &str, entry: Entry) {
        let started = Instant::now();
        let since = self.epoch();
        match self.store(key, &entry).await {
            Ok(()) if self.hybrid() => self.fill(key, Arc::new(entry), since),
            Ok(()) => {}
            Err(err) => {
                self.fell_back(&err);
                self.memory.insert(key, Arc::new(entry));
            }
        }
        self.metrics().set_latency.record(started.elapsed());
    }

    async fn delete(&self, key: &str) -> bool {
        let local = self.memory.remove(key);
        let mut pipe = ::redis::pipe();
        pipe.cmd("DEL").arg(self.keys.cache_value(key));
        pipe.cmd("PUBLISH")
            .arg(self.keys.cache_events())
            .arg(self.event(Op::Keys { keys: vec![key.to_owned()] }))
            .ignore();
        match self.redis.pipe::<(u64,)>(&pipe, true).await {
            Ok((removed,)) => removed > 0,
            Err(err) => {
                self.fell_back(&err);
                local
            }
        }
    }

    async fn invalidate_prefix(&self, prefix: &str) -> u64 {
        let local = self.memory.remove_prefix(prefix);
        match self.unlink_matching(&self.keys.cache_value_pattern(prefix)).await {
            Ok(removed) => {
                self.publish(Op::Prefix { prefix: prefix.to_owned() }).await;
                removed
            }
            Err(err) => {
                self.fell_back(&err);
                local
            }
        }
    }

    async fn invalidate_tags(&self, tags: &[String]) -> u64 {
        let local = self.memory.remove_tags(tags);
        let mut invocation = self.tag_script.prepare_invoke();
        invocation.arg(self.keys.cache_value_prefix());
        for tag in tags {
            invocation.key(self.keys.cache_tag(tag)).arg(tag);
        }
        let run = self.redis.script::<u64>(&invocation).await;
        match run {
            Ok(removed) => {
                self.publish(Op::Tags { tags: tags.to_vec() }).await;
                removed
            }
            Err(err) => {
                self.fell_back(&err);
                local
            }
        }
    }

    async fn clear(&self) {
        self.memory.remove_all();
        let values = self.unlink_matching(&self.keys.cache_value_pattern("")).await;
        let tags = self.unlink_matching(&self.keys.cache_tag_pattern()).await;
        match values.and(tags) {
            Ok(_) => self.publish(Op::Clear).await,
            Err(err) => self.fell_back(&err),
        }
    }

    fn drop_local(&self, key: &str) {
        self.memory.remove(key);
    }

    async fn preload(&self, keys: &[String]) -> usize {
        if !self.hybrid() {
            return 0;
        }
        let mut loaded = 0;
        for chunk in keys.chunks(PRELOAD_CHUNK) {
            let since = self.epoch();
            let names: Vec<String> = chunk.iter().map(|k| self.keys.cache_value(k)).collect();
            let values: Vec<Option<Vec<u8>>> =
                match self.redis.cmd(::redis::cmd("MGET").arg(&names), true).await {
                    Ok(values) => values,
                    Err(err) => {
                        tracing::warn!("cache warming stopped: {err}");
                        break;
                    }
                };
            for (key, bytes) in chunk.iter().zip(values) {
                if let Some(entry) = bytes.and_then(|b| self.decode(key, &b)) {
                    self.fill(key, Arc::new(entry), since);
                    loaded += 1;
                }
            }
        }
        loaded
    }

    fn hot_keys(&self, limit: usize) -> Vec<(String, u64)> {
        self.memory.hot().top(limit)
    }

    fn stats(&self) -> CacheStats {
        let metrics = self.metrics();
        let memory = self.memory.layer_stats();
        let (hits, misses) = (read(&metrics.hits), read(&metrics.misses));
        let lookups = hits + misses;
        CacheStats {
            backend: self.backend(),
            hits,
            misses,
            hit_ratio: if lookups == 0 { 0.0 } else { hits as f64 / lookups as f64 },
            entries: memory.entries,
            memory,
            redis: Some(RedisLayerStats {
                hits: read(&metrics.redis_hits),
                misses: read(&metrics.redis_misses),
                fallbacks: read(&metrics.fallbacks),
                corrupt: read(&metrics.corrupt),
                link: self.redis.stats(),
            }),
            get_latency: metrics.get_latency.snapshot(),
            set_latency: metrics.set_latency.snapshot(),
        }
    }

    fn health(&self) -> CacheHealth {
        if self.redis.is_up() {
            CacheHealth::Ok
        } else {
            CacheHealth::Degraded("redis unreachable; serving from memory".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::redis::RedisSettings;

    /// A hybrid cache whose Redis is unreachable (nothing listens on the port): enough to
    /// drive the memory layer and the event handling.
    fn offline() -> Arc<RedisCache> {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let url = format!("redis://127.0.0.1:{port}");
        let config =
            Config::from_lookup(|name| (name == "REDIS_URL").then(|| url.clone())).unwrap();
        let client = RedisClient::new(RedisSettings::from_config(&config).unwrap()).unwrap();
        RedisCache::start(client, "unit", MemoryCache::new(1 << 20), Layering::Hybrid, 1024)
    }

    fn stored(cache: &RedisCache, keys: &[(&str, &[&str])]) {
        for (key, tags) in keys {
            let tags = tags.iter().map(|t| t.to_string()).collect();
            let entry =
                Entry::new(b"v".to_vec(), "text/plain", std::time::Duration::from_secs(60), tags);
            cache.memory.insert(key, Arc::new(entry));
        }
    }

    fn event(origin: &str, op: Op) -> Vec<u8> {
        serde_json::to_vec(&Event { o: origin.into(), op }).unwrap()
    }

    #[actix_rt::test]
    async fn other_instances_events_drop_entries_from_memory_and_own_ones_are_ignored() {
        let cache = offline();
        stored(&cache, &[("a:1", &["x"]), ("a:2", &[]), ("b:1", &["y"]), ("c", &[])]);
        cache.apply(&event(&cache.origin, Op::Keys { keys: vec!["c".into()] }));
        assert!(cache.memory.lookup("c").is_some(), "own events were applied when published");
        cache.apply(&event("other", Op::Keys { keys: vec!["c".into()] }));
        assert!(cache.memory.lookup("c").is_none());
        cache.apply(&event("other", Op::Prefix { prefix: "a:".into() }));
        assert!(cache.memory.lookup("a:2").is_none());
        cache.apply(&event("other", Op::Tags { tags: vec!["y".into()] }));
        assert!(cache.memory.lookup("b:1").is_none());
        stored(&cache, &[("d", &[])]);
        cache.apply(b"{not json");
        assert!(cache.memory.lookup("d").is_some(), "garbage changes nothing");
        cache.apply(&event("other", Op::Clear));
        assert!(cache.memory.lookup("d").is_none());
        // A value read from Redis before an invalidation arrived is not put back into L1.
        let since = cache.epoch();
        cache.apply(&event("other", Op::Keys { keys: vec!["e".into()] }));
        let entry =
            Entry::new(b"v".to_vec(), "text/plain", std::time::Duration::from_secs(60), vec![]);
        cache.fill("e", Arc::new(entry.clone()), since);
        assert!(cache.memory.lookup("e").is_none(), "stale fill refused");
        cache.fill("e", Arc::new(entry), cache.epoch());
        assert!(cache.memory.lookup("e").is_some());
        assert_eq!(
            cache.health(),
            CacheHealth::Degraded("redis unreachable; serving from memory".into())
        );
    }

    #[test]
    fn events_have_a_stable_wire_form() {
        let event = Event { o: "a".into(), op: Op::Tags { tags: vec!["github".into()] } };
        let text = serde_json::to_string(&event).unwrap();
        assert_eq!(text, r#"{"o":"a","op":"tags","tags":["github"]}"#);
        assert_eq!(serde_json::from_str::<Event>(&text).unwrap(), event);
        let clear: Event = serde_json::from_str(r#"{"o":"b","op":"clear"}"#).unwrap();
        assert_eq!(clear.op, Op::Clear);
    }
}
