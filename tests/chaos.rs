//! A short chaos run in the default `cargo test`: three `jobyard serve` processes on one
//! private durable Redis, a steady load of `http` jobs at the harness's counting server, and
//! each fault once (an instance SIGKILLed, Redis SIGKILLed and restarted on its AOF, Redis
//! frozen, a queue filled to its bound). The checks are the harness's own
//! (`tests/support/chaos_harness.rs`, shared with `examples/chaos.rs`): no acknowledged job
//! lost or failed, every job executed exactly once unless it was running on the instance that
//! was killed, nothing stored that was refused, no 5xx but 503, no hung request, and every fault
//! recovered. No timing is asserted. On failure the run's directory (instance logs, events, the
//! problem jobs with their records) is kept and named.

#[allow(dead_code)]
#[path = "api/redis_support.rs"]
mod redis_support;

#[allow(dead_code)]
#[path = "support/chaos_harness.rs"]
mod chaos_harness;

use std::time::Duration;

use chaos_harness::{Backend, Fault, Load, Options};

#[actix_web::test]
async fn every_fault_once_on_redis_loses_and_duplicates_nothing() {
    let out = tempfile::tempdir().expect("temporary directory");
    let options = Options {
        binary: env!("CARGO_BIN_EXE_jobyard").into(),
        backend: Backend::Redis,
        instances: 3,
        duration: Duration::from_secs(10),
        load: Load::Rate(40.0),
        batch_share: 0.2,
        fault_every: Duration::from_millis(2_500),
        faults: Fault::ALL.to_vec(),
        // Each fault runs once even if recoveries are slow on a busy machine.
        complete_rotation: true,
        freeze: Duration::from_secs(2),
        redis_down: Duration::from_secs(1),
        job_ms: 50,
        // Short, so the jobs of the killed instance run again within the test; still five
        // times the freeze, so the freeze alone expires no lease, even on a slow machine.
        lease_ms: 10_000,
        concurrency: 8,
        max_queued: 200,
        fill_delay: Duration::from_secs(2),
        // Generous: on a loaded machine a slow Redis would otherwise answer 503 more often
        // (harmless, but not what this test is about).
        queue_timeout_ms: 2_000,
        drain_timeout: Duration::from_secs(60),
        recovery_timeout: Duration::from_secs(30),
        out_dir: out.path().to_owned(),
        progress: false,
    };
    let report = chaos_harness::run(options).await.expect("the harness runs");
    let table = report.table();
    println!("{table}");
    let ran: Vec<Fault> = report.faults.iter().map(|f| f.fault).collect();
    let everything_ran = Fault::ALL.iter().all(|f| ran.contains(f));
    let acknowledged: u64 = report.acknowledged.values().sum();
    if !report.ok() || !everything_ran || acknowledged == 0 {
        let kept = out.keep();
        let events = std::fs::read_to_string(kept.join("events.log")).unwrap_or_default();
        eprintln!("--- events ---\n{events}\n--- evidence kept in {} ---", kept.display());
    }
    assert!(everything_ran, "every fault ran once: {ran:?}");
    assert!(acknowledged > 0, "some jobs were acknowledged");
    assert!(report.lost.is_empty(), "no acknowledged job lost: {:?}", report.lost);
    assert!(report.failed.is_empty(), "no acknowledged job failed: {:?}", report.failed);
    assert!(report.phantom.is_empty(), "no job succeeded unexecuted: {:?}", report.phantom);
    assert!(
        report.duplicates_unexplained.is_empty(),
        "no duplicate execution but those of the killed instance's jobs: {:?}",
        report.duplicates_unexplained
    );
    assert!(
        report.wrongly_stored.is_empty(),
        "nothing refused was stored: {:?}",
        report.wrongly_stored
    );
    assert_eq!(report.other_5xx, 0, "no 5xx but 503: {:?}", report.answers);
    assert_eq!(report.hung, 0, "every request answered: {:?}", report.answers);
    assert_eq!(report.missing_retry_after, 0, "every 429 and 503 says when to retry");
    assert!(
        report.answers.get("429 queue_full").is_some_and(|n| *n > 0)
            && report.refused_by_queue.get(chaos_harness::FILL_QUEUE).is_some_and(|n| *n > 0),
        "the filled queue answered 429 queue_full: {:?}",
        report.answers
    );
    for fault in &report.faults {
        assert!(fault.probe_ran.is_some(), "recovered from {fault:?}");
    }
    assert!(report.drained_in.is_some(), "every job finished");
    assert!(report.ok(), "{table}");
}
