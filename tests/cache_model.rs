//! Property tests of the cache: for random sequences of set (with TTLs that are already over,
//! short or long, and tags), get, delete, prefix and tag invalidation and the passing of time,
//! the memory and hybrid backends answer like a reference model (a map with expiry), and never
//! return an expired or invalidated entry.

// Shared with the API tests, which use all of it.
#[allow(dead_code)]
#[path = "api/redis_support.rs"]
mod redis_support;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobyard::cache::{self, Cache, Entry};
use jobyard::config::{CacheBackendKind, Config};
use jobyard::redis::{RedisClient, RedisSettings};
use proptest::prelude::*;
use redis_support::TestRedis;

const KEYS: [&str; 4] = ["a:1", "a:2", "b:1", "b:2"];
const TAGS: [&str; 3] = ["x", "y", "z"];

#[derive(Debug, Clone)]
enum Op {
    Set {
        key: usize,
        value: u8,
        ttl: Ttl,
        tags: Vec<usize>,
    },
    Get(usize),
    Delete(usize),
    Prefix(bool),
    Tags(Vec<usize>),
    Wait(u64),
    /// Drop this instance's memory copy (as eviction or a restart would).
    DropLocal(usize),
}

#[derive(Debug, Clone, Copy)]
enum Ttl {
    Over,
    Short,
    Long,
}

impl Ttl {
    fn duration(self) -> Duration {
        match self {
            Ttl::Over => Duration::ZERO,
            Ttl::Short => Duration::from_millis(40),
            Ttl::Long => Duration::from_secs(3600),
        }
    }
}

fn op() -> impl Strategy<Value = Op> {
    let ttl = prop_oneof![Just(Ttl::Over), Just(Ttl::Short), Just(Ttl::Long)];
    prop_oneof![
        4 => (0..KEYS.len(), any::<u8>(), ttl, prop::collection::vec(0..TAGS.len(), 0..3))
            .prop_map(|(key, value, ttl, tags)| Op::Set { key, value, ttl, tags }),
        5 => (0..KEYS.len()).prop_map(Op::Get),
        1 => (0..KEYS.len()).prop_map(Op::Delete),
        1 => any::<bool>().prop_map(Op::Prefix),
        1 => prop::collection::vec(0..TAGS.len(), 1..3).prop_map(Op::Tags),
        1 => (0u64..30).prop_map(Op::Wait),
        2 => (0..KEYS.len()).prop_map(Op::DropLocal),
    ]
}

/// The reference: a map with expiry.
#[derive(Default)]
struct Model {
    entries: HashMap<&'static str, (u8, DateTime<Utc>, Vec<String>)>,
}

/// `shared`: whether entries outlive the memory layer (a Redis backend).
async fn check(cache: &dyn Cache, shared: bool, ops: &[Op]) {
    let mut model = Model::default();
    for op in ops {
        match op {
            Op::Set { key, value, ttl, tags } => {
                let tags: Vec<String> = tags.iter().map(|t| TAGS[*t].to_owned()).collect();
                let entry = Entry::new(
                    vec![*value],
                    "application/octet-stream",
                    ttl.duration(),
                    tags.clone(),
                );
                model.entries.insert(KEYS[*key], (*value, entry.expires_at, tags));
                cache.set(KEYS[*key], entry).await;
            }
            Op::Get(key) => {
                let before = Utc::now();
                let got = cache.get(KEYS[*key]).await;
                let after = Utc::now();
                match (model.entries.get(KEYS[*key]), got) {
                    (None, Some(entry)) => panic!(
                        "{} returned {:?}, which the model says is gone",
                        KEYS[*key], entry.value
                    ),
                    (Some((_, expires, _)), Some(_)) if *expires <= before => {
                        panic!("{} returned an entry expired at {expires}", KEYS[*key])
                    }
                    (Some((value, _, _)), Some(entry)) => {
                        assert_eq!(&*entry.value, &[*value], "{}", KEYS[*key])
                    }
                    (Some((_, expires, _)), None) => {
                        assert!(
                            *expires <= after,
                            "{} is live until {expires} but missing",
                            KEYS[*key]
                        )
                    }
                    (None, None) => {}
                }
            }
            Op::Delete(key) => {
                cache.delete(KEYS[*key]).await;
                model.entries.remove(KEYS[*key]);
            }
            Op::Prefix(first) => {
                let prefix = if *first { "a:" } else { "b:" };
                cache.invalidate_prefix(prefix).await;
                model.entries.retain(|k, _| !k.starts_with(prefix));
            }
            Op::Tags(tags) => {
                let tags: Vec<String> = tags.iter().map(|t| TAGS[*t].to_owned()).collect();
                cache.invalidate_tags(&tags).await;
                model.entries.retain(|_, (_, _, own)| !own.iter().any(|t| tags.contains(t)));
            }
            Op::Wait(ms) => tokio::time::sleep(Duration::from_millis(*ms)).await,
            Op::DropLocal(key) => {
                cache.drop_local(KEYS[*key]);
                if !shared {
                    model.entries.remove(KEYS[*key]);
                }
            }
        }
    }
}

/// A hybrid cache on `redis` (one private server per case: a static one would never be
/// dropped, and its process would outlive the tests).
async fn hybrid(redis: &TestRedis) -> Arc<dyn Cache> {
    let url = redis.url();
    let mut config =
        Config::from_lookup(|name| (name == "REDIS_URL").then(|| url.clone())).unwrap();
    config.cache_backend = CacheBackendKind::Hybrid;
    config.redis_prefix = format!("model{}", fastrand::u64(..));
    let client = RedisClient::new(RedisSettings::from_config(&config).unwrap()).unwrap();
    assert!(client.start().await);
    cache::build(&config, Some(&client))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_memory_cache_answers_like_the_model(ops in prop::collection::vec(op(), 1..40)) {
        actix_rt::System::new().block_on(async {
            let cache = cache::MemoryCache::new(1 << 20);
            check(&cache, false, &ops).await;
        });
    }

    #[test]
    fn the_hybrid_cache_answers_like_the_model(ops in prop::collection::vec(op(), 1..40)) {
        let redis = TestRedis::start();
        actix_rt::System::new().block_on(async {
            let cache = hybrid(&redis).await;
            check(&*cache, true, &ops).await;
        });
    }
}
