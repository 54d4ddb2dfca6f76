//! Checks that no queue script holds Redis for long, whatever the backlog: builds a backlog of
//! `--jobs` jobs in each state that periodic work walks through (due scheduled jobs to promote,
//! expired leases to reap, terminal jobs past retention to purge) and reports the slowest
//! script calls Redis itself saw (`SLOWLOG`, `LATENCY`).
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example backlog -- --jobs 1000000
//! ```
//! It sets `slowlog-log-slower-than` and `latency-monitor-threshold` on that Redis: use a
//! private one. Each phase prints how many calls it took and the slowest of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use jobyard::config::{QueueBackendKind, RedisUrl};
use jobyard::job::record::json_from_str;
use jobyard::job::spec::{plan, KindLookup, SpecDefaults};
use jobyard::queue::{Claim, Completion, Outcome, QueueBackend, RedisQueue};
use jobyard::redis::{RedisClient, RedisSettings};
use jobyard::{Config, JobSpec};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    jobs: usize,
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
    let url = std::env::var("REDIS_URL").map_err(|_| "REDIS_URL is required")?;
    let mut config = Config {
        redis_url: Some(RedisUrl::parse(&url)?),
        queue_backend: QueueBackendKind::Redis,
        ..Config::default()
    };
    config.queue_timeout = Duration::from_secs(30);
    config.redis_prefix = format!("backlog-{}", fastrand::u32(..));
    let mut settings = RedisSettings::from_config(&config).ok_or("no REDIS_URL")?;
    settings.command_timeout = Duration::from_secs(30);
    let admin = RedisClient::new(settings)?;
    admin.start().await;
    for (name, value) in [
        ("slowlog-log-slower-than", "2000"),
        ("slowlog-max-len", "100000"),
        ("latency-monitor-threshold", "5"),
    ] {
        let _: String =
            admin.cmd(redis::cmd("CONFIG").arg("SET").arg(name).arg(value), true).await?;
    }
    let _: String = admin.cmd(&redis::cmd("SLOWLOG").arg("RESET").to_owned(), true).await?;
    let _: i64 = admin.cmd(&redis::cmd("LATENCY").arg("RESET").to_owned(), true).await?;
    let queue = RedisQueue::connect(&config).await?;

    let payload = json_from_str(r#"{"source":"backlog"}"#)?;
    let started = Instant::now();
    // Every job is submitted as of one instant, due a second later: all scheduled, all due at once.
    let submitted_at = Utc::now();
    let due = submitted_at + chrono::Duration::seconds(1);
    for _ in 0..args.jobs / 1_000 {
        let spec = JobSpec {
            payload: Some(payload.clone()),
            run_at: Some(due),
            ..JobSpec::new("backlog")
        };
        let jobs = plan(vec![spec; 1_000], true, &AnyKind, &SpecDefaults::default(), submitted_at)?;
        queue.submit(jobs, submitted_at).await?;
    }
    println!("submitted {} scheduled jobs in {:.1} s", args.jobs, started.elapsed().as_secs_f64());
    tokio::time::sleep_until((Instant::now() + Duration::from_secs(1)).into()).await;

    // Promote: every job is due at once.
    phase("promote", || async {
        Ok(queue.tick(Utc::now(), Duration::from_secs(86_400)).await?.more)
    })
    .await?;

    // Claim everything under a lease that is over at once, then reap.
    let kinds: Arc<[Arc<str>]> = vec![Arc::from("backlog")].into();
    let claim = Claim {
        workers: (0..500).map(|i| Arc::from(format!("backlog/w{i}"))).collect(),
        lease: Duration::from_millis(1),
        kinds,
    };
    let mut claimed = 0;
    loop {
        let got = queue.dequeue(claim.clone(), Utc::now()).await?;
        if got.is_empty() {
            break;
        }
        claimed += got.len();
    }
    println!("claimed {claimed} jobs under leases that expire at once");
    tokio::time::sleep_until((Instant::now() + Duration::from_millis(5)).into()).await;
    phase("reap", || async { Ok(queue.tick(Utc::now(), Duration::from_secs(86_400)).await?.more) })
        .await?;

    // Run them all to the end, then purge with no retention.
    let claim = Claim { lease: Duration::from_secs(600), ..claim };
    loop {
        let got = queue.dequeue(claim.clone(), Utc::now()).await?;
        if got.is_empty() {
            break;
        }
        let done = got
            .into_iter()
            .map(|c| Completion { lease: c.lease, outcome: Outcome::Succeeded(payload.clone()) })
            .collect();
        queue.complete(done, Utc::now()).await?;
    }
    phase("purge", || async { Ok(queue.tick(Utc::now(), Duration::ZERO).await?.more) }).await?;

    let slow: Vec<redis::Value> = admin.cmd(redis::cmd("SLOWLOG").arg("GET").arg(-1), true).await?;
    let mut worst: Vec<(i64, String)> = slow
        .iter()
        .filter_map(|entry| match entry {
            redis::Value::Array(fields) => {
                let micros = match fields.get(2)? {
                    redis::Value::Int(n) => *n,
                    _ => return None,
                };
                let command = match fields.get(3)? {
                    redis::Value::Array(args) => args
                        .iter()
                        .take(2)
                        .filter_map(|a| match a {
                            redis::Value::BulkString(b) => {
                                Some(String::from_utf8_lossy(b).into_owned())
                            }
                            _ => None,
                        })
                        .collect::<Vec<_>>()
                        .join(" "),
                    _ => String::new(),
                };
                Some((micros, command))
            }
            _ => None,
        })
        .collect();
    worst.sort_by_key(|entry| std::cmp::Reverse(entry.0));
    println!("SLOWLOG entries over 2 ms: {}", worst.len());
    for (micros, command) in worst.iter().take(5) {
        println!("  {:.1} ms  {command}", *micros as f64 / 1_000.0);
    }
    let latency: redis::Value =
        admin.cmd(&redis::cmd("LATENCY").arg("LATEST").to_owned(), true).await?;
    println!("LATENCY LATEST: {latency:?}");
    println!(
        "slowest call seen by Redis: {:.1} ms",
        worst.first().map_or(0.0, |(micros, _)| *micros as f64 / 1_000.0)
    );
    Ok(())
}

/// Runs a periodic step until it reports no more work; prints its calls and slowest call.
async fn phase<F, Fut>(name: &str, mut step: F) -> Result<(), Box<dyn std::error::Error>>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool, Box<dyn std::error::Error>>>,
{
    let (mut calls, mut slowest) = (0, Duration::ZERO);
    let started = Instant::now();
    loop {
        let at = Instant::now();
        let more = step().await?;
        calls += 1;
        slowest = slowest.max(at.elapsed());
        if !more {
            break;
        }
    }
    println!(
        "{name}: {calls} calls in {:.1} s, slowest call {:.1} ms (round trip included)",
        started.elapsed().as_secs_f64(),
        slowest.as_secs_f64() * 1_000.0
    );
    Ok(())
}
