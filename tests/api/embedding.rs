//! The typed embedding API on both queue backends: handlers read their dependencies' results
//! from the job store, batches are submitted all at once with dependencies between their
//! entries, schedules take a typed job, handles are rebuilt from ids and follow their job.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use jobyard::queue::ListQuery;
use jobyard::{
    Job, JobContext, JobError, JobHandle, JobId, JobOptions, JobStatus, Runtime, RuntimeError,
};
use serde::{Deserialize, Serialize};

use crate::helpers::{poll, On, TestApp};

/// Counts the items of one upstream source.
#[derive(Serialize, Deserialize)]
struct Count {
    source: String,
    items: u64,
}

impl Job for Count {
    const KIND: &'static str = "test.count";
    type Output = u64;
    async fn run(self, ctx: JobContext) -> Result<u64, JobError> {
        if let Some(order) = ctx.extension::<Arc<Mutex<Vec<String>>>>() {
            order.lock().unwrap().push(self.source);
        }
        Ok(self.items)
    }
}

/// Adds up the counts it depends on, reading them both ways a handler can.
#[derive(Serialize, Deserialize)]
struct Total;

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Summary {
    total: u64,
    first: u64,
    sources: usize,
}

impl Job for Total {
    const KIND: &'static str = "test.total";
    type Output = Summary;
    async fn run(self, ctx: JobContext) -> Result<Summary, JobError> {
        let counts = ctx.dependency_results::<Count>().await?;
        let first = ctx.result_of::<Count>(ctx.dependencies()[0]).await?;
        Ok(Summary { total: counts.iter().sum(), first, sources: ctx.dependencies().len() })
    }
}

/// Reads the result of the job it names as if it were a `Total`.
#[derive(Serialize, Deserialize)]
struct Misread {
    job: JobId,
}

impl Job for Misread {
    const KIND: &'static str = "test.misread";
    type Output = ();
    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        ctx.result_of::<Total>(self.job).await.map(drop)
    }
}

async fn app(
    on: &On,
    adjust: impl FnOnce(&mut jobyard::Config),
) -> (TestApp, Arc<Mutex<Vec<String>>>) {
    let order = Arc::new(Mutex::new(Vec::new()));
    let runtime = Runtime::builder()
        .register::<Count>()
        .register::<Total>()
        .register::<Misread>()
        .extension(order.clone());
    (on.spawn_runtime(&format!("t{}", fastrand::u32(..)), adjust, runtime).await, order)
}

fn count(source: &str, items: u64) -> Count {
    Count { source: source.into(), items }
}

async fn a_fan_in_reads_its_dependencies_typed_results(on: &On) {
    let (app, _) = app(on, |_| {}).await;
    let rt = &app.runtime;
    let mut batch = rt.batch();
    let counts = [("github", 3), ("gitlab", 4), ("jira", 5)]
        .map(|(source, items)| batch.add(count(source, items), JobOptions::new()));
    let total = batch.add(Total, JobOptions::new().depends_on_all(counts));
    assert_eq!(batch.len(), 4);
    let submitted = batch.submit().await.unwrap();
    let summary = submitted.handle(total).wait_timeout(Duration::from_secs(15)).await.unwrap();
    assert_eq!(summary, Summary { total: 12, first: 3, sources: 3 });
    let record = submitted.handle(total).status().await.unwrap();
    let ids: Vec<JobId> = counts.iter().map(|&c| submitted.handle(c).id()).collect();
    assert_eq!(record.depends_on, ids, "the dependencies, in the order they were named");

    // A job of another kind is refused, fatally: no retry can make it the right kind.
    let misread = rt.submit(Misread { job: ids[0] }).max_attempts(3).await.unwrap();
    match misread.wait_timeout(Duration::from_secs(15)).await {
        Err(RuntimeError::JobFailed { error, .. }) => {
            let error = error.unwrap();
            assert!(error.contains("is a 'test.count' job, not a 'test.total' one"), "{error}");
        }
        other => panic!("expected a failure, got {other:?}"),
    }
    assert_eq!(misread.status().await.unwrap().attempts, 1, "a fatal error is not retried");
    app.shutdown().await;
}

async fn a_batch_is_refused_whole_when_one_entry_is_invalid(on: &On) {
    let (app, _) = app(on, |_| {}).await;
    let rt = &app.runtime;
    let mut batch = rt.batch();
    let first = batch.add(count("github", 1), JobOptions::new());
    batch.add(count("gitlab", 1), JobOptions::new().priority(5_000).depends_on(first));
    match batch.submit().await {
        Err(RuntimeError::Spec(err)) => assert_eq!(err.field.as_deref(), Some("jobs[1].priority")),
        other => panic!("expected a refusal, got {:?}", other.map(|b| b.ids())),
    }
    // An entry planned in another batch cannot be depended on.
    let mut other = rt.batch();
    let foreign = other.add(count("jira", 1), JobOptions::new());
    let mut batch = rt.batch();
    batch.add(count("github", 1), JobOptions::new().depends_on(foreign));
    match batch.submit().await {
        Err(RuntimeError::Spec(err)) => {
            assert_eq!(err.field.as_deref(), Some("jobs[0].depends_on"))
        }
        other => panic!("expected a refusal, got {:?}", other.map(|b| b.ids())),
    }
    let listed = rt.list(ListQuery::default()).await.unwrap();
    assert!(listed.jobs.is_empty(), "nothing of a refused batch is stored");
    app.shutdown().await;
}

/// Submitted one by one, the first job starts before more urgent ones arrive; submitted as a
/// batch, priorities decide from the first job on.
async fn a_batch_runs_in_priority_order(on: &On) {
    let (app, order) = app(on, |c| c.concurrency = 1).await;
    let mut batch = app.runtime.batch();
    for (source, priority) in [("low", -5), ("high", 9), ("mid", 0), ("urgent", 100)] {
        batch.add(count(source, 1), JobOptions::new().priority(priority));
    }
    let submitted = batch.submit().await.unwrap();
    for id in submitted.ids() {
        JobHandle::<Count>::from_id(&app.runtime, id).wait().await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), ["urgent", "high", "mid", "low"]);
    app.shutdown().await;
}

async fn a_typed_schedule_submits_its_typed_job(on: &On) {
    let (app, order) = app(on, |_| {}).await;
    let rt = &app.runtime;
    let missing = rt.schedule::<Count>("no-cron").job(count("x", 1)).await;
    assert!(
        matches!(&missing, Err(RuntimeError::Spec(e)) if e.field.as_deref() == Some("cron")),
        "{missing:?}"
    );
    let schedule = rt
        .schedule::<Count>("every-second")
        .cron("* * * * * *")
        .job(count("scheduled", 7))
        .options(JobOptions::new().queue("refresh").priority(3))
        .await
        .unwrap();
    assert_eq!(schedule.job.kind, "test.count");
    assert_eq!(schedule.job.queue.as_deref(), Some("refresh"));
    let ran = poll(|| async {
        let query = ListQuery { kind: Some("test.count".into()), ..ListQuery::default() };
        let page = rt.list(query).await.unwrap();
        page.jobs.into_iter().find(|job| job.status == JobStatus::Succeeded)
    })
    .await
    .expect("the schedule fired within the deadline");
    assert_eq!(ran.result::<u64>().unwrap(), Some(7));
    assert_eq!((&*ran.queue, ran.priority), ("refresh", 3));
    assert!(order.lock().unwrap().iter().any(|source| source == "scheduled"));
    rt.delete_schedule("every-second").await.unwrap();
    app.shutdown().await;
}

async fn a_handle_follows_its_job_and_times_out_its_wait(on: &On) {
    let (app, _) = app(on, |_| {}).await;
    let rt = &app.runtime;
    // Waits on a dependency that never runs: the job stays `waiting`.
    let never = rt.submit(count("never", 1)).delay(Duration::from_secs(3_600)).await.unwrap();
    let blocked = rt.submit(Total).depends_on(&never).await.unwrap();
    match blocked.wait_timeout(Duration::from_millis(50)).await {
        Err(RuntimeError::WaitTimeout { id, status, .. }) => {
            assert_eq!((id, status), (blocked.id(), JobStatus::Waiting));
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    // A handle rebuilt from an id follows the job to its end, state by state.
    let job = rt.submit(count("github", 2)).delay(Duration::from_millis(200)).await.unwrap();
    let rebuilt = JobHandle::<Count>::from_id(rt, job.id());
    let seen: Vec<JobStatus> = tokio::time::timeout(
        Duration::from_secs(15),
        rebuilt.changes().map(|record| record.unwrap().status).collect::<Vec<_>>(),
    )
    .await
    .expect("the stream ends with the job");
    assert_eq!(seen.first(), Some(&JobStatus::Scheduled), "{seen:?}");
    assert_eq!(seen.last(), Some(&JobStatus::Succeeded), "{seen:?}");
    assert_eq!(rebuilt.wait().await.unwrap(), 2);
    let record = rebuilt.status().await.unwrap();
    assert_eq!(record.result::<u64>().unwrap(), Some(2));
    assert_eq!(record.result::<String>().map_err(|e| e.is_data()).err(), Some(true));
    app.shutdown().await;
}

on_both_backends!(
    a_fan_in_reads_its_dependencies_typed_results,
    a_batch_is_refused_whole_when_one_entry_is_invalid,
    a_batch_runs_in_priority_order,
    a_typed_schedule_submits_its_typed_job,
    a_handle_follows_its_job_and_times_out_its_wait,
);

/// `Runtime::from_config(..).connect()` wires what the configuration names, as `serve` does:
/// the Redis queue and the hybrid cache, on a private Redis.
#[actix_web::test]
async fn from_config_connects_the_backends_the_configuration_names() {
    let redis = crate::redis_support::TestRedis::start();
    let url = redis.url();
    let config = jobyard::Config::from_lookup(|name| match name {
        "REDIS_URL" => Some(url.clone()),
        "JOBYARD_REDIS_PREFIX" => Some(format!("t{}", fastrand::u32(..))),
        _ => None,
    })
    .unwrap();
    let runtime = Runtime::from_config(config.clone()).register::<Count>().connect().await.unwrap();
    let backends = runtime.backends();
    assert_eq!((backends.queue, backends.cache, backends.redis), ("redis", "hybrid", "up"));
    let job = runtime.submit(count("github", 5)).await.unwrap();
    assert_eq!(job.wait_timeout(Duration::from_secs(15)).await.unwrap(), 5);
    // The job is in Redis: another runtime on the same prefix reads it.
    let other = Runtime::from_config(config).register::<Count>().connect().await.unwrap();
    let seen = JobHandle::<Count>::from_id(&other, job.id());
    assert_eq!(seen.wait_timeout(Duration::from_secs(15)).await.unwrap(), 5);
    other.shutdown().await;
    runtime.shutdown().await;
}

/// The embedder's own routes are served beside the API, which keeps its paths and its 404.
#[actix_web::test]
async fn a_server_serves_the_embedders_routes_beside_the_api() {
    use actix_web::{web, HttpResponse};
    let config = crate::helpers::test_config();
    let runtime = Runtime::from_config(config.clone()).with_builtin_kinds();
    let server = jobyard::startup::Server::build_with_routes(config, runtime, |cfg| {
        cfg.route("/hello", web::get().to(|| async { HttpResponse::Ok().body("hello") }));
    })
    .await
    .unwrap();
    let base = format!("http://127.0.0.1:{}", server.port());
    let trigger = server.shutdown_trigger();
    let serving = actix_rt::spawn(server.run_until_stopped());
    let http = awc::Client::default();
    let mut hello = http.get(format!("{base}/hello")).send().await.unwrap();
    assert_eq!(hello.status(), 200);
    assert_eq!(hello.body().await.unwrap(), "hello");
    let stats = http.get(format!("{base}/v1/stats")).send().await.unwrap();
    assert_eq!(stats.status(), 200);
    let mut missing = http.get(format!("{base}/nothing-here")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    let body: serde_json::Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], "not_found");
    trigger.trigger();
    serving.await.unwrap().unwrap();
}
