//! Limits hold across instances: three runtimes, each with its own connections to one private
//! Redis under one prefix (three instances as far as Redis can tell), share a concurrency limit
//! and a rate limit, with no leader: every check is inside the claim script.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jobyard::queue::flow::{LimitSpec, Rate};
use jobyard::queue::{ListQuery, QueueBackend};
use jobyard::{Job, JobContext, JobError, JobStatus, Runtime};
use serde::{Deserialize, Serialize};

use crate::helpers::{poll, test_config};
use crate::queue_backends::redis_queue;
use crate::redis_support::TestRedis;

/// When each handler ran, on a clock all three instances share (the test process's).
#[derive(Clone, Default)]
struct Intervals(Arc<Mutex<Vec<(Instant, Instant)>>>);

/// A job that holds its slot for `ms` and notes when it ran.
#[derive(Serialize, Deserialize)]
struct Work {
    ms: u64,
}

impl Job for Work {
    const KIND: &'static str = "work";
    type Output = ();
    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        let start = Instant::now();
        tokio::time::sleep(Duration::from_millis(self.ms)).await;
        let intervals = ctx.extension::<Intervals>().expect("intervals");
        intervals.0.lock().unwrap().push((start, Instant::now()));
        Ok(())
    }
}

/// Three runtimes of four slots each on `server` under `prefix`.
async fn three_instances(server: &TestRedis, prefix: &str, seen: &Intervals) -> Vec<Runtime> {
    let mut runtimes = Vec::new();
    for _ in 0..3 {
        let queue = redis_queue(server, prefix).await;
        let mut config = test_config();
        config.concurrency = 4;
        config.data_dir = std::env::temp_dir();
        let runtime = Runtime::builder()
            .config(config)
            .queue_backend(queue)
            .register::<Work>()
            .extension(seen.clone())
            .start()
            .expect("runtime starts");
        runtimes.push(runtime);
    }
    runtimes
}

/// Waits until `n` jobs of `queue` succeeded.
async fn all_succeed(queue: &dyn QueueBackend, n: u64) {
    let done = poll(|| async {
        let stats = queue.stats().await.ok()?;
        (stats.get("default")?.succeeded == n).then_some(())
    });
    assert!(done.await.is_some(), "{n} jobs did not all succeed in time");
}

#[actix_web::test]
async fn a_concurrency_limit_holds_across_three_instances() {
    let server = TestRedis::start();
    let prefix = format!("fl{}", fastrand::u32(..));
    let seen = Intervals::default();
    let runtimes = three_instances(&server, &prefix, &seen).await;
    let client = runtimes[0].client();
    client.put_limit("db", LimitSpec { rate: None, concurrency: Some(3) }).await.unwrap();
    for n in 0..30 {
        // Submitted through each instance in turn.
        let client = runtimes[n % 3].client();
        client.submit(Work { ms: 40 }).limit("db").await.unwrap();
    }
    all_succeed(&*redis_queue(&server, &prefix).await, 30).await;
    let intervals = seen.0.lock().unwrap().clone();
    assert_eq!(intervals.len(), 30);
    // The most handlers running at once, from when each started and ended.
    let mut edges: Vec<(Instant, i32)> =
        intervals.iter().flat_map(|&(start, end)| [(start, 1), (end, -1)]).collect();
    edges.sort_by_key(|&(at, delta)| (at, delta));
    let (mut running, mut most) = (0, 0);
    for (_, delta) in edges {
        running += delta;
        most = most.max(running);
    }
    assert!(most <= 3, "{most} ran at once under a concurrency limit of 3");
    assert_eq!(most, 3, "the instances together did use the three places");
    for runtime in runtimes {
        runtime.shutdown().await;
    }
}

#[actix_web::test]
async fn a_rate_limit_holds_across_three_instances() {
    let server = TestRedis::start();
    let prefix = format!("fl{}", fastrand::u32(..));
    let seen = Intervals::default();
    let runtimes = three_instances(&server, &prefix, &seen).await;
    let rate = Rate { tokens: 5, per_ms: 500 };
    runtimes[1]
        .client()
        .put_limit("api", LimitSpec { rate: Some(rate), concurrency: None })
        .await
        .unwrap();
    for n in 0..20 {
        runtimes[n % 3].client().submit(Work { ms: 1 }).limit("api").await.unwrap();
    }
    let queue = redis_queue(&server, &prefix).await;
    all_succeed(&*queue, 20).await;
    // The window counts claims at their times, which each job's `started_at` is.
    let query = ListQuery { limit: 100, ..ListQuery::default() };
    let jobs = queue.list(&query).await.unwrap().jobs;
    let mut starts: Vec<_> = jobs
        .iter()
        .inspect(|job| assert_eq!(job.status, JobStatus::Succeeded))
        .map(|job| job.started_at.expect("started"))
        .collect();
    assert_eq!(starts.len(), 20);
    starts.sort();
    for (i, start) in starts.iter().enumerate() {
        let end = *start + chrono::Duration::milliseconds(500);
        let in_window = starts[i..].iter().take_while(|s| **s < end).count();
        assert!(in_window <= 5, "{in_window} starts within 500 ms of {start}");
    }
    for runtime in runtimes {
        runtime.shutdown().await;
    }
}
