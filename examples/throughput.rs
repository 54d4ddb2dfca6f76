//! End-to-end throughput and latency of the whole actor pipeline.
//!
//! ```text
//! cargo run --release --example throughput -- --backend memory --jobs 200000
//! cargo run --release --example throughput -- --backend memory --latency
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example throughput -- --backend redis --jobs 100000
//! cargo run --release --example throughput -- --backend memory --limit   # every job under a limit
//! cargo run --release --example throughput -- --backend memory --metrics # recording metrics
//! ```
//! Throughput: submits `--jobs` `noop` jobs in batches of `--batch` through the runtime's
//! client, and measures from the first submit until the last job has succeeded. Latency: on an
//! idle runtime, measures from just before `submit` until the handler starts, `--samples` times.
//! The last line is `throughput: N jobs/s` (or `latency p50: ...`).
//!
//! With `--backend redis` (Redis from `REDIS_URL`, jobs under a fresh prefix) it also prints
//! the round trips per job (counted by the queue's Redis link) and Redis's CPU per job (from
//! `INFO cpu`, and the scripts' own time from `INFO commandstats`), over the run. The cache is
//! in memory unless `--cache hybrid` (the default of a server given `REDIS_URL`); either way a
//! job's result is stored once, in its record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::sync::Arc;

use clap::Parser;
use jobyard::config::{CacheBackendKind, QueueBackendKind, RedisUrl};
use jobyard::job::record::json_from_str;
use jobyard::queue::flow::{LimitSpec, Rate};
use jobyard::queue::{MemoryQueue, QueueBackend, QueueLimits, RedisQueue};
use jobyard::redis::{RedisClient, RedisSettings};
use jobyard::{Config, Job, JobContext, JobError, JobSpec, Runtime};
use serde::{Deserialize, Serialize};

/// The allocator `jobyard serve` uses too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// Queue backend: `memory` or `redis` (Redis from `REDIS_URL`).
    #[arg(long, default_value = "memory")]
    backend: String,
    #[arg(long, default_value_t = 200_000)]
    jobs: usize,
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Bytes of each job's payload (JSON; the `noop` kind returns it as its result). The
    /// smallest is 23: `{"source":"throughput"}`.
    #[arg(long, default_value_t = 23)]
    payload_bytes: usize,
    /// Cache backend, where every job's result is stored: `memory` (the default without
    /// `REDIS_URL`), or `hybrid` (the default with it: results also go to Redis).
    #[arg(long, default_value = "memory")]
    cache: String,
    /// Worker slots (JOBYARD_CONCURRENCY; its default).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Handler threads (JOBYARD_WORKER_THREADS; default: the cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Measure submit-to-start latency instead of throughput.
    #[arg(long)]
    latency: bool,
    #[arg(long, default_value_t = 2_000)]
    samples: usize,
    /// Install the server's log subscriber (level from RUST_LOG, default info), as `serve` does.
    #[arg(long)]
    log: bool,
    /// Every job runs under one generous limit (a rate of a billion tokens a second and a
    /// concurrency of a million, never exhausted): what checking and counting a limit costs.
    #[arg(long)]
    limit: bool,
    /// Record metrics into the Prometheus recorder, as `serve` does (without it, the metrics
    /// macros find no recorder and cost next to nothing): what recording costs.
    #[arg(long)]
    metrics: bool,
}

/// Nanoseconds since `EPOCH` at which the last probe started.
static STARTED_NS: AtomicU64 = AtomicU64::new(0);
static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// A job that records when it starts.
#[derive(Serialize, Deserialize)]
struct Probe;

impl Job for Probe {
    const KIND: &'static str = "probe";
    type Output = ();
    async fn run(self, _ctx: JobContext) -> Result<(), JobError> {
        STARTED_NS.store(EPOCH.get().unwrap().elapsed().as_nanos() as u64, Ordering::Release);
        Ok(())
    }
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    if args.log {
        jobyard::telemetry::init(jobyard::config::LogFormat::Text);
    }
    if args.metrics {
        jobyard::telemetry::prometheus::install().ok_or("a metrics recorder is installed")?;
    }
    let mut config = Config { concurrency: args.concurrency, ..Config::default() };
    if let Some(threads) = args.threads {
        config.worker_threads = threads;
    }
    // The run ends when every job is counted succeeded: none may be purged before (nor be
    // refused as queued past the bound).
    config.retention_max_jobs = config.retention_max_jobs.max(args.jobs as u64);
    config.max_queued = config.max_queued.max(args.jobs as u64);
    config.cache_backend = match args.cache.as_str() {
        "memory" => CacheBackendKind::Memory,
        "hybrid" if args.backend == "redis" => CacheBackendKind::Hybrid,
        other => {
            return Err(format!("cache '{other}': memory, or hybrid with --backend redis").into())
        }
    };
    let mut builder = Runtime::builder().with_builtin_kinds().register::<Probe>();
    // The run's end is read from the backend itself (one cheap call per look), not from the
    // runtime's whole stats, whose cost is not the pipeline's.
    let mut backend: Arc<dyn QueueBackend> = Arc::new(MemoryQueue::with_limits(QueueLimits {
        max_queued: config.max_queued,
        retention_max_jobs: config.retention_max_jobs,
    }));
    let mut redis = None;
    match args.backend.as_str() {
        "memory" => builder = builder.queue_backend(backend.clone()),
        "redis" => {
            let url = std::env::var("REDIS_URL").map_err(|_| "--backend redis needs REDIS_URL")?;
            config.redis_url = Some(RedisUrl::parse(&url)?);
            config.queue_backend = QueueBackendKind::Redis;
            config.redis_prefix = format!("throughput-{}", fastrand::u32(..));
            let queue = Arc::new(RedisQueue::connect(&config).await?);
            builder = builder.queue_backend(queue.clone());
            backend = queue.clone();
            redis = Some((queue, Probe::server(&config).await?));
        }
        other => return Err(format!("unknown backend '{other}' (memory or redis)").into()),
    }
    // The hybrid cache connects to Redis: only `connect` starts it.
    let hybrid = config.cache_backend == CacheBackendKind::Hybrid;
    let builder = builder.config(config);
    let runtime = if hybrid { builder.connect().await? } else { builder.start()? };
    if args.latency {
        latency(&runtime, args.samples).await
    } else {
        let before = match &redis {
            Some((queue, server)) => Some((queue.link_stats(), RedisFigures::read(server).await?)),
            None => None,
        };
        let limit = if args.limit {
            let rate = Rate { tokens: 1_000_000_000, per_ms: 1_000 };
            let spec = LimitSpec { rate: Some(rate), concurrency: Some(1_000_000) };
            runtime.client().put_limit("generous", spec).await?;
            Some("generous")
        } else {
            None
        };
        throughput(&runtime, &*backend, args.jobs, args.batch, args.payload_bytes, limit).await?;
        if let (Some((queue, server)), Some((link, figures))) = (&redis, before) {
            let after = RedisFigures::read(server).await?;
            let jobs = args.jobs as f64;
            let trips = queue.link_stats().round_trips - link.round_trips;
            println!("round trips per job: {:.3}", trips as f64 / jobs);
            println!(
                "redis cpu per job: {:.2} µs (scripts: {:.2} µs)",
                (after.cpu_us - figures.cpu_us) / jobs,
                (after.script_us - figures.script_us) / jobs
            );
            println!(
                "redis memory per retained job: {:.0} bytes",
                (after.memory - figures.memory) / jobs
            );
        }
        Ok(())
    }
}

/// A JSON payload of `bytes` bytes (at least the 23 of `{"source":"throughput"}`).
fn payload_of(bytes: usize) -> String {
    const BARE: &str = r#"{"source":"throughput"}"#;
    // `{"source":"throughput","pad":""}` is 33 bytes before the padding.
    match bytes.checked_sub(33) {
        Some(pad) => format!(r#"{{"source":"throughput","pad":"{}"}}"#, "x".repeat(pad)),
        None => BARE.to_owned(),
    }
}

/// Redis's own figures, read over a separate connection.
struct RedisFigures {
    cpu_us: f64,
    script_us: f64,
    memory: f64,
}

impl RedisFigures {
    async fn read(server: &RedisClient) -> Result<Self, Box<dyn std::error::Error>> {
        let info: String = server.cmd(redis::cmd("INFO").arg("all"), true).await?;
        let field = |name: &str| -> f64 {
            info.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0.0)
        };
        let script_us = info
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| l.split(',').find_map(|kv| kv.strip_prefix("usec=")))
            .filter_map(|v| v.parse::<f64>().ok())
            .sum();
        Ok(RedisFigures {
            cpu_us: (field("used_cpu_user") + field("used_cpu_sys")) * 1e6,
            script_us,
            memory: field("used_memory"),
        })
    }
}

impl Probe {
    /// A client of the same Redis, for reading its figures.
    async fn server(config: &Config) -> Result<RedisClient, Box<dyn std::error::Error>> {
        let mut settings = RedisSettings::from_config(config).ok_or("no REDIS_URL")?;
        settings.command_timeout = Duration::from_secs(5);
        let client = RedisClient::new(settings)?;
        client.start().await;
        Ok(client)
    }
}

async fn throughput(
    runtime: &Runtime,
    backend: &dyn QueueBackend,
    jobs: usize,
    batch: usize,
    payload_bytes: usize,
    limit: Option<&str>,
) -> Result<(), Box<dyn std::error::Error>> {
    let payload = json_from_str(&payload_of(payload_bytes))?;
    let limits = limit.map(|name| vec![name.to_owned()]);
    let spec = JobSpec { payload: Some(payload), limits, ..JobSpec::new("noop") };
    let started = Instant::now();
    let mut submitted = 0;
    while submitted < jobs {
        let n = batch.min(jobs - submitted);
        runtime.submit_batch(vec![spec.clone(); n]).await?;
        submitted += n;
    }
    let submit_time = started.elapsed();
    loop {
        let stats = backend.stats().await?;
        let done: u64 = stats.values().map(|q| q.succeeded).sum();
        if done as usize >= jobs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = started.elapsed();
    println!("jobs: {jobs}, batch: {batch}, submitted in {:.3} s", submit_time.as_secs_f64());
    println!("all succeeded after {:.3} s", elapsed.as_secs_f64());
    println!("throughput: {:.0} jobs/s", jobs as f64 / elapsed.as_secs_f64());
    Ok(())
}

async fn latency(runtime: &Runtime, samples: usize) -> Result<(), Box<dyn std::error::Error>> {
    let epoch = *EPOCH.get_or_init(Instant::now);
    let mut micros = Vec::with_capacity(samples);
    for _ in 0..samples {
        STARTED_NS.store(0, Ordering::Release);
        let before = epoch.elapsed().as_nanos() as u64;
        let job = runtime.submit(Probe).await?;
        job.wait().await?;
        let started = STARTED_NS.load(Ordering::Acquire);
        micros.push((started - before) as f64 / 1_000.0);
        // Let the runtime go idle again between samples.
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    micros.sort_by(f64::total_cmp);
    let at = |q: f64| micros[((micros.len() - 1) as f64 * q) as usize];
    println!("samples: {samples}");
    println!(
        "submit-to-start p50: {:.1} µs, p90: {:.1} µs, p99: {:.1} µs, max: {:.1} µs",
        at(0.5),
        at(0.9),
        at(0.99),
        at(1.0)
    );
    println!("latency p50: {:.1} µs", at(0.5));
    Ok(())
}
