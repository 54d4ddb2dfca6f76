//! Two figures of the cache under faults, over HTTP against two in-process servers sharing a
//! private `redis-server` (loopback only):
//! - coherence: after a DELETE on instance A, how long until instance B (which held the entry
//!   in its L1) answers 404;
//! - outage: latency of cache GETs while Redis is down (L1 hits and misses), and how many were
//!   answered with a 5xx.
//!
//! ```text
//! cargo run --release --example cache_faults
//! ```

#[allow(dead_code)]
#[path = "../tests/api/redis_support.rs"]
mod redis_support;

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use jobyard::config::{CacheBackendKind, Config};
use jobyard::startup::Server;
use jobyard::Runtime;
use redis_support::TestRedis;

async fn server(redis: &TestRedis) -> String {
    let url = redis.url();
    let mut config = Config::from_lookup(|name| match name {
        "REDIS_URL" => Some(url.clone()),
        "JOBYARD_ADDR" => Some("127.0.0.1:0".into()),
        "JOBYARD_QUEUE_BACKEND" => Some("memory".into()),
        _ => None,
    })
    .unwrap();
    config.cache_backend = CacheBackendKind::Hybrid;
    config.redis_prefix = "faults".into();
    let server = Server::build_with(config, Runtime::builder()).await.expect("server starts");
    let base = format!("http://127.0.0.1:{}", server.port());
    actix_rt::spawn(server.run_until_stopped());
    base
}

fn percentile(sorted: &[Duration], q: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * q) as usize]
}

fn report(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name}: n={}, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        percentile(&samples, 0.5).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
        samples.last().unwrap().as_secs_f64() * 1e3
    );
}

#[actix::main]
async fn main() {
    let mut redis = TestRedis::start();
    let (a, b) = (server(&redis).await, server(&redis).await);
    let http = awc::Client::builder().timeout(Duration::from_secs(10)).finish();

    let mut propagation = Vec::new();
    for i in 0..200 {
        let key = format!("{}/v1/cache/coherence:{i}", "");
        let put = http
            .put(format!("{a}{key}"))
            .content_type("application/json")
            .send_body("1")
            .await
            .unwrap();
        assert_eq!(put.status(), 204);
        assert_eq!(
            http.get(format!("{b}{key}")).send().await.unwrap().status(),
            200,
            "B holds it in L1"
        );
        assert_eq!(http.delete(format!("{a}{key}")).send().await.unwrap().status(), 204);
        let deleted = Instant::now();
        while http.get(format!("{b}{key}")).send().await.unwrap().status() != 404 {
            assert!(deleted.elapsed() < Duration::from_secs(5), "B never dropped {key}");
        }
        propagation.push(deleted.elapsed());
    }
    report("delete on A -> 404 on B (incl. B's HTTP round trip)", propagation);

    for i in 0..100 {
        let put = http
            .put(format!("{a}/v1/cache/hot:{i}"))
            .content_type("application/json")
            .send_body("1")
            .await;
        assert_eq!(put.unwrap().status(), 204);
    }
    redis.pause();
    outage(&http, &a, "hung (SIGSTOP)").await;
    redis.resume();
    // Wait for the instance to be back to normal before the next fault.
    loop {
        let ready: serde_json::Value =
            http.get(format!("{a}/ready")).send().await.unwrap().json().await.unwrap();
        if ready["status"] == "ready" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    redis.stop();
    outage(&http, &a, "killed").await;
}

/// Cache GETs on `base` (half L1 hits, half misses), 8 at a time, from the moment Redis fails.
async fn outage(http: &awc::Client, base: &str, how: &str) {
    let started = Instant::now();
    let mut errors = 0;
    let mut latencies = Vec::new();
    for round in 0..250 {
        let gets = (0..8).map(|n| {
            let key = if n % 2 == 0 {
                format!("hot:{}", (round + n) % 100)
            } else {
                format!("miss:{round}:{n}")
            };
            let request = http.get(format!("{base}/v1/cache/{key}"));
            async move {
                let sent = Instant::now();
                let status = request.send().await.map(|r| r.status().as_u16()).unwrap_or(599);
                (sent.elapsed(), status)
            }
        });
        for (latency, status) in join_all(gets).await {
            latencies.push(latency);
            errors += usize::from(status >= 500);
        }
    }
    println!(
        "redis {how}: {} GETs in {:.2} s from the failure, {errors} answered 5xx",
        latencies.len(),
        started.elapsed().as_secs_f64()
    );
    report(&format!("cache GET over HTTP while redis is {how}"), latencies);
}
