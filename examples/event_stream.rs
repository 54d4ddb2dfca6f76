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
//!   reader received: the job events, those telling a job's end (every job's must arrive),
//!   the `reset`s (a reader skipped ahead), and how late each event arrived after the change
//!   (p50, p99).
//! - `cost`: runs `--jobs` `noop` jobs as fast as they go (submitted through the runtime's
//!   client in batches of 1 000), alternately with no reader and with one reader, `--rounds`
//!   times each, and prints the median throughput of each and their ratio. The reader runs in
//!   this process, on the server's cores: by default it only counts the events it receives
//!   (what a dashboard in a browser elsewhere costs this machine, and a bit more); with
//!   `--parse` it also splits and reads every event as the `rate` reader does, which a page
//!   does in the browser, not on the server. `--query queue=none` gives the reader a filter
//!   no job passes: what the hub alone costs the pipeline, with nothing written.

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
        /// The reader splits and reads every event (as the `rate` reader does) rather than
        /// only counting them.
        #[arg(long)]
        parse: bool,
        /// The reader's filters, as `GET /v1/events` takes them (`queue=none` admits no job
        /// event: what the hub costs the pipeline without anything written).
        #[arg(long, default_value = "")]
        query: String,
    },
}

/// What the reader counted.
#[derive(Default)]
struct Counts {
    jobs: AtomicU64,
    /// Job events saying a job succeeded.
    finished: AtomicU64,
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
        What::Cost { jobs, rounds, parse, query } => {
            let url = format!("{base}/v1/events?{query}");
            cost(&url, &runtime, jobs, rounds, parse).await
        }
    }
    trigger.trigger();
    let _ = serving.await;
}

type Body = Pin<Box<dyn Stream<Item = Result<Bytes, awc::error::PayloadError>>>>;

/// A reader running on its own thread; dropping it (or [`Reader::stop`]) ends it.
struct Reader {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Reader {
    fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Opens `url` (`/v1/events` and its filters) and counts what arrives until the reader is
/// stopped: every event split out and read (`parse`), or only counted. The reader has its own
/// thread, as a dashboard would be elsewhere: it does not share the submitting task's.
async fn read(url: &str, counts: Arc<Counts>, parse: bool) -> Reader {
    let url = url.to_owned();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (opened, open) = tokio::sync::oneshot::channel::<()>();
    let thread = std::thread::spawn(move || {
        actix_rt::System::new().block_on(async move {
            let http = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
            let response = http.get(url).send().await.expect("stream opens");
            let _ = opened.send(());
            let body: Body = Box::pin(response);
            let reading = async move {
                if parse {
                    split(body, counts).await
                } else {
                    count(body, counts).await
                }
            };
            tokio::select! {
                _ = reading => {}
                _ = stopped => {}
            }
        })
    });
    open.await.expect("the reader opened the stream");
    Reader { stop: Some(stop), thread: Some(thread) }
}

/// Counts the job events and resets in what arrives, reading nothing else.
async fn count(mut body: Body, counts: Arc<Counts>) {
    const LINE: &str = "event: ";
    // The end of the previous piece, too short to hold a whole `event: x`: an event line
    // split across two pieces is counted once.
    let mut carry: Vec<u8> = Vec::new();
    while let Some(Ok(bytes)) = body.next().await {
        carry.extend_from_slice(&bytes);
        let text = String::from_utf8_lossy(&carry);
        let (mut jobs, mut resets) = (0, 0);
        for (at, _) in text.match_indices(LINE) {
            match text.as_bytes().get(at + LINE.len()) {
                Some(b'j') => jobs += 1,
                Some(b'r') => resets += 1,
                _ => {}
            }
        }
        counts.jobs.fetch_add(jobs, Ordering::Relaxed);
        counts.resets.fetch_add(resets, Ordering::Relaxed);
        let keep = carry.len().saturating_sub(LINE.len());
        carry.drain(..keep);
    }
}

/// Splits what arrives into events and reads each (its lateness, for one in 64).
async fn split(mut body: Body, counts: Arc<Counts>) {
    {
        let mut buffer = String::new();
        let finished = "\"to\":\"succeeded\"";
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
                if block.contains(finished) {
                    counts.finished.fetch_add(1, Ordering::Relaxed);
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
    }
}

async fn rate(base: &str, runtime: &Runtime, changes: u64, secs: u64) {
    let counts = Arc::new(Counts::default());
    let reader = read(&format!("{base}/v1/events"), counts.clone(), true).await;
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
    // Until every job's end arrived, or two seconds without progress. (A busy reader is sent
    // each job's changes within 25 ms as one event: fewer than three a job arrive then.)
    let expected = submitted * 3;
    let mut last = (counts.jobs.load(Ordering::Relaxed), Instant::now());
    while counts.finished.load(Ordering::Relaxed) < submitted
        && last.1.elapsed() < Duration::from_secs(2)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = counts.jobs.load(Ordering::Relaxed);
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
    reader.stop();
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
    println!(
        "job events received: {received}, of which {} said a job succeeded; resets: {}",
        counts.finished.load(Ordering::Relaxed),
        counts.resets.load(Ordering::Relaxed)
    );
    println!(
        "lateness p50: {} µs, p99: {} µs, max: {} µs",
        pct(0.5),
        pct(0.99),
        late.last().unwrap_or(&0)
    );
}

/// This process's CPU time so far (user and system, every thread), from `/proc/self/stat`.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command's closing parenthesis; utime and stime are the 12th and
    // 13th of them, in clock ticks (100 a second on Linux).
    let fields: Vec<&str> =
        stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("").split_whitespace().collect();
    let ticks: u64 = [11, 12].iter().filter_map(|&i| fields.get(i)?.parse::<u64>().ok()).sum();
    Duration::from_millis(ticks * 10)
}

/// A run's throughput (jobs a second) and CPU time per job (µs, the whole process).
async fn run_jobs(runtime: &Runtime, jobs: usize) -> (f64, f64) {
    let client = runtime.client();
    let start = Instant::now();
    let cpu = cpu_time();
    for chunk in 0..jobs.div_ceil(1_000) {
        let n = 1_000.min(jobs - chunk * 1_000);
        let specs: Vec<JobSpec> = (0..n).map(|_| JobSpec::new("noop")).collect();
        client.submit_batch(specs).await.expect("submit");
    }
    // Done when nothing is left to run (not when `succeeded` grew by `jobs`: retention caps
    // the jobs kept, so after a few runs that count stops growing).
    loop {
        let stats = client.stats().await.expect("stats");
        let left: u64 = stats.queues.values().map(|c| c.queued + c.running).sum();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let per_job = (cpu_time() - cpu).as_secs_f64() * 1e6 / jobs as f64;
    (jobs as f64 / start.elapsed().as_secs_f64(), per_job)
}

/// Waits until the jobs of earlier runs beyond the retention bound are gone: their removal
/// would otherwise fall in the next run, whichever it is.
async fn settle(runtime: &Runtime, keep: u64) {
    loop {
        let stats = runtime.client().stats().await.expect("stats");
        let kept = |c: &jobyard::queue::StateCounts| c.succeeded + c.failed + c.cancelled;
        if stats.queues.values().all(|c| kept(c) <= keep) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn cost(url: &str, runtime: &Runtime, jobs: usize, rounds: usize, parse: bool) {
    let keep = runtime.config().retention_max_jobs;
    // A first run warms the allocator and the store.
    run_jobs(runtime, jobs / 4).await;
    let (mut alone, mut watched) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        // One order then the other, so that neither run always follows the other.
        let mut a = (0.0, 0.0);
        let mut w = (0.0, 0.0);
        let counts = Arc::new(Counts::default());
        for watched_run in [round % 2 == 1, round % 2 == 0] {
            settle(runtime, keep).await;
            if watched_run {
                let reader = read(url, counts.clone(), parse).await;
                w = run_jobs(runtime, jobs).await;
                reader.stop();
            } else {
                // Events are kept for a while after the last reader left (for readers that
                // reconnect): the run without a reader starts once the hub is idle.
                while runtime.client().events().active() {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                a = run_jobs(runtime, jobs).await;
            }
        }
        println!(
            "round {}: no reader {:.0} jobs/s ({:.1} µs CPU a job), one reader {:.0} jobs/s ({:.1} µs) ({} job events read, {} resets)",
            round + 1,
            a.0,
            a.1,
            w.0,
            w.1,
            counts.jobs.load(Ordering::Relaxed),
            counts.resets.load(Ordering::Relaxed)
        );
        alone.push(a);
        watched.push(w);
    }
    let median = |v: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64| {
        let mut v: Vec<f64> = v.iter().map(pick).collect();
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    let (a, w) = (median(&alone, |r| r.0), median(&watched, |r| r.0));
    let (ca, cw) = (median(&alone, |r| r.1), median(&watched, |r| r.1));
    println!("median: no reader {a:.0} jobs/s, one reader {w:.0} jobs/s, ratio {:.3}", w / a);
    println!("median CPU a job: no reader {ca:.1} µs, one reader {cw:.1} µs, ratio {:.3}", ca / cw);
}
