//! CPU-bound handlers and the runtime: jobs that each burn 200 ms of CPU without yielding,
//! submitted one by one through the embedding API, while HTTP clients keep submitting and
//! reading jobs.
//!
//! ```text
//! cargo run --release --example cpu_jobs -- --jobs 40 --cpu-ms 200
//! ```
//! A server on the in-memory backend on a loopback port, in this process. The handler does a
//! fixed amount of work, calibrated at start to take `--cpu-ms` of one core, and never yields:
//! the handler that forgot `spawn_blocking`. Meanwhile `--clients` HTTP clients each submit a
//! `noop` job and read its status every `--pace-ms`. Prints how long the submits took, when the
//! last job finished (from the first submit), the CPU time the process used over that span
//! (about 2 s of CPU per second of wall time when two cores work), and the latency of the HTTP
//! calls made meanwhile.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use jobyard::startup::Server;
use jobyard::{Config, Job, JobContext, JobError, Runtime};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
struct Args {
    /// CPU-bound jobs to submit, one by one.
    #[arg(long, default_value_t = 40)]
    jobs: usize,
    /// CPU each job burns, in milliseconds of one core.
    #[arg(long, default_value_t = 200)]
    cpu_ms: u64,
    /// Handler threads (JOBYARD_WORKER_THREADS; default: the cores).
    #[arg(long)]
    threads: Option<usize>,
    /// HTTP clients submitting and reading jobs while the CPU-bound jobs run.
    #[arg(long, default_value_t = 2)]
    clients: usize,
    /// Each client's pause between a submit and the next.
    #[arg(long, default_value_t = 10)]
    pace_ms: u64,
}

/// How many jobs each handler thread ran.
static PER_THREAD: std::sync::Mutex<Vec<(std::thread::ThreadId, usize)>> =
    std::sync::Mutex::new(Vec::new());

/// Spins of [`spin`] that take one millisecond of one core, measured at start.
static SPINS_PER_MS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();

fn spin(count: u64) -> u64 {
    let mut x = 0u64;
    for i in 0..count {
        x = std::hint::black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(i));
    }
    x
}

/// The median of a few timed runs, on an idle process.
fn calibrate() -> u64 {
    let probe = 2_000_000;
    let mut per_ms: Vec<u64> = (0..7)
        .map(|_| {
            let start = Instant::now();
            spin(probe);
            (probe as f64 / (start.elapsed().as_secs_f64() * 1_000.0)) as u64
        })
        .collect();
    per_ms.sort_unstable();
    per_ms[per_ms.len() / 2]
}

/// Burns `ms` of CPU without yielding.
#[derive(Serialize, Deserialize)]
struct Burn {
    ms: u64,
}

impl Job for Burn {
    const KIND: &'static str = "burn";
    type Output = u64;
    async fn run(self, _ctx: JobContext) -> Result<u64, JobError> {
        let spun = spin(SPINS_PER_MS.get().copied().unwrap_or(1) * self.ms);
        let me = std::thread::current().id();
        let mut per_thread = PER_THREAD.lock().unwrap_or_else(|e| e.into_inner());
        match per_thread.iter_mut().find(|(id, _)| *id == me) {
            Some((_, count)) => *count += 1,
            None => per_thread.push((me, 1)),
        }
        Ok(spun)
    }
}

/// CPU time this process has used (user and system), from `/proc/self/stat`.
fn cpu_time() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces) start at the last ')'.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // The kernel's USER_HZ is 100 on every Linux this runs on.
    Some(Duration::from_millis(ticks * 10))
}

#[derive(Default)]
struct Latencies {
    submits: Vec<Duration>,
    reads: Vec<Duration>,
    errors: usize,
}

async fn client(
    base: String,
    pace: Duration,
    stop: Rc<RefCell<bool>>,
    out: Rc<RefCell<Latencies>>,
) {
    let http = awc::Client::builder().timeout(Duration::from_secs(30)).finish();
    while !*stop.borrow() {
        let start = Instant::now();
        let submitted =
            http.post(format!("{base}/v1/jobs")).send_json(&json!({"kind": "noop"})).await;
        let id = match submitted {
            Ok(mut resp) if resp.status().is_success() => {
                let body: Value = resp.json().await.unwrap_or_default();
                out.borrow_mut().submits.push(start.elapsed());
                body["id"].as_str().map(str::to_owned)
            }
            _ => None,
        };
        let Some(id) = id else {
            out.borrow_mut().errors += 1;
            continue;
        };
        let start = Instant::now();
        match http.get(format!("{base}/v1/jobs/{id}")).send().await {
            Ok(mut resp) if resp.status().is_success() => {
                let _ = resp.body().await;
                out.borrow_mut().reads.push(start.elapsed());
            }
            _ => out.borrow_mut().errors += 1,
        }
        actix_rt::time::sleep(pace).await;
    }
}

fn summary(mut samples: Vec<Duration>) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
    format!(
        "{} calls, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        samples.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    SPINS_PER_MS.set(calibrate()).map_err(|_| "calibrated twice")?;

    let mut config =
        Config::from_lookup(|name| (name == "JOBYARD_ADDR").then(|| "127.0.0.1:0".to_owned()))?;
    if let Some(threads) = args.threads {
        config.worker_threads = threads;
    }
    let threads = config.worker_threads;
    let runtime = Runtime::builder().with_builtin_kinds().register::<Burn>();
    let server = Server::build_with(config, runtime).await?;
    let base = format!("http://127.0.0.1:{}", server.port());
    let runtime = server.runtime().clone();
    let trigger = server.shutdown_trigger();
    let serving = actix_rt::spawn(server.run_until_stopped());

    let stop = Rc::new(RefCell::new(false));
    let latencies = Rc::new(RefCell::new(Latencies::default()));
    let pace = Duration::from_millis(args.pace_ms);
    let clients: Vec<_> = (0..args.clients)
        .map(|_| actix_rt::spawn(client(base.clone(), pace, stop.clone(), latencies.clone())))
        .collect();
    // The clients' first calls warm their connections before anything is measured.
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    *latencies.borrow_mut() = Latencies::default();

    let cpu_before = cpu_time();
    let first = Instant::now();
    let mut handles = Vec::with_capacity(args.jobs);
    for _ in 0..args.jobs {
        handles.push(runtime.submit(Burn { ms: args.cpu_ms }).send().await?);
    }
    let submitted = first.elapsed();
    for handle in &handles {
        handle.wait().await?;
    }
    let finished = first.elapsed();
    let cpu = cpu_time().zip(cpu_before).map(|(after, before)| after - before);
    *stop.borrow_mut() = true;
    for c in clients {
        let _ = c.await;
    }

    println!(
        "{} jobs of {} ms CPU each, {threads} handler thread(s), {} HTTP client(s) every {} ms",
        args.jobs, args.cpu_ms, args.clients, args.pace_ms
    );
    println!("submitted one by one in {:.1} ms", submitted.as_secs_f64() * 1e3);
    println!("all finished {:.0} ms after the first submit", finished.as_secs_f64() * 1e3);
    if let Some(cpu) = cpu {
        println!(
            "process CPU meanwhile: {:.2} s over {:.2} s ({:.2} cores busy)",
            cpu.as_secs_f64(),
            finished.as_secs_f64(),
            cpu.as_secs_f64() / finished.as_secs_f64()
        );
    }
    let counts: Vec<String> = {
        let per_thread = PER_THREAD.lock().unwrap_or_else(|e| e.into_inner());
        per_thread.iter().map(|(_, n)| n.to_string()).collect()
    };
    println!("jobs per handler thread: {}", counts.join(" / "));
    let latencies = std::mem::take(&mut *latencies.borrow_mut());
    println!("HTTP submits meanwhile: {}", summary(latencies.submits));
    println!("HTTP status reads meanwhile: {}", summary(latencies.reads));
    println!("HTTP errors meanwhile: {}", latencies.errors);
    trigger.trigger();
    serving.await??;
    Ok(())
}
