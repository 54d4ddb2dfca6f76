//! What Redis spends per job on each hot call of the queue (submit, claim, complete), with
//! fixed-size claims made straight on the Redis queue (no worker pool, whose timing changes the
//! size of each claim from run to run).
//!
//! ```text
//! REDIS_URL=redis://127.0.0.1:6379 cargo run --release --example claim_cost -- --jobs 30000 --slots 100
//! ```
//! Submits `--jobs` `noop` jobs in batches of 1 000 (with `--limit`, under one generous limit), then claims `--slots` at a time and
//! completes each claim's jobs, until all are done. Prints Redis's CPU per job in each phase,
//! from `INFO cpu` read around each call (the `INFO` calls themselves included, the same in
//! every build). Under `valgrind --tool=callgrind redis-server ...` the instructions Redis ran
//! are the same from run to run: how two builds were compared on this noisy machine
//! (`docs/benchmarks.md`).

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use clap::Parser;
use jobyard::config::RedisUrl;
use jobyard::job::record::json_null;
use jobyard::job::spec::{plan, KindLookup, SpecDefaults};
use jobyard::job::JobSpec;
use jobyard::queue::flow::{LimitSpec, Rate};
use jobyard::queue::{Claim, Completion, Outcome, QueueBackend, RedisQueue};
use jobyard::redis::{RedisClient, RedisSettings};
use jobyard::Config;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value_t = 30_000)]
    jobs: usize,
    /// Slots per claim.
    #[arg(long, default_value_t = 100)]
    slots: usize,
    /// Every job under one generous limit (never exhausted): what checking and counting a limit
    /// costs Redis.
    #[arg(long)]
    limit: bool,
}

struct AnyKind;
impl KindLookup for AnyKind {
    fn lookup(&self, kind: &str) -> Option<Arc<str>> {
        Some(Arc::from(kind))
    }
}

/// Redis's CPU so far, in µs.
async fn cpu(server: &RedisClient) -> Result<f64, Box<dyn std::error::Error>> {
    let info: String = server.cmd(redis::cmd("INFO").arg("cpu"), true).await?;
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.strip_prefix(':')))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0.0)
    };
    Ok((field("used_cpu_user") + field("used_cpu_sys")) * 1e6)
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let url = std::env::var("REDIS_URL").map_err(|_| "claim_cost needs REDIS_URL")?;
    let config = Config {
        redis_url: Some(RedisUrl::parse(&url)?),
        redis_prefix: format!("claim-cost-{}", fastrand::u32(..)),
        // Generous: under valgrind, Redis runs fifty times slower.
        queue_timeout: Duration::from_secs(30),
        max_queued: args.jobs as u64,
        ..Config::default()
    };
    let queue = RedisQueue::connect(&config).await?;
    let mut settings = RedisSettings::from_config(&config).ok_or("no REDIS_URL")?;
    settings.command_timeout = Duration::from_secs(30);
    let server = RedisClient::new(settings)?;
    server.start().await;

    let mut spec = JobSpec::new("noop");
    if args.limit {
        let rate = Rate { tokens: 1_000_000_000, per_ms: 1_000 };
        let limit = LimitSpec { rate: Some(rate), concurrency: Some(1_000_000) };
        queue.put_limit("generous", limit, Utc::now()).await?;
        spec.limits = Some(vec!["generous".into()]);
    }
    let before = cpu(&server).await?;
    let mut left = args.jobs;
    while left > 0 {
        let n = left.min(1_000);
        let now = Utc::now();
        let specs = vec![spec.clone(); n];
        queue.submit(plan(specs, true, &AnyKind, &SpecDefaults::default(), now)?, now).await?;
        left -= n;
    }
    let submitted = cpu(&server).await?;
    let claim = Claim {
        workers: (0..args.slots).map(|i| Arc::from(format!("claim-cost/w{i}"))).collect(),
        lease: Duration::from_secs(600),
        kinds: vec![Arc::from("noop")].into(),
    };
    let (mut done, mut claiming, mut completing) = (0, 0.0, 0.0);
    while done < args.jobs {
        let start = cpu(&server).await?;
        let claimed = queue.dequeue(claim.clone(), Utc::now()).await?;
        let claimed_at = cpu(&server).await?;
        if claimed.is_empty() {
            return Err("a claim came back empty before every job was done".into());
        }
        done += claimed.len();
        let ends = claimed
            .iter()
            .map(|c| Completion { lease: c.lease, outcome: Outcome::Succeeded(json_null()) })
            .collect();
        queue.complete(ends, Utc::now()).await?;
        claiming += claimed_at - start;
        completing += cpu(&server).await? - claimed_at;
    }
    let jobs = args.jobs as f64;
    println!(
        "redis cpu per job: submit {:.2} µs, claim {:.2} µs, complete {:.2} µs",
        (submitted - before) / jobs,
        claiming / jobs,
        completing / jobs
    );
    Ok(())
}
