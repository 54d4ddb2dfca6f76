//! What the dashboard reads over HTTP besides the spec's routes: the history of finished jobs,
//! the cache's layers and hot keys, the Redis round trip in the stats, the jobs waiting on a
//! job and the jobs a limit holds back; on both queue backends.

use chrono::{DateTime, Utc};
use jobyard::config::CacheBackendKind;
use jobyard::{Job, JobContext, JobError, Runtime};
use serde_json::{json, Value};

use crate::helpers::{poll, On, TestApp, DEADLINE};

fn id_of(job: &Value) -> String {
    job["id"].as_str().expect("job id").to_owned()
}

/// The start of the 10-second bucket `at` falls in.
fn bucket_start(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp().div_euclid(10) * 10, 0).unwrap()
}

fn at_of(point: &Value) -> DateTime<Utc> {
    point["at"].as_str().expect("at").parse().expect("RFC 3339")
}

/// Total succeeded and failed in the history's points from `from` to `to` (bucket starts).
fn finished_between(history: &Value, from: DateTime<Utc>, to: DateTime<Utc>) -> (u64, u64) {
    let points = history["points"].as_array().expect("points");
    let within = points.iter().filter(|p| (from..=to).contains(&at_of(p)));
    within.fold((0, 0), |(s, f), p| {
        (s + p["succeeded"].as_u64().unwrap(), f + p["failed"].as_u64().unwrap())
    })
}

/// Polls the history until its totals are `expected`; answers it.
async fn history_totalling(app: &TestApp, expected: (u64, u64)) -> Value {
    let found = poll(|| async {
        let resp = app.get("/v1/stats/history").await;
        assert_eq!(resp.status, 200, "{}", resp.body);
        let all = finished_between(&resp.body, DateTime::<Utc>::MIN_UTC, DateTime::<Utc>::MAX_UTC);
        (all == expected).then_some(resp.body)
    })
    .await;
    found.unwrap_or_else(|| panic!("the history never totalled {expected:?} within {DEADLINE:?}"))
}

async fn history_counts_jobs_in_the_bucket_they_ended_in(on: &On) {
    let app = on.spawn(|_| {}).await;
    let before = Utc::now();
    let fail = json!({"kind": "fail", "payload": {"retryable": false}});
    let jobs = app
        .submit_batch(json!([{"kind": "noop"}, {"kind": "noop"}, {"kind": "noop"}, fail, fail]))
        .await;
    for job in &jobs {
        app.wait_terminal(&id_of(job)).await;
    }
    let after = Utc::now();
    let history = history_totalling(&app, (3, 2)).await;
    assert_eq!(history["step_secs"], 10);
    let points = history["points"].as_array().unwrap();
    assert_eq!(points.len(), 360, "an hour of 10-second buckets");
    assert!(points
        .windows(2)
        .all(|w| at_of(&w[1]) - at_of(&w[0]) == chrono::Duration::seconds(10)));
    let last = at_of(points.last().unwrap());
    assert!(last <= Utc::now() && last >= bucket_start(after), "the current bucket ends the list");
    assert_eq!(
        finished_between(&history, bucket_start(before), bucket_start(after)),
        (3, 2),
        "counted in the buckets between the submit and the last end"
    );
}

async fn cache_stats_count_each_layers_hits_and_misses(on: &On) {
    let app = on
        .spawn(|config| {
            if config.redis_url.is_some() {
                config.cache_backend = CacheBackendKind::Hybrid;
            }
        })
        .await;
    let resp = app.put("/v1/cache/hot-key", json!({"n": 1})).await;
    assert_eq!(resp.status, 204, "{}", resp.body);
    for _ in 0..200 {
        assert_eq!(app.get("/v1/cache/hot-key").await.status, 200);
    }
    for n in 0..3 {
        assert_eq!(app.get(&format!("/v1/cache/absent-{n}")).await.status, 404);
    }
    let resp = app.get("/v1/stats/cache").await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let layers = resp.body["layers"].as_array().unwrap();
    let layer = |name: &str| layers.iter().find(|l| l["layer"] == name).cloned();
    let memory = layer("memory").expect("a memory layer");
    let count = |layer: &Value, what: &str| layer[what].as_u64().unwrap();
    assert!(count(&memory, "misses") >= 3, "{memory}");
    let ratio = memory["hit_ratio"].as_f64().unwrap();
    assert!(ratio > 0.0 && ratio < 1.0, "{memory}");
    match on {
        On::Memory => {
            assert_eq!(resp.body["backend"], "memory");
            assert_eq!(layers.len(), 1, "memory alone: {layers:?}");
            assert!(count(&memory, "hits") >= 200, "{memory}");
        }
        On::Redis(_) => {
            assert_eq!(resp.body["backend"], "hybrid");
            assert_eq!(layers.len(), 2, "{layers:?}");
            let redis = layer("redis").expect("a redis layer");
            // Every read of the key was answered by one layer: the L1, or Redis behind it.
            assert!(count(&memory, "hits") + count(&redis, "hits") >= 200, "{layers:?}");
            // The L1's misses went on to Redis, which had none of the absent keys.
            assert!(count(&redis, "misses") >= 3, "{redis}");
        }
    }
    // Reads are sampled (one in 8), so 200 reads of one key make it the hottest (missing keys
    // are read once each).
    let hot = resp.body["hot_keys"].as_array().unwrap();
    assert_eq!(hot[0]["key"], "hot-key", "{hot:?}");
    assert!(hot[0]["reads"].as_u64().unwrap() > 0);
    assert!(hot.len() <= 20);
}

async fn stats_carry_the_redis_round_trip_when_there_is_redis(on: &On) {
    let app = on.spawn(|_| {}).await;
    match on {
        On::Memory => {
            let resp = app.get("/v1/stats").await;
            assert_eq!(resp.status, 200);
            assert_eq!(resp.body["backends"]["redis"], "disabled");
            assert!(resp.body["backends"]["redis_rtt_ms"].is_null(), "{}", resp.body["backends"]);
        }
        On::Redis(_) => {
            let rtt = poll(|| async {
                let resp = app.get("/v1/stats").await;
                resp.body["backends"]["redis_rtt_ms"].as_f64()
            })
            .await;
            assert!(rtt.is_some_and(|ms| ms >= 0.0), "a round trip is reported: {rtt:?}");
        }
    }
}

async fn dependents_are_the_jobs_waiting_on_a_job(on: &On) {
    let app = on.spawn(|_| {}).await;
    // The parent is not due for ten minutes: its dependents wait on it meanwhile.
    let jobs = app
        .submit_batch(json!([
            {"ref": "parent", "kind": "noop", "delay_ms": 600000},
            {"kind": "noop", "depends_on": ["parent"], "queue": "children"},
            {"kind": "noop", "depends_on": ["parent"]},
        ]))
        .await;
    let parent = id_of(&jobs[0]);
    let resp = app.get(&format!("/v1/jobs/{parent}/dependents")).await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let mut expected = vec![
        json!({"id": jobs[1]["id"], "kind": "noop", "queue": "children", "status": "waiting"}),
        json!({"id": jobs[2]["id"], "kind": "noop", "queue": "default", "status": "waiting"}),
    ];
    expected.sort_by_key(|job| job["id"].as_str().unwrap().to_owned());
    assert_eq!(resp.body, json!({ "jobs": expected }));
    let resp = app.get(&format!("/v1/jobs/{}/dependents", id_of(&jobs[1]))).await;
    assert_eq!((resp.status, resp.body.clone()), (200, json!({"jobs": []})));
    let resp = app.get(&format!("/v1/jobs/{}/dependents", jobyard::JobId::new())).await;
    assert_eq!((resp.status, resp.code()), (404, "not_found"));
    let resp = app.get("/v1/jobs/not-a-uuid/dependents").await;
    assert_eq!((resp.status, resp.field()), (400, Some("id")));
}

async fn limit_jobs_are_the_jobs_a_saturated_limit_holds_back(on: &On) {
    let app = on.spawn(|_| {}).await;
    assert_eq!(app.put("/v1/limits/one", json!({"concurrency": 1})).await.status, 201);
    let running =
        app.submit(json!({"kind": "sleep", "payload": {"ms": 60000}, "limits": ["one"]})).await;
    app.wait_until(&id_of(&running), "running", |job| job["status"] == "running").await;
    let held = app
        .submit_batch(json!([
            {"kind": "noop", "limits": ["one"]},
            {"kind": "noop", "limits": ["one"], "priority": 5},
            {"kind": "noop"},
        ]))
        .await;
    let resp = app.get("/v1/limits/one/jobs").await;
    assert_eq!(resp.status, 200, "{}", resp.body);
    let ids: Vec<&str> =
        resp.body["jobs"].as_array().unwrap().iter().map(|j| j["id"].as_str().unwrap()).collect();
    assert_eq!(ids, [id_of(&held[1]), id_of(&held[0])], "held back, highest priority first");
    assert!(resp.body["jobs"].as_array().unwrap().iter().all(|j| j["status"] == "queued"));
    let resp = app.get("/v1/limits/one/jobs?limit=1").await;
    assert_eq!(resp.body["jobs"].as_array().unwrap().len(), 1);
    let resp = app.get("/v1/limits/nope/jobs").await;
    assert_eq!((resp.status, resp.code()), (404, "not_found"));
    for bad in ["0", "1001", "many"] {
        let resp = app.get(&format!("/v1/limits/one/jobs?limit={bad}")).await;
        assert_eq!((resp.status, resp.field()), (400, Some("limit")), "limit={bad}");
    }
}

on_both_backends!(
    history_counts_jobs_in_the_bucket_they_ended_in,
    cache_stats_count_each_layers_hits_and_misses,
    stats_carry_the_redis_round_trip_when_there_is_redis,
    dependents_are_the_jobs_waiting_on_a_job,
    limit_jobs_are_the_jobs_a_saturated_limit_holds_back,
);

/// A job only the first instance runs.
#[derive(serde::Serialize, serde::Deserialize)]
struct OnFirst;
impl Job for OnFirst {
    const KIND: &'static str = "test.on_first";
    type Output = ();
    async fn run(self, _: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

/// A job only the second instance runs.
#[derive(serde::Serialize, serde::Deserialize)]
struct OnSecond;
impl Job for OnSecond {
    const KIND: &'static str = "test.on_second";
    type Output = ();
    async fn run(self, _: JobContext) -> Result<(), JobError> {
        Ok(())
    }
}

#[actix_web::test]
async fn the_history_on_redis_counts_every_instance() {
    let on = On::redis();
    let prefix = format!("t{}", fastrand::u32(..));
    let first = Runtime::builder().register::<OnFirst>();
    let first = on.spawn_runtime(&prefix, |_| {}, first).await;
    let second = Runtime::builder().register::<OnSecond>();
    let second = on.spawn_runtime(&prefix, |_| {}, second).await;
    let mut jobs = Vec::new();
    for _ in 0..2 {
        jobs.push(first.submit(json!({"kind": "test.on_first"})).await);
    }
    for _ in 0..3 {
        jobs.push(second.submit(json!({"kind": "test.on_second"})).await);
    }
    let mut workers = std::collections::BTreeSet::new();
    for job in &jobs {
        let done = first.wait_terminal(&id_of(job)).await;
        assert_eq!(done["status"], "succeeded");
        workers.insert(done["worker"].as_str().unwrap().split_once('/').unwrap().0.to_owned());
    }
    assert_eq!(workers.len(), 2, "each instance ran its own jobs: {workers:?}");
    // Each reads what the other handed over to Redis, and its own at once.
    history_totalling(&first, (5, 0)).await;
    history_totalling(&second, (5, 0)).await;
}
