//! The embedding API: typed jobs submitted, awaited and cancelled through a `Runtime` started
//! inside the test's actix system, with no HTTP in between.

use std::time::Duration;

use jobyard::{Backoff, Config, Job, JobContext, JobError, JobStatus, Runtime, RuntimeError};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

impl Job for Add {
    const KIND: &'static str = "add";
    type Output = i64;
    async fn run(self, _ctx: JobContext) -> Result<i64, JobError> {
        Ok(self.a + self.b)
    }
}

/// Panics on its first attempt, succeeds afterwards.
#[derive(Serialize, Deserialize)]
struct Flaky;

impl Job for Flaky {
    const KIND: &'static str = "flaky";
    type Output = u32;
    async fn run(self, ctx: JobContext) -> Result<u32, JobError> {
        if ctx.attempt() == 1 {
            panic!("first attempts always crash");
        }
        Ok(ctx.attempt())
    }
}

/// Reports progress, then waits for cancellation, which it honours.
#[derive(Serialize, Deserialize)]
struct Reporter;

impl Job for Reporter {
    const KIND: &'static str = "reporter";
    type Output = ();
    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        ctx.progress(&serde_json::json!({"done": 40, "total": 100}));
        ctx.cancelled().await;
        Err(JobError::Cancelled)
    }
}

/// Asks to be retried after an absurdly long time.
#[derive(Serialize, Deserialize)]
struct Patient;

impl Job for Patient {
    const KIND: &'static str = "patient";
    type Output = ();
    async fn run(self, _ctx: JobContext) -> Result<(), JobError> {
        Err(JobError::retry_after("come back much later", Duration::MAX))
    }
}

/// Ignores its cancellation token entirely.
#[derive(Serialize, Deserialize)]
struct Stubborn;

impl Job for Stubborn {
    const KIND: &'static str = "stubborn";
    type Output = ();
    async fn run(self, _ctx: JobContext) -> Result<(), JobError> {
        std::future::pending::<()>().await;
        Ok(())
    }
}

fn runtime(adjust: impl FnOnce(&mut Config)) -> Runtime {
    let mut config = Config { cancel_grace: Duration::from_millis(50), ..Config::default() };
    adjust(&mut config);
    Runtime::builder()
        .config(config)
        .register::<Add>()
        .register::<Flaky>()
        .register::<Reporter>()
        .register::<Stubborn>()
        .register::<Patient>()
        .start()
        .expect("runtime starts")
}

const DEADLINE: Duration = Duration::from_secs(15);

async fn within<T>(fut: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(DEADLINE, fut).await.expect("finished before the deadline")
}

#[actix::test]
async fn a_typed_job_returns_its_typed_output() {
    let rt = runtime(|_| {});
    let job = rt.submit(Add { a: 40, b: 2 }).priority(3).await.unwrap();
    assert_eq!(within(job.wait()).await.unwrap(), 42);
    let record = job.status().await.unwrap();
    assert_eq!((record.status, record.priority), (JobStatus::Succeeded, 3));
}

#[actix::test]
async fn a_panicking_handler_is_a_failed_attempt_and_the_pool_keeps_serving() {
    let rt = runtime(|c| c.concurrency = 1);
    let backoff = Backoff { initial_ms: 1, jitter: false, ..Backoff::default() };
    let flaky = rt.submit(Flaky).backoff(backoff).await.unwrap();
    assert_eq!(within(flaky.wait()).await.unwrap(), 2, "second attempt succeeds");
    let after = rt.submit(Add { a: 1, b: 1 }).await.unwrap();
    assert_eq!(within(after.wait()).await.unwrap(), 2, "the only worker still serves");
    let once = rt.submit(Flaky).max_attempts(1).await.unwrap();
    match within(once.wait()).await {
        Err(RuntimeError::JobFailed { error, .. }) => {
            assert_eq!(error.as_deref(), Some("handler panicked: first attempts always crash"));
        }
        other => panic!("expected JobFailed, got {other:?}"),
    }
}

#[actix::test]
async fn an_absurd_retry_delay_is_capped_and_the_pool_keeps_serving() {
    let rt = runtime(|c| c.concurrency = 1);
    let patient = rt.submit(Patient).await.unwrap();
    let record = within(async {
        loop {
            let record = patient.status().await.unwrap();
            if record.status == JobStatus::Scheduled {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let wait = record.run_at.unwrap() - chrono::Utc::now();
    assert!(wait.num_days() >= 364 && wait.num_days() <= 366, "capped at a year: {wait}");
    let after = rt.submit(Add { a: 2, b: 2 }).await.unwrap();
    assert_eq!(within(after.wait()).await.unwrap(), 4);
}

#[actix::test]
async fn progress_reports_are_stored_and_a_cancelled_handler_ends_cancelled() {
    let rt = runtime(|_| {});
    let job = rt.submit(Reporter).await.unwrap();
    let progressed = within(async {
        loop {
            let record = job.status().await.unwrap();
            if record.progress.is_some() {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(progressed.progress.unwrap().get(), r#"{"done":40,"total":100}"#);
    job.cancel().await.unwrap();
    let record = within(rt.wait(job.id(), DEADLINE)).await.unwrap();
    assert_eq!(record.status, JobStatus::Cancelled);
    match job.wait().await {
        Err(RuntimeError::Cancelled { id }) => assert_eq!(id, job.id()),
        other => panic!("a cancelled job waits as Cancelled, got {other:?}"),
    }
}

#[actix::test]
async fn a_handler_ignoring_cancellation_is_aborted_after_the_grace_period() {
    let rt = runtime(|_| {});
    let job = rt.submit(Stubborn).await.unwrap();
    within(async {
        while job.status().await.unwrap().status != JobStatus::Running {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let requested = job.cancel().await.unwrap();
    assert!(requested.record().cancel_requested);
    let record = within(rt.wait(job.id(), DEADLINE)).await.unwrap();
    assert_eq!(record.status, JobStatus::Cancelled);
    assert_eq!(record.error.as_deref(), Some("cancelled"));
}

#[actix::test]
async fn builder_options_reach_the_job() {
    let rt = runtime(|_| {});
    let first = rt.submit(Add { a: 1, b: 2 }).delay(Duration::from_millis(30)).await.unwrap();
    let second = rt
        .submit(Add { a: 3, b: 4 })
        .depends_on(first.id())
        .queue("math")
        .timeout(Duration::from_secs(5))
        .idempotency_key("sum-3-4")
        .await
        .unwrap();
    let record = second.status().await.unwrap();
    assert_eq!(record.status, JobStatus::Waiting);
    assert_eq!(&*record.queue, "math");
    assert_eq!(record.timeout_ms, 5_000);
    assert_eq!(within(second.wait()).await.unwrap(), 7);
    let again = rt.submit(Add { a: 3, b: 4 }).idempotency_key("sum-3-4").await.unwrap();
    assert_eq!(again.id(), second.id());
}

#[actix::test]
async fn invalid_submits_are_refused_before_they_reach_the_queue() {
    let rt = runtime(|_| {});
    let err = rt.submit(Add { a: 1, b: 1 }).priority(5000).await.err().unwrap();
    assert!(
        matches!(err, RuntimeError::Spec(ref e) if e.field.as_deref() == Some("priority")),
        "{err}"
    );
}

#[actix::test]
async fn the_metadata_store_keeps_documents_under_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    let rt = runtime(|c| c.data_dir = dir.path().to_owned());
    let prefs = serde_json::json!({"theme": "dark", "tools": ["github", "jira"]});
    assert!(rt.metadata().save("preferences", &prefs).await.unwrap(), "created");
    assert_eq!(rt.metadata().load::<serde_json::Value>("preferences").await.unwrap(), Some(prefs));
    assert!(dir.path().join("preferences.json").exists());
}

#[actix::test]
async fn shutdown_hands_running_jobs_back() {
    let rt = runtime(|c| c.shutdown_grace = Duration::from_millis(20));
    let job = rt.submit(Stubborn).await.unwrap();
    within(async {
        while job.status().await.unwrap().status != JobStatus::Running {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert_eq!(rt.shutdown().await, 1);
    assert_eq!(job.status().await.unwrap().status, JobStatus::Queued);
}

/// Durations too long to express in milliseconds are refused, not wrapped to short ones.
#[actix::test]
async fn durations_too_long_are_refused_not_wrapped() {
    let runtime = Runtime::builder().register::<Add>().start().unwrap();
    // 2^64 ms + 1 ms would wrap to 1 ms with a plain cast.
    let wraps = Duration::from_millis(u64::MAX) + Duration::from_millis(2);
    for (field, submit) in [
        ("delay_ms", runtime.submit(Add { a: 1, b: 2 }).delay(wraps)),
        ("timeout_ms", runtime.submit(Add { a: 1, b: 2 }).timeout(wraps)),
    ] {
        match submit.await {
            Err(RuntimeError::Spec(err)) => assert_eq!(err.field.as_deref(), Some(field)),
            other => panic!("{field}: expected a refusal, got {:?}", other.map(|h| h.id())),
        }
    }
    assert_eq!(runtime.stats().await.unwrap().queues.len(), 0);
    runtime.shutdown().await;
}

/// A submit to a full queue comes back as `QueueFull`, naming the queue, and stores nothing.
#[actix::test]
async fn a_full_queue_refuses_an_embedded_submit() {
    let config = Config { max_queued: 2, ..Config::default() };
    let runtime = Runtime::builder().config(config).register::<Add>().start().unwrap();
    for _ in 0..2 {
        runtime.submit(Add { a: 1, b: 2 }).delay(Duration::from_secs(600)).await.unwrap();
    }
    let err = runtime.submit(Add { a: 1, b: 2 }).await.expect_err("refused");
    assert!(
        matches!(
            &err,
            RuntimeError::Queue(jobyard::queue::QueueError::QueueFull { queue, max: 2 }) if queue == "default"
        ),
        "{err}"
    );
    assert_eq!(runtime.stats().await.unwrap().queues["default"].scheduled, 2);
    runtime.shutdown().await;
}

/// Reads and writes the runtime's cache through the `CacheHandle` extension, as a `Cache`.
#[derive(Serialize, Deserialize)]
struct Remember {
    key: String,
    value: u64,
}

impl Job for Remember {
    const KIND: &'static str = "remember";
    type Output = Option<u64>;
    async fn run(self, ctx: JobContext) -> Result<Option<u64>, JobError> {
        use jobyard::cache::{CacheExt, CacheHandle};
        let cache = ctx.extension::<CacheHandle>().expect("the runtime's cache");
        let before = cache.get_json::<u64>(&self.key).await?;
        cache.set_json(&self.key, &self.value, Duration::from_secs(60), vec![]).await?;
        Ok(before)
    }
}

/// Futures that may be spawned on a multi-threaded runtime must be `Send` (checked at build).
fn spawnable<F: std::future::Future + Send>(future: F) -> F {
    future
}

/// Under plain tokio there is no actix system: `start` says so instead of panicking.
#[tokio::test]
async fn start_outside_an_actix_system_is_an_error_not_a_panic() {
    match Runtime::builder().register::<Add>().start() {
        Err(RuntimeError::Start(message)) => assert!(message.contains(".spawn()"), "{message}"),
        other => panic!("expected a start error, got {:?}", other.map(|_| ())),
    }
}

/// A service on plain multi-threaded tokio (as axum and tonic run) starts the runtime on a
/// thread of its own and uses it from its own tasks, on any of its threads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runtime_spawned_from_plain_tokio_serves_tasks_on_any_thread() {
    let config = Config { cancel_grace: Duration::from_millis(50), ..Config::default() };
    let runtime = Runtime::from_config(config)
        .register::<Add>()
        .register::<Reporter>()
        .register::<Remember>()
        .spawn()
        .await
        .expect("runtime starts on its own thread");
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let client = runtime.client().clone();
            tokio::spawn(spawnable(async move {
                let job = client.submit(Add { a: i, b: 1 }).priority(i as i32).await?;
                job.wait_timeout(DEADLINE).await
            }))
        })
        .collect();
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap().unwrap(), i as i64 + 1);
    }
    let mut batch = runtime.batch();
    let first = batch.add(Add { a: 1, b: 2 }, jobyard::JobOptions::new());
    let second = batch.add(Add { a: 3, b: 4 }, jobyard::JobOptions::new().depends_on(first));
    let submitted = spawnable(batch.submit()).await.unwrap();
    assert_eq!(spawnable(submitted.handle(second).wait_timeout(DEADLINE)).await.unwrap(), 7);

    let remember = |value| Remember { key: "answer".into(), value };
    assert_eq!(runtime.submit(remember(41)).await.unwrap().wait().await.unwrap(), None);
    assert_eq!(runtime.submit(remember(42)).await.unwrap().wait().await.unwrap(), Some(41));

    let reporter = runtime.submit(Reporter).await.unwrap();
    let cancel = reporter.clone();
    tokio::spawn(spawnable(async move { cancel.cancel().await })).await.unwrap().unwrap();
    match reporter.wait_timeout(DEADLINE).await {
        Err(RuntimeError::Cancelled { id }) => assert_eq!(id, reporter.id()),
        other => panic!("expected Cancelled, got {other:?}"),
    }

    runtime.shutdown().await;
    // The runtime's thread and its actors are gone with it.
    let after = runtime.submit(Add { a: 1, b: 1 }).await;
    assert!(
        matches!(after, Err(RuntimeError::Queue(jobyard::queue::QueueError::Unavailable(_)))),
        "{after:?}"
    );
}

/// A configuration naming Redis is never served by memory backends behind the caller's back.
#[actix::test]
async fn start_refuses_a_configuration_it_would_not_honour() {
    let config = Config::from_lookup(|name| match name {
        "REDIS_URL" => Some("redis://127.0.0.1:1".into()),
        "JOBYARD_QUEUE_BACKEND" => Some("memory".into()),
        _ => None,
    })
    .unwrap();
    match Runtime::from_config(config).register::<Add>().start() {
        Err(RuntimeError::Start(message)) => {
            assert!(message.contains("hybrid cache") && message.contains(".connect()"), "{message}")
        }
        other => panic!("expected a refusal, got {:?}", other.map(|_| ())),
    }
}

/// Adds up the `Add` jobs it depends on.
#[derive(Serialize, Deserialize)]
struct Sum;

impl Job for Sum {
    const KIND: &'static str = "sum";
    type Output = i64;
    async fn run(self, ctx: JobContext) -> Result<i64, JobError> {
        let first = ctx.result_of::<Add>(ctx.dependencies()[0]).await?;
        let all: i64 = ctx.dependency_results::<Add>().await?.into_iter().sum();
        Ok(all * 100 + first)
    }
}

/// One handler under test, without a runtime: dependencies' results, progress, cancellation.
#[tokio::test]
async fn a_handler_runs_alone_with_a_test_context() {
    use jobyard::testing::TestContext;
    let mut ctx = TestContext::new();
    ctx.dependency::<Add>(&3);
    ctx.dependency::<Add>(&4);
    assert_eq!(ctx.run(Sum).await, Ok(703));

    // A dependency of another kind is a fatal error, as in the runtime.
    let mut wrong = TestContext::new();
    wrong.dependency::<Flaky>(&1);
    assert!(matches!(wrong.run(Sum).await, Err(JobError::Fatal(m)) if m.contains("'flaky' job")));

    // Progress is captured; a cancel reaches the running handler.
    let ctx = TestContext::new().attempt(2, 5);
    let token = ctx.cancellation_token();
    let watcher = ctx.clone();
    let (outcome, ()) = tokio::join!(ctx.run(Reporter), async move {
        while watcher.progress().is_empty() {
            tokio::task::yield_now().await;
        }
        token.cancel();
    });
    assert_eq!(outcome, Err(JobError::Cancelled));
    assert_eq!(ctx.progress(), [serde_json::json!({"done": 40, "total": 100})]);
}

/// A whole runtime on a clock the test moves: a retry an hour away, a delay of a day and a
/// daily cron tick all come due without waiting for them.
#[actix::test]
async fn a_runtime_under_a_test_clock_skips_to_what_is_due() {
    use jobyard::testing::TestClock;
    let clock = TestClock::new();
    let runtime =
        Runtime::builder().clock(&clock).register::<Add>().register::<Flaky>().start().unwrap();
    let hour =
        Backoff { initial_ms: 3_600_000, max_ms: 3_600_000, jitter: false, ..Backoff::default() };
    let flaky = runtime.submit(Flaky).backoff(hour).await.unwrap();
    let later =
        runtime.submit(Add { a: 1, b: 1 }).delay(Duration::from_secs(86_400)).await.unwrap();
    runtime.schedule::<Add>("daily").cron("0 0 3 * * *").job(Add { a: 2, b: 3 }).await.unwrap();
    within(async {
        while flaky.status().await.unwrap().status != JobStatus::Scheduled {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(
        matches!(
            flaky.wait_timeout(Duration::from_millis(300)).await,
            Err(RuntimeError::WaitTimeout { .. })
        ),
        "the retry is an hour away"
    );
    clock.advance(Duration::from_secs(3_601));
    assert_eq!(flaky.wait_timeout(DEADLINE).await.unwrap(), 2, "retried once the hour passed");
    assert_eq!(later.status().await.unwrap().status, JobStatus::Scheduled);

    clock.advance(Duration::from_secs(86_400));
    assert_eq!(later.wait_timeout(DEADLINE).await.unwrap(), 2, "the delay passed");
    // Those jumps skipped over 3 o'clock, a tick missed (and skipped, as a tick missed while
    // no instance ran is); the next one is hit on the dot.
    let next = runtime.get_schedule("daily").await.unwrap().next_run_at.unwrap();
    clock.advance((next - clock.now()).to_std().unwrap() + Duration::from_millis(500));
    let fired = within(async {
        loop {
            let schedule = runtime.get_schedule("daily").await.unwrap();
            if let Some(job) = schedule.last_job_id {
                return job;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let tick = jobyard::JobHandle::<Add>::from_id(&runtime, fired);
    assert_eq!(tick.wait_timeout(DEADLINE).await.unwrap(), 5, "the daily tick came");
    runtime.shutdown().await;
}

/// Skipping past a lease is what a crash of the instance running the job looks like: the job
/// is taken back and run again.
#[actix::test]
async fn a_test_clock_skips_past_a_lease() {
    use jobyard::testing::TestClock;
    let clock = TestClock::new();
    let config = Config::builder()
        .lease(Duration::from_secs(60))
        .shutdown_grace(Duration::from_millis(20))
        .build()
        .unwrap();
    let runtime =
        Runtime::from_config(config).clock(&clock).register::<Stubborn>().start().unwrap();
    let job = runtime.submit(Stubborn).await.unwrap();
    within(async {
        while job.status().await.unwrap().status != JobStatus::Running {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    clock.advance(Duration::from_secs(61));
    let record = within(async {
        loop {
            let record = job.status().await.unwrap();
            if record.attempts >= 2 {
                return record;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    assert!(!record.history.is_empty(), "the lost attempt is in the history: {record:?}");
    runtime.shutdown().await;
}

/// The typed builders' futures own what they use: they can be handed to `tokio::spawn`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn typed_submits_can_be_spawned() {
    use std::future::IntoFuture;
    let runtime = Runtime::builder().register::<Add>().spawn().await.unwrap();
    let submit = tokio::spawn(runtime.submit(Add { a: 20, b: 22 }).into_future());
    let mut batch = runtime.batch();
    batch.add(Add { a: 1, b: 1 }, jobyard::JobOptions::new());
    let batch = tokio::spawn(batch.submit());
    let schedule = tokio::spawn(
        runtime
            .schedule::<Add>("spawned")
            .cron("0 0 3 * * *")
            .job(Add { a: 1, b: 2 })
            .into_future(),
    );
    assert_eq!(submit.await.unwrap().unwrap().wait_timeout(DEADLINE).await.unwrap(), 42);
    assert_eq!(batch.await.unwrap().unwrap().ids().len(), 1);
    assert_eq!(schedule.await.unwrap().unwrap().name, "spawned");
    runtime.shutdown().await;
}
