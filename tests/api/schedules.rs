//! `/v1/schedules`: create, replace, read, delete, validation, and cron firing (rule 6).

use serde_json::json;

use crate::helpers::*;

async fn a_schedule_is_created_replaced_read_and_deleted(on: &On) {
    let app = on.spawn(|_| {}).await;
    let spec = json!({"cron": "0 0 * * * *", "timezone": "Europe/Paris", "job": {"kind": "noop"}});
    let created = app.put("/v1/schedules/hourly", spec.clone()).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["name"], "hourly");
    assert_eq!(created.body["timezone"], "Europe/Paris");
    assert!(created.body["next_run_at"].is_string());
    assert!(created.body["last_run_at"].is_null());
    let replaced = app
        .put("/v1/schedules/hourly", json!({"cron": "0 30 * * * *", "job": {"kind": "noop"}}))
        .await;
    assert_eq!(replaced.status, 200);
    assert_eq!(replaced.body["cron"], "0 30 * * * *");
    assert_eq!(replaced.body["timezone"], "UTC");
    let one = app.get("/v1/schedules/hourly").await;
    assert_eq!((one.status, one.body["cron"].as_str()), (200, Some("0 30 * * * *")));
    let all = app.get("/v1/schedules").await;
    assert_eq!(all.body["schedules"].as_array().unwrap().len(), 1);
    assert_eq!(app.delete("/v1/schedules/hourly").await.status, 204);
    let gone = app.get("/v1/schedules/hourly").await;
    assert_eq!((gone.status, gone.code()), (404, "not_found"));
    assert_eq!(app.delete("/v1/schedules/hourly").await.status, 404);
}

async fn invalid_schedules_name_their_field(on: &On) {
    let app = on.spawn(|_| {}).await;
    let unknown = jobyard::JobId::new().to_string();
    let cases = [
        (json!({"cron": "every minute", "job": {"kind": "noop"}}), "cron"),
        (
            json!({"cron": "* * * * * *", "timezone": "Mars/Olympus", "job": {"kind": "noop"}}),
            "timezone",
        ),
        (json!({"cron": "* * * * * *", "job": {"kind": "nope"}}), "job.kind"),
        (json!({"cron": "* * * * * *", "job": {"kind": "noop", "priority": 5000}}), "job.priority"),
        (json!({"cron": "* * * * * *"}), "job"),
        (json!({"cron": "* * * * * *", "job": {"kind": "noop"}, "extra": 1}), "extra"),
        // Expressions that never fire: February 31st, and a year gone by.
        (json!({"cron": "0 0 0 31 2 *", "job": {"kind": "noop"}}), "cron"),
        (json!({"cron": "0 0 0 1 1 * 2020", "job": {"kind": "noop"}}), "cron"),
        // A job that could never be submitted: it depends on a job that does not exist.
        (
            json!({"cron": "* * * * * *", "job": {"kind": "noop", "depends_on": [unknown]}}),
            "job.depends_on",
        ),
    ];
    for (spec, field) in cases {
        let resp = app.put("/v1/schedules/bad", spec.clone()).await;
        assert_eq!(resp.status, 400, "{spec}: {}", resp.body);
        assert_eq!(resp.field(), Some(field), "{spec}: {}", resp.body);
    }
    let resp = app
        .put("/v1/schedules/bad%20name", json!({"cron": "* * * * * *", "job": {"kind": "noop"}}))
        .await;
    assert_eq!((resp.status, resp.field()), (400, Some("name")));
    assert_eq!(app.get("/v1/schedules").await.body["schedules"], json!([]));
    // A dependency that exists is fine.
    let first = app.post("/v1/jobs", json!({"kind": "noop"})).await;
    let job = json!({"kind": "noop", "depends_on": [first.body["id"]]});
    let resp = app.put("/v1/schedules/after", json!({"cron": "0 0 * * * *", "job": job})).await;
    assert_eq!(resp.status, 201, "{}", resp.body);
}

async fn a_cron_schedule_enqueues_one_job_per_tick(on: &On) {
    let app = on.spawn(|_| {}).await;
    let spec =
        json!({"cron": "* * * * * *", "job": {"kind": "noop", "payload": "tick", "queue": "cron"}});
    assert_eq!(app.put("/v1/schedules/every-second", spec).await.status, 201);
    let jobs = poll(|| async {
        let listed = app.get("/v1/jobs?queue=cron&limit=1000").await;
        let jobs = listed.body["jobs"].as_array().cloned().unwrap_or_default();
        (jobs.len() >= 2).then_some(jobs)
    })
    .await
    .expect("two ticks fired");
    let keys: Vec<&str> = jobs.iter().map(|j| j["idempotency_key"].as_str().unwrap()).collect();
    let mut unique = keys.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), keys.len(), "one job per tick: {keys:?}");
    assert!(keys.iter().all(|k| k.starts_with("cron:every-second:")));
    let schedule = app.get("/v1/schedules/every-second").await;
    assert!(schedule.body["last_job_id"].is_string());
    assert!(schedule.body["last_run_at"].is_string());
}

on_both_backends!(
    a_schedule_is_created_replaced_read_and_deleted,
    invalid_schedules_name_their_field,
    a_cron_schedule_enqueues_one_job_per_tick,
);
