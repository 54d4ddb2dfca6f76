//! What dashboards read from every queue backend beside the jobs themselves: the jobs waiting
//! on a job, the jobs a limit holds back, and (on a shared backend) the history of finished
//! jobs every instance adds to. Time is stepped by the tests, as in the rest of the
//! conformance suite.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jobyard::job::record::json_null;
use jobyard::job::{JobId, JobSpec, JobStatus};
use jobyard::queue::flow::LimitSpec;
use jobyard::queue::history::Counts;
use jobyard::queue::{Claim, Claimed, Completion, Outcome, QueueBackend, QueueError};

use crate::queue_backends::{memory, plan_batch, redis, redis_queue, t};
use crate::redis_support::TestRedis;

async fn submit(q: &dyn QueueBackend, specs: Vec<JobSpec>, ms: i64) -> Vec<JobId> {
    let submitted = q.submit(plan_batch(specs, t(ms)), t(ms)).await.expect("submitted");
    submitted.jobs.iter().map(|s| s.record.id).collect()
}

async fn claim(q: &dyn QueueBackend, n: usize, ms: i64) -> Vec<Claimed> {
    let claim = Claim {
        workers: (0..n).map(|i| Arc::from(format!("dash/w{i}"))).collect(),
        lease: Duration::from_secs(600),
        kinds: vec![Arc::from("noop")].into(),
    };
    q.dequeue(claim, t(ms)).await.expect("claim")
}

fn sorted(mut ids: Vec<JobId>) -> Vec<JobId> {
    ids.sort();
    ids
}

fn ids_of(jobs: &[jobyard::JobRecord]) -> Vec<JobId> {
    jobs.iter().map(|j| j.id).collect()
}

/// The dependents index: the jobs waiting on a job, bounded, until its end settles them.
async fn dependents_are_the_jobs_waiting_on_a_job(q: &dyn QueueBackend) {
    let parent = JobSpec { reference: Some("parent".into()), ..JobSpec::new("noop") };
    let child = || JobSpec { depends_on: Some(vec!["parent".into()]), ..JobSpec::new("noop") };
    let ids = submit(q, vec![parent, child(), child(), JobSpec::new("noop")], 0).await;
    let (parent, children, other) = (ids[0], vec![ids[1], ids[2]], ids[3]);
    let found = q.dependents(parent, 1000).await.unwrap();
    assert_eq!(sorted(ids_of(&found)), sorted(children.clone()));
    assert!(found.iter().all(|j| j.status == JobStatus::Waiting && &*j.kind == "noop"));
    assert_eq!(q.dependents(parent, 1).await.unwrap().len(), 1, "bounded");
    assert!(q.dependents(other, 1000).await.unwrap().is_empty());
    assert!(q.dependents(children[0], 1000).await.unwrap().is_empty());
    let missing = JobId::new();
    assert_eq!(q.dependents(missing, 1000).await.err(), Some(QueueError::NotFound(missing)));
    // The parent succeeds: its dependents are released and leave the index.
    let claimed = claim(q, 2, 1).await;
    let lease = claimed.iter().find(|c| c.record.id == parent).expect("parent claimed").lease;
    let done = Completion { lease, outcome: Outcome::Succeeded(json_null()) };
    q.complete(vec![done], t(2)).await.unwrap();
    assert!(q.dependents(parent, 1000).await.unwrap().is_empty());
    assert_eq!(q.get(children[0]).await.unwrap().unwrap().status, JobStatus::Queued);
}

fn under(limit: &str, priority: i32) -> JobSpec {
    JobSpec {
        limits: Some(vec![limit.to_owned()]),
        priority: Some(priority),
        ..JobSpec::new("noop")
    }
}

/// The jobs a limit holds back: none while it lets jobs through; once saturated, its queued
/// jobs in claim order (submitted in bulk or one by one), bounded, and no job of another limit.
async fn limit_jobs_are_the_jobs_it_holds_back(q: &dyn QueueBackend) {
    let one = LimitSpec { rate: None, concurrency: Some(1) };
    q.put_limit("one", one, t(0)).await.unwrap();
    q.put_limit("other", LimitSpec { rate: None, concurrency: Some(5) }, t(0)).await.unwrap();
    let first = submit(q, vec![under("one", 5)], 0).await[0];
    let bulk = submit(q, vec![under("one", 0), under("one", 0), under("other", 0)], 1).await;
    // One by one (an idempotency key): a ready set rather than a bulk list, at a higher priority.
    let keyed = JobSpec { idempotency_key: Some("k".into()), ..under("one", 3) };
    let keyed = submit(q, vec![keyed], 2).await[0];
    assert!(q.limit_jobs("one", 50, t(3)).await.unwrap().is_empty(), "a free slot holds none");
    let claimed = claim(q, 1, 4).await;
    assert_eq!(claimed[0].record.id, first, "the highest priority runs");
    let held = q.limit_jobs("one", 50, t(5)).await.unwrap();
    assert_eq!(ids_of(&held), vec![keyed, bulk[0], bulk[1]], "claim order");
    assert!(held.iter().all(|j| j.status == JobStatus::Queued));
    assert_eq!(ids_of(&q.limit_jobs("one", 1, t(5)).await.unwrap()), vec![keyed], "bounded");
    assert!(q.limit_jobs("other", 50, t(5)).await.unwrap().is_empty());
    let unknown = q.limit_jobs("nope", 50, t(5)).await.err();
    assert_eq!(unknown, Some(QueueError::LimitNotFound("nope".into())));
    // A cancelled job is no longer held back.
    q.cancel(keyed, t(6)).await.unwrap();
    assert_eq!(ids_of(&q.limit_jobs("one", 50, t(7)).await.unwrap()), bulk[..2].to_vec());
}

macro_rules! dashboard_suite {
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

dashboard_suite!(dependents_are_the_jobs_waiting_on_a_job, limit_jobs_are_the_jobs_it_holds_back);

#[actix_web::test]
async fn a_backend_of_one_process_keeps_no_shared_history() {
    let backend = memory();
    let counts = BTreeMap::from([(1, Counts { succeeded: 1, failed: 0 })]);
    backend.queue.add_finished(&counts).await.unwrap();
    assert_eq!(backend.queue.finished_history(0, 10).await.unwrap(), None);
}

#[actix_web::test]
async fn instances_of_a_shared_backend_add_to_one_history() {
    let server = TestRedis::start();
    let prefix = format!("t{}", fastrand::u32(..));
    let (one, two) = (redis_queue(&server, &prefix).await, redis_queue(&server, &prefix).await);
    let c = |succeeded, failed| Counts { succeeded, failed };
    // Bucket 359 is the last of hour 0, 360 the first of hour 1: the read spans both hashes.
    one.add_finished(&BTreeMap::from([(359, c(2, 1)), (360, c(1, 0))])).await.unwrap();
    two.add_finished(&BTreeMap::from([(360, c(3, 4)), (700, c(9, 9))])).await.unwrap();
    let read = one.finished_history(300, 400).await.unwrap().expect("a shared history");
    assert_eq!(
        read,
        BTreeMap::from([(359, c(2, 1)), (360, c(4, 4))]),
        "outside the range: left out"
    );
    assert_eq!(two.finished_history(300, 400).await.unwrap(), Some(read));
    // The hashes expire: figures for a chart, not jobs.
    let ttl = server.command(&[b"TTL", format!("{prefix}:{{q}}:hist:1").as_bytes()]);
    let ttl: i64 = String::from_utf8_lossy(&ttl).trim_start_matches(':').trim().parse().unwrap();
    assert!((1..=7200).contains(&ttl), "expires within two hours: {ttl}");
}
