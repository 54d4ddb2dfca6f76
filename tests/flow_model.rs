//! Property tests of flow control through the [`QueueBackend`] trait, on every backend: for
//! random sequences of submits (under a concurrency limit, a rate limit, both or none; in a
//! group or not; at random priorities; in a queue that may be paused), claims, completions,
//! holds, pauses, resumes and time steps:
//! - a concurrency limit of 2 never has 3 running;
//! - a rate of 3 tokens per second never has more than 3 tokens taken (by claim time) in any
//!   second, costs counted;
//! - no job of a paused queue, nor of a held limit, is claimed;
//! - a claim never leaves behind a job it could have taken that outranks one it took (no
//!   head-of-line blocking, priority first), and a short claim leaves no runnable job at all.
//!
//! The memory backend runs many cases, the Redis backend fewer (one private `redis-server`, a
//! fresh prefix per case).

// Shared with the API tests, which use all of it.
#[allow(dead_code)]
#[path = "api/redis_support.rs"]
mod redis_support;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobyard::config::Config;
use jobyard::job::record::json_null;
use jobyard::job::spec::{plan, KindLookup, SpecDefaults};
use jobyard::job::{JobRecord, JobSpec, JobStatus};
use jobyard::queue::flow::{LimitSpec, Rate};
use jobyard::queue::{
    Claim, Claimed, Completion, ListQuery, MemoryQueue, Outcome, QueueBackend, RedisQueue,
};
use jobyard::redis::{RedisClient, RedisSettings};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use redis_support::TestRedis;

/// The concurrency limit's name and its places.
const CAP: (&str, u64) = ("cap", 2);
/// The rate limit's name, tokens and window.
const RATE: (&str, u64, i64) = ("rate", 3, 1_000);
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

struct Kinds;
impl KindLookup for Kinds {
    fn lookup(&self, kind: &str) -> Option<Arc<str>> {
        Some(Arc::from(kind))
    }
}

#[derive(Debug, Clone)]
struct NewJob {
    priority: i32,
    /// 0: no limit, 1: the concurrency limit, 2: the rate, 3: both.
    limits: u8,
    cost: u32,
    group: Option<u8>,
    /// In the queue that gets paused.
    side: bool,
}

#[derive(Debug, Clone)]
enum Op {
    Submit(Vec<NewJob>),
    Claim(usize),
    /// Ends the running attempts picked (modulo their number): success or a retry at once.
    Complete(Vec<(usize, bool)>),
    Advance(u64),
    /// Holds the rate limit for this many ms.
    Hold(u64),
    Pause(bool),
}

fn op() -> impl Strategy<Value = Op> {
    let job =
        (-2i32..=2, 0u8..4, 1u32..=3, prop::option::weighted(0.6, 0u8..3), any::<bool>()).prop_map(
            |(priority, limits, cost, group, side)| NewJob { priority, limits, cost, group, side },
        );
    prop_oneof![
        3 => prop::collection::vec(job, 1..6).prop_map(Op::Submit),
        4 => (1usize..6).prop_map(Op::Claim),
        3 => prop::collection::vec((any::<usize>(), any::<bool>()), 1..4).prop_map(Op::Complete),
        2 => prop_oneof![(0u64..6).prop_map(|n| n * 100), 0u64..1_500].prop_map(Op::Advance),
        1 => (0u64..3_000).prop_map(Op::Hold),
        1 => any::<bool>().prop_map(Op::Pause),
    ]
}

async fn within<T>(call: &str, answer: impl Future<Output = T>) -> T {
    match tokio::time::timeout(CALL_TIMEOUT, answer).await {
        Ok(answer) => answer,
        Err(_) => panic!("{call} did not return within {CALL_TIMEOUT:?}"),
    }
}

/// What the test knows besides the backend.
struct Model {
    queue: Arc<dyn QueueBackend>,
    now: DateTime<Utc>,
    /// Running attempts: their claims.
    running: Vec<Claimed>,
    /// Every claim under the rate: (time ms, cost).
    rate_taken: Vec<(i64, u64)>,
    held_until: Option<i64>,
    paused: bool,
}

impl Model {
    async fn new(queue: Arc<dyn QueueBackend>) -> Self {
        let now = DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
        let cap = LimitSpec { rate: None, concurrency: Some(CAP.1) };
        let rate = Rate { tokens: RATE.1, per_ms: RATE.2 as u64 };
        within("put", queue.put_limit(CAP.0, cap, now)).await.expect("put cap");
        let rate = LimitSpec { rate: Some(rate), concurrency: None };
        within("put", queue.put_limit(RATE.0, rate, now)).await.expect("put rate");
        Model {
            queue,
            now,
            running: Vec::new(),
            rate_taken: Vec::new(),
            held_until: None,
            paused: false,
        }
    }

    fn now_ms(&self) -> i64 {
        self.now.timestamp_millis()
    }

    async fn apply(&mut self, op: &Op) {
        match op {
            Op::Submit(jobs) => self.submit(jobs).await,
            Op::Claim(n) => self.claim(*n).await,
            Op::Complete(picks) => self.complete(picks).await,
            Op::Advance(ms) => self.now += chrono::Duration::milliseconds(*ms as i64),
            Op::Hold(ms) => {
                let until = self.now + chrono::Duration::milliseconds(*ms as i64);
                let hold = self.queue.hold_limit(RATE.0, until, self.now);
                within("hold", hold).await.expect("hold");
                let until = until.timestamp_millis();
                self.held_until = Some(self.held_until.map_or(until, |h| h.max(until)));
            }
            Op::Pause(paused) => {
                within("pause", self.queue.pause_queue("side", *paused)).await.expect("pause");
                self.paused = *paused;
            }
        }
    }

    async fn submit(&mut self, jobs: &[NewJob]) {
        let specs = jobs
            .iter()
            .map(|job| {
                let mut limits = Vec::new();
                if job.limits & 1 != 0 {
                    limits.push(CAP.0.to_owned());
                }
                if job.limits & 2 != 0 {
                    limits.push(RATE.0.to_owned());
                }
                JobSpec {
                    priority: Some(job.priority),
                    limits: (!limits.is_empty()).then_some(limits),
                    cost: Some(job.cost),
                    group: job.group.map(|g| format!("g{g}")),
                    queue: job.side.then(|| "side".to_owned()),
                    ..JobSpec::new("noop")
                }
            })
            .collect();
        let planned = plan(specs, true, &Kinds, &SpecDefaults::default(), self.now).unwrap();
        within("submit", self.queue.submit(planned, self.now)).await.expect("submit");
    }

    /// Records tokens taken under the rate now, as the backends keep their windows: a claim
    /// within a hundredth of the window after the newest entry joins it, at the later time.
    fn took_rate(&mut self, cost: u64) {
        let now = self.now_ms();
        match self.rate_taken.last_mut() {
            Some((at, taken)) if *at >= now - RATE.2 / 100 => {
                *at = now;
                *taken += cost;
            }
            _ => self.rate_taken.push((now, cost)),
        }
    }

    /// Tokens of the rate taken in the window ending now.
    fn rate_used(&self) -> u64 {
        let from = self.now_ms() - RATE.2;
        self.rate_taken.iter().filter(|(at, _)| *at > from).map(|(_, cost)| cost).sum()
    }

    fn running_under_cap(&self) -> u64 {
        let under = |c: &&Claimed| c.record.limits.iter().any(|l| &**l == CAP.0);
        self.running.iter().filter(under).count() as u64
    }

    /// Whether `record` (queued) could start now.
    fn runnable(&self, record: &JobRecord) -> bool {
        if self.paused && &*record.queue == "side" {
            return false;
        }
        let named = |name: &str| record.limits.iter().any(|l| &**l == name);
        if named(CAP.0) && self.running_under_cap() >= CAP.1 {
            return false;
        }
        if named(RATE.0) {
            let held = self.held_until.is_some_and(|until| until > self.now_ms());
            // The window frees a token `per_ms` after it was taken (a claim exactly then sees it).
            if held || self.rate_used() + u64::from(record.cost) > RATE.1 {
                return false;
            }
        }
        true
    }

    async fn claim(&mut self, n: usize) {
        let claim = Claim {
            workers: (0..n).map(|i| Arc::from(format!("model/w{i}"))).collect(),
            lease: Duration::from_secs(3_600),
            kinds: vec![Arc::from("noop")].into(),
        };
        let claimed = within("claim", self.queue.dequeue(claim, self.now)).await.expect("claim");
        assert!(claimed.len() <= n);
        for job in &claimed {
            let record = &job.record;
            assert!(!(self.paused && &*record.queue == "side"), "claimed from a paused queue");
            if record.limits.iter().any(|l| &**l == RATE.0) {
                let held = self.held_until.is_some_and(|until| until > self.now_ms());
                assert!(!held, "claimed under a held limit");
                self.took_rate(u64::from(record.cost));
            }
            self.running.push(job.clone());
        }
        assert!(self.running_under_cap() <= CAP.1, "more running than the concurrency allows");
        assert!(self.rate_used() <= RATE.1, "more tokens taken than the rate allows");
        // What is left queued: nothing runnable that outranks a claimed job; nothing runnable
        // at all after a short claim.
        let lowest = claimed.iter().map(|c| c.record.priority).min();
        for record in self.queued().await {
            if !self.runnable(&record) {
                continue;
            }
            assert!(claimed.len() == n, "a short claim left runnable job {}", record.id);
            let lowest = lowest.expect("a full claim took jobs");
            assert!(record.priority <= lowest, "runnable job {} outranks a claimed one", record.id);
        }
    }

    async fn queued(&self) -> Vec<JobRecord> {
        let query =
            ListQuery { status: Some(JobStatus::Queued), limit: 1_000, ..ListQuery::default() };
        within("list", self.queue.list(&query)).await.expect("list").jobs
    }

    async fn complete(&mut self, picks: &[(usize, bool)]) {
        if self.running.is_empty() {
            return;
        }
        let mut done = Vec::new();
        for (pick, success) in picks {
            if self.running.is_empty() {
                break;
            }
            let job = self.running.remove(pick % self.running.len());
            let outcome = if *success {
                Outcome::Succeeded(json_null())
            } else {
                Outcome::Failed { error: "again".into(), retry_at: Some(self.now) }
            };
            done.push(Completion { lease: job.lease, outcome });
        }
        let changes = within("complete", self.queue.complete(done, self.now)).await;
        assert_eq!(changes.expect("complete").stale, 0);
    }
}

fn check_cases<F, Fut>(cases: u32, backend: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn QueueBackend>>,
{
    let config = ProptestConfig { cases, source_file: Some(file!()), ..ProptestConfig::default() };
    let mut runner = TestRunner::new(config);
    let ops = prop::collection::vec(op(), 1..50);
    let result = runner.run(&ops, |ops| {
        actix_rt::System::new().block_on(async {
            let mut model = Model::new(backend().await).await;
            for op in &ops {
                model.apply(op).await;
            }
        });
        Ok(())
    });
    if let Err(err) = result {
        panic!("{err}\n{runner}");
    }
}

async fn redis_queue(url: &str) -> Arc<dyn QueueBackend> {
    let prefix = format!("flow{}", fastrand::u64(..));
    let config = Config::from_lookup(|name| match name {
        "REDIS_URL" => Some(url.to_owned()),
        "JOBYARD_REDIS_PREFIX" => Some(prefix.clone()),
        "JOBYARD_REDIS_POOL_SIZE" => Some("2".into()),
        "JOBYARD_QUEUE_TIMEOUT_MS" => Some("10000".into()),
        _ => None,
    })
    .expect("valid test config");
    let client = RedisClient::new(RedisSettings::for_queue(&config).expect("REDIS_URL is set"))
        .expect("a client for the test redis");
    assert!(client.start().await, "connects to the test redis");
    let queue = RedisQueue::with_client(client, &config.redis_prefix).await;
    Arc::new(queue.expect("queue over the test redis"))
}

#[test]
fn the_memory_queue_keeps_its_limits() {
    check_cases(300, || async { Arc::new(MemoryQueue::new()) as Arc<dyn QueueBackend> });
}

#[test]
fn the_redis_queue_keeps_its_limits() {
    let redis = TestRedis::start();
    let url = redis.url();
    check_cases(40, || redis_queue(&url));
    assert!(redis.answers_ping(), "redis still up");
}
