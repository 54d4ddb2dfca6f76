//! Every error code of `api.md` this server produces, each from a malformed request, always
//! with the error body.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use jobyard::job::{JobId, JobRecord, Json, NewJob};
use jobyard::queue::flow::{Claims, GroupWeight, Limit, LimitSpec, QueueInfo};
use jobyard::queue::*;
use jobyard::schedule::{Fire, Schedule};
use jobyard::{JobSpec, JobStatus, Runtime};
use serde_json::{json, Value};

use crate::helpers::*;

/// `null` is a wrong type like any other for a typed field, on every route; only `payload`, which
/// takes any JSON, takes `null` as a value.
#[actix_web::test]
async fn null_is_refused_for_every_typed_field() {
    let app = spawn_app().await;
    let fields = [
        "queue",
        "priority",
        "max_attempts",
        "backoff",
        "timeout_ms",
        "delay_ms",
        "run_at",
        "depends_on",
        "idempotency_key",
    ];
    for field in fields {
        let mut spec = json!({"kind": "noop"});
        spec[field] = Value::Null;
        let resp = app.post("/v1/jobs", spec.clone()).await;
        assert_eq!((resp.status, resp.field()), (400, Some(field)), "{spec}: {}", resp.body);
        let batch = app.post("/v1/jobs/batch", json!({"jobs": [spec]})).await;
        assert_eq!(batch.status, 400, "batch with {field}: null: {}", batch.body);
    }
    let batch = app.post("/v1/jobs/batch", json!({"jobs": [{"kind": "noop", "ref": null}]})).await;
    assert_eq!(batch.status, 400, "{}", batch.body);
    let schedule = json!({"cron": "0 * * * * *", "timezone": null, "job": {"kind": "noop"}});
    let resp = app.put("/v1/schedules/nightly", schedule).await;
    assert_eq!((resp.status, resp.field()), (400, Some("timezone")), "{}", resp.body);
    for body in [json!({"prefix": null}), json!({"tags": null})] {
        let resp = app.post("/v1/cache/invalidate", body.clone()).await;
        assert_eq!(resp.status, 400, "{body}: {}", resp.body);
    }
    let resp = app.post("/v1/jobs", json!({"kind": "noop", "payload": null})).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
}

#[actix_web::test]
async fn invalid_requests_name_their_field() {
    let app = spawn_app().await;
    let id = JobId::new().to_string();
    let cases = [
        (json!({"kind": "noop", "priority": 1001}), "priority"),
        (json!({"kind": "noop", "priority": "high"}), "priority"),
        (json!({"kind": "noop", "max_attempts": 0}), "max_attempts"),
        (json!({"kind": "noop", "max_attempts": 101}), "max_attempts"),
        (json!({"kind": "noop", "timeout_ms": 0}), "timeout_ms"),
        (json!({"kind": "noop", "delay_ms": 10, "run_at": "2030-01-01T00:00:00Z"}), "delay_ms"),
        (json!({"kind": "noop", "run_at": "tomorrow"}), "run_at"),
        (json!({"kind": "noop", "queue": "no spaces"}), "queue"),
        (json!({"kind": "noop", "queue": "q".repeat(65)}), "queue"),
        (json!({"kind": "k".repeat(129)}), "kind"),
        (json!({"kind": "noop", "idempotency_key": "k".repeat(257)}), "idempotency_key"),
        (json!({"kind": "noop", "depends_on": vec![id; 1001]}), "depends_on"),
        (json!({"kind": "noop", "backoff": {"multiplier": 0.5}}), "backoff.multiplier"),
        (json!({"kind": "noop", "backoff": {"initial_ms": 10, "max_ms": 5}}), "backoff.max_ms"),
        (json!({"kind": "noop", "unexpected": true}), "unexpected"),
        (json!({"kind": "noop", "ref": "a"}), "ref"),
        (json!({"kind": "sleep", "payload": {"ms": "long"}}), "payload"),
        (json!({"kind": "http", "payload": {"url": "ftp://x"}}), "payload"),
        (json!({"payload": 1}), "kind"),
        (json!([1, 2]), "body"),
    ];
    for (spec, field) in cases {
        let resp = app.post("/v1/jobs", spec.clone()).await;
        assert_eq!(resp.status, 400, "{spec} answered {}", resp.body);
        assert_eq!(resp.code(), "invalid_request", "{spec}");
        assert_eq!(resp.field(), Some(field), "{spec}: {}", resp.body);
        assert!(resp.body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
}

#[actix_web::test]
async fn malformed_json_is_an_invalid_request() {
    let app = spawn_app().await;
    for body in
        [&b"{\"kind\": "[..], b"not json", b"", b"{\"kind\":\"noop\"} trailing", b"\xff\xfe"]
    {
        let resp = app.post_raw("/v1/jobs", "application/json", body.to_vec()).await;
        assert_eq!(resp.status, 400, "{:?}", String::from_utf8_lossy(body));
        assert_eq!(resp.code(), "invalid_request");
    }
}

#[actix_web::test]
async fn batch_limits_and_empty_batches_are_invalid() {
    let app = spawn_app().await;
    let resp = app.post("/v1/jobs/batch", json!({"jobs": []})).await;
    assert_eq!((resp.status, resp.code()), (400, "invalid_request"));
    let many: Vec<_> = (0..1001).map(|_| json!({"kind": "noop"})).collect();
    let resp = app.post("/v1/jobs/batch", json!({"jobs": many})).await;
    assert_eq!((resp.status, resp.code(), resp.field()), (400, "invalid_request", Some("jobs")));
    let resp =
        app.post("/v1/jobs/batch", json!({"jobs": [{"kind": "noop", "priority": 5000}]})).await;
    assert_eq!(resp.field(), Some("jobs[0].priority"));
    let resp = app
        .post(
            "/v1/jobs/batch",
            json!({"jobs": [{"ref": "a", "kind": "noop"}, {"ref": "a", "kind": "noop"}]}),
        )
        .await;
    assert_eq!((resp.status, resp.field()), (400, Some("jobs[1].ref")));
    let repeated = json!({"jobs": [
        {"ref": "a", "kind": "noop", "idempotency_key": "k", "depends_on": ["b"]},
        {"ref": "b", "kind": "noop", "idempotency_key": "k"},
    ]});
    let resp = app.post("/v1/jobs/batch", repeated).await;
    assert_eq!((resp.status, resp.field()), (400, Some("jobs[1].idempotency_key")));
}

#[actix_web::test]
async fn unknown_kind_dependency_and_cycle_have_their_codes() {
    let app = spawn_app().await;
    let resp = app.post("/v1/jobs", json!({"kind": "launch_rockets"})).await;
    assert_eq!((resp.status, resp.code(), resp.field()), (400, "unknown_kind", Some("kind")));
    let missing = JobId::new().to_string();
    let resp = app.post("/v1/jobs", json!({"kind": "noop", "depends_on": [missing]})).await;
    assert_eq!((resp.status, resp.code()), (400, "unknown_dependency"));
    assert!(resp.body["error"]["message"].as_str().unwrap().contains(&missing));
    let resp = app.post("/v1/jobs", json!({"kind": "noop", "depends_on": ["not-an-id"]})).await;
    assert_eq!((resp.status, resp.code()), (400, "unknown_dependency"));
    let resp = app
        .post(
            "/v1/jobs/batch",
            json!({"jobs": [{"ref": "x", "kind": "noop", "depends_on": ["x"]}]}),
        )
        .await;
    assert_eq!((resp.status, resp.code()), (400, "dependency_cycle"));
}

#[actix_web::test]
async fn oversized_bodies_are_413() {
    let app = spawn_app_with(|c| c.max_body_bytes = 2048).await;
    let big = json!({"kind": "noop", "payload": "x".repeat(4096)});
    let resp = app.post("/v1/jobs", big).await;
    assert_eq!((resp.status, resp.code()), (413, "payload_too_large"));
    let ok = app.post("/v1/jobs", json!({"kind": "noop", "payload": "x".repeat(100)})).await;
    assert_eq!(ok.status, 201);
}

#[actix_web::test]
async fn a_body_that_is_not_json_is_415() {
    let app = spawn_app().await;
    let resp = app.post_raw("/v1/jobs", "text/plain", b"{\"kind\":\"noop\"}".to_vec()).await;
    assert_eq!((resp.status, resp.code()), (415, "unsupported_media_type"));
    let resp = app.post_empty("/v1/jobs").await;
    assert_eq!((resp.status, resp.code()), (415, "unsupported_media_type"));
}

#[actix_web::test]
async fn a_token_is_required_on_v1_when_configured() {
    let app = spawn_app_with(|c| c.api_token = Some(jobyard::config::Secret::new("s3cret"))).await;
    let resp = app.get("/v1/stats").await;
    assert_eq!((resp.status, resp.code()), (401, "unauthorized"));
    let resp = app.get_with("/v1/stats", &[("authorization", "Bearer wrong")]).await;
    assert_eq!(resp.status, 401);
    let resp = app.get_with("/v1/stats", &[("authorization", "s3cret")]).await;
    assert_eq!(resp.status, 401, "the scheme is required");
    let resp = app.get_with("/v1/stats", &[("authorization", "Bearer s3cret")]).await;
    assert_eq!(resp.status, 200);
    let resp = app.get_with("/v1/stats", &[("authorization", "bearer s3cret")]).await;
    assert_eq!(resp.status, 200, "the scheme is case-insensitive");
    assert_eq!(app.get("/health").await.status, 200, "/health stays open");
    assert_eq!(app.get("/ready").await.status, 200, "/ready stays open");
}

#[actix_web::test]
async fn unknown_jobs_routes_and_methods_have_error_bodies() {
    let app = spawn_app().await;
    let missing = JobId::new();
    let resp = app.get(&format!("/v1/jobs/{missing}")).await;
    assert_eq!((resp.status, resp.code()), (404, "not_found"));
    let resp = app.post_empty(&format!("/v1/jobs/{missing}/cancel")).await;
    assert_eq!((resp.status, resp.code()), (404, "not_found"));
    let resp = app.get(&format!("/v1/jobs/{missing}/wait?timeout_ms=10")).await;
    assert_eq!((resp.status, resp.code()), (404, "not_found"));
    let resp = app.get("/v1/jobs/not-a-uuid").await;
    assert_eq!((resp.status, resp.code(), resp.field()), (400, "invalid_request", Some("id")));
    let resp = app.get("/v1/nothing-here").await;
    assert_eq!((resp.status, resp.code()), (404, "not_found"));
    let resp = app.get("/elsewhere").await;
    assert_eq!((resp.status, resp.code()), (404, "not_found"));
    let resp = app.delete("/v1/jobs").await;
    assert_eq!((resp.status, resp.code()), (405, "method_not_allowed"));
}

#[actix_web::test]
async fn bad_query_parameters_are_invalid_requests() {
    let app = spawn_app().await;
    let job = app.submit(json!({"kind": "noop"})).await;
    let id = job["id"].as_str().unwrap();
    let cases = [
        ("/v1/jobs?limit=0", "limit"),
        ("/v1/jobs?limit=1001", "limit"),
        ("/v1/jobs?limit=many", "limit"),
        ("/v1/jobs?status=sleeping", "status"),
        ("/v1/jobs?cursor=zzz", "cursor"),
        ("/v1/jobs?colour=blue", "colour"),
    ];
    for (path, field) in cases {
        let resp = app.get(path).await;
        assert_eq!((resp.status, resp.code()), (400, "invalid_request"), "{path}: {}", resp.body);
        assert_eq!(resp.field(), Some(field), "{path}: {}", resp.body);
    }
    let resp = app.get(&format!("/v1/jobs/{id}/wait?timeout_ms=60001")).await;
    assert_eq!((resp.status, resp.field()), (400, Some("timeout_ms")));
    let resp = app.get(&format!("/v1/jobs/{id}/wait?timeout_ms=-5")).await;
    assert_eq!(resp.status, 400);
}

/// A queue backend with faults: `down` makes every call fail as a lost Redis would; otherwise
/// it is the memory backend, except that a submit to the queue `boom` panics (a backend bug),
/// and that claims can be held: while `held` is set, a claim that took jobs is made but its
/// answer waits.
struct Faulty {
    inner: MemoryQueue,
    down: bool,
    held: std::sync::atomic::AtomicBool,
    released: tokio::sync::Notify,
}

impl Faulty {
    fn new(down: bool) -> Arc<Self> {
        Arc::new(Faulty {
            inner: MemoryQueue::new(),
            down,
            held: false.into(),
            released: tokio::sync::Notify::new(),
        })
    }

    /// Holds the answers of the claims made from now on.
    fn hold_claims(&self) {
        self.held.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    /// Lets the held answers go.
    fn release_claims(&self) {
        self.held.store(false, std::sync::atomic::Ordering::SeqCst);
        self.released.notify_waiters();
    }

    fn gate(&self) -> Result<(), QueueError> {
        match self.down {
            true => Err(QueueError::Unavailable("connection refused".into())),
            false => Ok(()),
        }
    }
}

#[async_trait]
impl QueueBackend for Faulty {
    fn name(&self) -> &'static str {
        "faulty"
    }
    async fn submit(&self, jobs: Vec<NewJob>, now: DateTime<Utc>) -> Result<Submitted, QueueError> {
        self.gate()?;
        if jobs.iter().any(|j| &*j.queue == "boom") {
            panic!("a bug in the backend");
        }
        self.inner.submit(jobs, now).await
    }
    async fn claim(&self, claim: Claim, now: DateTime<Utc>) -> Result<Claims, QueueError> {
        self.gate()?;
        let released = self.released.notified();
        let claimed = self.inner.claim(claim, now).await;
        let got_jobs = claimed.as_ref().is_ok_and(|c| !c.jobs.is_empty());
        if got_jobs && self.held.load(std::sync::atomic::Ordering::SeqCst) {
            released.await;
        }
        claimed
    }
    async fn complete(
        &self,
        done: Vec<Completion>,
        now: DateTime<Utc>,
    ) -> Result<Changes, QueueError> {
        self.gate()?;
        self.inner.complete(done, now).await
    }
    async fn renew(
        &self,
        leases: Vec<LeaseRef>,
        lease: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<LeaseState>, QueueError> {
        self.gate()?;
        self.inner.renew(leases, lease, now).await
    }
    async fn release(
        &self,
        leases: Vec<LeaseRef>,
        now: DateTime<Utc>,
    ) -> Result<Changes, QueueError> {
        self.gate()?;
        self.inner.release(leases, now).await
    }
    async fn report_progress(
        &self,
        lease: LeaseRef,
        progress: Json,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        self.gate()?;
        self.inner.report_progress(lease, progress, now).await
    }
    async fn cancel(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(CancelOutcome, Changes), QueueError> {
        self.gate()?;
        self.inner.cancel(id, now).await
    }
    async fn retry(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(JobRecord, Changes), QueueError> {
        self.gate()?;
        self.inner.retry(id, now).await
    }
    async fn run_now(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(JobRecord, Changes), QueueError> {
        self.gate()?;
        self.inner.run_now(id, now).await
    }
    async fn delete(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(JobRecord, Changes), QueueError> {
        self.gate()?;
        self.inner.delete(id, now).await
    }
    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, QueueError> {
        self.gate()?;
        self.inner.get(id).await
    }
    async fn list(&self, query: &ListQuery) -> Result<Page, QueueError> {
        self.gate()?;
        self.inner.list(query).await
    }
    async fn tick(
        &self,
        now: DateTime<Utc>,
        retention: std::time::Duration,
    ) -> Result<Changes, QueueError> {
        self.gate()?;
        self.inner.tick(now, retention).await
    }
    async fn stats(&self) -> Result<QueueStats, QueueError> {
        self.gate()?;
        self.inner.stats().await
    }
    async fn queued_by_kind(&self) -> Result<std::collections::BTreeMap<String, u64>, QueueError> {
        self.gate()?;
        self.inner.queued_by_kind().await
    }
    async fn ping(&self) -> Result<(), QueueError> {
        self.gate()
    }
    async fn put_schedule(&self, schedule: Schedule) -> Result<bool, QueueError> {
        self.gate()?;
        self.inner.put_schedule(schedule).await
    }
    async fn get_schedule(&self, name: &str) -> Result<Option<Schedule>, QueueError> {
        self.gate()?;
        self.inner.get_schedule(name).await
    }
    async fn list_schedules(&self) -> Result<Vec<Schedule>, QueueError> {
        self.gate()?;
        self.inner.list_schedules().await
    }
    async fn delete_schedule(&self, name: &str) -> Result<bool, QueueError> {
        self.gate()?;
        self.inner.delete_schedule(name).await
    }
    async fn record_fire(&self, name: &str, fire: Fire) -> Result<(), QueueError> {
        self.gate()?;
        self.inner.record_fire(name, fire).await
    }
    async fn throttled(
        &self,
        now: DateTime<Utc>,
    ) -> Result<std::collections::BTreeMap<String, u64>, QueueError> {
        self.gate()?;
        self.inner.throttled(now).await
    }
    async fn put_limit(
        &self,
        name: &str,
        spec: LimitSpec,
        now: DateTime<Utc>,
    ) -> Result<(Limit, bool), QueueError> {
        self.gate()?;
        self.inner.put_limit(name, spec, now).await
    }
    async fn get_limit(&self, name: &str, now: DateTime<Utc>) -> Result<Option<Limit>, QueueError> {
        self.gate()?;
        self.inner.get_limit(name, now).await
    }
    async fn list_limits(&self, now: DateTime<Utc>) -> Result<Vec<Limit>, QueueError> {
        self.gate()?;
        self.inner.list_limits(now).await
    }
    async fn delete_limit(&self, name: &str) -> Result<bool, QueueError> {
        self.gate()?;
        self.inner.delete_limit(name).await
    }
    async fn hold_limit(
        &self,
        name: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        self.gate()?;
        self.inner.hold_limit(name, until, now).await
    }
    async fn pause_queue(&self, queue: &str, paused: bool) -> Result<(), QueueError> {
        self.gate()?;
        self.inner.pause_queue(queue, paused).await
    }
    async fn queues(&self, now: DateTime<Utc>) -> Result<Vec<QueueInfo>, QueueError> {
        self.gate()?;
        self.inner.queues(now).await
    }
    async fn set_group_weight(&self, name: &str, weight: Option<u32>) -> Result<(), QueueError> {
        self.gate()?;
        self.inner.set_group_weight(name, weight).await
    }
    async fn group_weights(&self) -> Result<Vec<GroupWeight>, QueueError> {
        self.gate()?;
        self.inner.group_weights().await
    }
    async fn dependents(&self, id: JobId, most: usize) -> Result<Vec<JobRecord>, QueueError> {
        self.gate()?;
        self.inner.dependents(id, most).await
    }
    async fn limit_jobs(
        &self,
        name: &str,
        most: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<JobRecord>, QueueError> {
        self.gate()?;
        self.inner.limit_jobs(name, most, now).await
    }
}

#[actix_web::test]
async fn a_backend_bug_is_a_500_that_leaks_nothing_and_the_server_keeps_serving() {
    let runtime = Runtime::builder().with_builtin_kinds().queue_backend(Faulty::new(false));
    let app = spawn_app_from(test_config(), runtime).await;
    let resp = app.post("/v1/jobs", json!({"kind": "noop", "queue": "boom"})).await;
    assert_eq!((resp.status, resp.code()), (500, "internal"));
    assert_eq!(resp.body["error"]["message"], "internal error");
    let job = app.submit(json!({"kind": "noop"})).await;
    let done = app.wait_terminal(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "the queue actor survived the panic");
}

#[actix_web::test]
async fn an_unavailable_backend_is_503_with_retry_after() {
    let runtime = Runtime::builder().with_builtin_kinds().queue_backend(Faulty::new(true));
    let app = spawn_app_from(test_config(), runtime).await;
    let resp = app.post("/v1/jobs", json!({"kind": "noop"})).await;
    assert_eq!((resp.status, resp.code()), (503, "backend_unavailable"));
    assert_eq!(resp.header("retry-after"), Some("1"));
    assert!(
        !resp.body["error"]["message"].as_str().unwrap().contains("refused"),
        "no internals leak"
    );
    let resp = app.get("/ready").await;
    assert_eq!((resp.status, resp.code()), (503, "backend_unavailable"));
    let message = resp.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("queue"), "names the component: {message}");
    assert!(!message.contains("refused"), "but not the backend's own words: {message}");
    assert_eq!(app.get("/health").await.status, 200, "alive even when not ready");
}

/// A shutdown that begins while a claim is on its way (its job already runs in the store, the
/// pool does not know it yet) waits for the claim and hands its job back with the rest: no job
/// is left running in the store after the shutdown returns.
#[actix_web::test]
async fn a_shutdown_hands_back_the_jobs_of_a_claim_in_flight() {
    let (runtime, backend, id) = claim_held_in_flight().await;
    let shutdown = runtime.shutdown();
    let (handed_back, ()) = tokio::join!(shutdown, release_once_draining(&runtime, &backend));
    assert_eq!(handed_back, 1, "the claimed job is handed back");
    let record = runtime.status(id).await.unwrap();
    assert_eq!((record.status, record.attempts), (JobStatus::Queued, 0));
}

/// Two shutdowns at once: neither cuts the other short, and the job is handed back once.
#[actix_web::test]
async fn overlapping_shutdowns_hand_back_the_jobs_of_a_claim_in_flight() {
    let (runtime, backend, id) = claim_held_in_flight().await;
    let (first, second, ()) = tokio::join!(
        runtime.shutdown(),
        runtime.shutdown(),
        release_once_draining(&runtime, &backend)
    );
    assert_eq!(first + second, 1, "the claimed job is handed back once");
    assert_eq!(runtime.status(id).await.unwrap().status, JobStatus::Queued);
}

/// A runtime on a backend that holds claim answers, with a long job claimed in the store and
/// the claim's answer held.
async fn claim_held_in_flight() -> (Runtime, Arc<Faulty>, JobId) {
    let backend = Faulty::new(false);
    let mut config = test_config();
    config.shutdown_grace = std::time::Duration::from_secs(30);
    let runtime = Runtime::builder()
        .config(config)
        .with_builtin_kinds()
        .queue_backend(backend.clone())
        .start()
        .unwrap();
    backend.hold_claims();
    let sleep = JobSpec {
        payload: Some(jobyard::job::record::json_from_str("{\"ms\": 600000}").unwrap()),
        ..JobSpec::new("sleep")
    };
    let id = runtime.submit_spec(sleep).await.unwrap().record.id;
    let claimed = poll(|| async {
        (runtime.status(id).await.unwrap().status == JobStatus::Running).then_some(())
    });
    assert!(claimed.await.is_some(), "the job is claimed in the store");
    (runtime, backend, id)
}

/// Lets the held claim answers go once the pool drains.
async fn release_once_draining(runtime: &Runtime, backend: &Faulty) {
    let draining = poll(|| async { runtime.workers().await.unwrap().draining.then_some(()) });
    assert!(draining.await.is_some(), "the pool drains");
    backend.release_claims();
}

/// A cancel that reaches the worker pool while its claim of that very job is still on its way
/// (the job already runs in the store, the pool does not know it yet) is kept and applied when
/// the claim arrives: the job stops at once, not at its next lease renewal.
#[actix_web::test]
async fn a_cancel_that_arrives_while_the_claim_is_in_flight_is_not_lost() {
    let backend = Faulty::new(false);
    let runtime = Runtime::builder().with_builtin_kinds().queue_backend(backend.clone());
    let app = spawn_app_from(
        {
            let mut config = test_config();
            // Renewals (which would also carry the cancel) come only every 200 s.
            config.lease = std::time::Duration::from_secs(600);
            config.cancel_grace = std::time::Duration::from_millis(10);
            config
        },
        runtime,
    )
    .await;
    backend.hold_claims();
    let job = app.submit(json!({"kind": "sleep", "payload": {"ms": 600000}})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    app.wait_until(&id, "claimed", |j| j["status"] == "running").await;
    let resp = app.post_empty(&format!("/v1/jobs/{id}/cancel")).await;
    assert_eq!(resp.body["cancel_requested"], true, "{}", resp.body);
    backend.release_claims();
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "cancelled");
}

/// Each message says the field, what it allows and what was sent, in the API's words: never a
/// Rust type, a parser's position or a caret diagram.
#[actix_web::test]
async fn every_400_says_what_is_allowed_in_the_apis_words() {
    let app = spawn_app().await;
    let post = |body: Value| app.post("/v1/jobs", body);
    let cases: Vec<(Resp, &str, &[&str])> = vec![
        (
            post(json!({"kind": "noop", "priority": 1e20})).await,
            "priority",
            &["priority must be an integer from -1000 to 1000", "got 1e+20"],
        ),
        (
            post(json!({"kind": "noop", "delay_ms": -5})).await,
            "delay_ms",
            &["delay_ms must be a whole number of milliseconds", "got -5"],
        ),
        (
            post(json!({"kind": "noop", "max_attempts": "3"})).await,
            "max_attempts",
            &["max_attempts must be an integer from 1 to 100", "got \"3\""],
        ),
        (
            post(json!({"kind": "sleep"})).await,
            "payload",
            &["the payload of kind 'sleep' must be a JSON object; got null"],
        ),
        (
            post(json!({"kind": "sleep", "payload": {}})).await,
            "payload",
            &["the payload of kind 'sleep': ms is required"],
        ),
        (
            post(json!({"kind": "noop", "run_at": "tomorrow"})).await,
            "run_at",
            &["run_at must be an RFC 3339 date-time such as 2026-12-24T18:00:00Z"],
        ),
        (
            post(json!({"kind": "nope"})).await,
            "kind",
            &["no handler is registered for kind 'nope'; the kinds accepted are fail, http, noop, sleep"],
        ),
        (
            post(json!({"kind": "noop", "backoff": {"kind": "linear"}})).await,
            "backoff.kind",
            &["unknown field 'kind'; the fields are initial_ms, max_ms, multiplier, jitter"],
        ),
        (
            app.get("/v1/jobs/01a2529b-e49b-74b9-bb1d-735d1c8999e0/wait?timeout_ms=soon").await,
            "timeout_ms",
            &["timeout_ms must be a whole number (0 or more); got 'soon'"],
        ),
        (
            app.put("/v1/schedules/s", json!({"cron": "0 0 25 * * *", "job": {"kind": "noop"}})).await,
            "cron",
            &["the hours field '25' is not valid (0-23"],
        ),
        (
            app.put("/v1/schedules/s", json!({"cron": "* * *", "job": {"kind": "noop"}})).await,
            "cron",
            &["it has 3 fields; expected 6 fields"],
        ),
        (
            app.put("/v1/limits/l", json!({"rate": {"tokens": "many", "per_ms": 1000}})).await,
            "rate.tokens",
            &["tokens must be an integer from 1 to", "got \"many\""],
        ),
    ];
    for (resp, field, says) in cases {
        assert_eq!(resp.status, 400, "{}", resp.body);
        assert_eq!(resp.body["error"]["field"], field, "{}", resp.body);
        let message = resp.body["error"]["message"].as_str().expect("a message");
        for said in says {
            assert!(message.contains(said), "{field}: {message:?} should say {said:?}");
        }
        for rust in ["i32", "u32", "u64", "struct ", " at line ", "^", "Query deserialize"] {
            assert!(!message.contains(rust), "{field}: {message:?} names {rust:?}");
        }
    }
}
