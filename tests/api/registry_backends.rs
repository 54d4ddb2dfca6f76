//! The conformance suite's rules for the instance registry and takeovers, run against every
//! queue backend with the suite's helpers (`queue_backends.rs`): entries written by heartbeats
//! and gone after 3 missed ones, names held by live runs only, leaving, pruning, an instance
//! restarted under its name taking its attempts back, and the takeover counters. Time is
//! stepped by the tests.

use std::sync::Arc;
use std::time::Duration;

use jobyard::job::record::json_null;
use jobyard::job::{FailedAttempt, JobId, JobSpec, JobStatus};
use jobyard::queue::instances::{GONE_AFTER, PRUNE_AFTER};
use jobyard::queue::{
    Claim, Claimed, Completion, InstanceInfo, InstanceWorkers, Outcome, QueueBackend, Registration,
    Takeover, TakeoverCause, TakeoverCounts, STEP_LIMIT,
};

use crate::queue_backends::{plan_batch, t};

const HOUR: Duration = Duration::from_secs(3600);

/// The entry of run `run` of instance `name`, as it would heartbeat at `t(ms)`.
fn entry(name: &str, run: &str, ms: i64) -> InstanceInfo {
    InstanceInfo {
        name: name.into(),
        run_id: run.into(),
        version: "0.1.0".into(),
        started_at: t(0),
        last_seen: t(ms),
        kinds: vec!["noop".into(), "sleep".into()],
        workers: InstanceWorkers { busy: 1, total: 4 },
        draining: false,
    }
}

async fn beat(q: &dyn QueueBackend, name: &str, run: &str, ms: i64) -> Registration {
    q.heartbeat(&entry(name, run, ms), None, t(ms)).await.unwrap()
}

async fn names(q: &dyn QueueBackend, ms: i64) -> Vec<String> {
    q.instances(t(ms)).await.unwrap().into_iter().map(|i| i.name).collect()
}

fn ms_of(duration: Duration) -> i64 {
    duration.as_millis() as i64
}

async fn submit(q: &dyn QueueBackend, spec: JobSpec, ms: i64) -> JobId {
    let jobs = plan_batch(vec![spec], t(ms));
    q.submit(jobs, t(ms)).await.unwrap().jobs[0].record.id
}

/// Claims one job for `worker`, of `kind`, with a long lease.
async fn claim_as(q: &dyn QueueBackend, worker: &str, kind: &str, ms: i64) -> Claimed {
    let claim = Claim {
        workers: vec![Arc::from(worker)],
        lease: HOUR,
        kinds: vec![Arc::from(kind)].into(),
    };
    q.dequeue(claim, t(ms)).await.unwrap().pop().expect("a job to claim")
}

/// Heartbeats list an instance, with what it said, until it has missed 3 of them.
async fn heartbeats_list_instances_until_they_are_gone(q: &dyn QueueBackend) {
    assert!(q.instances(t(0)).await.unwrap().is_empty());
    assert_eq!(beat(q, "b", "run-b", 500).await, Registration::Recorded { replaced: None });
    assert_eq!(beat(q, "a", "run-a", 0).await, Registration::Recorded { replaced: None });
    let listed = q.instances(t(1_000)).await.unwrap();
    assert_eq!(listed, vec![entry("a", "run-a", 0), entry("b", "run-b", 500)], "by name");
    let gone = ms_of(GONE_AFTER);
    assert_eq!(names(q, gone).await, ["a", "b"], "unseen for exactly 3 heartbeats: still live");
    assert_eq!(names(q, gone + 1).await, ["b"], "a is gone");
    assert_eq!(names(q, gone + 501).await, Vec::<String>::new());
    // Seen again: back, its entry replaced by the new heartbeat.
    let again = InstanceInfo { draining: true, ..entry("a", "run-a", gone + 600) };
    let recorded = q.heartbeat(&again, None, t(gone + 600)).await.unwrap();
    assert_eq!(recorded, Registration::Recorded { replaced: None }, "its own run: no one replaced");
    assert_eq!(q.instances(t(gone + 700)).await.unwrap(), vec![again]);
}

/// A name is held while its run heartbeats: another run gets it only once the holder is gone,
/// or when told to displace that very run (one found dead by watching it).
async fn a_live_name_is_held_and_a_gone_one_is_taken(q: &dyn QueueBackend) {
    beat(q, "w", "one", 0).await;
    assert_eq!(beat(q, "w", "two", 1_000).await, Registration::Held(entry("w", "one", 0)));
    assert_eq!(names(q, 1_000).await, ["w"]);
    assert_eq!(q.instances(t(1_000)).await.unwrap()[0].run_id, "one", "unchanged");
    let displaced = q.heartbeat(&entry("w", "two", 1_500), Some("one"), t(1_500)).await.unwrap();
    assert_eq!(displaced, Registration::Recorded { replaced: Some(entry("w", "one", 0)) });
    // The displaced run is refused in turn, while the new one lives.
    assert_eq!(beat(q, "w", "one", 2_000).await, Registration::Held(entry("w", "two", 1_500)));
    let other = q.heartbeat(&entry("w", "three", 2_000), Some("one"), t(2_000)).await.unwrap();
    assert!(matches!(other, Registration::Held(_)), "displacing names one run only");
    // Once `two` is gone, anyone takes the name, told whom it replaced.
    let later = 1_500 + ms_of(GONE_AFTER) + 1;
    let taken = beat(q, "w", "three", later).await;
    assert_eq!(taken, Registration::Recorded { replaced: Some(entry("w", "two", 1_500)) });
}

/// Leaving (a clean shutdown) removes an instance's own entry, never another run's.
async fn leaving_removes_only_the_runs_own_entry(q: &dyn QueueBackend) {
    beat(q, "w", "one", 0).await;
    q.leave("w", "two").await.unwrap();
    assert_eq!(names(q, 10).await, ["w"], "another run's leave does nothing");
    q.leave("w", "one").await.unwrap();
    assert!(names(q, 10).await.is_empty());
    assert_eq!(beat(q, "w", "two", 20).await, Registration::Recorded { replaced: None });
    q.leave("nobody", "none").await.unwrap();
}

/// The entry of an instance gone for long is removed: a new run of its name replaces nobody.
async fn entries_gone_for_long_are_pruned(q: &dyn QueueBackend) {
    beat(q, "old", "one", 0).await;
    beat(q, "recent", "one", 0).await;
    let late = ms_of(PRUNE_AFTER) + 1;
    beat(q, "recent", "one", late).await;
    assert_eq!(beat(q, "old", "two", late).await, Registration::Recorded { replaced: None });
    let gone_not_pruned = beat(q, "recent", "two", late + ms_of(GONE_AFTER) + 1).await;
    assert!(matches!(gone_not_pruned, Registration::Recorded { replaced: Some(_) }));
}

/// An instance restarted under its name takes back the attempts its dead run left running:
/// each counts as a failed attempt (requeued with attempts left, `failed` otherwise, `cancelled`
/// when its cancel was requested), is reported with its kind and old worker, and counted. Other
/// instances' attempts (even one whose name starts the same) stay.
async fn a_restarted_instance_takes_its_attempts_back(q: &dyn QueueBackend) {
    let retried = submit(q, JobSpec { max_attempts: Some(2), ..JobSpec::new("noop") }, 0).await;
    let last = submit(q, JobSpec { max_attempts: Some(1), ..JobSpec::new("other") }, 0).await;
    let stopped = submit(q, JobSpec::new("noop"), 0).await;
    let elsewhere = submit(q, JobSpec::new("noop"), 0).await;
    let claims = [
        claim_as(q, "pod-1/w0", "noop", 1).await,
        claim_as(q, "pod-1/w1", "other", 1).await,
        claim_as(q, "pod-1/w2", "noop", 1).await,
        claim_as(q, "pod-10/w0", "noop", 1).await,
    ];
    assert_eq!(claims.each_ref().map(|c| c.lease.id), [retried, last, stopped, elsewhere]);
    q.cancel(stopped, t(2)).await.unwrap();
    assert_eq!(q.takeovers().await.unwrap(), TakeoverCounts::default());

    let changes = q.take_over("pod-1", t(10)).await.unwrap();
    let mut taken = changes.taken_over.clone();
    taken.sort_by_key(|t| t.worker.clone());
    let restarted = TakeoverCause::InstanceRestarted;
    let expected = [(retried, "noop", "pod-1/w0"), (last, "other", "pod-1/w1")]
        .into_iter()
        .chain([(stopped, "noop", "pod-1/w2")])
        .map(|(id, kind, worker)| Takeover {
            id,
            kind: kind.into(),
            worker: worker.into(),
            cause: restarted,
        })
        .collect::<Vec<_>>();
    assert_eq!(taken, expected);
    assert!(!changes.more);
    assert_eq!(changes.ready, 1, "the requeued job wakes workers");
    let mut finished = changes.finished.clone();
    finished.sort();
    let mut ended = vec![last, stopped];
    ended.sort();
    assert_eq!(finished, ended);

    let error = "instance pod-1 restarted";
    let record = q.get(retried).await.unwrap().unwrap();
    assert_eq!((record.status, record.attempts, record.error), (JobStatus::Queued, 1, None));
    assert_eq!(record.history, vec![FailedAttempt::new(1, error, t(10))]);
    assert_eq!(record.worker.as_deref(), Some("pod-1/w0"), "the attempt's worker is kept");
    let record = q.get(last).await.unwrap().unwrap();
    assert_eq!((record.status, record.error.as_deref()), (JobStatus::Failed, Some(error)));
    let record = q.get(stopped).await.unwrap().unwrap();
    let reason = "cancelled (instance pod-1 restarted)";
    assert_eq!((record.status, record.error.as_deref()), (JobStatus::Cancelled, Some(reason)));
    assert_eq!(record.history, vec![FailedAttempt::new(1, reason, t(10))]);
    let record = q.get(elsewhere).await.unwrap().unwrap();
    assert_eq!(record.status, JobStatus::Running, "pod-10 is another instance");

    // Done once: a second takeover finds nothing; the dead run's late completion is refused,
    // and the job runs again under a new claim.
    assert!(q.take_over("pod-1", t(11)).await.unwrap().taken_over.is_empty());
    let late = Completion { lease: claims[0].lease, outcome: Outcome::Succeeded(json_null()) };
    assert_eq!(q.complete(vec![late], t(11)).await.unwrap().stale, 1);
    let again = claim_as(q, "pod-1/w0", "noop", 12).await;
    assert_eq!((again.lease.id, again.record.attempts), (retried, 2));
    assert_eq!(q.takeovers().await.unwrap().instance_restarted, 3);

    // A lease that expires is a takeover too, counted apart.
    let changes = q.tick(t(1 + ms_of(HOUR) + 1), HOUR).await.unwrap();
    let lost: Vec<&Takeover> =
        changes.taken_over.iter().filter(|t| t.id == elsewhere).collect::<Vec<_>>();
    assert_eq!(lost.len(), 1, "{:?}", changes.taken_over);
    assert_eq!(
        (lost[0].worker.as_str(), lost[0].cause),
        ("pod-10/w0", TakeoverCause::LeaseExpired)
    );
    assert_eq!(&*lost[0].kind, "noop");
    let counts = q.takeovers().await.unwrap();
    assert_eq!(counts.instance_restarted, 3);
    assert_eq!(counts.lease_expired as usize, changes.taken_over.len());
}

/// A takeover handles a bounded number of attempts per call and says when more are left.
async fn a_takeover_is_bounded_per_call(q: &dyn QueueBackend) {
    let total = STEP_LIMIT + 5;
    let jobs = plan_batch(vec![JobSpec::new("noop"); total], t(0));
    q.submit(jobs, t(0)).await.unwrap();
    let claim = Claim {
        workers: (0..total).map(|n| Arc::from(format!("big/w{n}"))).collect(),
        lease: HOUR,
        kinds: vec![Arc::from("noop")].into(),
    };
    assert_eq!(q.dequeue(claim, t(1)).await.unwrap().len(), total);
    let first = q.take_over("big", t(2)).await.unwrap();
    assert_eq!((first.taken_over.len(), first.more), (STEP_LIMIT, true));
    let second = q.take_over("big", t(3)).await.unwrap();
    assert_eq!((second.taken_over.len(), second.more), (5, false));
    let none = q.take_over("big", t(4)).await.unwrap();
    assert!(none.taken_over.is_empty() && !none.more);
    assert_eq!(q.stats().await.unwrap()["default"].queued, total as u64);
    assert_eq!(q.takeovers().await.unwrap().instance_restarted, total as u64);
}

macro_rules! registry_suite {
    ($($name:ident),* $(,)?) => {
        mod memory {
            $( #[actix_web::test] async fn $name() {
                let backend = crate::queue_backends::memory();
                super::$name(&*backend.queue).await;
            } )*
        }
        mod redis {
            $( #[actix_web::test] async fn $name() {
                let backend = crate::queue_backends::redis().await;
                super::$name(&*backend.queue).await;
            } )*
        }
    };
}

registry_suite!(
    heartbeats_list_instances_until_they_are_gone,
    a_live_name_is_held_and_a_gone_one_is_taken,
    leaving_removes_only_the_runs_own_entry,
    entries_gone_for_long_are_pruned,
    a_restarted_instance_takes_its_attempts_back,
    a_takeover_is_bounded_per_call,
);
