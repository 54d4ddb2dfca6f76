//! Hybrid versus Redis under a skewed read load: `--keys` keys read with a Zipf distribution
//! (exponent `--zipf`) by `--concurrency` concurrent readers, the hybrid's L1 sized for 10 % of
//! the keys. Starts its own `redis-server` on a free port (loopback only).
//!
//! ```text
//! cargo run --release --example cache_load -- --keys 100000 --ops 400000
//! ```
//! Prints, per backend, the throughput and (for the hybrid) the L1 hit ratio, then the ratio
//! of the two throughputs.

#[allow(dead_code)]
#[path = "../tests/api/redis_support.rs"]
mod redis_support;

use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::future::join_all;
use jobyard::cache::{self, Cache, Entry};
use jobyard::config::{CacheBackendKind, Config};
use jobyard::redis::{RedisClient, RedisSettings};
use redis_support::TestRedis;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 100_000)]
    keys: usize,
    #[arg(long, default_value_t = 400_000)]
    ops: usize,
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Zipf exponent of the key popularity.
    #[arg(long, default_value_t = 1.0)]
    zipf: f64,
    /// Value size in bytes.
    #[arg(long, default_value_t = 512)]
    value: usize,
}

/// Samples ranks 0..n with probability proportional to 1/(rank+1)^s.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Self {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(s);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    fn sample(&self, rng: &mut fastrand::Rng) -> usize {
        let target = rng.f64() * self.cumulative.last().unwrap();
        self.cumulative.partition_point(|&c| c < target)
    }
}

async fn build(redis: &TestRedis, kind: CacheBackendKind, l1_bytes: u64) -> Arc<dyn Cache> {
    let url = redis.url();
    let mut config =
        Config::from_lookup(|name| (name == "REDIS_URL").then(|| url.clone())).unwrap();
    config.cache_backend = kind;
    config.cache_max_bytes = l1_bytes;
    config.redis_prefix = "load".into();
    let client = RedisClient::new(RedisSettings::from_config(&config).unwrap()).unwrap();
    assert!(client.start().await, "redis reachable");
    cache::build(&config, Some(&client))
}

/// Runs `ops` reads spread over `concurrency` tasks; returns reads per second.
async fn run(
    cache: &Arc<dyn Cache>,
    keys: &Rc<Vec<String>>,
    zipf: &Rc<Zipf>,
    ops: usize,
    concurrency: usize,
) -> f64 {
    let started = Instant::now();
    let readers = (0..concurrency).map(|n| {
        let (cache, keys, zipf) = (cache.clone(), keys.clone(), zipf.clone());
        async move {
            let mut rng = fastrand::Rng::with_seed(n as u64);
            for _ in 0..ops / concurrency {
                let key = &keys[zipf.sample(&mut rng)];
                assert!(cache.get(key).await.is_some(), "every key was stored");
            }
        }
    });
    join_all(readers).await;
    (ops / concurrency * concurrency) as f64 / started.elapsed().as_secs_f64()
}

#[actix::main]
async fn main() {
    let args = Args::parse();
    let redis = TestRedis::start();
    let keys: Rc<Vec<String>> =
        Rc::new((0..args.keys).map(|i| format!("tool:github:repo:{i}")).collect());
    let zipf = Rc::new(Zipf::new(args.keys, args.zipf));
    let value = vec![b'x'; args.value];
    let weight = Entry::new(value.clone(), "application/json", Duration::from_secs(3600), vec![])
        .weight() as u64;
    let l1_bytes = (args.keys as u64 / 10) * (weight + keys[0].len() as u64);

    let redis_only = build(&redis, CacheBackendKind::Redis, l1_bytes).await;
    for chunk in keys.chunks(1_000) {
        let sets = chunk.iter().map(|k| {
            redis_only.set(
                k,
                Entry::new(value.clone(), "application/json", Duration::from_secs(3600), vec![]),
            )
        });
        join_all(sets).await;
    }
    println!(
        "keys: {}, value: {} B, zipf s={}, readers: {}, L1: {} KiB (10 % of the keys)",
        args.keys,
        args.value,
        args.zipf,
        args.concurrency,
        l1_bytes / 1024
    );

    let redis_rate = run(&redis_only, &keys, &zipf, args.ops, args.concurrency).await;
    println!("redis:  {redis_rate:.0} reads/s");

    let hybrid = build(&redis, CacheBackendKind::Hybrid, l1_bytes).await;
    // One pass to let L1 learn what is hot, then the measured pass.
    run(&hybrid, &keys, &zipf, args.ops / 2, args.concurrency).await;
    let before = hybrid.stats();
    let hybrid_rate = run(&hybrid, &keys, &zipf, args.ops, args.concurrency).await;
    let after = hybrid.stats();
    let hits = after.memory.hits - before.memory.hits;
    let lookups = hits + after.memory.misses - before.memory.misses;
    println!("hybrid: {hybrid_rate:.0} reads/s, L1 hit ratio {:.3}", hits as f64 / lookups as f64);
    println!("hybrid/redis throughput: {:.1}x", hybrid_rate / redis_rate);
}
