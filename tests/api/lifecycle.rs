//! One test per rule of `semantics.md`, over HTTP.

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::helpers::*;

fn id(job: &Value) -> String {
    job["id"].as_str().expect("job id").to_owned()
}

fn started_at(job: &Value) -> DateTime<Utc> {
    time(job, "started_at")
}

fn time(job: &Value, field: &str) -> DateTime<Utc> {
    job[field].as_str().and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("{field} of {job}"))
}

/// The `history` of a job: (attempt, error) of each entry, checking that each has an `at` no
/// later than the job's `updated_at`, in order.
fn history(job: &Value) -> Vec<(u64, String)> {
    let entries = job["history"].as_array().unwrap_or_else(|| panic!("history of {job}"));
    let mut last = None;
    let mut out = Vec::new();
    for entry in entries {
        let at = time(entry, "at");
        assert!(last.is_none_or(|last| last <= at) && at <= time(job, "updated_at"), "{job}");
        last = Some(at);
        let attempt = entry["attempt"].as_u64().expect("attempt");
        out.push((attempt, entry["error"].as_str().expect("error").to_owned()));
    }
    out
}

/// Rule 1: with one worker, higher priority first, FIFO within a priority; a later job of
/// higher priority overtakes queued jobs of lower priority.
async fn priority_order_with_one_worker(on: &On) {
    let app = on
        .spawn(|c| {
            c.concurrency = 1;
            c.cancel_grace = std::time::Duration::from_millis(10);
        })
        .await;
    // Occupy the only worker until every job below is queued.
    let blocker = app.submit(json!({"kind": "sleep", "payload": {"ms": 600000}})).await;
    app.wait_until(&id(&blocker), "running", |j| j["status"] == "running").await;
    let mut jobs = Vec::new();
    for (name, priority) in
        [("low-a", 0), ("low-b", 0), ("mid", 5), ("low-c", 0), ("high", 10), ("neg", -3)]
    {
        // Each holds the worker a few milliseconds, so starts (kept in whole milliseconds) are
        // never tied.
        let spec = json!({"kind": "sleep", "payload": {"ms": 3}, "priority": priority});
        let job = app.submit(spec).await;
        jobs.push((name, id(&job)));
    }
    app.post_empty(&format!("/v1/jobs/{}/cancel", id(&blocker))).await;
    let mut finished = Vec::new();
    for (name, job_id) in &jobs {
        let job = app.wait_terminal(job_id).await;
        assert_eq!(job["status"], "succeeded");
        finished.push((started_at(&job), *name));
    }
    finished.sort();
    let order: Vec<&str> = finished.into_iter().map(|(_, name)| name).collect();
    assert_eq!(order, vec!["high", "mid", "low-a", "low-b", "low-c", "neg"]);
}

/// Rule 2: a failing attempt is retried with backoff until it succeeds, counting attempts.
async fn retries_count_attempts_until_success(on: &On) {
    let app = on.spawn(|_| {}).await;
    let backoff = json!({"initial_ms": 20, "max_ms": 100, "multiplier": 2.0, "jitter": false});
    let job = app
        .submit(
            json!({"kind": "fail", "payload": {"times": 2}, "max_attempts": 3, "backoff": backoff}),
        )
        .await;
    let done = app.wait_terminal(&id(&job)).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["attempts"], 3);
    assert_eq!(done["result"], json!({"attempt": 3}));
    assert_eq!(done["error"], Value::Null, "succeeded: no error");
    let failure = "failed on purpose".to_owned();
    assert_eq!(history(&done), vec![(1, failure.clone()), (2, failure)], "the failed attempts");
}

/// Rule 2: attempts exhausted ends `failed` with the last error.
async fn retries_stop_when_attempts_are_exhausted(on: &On) {
    let app = on.spawn(|_| {}).await;
    let backoff = json!({"initial_ms": 10, "jitter": false});
    let job = app
        .submit(json!({"kind": "fail", "payload": {"message": "nope"}, "max_attempts": 2, "backoff": backoff}))
        .await;
    let done = app.wait_terminal(&id(&job)).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["attempts"], 2);
    assert_eq!(done["error"], "nope");
    assert_eq!(history(&done), vec![(1, "nope".to_owned()), (2, "nope".to_owned())]);
}

/// Rule 2: a retry waits for its backoff: the job is `scheduled` in between.
async fn a_retry_is_scheduled_after_its_backoff(on: &On) {
    let app = on.spawn(|_| {}).await;
    let backoff = json!({"initial_ms": 60000, "jitter": false});
    let job =
        app.submit(json!({"kind": "fail", "payload": {"times": 1}, "backoff": backoff})).await;
    let retrying =
        app.wait_until(&id(&job), "scheduled for retry", |j| j["status"] == "scheduled").await;
    assert_eq!(retrying["attempts"], 1);
    assert_eq!(retrying["error"], Value::Null, "not terminal: no error yet");
    assert_eq!(history(&retrying), vec![(1, "failed on purpose".to_owned())]);
    let run_at: chrono::DateTime<chrono::Utc> =
        retrying["run_at"].as_str().unwrap().parse().unwrap();
    let updated: chrono::DateTime<chrono::Utc> =
        retrying["updated_at"].as_str().unwrap().parse().unwrap();
    let backoff_ms = (run_at - updated).num_milliseconds();
    // The worker computes run_at a moment before the store stamps updated_at.
    assert!(
        (50_000..=60_000).contains(&backoff_ms),
        "run_at = failure time + 60 s, got {backoff_ms} ms"
    );
}

/// Rule 2: a non-retryable error fails the job at once.
async fn a_non_retryable_error_fails_at_once(on: &On) {
    let app = on.spawn(|_| {}).await;
    let job = app
        .submit(json!({"kind": "fail", "payload": {"retryable": false}, "max_attempts": 5}))
        .await;
    let done = app.wait_terminal(&id(&job)).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["attempts"], 1);
}

/// Rule 2: an attempt over `timeout_ms` is aborted and counts as failed.
async fn an_attempt_over_its_timeout_fails(on: &On) {
    let app = on.spawn(|_| {}).await;
    let job = app
        .submit(
            json!({"kind": "sleep", "payload": {"ms": 60000}, "timeout_ms": 50, "max_attempts": 1}),
        )
        .await;
    let done = app.wait_terminal(&id(&job)).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["error"], "timed out after 50 ms");
    assert_eq!(history(&done), vec![(1, "timed out after 50 ms".to_owned())]);
}

/// Rule 3: a DAG runs in dependency order.
async fn a_batch_dag_runs_in_dependency_order(on: &On) {
    let app = on.spawn(|_| {}).await;
    let jobs = app
        .submit_batch(json!([
            {"ref": "c", "kind": "noop", "depends_on": ["a", "b"]},
            {"ref": "a", "kind": "sleep", "payload": {"ms": 30}},
            {"ref": "b", "kind": "noop", "depends_on": ["a"]},
        ]))
        .await;
    assert_eq!(jobs[0]["status"], "waiting");
    assert_eq!(jobs[2]["status"], "waiting");
    let (c, a, b) = (id(&jobs[0]), id(&jobs[1]), id(&jobs[2]));
    assert_eq!(jobs[0]["depends_on"], json!([a, b]), "refs resolve to ids");
    let (c, a, b) =
        (app.wait_terminal(&c).await, app.wait_terminal(&a).await, app.wait_terminal(&b).await);
    for job in [&a, &b, &c] {
        assert_eq!(job["status"], "succeeded");
    }
    assert!(time(&a, "finished_at") <= time(&b, "started_at"));
    assert!(time(&b, "finished_at") <= time(&c, "started_at"));
}

/// Rule 3: a failed dependency cancels its dependents, transitively, naming the dependency.
async fn a_failed_dependency_cancels_its_dependents_transitively(on: &On) {
    let app = on.spawn(|_| {}).await;
    let jobs = app
        .submit_batch(json!([
            {"ref": "root", "kind": "fail", "payload": {"retryable": false}},
            {"ref": "child", "kind": "noop", "depends_on": ["root"]},
            {"ref": "grandchild", "kind": "noop", "depends_on": ["child"]},
            {"ref": "bystander", "kind": "noop"},
        ]))
        .await;
    let root = app.wait_terminal(&id(&jobs[0])).await;
    assert_eq!(root["status"], "failed");
    let child = app.wait_terminal(&id(&jobs[1])).await;
    assert_eq!(child["status"], "cancelled");
    assert_eq!(child["error"], format!("dependency {} failed", id(&jobs[0])));
    let grandchild = app.wait_terminal(&id(&jobs[2])).await;
    assert_eq!(grandchild["status"], "cancelled");
    assert_eq!(grandchild["error"], format!("dependency {} cancelled", id(&jobs[1])));
    assert_eq!(app.wait_terminal(&id(&jobs[3])).await["status"], "succeeded");
}

/// Rule 3: a job may depend on an existing job by id.
async fn a_job_waits_for_an_existing_dependency(on: &On) {
    let app = on.spawn(|_| {}).await;
    let first = app.submit(json!({"kind": "sleep", "payload": {"ms": 60000}})).await;
    let second = app.submit(json!({"kind": "noop", "depends_on": [id(&first)]})).await;
    assert_eq!(second["status"], "waiting");
    app.post_empty(&format!("/v1/jobs/{}/cancel", id(&first))).await;
    let second = app.wait_terminal(&id(&second)).await;
    assert_eq!(second["status"], "cancelled");
}

/// Rule 3: a cycle in a batch is rejected with the cycle named, and nothing is stored.
async fn a_batch_cycle_is_rejected(on: &On) {
    let app = on.spawn(|_| {}).await;
    let resp = app
        .post(
            "/v1/jobs/batch",
            json!({"jobs": [
                {"ref": "a", "kind": "noop", "depends_on": ["b"]},
                {"ref": "b", "kind": "noop", "depends_on": ["a"]},
                {"ref": "ok", "kind": "noop"},
            ]}),
        )
        .await;
    assert_eq!(resp.status, 400);
    assert_eq!(resp.code(), "dependency_cycle");
    assert_eq!(resp.body["error"]["message"], "dependency cycle: a -> b -> a");
    let listed = app.get("/v1/jobs").await;
    assert!(listed.body["jobs"].as_array().unwrap().is_empty(), "all or nothing");
}

/// Rule 4: cancelling a running `sleep` stops it promptly and it ends `cancelled`.
async fn cancelling_a_running_job_ends_it_cancelled(on: &On) {
    let app = on.spawn(|_| {}).await;
    let job =
        app.submit(json!({"kind": "sleep", "payload": {"ms": 600000}, "max_attempts": 3})).await;
    app.wait_until(&id(&job), "running", |j| j["status"] == "running").await;
    let resp = app.post_empty(&format!("/v1/jobs/{}/cancel", id(&job))).await;
    assert_eq!(resp.status, 200);
    assert!(resp.body["status"] == "cancelled" || resp.body["cancel_requested"] == true);
    let done = app.wait_terminal(&id(&job)).await;
    assert_eq!(done["status"], "cancelled");
    assert_eq!(done["attempts"], 1, "a cancelled job is not retried");
    let error = done["error"].as_str().expect("a cancelled job's error").to_owned();
    assert!(error.starts_with("cancelled"), "{error}");
    assert_eq!(history(&done), vec![(1, error)], "the attempt ended cancelled");
}

/// Rule 4: waiting, scheduled and queued jobs are cancelled at once; terminal ones answer 409.
async fn cancelling_waiting_or_scheduled_jobs_is_immediate_and_terminal_is_a_conflict(on: &On) {
    let app = on.spawn(|_| {}).await;
    let scheduled = app.submit(json!({"kind": "noop", "delay_ms": 600000})).await;
    assert_eq!(scheduled["status"], "scheduled");
    let waiting = app.submit(json!({"kind": "noop", "depends_on": [id(&scheduled)]})).await;
    assert_eq!(waiting["status"], "waiting");
    let resp = app.post_empty(&format!("/v1/jobs/{}/cancel", id(&waiting))).await;
    assert_eq!((resp.status, resp.body["status"].as_str()), (200, Some("cancelled")));
    let resp = app.post_empty(&format!("/v1/jobs/{}/cancel", id(&scheduled))).await;
    assert_eq!((resp.status, resp.body["status"].as_str()), (200, Some("cancelled")));
    let ended = (&resp.body["error"], &resp.body["history"]);
    assert_eq!(ended, (&json!("cancelled"), &json!([])), "no attempt ended");
    let again = app.post_empty(&format!("/v1/jobs/{}/cancel", id(&scheduled))).await;
    assert_eq!(again.status, 409);
    assert_eq!(again.code(), "already_finished");
}

/// Rule 6 (idempotency keys): a second submit with the same key returns the first job.
async fn an_idempotency_key_returns_the_first_job(on: &On) {
    let app = on.spawn(|_| {}).await;
    let spec = json!({"kind": "noop", "idempotency_key": "refresh:github:42"});
    let first = app.post("/v1/jobs", spec.clone()).await;
    assert_eq!(first.status, 201);
    let second = app.post("/v1/jobs", spec).await;
    assert_eq!(second.status, 200);
    assert_eq!(second.body["id"], first.body["id"]);
    let listed = app.get("/v1/jobs").await;
    assert_eq!(listed.body["jobs"].as_array().unwrap().len(), 1);
}

/// `run_at` and `delay_ms`: the job is `scheduled`, then runs no earlier than its time.
async fn a_delayed_job_runs_after_its_time(on: &On) {
    let app = on.spawn(|_| {}).await;
    let job = app.submit(json!({"kind": "noop", "delay_ms": 150})).await;
    assert_eq!(job["status"], "scheduled");
    let done = app.wait_terminal(&id(&job)).await;
    assert_eq!(done["status"], "succeeded");
    assert!(time(&done, "started_at") >= time(&job, "run_at"));
}

/// Rule 7: terminal jobs are removed once the retention period passed.
async fn retention_removes_old_jobs(on: &On) {
    let app = on.spawn(|c| c.retention = std::time::Duration::ZERO).await;
    let job = app.submit(json!({"kind": "noop"})).await;
    let path = format!("/v1/jobs/{}", id(&job));
    let gone = poll(|| async { (app.get(&path).await.status == 404).then_some(()) }).await;
    assert!(gone.is_some(), "job still there after retention");
}

/// Rule 10: shutdown lets short attempts finish and hands unfinished ones back to `queued`.
async fn graceful_shutdown_returns_running_jobs_to_queued(on: &On) {
    let app = on.spawn(|c| c.shutdown_grace = std::time::Duration::from_millis(300)).await;
    let long = app.submit(json!({"kind": "sleep", "payload": {"ms": 600000}})).await;
    app.wait_until(&id(&long), "running", |j| j["status"] == "running").await;
    let runtime = app.shutdown().await;
    let record = runtime.status(id(&long).parse().unwrap()).await.unwrap();
    assert_eq!(record.status, jobyard::JobStatus::Queued);
    assert_eq!(record.attempts, 0, "an interrupted attempt is not counted");
    assert!(record.history.is_empty() && record.error.is_none(), "nor entered in the history");
}

/// Rule 10: an attempt that ends within the grace period is recorded as usual.
/// Reports progress as soon as its handler starts, then sleeps: a job whose progress is stored
/// has started in its handler, which a `running` status alone does not say (the store shows it
/// before the pool has the claim's answer, and a drain hands such a job back unstarted).
#[derive(serde::Serialize, serde::Deserialize)]
struct Announced {
    ms: u64,
}

impl jobyard::Job for Announced {
    const KIND: &'static str = "announced";
    type Output = ();
    async fn run(self, ctx: jobyard::JobContext) -> Result<(), jobyard::JobError> {
        ctx.progress(&"started");
        tokio::time::sleep(std::time::Duration::from_millis(self.ms)).await;
        Ok(())
    }
}

async fn graceful_shutdown_waits_for_attempts_within_the_grace_period(on: &On) {
    let runtime = jobyard::Runtime::builder().with_builtin_kinds().register::<Announced>();
    let grace = |c: &mut jobyard::Config| c.shutdown_grace = std::time::Duration::from_secs(30);
    let app = on.spawn_runtime(&format!("t{}", fastrand::u32(..)), grace, runtime).await;
    let short = app.submit(json!({"kind": "announced", "payload": {"ms": 300}})).await;
    app.wait_until(&id(&short), "started in its handler", |j| j["progress"] == "started").await;
    let runtime = app.shutdown().await;
    let record = runtime.status(id(&short).parse().unwrap()).await.unwrap();
    assert_eq!(record.status, jobyard::JobStatus::Succeeded);
}

on_both_backends!(
    priority_order_with_one_worker,
    retries_count_attempts_until_success,
    retries_stop_when_attempts_are_exhausted,
    a_retry_is_scheduled_after_its_backoff,
    a_non_retryable_error_fails_at_once,
    an_attempt_over_its_timeout_fails,
    a_batch_dag_runs_in_dependency_order,
    a_failed_dependency_cancels_its_dependents_transitively,
    a_job_waits_for_an_existing_dependency,
    a_batch_cycle_is_rejected,
    cancelling_a_running_job_ends_it_cancelled,
    cancelling_waiting_or_scheduled_jobs_is_immediate_and_terminal_is_a_conflict,
    an_idempotency_key_returns_the_first_job,
    a_delayed_job_runs_after_its_time,
    retention_removes_old_jobs,
    graceful_shutdown_returns_running_jobs_to_queued,
    graceful_shutdown_waits_for_attempts_within_the_grace_period,
);
