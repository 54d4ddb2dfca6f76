//! `/metrics`: the Prometheus recorder the server installs for the `metrics` crate, and what a
//! scrape adds to it. Counters and histograms of what passes (jobs, requests, cache calls) are
//! recorded where it passes; what is a state (queue depth, workers, the cache's and Redis's
//! own counters) is read from the runtime's stats at each scrape.

use std::collections::BTreeSet;
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::runtime::Stats;
use crate::tools::manage::ToolView;

/// Histogram buckets, in seconds: from a cache hit (tens of µs) to a long job (10 min).
const BUCKETS: [f64; 18] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 10.0, 60.0, 600.0,
];

/// How often histogram samples are folded into their buckets. Until then each sample is kept:
/// this bounds that memory whether or not anything scrapes.
const UPKEEP: Duration = Duration::from_secs(5);

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the Prometheus recorder as the process's `metrics` recorder, once; `None` when the
/// program installed another one first (its recorder then gets every metric, and `/metrics`
/// says so).
pub fn install() -> Option<PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &BUCKETS)
                .expect("the buckets are not empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).ok()?;
            describe();
            let upkeep = handle.clone();
            std::thread::Builder::new()
                .name("jobyard-metrics".into())
                .spawn(move || loop {
                    std::thread::sleep(UPKEEP);
                    upkeep.run_upkeep();
                })
                .ok()?;
            Some(handle)
        })
        .clone()
}

/// The `# HELP` of each family.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    let per_kind_and_queue = [
        ("jobyard_jobs_submitted_total", "Jobs created by submits to this instance"),
        ("jobyard_jobs_started_total", "Attempts started on this instance"),
        ("jobyard_jobs_succeeded_total", "Attempts that succeeded on this instance"),
        ("jobyard_jobs_failed_total", "Attempts that failed for good on this instance"),
        ("jobyard_jobs_retried_total", "Attempts that failed on this instance, a retry scheduled"),
        (
            "jobyard_jobs_cancelled_total",
            "Jobs cancelled through this instance before running, and attempts ending cancelled here",
        ),
    ];
    for (name, help) in per_kind_and_queue {
        describe_counter!(name, Unit::Count, help);
    }
    describe_histogram!("jobyard_job_run_seconds", Unit::Seconds, "How long attempts ran, by kind");
    describe_histogram!(
        "jobyard_job_queue_wait_seconds",
        Unit::Seconds,
        "How long jobs waited to start once due (their run_at, else their creation), by kind"
    );
    describe_gauge!("jobyard_queue_jobs", "Jobs per queue and state, in the shared store");
    describe_gauge!("jobyard_queue_throttled_jobs", "Queued jobs that limits hold back now");
    describe_gauge!("jobyard_workers_busy", "Worker slots of this instance running an attempt");
    describe_gauge!("jobyard_workers_total", "Worker slots of this instance");
    describe_counter!("jobyard_takeovers_total", "Running attempts taken from their workers");
    describe_counter!("jobyard_cache_hits_total", "Cache reads answered, by layer");
    describe_counter!("jobyard_cache_misses_total", "Cache reads not answered, by layer");
    describe_counter!("jobyard_cache_evictions_total", "Entries pushed out of memory by its bound");
    describe_counter!(
        "jobyard_cache_fallbacks_total",
        "Cache calls served from memory as Redis was away"
    );
    describe_counter!(
        "jobyard_cache_corrupt_total",
        "Undecodable values found in Redis (read as misses)"
    );
    describe_gauge!("jobyard_cache_entries", "Entries in the memory layer");
    describe_gauge!("jobyard_cache_bytes", "Approximate bytes in the memory layer");
    describe_histogram!("jobyard_cache_operation_seconds", Unit::Seconds, "Cache reads and writes");
    describe_gauge!("jobyard_redis_up", "1 while the cache's Redis link is up");
    describe_gauge!("jobyard_redis_rtt_seconds", "Round trip of the last health PING to Redis");
    describe_counter!("jobyard_redis_errors_total", "Calls that failed on the Redis link");
    describe_counter!("jobyard_redis_reconnects_total", "Times the Redis link was made again");
    describe_counter!("jobyard_redis_round_trips_total", "Round trips made to Redis");
    describe_counter!(
        "jobyard_tool_upstream_requests_total",
        "Upstream requests of each tool by outcome (ok, not_modified, rate_limited, error), all instances"
    );
    describe_gauge!(
        "jobyard_tool_rate_limit_remaining",
        "The upstream's remaining budget, as last seen"
    );
    describe_counter!(
        "jobyard_tool_reads_total",
        "Reads of a tool's data served by this instance: fresh, stale (a refresh triggered), miss"
    );
    describe_histogram!(
        "jobyard_tool_refresh_seconds",
        Unit::Seconds,
        "Upstream requests of refreshes"
    );
    describe_counter!(
        "jobyard_http_requests_total",
        "HTTP requests, by route template, method and status"
    );
    describe_histogram!(
        "jobyard_http_request_duration_seconds",
        Unit::Seconds,
        "HTTP request latency, by route template and method"
    );
}

/// Queues seen at earlier scrapes: a queue gone from the stats reads 0, not its last depth.
static QUEUES_SEEN: Mutex<BTreeSet<String>> = Mutex::new(BTreeSet::new());

/// The text of a scrape: `stats` and the tools' states set as gauges and counters, then
/// everything rendered.
pub fn render(handle: &PrometheusHandle, stats: &Stats, tools: &[ToolView]) -> String {
    record_states(stats);
    record_tools(tools);
    handle.render()
}

/// Each tool's upstream requests by outcome and its remaining budget (shared by every
/// instance: read from the store), and what this instance served of it.
fn record_tools(tools: &[ToolView]) {
    for view in tools {
        let tool = view.tool.name.clone();
        let requests = &view.state.shared.requests;
        for (outcome, count) in [
            ("ok", requests.ok),
            ("not_modified", requests.not_modified),
            ("rate_limited", requests.rate_limited),
            ("error", requests.errors),
        ] {
            counter!("jobyard_tool_upstream_requests_total", "tool" => tool.clone(), "outcome" => outcome)
                .absolute(count);
        }
        if let Some(remaining) = view.state.shared.rate_limit.remaining {
            gauge!("jobyard_tool_rate_limit_remaining", "tool" => tool.clone())
                .set(remaining as f64);
        }
        let served = &view.state.served;
        for (freshness, count) in
            [("fresh", served.fresh), ("stale", served.stale), ("miss", served.misses)]
        {
            counter!("jobyard_tool_reads_total", "tool" => tool.clone(), "served" => freshness)
                .absolute(count);
        }
    }
}

fn record_states(stats: &Stats) {
    const STATES: [&str; 7] =
        ["waiting", "scheduled", "queued", "running", "succeeded", "failed", "cancelled"];
    let mut seen = QUEUES_SEEN.lock().unwrap_or_else(|e| e.into_inner());
    for gone in seen.iter().filter(|q| !stats.queues.contains_key(*q)) {
        for state in STATES {
            gauge!("jobyard_queue_jobs", "queue" => gone.clone(), "state" => state).set(0.0);
        }
        gauge!("jobyard_queue_throttled_jobs", "queue" => gone.clone()).set(0.0);
    }
    seen.clear();
    for (queue, counts) in &stats.queues {
        seen.insert(queue.clone());
        let by_state = [
            counts.waiting,
            counts.scheduled,
            counts.queued,
            counts.running,
            counts.succeeded,
            counts.failed,
            counts.cancelled,
        ];
        for (state, count) in STATES.into_iter().zip(by_state) {
            gauge!("jobyard_queue_jobs", "queue" => queue.clone(), "state" => state)
                .set(count as f64);
        }
        gauge!("jobyard_queue_throttled_jobs", "queue" => queue.clone())
            .set(counts.throttled as f64);
    }
    drop(seen);
    gauge!("jobyard_workers_busy").set(stats.workers.busy as f64);
    gauge!("jobyard_workers_total").set(stats.workers.total as f64);
    for (cause, count) in [
        ("lease_expired", stats.takeovers.lease_expired),
        ("instance_restarted", stats.takeovers.instance_restarted),
    ] {
        counter!("jobyard_takeovers_total", "cause" => cause).absolute(count);
    }
    let cache = &stats.cache;
    gauge!("jobyard_cache_entries").set(cache.memory.entries as f64);
    gauge!("jobyard_cache_bytes").set(cache.memory.bytes as f64);
    counter!("jobyard_cache_evictions_total").absolute(cache.memory.evictions);
    counter!("jobyard_cache_hits_total", "layer" => "memory").absolute(cache.memory.hits);
    counter!("jobyard_cache_misses_total", "layer" => "memory").absolute(cache.memory.misses);
    #[cfg(feature = "redis")]
    if let Some(redis) = &cache.redis {
        counter!("jobyard_cache_hits_total", "layer" => "redis").absolute(redis.hits);
        counter!("jobyard_cache_misses_total", "layer" => "redis").absolute(redis.misses);
        counter!("jobyard_cache_fallbacks_total").absolute(redis.fallbacks);
        counter!("jobyard_cache_corrupt_total").absolute(redis.corrupt);
        let link = &redis.link;
        gauge!("jobyard_redis_up").set(if link.up { 1.0 } else { 0.0 });
        gauge!("jobyard_redis_rtt_seconds").set(link.rtt_us as f64 / 1e6);
        counter!("jobyard_redis_errors_total").absolute(link.errors);
        counter!("jobyard_redis_reconnects_total").absolute(link.reconnects);
        counter!("jobyard_redis_round_trips_total").absolute(link.round_trips);
    }
}
