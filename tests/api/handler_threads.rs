//! Handlers run on threads of their own: a handler that holds its thread with CPU work delays
//! none of the runtime's own work. Its lease is renewed (so it is not taken for crashed and run
//! again), a cancel reaches its token while it burns, cron ticks keep firing and the HTTP API
//! keeps answering. Before, all of these waited for the handler to yield.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use jobyard::{Job, JobContext, JobError, Runtime};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::helpers::{poll, On, TestApp};

/// What the burning handlers saw, shared with the test through the runtime's extensions.
#[derive(Default)]
struct Probe {
    executions: AtomicU32,
    burns: Mutex<Vec<BurnSeen>>,
}

#[derive(Clone, Debug)]
struct BurnSeen {
    started: DateTime<Utc>,
    started_at: Instant,
    /// When it stopped burning, and whether because its job was cancelled.
    ended: Option<(DateTime<Utc>, Instant, bool)>,
}

/// Burns CPU without ever yielding for `ms`, or until its job is cancelled: the handler that
/// forgot `spawn_blocking`.
#[derive(Serialize, Deserialize)]
struct Burn {
    ms: u64,
    /// Burns on after its job was cancelled, too.
    #[serde(default)]
    stubborn: bool,
}

impl Job for Burn {
    const KIND: &'static str = "test.burn";
    type Output = u64;
    async fn run(self, ctx: JobContext) -> Result<u64, JobError> {
        let probe = ctx.extension::<Arc<Probe>>().expect("the probe extension");
        probe.executions.fetch_add(1, Ordering::SeqCst);
        let index = {
            let mut burns = probe.burns.lock().unwrap();
            burns.push(BurnSeen { started: Utc::now(), started_at: Instant::now(), ended: None });
            burns.len() - 1
        };
        let start = Instant::now();
        let mut spins = 0u64;
        while start.elapsed() < Duration::from_millis(self.ms)
            && (self.stubborn || !ctx.is_cancelled())
        {
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
        let cancelled = ctx.is_cancelled();
        probe.burns.lock().unwrap()[index].ended = Some((Utc::now(), Instant::now(), cancelled));
        if cancelled {
            return Err(JobError::Cancelled);
        }
        Ok(start.elapsed().as_millis() as u64)
    }
}

/// A server with a one-second lease and two handler threads, running `test.burn` besides the
/// built-in kinds, and what its burning handlers see.
async fn burner(on: &On) -> (TestApp, Arc<Probe>) {
    burner_on_threads(on, 2).await
}

async fn burner_on_threads(on: &On, threads: usize) -> (TestApp, Arc<Probe>) {
    let probe = Arc::new(Probe::default());
    let runtime =
        Runtime::builder().with_builtin_kinds().register::<Burn>().extension(probe.clone());
    let adjust = |c: &mut jobyard::Config| {
        c.cancel_grace = Duration::from_millis(50);
        c.lease = Duration::from_secs(1);
        c.worker_threads = threads;
    };
    let app = on.spawn_runtime(&format!("t{}", fastrand::u32(..)), adjust, runtime).await;
    (app, probe)
}

/// What the handlers saw, once `count` burns have ended.
async fn burns_ended(probe: &Probe, count: usize) -> Vec<BurnSeen> {
    poll(|| async {
        let burns = probe.burns.lock().unwrap().clone();
        (burns.iter().filter(|b| b.ended.is_some()).count() >= count).then_some(burns)
    })
    .await
    .expect("the burns ended before the deadline")
}

async fn a_handler_burning_cpu_past_its_lease_keeps_it_and_runs_once(on: &On) {
    let (app, probe) = burner(on).await;
    let tick = app
        .put("/v1/schedules/tick", json!({"cron": "* * * * * *", "job": {"kind": "noop"}}))
        .await;
    assert_eq!(tick.status, 201, "{:?}", tick.body);
    let job = app.submit(json!({"kind": "test.burn", "payload": {"ms": 3000}})).await;
    let id = job["id"].as_str().unwrap().to_owned();

    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 1, "its lease was never taken for expired: {done}");
    assert_eq!(done["history"], json!([]), "no attempt ended without success: {done}");
    assert_eq!(probe.executions.load(Ordering::SeqCst), 1, "the handler ran once");

    // The scheduler fired meanwhile: jobs of the cron schedule were created while the handler
    // held its thread (three ticks fall in three seconds; two leave room for a slow machine).
    let burn = burns_ended(&probe, 1).await.remove(0);
    let (ended, _, _) = burn.ended.unwrap();
    let ticks = app.get("/v1/jobs?kind=noop&limit=100").await;
    let created: Vec<DateTime<Utc>> = ticks.body["jobs"]
        .as_array()
        .expect("a listing")
        .iter()
        .map(|j| j["created_at"].as_str().unwrap().parse().expect("an RFC 3339 time"))
        .collect();
    let during = created.iter().filter(|at| **at > burn.started && **at < ended).count();
    assert!(during >= 2, "cron ticks fired while the handler burned: {created:?} within {burn:?}");
    app.delete("/v1/schedules/tick").await;
    app.shutdown().await;
}

async fn a_cancel_reaches_a_handler_that_burns_cpu(on: &On) {
    let (app, probe) = burner(on).await;
    let job = app.submit(json!({"kind": "test.burn", "payload": {"ms": 3000}})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    poll(|| async { (!probe.burns.lock().unwrap().is_empty()).then_some(()) })
        .await
        .expect("the handler started");

    // While the handler holds its thread, the API answers and the cancel is delivered.
    let sent = Instant::now();
    let status = app.get(&format!("/v1/jobs/{id}")).await;
    assert_eq!(status.body["status"], "running", "{:?}", status.body);
    let cancel = app.post_empty(&format!("/v1/jobs/{id}/cancel")).await;
    assert_eq!(cancel.status, 200, "{:?}", cancel.body);

    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    let burn = burns_ended(&probe, 1).await.remove(0);
    let (_, ended_at, saw_cancel) = burn.ended.unwrap();
    assert!(saw_cancel, "the token was cancelled before the burn would have ended: {burn:?}");
    eprintln!(
        "cancel reached the burning handler {:?} after it was sent ({:?} into its burn)",
        ended_at.saturating_duration_since(sent),
        ended_at - burn.started_at
    );
    assert_eq!(probe.executions.load(Ordering::SeqCst), 1, "the handler ran once");
    app.shutdown().await;
}

/// Counts how many of its attempts run at once.
#[derive(Default)]
struct Gauge {
    running: AtomicU32,
    peak: AtomicU32,
    runs: AtomicU32,
}

/// A job that holds its slot a millisecond or two, counted by the runtime's [`Gauge`].
#[derive(Serialize, Deserialize)]
struct Gauged;

impl Job for Gauged {
    const KIND: &'static str = "test.gauged";
    type Output = ();
    async fn run(self, ctx: JobContext) -> Result<(), JobError> {
        let gauge = ctx.extension::<Arc<Gauge>>().expect("the gauge extension");
        let now = gauge.running.fetch_add(1, Ordering::SeqCst) + 1;
        gauge.peak.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(fastrand::u64(1..=2))).await;
        gauge.running.fetch_sub(1, Ordering::SeqCst);
        gauge.runs.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// However many claims the pool has in flight, no more attempts run at once than it has slots,
/// and every job runs once.
async fn a_pool_runs_no_more_than_its_slots_at_once(on: &On) {
    let gauge = Arc::new(Gauge::default());
    let runtime =
        Runtime::builder().with_builtin_kinds().register::<Gauged>().extension(gauge.clone());
    let adjust = |c: &mut jobyard::Config| c.concurrency = 6;
    let app = on.spawn_runtime(&format!("t{}", fastrand::u32(..)), adjust, runtime).await;
    let jobs = 300;
    for _ in 0..jobs / 100 {
        app.submit_batch(json!(vec![json!({"kind": "test.gauged"}); 100])).await;
    }
    poll(|| async {
        let stats = app.get("/v1/stats").await.body;
        (stats["queues"]["default"]["succeeded"] == jobs).then_some(())
    })
    .await
    .expect("every job succeeded");
    let peak = gauge.peak.load(Ordering::SeqCst);
    assert!(peak <= 6, "{peak} attempts ran at once with 6 slots");
    assert!(peak > 1, "attempts overlapped (the premise of this test)");
    assert_eq!(gauge.runs.load(Ordering::SeqCst), jobs, "each job ran once");
    app.shutdown().await;
}

on_both_backends!(
    a_handler_burning_cpu_past_its_lease_keeps_it_and_runs_once,
    a_cancel_reaches_a_handler_that_burns_cpu,
    a_pool_runs_no_more_than_its_slots_at_once,
);

/// The blocking handler is named in the pool's stats.
#[actix_web::test]
async fn a_handler_that_holds_its_thread_is_counted_per_kind() {
    let (app, _) = burner(&On::Memory).await;
    let job = app.submit(json!({"kind": "test.burn", "payload": {"ms": 300}})).await;
    let done = app.wait_terminal(job["id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "succeeded", "{done}");
    let stats = app.get("/v1/stats").await;
    let workers: &Value = &stats.body["workers"];
    assert_eq!(workers["threads"], 2, "{workers}");
    assert_eq!(workers["blocking"]["test.burn"], 1, "{workers}");
    assert!(workers["blocking"].get("noop").is_none(), "{workers}");
    app.shutdown().await;
}

/// New attempts go to a thread no handler holds, even one with more attempts waiting on I/O:
/// on the held thread they would wait until the handler yields.
#[actix_web::test]
async fn new_attempts_avoid_a_thread_a_handler_holds() {
    let (app, probe) = burner(&On::Memory).await;
    let burn = app.submit(json!({"kind": "test.burn", "payload": {"ms": 3000}})).await;
    poll(|| async {
        let stats = app.get("/v1/stats").await;
        (stats.body["workers"]["blocking"]["test.burn"] == 1).then_some(())
    })
    .await
    .expect("the burn was seen holding its thread");
    // Attempts that wait without holding a thread. By count alone (ties to the first thread)
    // they would go to the free thread, the burning one, the free one, and the quick job
    // after them to the burning thread, where it would wait for the burn to end.
    for _ in 0..3 {
        app.submit(json!({"kind": "sleep", "payload": {"ms": 5000}})).await;
    }
    let quick = app.submit(json!({"kind": "noop"})).await;
    let quick = app.wait_terminal(quick["id"].as_str().unwrap()).await;
    assert_eq!(quick["status"], "succeeded", "{quick}");
    let finished: DateTime<Utc> = quick["finished_at"].as_str().unwrap().parse().unwrap();
    let seen = burns_ended(&probe, 1).await.remove(0);
    let (burn_ended, _, _) = seen.ended.unwrap();
    assert!(finished < burn_ended, "the quick job did not wait for the burn: {quick} {seen:?}");
    let burn = app.wait_terminal(burn["id"].as_str().unwrap()).await;
    assert_eq!(burn["status"], "succeeded", "{burn}");
    app.shutdown().await;
}

/// A job that ended before a handler took its thread is reported without waiting for that
/// handler to yield, even the first time a kind burns (nothing yet marks it as one that does).
#[actix_web::test]
async fn an_ending_is_not_held_behind_a_handler_that_burns() {
    let (app, probe) = burner_on_threads(&On::Memory, 1).await;
    // One claim, one thread, in this order: the quick job runs and ends, then the burn holds
    // the thread for three seconds.
    let jobs = app
        .submit_batch(json!([
            {"kind": "noop"},
            {"kind": "test.burn", "payload": {"ms": 3000}},
        ]))
        .await;
    let quick = app.wait_terminal(jobs[0]["id"].as_str().unwrap()).await;
    assert_eq!(quick["status"], "succeeded", "{quick}");
    let finished: DateTime<Utc> = quick["finished_at"].as_str().unwrap().parse().unwrap();
    let seen = burns_ended(&probe, 1).await.remove(0);
    let (burn_ended, _, _) = seen.ended.unwrap();
    assert!(finished < burn_ended, "the quick job was recorded during the burn: {quick} {seen:?}");
    app.shutdown().await;
}

/// A handler that ignores its cancel and holds its thread is aborted after the grace period,
/// but the abort reaches it only when it yields: its job is recorded cancelled at once, while
/// its slot stays taken until the handler is really gone (the pool never runs more handlers
/// than its concurrency).
#[actix_web::test]
async fn an_aborted_handler_keeps_its_slot_until_it_is_gone() {
    let (app, probe) = burner(&On::Memory).await;
    let job =
        app.submit(json!({"kind": "test.burn", "payload": {"ms": 3000, "stubborn": true}})).await;
    let id = job["id"].as_str().unwrap().to_owned();
    poll(|| async { (!probe.burns.lock().unwrap().is_empty()).then_some(()) })
        .await
        .expect("the handler started");
    let cancel = app.post_empty(&format!("/v1/jobs/{id}/cancel")).await;
    assert_eq!(cancel.status, 200, "{:?}", cancel.body);
    let done = app.wait_terminal(&id).await;
    assert_eq!(done["status"], "cancelled", "{done}");
    let workers = app.get("/v1/stats").await.body["workers"].clone();
    let still_burning = probe.burns.lock().unwrap()[0].ended.is_none();
    assert!(still_burning, "the burn outlived the grace period (the premise of this test)");
    assert_eq!(workers["busy"], 1, "the slot stays taken while the handler runs: {workers}");
    burns_ended(&probe, 1).await;
    poll(|| async { (app.get("/v1/stats").await.body["workers"]["busy"] == 0).then_some(()) })
        .await
        .expect("the slot is freed once the handler is gone");
    app.shutdown().await;
}

/// A handler that holds its thread past its timeout (whose timer runs on that same thread) is
/// timed out by the pool: the attempt fails as timed out and the job is retried or fails,
/// without waiting for the handler to yield.
#[actix_web::test]
async fn a_handler_holding_its_thread_past_its_timeout_is_timed_out() {
    let (app, probe) = burner(&On::Memory).await;
    let spec = json!({
        "kind": "test.burn",
        "payload": {"ms": 4000, "stubborn": true},
        "timeout_ms": 300,
        "max_attempts": 1,
    });
    let job = app.submit(spec).await;
    let done = app.wait_terminal(job["id"].as_str().unwrap()).await;
    let still_burning = probe.burns.lock().unwrap()[0].ended.is_none();
    assert!(still_burning, "the burn outlived its timeout (the premise of this test)");
    assert_eq!(done["status"], "failed", "{done}");
    assert_eq!(done["error"], "timed out after 300 ms", "{done}");
    burns_ended(&probe, 1).await;
    app.shutdown().await;
}
