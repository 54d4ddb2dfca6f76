//! The jobs endpoints: submit, read with validators, long-poll, list, cancel, stats, health.

use serde_json::json;

use crate::helpers::*;

async fn submit_answers_201_with_location_and_the_job(on: &On) {
    let app = on.spawn(|_| {}).await;
    let resp =
        app.post("/v1/jobs", json!({"kind": "noop", "payload": {"x": 1}, "priority": 7})).await;
    assert_eq!(resp.status, 201);
    let id = resp.body["id"].as_str().unwrap().to_owned();
    assert_eq!(resp.header("location"), Some(format!("/v1/jobs/{id}").as_str()));
    assert_eq!(resp.body["kind"], "noop");
    assert_eq!(resp.body["priority"], 7);
    assert_eq!(resp.body["queue"], "default");
    assert_eq!(resp.body["max_attempts"], 3);
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "succeeded");
    assert_eq!(done["result"], json!({"x": 1}), "noop returns its payload");
    assert_eq!(done["attempts"], 1);
    assert!(done["worker"].as_str().unwrap().contains("/w"));
}

async fn get_answers_304_when_the_client_copy_is_current(on: &On) {
    let app = on.spawn(|_| {}).await;
    let id = app.submit(json!({"kind": "noop"})).await["id"].as_str().unwrap().to_owned();
    app.wait_terminal(&id).await;
    let path = format!("/v1/jobs/{id}");
    let first = app.get(&path).await;
    let etag = first.header("etag").expect("ETag").to_owned();
    let modified = first.header("last-modified").expect("Last-Modified").to_owned();
    let again = app.get_with(&path, &[("if-none-match", &etag)]).await;
    assert_eq!(again.status, 304);
    assert_eq!(again.header("etag"), Some(etag.as_str()));
    let since = app.get_with(&path, &[("if-modified-since", &modified)]).await;
    assert_eq!(since.status, 304);
    let other = app.get_with(&path, &[("if-none-match", "\"something-else\"")]).await;
    assert_eq!(other.status, 200);
    let old = app.get_with(&path, &[("if-modified-since", "Mon, 01 Jan 2001 00:00:00 GMT")]).await;
    assert_eq!(old.status, 200);
    // If-None-Match wins over If-Modified-Since.
    let both = app
        .get_with(
            &path,
            &[("if-none-match", "\"something-else\""), ("if-modified-since", &modified)],
        )
        .await;
    assert_eq!(both.status, 200);
}

async fn the_etag_changes_when_the_job_changes(on: &On) {
    let app = on.spawn(|_| {}).await;
    let id = app
        .submit(json!({"kind": "sleep", "payload": {"ms": 60000}, "delay_ms": 60000}))
        .await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = app.get(&format!("/v1/jobs/{id}")).await.header("etag").unwrap().to_owned();
    app.post_empty(&format!("/v1/jobs/{id}/cancel")).await;
    let after = app.get_with(&format!("/v1/jobs/{id}"), &[("if-none-match", &before)]).await;
    assert_eq!(after.status, 200);
    assert_ne!(after.header("etag"), Some(before.as_str()));
}

async fn wait_returns_early_when_the_job_ends_and_at_the_timeout_otherwise(on: &On) {
    let app = on.spawn(|_| {}).await;
    let quick = app.submit(json!({"kind": "sleep", "payload": {"ms": 50}})).await;
    let resp =
        app.get(&format!("/v1/jobs/{}/wait?timeout_ms=30000", quick["id"].as_str().unwrap())).await;
    assert_eq!(resp.status, 200);
    assert_eq!(resp.body["status"], "succeeded");
    let slow = app.submit(json!({"kind": "sleep", "payload": {"ms": 60000}})).await;
    let resp =
        app.get(&format!("/v1/jobs/{}/wait?timeout_ms=50", slow["id"].as_str().unwrap())).await;
    assert_eq!(resp.status, 200);
    assert!(!is_terminal(&resp.body), "answered before the job ended: {}", resp.body);
}

async fn list_filters_and_pages_newest_first(on: &On) {
    let app = on.spawn(|_| {}).await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let job = app.submit(json!({"kind": "noop", "queue": "paged", "payload": i})).await;
        ids.push(job["id"].as_str().unwrap().to_owned());
    }
    app.submit(json!({"kind": "noop", "queue": "other"})).await;
    let first = app.get("/v1/jobs?queue=paged&limit=2").await;
    assert_eq!(first.status, 200);
    let page: Vec<&str> =
        first.body["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(page, vec![ids[4].as_str(), ids[3].as_str()]);
    let cursor = first.body["next_cursor"].as_str().expect("a next page").to_owned();
    let second = app.get(&format!("/v1/jobs?queue=paged&limit=2&cursor={cursor}")).await;
    let page: Vec<&str> =
        second.body["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(page, vec![ids[2].as_str(), ids[1].as_str()]);
    let cursor = second.body["next_cursor"].as_str().unwrap().to_owned();
    let last = app.get(&format!("/v1/jobs?queue=paged&limit=2&cursor={cursor}")).await;
    assert_eq!(last.body["jobs"].as_array().unwrap().len(), 1);
    assert!(last.body["next_cursor"].is_null());
    for id in &ids {
        app.wait_terminal(id).await;
    }
    let succeeded = app.get("/v1/jobs?status=succeeded&kind=noop&queue=paged&limit=1000").await;
    assert_eq!(succeeded.body["jobs"].as_array().unwrap().len(), 5);
    let none = app.get("/v1/jobs?status=failed&queue=paged").await;
    assert!(none.body["jobs"].as_array().unwrap().is_empty());
    let blank = app.get("/v1/jobs?status=&kind=&queue=&limit=&cursor=").await;
    assert_eq!(blank.status, 200, "empty parameters mean absent: {}", blank.body);
    assert_eq!(blank.body["jobs"].as_array().unwrap().len(), 6);
}

async fn stats_count_jobs_per_queue_and_state(on: &On) {
    let app = on.spawn(|_| {}).await;
    let done = app.submit(json!({"kind": "noop", "queue": "stats"})).await;
    app.wait_terminal(done["id"].as_str().unwrap()).await;
    app.submit(json!({"kind": "noop", "queue": "stats", "delay_ms": 60000})).await;
    let stats = app.get("/v1/stats").await;
    assert_eq!(stats.status, 200);
    let queue = &stats.body["queues"]["stats"];
    assert_eq!(queue["succeeded"], 1);
    assert_eq!(queue["scheduled"], 1);
    for state in ["waiting", "queued", "running", "failed", "cancelled"] {
        assert_eq!(queue[state], 0, "{state}");
    }
    assert_eq!(stats.body["workers"]["total"], 16);
    assert_eq!(stats.body["kinds"]["noop"], json!({"queued": 0, "handled_here": true}));
    let (queue, redis) = match on {
        On::Memory => ("memory", "disabled"),
        On::Redis(_) => ("redis", "up"),
    };
    assert_eq!(stats.body["backends"]["queue"], queue);
    assert_eq!(stats.body["backends"]["cache"], "memory");
    assert_eq!(stats.body["backends"]["redis"], redis);
    assert!(stats.body["cache"]["entries"].is_u64());
}

async fn health_and_ready_answer(on: &On) {
    let app = on.spawn(|_| {}).await;
    let health = app.get("/health").await;
    assert_eq!((health.status, health.body["status"].as_str()), (200, Some("ok")));
    let ready = app.get("/ready").await;
    assert_eq!(ready.status, 200);
    assert_eq!(ready.body["components"]["queue"], "ok");
}

/// Past `JOBYARD_MAX_QUEUED` jobs waiting in a queue, submits answer 429 `queue_full` with
/// `Retry-After`; stats say which queue is full.
async fn a_full_queue_answers_429(on: &On) {
    let app = on
        .spawn(|c| {
            c.concurrency = 1;
            c.max_queued = 100;
            c.cancel_grace = std::time::Duration::from_millis(10);
        })
        .await;
    let blocker = app.submit(json!({"kind": "sleep", "payload": {"ms": 600000}})).await;
    let blocker = blocker["id"].as_str().unwrap().to_owned();
    app.wait_until(&blocker, "running", |j| j["status"] == "running").await;
    let hundred: Vec<_> = (0..100).map(|i| json!({"kind": "noop", "payload": i})).collect();
    app.submit_batch(json!(hundred)).await;
    let refused = app.post("/v1/jobs", json!({"kind": "noop"})).await;
    assert_eq!((refused.status, refused.code()), (429, "queue_full"), "{}", refused.body);
    assert!(refused.header("retry-after").is_some());
    let batch = app
        .post(
            "/v1/jobs/batch",
            json!({"jobs": [{"kind": "noop", "queue": "other"}, {"kind": "noop"}]}),
        )
        .await;
    assert_eq!(batch.status, 429, "a batch is refused whole");
    let stats = app.get("/v1/stats").await.body;
    assert_eq!(stats["full_queues"], json!(["default"]));
    assert_eq!(stats["limits"]["max_queued"], 100);
    assert_eq!(stats["queues"]["default"]["queued"], 100, "nothing refused was kept");
    assert!(stats["queues"].get("other").is_none_or(|q| q["queued"] == 0));
    assert_eq!(app.post("/v1/jobs", json!({"kind": "noop", "queue": "other"})).await.status, 201);
}

/// A result larger than `JOBYARD_MAX_RESULT_BYTES` fails the attempt, saying why.
async fn an_oversized_result_fails_the_attempt(on: &On) {
    let app = on.spawn(|c| c.max_result_bytes = 1_000).await;
    let big = "x".repeat(2_000);
    let job = app.submit(json!({"kind": "noop", "payload": big, "max_attempts": 3})).await;
    let done = app.wait_terminal(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["attempts"], 1, "not retried: the same result would come back");
    let error = done["error"].as_str().unwrap();
    assert!(error.contains("2002 bytes") && error.contains("1000"), "{error}");
    let small = app.submit(json!({"kind": "noop", "payload": "ok"})).await;
    assert_eq!(app.wait_terminal(small["id"].as_str().unwrap()).await["status"], "succeeded");
}

/// A handler's error text is kept to its first 4 KiB (on a character boundary), saying so.
async fn a_long_error_is_cut(on: &On) {
    let app = on.spawn(|_| {}).await;
    let message = "é".repeat(50_000);
    let job = json!({"kind": "fail", "payload": {"message": message, "retryable": false}});
    let job = app.submit(job).await;
    let done = app.wait_terminal(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "failed");
    let error = done["error"].as_str().unwrap();
    assert!(error.len() <= 4096, "{} bytes kept", error.len());
    assert!(error.starts_with("éé") && error.ends_with("(cut: 100000 bytes in all)"), "{error}");
}

on_both_backends!(
    a_long_error_is_cut,
    a_full_queue_answers_429,
    an_oversized_result_fails_the_attempt,
    submit_answers_201_with_location_and_the_job,
    get_answers_304_when_the_client_copy_is_current,
    the_etag_changes_when_the_job_changes,
    wait_returns_early_when_the_job_ends_and_at_the_timeout_otherwise,
    list_filters_and_pages_newest_first,
    stats_count_jobs_per_queue_and_state,
    health_and_ready_answer,
);
