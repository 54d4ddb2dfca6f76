//! Soak and chaos: a steady load of jobs against real `jobyard serve` processes while faults
//! are injected, then a check that every acknowledged job ran exactly once. What it does, the
//! faults, how to read its table and the figures of a ten-minute run: `docs/reliability.md`.
//!
//! ```text
//! cargo build --release --bin jobyard --example chaos
//! target/release/examples/chaos --backend redis --instances 3 --duration 600s --rate 100 --fault-every 30s
//! target/release/examples/chaos --backend memory --duration 120s --rate 200
//! ```
//! It starts everything itself, on loopback only: a counting HTTP server (in this process) that
//! the `http` jobs call, one private `redis-server` with AOF (`--backend redis`), and the
//! `jobyard` processes (`--binary`, default `target/release/jobyard`: build it first). Every
//! process it started is killed when it ends, also on Ctrl-C, SIGTERM or a panic. Logs, events
//! and the jobs that broke a rule (with their records) go to `--out` (default
//! `target/chaos/<unix time>`). Exits 1 when a job was lost or ran twice unexplained (or another
//! rule broke: see the verdict), 2 when the harness could not run.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

#[allow(dead_code)]
#[path = "../tests/api/redis_support.rs"]
mod redis_support;

#[allow(dead_code)]
#[path = "../tests/support/chaos_harness.rs"]
mod chaos_harness;

use chaos_harness::{parse_duration, Backend, Fault, Load, Options};

/// The allocator `jobyard serve` uses too.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(about = "Soak and chaos harness for jobyard (see docs/reliability.md)")]
struct Args {
    /// Queue backend: `memory` (one instance, only the fill-queue fault) or `redis`.
    #[arg(long, default_value = "memory")]
    backend: String,
    /// Number of `jobyard serve` processes (1 to 3; 1 on memory).
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// How long the load runs: 600s, 10m, 90s...
    #[arg(long, default_value = "600s", value_parser = parse_duration)]
    duration: std::time::Duration,
    /// Jobs per second, whatever the answers (the default load: 100).
    #[arg(long, conflicts_with = "submitters")]
    rate: Option<f64>,
    /// Instead of a rate: this many submitters, each sending its next submit when answered.
    #[arg(long)]
    submitters: Option<usize>,
    /// Share of submits that are batches of 2 to 5 jobs.
    #[arg(long, default_value_t = 0.2)]
    batch_share: f64,
    /// One fault every this long, rotating.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    fault_every: std::time::Duration,
    /// The rotation: kill-instance, kill-redis, freeze-redis, fill-queue (comma-separated);
    /// `none` for a plain soak. Default: all four on redis, fill-queue on memory.
    #[arg(long, value_delimiter = ',')]
    faults: Option<Vec<String>>,
    /// How long freeze-redis keeps Redis stopped (SIGSTOP).
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    freeze: std::time::Duration,
    /// How long kill-redis keeps Redis down before restarting it.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    redis_down: std::time::Duration,
    /// The jobyard binary (`cargo build --release --bin jobyard` first).
    #[arg(long, default_value = "target/release/jobyard")]
    binary: PathBuf,
    /// How long each job runs (the counting server holds its request this long).
    #[arg(long, default_value_t = 100)]
    job_ms: u64,
    /// JOBYARD_LEASE_MS of the instances (the default).
    #[arg(long, default_value_t = 30_000)]
    lease_ms: u64,
    /// JOBYARD_CONCURRENCY of the instances (the default).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// JOBYARD_MAX_QUEUED of the instances (per queue: the load's queue too).
    #[arg(long, default_value_t = 500)]
    max_queued: usize,
    /// Delay of the jobs that fill the queue; once due they run and the queue drains itself.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    fill_delay: std::time::Duration,
    /// JOBYARD_QUEUE_TIMEOUT_MS of the instances (the default).
    #[arg(long, default_value_t = 500)]
    queue_timeout_ms: u64,
    /// How long the end waits for every job to finish (default: the lease plus 60 s).
    #[arg(long, value_parser = parse_duration)]
    drain_timeout: Option<std::time::Duration>,
    /// How long a fault may take to recover before it counts as not recovered.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    recovery_timeout: std::time::Duration,
    /// Where logs, events and the report go.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn options(args: Args) -> Result<Options, String> {
    let backend = match args.backend.as_str() {
        "memory" => Backend::Memory,
        "redis" => Backend::Redis,
        other => return Err(format!("--backend must be memory or redis, not {other}")),
    };
    let faults = match &args.faults {
        Some(names) if names.iter().any(|n| n == "none") => Vec::new(),
        Some(names) => names.iter().map(|n| Fault::parse(n)).collect::<Result<_, _>>()?,
        None if backend == Backend::Redis => Fault::ALL.to_vec(),
        None => vec![Fault::FillQueue],
    };
    let load = match (args.rate, args.submitters) {
        (_, Some(n)) => Load::Submitters(n),
        (Some(rate), None) => Load::Rate(rate),
        (None, None) => Load::Rate(100.0),
    };
    Ok(Options {
        binary: args.binary,
        backend,
        instances: args.instances,
        duration: args.duration,
        load,
        batch_share: args.batch_share,
        fault_every: args.fault_every,
        faults,
        complete_rotation: false,
        freeze: args.freeze,
        redis_down: args.redis_down,
        job_ms: args.job_ms,
        lease_ms: args.lease_ms,
        concurrency: args.concurrency,
        max_queued: args.max_queued,
        fill_delay: args.fill_delay,
        queue_timeout_ms: args.queue_timeout_ms,
        drain_timeout: args
            .drain_timeout
            .unwrap_or(std::time::Duration::from_millis(args.lease_ms + 60_000)),
        recovery_timeout: args.recovery_timeout,
        out_dir: args.out.unwrap_or_else(chaos_harness::default_out_dir),
        progress: true,
    })
}

/// Ctrl-C or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[actix::main]
async fn main() -> ExitCode {
    let options = match options(Args::parse()) {
        Ok(options) => options,
        Err(err) => {
            eprintln!("chaos: {err}");
            return ExitCode::from(2);
        }
    };
    let out_dir = options.out_dir.clone();
    // Dropping the run (on a signal) drops the guards of every process it started.
    let outcome = tokio::select! {
        report = chaos_harness::run(options) => Some(report),
        _ = interrupted() => None,
    };
    match outcome {
        None => {
            eprintln!("chaos: interrupted; every process it started was killed");
            ExitCode::from(130)
        }
        Some(Err(err)) => {
            eprintln!("chaos: {err} (logs in {})", out_dir.display());
            ExitCode::from(2)
        }
        Some(Ok(report)) => {
            println!("\n{}", report.table());
            println!("logs, events and problem jobs: {}", out_dir.display());
            if report.ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
    }
}
