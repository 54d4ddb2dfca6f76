//! One trait-level suite of the job semantics, run against every queue backend: `memory`, and
//! `redis` (a private `redis-server` per test). Time is stepped by the tests (every call takes
//! `now`), so leases, delays, retries and retention are checked without waiting.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobyard::job::record::{json_from_str, json_null};
use jobyard::job::spec::{plan, KindLookup, SpecDefaults};
use jobyard::job::{FailedAttempt, JobId, JobSpec, JobStatus, NewJob};
use jobyard::queue::{
    CancelOutcome, Claim, Claimed, Completion, LeaseRef, LeaseState, ListQuery, MemoryQueue,
    Outcome, QueueBackend, QueueError, QueueLimits, RedisQueue,
};
use jobyard::redis::{RedisClient, RedisSettings};
use jobyard::schedule::{Fire, Schedule};

use crate::cache_backends::redis_url;
use crate::helpers::test_config;
use crate::redis_support::TestRedis;

/// A backend under test, with the Redis it runs on (stopped when this is dropped).
pub struct Backend {
    pub queue: Arc<dyn QueueBackend>,
    pub redis: Option<TestRedis>,
}

/// A memory backend.
pub fn memory() -> Backend {
    memory_with(QueueLimits::default())
}

pub fn memory_with(limits: QueueLimits) -> Backend {
    Backend { queue: Arc::new(MemoryQueue::with_limits(limits)), redis: None }
}

/// A Redis backend on a private server.
pub async fn redis() -> Backend {
    redis_with(QueueLimits::default()).await
}

pub async fn redis_with(limits: QueueLimits) -> Backend {
    let server = TestRedis::start();
    let queue = redis_queue_with(&server, &format!("t{}", fastrand::u32(..)), limits).await;
    Backend { queue, redis: Some(server) }
}

/// A Redis queue on `server` under `prefix` (two with the same prefix share their jobs).
pub async fn redis_queue(server: &TestRedis, prefix: &str) -> Arc<dyn QueueBackend> {
    redis_queue_with(server, prefix, QueueLimits::default()).await
}

async fn redis_queue_with(
    server: &TestRedis,
    prefix: &str,
    limits: QueueLimits,
) -> Arc<dyn QueueBackend> {
    let mut config = test_config();
    config.redis_url = Some(redis_url(&server.url()));
    config.redis_prefix = prefix.to_owned();
    let client = RedisClient::new(RedisSettings::for_queue(&config).unwrap()).unwrap();
    assert!(client.start().await, "connects to the test redis");
    let queue = RedisQueue::with_client(client, prefix).await.expect("queue over the test redis");
    Arc::new(queue.with_limits(limits))
}

struct AnyKind;
impl KindLookup for AnyKind {
    fn lookup(&self, kind: &str) -> Option<Arc<str>> {
        Some(Arc::from(kind))
    }
}

/// A fixed instant plus `ms`, in whole milliseconds (as every backend keeps time).
pub fn t(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
}

pub fn plan_batch(specs: Vec<JobSpec>, now: DateTime<Utc>) -> Vec<NewJob> {
    plan(specs, true, &AnyKind, &SpecDefaults::default(), now).expect("valid batch")
}

pub(crate) async fn submit(q: &dyn QueueBackend, spec: JobSpec, now: DateTime<Utc>) -> JobId {
    let jobs = plan(vec![spec], false, &AnyKind, &SpecDefaults::default(), now).unwrap();
    q.submit(jobs, now).await.unwrap().jobs[0].record.id
}

pub(crate) fn noop() -> JobSpec {
    JobSpec::new("noop")
}

pub(crate) fn claim_of(n: usize, lease_ms: u64, kinds: &[&str]) -> Claim {
    Claim {
        workers: (0..n).map(|i| Arc::from(format!("suite/w{i}"))).collect(),
        lease: Duration::from_millis(lease_ms),
        kinds: kinds.iter().map(|k| Arc::from(*k)).collect::<Vec<_>>().into(),
    }
}

pub(crate) async fn claim(q: &dyn QueueBackend, n: usize, now: DateTime<Utc>) -> Vec<Claimed> {
    q.dequeue(claim_of(n, 10_000, &["noop", "other"]), now).await.unwrap()
}

pub(crate) async fn status(q: &dyn QueueBackend, id: JobId) -> JobStatus {
    q.get(id).await.unwrap().expect("job kept").status
}

pub(crate) fn done(lease: LeaseRef, outcome: Outcome) -> Completion {
    Completion { lease, outcome }
}

pub(crate) fn success() -> Outcome {
    Outcome::Succeeded(json_null())
}

pub(crate) fn failure(error: &str, retry_at: Option<DateTime<Utc>>) -> Outcome {
    Outcome::Failed { error: error.into(), retry_at }
}

pub(crate) const HOUR: Duration = Duration::from_secs(3600);

/// A history entry: attempt `attempt` ended at `t(ms)` for `error`.
pub(crate) fn failed(attempt: u32, error: &str, ms: i64) -> FailedAttempt {
    FailedAttempt::new(attempt, error, t(ms))
}

/// A submitted job reads back as submitted.
async fn submit_and_read_back(q: &dyn QueueBackend) {
    let spec = JobSpec {
        payload: Some(json_from_str(r#"{"to": "a@example.com"}"#).unwrap()),
        queue: Some("mail".into()),
        priority: Some(7),
        max_attempts: Some(4),
        timeout_ms: Some(1_500),
        ..JobSpec::new("noop")
    };
    let jobs = plan(vec![spec], false, &AnyKind, &SpecDefaults::default(), t(0)).unwrap();
    let submitted = q.submit(jobs, t(0)).await.unwrap();
    let answered = &submitted.jobs[0];
    assert!(answered.created);
    assert_eq!(submitted.changes.ready, 1);
    let stored = q.get(answered.record.id).await.unwrap().expect("stored");
    for record in [&answered.record, &stored] {
        assert_eq!(record.status, JobStatus::Queued);
        assert_eq!((&*record.kind, &*record.queue), ("noop", "mail"));
        assert_eq!(record.payload.get(), r#"{"to": "a@example.com"}"#);
        assert_eq!((record.priority, record.max_attempts, record.attempts), (7, 4, 0));
        assert_eq!(record.timeout_ms, 1_500);
        assert_eq!((record.created_at, record.updated_at), (t(0), t(0)));
        assert!(record.started_at.is_none() && record.worker.is_none());
    }
    assert!(q.get(JobId::new()).await.unwrap().is_none());
}

/// Rule 1: highest priority first, submit order within a priority; a later job of higher
/// priority overtakes queued jobs of lower priority.
async fn priority_then_submit_order(q: &dyn QueueBackend) {
    let mut ids = Vec::new();
    for priority in [0, 0, 5, 0, -3] {
        ids.push(submit(q, JobSpec { priority: Some(priority), ..noop() }, t(0)).await);
    }
    let first = claim(q, 1, t(1)).await;
    assert_eq!(first[0].record.id, ids[2], "priority 5 first");
    let high = submit(q, JobSpec { priority: Some(10), ..noop() }, t(2)).await;
    let rest: Vec<JobId> = claim(q, 10, t(3)).await.iter().map(|c| c.record.id).collect();
    assert_eq!(rest, vec![high, ids[0], ids[1], ids[3], ids[4]]);
}

/// One claim over several queues and kinds merges them: highest priority first, then submit
/// order, taking from each only what comes first overall.
async fn a_claim_merges_queues_and_kinds_by_priority(q: &dyn QueueBackend) {
    let job = |queue: &str, kind: &str, priority| JobSpec {
        queue: Some(queue.into()),
        priority: Some(priority),
        ..JobSpec::new(kind)
    };
    let low_a = submit(q, job("a", "noop", 0), t(0)).await;
    let high_b = submit(q, job("b", "noop", 5), t(0)).await;
    let high_a_other = submit(q, job("a", "other", 5), t(0)).await;
    let low_b = submit(q, job("b", "noop", 0), t(0)).await;
    let low_a_other = submit(q, job("a", "other", -1), t(0)).await;
    let ids = |claimed: Vec<Claimed>| claimed.iter().map(|c| c.record.id).collect::<Vec<_>>();
    assert_eq!(ids(claim(q, 3, t(1)).await), vec![high_b, high_a_other, low_a]);
    assert_eq!(ids(claim(q, 3, t(2)).await), vec![low_b, low_a_other]);
    assert!(claim(q, 3, t(3)).await.is_empty());
}

/// A claim takes only kinds the instance runs; jobs of other kinds wait, counted as queued.
async fn claims_take_only_the_named_kinds(q: &dyn QueueBackend) {
    let mine = submit(q, noop(), t(0)).await;
    let foreign = submit(q, JobSpec::new("elsewhere"), t(0)).await;
    let claimed = q.dequeue(claim_of(5, 10_000, &["noop"]), t(1)).await.unwrap();
    assert_eq!(claimed.iter().map(|c| c.record.id).collect::<Vec<_>>(), vec![mine]);
    assert_eq!(status(q, foreign).await, JobStatus::Queued);
    assert_eq!(q.stats().await.unwrap()["default"].queued, 1);
    let by_kind = q.queued_by_kind().await.unwrap();
    assert_eq!(by_kind.into_iter().collect::<Vec<_>>(), vec![("elsewhere".to_owned(), 1)]);
    let later = q.dequeue(claim_of(5, 10_000, &["elsewhere"]), t(2)).await.unwrap();
    assert_eq!(later[0].record.id, foreign);
    assert_eq!(later[0].record.attempts, 1);
}

/// A claimed job runs under a lease; its record says who runs it.
async fn a_claim_starts_an_attempt(q: &dyn QueueBackend) {
    let id = submit(q, noop(), t(0)).await;
    let claimed = claim(q, 3, t(5)).await;
    assert_eq!(claimed.len(), 1);
    let record = &claimed[0].record;
    assert_eq!((record.id, record.status, record.attempts), (id, JobStatus::Running, 1));
    assert_eq!(record.started_at, Some(t(5)));
    assert_eq!(record.worker.as_deref(), Some("suite/w0"));
    assert_eq!(q.get(id).await.unwrap().unwrap().worker.as_deref(), Some("suite/w0"));
    assert!(claim(q, 3, t(6)).await.is_empty(), "a running job is not claimed twice");
}

/// A success stores the result; the job is terminal.
async fn success_stores_the_result(q: &dyn QueueBackend) {
    let id = submit(q, noop(), t(0)).await;
    let lease = claim(q, 1, t(1)).await[0].lease;
    let result = json_from_str(r#"{"sent": 3}"#).unwrap();
    let changes = q.complete(vec![done(lease, Outcome::Succeeded(result))], t(2)).await.unwrap();
    assert_eq!(changes.finished, vec![id]);
    let record = q.get(id).await.unwrap().unwrap();
    assert_eq!(record.status, JobStatus::Succeeded);
    assert_eq!(record.result.as_ref().unwrap().get(), r#"{"sent": 3}"#);
    assert_eq!(record.finished_at, Some(t(2)));
    let json = serde_json::to_value(&record).unwrap();
    assert_eq!(
        (&json["error"], &json["history"]),
        (&serde_json::Value::Null, &serde_json::json!([]))
    );
    let again = q.complete(vec![done(lease, success())], t(3)).await.unwrap();
    assert_eq!(again.stale, 1, "a second completion of the same attempt is refused");
}

/// Rule 2: a failure with attempts left is scheduled for its retry time, then runs again; a
/// failure without a retry time, or with no attempts left, ends `failed`.
async fn retries_and_final_failures(q: &dyn QueueBackend) {
    let id = submit(q, JobSpec { max_attempts: Some(2), ..noop() }, t(0)).await;
    let lease = claim(q, 1, t(1)).await[0].lease;
    let changes = q.complete(vec![done(lease, failure("boom", Some(t(1_000))))], t(2)).await;
    assert_eq!(changes.unwrap().next_due, Some(t(1_000)));
    let record = q.get(id).await.unwrap().unwrap();
    assert_eq!(record.status, JobStatus::Scheduled);
    assert_eq!((record.run_at, record.error.as_deref()), (Some(t(1_000)), None), "not final");
    assert_eq!(record.history, vec![failed(1, "boom", 2)]);
    assert!(claim(q, 1, t(999)).await.is_empty(), "not before its retry time");
    let second = claim(q, 1, t(1_000)).await;
    assert_eq!(second[0].record.attempts, 2);
    q.complete(vec![done(second[0].lease, failure("again", Some(t(5_000))))], t(1_001))
        .await
        .unwrap();
    let record = q.get(id).await.unwrap().unwrap();
    assert_eq!((record.status, record.error.as_deref()), (JobStatus::Failed, Some("again")));
    assert_eq!(record.history, vec![failed(1, "boom", 2), failed(2, "again", 1_001)]);

    let fatal = submit(q, JobSpec { max_attempts: Some(5), ..noop() }, t(0)).await;
    let lease = claim(q, 1, t(1)).await[0].lease;
    q.complete(vec![done(lease, failure("fatal", None))], t(2)).await.unwrap();
    let record = q.get(fatal).await.unwrap().unwrap();
    assert_eq!(record.status, JobStatus::Failed, "no retry time: fails at once");
    assert_eq!(
        (record.error.as_deref(), record.history),
        (Some("fatal"), vec![failed(1, "fatal", 2)])
    );
}

/// A retry that is already due goes straight back to `queued`.
async fn a_due_retry_is_queued_at_once(q: &dyn QueueBackend) {
    let id = submit(q, noop(), t(0)).await;
    let lease = claim(q, 1, t(1)).await[0].lease;
    let changes = q.complete(vec![done(lease, failure("x", Some(t(1))))], t(2)).await.unwrap();
    assert_eq!(changes.ready, 1);
    let record = q.get(id).await.unwrap().unwrap();
    assert_eq!((record.status, record.error), (JobStatus::Queued, None));
    assert_eq!(record.history, vec![failed(1, "x", 2)]);
}

/// Delays: a job is `scheduled` until its time, then claimable (claims promote due jobs).
async fn delayed_jobs_wait_for_their_time(q: &dyn QueueBackend) {
    let at = t(60_000);
    let id = submit(q, JobSpec { run_at: Some(at), ..noop() }, t(0)).await;
    let record = q.get(id).await.unwrap().unwrap();
    assert_eq!((record.status, record.run_at), (JobStatus::Scheduled, Some(at)));
    assert!(claim(q, 1, t(59_999)).await.is_empty());
    assert_eq!(claim(q, 1, at).await[0].record.id, id);
    let by_tick = submit(q, JobSpec { run_at: Some(t(70_000)), ..noop() }, t(0)).await;
    let changes = q.tick(t(70_000), HOUR).await.unwrap();
    assert!(changes.ready >= 1);
    assert_eq!(status(q, by_tick).await, JobStatus::Queued, "a tick promotes too");
}

/// Rule 3: a dependent waits until its dependencies succeed; a failure cancels dependents
/// transitively, naming the dependency.
async fn dependencies_release_and_cascade(q: &dyn QueueBackend) {
    let specs = vec![
        JobSpec { reference: Some("a".into()), ..noop() },
        JobSpec { reference: Some("b".into()), depends_on: Some(vec!["a".into()]), ..noop() },
        JobSpec {
            reference: Some("c".into()),
            depends_on: Some(vec!["a".into(), "b".into()]),
            ..noop()
        },
    ];
    let jobs = plan_batch(specs, t(0));
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    let submitted = q.submit(jobs, t(0)).await.unwrap();
    let states: Vec<JobStatus> = submitted.jobs.iter().map(|j| j.record.status).collect();
    assert_eq!(states, vec![JobStatus::Queued, JobStatus::Waiting, JobStatus::Waiting]);
    let a = claim(q, 5, t(1)).await;
    assert_eq!(a.len(), 1, "only the job without dependencies runs");
    let changes = q.complete(vec![done(a[0].lease, success())], t(2)).await.unwrap();
    assert_eq!(changes.ready, 1);
    assert_eq!(status(q, ids[1]).await, JobStatus::Queued);
    assert_eq!(status(q, ids[2]).await, JobStatus::Waiting, "c still waits for b");
    let b = claim(q, 5, t(3)).await;
    q.complete(vec![done(b[0].lease, success())], t(4)).await.unwrap();
    assert_eq!(claim(q, 5, t(5)).await[0].record.id, ids[2]);

    let specs = vec![
        JobSpec { reference: Some("root".into()), max_attempts: Some(1), ..noop() },
        JobSpec {
            reference: Some("child".into()),
            depends_on: Some(vec!["root".into()]),
            ..noop()
        },
        JobSpec {
            reference: Some("grandchild".into()),
            depends_on: Some(vec!["child".into()]),
            ..noop()
        },
    ];
    let jobs = plan_batch(specs, t(10));
    let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
    q.submit(jobs, t(10)).await.unwrap();
    let root = claim(q, 1, t(11)).await;
    let changes = q.complete(vec![done(root[0].lease, failure("no", None))], t(12)).await.unwrap();
    assert_eq!(changes.finished.len(), 3, "root, child and grandchild end together");
    let child = q.get(ids[1]).await.unwrap().unwrap();
    assert_eq!(child.status, JobStatus::Cancelled);
    assert_eq!(child.error, Some(format!("dependency {} failed", ids[0])));
    assert!(child.history.is_empty(), "a job that never ran has no attempt in its history");
    assert_eq!(q.get(ids[0]).await.unwrap().unwrap().history, vec![failed(1, "no", 12)]);
    let grandchild = q.get(ids[2]).await.unwrap().unwrap();
    assert_eq!(grandchild.error, Some(format!("dependency {} cancelled", ids[1])));
}

/// Rule 3 under a fan-out larger than one call settles: the call that ends the job settles at
/// most `SETTLE_LIMIT` dependents, the periodic steps settle the rest (saying when more is
/// left), and every dependent ends as it would have in one call: cancelled with the dependency
/// named after a failure, released after a success.
async fn a_large_fan_out_is_settled_over_bounded_calls(q: &dyn QueueBackend) {
    let limit = jobyard::queue::SETTLE_LIMIT;
    let count = |queue: &'static str| async move {
        q.stats().await.unwrap().get(queue).cloned().unwrap_or_default()
    };
    for (queue, succeeds, fan_out) in
        [("fails", false, 2 * limit + 10), ("succeeds", true, limit + 5)]
    {
        let root = submit(q, JobSpec { max_attempts: Some(1), ..noop() }, t(0)).await;
        let mut left = fan_out;
        while left > 0 {
            let n = left.min(1_000);
            let dependent = JobSpec {
                queue: Some(queue.into()),
                depends_on: Some(vec![root.to_string()]),
                ..noop()
            };
            q.submit(plan_batch(vec![dependent; n], t(1)), t(1)).await.unwrap();
            left -= n;
        }
        let claimed = claim(q, 1, t(2)).await;
        assert_eq!(claimed[0].record.id, root, "only the root is ready");
        let outcome = if succeeds { success() } else { failure("no", None) };
        let changes = q.complete(vec![done(claimed[0].lease, outcome)], t(3)).await.unwrap();
        let settled =
            if succeeds { count(queue).await.queued } else { count(queue).await.cancelled };
        assert_eq!(settled as usize, limit, "{queue}: one call settles at most the limit");
        assert_eq!(count(queue).await.waiting as usize, fan_out - limit);
        if !succeeds {
            assert_eq!(changes.finished.len(), 1 + limit, "the root and what this call cancelled");
        }
        let mut steps = 0;
        loop {
            steps += 1;
            assert!(steps <= 10, "{queue}: the steps never finished settling");
            let changes = q.tick(t(4), HOUR).await.unwrap();
            if !changes.more {
                break;
            }
        }
        let expected_steps = (fan_out - limit).div_ceil(limit);
        assert_eq!(steps, expected_steps, "{queue}: each step settles at most the limit");
        let counts = count(queue).await;
        assert_eq!(counts.waiting, 0, "{queue}: every dependent settled: {counts:?}");
        if succeeds {
            assert_eq!(counts.queued as usize, fan_out);
        } else {
            assert_eq!(counts.cancelled as usize, fan_out);
            let page = q
                .list(&ListQuery { queue: Some(queue.into()), limit: 5, ..Default::default() })
                .await
                .unwrap();
            for job in page.jobs {
                assert_eq!(job.error, Some(format!("dependency {root} failed")));
            }
        }
    }
}

/// Rule 3: an unknown dependency refuses the whole batch; a dependency that already failed
/// cancels the new job at once; a succeeded one is no obstacle.
async fn dependency_checks_at_submit(q: &dyn QueueBackend) {
    let missing = JobId::new();
    let specs = vec![noop(), JobSpec { depends_on: Some(vec![missing.to_string()]), ..noop() }];
    let err = q.submit(plan_batch(specs, t(0)), t(0)).await.unwrap_err();
    assert_eq!(err, QueueError::UnknownDependency(missing));
    assert!(q
        .list(&ListQuery { limit: 10, ..ListQuery::default() })
        .await
        .unwrap()
        .jobs
        .is_empty());

    let failed = submit(q, JobSpec { max_attempts: Some(1), ..noop() }, t(0)).await;
    let lease = claim(q, 1, t(1)).await[0].lease;
    q.complete(vec![done(lease, failure("x", None))], t(2)).await.unwrap();
    let doomed =
        submit(q, JobSpec { depends_on: Some(vec![failed.to_string()]), ..noop() }, t(3)).await;
    let record = q.get(doomed).await.unwrap().unwrap();
    assert_eq!(record.status, JobStatus::Cancelled);
    assert_eq!(record.error, Some(format!("dependency {failed} failed")));
    assert!(record.history.is_empty());

    let ok = submit(q, noop(), t(4)).await;
    let lease = claim(q, 1, t(5)).await[0].lease;
    q.complete(vec![done(lease, success())], t(6)).await.unwrap();
    let after = submit(q, JobSpec { depends_on: Some(vec![ok.to_string()]), ..noop() }, t(7)).await;
    assert_eq!(status(q, after).await, JobStatus::Queued);
}

/// Rule 4: waiting, scheduled and queued jobs are cancelled at once (dependents with them);
/// terminal ones conflict; unknown ones are not found.
async fn cancelling_jobs_that_do_not_run(q: &dyn QueueBackend) {
    let scheduled = submit(q, JobSpec { run_at: Some(t(60_000)), ..noop() }, t(0)).await;
    let waiting =
        submit(q, JobSpec { depends_on: Some(vec![scheduled.to_string()]), ..noop() }, t(0)).await;
    let queued = submit(q, noop(), t(0)).await;
    let (outcome, changes) = q.cancel(scheduled, t(1)).await.unwrap();
    assert!(matches!(outcome, CancelOutcome::Cancelled(ref r) if r.status == JobStatus::Cancelled));
    assert_eq!(changes.finished, vec![scheduled, waiting]);
    assert_eq!(status(q, waiting).await, JobStatus::Cancelled);
    for id in [scheduled, waiting] {
        let record = q.get(id).await.unwrap().unwrap();
        assert!(record.error.is_some() && record.history.is_empty(), "no attempt ended");
    }
    q.cancel(queued, t(2)).await.unwrap();
    assert!(claim(q, 5, t(3)).await.is_empty(), "a cancelled job is never claimed");
    assert_eq!(
        q.cancel(queued, t(4)).await.unwrap_err(),
        QueueError::AlreadyFinished { id: queued, status: JobStatus::Cancelled }
    );
    let unknown = JobId::new();
    assert_eq!(q.cancel(unknown, t(5)).await.unwrap_err(), QueueError::NotFound(unknown));
    assert!(q.tick(t(100_000), HOUR).await.is_ok());
    assert_eq!(status(q, scheduled).await, JobStatus::Cancelled, "never promoted once cancelled");
}

/// Jobs cancelled while queued are passed over by claims, which still fill their slots with
/// the jobs behind them, and leave the counts of queued jobs per kind.
async fn claims_pass_over_cancelled_jobs(q: &dyn QueueBackend) {
    let ids: Vec<JobId> = q
        .submit(plan_batch(vec![noop(); 6], t(0)), t(0))
        .await
        .unwrap()
        .jobs
        .iter()
        .map(|s| s.record.id)
        .collect();
    for id in [ids[0], ids[1], ids[5]] {
        q.cancel(id, t(1)).await.unwrap();
    }
    assert_eq!(q.queued_by_kind().await.unwrap()["noop"], 3);
    let first: Vec<JobId> = claim(q, 2, t(2)).await.iter().map(|c| c.record.id).collect();
    assert_eq!(first, vec![ids[2], ids[3]], "the two cancelled at the head are passed over");
    assert_eq!(q.queued_by_kind().await.unwrap()["noop"], 1);
    let rest: Vec<JobId> = claim(q, 10, t(3)).await.iter().map(|c| c.record.id).collect();
    assert_eq!(rest, vec![ids[4]], "the one cancelled at the end is passed over too");
    assert!(q.queued_by_kind().await.unwrap().get("noop").is_none_or(|n| *n == 0));
    assert!(claim(q, 10, t(4)).await.is_empty());
    for id in [ids[0], ids[1], ids[5]] {
        assert_eq!(status(q, id).await, JobStatus::Cancelled);
    }
}

/// Rule 4: cancelling a running job requests it; renewals report it; a failure then ends
/// `cancelled` without retry.
async fn cancelling_a_running_job(q: &dyn QueueBackend) {
    let id = submit(q, JobSpec { max_attempts: Some(3), ..noop() }, t(0)).await;
    let lease = claim(q, 1, t(1)).await[0].lease;
    let (outcome, _) = q.cancel(id, t(2)).await.unwrap();
    let CancelOutcome::Requested(record) = outcome else { panic!("a running job is requested") };
    assert!(record.cancel_requested);
    assert_eq!(record.status, JobStatus::Running);
    let states = q.renew(vec![lease], Duration::from_secs(10), t(3)).await.unwrap();
    assert_eq!(states, vec![LeaseState::CancelRequested]);
    q.complete(vec![done(lease, failure("stopped", Some(t(4))))], t(4)).await.unwrap();
    let record = q.get(id).await.unwrap().unwrap();
    assert_eq!((record.status, record.error.as_deref()), (JobStatus::Cancelled, Some("cancelled")));
    assert!(record.cancel_requested, "the request stays on the record");
    assert_eq!(record.history, vec![failed(1, "cancelled", 4)], "the attempt ended cancelled");

    // A job that succeeds despite a cancel request ends succeeded, the request recorded.
    let id = submit(q, noop(), t(5)).await;
    let lease = claim(q, 1, t(6)).await[0].lease;
    q.cancel(id, t(7)).await.unwrap();
    q.complete(vec![done(lease, success())], t(8)).await.unwrap();
    let record = q.get(id).await.unwrap().unwrap();
    assert_eq!(record.status, JobStatus::Succeeded);
    assert!(record.cancel_requested);
    assert!(record.error.is_none() && record.history.is_empty());

    // A job cancelled while queued after a failed attempt: that attempt alone is in its history.
    let id = submit(q, JobSpec { max_attempts: Some(3), ..noop() }, t(10)).await;
    let lease = claim(q, 1, t(11)).await[0].lease;
    q.complete(vec![done(lease, failure("flaky", Some(t(12))))], t(12)).await.unwrap();
    q.cancel(id, t(13)).await.unwrap();
    let record = q.get(id).await.unwrap().unwrap();
    assert_eq!((record.status, record.error.as_deref()), (JobStatus::Cancelled, Some("cancelled")));
    assert_eq!(record.history, vec![failed(1, "flaky", 12)]);
}

/// Rule 5: an expired lease returns the job to `queued` with the attempt counted; the late
/// worker's completion is refused; with no attempts left the job fails 'lease expired'.
async fn expired_leases_are_recovered(q: &dyn QueueBackend) {
    let id = submit(q, JobSpec { max_attempts: Some(2), ..noop() }, t(0)).await;
    let first = q.dequeue(claim_of(1, 1_000, &["noop"]), t(0)).await.unwrap();
    q.tick(t(999), HOUR).await.unwrap();
    assert_eq!(status(q, id).await, JobStatus::Running, "the lease still holds");
    let changes = q.tick(t(2_000), HOUR).await.unwrap();
    assert!(changes.ready >= 1);
    let record = q.get(id).await.unwrap().unwrap();
    assert_eq!((record.status, record.attempts), (JobStatus::Queued, 1));
    assert_eq!(record.error, None, "retried: not the final outcome");
    assert_eq!(record.history, vec![failed(1, "lease expired", 2_000)]);
    let late = q.complete(vec![done(first[0].lease, success())], t(2_001)).await.unwrap();
    assert_eq!(late.stale, 1, "the first worker's completion is refused");
    let states = q.renew(vec![first[0].lease], Duration::from_secs(1), t(2_001)).await.unwrap();
    assert_eq!(states, vec![LeaseState::Lost]);
    let second = q.dequeue(claim_of(1, 1_000, &["noop"]), t(2_002)).await.unwrap();
    assert_eq!(second[0].record.attempts, 2);
    q.tick(t(4_000), HOUR).await.unwrap();
    let record = q.get(id).await.unwrap().unwrap();
    assert_eq!(
        (record.status, record.error.as_deref()),
        (JobStatus::Failed, Some("lease expired"))
    );
    let expected = vec![failed(1, "lease expired", 2_000), failed(2, "lease expired", 4_000)];
    assert_eq!(record.history, expected);

    // An expired attempt whose cancel was requested ends cancelled, in the history too.
    let id = submit(q, JobSpec { max_attempts: Some(3), ..noop() }, t(5_000)).await;
    q.dequeue(claim_of(1, 1_000, &["noop"]), t(5_000)).await.unwrap();
    q.cancel(id, t(5_001)).await.unwrap();
    q.tick(t(6_000), HOUR).await.unwrap();
    let record = q.get(id).await.unwrap().unwrap();
    let reason = "cancelled (lease expired)";
    assert_eq!((record.status, record.error.as_deref()), (JobStatus::Cancelled, Some(reason)));
    assert_eq!(record.history, vec![failed(1, reason, 6_000)]);
}

/// The history keeps every attempt that ended without success, however it ended, oldest first;
/// the error is the final outcome only (none after a success). Error texts are kept as given
/// (quotes, commas, braces), cut to 1024 bytes on a character boundary; at most the latest 100
/// entries are kept, whichever side ends the attempts (completions, expired leases).
async fn the_history_keeps_failed_attempts_and_the_error_the_outcome(q: &dyn QueueBackend) {
    let mut jobs = plan_batch(vec![noop()], t(0));
    jobs[0].max_attempts = 105; // beyond what a spec may ask, to reach the bound
    let id = jobs[0].id;
    q.submit(jobs, t(0)).await.unwrap();
    let tricky = r#"no, {"attempt":7,"error":"x","at":1} "quoted" \ é"#;
    // 1026 bytes: the cut at 1024 falls inside the second '€'.
    let long = format!("{}€€", "x".repeat(FailedAttempt::MAX_ERROR_BYTES - 4));
    let mut now = 1;
    for attempt in 1..=101 {
        let lease = claim(q, 1, t(now)).await[0].lease;
        let error = match attempt {
            1 => tricky,
            2 => &long,
            _ => "again",
        };
        q.complete(vec![done(lease, failure(error, Some(t(now))))], t(now + 1)).await.unwrap();
        now += 2;
    }
    // Attempts 102 and 103 lose their leases.
    for _ in 0..2 {
        q.dequeue(claim_of(1, 1_000, &["noop"]), t(now)).await.unwrap();
        now += 1_000;
        q.tick(t(now), HOUR).await.unwrap();
        let record = q.get(id).await.unwrap().unwrap();
        assert_eq!((record.status, record.error), (JobStatus::Queued, None));
    }
    let lease = claim(q, 1, t(now)).await[0].lease;
    q.complete(vec![done(lease, success())], t(now + 1)).await.unwrap();
    let record = q.get(id).await.unwrap().unwrap();
    assert_eq!((record.status, record.attempts), (JobStatus::Succeeded, 104));
    assert_eq!(record.error, None, "succeeded: the earlier failures are not its error");
    let numbers: Vec<u32> = record.history.iter().map(|h| h.attempt).collect();
    assert_eq!(numbers, (4..=103).collect::<Vec<_>>(), "the latest 100");
    assert_eq!(record.history[0], failed(4, "again", 8));
    assert_eq!(record.history[98], failed(102, "lease expired", now - 1_000));
    assert_eq!(record.history[99], failed(103, "lease expired", now));

    // Texts as given, cut on a character boundary.
    let id = submit(q, JobSpec { max_attempts: Some(3), ..noop() }, t(now)).await;
    for (attempt, error) in [(1, tricky), (2, long.as_str())] {
        let lease = claim(q, 1, t(now)).await[0].lease;
        q.complete(vec![done(lease, failure(error, Some(t(now))))], t(now)).await.unwrap();
        assert_eq!(q.get(id).await.unwrap().unwrap().history.len(), attempt);
    }
    let record = q.get(id).await.unwrap().unwrap();
    assert_eq!(record.history[0].error, tricky);
    let cut = format!("{}€", "x".repeat(FailedAttempt::MAX_ERROR_BYTES - 4));
    assert_eq!(record.history[1].error, cut);
    assert_eq!(cut.len(), FailedAttempt::MAX_ERROR_BYTES - 1);
}

/// Rule 5: renewing keeps a lease alive past its first expiry.
async fn renewal_keeps_a_lease(q: &dyn QueueBackend) {
    let id = submit(q, noop(), t(0)).await;
    let lease = q.dequeue(claim_of(1, 1_000, &["noop"]), t(0)).await.unwrap()[0].lease;
    let states = q.renew(vec![lease], Duration::from_millis(1_000), t(900)).await.unwrap();
    assert_eq!(states, vec![LeaseState::Active]);
    q.tick(t(1_500), HOUR).await.unwrap();
    assert_eq!(status(q, id).await, JobStatus::Running);
    q.tick(t(2_000), HOUR).await.unwrap();
    assert_eq!(status(q, id).await, JobStatus::Queued);
}

/// Crash recovery across instances: the job of a worker that vanished runs on another one.
async fn another_instance_takes_over_a_dead_workers_job(q: &dyn QueueBackend) {
    let id = submit(q, noop(), t(0)).await;
    let dead = q.dequeue(claim_of(1, 1_000, &["noop"]), t(0)).await.unwrap();
    let mut other = claim_of(1, 1_000, &["noop"]);
    other.workers = vec![Arc::from("other-host/w0")];
    assert!(q.dequeue(other.clone(), t(500)).await.unwrap().is_empty());
    q.tick(t(1_001), HOUR).await.unwrap();
    let taken = q.dequeue(other, t(1_002)).await.unwrap();
    assert_eq!(taken[0].record.id, id);
    assert_eq!(taken[0].record.worker.as_deref(), Some("other-host/w0"));
    assert_ne!(taken[0].lease.token, dead[0].lease.token, "a new attempt has a new token");
    q.complete(vec![done(taken[0].lease, success())], t(1_003)).await.unwrap();
    let late = q.complete(vec![done(dead[0].lease, failure("late", None))], t(1_004)).await;
    assert_eq!(late.unwrap().stale, 1);
    assert_eq!(status(q, id).await, JobStatus::Succeeded, "the newer attempt's outcome stands");
}

/// Rule 10: a released job goes back to `queued` without its attempt; one whose cancel was
/// requested ends `cancelled`.
async fn release_hands_jobs_back(q: &dyn QueueBackend) {
    let kept = submit(q, noop(), t(0)).await;
    let stopped = submit(q, noop(), t(0)).await;
    let claimed = claim(q, 2, t(1)).await;
    q.cancel(stopped, t(2)).await.unwrap();
    let changes = q.release(claimed.iter().map(|c| c.lease).collect(), t(3)).await.unwrap();
    assert_eq!((changes.ready, changes.finished.clone()), (1, vec![stopped]));
    let record = q.get(kept).await.unwrap().unwrap();
    assert_eq!((record.status, record.attempts), (JobStatus::Queued, 0));
    assert!(record.history.is_empty(), "a refunded attempt did not end");
    let record = q.get(stopped).await.unwrap().unwrap();
    assert_eq!((record.status, record.error.as_deref()), (JobStatus::Cancelled, Some("cancelled")));
    assert_eq!(record.history, vec![failed(1, "cancelled", 3)]);
    let again = q.release(claimed.iter().map(|c| c.lease).collect(), t(4)).await.unwrap();
    assert_eq!(again.stale, 2);
}

/// Progress is stored for the running attempt only.
async fn progress_reports(q: &dyn QueueBackend) {
    let id = submit(q, noop(), t(0)).await;
    let lease = claim(q, 1, t(1)).await[0].lease;
    let progress = json_from_str(r#"{"done": 4, "total": 10}"#).unwrap();
    q.report_progress(lease, progress, t(2)).await.unwrap();
    let record = q.get(id).await.unwrap().unwrap();
    assert_eq!(record.progress.unwrap().get(), r#"{"done": 4, "total": 10}"#);
    let stale = LeaseRef { id, token: lease.token.wrapping_add(1) };
    q.report_progress(stale, json_from_str("1").unwrap(), t(3)).await.unwrap();
    assert_eq!(
        q.get(id).await.unwrap().unwrap().progress.unwrap().get(),
        r#"{"done": 4, "total": 10}"#
    );
}

/// Idempotency keys return the first job, in one batch or across submits, until retention
/// removes it.
async fn idempotency_keys(q: &dyn QueueBackend) {
    let spec = JobSpec { idempotency_key: Some("refresh:42".into()), ..noop() };
    let first = submit(q, spec.clone(), t(0)).await;
    let jobs = plan(vec![spec.clone()], false, &AnyKind, &SpecDefaults::default(), t(1)).unwrap();
    let again = q.submit(jobs, t(1)).await.unwrap();
    assert!(!again.jobs[0].created);
    assert_eq!(again.jobs[0].record.id, first);
    let lease = claim(q, 1, t(2)).await[0].lease;
    q.complete(vec![done(lease, success())], t(3)).await.unwrap();
    q.tick(t(3 + 1_000), Duration::from_secs(1)).await.unwrap();
    assert!(q.get(first).await.unwrap().is_none(), "removed after retention");
    let fresh = submit(q, spec, t(5_000)).await;
    assert_ne!(fresh, first, "the key is free again");
}

/// Rule 7: terminal jobs are removed after retention, with their counts; others stay.
async fn retention_removes_terminal_jobs(q: &dyn QueueBackend) {
    let old = submit(q, noop(), t(0)).await;
    let lease = claim(q, 1, t(1)).await[0].lease;
    q.complete(vec![done(lease, success())], t(2)).await.unwrap();
    let waiting =
        submit(q, JobSpec { run_at: Some(t(HOUR.as_millis() as i64 * 5)), ..noop() }, t(3)).await;
    q.tick(t(2 + 999), Duration::from_secs(1)).await.unwrap();
    assert!(q.get(old).await.unwrap().is_some(), "kept within retention");
    q.tick(t(2 + 1_000), Duration::from_secs(1)).await.unwrap();
    assert!(q.get(old).await.unwrap().is_none(), "removed after retention");
    assert!(q.get(waiting).await.unwrap().is_some(), "a job that is not terminal stays");
    let stats = q.stats().await.unwrap();
    assert_eq!((stats["default"].succeeded, stats["default"].scheduled), (0, 1));
    let listed = q.list(&ListQuery { limit: 10, ..ListQuery::default() }).await.unwrap();
    assert_eq!(listed.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![waiting]);
}

/// Stats count jobs per queue and state.
async fn stats_count_per_queue_and_state(q: &dyn QueueBackend) {
    submit(q, noop(), t(0)).await;
    submit(q, noop(), t(0)).await;
    submit(q, JobSpec { queue: Some("mail".into()), run_at: Some(t(9_000)), ..noop() }, t(0)).await;
    let lease = claim(q, 1, t(1)).await[0].lease;
    let stats = q.stats().await.unwrap();
    assert_eq!((stats["default"].queued, stats["default"].running), (1, 1));
    assert_eq!(stats["mail"].scheduled, 1);
    q.complete(vec![done(lease, success())], t(2)).await.unwrap();
    let stats = q.stats().await.unwrap();
    assert_eq!((stats["default"].running, stats["default"].succeeded), (0, 1));
}

/// A filtered listing reads a bounded number of jobs per call: when few jobs match, a page may
/// come back short (even empty) with a cursor, and following the cursors finds every match.
async fn a_filtered_listing_reads_a_bounded_number_of_jobs(q: &dyn QueueBackend) {
    let rare = submit(q, JobSpec::new("rare"), t(0)).await;
    let common = jobyard::queue::LIST_EXAMINE + 10;
    for chunk in 0..common.div_ceil(1_000) {
        let n = (common - chunk * 1_000).min(1_000);
        q.submit(plan_batch(vec![noop(); n], t(1)), t(1)).await.unwrap();
    }
    let mut query = ListQuery { kind: Some("rare".into()), limit: 10, ..ListQuery::default() };
    let first = q.list(&query).await.unwrap();
    assert!(first.jobs.is_empty(), "the one match lies beyond what one call reads");
    assert!(first.next_cursor.is_some(), "a short page says where to go on");
    let mut found = Vec::new();
    let mut pages = 1;
    query.cursor = first.next_cursor;
    while query.cursor.is_some() {
        let page = q.list(&query).await.unwrap();
        found.extend(page.jobs.iter().map(|j| j.id));
        query.cursor = page.next_cursor;
        pages += 1;
        assert!(pages < 10, "the cursors go on");
    }
    assert_eq!(found, vec![rare]);
}

/// Listings: newest first, paged by cursor, filtered by status, kind and queue.
async fn listings_page_and_filter(q: &dyn QueueBackend) {
    let mut ids = Vec::new();
    for i in 0..7 {
        let spec = JobSpec {
            queue: Some(if i % 2 == 0 { "even" } else { "odd" }.into()),
            ..JobSpec::new(if i < 5 { "noop" } else { "other" })
        };
        ids.push(submit(q, spec, t(i)).await);
    }
    let lease = q.dequeue(claim_of(1, 10_000, &["other"]), t(10)).await.unwrap()[0].lease;
    q.complete(vec![done(lease, failure("x", None))], t(11)).await.unwrap();
    let page = |status, kind: Option<&str>, queue: Option<&str>, limit, cursor| ListQuery {
        status,
        kind: kind.map(Into::into),
        queue: queue.map(Into::into),
        limit,
        cursor,
        ..ListQuery::default()
    };
    let first = q.list(&page(None, None, None, 3, None)).await.unwrap();
    let got: Vec<JobId> = first.jobs.iter().map(|j| j.id).collect();
    assert_eq!(got, vec![ids[6], ids[5], ids[4]]);
    let second = q.list(&page(None, None, None, 3, first.next_cursor.clone())).await.unwrap();
    assert_eq!(second.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[3], ids[2], ids[1]]);
    let last = q.list(&page(None, None, None, 3, second.next_cursor.clone())).await.unwrap();
    assert_eq!(last.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[0]]);
    assert!(last.next_cursor.is_none());
    let failed = q.list(&page(Some(JobStatus::Failed), None, None, 10, None)).await.unwrap();
    assert_eq!(failed.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[5]]);
    let queued = q.list(&page(Some(JobStatus::Queued), None, None, 10, None)).await.unwrap();
    assert_eq!(queued.jobs.len(), 6);
    let others = q.list(&page(None, Some("other"), None, 10, None)).await.unwrap();
    assert_eq!(others.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[6], ids[5]]);
    let odd = q.list(&page(Some(JobStatus::Queued), Some("noop"), Some("odd"), 10, None)).await;
    assert_eq!(odd.unwrap().jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![ids[3], ids[1]]);
    let err = q.list(&page(None, None, None, 10, Some("nonsense".into()))).await.unwrap_err();
    assert!(matches!(err, QueueError::InvalidCursor(_)));
}

/// A job id created `ms` milliseconds after `t(0)` (ids are time-ordered).
fn id_at(ms: u64) -> JobId {
    let at = 1_800_000_000_000 + ms;
    let stamp =
        uuid::Timestamp::from_unix(uuid::NoContext, at / 1000, (at % 1000) as u32 * 1_000_000);
    JobId(uuid::Uuid::new_v7(stamp))
}

/// Every id of a listing, following its cursors with pages of `limit`.
async fn list_every_page(q: &dyn QueueBackend, queue: Option<&str>, limit: usize) -> Vec<JobId> {
    let mut query = ListQuery { queue: queue.map(Into::into), limit, ..ListQuery::default() };
    let mut ids = Vec::new();
    for _ in 0..100 {
        let page = q.list(&query).await.unwrap();
        ids.extend(page.jobs.iter().map(|j| j.id));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return ids,
        }
    }
    panic!("the cursors never end");
}

/// Listings find every job newest first whenever it was created, by any kind of submit, across
/// queues; jobs removed by retention leave them, and later jobs created in the same instants as
/// removed ones are listed.
async fn listings_span_jobs_created_over_time(q: &dyn QueueBackend) {
    listings_span_jobs_created(q, false).await;
}

/// The same when jobs arrive in another order than their ids' (instances submitting at once,
/// each with its own clock): the listing still goes by id. Only a shared backend sees this.
async fn listings_go_by_id_whatever_the_arrival_order(q: &dyn QueueBackend) {
    listings_span_jobs_created(q, true).await;
}

async fn listings_span_jobs_created(q: &dyn QueueBackend, shuffled: bool) {
    // Instants a few ms apart, ~100 ms apart and seconds apart.
    let mut offsets = [5_000, 0, 99, 1, 100, 2, 101, 250, 1_001, 1_000, 60_000, 5_001, 199, 98];
    if !shuffled {
        offsets.sort_unstable();
    }
    let mut by_queue: Vec<(JobId, &str)> = Vec::new();
    for (n, chunk) in offsets.chunks(3).enumerate() {
        let queue = if n % 2 == 0 { "a" } else { "b" };
        let specs = vec![JobSpec { queue: Some(queue.into()), ..noop() }; chunk.len()];
        let mut jobs = plan_batch(specs, t(0));
        for (job, ms) in jobs.iter_mut().zip(chunk) {
            job.id = id_at(*ms);
            by_queue.push((job.id, queue));
        }
        q.submit(jobs, t(0)).await.unwrap();
    }
    // One job submitted with an idempotency key (the backends' other way in).
    let spec = JobSpec { idempotency_key: Some("once".into()), ..noop() };
    let mut keyed = plan(vec![spec], false, &AnyKind, &SpecDefaults::default(), t(0)).unwrap();
    keyed[0].id = id_at(if shuffled { 100 } else { 70_000 });
    by_queue.push((keyed[0].id, "default"));
    q.submit(keyed, t(0)).await.unwrap();

    let newest_first = |queue: Option<&str>, gone: &[JobId]| -> Vec<JobId> {
        let mut ids: Vec<JobId> = by_queue
            .iter()
            .filter(|(id, q)| queue.is_none_or(|name| name == *q) && !gone.contains(id))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids
    };
    assert_eq!(list_every_page(q, None, 3).await, newest_first(None, &[]));
    assert_eq!(list_every_page(q, Some("b"), 2).await, newest_first(Some("b"), &[]));
    assert_eq!(list_every_page(q, None, 1000).await, newest_first(None, &[]));

    // Cancel every job of queue `a`, and the oldest of queue `b` (which shares its time slice
    // with another job of `b`), then let retention remove them.
    let mut gone: Vec<JobId> =
        by_queue.iter().filter(|(_, queue)| *queue == "a").map(|(id, _)| *id).collect();
    let in_b = by_queue.iter().filter(|(_, queue)| *queue == "b");
    gone.push(in_b.map(|(id, _)| *id).min().unwrap());
    for id in &gone {
        q.cancel(*id, t(1)).await.unwrap();
    }
    q.tick(t(10_000), Duration::from_secs(1)).await.unwrap();
    assert!(q.get(gone[0]).await.unwrap().is_none(), "removed by retention");
    assert_eq!(list_every_page(q, None, 2).await, newest_first(None, &gone));
    assert!(list_every_page(q, Some("a"), 5).await.is_empty());

    // A new job created in the same instant as a removed one.
    let mut again = plan_batch(vec![JobSpec { queue: Some("a".into()), ..noop() }], t(20_000));
    again[0].id = id_at(5_000);
    let late = again[0].id;
    q.submit(again, t(20_000)).await.unwrap();
    assert_eq!(list_every_page(q, Some("a"), 5).await, vec![late]);
}

/// Listings of jobs created far apart (each at its own time, as on a quiet queue) page through
/// all of them, newest first, over one queue or several.
async fn listings_page_through_jobs_created_far_apart(q: &dyn QueueBackend) {
    let mut all = Vec::new();
    for n in 0..45u64 {
        let queue = if n % 3 == 0 { "b" } else { "a" };
        let mut jobs = plan_batch(vec![JobSpec { queue: Some(queue.into()), ..noop() }], t(0));
        // 150 ms apart, a pair of them in the same instant now and then.
        jobs[0].id = id_at(n / 4 * 4 * 150 + n % 4 * 150 + u64::from(n % 7 == 0));
        all.push((jobs[0].id, queue));
        q.submit(jobs, t(0)).await.unwrap();
    }
    let newest_first = |queue: Option<&str>| -> Vec<JobId> {
        let mut ids: Vec<JobId> = (all.iter())
            .filter(|(_, q)| queue.is_none_or(|name| name == *q))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable_by(|a, b| b.cmp(a));
        ids
    };
    assert_eq!(list_every_page(q, None, 7).await, newest_first(None));
    assert_eq!(list_every_page(q, None, 1000).await, newest_first(None));
    assert_eq!(list_every_page(q, Some("a"), 4).await, newest_first(Some("a")));
    assert_eq!(list_every_page(q, Some("b"), 100).await, newest_first(Some("b")));
}

fn schedule(name: &str, cron: &str, now: DateTime<Utc>) -> Schedule {
    Schedule {
        name: name.into(),
        cron: cron.into(),
        timezone: "UTC".into(),
        job: noop(),
        catch_up: false,
        created_at: now,
        updated_at: now,
        next_run_at: Some(now + chrono::Duration::seconds(5)),
        last_run_at: None,
        last_job_id: None,
    }
}

/// Schedules: stored, listed by name, replaced (keeping creation and last run), fired,
/// deleted.
async fn schedules_are_stored(q: &dyn QueueBackend) {
    assert!(q.put_schedule(schedule("b", "*/5 * * * * *", t(0))).await.unwrap());
    assert!(q.put_schedule(schedule("a", "0 * * * * *", t(0))).await.unwrap());
    let names: Vec<String> =
        q.list_schedules().await.unwrap().into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["a", "b"]);
    let job = JobId::new();
    let fire = Fire { fired: Some((t(5_000), job)), next_run_at: Some(t(10_000)) };
    q.record_fire("b", fire).await.unwrap();
    assert!(!q.put_schedule(schedule("b", "*/7 * * * * *", t(6_000))).await.unwrap());
    let stored = q.get_schedule("b").await.unwrap().unwrap();
    assert_eq!(stored.cron, "*/7 * * * * *");
    assert_eq!((stored.created_at, stored.updated_at), (t(0), t(6_000)));
    assert_eq!((stored.last_run_at, stored.last_job_id), (Some(t(5_000)), Some(job)));
    assert_eq!(stored.next_run_at, Some(t(11_000)));
    assert!(q.delete_schedule("b").await.unwrap());
    assert!(!q.delete_schedule("b").await.unwrap());
    assert!(q.get_schedule("b").await.unwrap().is_none());
    let missing = Fire { fired: None, next_run_at: None };
    assert!(matches!(q.record_fire("b", missing).await, Err(QueueError::ScheduleNotFound(_))));
}

/// Rule 7: a queue holds at most `max_queued` jobs waiting to run; a batch that would exceed it
/// is refused whole, and room comes back as jobs start.
async fn a_full_queue_refuses_submits(q: &dyn QueueBackend) {
    submit(q, noop(), t(0)).await;
    submit(q, JobSpec { run_at: Some(t(60_000)), ..noop() }, t(0)).await;
    let two = plan_batch(vec![noop(), noop()], t(1));
    let err = q.submit(two, t(1)).await.unwrap_err();
    assert_eq!(err, QueueError::QueueFull { queue: "default".into(), max: 3 });
    assert_eq!(q.stats().await.unwrap()["default"].queued, 1, "nothing of the batch was kept");
    let other = JobSpec { queue: Some("other".into()), ..noop() };
    submit(q, other, t(2)).await; // another queue has its own room
    submit(q, noop(), t(3)).await; // the third fits
    assert!(matches!(
        q.submit(plan_batch(vec![noop()], t(4)), t(4)).await,
        Err(QueueError::QueueFull { .. })
    ));
    claim(q, 1, t(5)).await;
    submit(q, noop(), t(6)).await; // a running job does not count
}

/// Rule 7: beyond the count kept per queue, the oldest terminal jobs go first.
async fn retention_keeps_the_newest_terminal_jobs_per_queue(q: &dyn QueueBackend) {
    let mut finished = Vec::new();
    for i in 0..4 {
        let id = submit(q, noop(), t(i * 10)).await;
        let lease = claim(q, 1, t(i * 10 + 1)).await[0].lease;
        q.complete(vec![done(lease, success())], t(i * 10 + 2)).await.unwrap();
        finished.push(id);
    }
    let other = submit(q, JobSpec { queue: Some("other".into()), ..noop() }, t(50)).await;
    let lease = claim(q, 1, t(51)).await[0].lease;
    q.complete(vec![done(lease, success())], t(52)).await.unwrap();
    let queued = submit(q, noop(), t(60)).await;
    q.tick(t(70), HOUR).await.unwrap();
    for (i, id) in finished.iter().enumerate() {
        assert_eq!(q.get(*id).await.unwrap().is_some(), i >= 2, "job {i} of 4");
    }
    assert!(q.get(other).await.unwrap().is_some(), "each queue keeps its own");
    assert!(q.get(queued).await.unwrap().is_some(), "jobs not finished are never removed");
    assert_eq!(q.stats().await.unwrap()["default"].succeeded, 2);
}

/// A runtime on `queue` (a store it may share with other runtimes), with the built-in kinds.
fn runtime_on(queue: &Arc<dyn QueueBackend>) -> jobyard::Runtime {
    let mut config = test_config();
    config.data_dir = std::env::temp_dir();
    jobyard::Runtime::builder()
        .config(config)
        .queue_backend(queue.clone())
        .with_builtin_kinds()
        .start()
        .expect("runtime starts")
}

/// A cron tick far ahead (so the runtimes' own schedulers never reach it), and the steps at it.
const FAR_TICK: &str = "2099-01-01T00:00:00Z";
/// A retention that keeps, at the far tick, the jobs the runtimes ran today.
const KEEP_LONG: Duration = Duration::from_secs(200 * 365 * 86_400);

fn far_schedule(catch_up: bool) -> jobyard::schedule::ScheduleSpec {
    jobyard::schedule::ScheduleSpec {
        cron: "0 0 0 1 1 * 2099".into(),
        timezone: None,
        job: JobSpec { queue: Some("cron".into()), ..noop() },
        catch_up,
    }
}

async fn cron_jobs(q: &dyn QueueBackend) -> Vec<jobyard::JobRecord> {
    let query = ListQuery { queue: Some("cron".into()), limit: 100, ..ListQuery::default() };
    q.list(&query).await.unwrap().jobs
}

/// Rule 6: two runtimes on one store stepping the same tick enqueue one job.
async fn cron_fires_once_per_tick_with_two_runtimes(q: Arc<dyn QueueBackend>) {
    let (a, b) = (runtime_on(&q), runtime_on(&q));
    two_runtimes_fire_once(a, b, q).await;
}

async fn two_runtimes_fire_once(
    a: jobyard::Runtime,
    b: jobyard::Runtime,
    q: Arc<dyn QueueBackend>,
) {
    a.put_schedule("nightly", far_schedule(false)).await.unwrap();
    let tick: DateTime<Utc> = FAR_TICK.parse().unwrap();
    let retention = KEEP_LONG;
    let (first, second) = tokio::join!(
        jobyard::actors::scheduler::step(a.client(), retention, tick),
        jobyard::actors::scheduler::step(b.client(), retention, tick)
    );
    first.unwrap();
    second.unwrap();
    let jobs = cron_jobs(&*q).await;
    assert_eq!(jobs.len(), 1, "one job for the tick, whichever runtime fired it");
    let key = format!("cron:nightly:{}", tick.timestamp_millis());
    assert_eq!(jobs[0].idempotency_key.as_deref(), Some(key.as_str()));
    let schedule = b.get_schedule("nightly").await.unwrap();
    assert_eq!((schedule.last_run_at, schedule.last_job_id), (Some(tick), Some(jobs[0].id)));
    a.shutdown().await;
    b.shutdown().await;
}

/// Rule 6: a tick missed while no instance ran is skipped, unless `catch_up`, which runs the
/// latest missed tick once.
async fn missed_ticks_are_skipped_unless_catch_up(q: Arc<dyn QueueBackend>) {
    let runtime = runtime_on(&q);
    let late: DateTime<Utc> =
        FAR_TICK.parse::<DateTime<Utc>>().unwrap() + chrono::Duration::hours(1);
    let retention = KEEP_LONG;
    runtime.put_schedule("skipped", far_schedule(false)).await.unwrap();
    jobyard::actors::scheduler::step(runtime.client(), retention, late).await.unwrap();
    assert!(cron_jobs(&*q).await.is_empty(), "a missed tick is not replayed");
    runtime.delete_schedule("skipped").await.unwrap();
    runtime.put_schedule("caught", far_schedule(true)).await.unwrap();
    jobyard::actors::scheduler::step(runtime.client(), retention, late).await.unwrap();
    jobyard::actors::scheduler::step(runtime.client(), retention, late).await.unwrap();
    let jobs = cron_jobs(&*q).await;
    assert_eq!(jobs.len(), 1, "with catch_up the latest missed tick runs once");
    runtime.shutdown().await;
}

/// A step that left work undone (more than one call's worth of jobs past retention) plans the
/// next step at once instead of after the usual sleep, so retention keeps up with any rate.
async fn a_step_with_work_left_runs_again_at_once(q: Arc<dyn QueueBackend>) {
    let runtime = runtime_on(&q);
    let total = jobyard::queue::STEP_LIMIT + 50;
    let ids: Vec<JobId> = runtime
        .submit_batch(vec![noop(); total])
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.record.id)
        .collect();
    for id in &ids {
        let record = runtime.wait(*id, Duration::from_secs(30)).await.unwrap();
        assert_eq!(record.status, JobStatus::Succeeded);
    }
    // At the far tick every one of them is past a one-hour retention; the runtime's own
    // scheduler, stepping at the real time, keeps them.
    let far: DateTime<Utc> = FAR_TICK.parse().unwrap();
    let hour = Duration::from_secs(3600);
    let next = jobyard::actors::scheduler::step(runtime.client(), hour, far).await.unwrap();
    assert!(next <= far, "work was left, yet the next step is planned for {next}");
    let left = runtime.stats().await.unwrap().queues["default"].succeeded;
    assert_eq!(left, 50, "one step removes at most STEP_LIMIT jobs");
    let next = jobyard::actors::scheduler::step(runtime.client(), hour, far).await.unwrap();
    assert!(next > far, "nothing left to do: the next step waits");
    assert_eq!(runtime.stats().await.unwrap().queues["default"].succeeded, 0);
    runtime.shutdown().await;
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $( #[actix_web::test] async fn $name() {
                let backend = super::memory();
                super::$name(&*backend.queue).await;
            } )*
            #[actix_web::test] async fn cron_fires_once_per_tick_with_two_runtimes() {
                super::cron_fires_once_per_tick_with_two_runtimes(super::memory().queue).await;
            }
            #[actix_web::test] async fn missed_ticks_are_skipped_unless_catch_up() {
                super::missed_ticks_are_skipped_unless_catch_up(super::memory().queue).await;
            }
            #[actix_web::test] async fn a_step_with_work_left_runs_again_at_once() {
                super::a_step_with_work_left_runs_again_at_once(super::memory().queue).await;
            }
            #[actix_web::test] async fn a_full_queue_refuses_submits() {
                let limits = super::QueueLimits { max_queued: 3, ..Default::default() };
                super::a_full_queue_refuses_submits(&*super::memory_with(limits).queue).await;
            }
            #[actix_web::test] async fn retention_keeps_the_newest_terminal_jobs_per_queue() {
                let limits = super::QueueLimits { retention_max_jobs: 2, ..Default::default() };
                let backend = super::memory_with(limits);
                super::retention_keeps_the_newest_terminal_jobs_per_queue(&*backend.queue).await;
            }
        }
        mod redis {
            $( #[actix_web::test] async fn $name() {
                let backend = super::redis().await;
                super::$name(&*backend.queue).await;
                assert!(backend.redis.is_some_and(|r| r.answers_ping()), "redis still up");
            } )*
            #[actix_web::test] async fn cron_fires_once_per_tick_with_two_runtimes() {
                // Two queues on one Redis and prefix: two instances sharing one store.
                let server = super::TestRedis::start();
                let prefix = format!("t{}", fastrand::u32(..));
                let one = super::redis_queue(&server, &prefix).await;
                let two = super::redis_queue(&server, &prefix).await;
                let (a, b) = (super::runtime_on(&one), super::runtime_on(&two));
                super::two_runtimes_fire_once(a, b, one).await;
            }
            #[actix_web::test] async fn missed_ticks_are_skipped_unless_catch_up() {
                let backend = super::redis().await;
                super::missed_ticks_are_skipped_unless_catch_up(backend.queue.clone()).await;
            }
            #[actix_web::test] async fn a_step_with_work_left_runs_again_at_once() {
                let backend = super::redis().await;
                super::a_step_with_work_left_runs_again_at_once(backend.queue.clone()).await;
            }
            #[actix_web::test] async fn a_full_queue_refuses_submits() {
                let limits = super::QueueLimits { max_queued: 3, ..Default::default() };
                super::a_full_queue_refuses_submits(&*super::redis_with(limits).await.queue).await;
            }
            #[actix_web::test] async fn retention_keeps_the_newest_terminal_jobs_per_queue() {
                let limits = super::QueueLimits { retention_max_jobs: 2, ..Default::default() };
                let backend = super::redis_with(limits).await;
                super::retention_keeps_the_newest_terminal_jobs_per_queue(&*backend.queue).await;
            }
            #[actix_web::test] async fn claims_forget_the_ids_they_pass_over() {
                let backend = super::redis().await;
                super::claims_pass_over_cancelled_jobs(&*backend.queue).await;
                let redis = backend.redis.as_ref().unwrap();
                let left = redis.command(&[b"KEYS", b"*:{q}:skip:*"]);
                assert_eq!(left, b"*0\r\n", "{}", String::from_utf8_lossy(&left));
            }
            #[actix_web::test] async fn claims_forget_the_sources_they_find_empty() {
                let backend = super::redis().await;
                let q = &*backend.queue;
                // The first attempt comes from a fresh list (a submit), the retry from a ready
                // set (promoted when due).
                let spec = super::JobSpec { max_attempts: Some(2), ..super::noop() };
                let id = super::submit(q, spec, super::t(0)).await;
                let lease = super::claim(q, 1, super::t(1)).await[0].lease;
                let retry = super::failure("again", Some(super::t(2)));
                q.complete(vec![super::done(lease, retry)], super::t(2)).await.unwrap();
                let lease = super::claim(q, 1, super::t(3)).await[0].lease;
                assert_eq!(lease.id, id, "the retry is claimed");
                let redis = backend.redis.as_ref().unwrap();
                let registry = |name: &[u8]| redis.command(&[b"KEYS", name]);
                assert!(registry(b"*:{q}:rq").starts_with(b"*1\r\n"), "the ready set is named");
                assert!(super::claim(q, 1, super::t(4)).await.is_empty());
                for name in [&b"*:{q}:rl"[..], b"*:{q}:rq"] {
                    let left = registry(name);
                    assert_eq!(left, b"*0\r\n", "{}", String::from_utf8_lossy(&left));
                }
                q.complete(vec![super::done(lease, super::success())], super::t(5)).await.unwrap();
                // A new job names its fresh list again, and a retry its ready set: both are
                // claimed.
                let again = super::submit(q, super::noop(), super::t(6)).await;
                let lease = super::claim(q, 1, super::t(7)).await[0].lease;
                assert_eq!(lease.id, again);
                let retry = super::failure("again", Some(super::t(8)));
                q.complete(vec![super::done(lease, retry)], super::t(8)).await.unwrap();
                assert_eq!(super::claim(q, 1, super::t(9)).await[0].lease.id, again);
            }
            #[actix_web::test] async fn listings_go_by_id_whatever_the_arrival_order() {
                let backend = super::redis().await;
                super::listings_go_by_id_whatever_the_arrival_order(&*backend.queue).await;
                // Queue `a` held jobs of five time slices, all removed, then one new job: one
                // slice of ids is left, not five.
                let redis = backend.redis.as_ref().unwrap();
                let left = redis.command(&[b"KEYS", b"*:{q}:lj:a:*"]);
                assert!(left.starts_with(b"*1\r\n"), "{}", String::from_utf8_lossy(&left));
            }
        }
    };
}

suite!(
    submit_and_read_back,
    priority_then_submit_order,
    a_claim_merges_queues_and_kinds_by_priority,
    claims_take_only_the_named_kinds,
    a_claim_starts_an_attempt,
    success_stores_the_result,
    retries_and_final_failures,
    a_due_retry_is_queued_at_once,
    delayed_jobs_wait_for_their_time,
    dependencies_release_and_cascade,
    a_large_fan_out_is_settled_over_bounded_calls,
    dependency_checks_at_submit,
    cancelling_jobs_that_do_not_run,
    claims_pass_over_cancelled_jobs,
    cancelling_a_running_job,
    expired_leases_are_recovered,
    the_history_keeps_failed_attempts_and_the_error_the_outcome,
    renewal_keeps_a_lease,
    another_instance_takes_over_a_dead_workers_job,
    release_hands_jobs_back,
    progress_reports,
    idempotency_keys,
    retention_removes_terminal_jobs,
    stats_count_per_queue_and_state,
    listings_page_and_filter,
    listings_span_jobs_created_over_time,
    listings_page_through_jobs_created_far_apart,
    a_filtered_listing_reads_a_bounded_number_of_jobs,
    schedules_are_stored,
);
