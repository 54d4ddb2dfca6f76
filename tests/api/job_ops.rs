//! `POST /v1/jobs/{id}/retry`, `POST /v1/jobs/retry`, `POST /v1/jobs/{id}/run`,
//! `DELETE /v1/jobs/{id}` and `GET /v1/jobs?group=`: status codes and error bodies, a filtered
//! retry in several batches on both queue backends, and the cached result of a deleted job.

use serde_json::{json, Value};

use crate::helpers::*;

/// A non-retryable failing job, once it failed.
async fn failed_job(app: &TestApp, queue: &str) -> Value {
    let payload = json!({"retryable": false, "message": "no"});
    let job = app.submit(json!({"kind": "fail", "queue": queue, "payload": payload})).await;
    let job = app.wait_terminal(job["id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "failed");
    job
}

#[actix_web::test]
async fn retry_answers_the_job_or_409_naming_its_state() {
    let app = spawn_app().await;
    let failed = failed_job(&app, "default").await;
    let id = failed["id"].as_str().unwrap();
    let resp = app.post_empty(&format!("/v1/jobs/{id}/retry")).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    assert_eq!(
        (resp.body["status"].as_str(), resp.body["attempts"].as_u64()),
        (Some("queued"), Some(0))
    );
    assert_eq!(resp.body["error"], Value::Null);
    assert_eq!(resp.body["history"].as_array().map(Vec::len), Some(1), "the attempt is kept");
    let again = app.wait_terminal(id).await;
    assert_eq!(again["history"].as_array().map(Vec::len), Some(2), "it ran again");

    let ok = app.submit(json!({"kind": "noop"})).await;
    let ok = app.wait_terminal(ok["id"].as_str().unwrap()).await;
    let resp = app.post_empty(&format!("/v1/jobs/{}/retry", ok["id"].as_str().unwrap())).await;
    assert_eq!((resp.status, resp.code()), (409, "invalid_state"));
    let message = resp.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("succeeded") && message.contains("failed or cancelled"), "{message}");

    let missing = "0190b6a2-4f3c-7d4e-9a1b-2c3d4e5f6a7b";
    let resp = app.post_empty(&format!("/v1/jobs/{missing}/retry")).await;
    assert_eq!((resp.status, resp.code()), (404, "not_found"));
    let resp = app.post_empty("/v1/jobs/not-a-uuid/retry").await;
    assert_eq!((resp.status, resp.code(), resp.field()), (400, "invalid_request", Some("id")));
}

#[actix_web::test]
async fn run_answers_the_queued_job_or_409() {
    let app = spawn_app().await;
    let job = app.submit(json!({"kind": "noop", "delay_ms": 3_600_000})).await;
    let id = job["id"].as_str().unwrap();
    let resp = app.post_empty(&format!("/v1/jobs/{id}/run")).await;
    assert_eq!((resp.status, resp.body["status"].as_str()), (200, Some("queued")), "{}", resp.body);
    assert_eq!(app.wait_terminal(id).await["status"], "succeeded", "it ran at once");
    let resp = app.post_empty(&format!("/v1/jobs/{id}/run")).await;
    assert_eq!((resp.status, resp.code()), (409, "invalid_state"));
    let message = resp.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("succeeded") && message.contains("scheduled"), "{message}");
    let resp = app.post_empty("/v1/jobs/0190b6a2-4f3c-7d4e-9a1b-2c3d4e5f6a7b/run").await;
    assert_eq!((resp.status, resp.code()), (404, "not_found"));
}

#[actix_web::test]
async fn delete_removes_the_job_and_its_cached_result() {
    let app = spawn_app().await;
    let job = app.submit(json!({"kind": "noop", "payload": {"x": 1}})).await;
    let id = job["id"].as_str().unwrap();
    app.wait_terminal(id).await;
    let result = format!("/v1/cache/jobs:{id}:result");
    let cached = poll(|| async { (app.get(&result).await.status == 200).then_some(()) }).await;
    assert!(cached.is_some(), "the result reaches the cache");

    let resp = app.delete(&format!("/v1/jobs/{id}")).await;
    assert_eq!(resp.status, 204, "{}", resp.body);
    assert_eq!(app.get(&format!("/v1/jobs/{id}")).await.status, 404);
    assert_eq!(app.get(&result).await.status, 404, "its result is gone from the cache");
    let resp = app.delete(&format!("/v1/jobs/{id}")).await;
    assert_eq!((resp.status, resp.code()), (404, "not_found"));
    let stats = app.get("/v1/stats").await.body;
    assert_eq!(stats["queues"]["default"]["succeeded"], 0);

    let sleeping = app.submit(json!({"kind": "sleep", "payload": {"ms": 60000}})).await;
    let sleeping = sleeping["id"].as_str().unwrap();
    app.wait_until(sleeping, "running", |job| job["status"] == "running").await;
    let resp = app.delete(&format!("/v1/jobs/{sleeping}")).await;
    assert_eq!((resp.status, resp.code()), (409, "invalid_state"));
    let message = resp.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("running"), "{message}");
    app.post_empty(&format!("/v1/jobs/{sleeping}/cancel")).await;
}

#[actix_web::test]
async fn a_filtered_retry_checks_its_body() {
    let app = spawn_app().await;
    let resp = app.post("/v1/jobs/retry", json!({"status": "running"})).await;
    assert_eq!((resp.status, resp.code(), resp.field()), (400, "invalid_request", Some("status")));
    let resp = app.post("/v1/jobs/retry", json!({"status": "nope"})).await;
    assert_eq!((resp.status, resp.field()), (400, Some("status")));
    let resp = app.post("/v1/jobs/retry", json!({"state": "failed"})).await;
    assert_eq!((resp.status, resp.code()), (400, "invalid_request"), "unknown fields are refused");
    let resp = app.post("/v1/jobs/retry", json!({})).await;
    assert_eq!((resp.status, &resp.body), (200, &json!({"retried": 0})));
}

#[actix_web::test]
async fn listings_filter_by_group() {
    let app = spawn_app().await;
    let a = app.submit(json!({"kind": "noop", "group": "a", "delay_ms": 3_600_000})).await;
    app.submit(json!({"kind": "noop", "group": "b", "delay_ms": 3_600_000})).await;
    let page = app.get("/v1/jobs?group=a").await;
    assert_eq!(page.status, 200);
    let ids: Vec<&Value> = page.body["jobs"].as_array().unwrap().iter().map(|j| &j["id"]).collect();
    assert_eq!(ids, vec![&a["id"]]);
    let page = app.get("/v1/jobs?group=a&status=queued").await;
    assert_eq!(page.body["jobs"], json!([]));
    let page = app.get("/v1/jobs?group=").await;
    assert_eq!(page.body["jobs"].as_array().map(Vec::len), Some(2), "empty means absent");
}

/// More jobs than one batch retries: a cancelled root with 600 cancelled dependents, a failed
/// job of another queue, a cancelled job of another kind. Retrying the cancelled jobs of queue
/// `fan` retries exactly the root and its dependents, and they all run (the dependents, retried
/// before their root, wait for it).
async fn a_filtered_retry_retries_exactly_the_matching_jobs(on: &On) {
    let app = on.spawn(|_| {}).await;
    let root = app.submit(json!({"kind": "noop", "queue": "fan", "delay_ms": 3_600_000})).await;
    let root = root["id"].as_str().unwrap().to_owned();
    let dependents: Vec<Value> = (0..600)
        .map(|_| json!({"kind": "noop", "queue": "fan", "depends_on": [root.clone()]}))
        .collect();
    app.submit_batch(json!(dependents)).await;
    let sleep =
        json!({"kind": "sleep", "queue": "fan", "delay_ms": 3_600_000, "payload": {"ms": 1}});
    let other_kind = app.submit(sleep).await;
    let other_kind = other_kind["id"].as_str().unwrap().to_owned();
    app.post_empty(&format!("/v1/jobs/{other_kind}/cancel")).await;
    let other_queue = failed_job(&app, "elsewhere").await;
    app.post_empty(&format!("/v1/jobs/{root}/cancel")).await;
    let counts = |queue: &'static str| {
        let app = &app;
        async move { app.get("/v1/stats").await.body["queues"][queue].clone() }
    };
    let settled = poll(|| async { (counts("fan").await["cancelled"] == 602).then_some(()) }).await;
    assert!(settled.is_some(), "the dependents are cancelled: {}", counts("fan").await);

    let filter = json!({"status": "cancelled", "queue": "fan", "kind": "noop"});
    let resp = app.post("/v1/jobs/retry", filter).await;
    assert_eq!((resp.status, &resp.body), (200, &json!({"retried": 601})));
    let done = poll(|| async { (counts("fan").await["succeeded"] == 601).then_some(()) }).await;
    assert!(done.is_some(), "every retried job runs: {}", counts("fan").await);
    let fan = counts("fan").await;
    assert_eq!((fan["cancelled"].as_u64(), fan["waiting"].as_u64()), (Some(1), Some(0)));
    let other = app.get(&format!("/v1/jobs/{other_kind}")).await.body;
    assert_eq!(other["status"], "cancelled", "another kind is left alone");
    let id = other_queue["id"].as_str().unwrap();
    assert_eq!(app.get(&format!("/v1/jobs/{id}")).await.body["status"], "failed");

    // Nothing matches any more.
    let resp = app
        .post("/v1/jobs/retry", json!({"status": "cancelled", "queue": "fan", "kind": "noop"}))
        .await;
    assert_eq!(resp.body, json!({"retried": 0}));
}

on_both_backends!(a_filtered_retry_retries_exactly_the_matching_jobs);
