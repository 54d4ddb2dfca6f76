//! Flow control over HTTP: `/v1/limits`, `/v1/queues`, `/v1/groups`, jobs naming limits, and
//! limits at work in a running server (on both queue backends).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use crate::helpers::*;

fn id(job: &Value) -> String {
    job["id"].as_str().expect("job id").to_owned()
}

fn time(value: &Value) -> DateTime<Utc> {
    value.as_str().and_then(|t| t.parse().ok()).unwrap_or_else(|| panic!("a time: {value}"))
}

async fn limits_are_created_replaced_read_and_deleted(on: &On) {
    let app = on.spawn(|_| {}).await;
    let spec = json!({"rate": {"tokens": 5000, "per_ms": 3600000}});
    let created = app.put("/v1/limits/github", spec).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["name"], "github");
    assert_eq!(created.body["rate"], json!({"tokens": 5000, "per_ms": 3600000}));
    assert_eq!(created.body["state"]["tokens_left"], 5000);
    assert_eq!(created.body["state"]["running"], 0);
    assert!(created.body["state"]["held_until"].is_null());
    let replaced = app.put("/v1/limits/github", json!({"concurrency": 4})).await;
    assert_eq!(replaced.status, 200, "{}", replaced.body);
    assert_eq!(replaced.body["concurrency"], 4);
    assert!(replaced.body.get("rate").is_none(), "{}", replaced.body);
    app.put("/v1/limits/github:acme", json!({"concurrency": 1})).await;
    let one = app.get("/v1/limits/github:acme").await;
    assert_eq!((one.status, &one.body["concurrency"]), (200, &json!(1)));
    let all = app.get("/v1/limits").await;
    let names: Vec<&str> = all.body["limits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["github", "github:acme"]);
    assert_eq!(app.delete("/v1/limits/github").await.status, 204);
    let gone = app.get("/v1/limits/github").await;
    assert_eq!((gone.status, gone.code()), (404, "not_found"));
    assert_eq!(app.delete("/v1/limits/github").await.status, 404);
}

async fn invalid_limits_name_their_field(on: &On) {
    let app = on.spawn(|_| {}).await;
    let cases = [
        (json!({}), "rate"),
        (json!({"rate": {"tokens": 0, "per_ms": 1000}}), "rate.tokens"),
        (json!({"rate": {"tokens": 10, "per_ms": 0}}), "rate.per_ms"),
        (json!({"rate": {"tokens": 10}}), "rate.per_ms"),
        (json!({"concurrency": 0}), "concurrency"),
        (json!({"concurrency": null}), "concurrency"),
        (json!({"concurrency": 2, "burst": 5}), "burst"),
    ];
    for (spec, field) in cases {
        let resp = app.put("/v1/limits/x", spec.clone()).await;
        assert_eq!(resp.status, 400, "{spec}: {}", resp.body);
        assert_eq!(resp.field(), Some(field), "{spec}: {}", resp.body);
    }
    let resp = app.put("/v1/limits/bad%20name", json!({"concurrency": 1})).await;
    assert_eq!((resp.status, resp.field()), (400, Some("name")), "{}", resp.body);
}

async fn jobs_name_limits_that_exist(on: &On) {
    let app = on.spawn(|_| {}).await;
    app.put("/v1/limits/gh", json!({"rate": {"tokens": 10, "per_ms": 1000}})).await;
    let unknown = app.post("/v1/jobs", json!({"kind": "noop", "limits": ["gh", "nope"]})).await;
    assert_eq!((unknown.status, unknown.code()), (400, "unknown_limit"), "{}", unknown.body);
    assert_eq!(unknown.field(), Some("limits"));
    assert!(unknown.body["error"]["message"].as_str().unwrap().contains("'nope'"));
    let cases = [
        (json!({"kind": "noop", "limits": ["gh"], "cost": 11}), "cost"),
        (json!({"kind": "noop", "limits": ["gh"], "cost": 0}), "cost"),
        (json!({"kind": "noop", "limits": ["has space"]}), "limits"),
        (
            json!({"kind": "noop", "limits": ["a", "b", "c", "d", "e", "f", "g", "h", "i"]}),
            "limits",
        ),
        (json!({"kind": "noop", "group": ""}), "group"),
        (json!({"kind": "noop", "group": null}), "group"),
    ];
    for (spec, field) in cases {
        let resp = app.post("/v1/jobs", spec.clone()).await;
        assert_eq!(resp.status, 400, "{spec}: {}", resp.body);
        assert_eq!(resp.field(), Some(field), "{spec}: {}", resp.body);
    }
    let spec = json!({"kind": "noop", "limits": ["gh"], "cost": 3, "group": "acme"});
    let job = app.post("/v1/jobs", spec).await;
    assert_eq!(job.status, 201, "{}", job.body);
    assert_eq!((&job.body["limits"], &job.body["cost"]), (&json!(["gh"]), &json!(3)));
    assert_eq!(job.body["group"], "acme");
    let done = app.wait_terminal(&id(&job.body)).await;
    assert_eq!(done["status"], "succeeded");
}

/// A rate of 2 per 400 ms: six jobs all run, never three in one window (their starts are the
/// claims' times, which the window counts in whole milliseconds).
async fn a_rate_limit_paces_a_running_server(on: &On) {
    let app = on.spawn(|_| {}).await;
    app.put("/v1/limits/paced", json!({"rate": {"tokens": 2, "per_ms": 400}})).await;
    let jobs = app.submit_batch(json!(vec![json!({"kind": "noop", "limits": ["paced"]}); 6])).await;
    let mut starts = Vec::new();
    for job in &jobs {
        let done = app.wait_terminal(&id(job)).await;
        assert_eq!(done["status"], "succeeded", "{done}");
        starts.push(time(&done["started_at"]).timestamp_millis());
    }
    starts.sort();
    for (i, start) in starts.iter().enumerate() {
        let in_window = starts[i..].iter().take_while(|s| **s < start + 400).count();
        assert!(in_window <= 2, "{in_window} starts within 400 ms of {start}: {starts:?}");
    }
}

/// A concurrency limit holds the jobs behind a running one, counted as throttled, while other
/// jobs run.
async fn held_jobs_are_counted_and_others_run(on: &On) {
    let app = on.spawn(|_| {}).await;
    app.put("/v1/limits/one", json!({"concurrency": 1})).await;
    let long = json!({"kind": "sleep", "payload": {"ms": 600000}, "limits": ["one"]});
    let running = app.submit(long.clone()).await;
    app.wait_until(&id(&running), "running", |j| j["status"] == "running").await;
    let held = app.submit_batch(json!([long.clone(), long.clone(), long])).await;
    let free = app.submit(json!({"kind": "noop", "priority": -5})).await;
    assert_eq!(app.wait_terminal(&id(&free)).await["status"], "succeeded");
    let stats = app.get("/v1/stats").await;
    assert_eq!(stats.body["queues"]["default"]["throttled"], 3, "{}", stats.body);
    let queues = app.get("/v1/queues").await;
    let default = &queues.body["queues"][0];
    assert_eq!((&default["name"], &default["throttled"]), (&json!("default"), &json!(3)));
    assert_eq!(app.get("/v1/limits/one").await.body["state"]["running"], 1);
    // Ending the running job lets the next one start.
    app.post_empty(&format!("/v1/jobs/{}/cancel", id(&running))).await;
    app.wait_until(&id(&held[0]), "running", |j| j["status"] == "running").await;
    for job in held.iter().chain([&running]) {
        app.post_empty(&format!("/v1/jobs/{}/cancel", id(job))).await;
    }
}

/// A paused queue keeps its jobs while others run; resumed, they run.
async fn a_paused_queue_waits_for_its_resume(on: &On) {
    let app = on.spawn(|_| {}).await;
    let paused = app.post_empty("/v1/queues/reports/pause").await;
    assert_eq!(paused.status, 200, "{}", paused.body);
    assert_eq!((&paused.body["name"], &paused.body["paused"]), (&json!("reports"), &json!(true)));
    let waiting = app.submit(json!({"kind": "noop", "queue": "reports"})).await;
    let other = app.submit(json!({"kind": "noop"})).await;
    assert_eq!(app.wait_terminal(&id(&other)).await["status"], "succeeded");
    let still = app.get(&format!("/v1/jobs/{}", id(&waiting))).await;
    assert_eq!(still.body["status"], "queued", "the pool ran, but not this job");
    let queues = app.get("/v1/queues").await;
    let reports = queues.body["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "reports")
        .cloned()
        .expect("listed");
    assert_eq!((&reports["paused"], &reports["queued"]), (&json!(true), &json!(1)));
    let resumed = app.post_empty("/v1/queues/reports/resume").await;
    assert_eq!(resumed.body["paused"], false);
    assert_eq!(app.wait_terminal(&id(&waiting)).await["status"], "succeeded");
    let bad = app.post_empty("/v1/queues/bad%20name/pause").await;
    assert_eq!((bad.status, bad.field()), (400, Some("queue")), "{}", bad.body);
}

async fn group_weights_are_managed(on: &On) {
    let app = on.spawn(|_| {}).await;
    let set = app.put("/v1/groups/acme", json!({"weight": 3})).await;
    assert_eq!(set.status, 200, "{}", set.body);
    assert_eq!(set.body, json!({"name": "acme", "weight": 3}));
    assert_eq!(app.get("/v1/groups").await.body["groups"], json!([{"name": "acme", "weight": 3}]));
    assert_eq!(app.delete("/v1/groups/acme").await.status, 204);
    assert_eq!(app.get("/v1/groups").await.body["groups"], json!([]));
    let bad = app.put("/v1/groups/acme", json!({"weight": 0})).await;
    assert_eq!((bad.status, bad.field()), (400, Some("weight")), "{}", bad.body);
    let bad = app.put("/v1/groups/acme", json!({"weight": 2, "extra": 1})).await;
    assert_eq!(bad.status, 400, "{}", bad.body);
}

/// A loopback upstream answering 429 with `Retry-After: 1` once, then 200.
async fn limited_upstream() -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = calls.clone();
    let server = HttpServer::new(move || {
        let counter = counter.clone();
        App::new().route(
            "/limited",
            web::get().to(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                async move {
                    match n {
                        0 => HttpResponse::TooManyRequests()
                            .insert_header(("retry-after", "1"))
                            .finish(),
                        _ => HttpResponse::Ok().body("ok"),
                    }
                }
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .expect("bind upstream");
    let base = format!("http://{}", server.addrs()[0]);
    actix_rt::spawn(server.run());
    (base, calls)
}

/// An `http` job under a limit that meets a 429 holds the limit until the upstream's time: the
/// job behind it waits until then instead of spending an attempt.
async fn a_429_holds_the_limit(on: &On) {
    let app = on.spawn(|_| {}).await;
    let (base, calls) = limited_upstream().await;
    app.put("/v1/limits/up", json!({"rate": {"tokens": 100, "per_ms": 1000}})).await;
    let spec =
        json!({"kind": "http", "payload": {"url": format!("{base}/limited")}, "limits": ["up"]});
    let first = app.submit(spec.clone()).await;
    let held = app
        .wait_until(&id(&first), "its 429 recorded", |j| {
            !j["history"].as_array().unwrap().is_empty()
        })
        .await;
    let error = held["history"][0]["error"].as_str().unwrap();
    assert!(error.contains("limit 'up' exhausted"), "{error}");
    let limit = app.get("/v1/limits/up").await;
    let until = time(&limit.body["state"]["held_until"]);
    let second = app.submit(spec).await;
    let first = app.wait_terminal(&id(&first)).await;
    let second = app.wait_terminal(&id(&second)).await;
    for job in [&first, &second] {
        assert_eq!(job["status"], "succeeded", "{job}");
        assert!(time(&job["started_at"]) >= until, "{job} started before {until}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 3, "no call was spent while held");
}

on_both_backends!(
    limits_are_created_replaced_read_and_deleted,
    invalid_limits_name_their_field,
    jobs_name_limits_that_exist,
    a_rate_limit_paces_a_running_server,
    held_jobs_are_counted_and_others_run,
    a_paused_queue_waits_for_its_resume,
    group_weights_are_managed,
    a_429_holds_the_limit,
);

/// A handler that says its upstream is exhausted holds every job under the limit, on the
/// embedding API.
#[actix_web::test]
async fn a_handler_holds_its_limit_until_the_upstream_allows_calls() {
    use jobyard::{Job, JobContext, JobError, Runtime};
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct Call {
        exhausted_for_ms: i64,
    }

    impl Job for Call {
        const KIND: &'static str = "call";
        type Output = DateTime<Utc>;
        async fn run(self, ctx: JobContext) -> Result<DateTime<Utc>, JobError> {
            if self.exhausted_for_ms > 0 && ctx.attempt() == 1 {
                let until = Utc::now() + chrono::Duration::milliseconds(self.exhausted_for_ms);
                return Err(JobError::limit_exhausted(ctx.limits()[0].to_string(), until));
            }
            Ok(Utc::now())
        }
    }

    let runtime = Runtime::builder().register::<Call>().start().expect("runtime");
    let client = runtime.client();
    let spec = jobyard::queue::flow::LimitSpec { concurrency: Some(10), rate: None };
    client.put_limit("upstream", spec).await.unwrap();
    let first = client.submit(Call { exhausted_for_ms: 1_500 }).limit("upstream").await.unwrap();
    let failed_once = poll(|| async {
        let job = first.status().await.ok()?;
        (!job.history.is_empty()).then_some(job)
    });
    let failed_once = failed_once.await.expect("a first attempt");
    let held = poll(|| async { client.limit("upstream").await.ok()?.state.held_until });
    let until = held.await.expect("the limit is held");
    assert!(failed_once.history[0].error.contains("exhausted"));
    let second = client.submit(Call { exhausted_for_ms: 0 }).limit("upstream").await.unwrap();
    let ran_at = second.wait_timeout(Duration::from_secs(10)).await.unwrap();
    assert!(ran_at >= until, "ran at {ran_at}, held until {until}");
    assert!(first.wait_timeout(Duration::from_secs(10)).await.unwrap() >= until);
    runtime.shutdown().await;
}
