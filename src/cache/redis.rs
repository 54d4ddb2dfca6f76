//! The Redis backends: `redis` (entries in Redis; memory only while Redis is unreachable) and
//! `hybrid` (Redis as the source of truth behind a bounded memory L1).
//!
//! Coherence: every write, delete and invalidation is published on the
//! cache channel, and every instance drops the named entries from its memory layer; an instance
//! whose link or subscription was lost drops its whole memory layer when it comes back, since
//! it may have missed messages. Fallback: while Redis is down, reads and writes go to
//! the memory layer and health says `degraded`; the client fails fast, so no call waits on a
//! dead Redis.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Removes up to ARGV[3] members of one tag's sorted set (KEYS[1]) and, of their values
/// (ARGV[1] .. key), those whose own stored tags still name the tag ARGV[2] (a set may still
/// list a key that was re-stored without the tag). Returns {removed, members left}: the caller
/// loops, so no single call holds Redis for long however large the tag.
const INVALIDATE_TAG_BATCH: &str = r"
local popped = redis.call('ZPOPMIN', KEYS[1], ARGV[3])
local removed = 0
for i = 1, #popped, 2 do
  local name = ARGV[1] .. popped[i]
  local value = redis.call('GET', name)
  if value then
    local names = true
    if string.sub(value, 1, 2) == 'JY' and #value >= 8 then
      local ok, meta = pcall(function()
        local len = struct.unpack('<I4', value, 5)
        return cjson.decode(string.sub(value, 9, 8 + len))
      end)
      -- A value's metadata leaves out empty tags (format 2): no tags names no tag.
      if ok and type(meta) == 'table' then
        names = false
        if type(meta.tags) == 'table' then
          for _, t in ipairs(meta.tags) do
            if t == ARGV[2] then names = true break end
          end
        end
      end
    end
    if names then removed = removed + redis.call('UNLINK', name) end
  end
end
return {removed, redis.call('ZCARD', KEYS[1])}
";

/// Tag members handled per script call.
const TAG_BATCH: usize = 500;

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
    /// Counts invalidations (heard from other instances or made here) and whole-layer drops.
    /// A value read from (or written to) Redis enters the memory layer only if no invalidation
    /// happened meanwhile, so an entry deleted in the meantime is never put back into L1.
    epoch: AtomicU64,
    /// True while the invalidation subscription is live: without it, L1 would miss other
    /// instances' invalidations, so nothing new enters it.
    subscribed: AtomicBool,
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
            origin: format!("{}-{:016x}", crate::instance::host_pid(), fastrand::u64(..)),
            tag_script: Script::new(INVALIDATE_TAG_BATCH),
            epoch: AtomicU64::new(0),
            subscribed: AtomicBool::new(false),
            redis,
        });
        let (on_message, on_state) = (Arc::downgrade(&cache), Arc::downgrade(&cache));
        cache.redis.subscribe(
            cache.keys.cache_events(),
            move |payload| {
                if let Some(cache) = on_message.upgrade() {
                    cache.apply(payload);
                }
            },
            move |live| {
                if let Some(cache) = on_state.upgrade() {
                    if live {
                        tracing::info!("cache invalidations subscribed; memory layer dropped before it is trusted");
                        cache.drop_memory();
                    }
                    cache.subscribed.store(live, Ordering::SeqCst);
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
        self.invalidated();
        self.memory.remove_all();
    }

    /// Notes an invalidation: fills that started before it will not enter the memory layer.
    fn invalidated(&self) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
    }

    fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::SeqCst)
    }

    /// Puts `entry` in the memory layer unless an invalidation happened since `since` (or the
    /// subscription is down). Inserting before checking closes the race with an invalidation
    /// on another thread: it either sees the entry and removes it, or this check sees it.
    fn fill(&self, key: &str, entry: Arc<Entry>, since: u64) -> bool {
        if !self.subscribed.load(Ordering::SeqCst) {
            return false;
        }
        self.memory.insert(key, entry);
        if self.epoch() != since || !self.subscribed.load(Ordering::SeqCst) {
            self.memory.remove(key);
            return false;
        }
        true
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
        self.invalidated();
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
            Err(RedisError::Command(err)) if err.contains("WRONGTYPE") => {
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

    /// Stores an entry in Redis and (hybrid) in memory; `announce` tells the other instances to
    /// drop their memory copy of the key.
    async fn write(&self, key: &str, entry: Entry, announce: bool) {
        let started = Instant::now();
        // Reads in flight may hold the old value: they must not refill L1 with it.
        self.invalidated();
        self.memory.remove(key);
        match self.store(key, &entry, announce).await {
            Ok(()) => {
                self.invalidated();
                if self.hybrid() {
                    self.fill(key, Arc::new(entry), self.epoch());
                }
            }
            Err(err) => {
                self.fell_back(&err);
                self.memory.insert(key, Arc::new(entry));
            }
        }
        self.metrics().latency.set(started.elapsed());
    }

    async fn store(&self, key: &str, entry: &Entry, announce: bool) -> Result<(), RedisError> {
        let ttl_ms = entry.remaining(Utc::now()).as_millis().max(1) as u64;
        let mut pipe = ::redis::pipe();
        pipe.cmd("SET")
            .arg(self.keys.cache_value(key))
            .arg(codec::encode(entry, self.compress_min))
            .arg("PX")
            .arg(ttl_ms)
            .ignore();
        let (now_ms, expires_ms) =
            (Utc::now().timestamp_millis(), entry.expires_at.timestamp_millis());
        for tag in &entry.tags {
            // A tag's set is scored by expiry and trimmed of expired members on each write, so
            // it holds only live keys; the set itself lives as long as its longest-lived
            // member (NX sets a first expiry, GT only ever extends it).
            let set = self.keys.cache_tag(tag);
            pipe.cmd("ZADD").arg(&set).arg(expires_ms).arg(key).ignore();
            pipe.cmd("ZREMRANGEBYSCORE").arg(&set).arg("-inf").arg(now_ms).ignore();
            pipe.cmd("PEXPIRE").arg(&set).arg(ttl_ms).arg("NX").ignore();
            pipe.cmd("PEXPIRE").arg(&set).arg(ttl_ms).arg("GT").ignore();
        }
        if announce {
            pipe.cmd("PUBLISH")
                .arg(self.keys.cache_events())
                .arg(self.event(Op::Keys { keys: vec![key.to_owned()] }))
                .ignore();
        }
        self.redis.pipe::<()>(&pipe, true).await
    }

    /// Unlinks every key matching `pattern`, a SCAN page at a time. Returns how many existed,
    /// and the error that stopped it early, if one did.
    async fn unlink_matching(&self, pattern: &str) -> (u64, Option<RedisError>) {
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
            // Keys as bytes: one key that is not UTF-8 must not block the whole prefix.
            let (next, keys): (u64, Vec<Vec<u8>>) = match self.redis.cmd(&scan, true).await {
                Ok(page) => page,
                Err(err) => return (removed, Some(err)),
            };
            if !keys.is_empty() {
                match self.redis.cmd::<u64>(::redis::cmd("UNLINK").arg(&keys), false).await {
                    Ok(n) => removed += n,
                    Err(err) => return (removed, Some(err)),
                }
            }
            if next == 0 {
                return (removed, None);
            }
            cursor = next;
        }
    }

    /// Runs the batched tag script until every tag's set is empty.
    async fn unlink_tagged(&self, tags: &[String]) -> (u64, Option<RedisError>) {
        let mut removed = 0;
        for tag in tags {
            loop {
                let mut invocation = self.tag_script.prepare_invoke();
                invocation
                    .key(self.keys.cache_tag(tag))
                    .arg(self.keys.cache_value_prefix())
                    .arg(tag)
                    .arg(TAG_BATCH);
                match self.redis.script::<(u64, u64)>(&invocation).await {
                    Ok((n, left)) => {
                        removed += n;
                        if left == 0 {
                            break;
                        }
                    }
                    Err(err) => return (removed, Some(err)),
                }
            }
        }
        (removed, None)
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
        self.metrics().latency.get(started.elapsed());
        found
    }

    async fn set(&self, key: &str, entry: Entry) {
        self.write(key, entry, true).await
    }

    async fn insert_new(&self, key: &str, entry: Entry) {
        self.write(key, entry, false).await
    }

    async fn delete(&self, key: &str) -> bool {
        self.invalidated();
        let local = self.memory.remove(key);
        let mut pipe = ::redis::pipe();
        pipe.cmd("DEL").arg(self.keys.cache_value(key));
        pipe.cmd("PUBLISH")
            .arg(self.keys.cache_events())
            .arg(self.event(Op::Keys { keys: vec![key.to_owned()] }))
            .ignore();
        // Not retried: a retry after a first attempt that did run would find nothing and
        // answer "not found" for a key that was there.
        let result = self.redis.pipe::<(u64,)>(&pipe, false).await;
        self.invalidated();
        match result {
            Ok((removed,)) => removed > 0,
            Err(err) => {
                self.fell_back(&err);
                local
            }
        }
    }

    async fn invalidate_prefix(&self, prefix: &str) -> u64 {
        self.invalidated();
        let local = self.memory.remove_prefix(prefix);
        let (removed, failed) = self.unlink_matching(&self.keys.cache_value_pattern(prefix)).await;
        self.invalidated();
        self.publish(Op::Prefix { prefix: prefix.to_owned() }).await;
        match failed {
            None => removed,
            Some(err) => {
                self.fell_back(&err);
                removed.max(local)
            }
        }
    }

    async fn invalidate_tags(&self, tags: &[String]) -> u64 {
        self.invalidated();
        let local = self.memory.remove_tags(tags);
        let (removed, failed) = self.unlink_tagged(tags).await;
        self.invalidated();
        self.publish(Op::Tags { tags: tags.to_vec() }).await;
        match failed {
            None => removed,
            Some(err) => {
                self.fell_back(&err);
                removed.max(local)
            }
        }
    }

    async fn clear(&self) {
        self.drop_memory();
        let (_, failed) = self.unlink_matching(&self.keys.cache_value_pattern("")).await;
        // After a failure the link is marked down: a next step would only fail fast.
        let failed = match failed {
            None => self.unlink_matching(&self.keys.cache_tag_pattern()).await.1,
            some => some,
        };
        self.invalidated();
        self.publish(Op::Clear).await;
        if let Some(err) = failed {
            self.fell_back(&err);
        }
    }

    fn drop_local(&self, key: &str) {
        self.memory.remove(key);
    }

    async fn preload(&self, keys: &[String]) -> usize {
        if !self.hybrid() {
            return 0;
        }
        // Nothing may enter L1 before the invalidation subscription is live; at start it comes
        // up within milliseconds of the link.
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        while !self.subscribed.load(Ordering::SeqCst)
            && self.redis.is_up()
            && Instant::now() < deadline
        {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
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
                    loaded += usize::from(self.fill(key, Arc::new(entry), since));
                }
            }
        }
        bump(&self.metrics().warmings);
        self.metrics().warmed.fetch_add(loaded as u64, Ordering::Relaxed);
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
                warmings: read(&metrics.warmings),
                warmed: read(&metrics.warmed),
                link: self.redis.stats(),
            }),
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
        let cache =
            RedisCache::start(client, "unit", MemoryCache::new(1 << 20), Layering::Hybrid, 1024);
        // As if the invalidation subscription were live.
        cache.subscribed.store(true, Ordering::SeqCst);
        cache
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
        cache.fill("e", Arc::new(entry.clone()), cache.epoch());
        assert!(cache.memory.lookup("e").is_some());
        cache.subscribed.store(false, Ordering::SeqCst);
        cache.memory.remove("e");
        assert!(
            !cache.fill("e", Arc::new(entry), cache.epoch()),
            "no fills without the subscription"
        );
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
