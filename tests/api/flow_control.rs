//! Flow control on every queue backend (rule 11): rate and concurrency limits, costs, holds,
//! groups taking turns, paused queues. Time is stepped by the tests, as in the rest of the
//! conformance suite.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobyard::job::record::json_null;
use jobyard::job::spec::{plan, KindLookup, SpecDefaults};
use jobyard::job::{JobId, JobSpec, JobStatus};
use jobyard::queue::flow::{LimitSpec, Rate};
use jobyard::queue::{Claim, Claimed, Completion, Outcome, QueueBackend, QueueError};

use crate::queue_backends::{memory, redis, t};

struct AnyKind;
impl KindLookup for AnyKind {
    fn lookup(&self, kind: &str) -> Option<Arc<str>> {
        Some(Arc::from(kind))
    }
}

fn under(limits: &[&str]) -> JobSpec {
    JobSpec { limits: Some(limits.iter().map(|l| l.to_string()).collect()), ..noop() }
}

fn noop() -> JobSpec {
    JobSpec::new("noop")
}

fn in_group(group: &str) -> JobSpec {
    JobSpec { group: Some(group.into()), ..noop() }
}

fn rate(tokens: u64, per_ms: u64) -> LimitSpec {
    LimitSpec { rate: Some(Rate { tokens, per_ms }), concurrency: None }
}

fn concurrency(n: u64) -> LimitSpec {
    LimitSpec { rate: None, concurrency: Some(n) }
}

async fn put(q: &dyn QueueBackend, name: &str, spec: LimitSpec) {
    q.put_limit(name, spec, t(0)).await.expect("limit stored");
}

async fn submit_all(q: &dyn QueueBackend, specs: Vec<JobSpec>, now: DateTime<Utc>) -> Vec<JobId> {
    let mut ids = Vec::with_capacity(specs.len());
    let mut specs = specs.into_iter().peekable();
    while specs.peek().is_some() {
        let batch: Vec<JobSpec> = specs.by_ref().take(1_000).collect();
        let jobs = plan(batch, true, &AnyKind, &SpecDefaults::default(), now).unwrap();
        let submitted = q.submit(jobs, now).await.expect("submitted");
        ids.extend(submitted.jobs.iter().map(|s| s.record.id));
    }
    ids
}

async fn submit(q: &dyn QueueBackend, spec: JobSpec, now: DateTime<Utc>) -> JobId {
    submit_all(q, vec![spec], now).await[0]
}

fn claim_of(n: usize) -> Claim {
    Claim {
        workers: (0..n).map(|i| Arc::from(format!("flow/w{i}"))).collect(),
        lease: Duration::from_secs(600),
        kinds: vec![Arc::from("noop")].into(),
    }
}

async fn claim(q: &dyn QueueBackend, n: usize, now: DateTime<Utc>) -> Vec<Claimed> {
    q.dequeue(claim_of(n), now).await.expect("claim")
}

fn ids(claimed: &[Claimed]) -> Vec<JobId> {
    claimed.iter().map(|c| c.record.id).collect()
}

async fn succeed(q: &dyn QueueBackend, claimed: &[Claimed], now: DateTime<Utc>) {
    let done = claimed
        .iter()
        .map(|c| Completion { lease: c.lease, outcome: Outcome::Succeeded(json_null()) })
        .collect();
    q.complete(done, now).await.expect("completed");
}

/// A rate of 10 per second over 200 queued jobs: no one-second window holds more than 10
/// starts, and every job starts in the end.
async fn a_rate_limit_holds_in_every_window(q: &dyn QueueBackend) {
    put(q, "github", rate(10, 1_000)).await;
    submit_all(q, vec![under(&["github"]); 200], t(0)).await;
    let mut starts = Vec::new();
    let mut now = 0;
    while starts.len() < 200 && now < 30_000 {
        let claims = q.claim(claim_of(16), t(now)).await.unwrap();
        starts.extend(claims.jobs.iter().map(|_| now));
        if claims.jobs.is_empty() {
            let retry = claims.retry_at.expect("a throttled claim says when the limit frees");
            assert!(retry > t(now), "{retry} is after {now}");
        }
        succeed(q, &claims.jobs, t(now)).await;
        now += 50;
    }
    assert_eq!(starts.len(), 200, "every job started by {now} ms");
    for (i, &start) in starts.iter().enumerate() {
        let in_window = starts[i..].iter().take_while(|&&s| s < start + 1_000).count();
        assert!(in_window <= 10, "{in_window} starts in the second from {start} ms");
    }
}

/// A concurrency limit of 2: never 3 running; an ending frees a place.
async fn a_concurrency_limit_caps_running_jobs(q: &dyn QueueBackend) {
    put(q, "db", concurrency(2)).await;
    submit_all(q, vec![under(&["db"]); 5], t(0)).await;
    let first = claim(q, 5, t(1)).await;
    assert_eq!(first.len(), 2);
    let blocked = q.claim(claim_of(5), t(2)).await.unwrap();
    assert!(blocked.jobs.is_empty());
    assert_eq!(blocked.retry_at, None, "a running job's end frees it, not time");
    assert_eq!(q.get_limit("db", t(2)).await.unwrap().unwrap().state.running, 2);
    let ended = Completion { lease: first[0].lease, outcome: Outcome::Succeeded(json_null()) };
    q.complete(vec![ended], t(3)).await.unwrap();
    let next = claim(q, 5, t(4)).await;
    assert_eq!(next.len(), 1);
    // A failed attempt (retried) and a lost lease free their places too.
    let failed = Outcome::Failed { error: "boom".into(), retry_at: Some(t(5)) };
    q.complete(vec![Completion { lease: first[1].lease, outcome: failed }], t(5)).await.unwrap();
    assert_eq!(claim(q, 5, t(6)).await.len(), 1);
    q.tick(t(700_000), Duration::from_secs(3_600)).await.unwrap();
    assert_eq!(q.get_limit("db", t(700_000)).await.unwrap().unwrap().state.running, 0);
    assert_eq!(claim(q, 5, t(700_001)).await.len(), 2);
}

/// A job costing 5 takes 5 tokens; a cost above what is left waits for tokens to come back.
async fn a_job_takes_its_cost(q: &dyn QueueBackend) {
    put(q, "api", rate(10, 1_000)).await;
    let heavy = JobSpec { cost: Some(5), ..under(&["api"]) };
    submit_all(q, vec![heavy.clone(), heavy, JobSpec { cost: Some(1), ..under(&["api"]) }], t(0))
        .await;
    assert_eq!(claim(q, 1, t(10)).await.len(), 1);
    let state = q.get_limit("api", t(10)).await.unwrap().unwrap().state;
    assert_eq!(state.tokens_left, Some(5));
    assert_eq!(state.next_token_at, Some(t(1_010)));
    assert_eq!(claim(q, 5, t(200)).await.len(), 1, "the second heavy job takes the rest");
    let waiting = q.claim(claim_of(5), t(300)).await.unwrap();
    assert!(waiting.jobs.is_empty());
    assert_eq!(waiting.retry_at, Some(t(1_010)), "when the first tokens come back");
    assert_eq!(q.get_limit("api", t(300)).await.unwrap().unwrap().state.tokens_left, Some(0));
    assert_eq!(claim(q, 5, t(1_010)).await.len(), 1);
}

/// Claims close together share a window entry, at the later one's time: their tokens come back
/// a little late, never early.
async fn close_claims_share_a_window_entry(q: &dyn QueueBackend) {
    put(q, "api", rate(2, 1_000)).await;
    submit_all(q, vec![under(&["api"]); 3], t(0)).await;
    assert_eq!(claim(q, 1, t(0)).await.len(), 1);
    assert_eq!(claim(q, 1, t(10)).await.len(), 1, "within a hundredth of the window");
    assert!(claim(q, 1, t(1_000)).await.is_empty(), "the first token comes back with the second");
    assert_eq!(claim(q, 1, t(1_010)).await.len(), 1);
}

/// An exhausted limit holds only its own jobs: jobs of higher and lower priority, under no
/// limit or another one, run in priority order past them.
async fn an_exhausted_limit_blocks_no_other_job(q: &dyn QueueBackend) {
    put(q, "slow", rate(1, 60_000)).await;
    put(q, "fast", rate(100, 1_000)).await;
    let first_slow = submit(q, JobSpec { priority: Some(10), ..under(&["slow"]) }, t(0)).await;
    assert_eq!(ids(&claim(q, 1, t(1)).await), vec![first_slow]);
    let p = |priority, spec: JobSpec| JobSpec { priority: Some(priority), ..spec };
    let held = submit_all(q, vec![p(10, under(&["slow"])); 50], t(2)).await;
    let high = submit(q, p(20, noop()), t(3)).await;
    let other = submit(q, p(10, under(&["fast"])), t(4)).await;
    let low = submit(q, p(-5, noop()), t(5)).await;
    let both = submit(q, p(15, under(&["fast", "slow"])), t(6)).await;
    assert_eq!(ids(&claim(q, 10, t(7)).await), vec![high, other, low]);
    assert!(claim(q, 10, t(8)).await.is_empty());
    let throttled = q.throttled(t(8)).await.unwrap();
    assert_eq!(throttled.get("default"), Some(&51), "{throttled:?}");
    // A minute later the slow limit gives one token: to the oldest of its highest priority.
    assert_eq!(ids(&claim(q, 10, t(60_001)).await), vec![both]);
    assert_eq!(ids(&claim(q, 10, t(120_001)).await), vec![held[0]]);
}

/// A hold (an upstream said stop) holds every job under the limit until its time.
async fn a_hold_lasts_until_its_time(q: &dyn QueueBackend) {
    put(q, "github", rate(100, 1_000)).await;
    submit_all(q, vec![under(&["github"]); 3], t(0)).await;
    q.hold_limit("github", t(5_000), t(0)).await.unwrap();
    q.hold_limit("github", t(2_000), t(0)).await.unwrap(); // never shortened
    let held = q.claim(claim_of(3), t(10)).await.unwrap();
    assert!(held.jobs.is_empty());
    assert_eq!(held.retry_at, Some(t(5_000)));
    let state = q.get_limit("github", t(10)).await.unwrap().unwrap().state;
    assert_eq!(state.held_until, Some(t(5_000)));
    assert!(claim(q, 3, t(4_999)).await.is_empty());
    assert_eq!(claim(q, 3, t(5_000)).await.len(), 3);
    assert_eq!(q.get_limit("github", t(5_000)).await.unwrap().unwrap().state.held_until, None);
    let missing = q.hold_limit("nope", t(9_000), t(0)).await.unwrap_err();
    assert_eq!(missing, QueueError::LimitNotFound("nope".into()));
}

/// Group A with 10 000 ready jobs, group B with 10 submitted after them: every job of B starts
/// within the first 40 claims.
async fn groups_take_turns(q: &dyn QueueBackend) {
    submit_all(q, vec![in_group("a"); 10_000], t(0)).await;
    let b: HashSet<JobId> =
        submit_all(q, vec![in_group("b"); 10], t(1)).await.into_iter().collect();
    let mut started_b = 0;
    for n in 0..40 {
        let claimed = claim(q, 1, t(2 + n)).await;
        started_b += claimed.iter().filter(|c| b.contains(&c.record.id)).count();
    }
    assert_eq!(started_b, 10);
}

/// A group of weight 3 is served three times as often as one of weight 1.
async fn weights_share_turns(q: &dyn QueueBackend) {
    q.set_group_weight("big", Some(3)).await.unwrap();
    let weights = q.group_weights().await.unwrap();
    assert_eq!((weights[0].name.as_str(), weights[0].weight), ("big", 3));
    submit_all(q, vec![in_group("big"); 100], t(0)).await;
    let small: HashSet<JobId> =
        submit_all(q, vec![in_group("small"); 100], t(1)).await.into_iter().collect();
    let claimed = claim(q, 40, t(2)).await;
    let of_small = claimed.iter().filter(|c| small.contains(&c.record.id)).count();
    assert!((9..=11).contains(&of_small), "{of_small} of 40 for the group of weight 1");
    q.set_group_weight("big", None).await.unwrap();
    assert!(q.group_weights().await.unwrap().is_empty());
}

/// Jobs without a group keep their order (priority, then oldest) when no group competes, and
/// take turns as one group when one does.
async fn jobs_without_a_group_are_a_group(q: &dyn QueueBackend) {
    let plain = submit_all(q, vec![noop(); 3], t(0)).await;
    let grouped = submit_all(q, vec![in_group("g"); 3], t(1)).await;
    let order = ids(&claim(q, 6, t(2)).await);
    assert_eq!(order, vec![plain[0], grouped[0], plain[1], grouped[1], plain[2], grouped[2]]);
}

/// A paused queue accepts submits and claims nothing until resumed; other queues go on.
async fn a_paused_queue_claims_nothing_until_resumed(q: &dyn QueueBackend) {
    q.pause_queue("reports", true).await.unwrap();
    let held = submit(q, JobSpec { queue: Some("reports".into()), ..noop() }, t(0)).await;
    let free = submit(q, noop(), t(1)).await;
    assert_eq!(ids(&claim(q, 5, t(2)).await), vec![free]);
    assert!(claim(q, 5, t(3)).await.is_empty());
    let queues = q.queues(t(3)).await.unwrap();
    let reports = queues.iter().find(|queue| queue.name == "reports").expect("listed");
    assert!(reports.paused && reports.counts.queued == 1);
    assert!(queues.iter().any(|queue| queue.name == "default" && !queue.paused));
    // A queue paused before it held any job is listed too.
    q.pause_queue("empty", true).await.unwrap();
    assert!(q.queues(t(3)).await.unwrap().iter().any(|queue| queue.name == "empty"));
    q.pause_queue("reports", false).await.unwrap();
    assert_eq!(ids(&claim(q, 5, t(4)).await), vec![held]);
}

/// Deleting a limit frees its jobs; new jobs may no longer name it.
async fn a_deleted_limit_frees_its_jobs(q: &dyn QueueBackend) {
    put(q, "one", concurrency(1)).await;
    submit_all(q, vec![under(&["one"]); 3], t(0)).await;
    assert_eq!(claim(q, 3, t(1)).await.len(), 1);
    assert!(claim(q, 3, t(2)).await.is_empty());
    assert!(q.delete_limit("one").await.unwrap());
    assert!(!q.delete_limit("one").await.unwrap());
    assert_eq!(claim(q, 3, t(3)).await.len(), 2);
    let jobs = plan(vec![under(&["one"])], false, &AnyKind, &SpecDefaults::default(), t(4));
    let refused = q.submit(jobs.unwrap(), t(4)).await.unwrap_err();
    assert_eq!(refused, QueueError::UnknownLimit("one".into()));
}

/// A submit naming a limit that does not exist, or costing more than a rate ever allows, is
/// refused whole.
async fn unknown_limits_and_costs_are_refused(q: &dyn QueueBackend) {
    put(q, "ten", rate(10, 1_000)).await;
    let specs = vec![noop(), under(&["ten", "nope"])];
    let jobs = plan(specs, true, &AnyKind, &SpecDefaults::default(), t(0)).unwrap();
    assert_eq!(q.submit(jobs, t(0)).await.unwrap_err(), QueueError::UnknownLimit("nope".into()));
    let costly = vec![JobSpec { cost: Some(11), ..under(&["ten"]) }];
    let jobs = plan(costly, true, &AnyKind, &SpecDefaults::default(), t(0)).unwrap();
    let refused = q.submit(jobs, t(0)).await.unwrap_err();
    let expected = QueueError::CostOverLimit { limit: "ten".into(), cost: 11, tokens: 10 };
    assert_eq!(refused, expected);
    assert!(q.stats().await.unwrap().values().all(|c| c.queued == 0), "nothing was stored");
}

/// Limits are stored, replaced with their state kept, listed and deleted.
async fn limits_are_stored(q: &dyn QueueBackend) {
    let (limit, created) = q.put_limit("gh", rate(5, 1_000), t(0)).await.unwrap();
    assert!(created);
    assert_eq!((limit.name.as_str(), limit.created_at), ("gh", t(0)));
    assert_eq!(limit.state.tokens_left, Some(5));
    q.put_limit("db", concurrency(3), t(1)).await.unwrap();
    submit(q, under(&["gh"]), t(2)).await;
    assert_eq!(claim(q, 1, t(3)).await.len(), 1);
    let both = LimitSpec { rate: Some(Rate { tokens: 6, per_ms: 1_000 }), concurrency: Some(2) };
    let (limit, created) = q.put_limit("gh", both, t(4)).await.unwrap();
    assert!(!created);
    assert_eq!((limit.created_at, limit.updated_at), (t(0), t(4)));
    assert_eq!(limit.spec, both);
    assert_eq!((limit.state.tokens_left, limit.state.running), (Some(5), 1), "state kept");
    let names: Vec<String> =
        q.list_limits(t(5)).await.unwrap().into_iter().map(|l| l.name).collect();
    assert_eq!(names, ["db", "gh"]);
    assert!(q.delete_limit("db").await.unwrap());
    assert!(q.get_limit("db", t(6)).await.unwrap().is_none());
}

/// A job's limits, cost and group are kept in its record.
async fn flow_fields_are_kept(q: &dyn QueueBackend) {
    put(q, "gh", rate(10, 1_000)).await;
    put(q, "gh:acme", concurrency(1)).await;
    let spec = JobSpec { cost: Some(3), group: Some("acme".into()), ..under(&["gh", "gh:acme"]) };
    let id = submit(q, spec, t(0)).await;
    let record = q.get(id).await.unwrap().unwrap();
    let limits: Vec<&str> = record.limits.iter().map(|l| &**l).collect();
    assert_eq!(
        (limits, record.cost, record.group.as_deref()),
        (vec!["gh", "gh:acme"], 3, Some("acme"))
    );
    assert_eq!(record.status, JobStatus::Queued);
    let claimed = claim(q, 1, t(1)).await;
    assert_eq!(claimed[0].record.cost, 3);
    // Retried, it comes back to its lane, held by the same limits.
    let retry = Outcome::Failed { error: "again".into(), retry_at: Some(t(2)) };
    q.complete(vec![Completion { lease: claimed[0].lease, outcome: retry }], t(2)).await.unwrap();
    assert_eq!(ids(&claim(q, 1, t(3)).await), vec![id]);
}

/// A job costing more than its rate allows (the rate was lowered after it was submitted) runs
/// alone in a window rather than waiting for good; what it takes comes back a window later.
async fn a_job_costlier_than_a_lowered_rate_runs_alone(q: &dyn QueueBackend) {
    put(q, "api", rate(10, 1_000)).await;
    submit_all(q, vec![JobSpec { cost: Some(8), ..under(&["api"]) }, under(&["api"])], t(0)).await;
    q.put_limit("api", rate(3, 1_000), t(1)).await.unwrap();
    let first = claim(q, 1, t(2)).await;
    assert_eq!(first.len(), 1, "an idle window lets the costly job through");
    assert_eq!(first[0].record.cost, 8);
    let after = q.claim(claim_of(1), t(3)).await.unwrap();
    assert!(after.jobs.is_empty(), "nothing more in that window");
    assert_eq!(after.retry_at, Some(t(1_002)));
    assert_eq!(claim(q, 1, t(1_002)).await.len(), 1);
}

/// A limit deleted and created again while its jobs run still counts them: their ends bring
/// the count back to zero, never below, and the concurrency holds.
async fn a_limit_recreated_while_its_jobs_run_counts_them(q: &dyn QueueBackend) {
    put(q, "db", concurrency(1)).await;
    submit_all(q, vec![under(&["db"]); 4], t(0)).await;
    assert!(q.delete_limit("db").await.unwrap());
    let running = claim(q, 2, t(1)).await;
    assert_eq!(running.len(), 2, "no limit: both start");
    put(q, "db", concurrency(1)).await;
    assert_eq!(q.get_limit("db", t(2)).await.unwrap().unwrap().state.running, 2);
    assert!(claim(q, 2, t(2)).await.is_empty(), "two run under a concurrency of one");
    succeed(q, &running, t(3)).await;
    assert_eq!(q.get_limit("db", t(4)).await.unwrap().unwrap().state.running, 0);
    assert_eq!(claim(q, 2, t(4)).await.len(), 1, "one place, one job");
}

/// Jobs under a limit cancelled while they wait are passed over by claims and no longer counted
/// (queued, throttled or by kind), however they were submitted.
async fn cancelled_jobs_under_limits_are_passed_over(q: &dyn QueueBackend) {
    put(q, "one", concurrency(1)).await;
    // A batch (queued together) and a job alone (with an idempotency key: queued one by one).
    let batch = submit_all(q, vec![under(&["one"]); 4], t(0)).await;
    let alone = JobSpec { idempotency_key: Some("k".into()), ..under(&["one"]) };
    let single = submit(q, alone, t(1)).await;
    let first = claim(q, 1, t(2)).await;
    assert_eq!(ids(&first), vec![batch[0]]);
    q.cancel(batch[1], t(3)).await.unwrap();
    q.cancel(single, t(3)).await.unwrap();
    assert_eq!(q.throttled(t(4)).await.unwrap().get("default"), Some(&2), "two left held");
    assert_eq!(q.queued_by_kind().await.unwrap().get("noop"), Some(&2));
    succeed(q, &first, t(5)).await;
    let next = claim(q, 1, t(6)).await;
    assert_eq!(ids(&next), vec![batch[2]], "the cancelled one is passed over");
    succeed(q, &next, t(7)).await;
    assert_eq!(ids(&claim(q, 5, t(8)).await), vec![batch[3]]);
    assert!(claim(q, 5, t(9)).await.is_empty());
    assert!(q.queued_by_kind().await.unwrap().is_empty());
}

macro_rules! flow_suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $( #[actix_web::test] async fn $name() {
                super::$name(&*super::memory().queue).await;
            } )*
        }
        mod redis {
            $( #[actix_web::test] async fn $name() {
                let backend = super::redis().await;
                super::$name(&*backend.queue).await;
                assert!(backend.redis.is_some_and(|r| r.answers_ping()), "redis still up");
            } )*
        }
    };
}

flow_suite!(
    a_rate_limit_holds_in_every_window,
    a_concurrency_limit_caps_running_jobs,
    a_job_takes_its_cost,
    an_exhausted_limit_blocks_no_other_job,
    a_hold_lasts_until_its_time,
    groups_take_turns,
    weights_share_turns,
    jobs_without_a_group_are_a_group,
    a_paused_queue_claims_nothing_until_resumed,
    a_deleted_limit_frees_its_jobs,
    unknown_limits_and_costs_are_refused,
    limits_are_stored,
    flow_fields_are_kept,
    a_job_costlier_than_a_lowered_rate_runs_alone,
    close_claims_share_a_window_entry,
    cancelled_jobs_under_limits_are_passed_over,
    a_limit_recreated_while_its_jobs_run_counts_them,
);
