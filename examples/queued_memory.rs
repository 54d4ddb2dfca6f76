//! Resident memory of queued jobs in the in-memory backend.
//!
//! ```text
//! cargo run --release --example queued_memory -- --jobs 1000000
//! ```
//! Submits `--jobs` `noop` jobs with 100-byte payloads in batches (validated exactly as the
//! runtime does) and reports the process's resident set size before and after.

use std::sync::Arc;

use chrono::Utc;
use clap::Parser;
use jobyard::job::record::json_from_str;
use jobyard::job::spec::{plan, SpecDefaults};
use jobyard::job::{JobSpec, Registry};
use jobyard::queue::{MemoryQueue, QueueBackend};

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 1_000_000)]
    jobs: usize,
}

/// Resident set size in bytes, from /proc.
fn rss_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let mut registry = Registry::new();
    jobyard::kinds::register_builtins(&mut registry);
    let queue: Arc<dyn QueueBackend> = Arc::new(MemoryQueue::new());
    let before = rss_bytes();
    let defaults = SpecDefaults::default();
    let mut submitted = 0;
    while submitted < args.jobs {
        let n = 1_000.min(args.jobs - submitted);
        let specs: Vec<JobSpec> = (submitted..submitted + n)
            .map(|i| {
                // 100 bytes of JSON: {"n":"<10 digits>","pad":"<73 x>"}
                let payload = format!(r#"{{"n":"{i:010}","pad":"{}"}}"#, "x".repeat(73));
                assert_eq!(payload.len(), 100);
                JobSpec { payload: Some(json_from_str(&payload).unwrap()), ..JobSpec::new("noop") }
            })
            .collect();
        let jobs = plan(specs, true, &registry, &defaults, Utc::now())?;
        queue.submit(jobs, Utc::now()).await?;
        submitted += n;
    }
    let after = rss_bytes();
    let stats = queue.stats().await?;
    let queued: u64 = stats.values().map(|c| c.queued).sum();
    println!("queued jobs: {queued}");
    println!(
        "rss before: {:.1} MiB, after: {:.1} MiB",
        before as f64 / 1048576.0,
        after as f64 / 1048576.0
    );
    println!("per job: {:.0} bytes", (after - before) as f64 / queued as f64);
    println!("resident: {:.2} GiB", after as f64 / 1073741824.0);
    Ok(())
}
