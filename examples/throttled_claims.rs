//! What a claim costs with jobs held back by a limit ahead of the runnable ones: it must not
//! grow with their number (a claim passes over a throttled lane unread).
//!
//! ```text
//! cargo run --release --example throttled_claims -- --backend memory
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example throttled_claims -- --backend redis
//! ```
//! For each count of throttled jobs (`--throttled`, default 0, 1 000, 10 000 and 100 000), on
//! a fresh store: a limit held for an hour, that many jobs under it at priority 10, then
//! runnable jobs at priority 0 (no limit); then `--claims` claims of `--slots` slots each, each
//! followed by the completion of what it took (not timed). Prints the median and 90th
//! percentile of a claim's time, and on Redis the claim script's own time per call (from
//! `INFO commandstats`, over the claims only).

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use jobyard::config::RedisUrl;
use jobyard::job::record::json_null;
use jobyard::job::spec::{plan, KindLookup, SpecDefaults};
use jobyard::job::JobSpec;
use jobyard::queue::flow::{LimitSpec, Rate};
use jobyard::queue::{Claim, Completion, MemoryQueue, Outcome, QueueBackend, RedisQueue};
use jobyard::redis::{RedisClient, RedisSettings};
use jobyard::Config;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Queue backend: `memory` or `redis` (Redis from `REDIS_URL`, a fresh prefix per count).
    #[arg(long, default_value = "memory")]
    backend: String,
    /// Counts of throttled jobs, comma-separated.
    #[arg(long, default_value = "0,1000,10000,100000", value_delimiter = ',')]
    throttled: Vec<usize>,
    /// Claims timed per count.
    #[arg(long, default_value_t = 2_000)]
    claims: usize,
    /// Slots per claim.
    #[arg(long, default_value_t = 16)]
    slots: usize,
}

struct AnyKind;
impl KindLookup for AnyKind {
    fn lookup(&self, kind: &str) -> Option<Arc<str>> {
        Some(Arc::from(kind))
    }
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    println!("backend: {}, {} claims of {} slots per count", args.backend, args.claims, args.slots);
    for &throttled in &args.throttled {
        let (queue, server) = backend(&args.backend).await?;
        let (p50, p90, script) = measure(&*queue, server.as_ref(), throttled, &args).await?;
        let script = script.map(|us| format!(", claim script {us:.1} µs")).unwrap_or_default();
        println!("throttled {throttled:>7}: claim p50 {p50:.1} µs, p90 {p90:.1} µs{script}");
    }
    Ok(())
}

async fn backend(
    name: &str,
) -> Result<(Arc<dyn QueueBackend>, Option<RedisClient>), Box<dyn std::error::Error>> {
    match name {
        "memory" => Ok((Arc::new(MemoryQueue::new()), None)),
        "redis" => {
            let url = std::env::var("REDIS_URL").map_err(|_| "--backend redis needs REDIS_URL")?;
            let config = Config {
                redis_url: Some(RedisUrl::parse(&url)?),
                redis_prefix: format!("throttled-{}", fastrand::u32(..)),
                max_queued: 10_000_000,
                ..Config::default()
            };
            let queue = RedisQueue::connect(&config).await?;
            let mut settings = RedisSettings::from_config(&config).ok_or("no REDIS_URL")?;
            settings.command_timeout = Duration::from_secs(5);
            let server = RedisClient::new(settings)?;
            server.start().await;
            Ok((Arc::new(queue), Some(server)))
        }
        other => Err(format!("unknown backend '{other}' (memory or redis)").into()),
    }
}

async fn submit(
    queue: &dyn QueueBackend,
    spec: JobSpec,
    n: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut left = n;
    while left > 0 {
        let batch = left.min(1_000);
        let now = Utc::now();
        let jobs = plan(vec![spec.clone(); batch], true, &AnyKind, &SpecDefaults::default(), now)?;
        queue.submit(jobs, now).await?;
        left -= batch;
    }
    Ok(())
}

async fn measure(
    queue: &dyn QueueBackend,
    server: Option<&RedisClient>,
    throttled: usize,
    args: &Args,
) -> Result<(f64, f64, Option<f64>), Box<dyn std::error::Error>> {
    let closed = LimitSpec { rate: Some(Rate { tokens: 1, per_ms: 1_000 }), concurrency: None };
    queue.put_limit("closed", closed, Utc::now()).await?;
    queue.hold_limit("closed", Utc::now() + chrono::Duration::hours(1), Utc::now()).await?;
    let held =
        JobSpec { priority: Some(10), limits: Some(vec!["closed".into()]), ..JobSpec::new("noop") };
    submit(queue, held, throttled).await?;
    submit(queue, JobSpec::new("noop"), args.claims * args.slots).await?;
    let claim = Claim {
        workers: (0..args.slots).map(|i| Arc::from(format!("bench/w{i}"))).collect(),
        lease: Duration::from_secs(600),
        kinds: vec![Arc::from("noop")].into(),
    };
    let before = match server {
        Some(server) => Some(claim_script_us(server).await?),
        None => None,
    };
    let mut times = Vec::with_capacity(args.claims);
    let mut scripts = 0.0;
    for _ in 0..args.claims {
        let started = Instant::now();
        let claimed = queue.dequeue(claim.clone(), Utc::now()).await?;
        times.push(started.elapsed().as_secs_f64() * 1e6);
        assert_eq!(claimed.len(), args.slots, "only runnable jobs are claimed");
        // The completions are not timed, nor counted in the script's time.
        let script_before = match server {
            Some(server) => Some(claim_script_us(server).await?),
            None => None,
        };
        let done = claimed
            .iter()
            .map(|c| Completion { lease: c.lease, outcome: Outcome::Succeeded(json_null()) })
            .collect();
        queue.complete(done, Utc::now()).await?;
        if let (Some(server), Some(at)) = (server, script_before) {
            scripts -= claim_script_us(server).await? - at;
        }
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    let script = match (server, before) {
        (Some(server), Some(before)) => {
            Some((claim_script_us(server).await? - before + scripts) / args.claims as f64)
        }
        _ => None,
    };
    Ok((at(0.5), at(0.9), script))
}

/// The time Redis spent in scripts so far (µs, `INFO commandstats`).
async fn claim_script_us(server: &RedisClient) -> Result<f64, Box<dyn std::error::Error>> {
    let info: String = server.cmd(redis::cmd("INFO").arg("commandstats"), true).await?;
    Ok(info
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| l.split(',').find_map(|kv| kv.strip_prefix("usec=")))
        .filter_map(|v| v.parse::<f64>().ok())
        .sum())
}
