//! Cache micro-benchmarks: a memory-backend hit, a hybrid L1 hit, a Redis-backend get of a
//! 1 KiB value (next to `redis-benchmark`'s raw GET against the same server, run first and
//! printed), and the value codec with and without compression.
//!
//! `cargo bench --bench cache` (needs `redis-server` and `redis-benchmark` on the PATH).

#[allow(dead_code)]
#[path = "../tests/api/redis_support.rs"]
mod redis_support;

use std::hint::black_box;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use actix_rt::SystemRunner;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_util::FutureExt;
use jobyard::cache::{self, codec, Cache, Entry, MemoryCache};
use jobyard::config::{CacheBackendKind, Config};
use jobyard::redis::{RedisClient, RedisSettings};
use redis_support::TestRedis;

const KEYS: usize = 10_000;

fn keys() -> Vec<String> {
    (0..KEYS).map(|i| format!("tool:github:repo:{i}")).collect()
}

fn entry(size: usize) -> Entry {
    Entry::new(
        vec![b'x'; size],
        "application/json",
        Duration::from_secs(3600),
        vec!["github".into()],
    )
}

/// A Redis-backed cache of `kind` on `redis`, created inside `system`.
fn redis_cache(system: &SystemRunner, redis: &TestRedis, kind: CacheBackendKind) -> Arc<dyn Cache> {
    let url = redis.url();
    let mut config =
        Config::from_lookup(|name| (name == "REDIS_URL").then(|| url.clone())).unwrap();
    config.cache_backend = kind;
    config.redis_prefix = format!("bench-{}", kind.as_str());
    system.block_on(async {
        let client = RedisClient::new(RedisSettings::from_config(&config).unwrap()).unwrap();
        assert!(client.start().await, "bench redis reachable");
        cache::build(&config, Some(&client))
    })
}

/// `redis-benchmark`'s own figure for a sequential 1 KiB GET, printed for comparison.
fn raw_redis_get(redis: &TestRedis) {
    let port = redis.url().rsplit(':').next().unwrap().to_owned();
    let out = Command::new("redis-benchmark")
        .args(["-p", &port, "-c", "1", "-n", "20000", "-t", "get", "-d", "1024", "-q"])
        .output()
        .expect("redis-benchmark is installed (Debian: redis-tools)");
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.rsplit('\r').find(|l| !l.trim().is_empty()).unwrap_or(&text).trim().to_owned();
    println!("redis-benchmark -c1 -n20000 -t get -d1024: {last}");
}

fn memory(c: &mut Criterion) {
    let cache = MemoryCache::new(256 << 20);
    let keys = keys();
    for key in &keys {
        cache.set(key, entry(1024)).now_or_never().unwrap();
    }
    let mut i = 0;
    c.bench_function("cache/memory_get_hit_1KiB", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            black_box(cache.get(&keys[i]).now_or_never().unwrap())
        })
    });
}

fn redis_backed(c: &mut Criterion) {
    let redis = TestRedis::start();
    raw_redis_get(&redis);
    let system = actix_rt::System::new();
    let keys = keys();

    let hybrid = redis_cache(&system, &redis, CacheBackendKind::Hybrid);
    system.block_on(async {
        // L1 takes entries only once the invalidation subscription is live (milliseconds).
        while hybrid.stats().memory.entries < KEYS as u64 {
            for key in &keys {
                hybrid.set(key, entry(1024)).await;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let mut i = 0;
    c.bench_function("cache/hybrid_get_l1_hit_1KiB", |b| {
        b.iter(|| {
            i = (i + 1) % KEYS;
            // An L1 hit never waits on Redis: the future is ready at its first poll.
            black_box(hybrid.get(&keys[i]).now_or_never().expect("L1 hit is immediate"))
        })
    });

    let shared = redis_cache(&system, &redis, CacheBackendKind::Redis);
    system.block_on(async {
        for key in keys.iter().take(1_000) {
            shared.set(key, entry(1024)).await;
        }
    });
    let mut i = 0;
    c.bench_function("cache/redis_get_1KiB", |b| {
        b.iter(|| {
            i = (i + 1) % 1_000;
            black_box(system.block_on(shared.get(&keys[i])).expect("stored"))
        })
    });
}

/// A JSON-like value of about `size` bytes: an upstream API's list of pull requests, with
/// varying ids, titles, users and dates (seeded, so every run compresses the same bytes).
fn json_value(size: usize) -> Vec<u8> {
    const WORDS: [&str; 16] = [
        "refresh",
        "cache",
        "dashboard",
        "github",
        "flaky",
        "build",
        "deploy",
        "fix",
        "timeout",
        "retry",
        "queue",
        "worker",
        "metrics",
        "docs",
        "bump",
        "parser",
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    let mut body = b"[".to_vec();
    let mut id = 1_000_000u64;
    while body.len() < size.saturating_sub(300) {
        id += rng.u64(1..500);
        let word = |rng: &mut fastrand::Rng| WORDS[rng.usize(..WORDS.len())];
        let item = format!(
            r#"{{"id":{id},"number":{},"title":"{} the {} {}","state":"{}","labels":["{}","{}"],"user":{{"login":"user{}","id":{}}},"created_at":"2026-{:02}-{:02}T{:02}:{:02}:{:02}Z","comments":{}}},"#,
            rng.u32(1..20_000),
            word(&mut rng),
            word(&mut rng),
            word(&mut rng),
            if rng.bool() { "open" } else { "closed" },
            word(&mut rng),
            word(&mut rng),
            rng.u32(..5_000),
            rng.u32(..10_000_000),
            rng.u32(1..13),
            rng.u32(1..29),
            rng.u32(..24),
            rng.u32(..60),
            rng.u32(..60),
            rng.u32(..50),
        );
        body.extend_from_slice(item.as_bytes());
    }
    body.extend_from_slice(b"{}]");
    body
}

fn compression(c: &mut Criterion) {
    let value = json_value(1 << 20);
    let e = Entry::new(value.clone(), "application/json", Duration::from_secs(60), vec![]);
    let compressed = codec::encode(&e, 1024);
    let raw = codec::encode(&e, usize::MAX);
    println!(
        "compression of 1 MiB of JSON-like data: {} -> {} bytes (ratio {:.1}x)",
        value.len(),
        compressed.len(),
        value.len() as f64 / compressed.len() as f64
    );
    let mut group = c.benchmark_group("codec_1MiB_json");
    group.throughput(Throughput::Bytes(value.len() as u64));
    group.bench_function("encode_lz4", |b| b.iter(|| black_box(codec::encode(&e, 1024))));
    group.bench_function("encode_raw", |b| b.iter(|| black_box(codec::encode(&e, usize::MAX))));
    group.bench_function("decode_lz4", |b| {
        b.iter(|| black_box(codec::decode(&compressed).unwrap()))
    });
    group.bench_function("decode_raw", |b| b.iter(|| black_box(codec::decode(&raw).unwrap())));
    group.finish();
    // Around the threshold: a 2 KiB value, compressed or not.
    let small = Entry::new(json_value(2048), "application/json", Duration::from_secs(60), vec![]);
    println!(
        "2 KiB value: {} bytes raw, {} bytes compressed",
        codec::encode(&small, usize::MAX).len(),
        codec::encode(&small, 1024).len()
    );
    let mut group = c.benchmark_group("codec_2KiB_json");
    group.bench_function("encode_lz4", |b| b.iter(|| black_box(codec::encode(&small, 1024))));
    group.bench_function("encode_raw", |b| b.iter(|| black_box(codec::encode(&small, usize::MAX))));
    group.finish();
}

criterion_group!(benches, memory, redis_backed, compression);
criterion_main!(benches);
