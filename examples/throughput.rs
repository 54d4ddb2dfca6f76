//! End-to-end throughput and latency of the whole actor pipeline, in process.
//!
//! ```text
//! cargo run --release --example throughput -- --backend memory --jobs 200000
//! cargo run --release --example throughput -- --backend memory --latency
//! ```
//! Throughput: submits `--jobs` `noop` jobs in batches of `--batch` through the runtime's
//! client, and measures from the first submit until the last job has succeeded. Latency: on an
//! idle runtime, measures from just before `submit` until the handler starts, `--samples` times.
//! The last line is `throughput: N jobs/s` (or `latency p50: ...`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Parser;
use jobyard::job::record::json_from_str;
use jobyard::{Config, Job, JobContext, JobError, JobSpec, Runtime};
use serde::{Deserialize, Serialize};

#[derive(Parser)]
struct Args {
    /// Queue backend: only `memory` is available in this build.
    #[arg(long, default_value = "memory")]
    backend: String,
    #[arg(long, default_value_t = 200_000)]
    jobs: usize,
    #[arg(long, default_value_t = 1_000)]
    batch: usize,
    /// Worker slots (JOBYARD_CONCURRENCY; its default).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Measure submit-to-start latency instead of throughput.
    #[arg(long)]
    latency: bool,
    #[arg(long, default_value_t = 2_000)]
    samples: usize,
    /// Install the server's log subscriber (level from RUST_LOG, default info), as `serve` does.
    #[arg(long)]
    log: bool,
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
    if args.backend != "memory" {
        return Err(format!(
            "backend '{}' is not available in this build (use memory)",
            args.backend
        )
        .into());
    }
    let config = Config { concurrency: args.concurrency, ..Config::default() };
    let runtime =
        Runtime::builder().config(config).with_builtin_kinds().register::<Probe>().start()?;
    if args.latency {
        latency(&runtime, args.samples).await
    } else {
        throughput(&runtime, args.jobs, args.batch).await
    }
}

async fn throughput(
    runtime: &Runtime,
    jobs: usize,
    batch: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let payload = json_from_str(r#"{"source":"throughput"}"#)?;
    let spec = JobSpec { payload: Some(payload), ..JobSpec::new("noop") };
    let started = Instant::now();
    let mut submitted = 0;
    while submitted < jobs {
        let n = batch.min(jobs - submitted);
        runtime.submit_batch(vec![spec.clone(); n]).await?;
        submitted += n;
    }
    let submit_time = started.elapsed();
    loop {
        let stats = runtime.stats().await?;
        let done: u64 = stats.queues.values().map(|q| q.succeeded).sum();
        if done as usize >= jobs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
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
