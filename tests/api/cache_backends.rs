//! One trait-level suite of cache rules, run against every backend: `memory`, `redis` and
//! `hybrid` (the last two against a private `redis-server`).

use std::sync::Arc;
use std::time::Duration;

use jobyard::cache::{self, Cache, CacheExt, Entry};
use jobyard::config::{CacheBackendKind, Config, RedisUrl};
use jobyard::redis::{RedisClient, RedisSettings};
use serde::{Deserialize, Serialize};

use crate::helpers::*;
use crate::redis_support::TestRedis;

/// A cache of `kind` (with its Redis, kept alive by the caller).
pub async fn cache_of(kind: CacheBackendKind) -> (Arc<dyn Cache>, Option<TestRedis>) {
    let redis = (kind != CacheBackendKind::Memory).then(TestRedis::start);
    let mut config = test_config();
    config.cache_backend = kind;
    let client = match &redis {
        Some(server) => Some(redis_client(&mut config, server).await),
        None => None,
    };
    (cache::build(&config, client.as_ref()), redis)
}

/// Points `config` at `server` and returns a started client.
pub async fn redis_client(config: &mut Config, server: &TestRedis) -> RedisClient {
    config.redis_url = Some(redis_url(&server.url()));
    config.redis_prefix = format!("test{}", fastrand::u32(..));
    let client = RedisClient::new(RedisSettings::from_config(config).unwrap()).unwrap();
    assert!(client.start().await, "connects to the test redis");
    client
}

/// Makes a `RedisUrl` for `url`.
pub fn redis_url(url: &str) -> RedisUrl {
    RedisUrl::parse(url).expect("a valid test URL")
}

fn entry(value: &str, ttl: Duration, tags: &[&str]) -> Entry {
    Entry::new(
        value.as_bytes().to_vec(),
        "text/plain",
        ttl,
        tags.iter().map(|t| t.to_string()).collect(),
    )
}

const MINUTE: Duration = Duration::from_secs(60);

async fn set_get_delete(cache: &dyn Cache) {
    let stored = entry("v1", MINUTE, &["a", "b"]);
    cache.set("k", stored.clone()).await;
    let got = cache.get("k").await.expect("stored entry is read back");
    assert_eq!(got.value, stored.value);
    assert_eq!(got.content_type, "text/plain");
    assert_eq!(got.etag, stored.etag);
    assert_eq!(got.tags, stored.tags);
    assert_eq!(got.expires_at.timestamp_millis(), stored.expires_at.timestamp_millis());
    assert!(cache.delete("k").await);
    assert!(cache.get("k").await.is_none());
    assert!(!cache.delete("k").await, "a second delete finds nothing");
}

async fn overwrite_replaces(cache: &dyn Cache) {
    cache.set("k", entry("old", MINUTE, &[])).await;
    cache.set("k", entry("new", MINUTE, &[])).await;
    assert_eq!(&*cache.get("k").await.unwrap().value, b"new");
}

async fn ttl_expires(cache: &dyn Cache) {
    cache.set("short", entry("v", Duration::from_millis(300), &[])).await;
    cache.set("long", entry("v", MINUTE, &[])).await;
    assert!(cache.get("short").await.is_some());
    let gone = poll(|| async { cache.get("short").await.is_none().then_some(()) }).await;
    assert!(gone.is_some(), "entry outlived its TTL");
    assert!(cache.get("short").await.is_none(), "an expired entry stays gone");
    assert!(cache.get("long").await.is_some());
}

async fn prefix_invalidation(cache: &dyn Cache) {
    for key in ["tool:github:1", "tool:github:2", "tool:jira:1", "tool:git"] {
        cache.set(key, entry("v", MINUTE, &[])).await;
    }
    assert_eq!(cache.invalidate_prefix("tool:github:").await, 2);
    assert!(cache.get("tool:github:1").await.is_none());
    assert!(cache.get("tool:github:2").await.is_none());
    assert!(cache.get("tool:jira:1").await.is_some());
    assert!(cache.get("tool:git").await.is_some());
    assert_eq!(cache.invalidate_prefix("nothing:").await, 0);
    // Glob characters in a prefix are literal.
    cache.set("a*b", entry("v", MINUTE, &[])).await;
    cache.set("axb", entry("v", MINUTE, &[])).await;
    assert_eq!(cache.invalidate_prefix("a*").await, 1);
    assert!(cache.get("axb").await.is_some());
}

async fn prefix_invalidation_spans_many_scan_pages(cache: &dyn Cache) {
    for i in 0..2_500 {
        cache.set(&format!("many:{i}"), entry("v", MINUTE, &[])).await;
    }
    cache.set("other", entry("v", MINUTE, &[])).await;
    assert_eq!(cache.invalidate_prefix("many:").await, 2_500);
    assert!(cache.get("many:1234").await.is_none());
    assert!(cache.get("other").await.is_some());
}

async fn tag_invalidation(cache: &dyn Cache) {
    cache.set("a", entry("v", MINUTE, &["github"])).await;
    cache.set("b", entry("v", MINUTE, &["github", "repos"])).await;
    cache.set("c", entry("v", MINUTE, &["jira"])).await;
    assert_eq!(cache.invalidate_tags(&["github".into()]).await, 2);
    assert!(cache.get("a").await.is_none());
    assert!(cache.get("b").await.is_none());
    assert!(cache.get("c").await.is_some());
    assert_eq!(cache.invalidate_tags(&["github".into()]).await, 0, "the tag is empty now");
    // A key re-stored without the tag is no longer removed by it.
    cache.set("c", entry("v", MINUTE, &["jira"])).await;
    cache.set("d", entry("v", MINUTE, &["jira", "x"])).await;
    cache.set("d", entry("v", MINUTE, &["x"])).await;
    assert_eq!(cache.invalidate_tags(&["jira".into(), "nothing".into()]).await, 1);
    assert!(cache.get("d").await.is_some(), "d no longer names jira");
    // Nor one re-stored with no tag at all (stored without a tags field).
    cache.set("e", entry("v", MINUTE, &["gitlab"])).await;
    cache.set("e", entry("v", MINUTE, &[])).await;
    assert_eq!(cache.invalidate_tags(&["gitlab".into()]).await, 0);
    assert!(cache.get("e").await.is_some(), "e names no tag any more");
}

async fn tag_invalidation_spans_many_batches(cache: &dyn Cache) {
    for i in 0..1_200 {
        cache.set(&format!("tagged:{i}"), entry("v", MINUTE, &["big"])).await;
    }
    assert_eq!(cache.invalidate_tags(&["big".into()]).await, 1_200);
    assert!(cache.get("tagged:777").await.is_none());
}

async fn clear_removes_everything(cache: &dyn Cache) {
    cache.set("a", entry("v", MINUTE, &["t"])).await;
    cache.set("b", entry("v", MINUTE, &[])).await;
    cache.clear().await;
    assert!(cache.get("a").await.is_none());
    assert!(cache.get("b").await.is_none());
    assert_eq!(cache.invalidate_tags(&["t".into()]).await, 0);
}

#[derive(Serialize, Deserialize, Debug, PartialEq)]
struct Repo {
    name: String,
    stars: u32,
}

async fn typed_values(cache: &dyn Cache) {
    let repo = Repo { name: "jobyard".into(), stars: 42 };
    cache.set_json("repo", &repo, MINUTE, vec!["github".into()]).await.unwrap();
    assert_eq!(cache.get_json::<Repo>("repo").await.unwrap(), Some(repo));
    assert_eq!(cache.get_json::<Repo>("missing").await.unwrap(), None);
    cache.set("text", entry("not json", MINUTE, &[])).await;
    assert!(cache.get_json::<Repo>("text").await.is_err(), "a value of another type is an error");
    assert!(cache.set_json("bad key", &1, MINUTE, vec![]).await.is_err());
    assert!(cache.set_json("k", &1, MINUTE, vec!["bad tag".into()]).await.is_err());
    let unserialisable: std::collections::HashMap<(u8, u8), u8> = [((1, 2), 3)].into();
    assert!(matches!(
        cache.set_json("k", &unserialisable, MINUTE, vec![]).await,
        Err(jobyard::cache::CacheError::Encode(_))
    ));
}

async fn stats_count_hits_and_misses(cache: &dyn Cache) {
    cache.set("k", entry("v", MINUTE, &[])).await;
    let before = cache.stats();
    cache.get("k").await;
    cache.get("nope").await;
    let after = cache.stats();
    assert_eq!(after.hits - before.hits, 1);
    assert_eq!(after.misses - before.misses, 1);
    assert!(after.hit_ratio > 0.0);
    assert_eq!(after.backend, cache.backend());
}

/// Two hybrid instances sharing one Redis: a clear on one empties the other's L1.
#[actix_web::test]
async fn a_clear_on_one_instance_empties_the_other_l1() {
    let redis = TestRedis::start();
    let mut config = test_config();
    config.cache_backend = CacheBackendKind::Hybrid;
    let first = redis_client(&mut config, &redis).await;
    let a = cache::build(&config, Some(&first));
    let second = RedisClient::new(RedisSettings::from_config(&config).unwrap()).unwrap();
    assert!(second.start().await);
    let b = cache::build(&config, Some(&second));
    a.set("k", entry("v", MINUTE, &[])).await;
    assert!(b.get("k").await.is_some(), "B reads it, and keeps it in L1");
    a.clear().await;
    let dropped = poll(|| async { (b.stats().memory.entries == 0).then_some(()) }).await;
    assert!(dropped.is_some(), "B's L1 still holds entries after A's clear");
    assert!(b.get("k").await.is_none());
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            use super::*;
            $( #[actix_web::test] async fn $name() {
                let (cache, _redis) = cache_of(CacheBackendKind::Memory).await;
                super::$name(&*cache).await;
            } )*
        }
        mod redis {
            use super::*;
            $( #[actix_web::test] async fn $name() {
                let (cache, _redis) = cache_of(CacheBackendKind::Redis).await;
                super::$name(&*cache).await;
            } )*
        }
        mod hybrid {
            use super::*;
            $( #[actix_web::test] async fn $name() {
                let (cache, _redis) = cache_of(CacheBackendKind::Hybrid).await;
                super::$name(&*cache).await;
            } )*
        }
    };
}

suite!(
    set_get_delete,
    overwrite_replaces,
    ttl_expires,
    prefix_invalidation,
    prefix_invalidation_spans_many_scan_pages,
    tag_invalidation,
    tag_invalidation_spans_many_batches,
    clear_removes_everything,
    typed_values,
    stats_count_hits_and_misses,
);
