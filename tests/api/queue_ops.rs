//! The operator's actions on jobs (retry, run now, delete) and the group filter of listings,
//! at the trait level, run against every queue backend like `queue_backends`: each rule is
//! written once. Every check also reads the counts and listings, which each backend keeps in
//! indexes of its own.

use std::time::Duration;

use jobyard::job::record::json_from_str;
use jobyard::job::{JobId, JobSpec, JobStatus};
use jobyard::queue::{JobAction, ListQuery, QueueBackend, QueueError};

use crate::queue_backends::{claim, done, failed, failure, noop, status, submit, success, t};

/// The ids a listing with `query` answers, reading every page.
async fn listed(q: &dyn QueueBackend, mut query: ListQuery) -> Vec<JobId> {
    let mut ids = Vec::new();
    loop {
        let page = q.list(&query).await.unwrap();
        ids.extend(page.jobs.iter().map(|job| job.id));
        match page.next_cursor {
            Some(cursor) => query.cursor = Some(cursor),
            None => return ids,
        }
    }
}

fn with_status(status: JobStatus) -> ListQuery {
    ListQuery { status: Some(status), ..ListQuery::default() }
}

/// The count of `status` in queue `default`.
async fn count(q: &dyn QueueBackend, status: JobStatus) -> u64 {
    q.stats().await.unwrap().get("default").map_or(0, |c| c.get(status))
}

/// A job that ends `failed` after one attempt (`error`), at `t(ms)`.
async fn failed_job(q: &dyn QueueBackend, spec: JobSpec, error: &str, ms: i64) -> JobId {
    let id = submit(q, JobSpec { max_attempts: Some(1), ..spec }, t(ms)).await;
    let claimed = claim(q, 1, t(ms)).await;
    assert_eq!(claimed[0].record.id, id, "the new job is claimed");
    q.complete(vec![done(claimed[0].lease, failure(error, None))], t(ms)).await.unwrap();
    assert_eq!(status(q, id).await, JobStatus::Failed);
    id
}

fn invalid(id: JobId, status: JobStatus, action: JobAction) -> QueueError {
    QueueError::InvalidState { id, status, action }
}

/// A failed job retried is queued with a fresh set of attempts and its history kept; it is
/// counted and listed as queued, runs again and can succeed.
async fn a_failed_job_retried_runs_again(q: &dyn QueueBackend) {
    let id = submit(q, JobSpec { max_attempts: Some(2), ..noop() }, t(0)).await;
    let lease = claim(q, 1, t(0)).await[0].lease;
    q.complete(vec![done(lease, failure("boom", Some(t(10))))], t(1)).await.unwrap();
    let lease = claim(q, 1, t(10)).await[0].lease;
    q.complete(vec![done(lease, failure("final", None))], t(11)).await.unwrap();
    assert_eq!(count(q, JobStatus::Failed).await, 1);

    let (record, changes) = q.retry(id, t(20)).await.unwrap();
    assert_eq!(changes.ready, 1, "workers are woken");
    let stored = q.get(id).await.unwrap().expect("kept");
    for job in [&record, &stored] {
        assert_eq!((job.status, job.attempts), (JobStatus::Queued, 0));
        assert_eq!((job.error.as_deref(), job.finished_at, job.run_at), (None, None, Some(t(20))));
        assert!(job.worker.is_none() && !job.cancel_requested && job.result.is_none());
        assert_eq!(job.history, vec![failed(1, "boom", 1), failed(2, "final", 11)]);
    }
    assert_eq!((count(q, JobStatus::Failed).await, count(q, JobStatus::Queued).await), (0, 1));
    assert!(listed(q, with_status(JobStatus::Failed)).await.is_empty());
    assert_eq!(listed(q, with_status(JobStatus::Queued)).await, vec![id]);

    let claimed = claim(q, 1, t(21)).await;
    assert_eq!((claimed[0].record.id, claimed[0].record.attempts), (id, 1));
    q.complete(vec![done(claimed[0].lease, success())], t(22)).await.unwrap();
    let job = q.get(id).await.unwrap().unwrap();
    assert_eq!((job.status, job.attempts, job.error), (JobStatus::Succeeded, 1, None));
    assert_eq!(job.history.len(), 2, "the earlier attempts stay visible");
    assert_eq!(count(q, JobStatus::Succeeded).await, 1);
}

/// A cancelled job retried runs at once, whatever its delay was; a job whose cancel was asked
/// while it ran loses the request.
async fn a_cancelled_job_retried_runs_again(q: &dyn QueueBackend) {
    let delayed = submit(q, JobSpec { delay_ms: Some(60_000), ..noop() }, t(0)).await;
    q.cancel(delayed, t(1)).await.unwrap();
    let running = submit(q, noop(), t(2)).await;
    let lease = claim(q, 1, t(2)).await[0].lease;
    q.cancel(running, t(3)).await.unwrap();
    q.complete(vec![done(lease, failure("stopped", None))], t(4)).await.unwrap();
    assert_eq!(count(q, JobStatus::Cancelled).await, 2);
    assert_eq!(listed(q, with_status(JobStatus::Cancelled)).await, vec![running, delayed]);

    for id in [delayed, running] {
        let (job, _) = q.retry(id, t(10)).await.unwrap();
        assert_eq!((job.status, job.cancel_requested, job.error), (JobStatus::Queued, false, None));
    }
    assert!(listed(q, with_status(JobStatus::Cancelled)).await.is_empty());
    let claimed = claim(q, 5, t(10)).await;
    let mut ids: Vec<JobId> = claimed.iter().map(|c| c.record.id).collect();
    ids.sort();
    let mut expected = vec![delayed, running];
    expected.sort();
    assert_eq!(ids, expected, "both run now, the delay gone");
    let ends = claimed.iter().map(|c| done(c.lease, success())).collect();
    q.complete(ends, t(11)).await.unwrap();
    assert_eq!(status(q, running).await, JobStatus::Succeeded, "no cancel is left pending");
    assert_eq!(count(q, JobStatus::Succeeded).await, 2);
}

/// Only failed and cancelled jobs are retried; others are refused with their state.
async fn retry_refuses_other_states(q: &dyn QueueBackend) {
    let missing = JobId::new();
    assert_eq!(q.retry(missing, t(0)).await.unwrap_err(), QueueError::NotFound(missing));
    let queued = submit(q, noop(), t(0)).await;
    let scheduled = submit(q, JobSpec { delay_ms: Some(60_000), ..noop() }, t(0)).await;
    let waiting =
        submit(q, JobSpec { depends_on: Some(vec![scheduled.to_string()]), ..noop() }, t(0)).await;
    for (id, state) in [
        (queued, JobStatus::Queued),
        (scheduled, JobStatus::Scheduled),
        (waiting, JobStatus::Waiting),
    ] {
        assert_eq!(q.retry(id, t(1)).await.unwrap_err(), invalid(id, state, JobAction::Retry));
    }
    let lease = claim(q, 1, t(2)).await[0].lease;
    let err = q.retry(queued, t(3)).await.unwrap_err();
    assert_eq!(err, invalid(queued, JobStatus::Running, JobAction::Retry));
    q.complete(vec![done(lease, success())], t(4)).await.unwrap();
    let err = q.retry(queued, t(5)).await.unwrap_err();
    assert_eq!(err, invalid(queued, JobStatus::Succeeded, JobAction::Retry));
    assert_eq!(count(q, JobStatus::Succeeded).await, 1, "nothing changed");
}

/// A retried job whose dependency has not succeeded waits for it; the jobs cancelled because
/// a job failed are not revived when it is retried; a dependency that is gone refuses the
/// retry.
async fn a_retried_job_waits_for_its_dependencies(q: &dyn QueueBackend) {
    let first = submit(q, JobSpec { max_attempts: Some(1), ..noop() }, t(0)).await;
    let then = submit(q, JobSpec { depends_on: Some(vec![first.to_string()]), ..noop() }, t(0));
    let then = then.await;
    let lease = claim(q, 1, t(1)).await[0].lease;
    q.complete(vec![done(lease, failure("boom", None))], t(2)).await.unwrap();
    assert_eq!(status(q, then).await, JobStatus::Cancelled);

    // The dependent first: it waits for `first`, which failed.
    let (job, changes) = q.retry(then, t(3)).await.unwrap();
    assert_eq!((job.status, changes.ready), (JobStatus::Waiting, 0));
    assert_eq!(count(q, JobStatus::Waiting).await, 1);
    assert_eq!(listed(q, with_status(JobStatus::Waiting)).await, vec![then]);
    // Retrying `first` does not touch its dependents: `then` waits on.
    q.retry(first, t(4)).await.unwrap();
    assert_eq!(status(q, then).await, JobStatus::Waiting);
    let claimed = claim(q, 5, t(5)).await;
    assert_eq!(claimed.iter().map(|c| c.record.id).collect::<Vec<_>>(), vec![first]);
    let changes = q.complete(vec![done(claimed[0].lease, success())], t(6)).await.unwrap();
    assert_eq!(changes.ready, 1, "its dependent is released");
    let claimed = claim(q, 5, t(7)).await;
    assert_eq!(claimed.iter().map(|c| c.record.id).collect::<Vec<_>>(), vec![then]);

    // Not revived: a dependent of a failed job stays cancelled when that job is retried.
    let root = failed_job(q, noop(), "boom", 10).await;
    let child =
        submit(q, JobSpec { depends_on: Some(vec![root.to_string()]), ..noop() }, t(11)).await;
    assert_eq!(status(q, child).await, JobStatus::Cancelled, "its dependency already failed");
    q.retry(root, t(12)).await.unwrap();
    assert_eq!(status(q, child).await, JobStatus::Cancelled);
    let lease = claim(q, 1, t(13)).await[0].lease;
    q.complete(vec![done(lease, success())], t(14)).await.unwrap();
    assert_eq!(status(q, root).await, JobStatus::Succeeded);
    assert_eq!(status(q, child).await, JobStatus::Cancelled, "even once it succeeded");

    // A dependency that is gone.
    let gone = failed_job(q, JobSpec::new("other"), "boom", 20).await;
    let orphan =
        submit(q, JobSpec { depends_on: Some(vec![gone.to_string()]), ..noop() }, t(21)).await;
    q.delete(gone, t(22)).await.unwrap();
    let err = q.retry(orphan, t(23)).await.unwrap_err();
    assert_eq!(err, QueueError::DependencyGone { id: orphan, dependency: gone });
    assert_eq!(status(q, orphan).await, JobStatus::Cancelled);
}

/// A job that a retry made wait for a failed job is cancelled when that job is deleted (it
/// could never run).
async fn deleting_a_dependency_cancels_the_jobs_waiting_for_it(q: &dyn QueueBackend) {
    let root = failed_job(q, noop(), "boom", 0).await;
    let child =
        submit(q, JobSpec { depends_on: Some(vec![root.to_string()]), ..noop() }, t(1)).await;
    assert_eq!(q.retry(child, t(2)).await.unwrap().0.status, JobStatus::Waiting);
    let (_, changes) = q.delete(root, t(3)).await.unwrap();
    assert_eq!(changes.finished, vec![child]);
    let job = q.get(child).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Cancelled);
    assert_eq!(job.error, Some(format!("dependency {root} failed")));
    assert_eq!((count(q, JobStatus::Waiting).await, count(q, JobStatus::Cancelled).await), (0, 1));
}

/// A retried job is kept for the retention period from its latest end, not its first.
async fn a_retried_job_is_retained_from_its_latest_end(q: &dyn QueueBackend) {
    let retention = Duration::from_secs(10);
    let id = failed_job(q, noop(), "boom", 0).await;
    q.retry(id, t(1_000)).await.unwrap();
    q.tick(t(15_000), retention).await.unwrap();
    assert_eq!(status(q, id).await, JobStatus::Queued, "not terminal: kept");
    let lease = claim(q, 1, t(16_000)).await[0].lease;
    q.complete(vec![done(lease, success())], t(16_000)).await.unwrap();
    q.tick(t(20_000), retention).await.unwrap();
    assert_eq!(status(q, id).await, JobStatus::Succeeded, "ended 4 s ago: kept");
    q.tick(t(26_001), retention).await.unwrap();
    assert!(q.get(id).await.unwrap().is_none(), "removed 10 s after its latest end");
    assert_eq!(count(q, JobStatus::Succeeded).await, 0);
}

/// A delayed job, or one waiting for its retry, runs now when asked; other states are refused.
async fn run_now_makes_a_scheduled_job_due(q: &dyn QueueBackend) {
    let delayed = submit(q, JobSpec { delay_ms: Some(60_000), ..noop() }, t(0)).await;
    assert!(claim(q, 1, t(1)).await.is_empty());
    let (job, changes) = q.run_now(delayed, t(5)).await.unwrap();
    assert_eq!((job.status, job.run_at, changes.ready), (JobStatus::Queued, Some(t(5)), 1));
    assert_eq!((count(q, JobStatus::Scheduled).await, count(q, JobStatus::Queued).await), (0, 1));
    assert!(listed(q, with_status(JobStatus::Scheduled)).await.is_empty());
    let claimed = claim(q, 1, t(5)).await;
    assert_eq!(claimed[0].record.id, delayed);
    let err = q.run_now(delayed, t(6)).await.unwrap_err();
    assert_eq!(err, invalid(delayed, JobStatus::Running, JobAction::RunNow));
    q.complete(vec![done(claimed[0].lease, success())], t(6)).await.unwrap();
    let err = q.run_now(delayed, t(7)).await.unwrap_err();
    assert_eq!(err, invalid(delayed, JobStatus::Succeeded, JobAction::RunNow));

    // Waiting for its retry: the failed attempt stays counted.
    let retrying = submit(q, JobSpec { max_attempts: Some(3), ..noop() }, t(10)).await;
    let lease = claim(q, 1, t(10)).await[0].lease;
    q.complete(vec![done(lease, failure("boom", Some(t(100_000))))], t(11)).await.unwrap();
    assert_eq!(status(q, retrying).await, JobStatus::Scheduled);
    let (job, _) = q.run_now(retrying, t(12)).await.unwrap();
    assert_eq!((job.status, job.attempts), (JobStatus::Queued, 1));
    assert_eq!(job.history, vec![failed(1, "boom", 11)]);
    let claimed = claim(q, 1, t(12)).await;
    assert_eq!((claimed[0].record.id, claimed[0].record.attempts), (retrying, 2));

    let queued = submit(q, noop(), t(20)).await;
    let err = q.run_now(queued, t(20)).await.unwrap_err();
    assert_eq!(err, invalid(queued, JobStatus::Queued, JobAction::RunNow));
    let missing = JobId::new();
    assert_eq!(q.run_now(missing, t(20)).await.unwrap_err(), QueueError::NotFound(missing));
}

/// A deleted job is gone from reads, listings and counts, and its idempotency key is free;
/// a job that has not ended is refused.
async fn delete_removes_a_terminal_job_everywhere(q: &dyn QueueBackend) {
    let keyed = JobSpec { idempotency_key: Some("once".into()), ..noop() };
    let id = submit(q, keyed.clone(), t(0)).await;
    let claimed = claim(q, 1, t(0)).await;
    let err = q.delete(id, t(1)).await.unwrap_err();
    assert_eq!(err, invalid(id, JobStatus::Running, JobAction::Delete));
    let result = jobyard::queue::Outcome::Succeeded(json_from_str(r#"{"n": 1}"#).unwrap());
    q.complete(vec![done(claimed[0].lease, result)], t(2)).await.unwrap();
    let failed_id = failed_job(q, JobSpec::new("other"), "boom", 3).await;
    let queued = submit(q, noop(), t(4)).await;
    let err = q.delete(queued, t(4)).await.unwrap_err();
    assert_eq!(err, invalid(queued, JobStatus::Queued, JobAction::Delete));

    let (removed, _) = q.delete(id, t(5)).await.unwrap();
    assert_eq!((removed.id, removed.status), (id, JobStatus::Succeeded));
    assert_eq!(removed.result.as_ref().map(|r| r.get()), Some(r#"{"n": 1}"#));
    q.delete(failed_id, t(5)).await.unwrap();
    for gone in [id, failed_id] {
        assert!(q.get(gone).await.unwrap().is_none());
        assert_eq!(q.delete(gone, t(6)).await.unwrap_err(), QueueError::NotFound(gone));
    }
    assert_eq!(listed(q, ListQuery::default()).await, vec![queued]);
    assert!(listed(q, with_status(JobStatus::Failed)).await.is_empty());
    assert!(listed(q, with_status(JobStatus::Succeeded)).await.is_empty());
    assert_eq!((count(q, JobStatus::Succeeded).await, count(q, JobStatus::Failed).await), (0, 0));
    // The key makes a new job now.
    let again = q.submit(crate::queue_backends::plan_batch(vec![keyed], t(7)), t(7)).await;
    let again = &again.unwrap().jobs[0];
    assert!(again.created && again.record.id != id);
    // Retention finds nothing left to remove of them.
    q.tick(t(8), Duration::ZERO).await.unwrap();
    assert_eq!(listed(q, ListQuery::default()).await.len(), 2);
    assert_eq!(count(q, JobStatus::Queued).await, 2);
}

/// `group` narrows a listing, alone or with the other filters.
async fn listings_filter_by_group(q: &dyn QueueBackend) {
    let in_group = |group: &str| JobSpec { group: Some(group.into()), ..noop() };
    let a1 = submit(q, in_group("a"), t(0)).await;
    let b = submit(q, in_group("b"), t(1)).await;
    let none = submit(q, noop(), t(2)).await;
    let a2 = submit(q, JobSpec { delay_ms: Some(60_000), ..in_group("a") }, t(3)).await;
    let group = |g: &str| ListQuery { group: Some(g.into()), ..ListQuery::default() };
    assert_eq!(listed(q, group("a")).await, vec![a2, a1]);
    assert_eq!(listed(q, group("b")).await, vec![b]);
    assert!(listed(q, group("c")).await.is_empty());
    let scheduled = ListQuery { status: Some(JobStatus::Scheduled), ..group("a") };
    assert_eq!(listed(q, scheduled).await, vec![a2]);
    let queued = ListQuery { status: Some(JobStatus::Queued), ..group("a") };
    assert_eq!(listed(q, queued).await, vec![a1]);
    assert_eq!(listed(q, ListQuery::default()).await, vec![a2, none, b, a1]);
    let page = q.list(&ListQuery { limit: 1, ..group("a") }).await.unwrap();
    assert_eq!(page.jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![a2]);
    assert!(page.next_cursor.is_some());
}

macro_rules! ops_suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $( #[actix_web::test] async fn $name() {
                let backend = crate::queue_backends::memory();
                super::$name(&*backend.queue).await;
            } )*
        }
        mod redis {
            $( #[actix_web::test] async fn $name() {
                let backend = crate::queue_backends::redis().await;
                super::$name(&*backend.queue).await;
                assert!(backend.redis.is_some_and(|r| r.answers_ping()), "redis still up");
            } )*
        }
    };
}

ops_suite!(
    a_failed_job_retried_runs_again,
    a_cancelled_job_retried_runs_again,
    retry_refuses_other_states,
    a_retried_job_waits_for_its_dependencies,
    deleting_a_dependency_cancels_the_jobs_waiting_for_it,
    a_retried_job_is_retained_from_its_latest_end,
    run_now_makes_a_scheduled_job_due,
    delete_removes_a_terminal_job_everywhere,
    listings_filter_by_group,
);

/// On Redis, deleted and retried jobs leave nothing behind: no record, idempotency key,
/// dependents' set or `parents` entry of a job that is gone, no listing entry of a state a job
/// left.
#[actix_web::test]
async fn redis_keeps_no_key_of_a_deleted_job() {
    let backend = crate::queue_backends::redis().await;
    let (q, redis) = (&*backend.queue, backend.redis.as_ref().unwrap());
    let keys = |pattern: &str| {
        let reply = redis.command(&[b"KEYS", pattern.as_bytes()]);
        String::from_utf8_lossy(&reply).into_owned()
    };
    let keyed = JobSpec { idempotency_key: Some("k".into()), ..noop() };
    let root = failed_job(q, keyed, "boom", 0).await;
    let child =
        submit(q, JobSpec { depends_on: Some(vec![root.to_string()]), ..noop() }, t(1)).await;
    q.retry(child, t(2)).await.unwrap();
    assert!(keys("*:{q}:deps:*").starts_with("*1\r\n"), "the child waits on the root");
    assert!(keys("*:{q}:j:*").starts_with("*2\r\n"), "two records");
    assert!(keys("*:{q}:idem:*").starts_with("*1\r\n"), "one key");
    q.delete(root, t(3)).await.unwrap();
    q.delete(child, t(4)).await.unwrap();
    for pattern in ["*:{q}:j:*", "*:{q}:idem:*", "*:{q}:deps:*", "*:{q}:parents", "*:{q}:ls:*"] {
        assert_eq!(keys(pattern), "*0\r\n", "{pattern} is left");
    }
    q.tick(t(5), Duration::ZERO).await.unwrap();
    assert!(q.stats().await.unwrap().values().all(|c| c.get(JobStatus::Cancelled) == 0));
}
