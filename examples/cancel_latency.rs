//! How long a cancel sent to one instance takes to reach a job running on another, over the
//! Redis queue.
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example cancel_latency -- --samples 200
//! ```
//! Two runtimes in this process, each with its own Redis links (as two instances would have):
//! `runner` has the handler of a job that waits for its cancellation token; `canceller` has
//! none, so it never runs the job. Each sample submits a job on `runner`, waits until it runs,
//! cancels it through `canceller`, and measures from just before the cancel call until the
//! handler sees its token fire. The last line is `cancel p99: N ms`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use jobyard::config::{QueueBackendKind, RedisUrl};
use jobyard::queue::RedisQueue;
use jobyard::{Config, Job, JobContext, JobError, JobStatus, Runtime};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 200)]
    samples: usize,
}

/// Where the running job reports that its token fired.
static FIRED: std::sync::OnceLock<mpsc::UnboundedSender<Instant>> = std::sync::OnceLock::new();

/// A job that runs until cancelled.
#[derive(Serialize, Deserialize)]
struct UntilCancelled;

impl Job for UntilCancelled {
    const KIND: &'static str = "until_cancelled";
    type Output = ();
    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        ctx.cancelled().await;
        if let Some(fired) = FIRED.get() {
            let _ = fired.send(Instant::now());
        }
        Err(JobError::Cancelled)
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
    config.redis_prefix = format!("cancel-latency-{}", fastrand::u32(..));
    let (fired, mut fires) = mpsc::unbounded_channel();
    FIRED.set(fired).map_err(|_| "set twice")?;

    let runner = Runtime::builder()
        .config(config.clone())
        .queue_backend(Arc::new(RedisQueue::connect(&config).await?))
        .register::<UntilCancelled>()
        .start()?;
    let canceller = Runtime::builder()
        .config(config.clone())
        .queue_backend(Arc::new(RedisQueue::connect(&config).await?))
        .start()?;

    let mut millis = Vec::with_capacity(args.samples);
    for _ in 0..args.samples {
        let job = runner.submit(UntilCancelled).await?;
        while runner.status(job.id()).await?.status != JobStatus::Running {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let sent = Instant::now();
        canceller.cancel(job.id()).await?;
        let seen = fires.recv().await.ok_or("the job never saw its cancel")?;
        millis.push((seen - sent).as_secs_f64() * 1_000.0);
        let _ = job.wait().await;
    }
    millis.sort_by(f64::total_cmp);
    let at = |q: f64| millis[((millis.len() - 1) as f64 * q) as usize];
    println!("samples: {}", millis.len());
    println!(
        "cancel to another instance's running job: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        at(0.5),
        at(0.99),
        at(1.0)
    );
    println!("cancel p99: {:.2} ms", at(0.99));
    runner.shutdown().await;
    canceller.shutdown().await;
    Ok(())
}
