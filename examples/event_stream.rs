//! What the event stream keeps up with, and what a dashboard that reads it costs the jobs.
//!
//! ```text
//! cargo run --release --example event_stream -- rate --changes 10000 --secs 10
//! cargo run --release --example event_stream -- cost --jobs 100000 --rounds 5
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example event_stream -- cost --backend redis
//! ```
//! Both start a server on a free loopback port (the memory queue, or the Redis queue under a
//! fresh prefix with `--backend redis`) and read `GET /v1/events` over HTTP as the dashboard
//! does.
//! - `rate`: submits `sleep` jobs of 0 ms at the pace that makes `--changes` job changes a
//!   second (three per job: queued, running, succeeded) for `--secs`, and counts what one
//!   reader received: the job events, the `reset`s (a reader skipped ahead), and how late each
//!   event arrived after the change (p50, p99).
//! - `cost`: runs `--jobs` `noop` jobs as fast as they go (submitted through the runtime's
//!   client in batches of 1 000), alternately with no reader and with one reader, `--rounds`
//!   times each, and prints the median throughput of each and their ratio.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::web::Bytes;
use clap::{Parser, Subcommand};
use futures_util::{Stream, StreamExt};
use jobyard::config::{QueueBackendKind, RedisUrl};
use jobyard::job::record::json_from_str;
use jobyard::startup::Server;
use jobyard::{Config, JobSpec, Runtime};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Queue backend: `memory` or `redis` (Redis from `REDIS_URL`).
    #[arg(long, default_value = "memory", global = true)]
    backend: String,
    #[command(subcommand)]
    what: What,
}

#[derive(Subcommand)]
enum What {
    /// Whether one reader keeps up with a steady rate of job changes.
    Rate {
        #[arg(long, default_value_t = 10_000)]
        changes: u64,
        #[arg(long, default_value_t = 10)]
        secs: u64,
    },
    /// Throughput with and without a reader, alternating.
    Cost {
        #[arg(long, default_value_t = 100_000)]
        jobs: usize,
        #[arg(long, default_value_t = 5)]
        rounds: usize,
    },
}

/// What the reader counted.
#[derive(Default)]
struct Counts {
    jobs: AtomicU64,
    resets: AtomicU64,
    /// Microseconds from each job event's `at` to its arrival.
    lateness: std::sync::Mutex<Vec<u64>>,
}

#[actix_web::main]
async fn main() {
    let args = Args::parse();
    let mut config = Config::from_env().expect("configuration");
    config.addr = "127.0.0.1:0".into();
    if args.backend == "redis" {
        let url = std::env::var("REDIS_URL").expect("REDIS_URL for --backend redis");
        config.redis_url = Some(RedisUrl::parse(&url).expect("REDIS_URL"));
        config.queue_backend = QueueBackendKind::Redis;
        config.redis_prefix = format!("events-bench-{}", fastrand::u32(..));
    } else {
        config.redis_url = None;
        config.queue_backend = QueueBackendKind::Memory;
    }
    let server = Server::build_with(config, Runtime::builder().with_builtin_kinds())
        .await
        .expect("server starts");
    let base = format!("http://127.0.0.1:{}", server.port());
    let runtime = server.runtime().clone();
    let trigger = server.shutdown_trigger();
    let serving = actix_rt::spawn(server.run_until_stopped());
    match args.what {
        What::Rate { changes, secs } => rate(&base, &runtime, changes, secs).await,
        What::Cost { jobs, rounds } => cost(&base, &runtime, jobs, rounds).await,
    }
    trigger.trigger();
    let _ = serving.await;
}

type Body = Pin<Box<dyn Stream<Item = Result<Bytes, awc::error::PayloadError>>>>;

/// Opens `/v1/events` and counts what arrives until the returned handle is dropped.
async fn read(base: &str, counts: Arc<Counts>) -> actix_rt::task::JoinHandle<()> {
    let http = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    let response = http.get(format!("{base}/v1/events")).send().await.expect("stream opens");
    let mut body: Body = Box::pin(response);
    actix_rt::spawn(async move {
        let mut buffer = String::new();
        while let Some(Ok(bytes)) = body.next().await {
            buffer.push_str(std::str::from_utf8(&bytes).unwrap_or(""));
            let mut start = 0;
            while let Some(end) = buffer[start..].find("\n\n") {
                let block = &buffer[start..start + end];
                start += end + 2;
                if block.contains("event: reset") {
                    counts.resets.fetch_add(1, Ordering::Relaxed);
                }
                if !block.contains("event: job") {
                    continue;
                }
                // Lateness of one event in 64: the reader's own work stays small.
                if !counts.jobs.fetch_add(1, Ordering::Relaxed).is_multiple_of(64) {
                    continue;
                }
                let at = block.split("\"at\":\"").nth(1).and_then(|rest| rest.split('"').next());
                if let Some(at) = at.and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok()) {
                    let late = chrono::Utc::now().signed_duration_since(at);
                    let late = late.num_microseconds().unwrap_or(0).max(0) as u64;
                    counts.lateness.lock().unwrap().push(late);
                }
            }
            buffer.drain(..start);
        }
    })
}

async fn rate(base: &str, runtime: &Runtime, changes: u64, secs: u64) {
    let counts = Arc::new(Counts::default());
    let reader = read(base, counts.clone()).await;
    // The reader is registered once the first stats snapshot arrives; wait for the stream to
    // be live (a first job's events) before pacing.
    let jobs_per_sec = changes / 3;
    let tick = Duration::from_millis(10);
    let per_tick = (jobs_per_sec as f64 * tick.as_secs_f64()).round().max(1.0) as usize;
    let client = runtime.client();
    let start = Instant::now();
    let mut submitted = 0u64;
    let mut next = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_secs(secs) {
        let payload = json_from_str(r#"{"ms":0}"#).expect("payload");
        let specs: Vec<JobSpec> = (0..per_tick)
            .map(|_| JobSpec { payload: Some(payload.clone()), ..JobSpec::new("sleep") })
            .collect();
        client.submit_batch(specs).await.expect("submit");
        submitted += per_tick as u64;
        next += tick;
        tokio::time::sleep_until(next).await;
    }
    let elapsed = start.elapsed();
    // Until every job's three changes arrived, or two seconds without progress.
    let expected = submitted * 3;
    let mut last = (counts.jobs.load(Ordering::Relaxed), Instant::now());
    while counts.jobs.load(Ordering::Relaxed) < expected
        && last.1.elapsed() < Duration::from_secs(2)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = counts.jobs.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    reader.abort();
    let received = counts.jobs.load(Ordering::Relaxed);
    let mut late = std::mem::take(&mut *counts.lateness.lock().unwrap());
    late.sort_unstable();
    let pct = |p: f64| {
        late.get(((late.len() as f64 * p) as usize).min(late.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!("jobs submitted: {submitted} in {:.1} s", elapsed.as_secs_f64());
    println!("job changes made: {expected} ({:.0}/s)", expected as f64 / elapsed.as_secs_f64());
    println!("job events received: {received}; resets: {}", counts.resets.load(Ordering::Relaxed));
    println!(
        "lateness p50: {} µs, p99: {} µs, max: {} µs",
        pct(0.5),
        pct(0.99),
        late.last().unwrap_or(&0)
    );
}

async fn run_jobs(runtime: &Runtime, jobs: usize) -> f64 {
    let client = runtime.client();
    let before = client.stats().await.expect("stats");
    let done_before: u64 = before.queues.values().map(|c| c.succeeded).sum();
    let start = Instant::now();
    for chunk in 0..jobs.div_ceil(1_000) {
        let n = 1_000.min(jobs - chunk * 1_000);
        let specs: Vec<JobSpec> = (0..n).map(|_| JobSpec::new("noop")).collect();
        client.submit_batch(specs).await.expect("submit");
    }
    loop {
        let stats = client.stats().await.expect("stats");
        let done: u64 = stats.queues.values().map(|c| c.succeeded).sum();
        if done >= done_before + jobs as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    jobs as f64 / start.elapsed().as_secs_f64()
}

async fn cost(base: &str, runtime: &Runtime, jobs: usize, rounds: usize) {
    // A first run warms the allocator and the store.
    run_jobs(runtime, jobs / 4).await;
    let (mut alone, mut watched) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // Events are kept for a while after the last reader left (for readers that
        // reconnect): the run without a reader starts once the hub is idle.
        while runtime.client().events().active() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let a = run_jobs(runtime, jobs).await;
        let counts = Arc::new(Counts::default());
        let reader = read(base, counts.clone()).await;
        let w = run_jobs(runtime, jobs).await;
        reader.abort();
        println!(
            "round {}: no reader {a:.0} jobs/s, one reader {w:.0} jobs/s ({} job events read, {} resets)",
            round + 1,
            counts.jobs.load(Ordering::Relaxed),
            counts.resets.load(Ordering::Relaxed)
        );
        alone.push(a);
        watched.push(w);
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (a, w) = (median(&mut alone), median(&mut watched));
    println!("median: no reader {a:.0} jobs/s, one reader {w:.0} jobs/s, ratio {:.3}", w / a);
}
