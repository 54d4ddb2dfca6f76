//! Property tests of the queue state machine through the [`QueueBackend`] trait, run on every
//! backend: for random sequences of submit, dequeue, complete (success, retry, failure,
//! cancel), cancel, renew, release, run now and time steps, no job is lost or duplicated, terminal
//! states never change, claims follow priority then submit order, dependents never start
//! before their dependencies succeed, counters and listings match the records, every attempt
//! that ended without success (failed, cancelled, lease expired) is in its job's history and
//! none other, a job's error is set only when it ended failed or cancelled, due jobs and
//! expired leases are handled by the next claim or tick, and draining ends every job.
//!
//! The memory backend runs many cases; the Redis backend fewer, on one private `redis-server`
//! per test with a fresh key prefix per case. Each case runs in an actix system of its own
//! (the Redis backend spawns its tasks on it). Sequences that broke a backend (which random
//! cases hit only now and then) run on both backends every time.

// Shared with the API tests, which use all of it.
#[allow(dead_code)]
#[path = "api/redis_support.rs"]
mod redis_support;

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::join_all;
use jobyard::config::Config;
use jobyard::job::record::json_null;
use jobyard::job::spec::{plan, KindLookup, SpecDefaults};
use jobyard::job::{JobId, JobRecord, JobSpec, JobStatus};
use jobyard::queue::{
    CancelOutcome, Claim, Claimed, Completion, JobAction, LeaseRef, LeaseState, ListQuery,
    MemoryQueue, Outcome, QueueBackend, QueueError, RedisQueue,
};
use jobyard::redis::{RedisClient, RedisSettings};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;
use redis_support::TestRedis;

const LEASE: Duration = Duration::from_millis(5_000);
const RETENTION: Duration = Duration::from_secs(86_400);
/// The only kind submitted, and the only one claims ask for.
const KIND: &str = "noop";
/// The longest a backend call may take before the case fails (one that loops would otherwise
/// hang the test); calls here take milliseconds.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);

struct Kinds;
impl KindLookup for Kinds {
    fn lookup(&self, kind: &str) -> Option<Arc<str>> {
        Some(Arc::from(kind))
    }
}

#[derive(Debug, Clone)]
struct NewSpec {
    priority: i32,
    delay_ms: Option<u64>,
    /// Indexes into the jobs submitted so far (taken modulo their number).
    deps: Vec<usize>,
    /// Depend on the previous entry of the same batch.
    chain: bool,
    max_attempts: u32,
    /// In the second queue (claims take jobs of every queue).
    mail: bool,
}

/// One completion of a batch: which held lease (modulo their number; a batch may name one
/// twice) and how the attempt ended (see [`Model::outcome`]).
type Done = (usize, u8);

#[derive(Debug, Clone)]
enum Op {
    Submit(Vec<NewSpec>),
    Dequeue(usize),
    Complete(Vec<Done>),
    /// Even: any job (by half the number, modulo their number); odd: the job of a held lease.
    Cancel(usize),
    Renew,
    /// Hands back the attempts of these held leases (modulo their number).
    Release(Vec<usize>),
    /// Makes a job due now (by its number, modulo their number): only a scheduled one is.
    RunNow(usize),
    Advance(u64),
    /// Steps time exactly to a coming deadline (a scheduled job's run_at or a running job's
    /// lease expiry; the pick modulo their number, earliest first), where off-by-one errors
    /// show.
    AdvanceToDeadline(usize),
    Tick,
}

/// A duration in ms below `max`, mostly in whole 100 ms (as leases, delays and retries are), so
/// that times often fall exactly on a due time or a lease's expiry.
fn millis(max: u64) -> impl Strategy<Value = u64> {
    prop_oneof![3 => (0..max / 100).prop_map(|n| n * 100), 1 => 0..max]
}

fn new_spec() -> impl Strategy<Value = NewSpec> {
    (
        -3i32..=3,
        prop::option::weighted(0.3, millis(3_000)),
        prop::collection::vec(any::<usize>(), 0..3),
        any::<bool>(),
        1u32..=3,
        prop::bool::weighted(0.3),
    )
        .prop_map(|(priority, delay_ms, deps, chain, max_attempts, mail)| NewSpec {
            priority,
            delay_ms,
            deps,
            chain,
            max_attempts,
            mail,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop::collection::vec(new_spec(), 1..4).prop_map(Op::Submit),
        3 => (1usize..5).prop_map(Op::Dequeue),
        3 => prop::collection::vec((any::<usize>(), 0u8..5), 1..4).prop_map(Op::Complete),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => Just(Op::Renew),
        1 => prop::collection::vec(any::<usize>(), 1..3).prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::RunNow),
        2 => millis(8_000).prop_map(Op::Advance),
        1 => any::<usize>().prop_map(Op::AdvanceToDeadline),
        1 => Just(Op::Tick),
    ]
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(op(), 1..60)
}

/// Waits for a backend call, failing the case when it does not return in time.
async fn within<T>(call: &str, answer: impl Future<Output = T>) -> T {
    match tokio::time::timeout(CALL_TIMEOUT, answer).await {
        Ok(answer) => answer,
        Err(_) => panic!("{call} did not return within {CALL_TIMEOUT:?}"),
    }
}

fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// What the test knows besides the backend.
struct Model {
    queue: Arc<dyn QueueBackend>,
    now: DateTime<Utc>,
    /// Every job submitted, in submit order (the FIFO order within a priority; job ids are
    /// assigned in this order too).
    ids: Vec<JobId>,
    order: HashMap<JobId, usize>,
    /// Leases handed out and not yet completed or released (some may be stale by now).
    leases: Vec<LeaseRef>,
    /// The latest attempt of each job ever claimed: its lease token, and when its lease
    /// expires (ms), as claims and renewals set it. This model is the only claimant.
    attempts: HashMap<JobId, (u64, i64)>,
    /// Terminal states seen, which must never change.
    terminal: HashMap<JobId, JobStatus>,
    /// How many attempts of each job ended without success (completed otherwise than
    /// succeeded, released after a cancel request, or reaped): the length of its history.
    unsuccessful: HashMap<JobId, usize>,
    /// Every record as of the last check.
    last: HashMap<JobId, JobRecord>,
}

impl Model {
    fn new(queue: Arc<dyn QueueBackend>) -> Self {
        Model {
            queue,
            now: DateTime::from_timestamp_millis(1_800_000_000_000).unwrap(),
            ids: Vec::new(),
            order: HashMap::new(),
            leases: Vec::new(),
            attempts: HashMap::new(),
            terminal: HashMap::new(),
            unsuccessful: HashMap::new(),
            last: HashMap::new(),
        }
    }

    fn claim(n: usize) -> Claim {
        Claim {
            workers: (0..n).map(|i| Arc::from(format!("model/w{i}"))).collect(),
            lease: LEASE,
            kinds: Arc::from(vec![Arc::from(KIND)]),
        }
    }

    async fn get(&self, id: JobId) -> JobRecord {
        within("get", self.queue.get(id)).await.expect("get").expect("every submitted job is kept")
    }

    /// Whether `lease` is the attempt `record` runs under now.
    fn holds(&self, record: &JobRecord, lease: LeaseRef) -> bool {
        record.status == JobStatus::Running
            && self.attempts.get(&lease.id).is_some_and(|(token, _)| *token == lease.token)
    }

    async fn list(&self, status: Option<JobStatus>) -> Vec<JobRecord> {
        let query = ListQuery { status, limit: 100_000, ..ListQuery::default() };
        let page = within("list", self.queue.list(&query)).await.expect("list");
        assert!(page.next_cursor.is_none(), "one page holds every job");
        page.jobs
    }

    async fn submit(&mut self, specs: &[NewSpec]) {
        let known = self.ids.len();
        let batch: Vec<JobSpec> = specs
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut deps: Vec<String> = if known == 0 {
                    Vec::new()
                } else {
                    s.deps.iter().map(|d| self.ids[d % known].to_string()).collect()
                };
                if s.chain && i > 0 {
                    deps.push(format!("r{}", i - 1));
                }
                JobSpec {
                    priority: Some(s.priority),
                    delay_ms: s.delay_ms,
                    depends_on: Some(deps),
                    max_attempts: Some(s.max_attempts),
                    reference: Some(format!("r{i}")),
                    queue: s.mail.then(|| "mail".to_owned()),
                    ..JobSpec::new(KIND)
                }
            })
            .collect();
        let jobs =
            plan(batch, true, &Kinds, &SpecDefaults::default(), self.now).expect("valid batch");
        let planned: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
        let submitted =
            within("submit", self.queue.submit(jobs, self.now)).await.expect("dependencies exist");
        let answered: Vec<JobId> = submitted.jobs.iter().map(|j| j.record.id).collect();
        assert_eq!(answered, planned, "a submit answers its jobs in request order");
        for job in submitted.jobs {
            assert!(job.created, "no idempotency keys here, so every job is new");
            assert!(!job.record.status.is_terminal() || job.record.status == JobStatus::Cancelled);
            assert_ne!(job.record.status, JobStatus::Running);
            self.order.insert(job.record.id, self.ids.len());
            self.ids.push(job.record.id);
        }
    }

    /// Claims up to `n` jobs and checks what was claimed: running, of the claimed kind, in
    /// priority then submit order, dependencies succeeded, and nothing better left behind.
    async fn claim_checked(&mut self, n: usize) -> Vec<Claimed> {
        let claimed =
            within("dequeue", self.queue.dequeue(Self::claim(n), self.now)).await.expect("dequeue");
        assert!(claimed.len() <= n);
        let mut seen = HashSet::new();
        let mut previous: Option<(i32, usize)> = None;
        for job in &claimed {
            let record = &job.record;
            assert_eq!(record.id, job.lease.id);
            assert!(seen.insert(record.id), "a job was claimed twice by one call");
            assert_eq!(record.status, JobStatus::Running);
            assert_eq!(&*record.kind, KIND, "a job of a kind the claim did not name");
            assert!(
                (1..=record.max_attempts).contains(&record.attempts),
                "attempt {} of {}",
                record.attempts,
                record.max_attempts
            );
            let before = self.last[&record.id].status;
            assert!(
                matches!(before, JobStatus::Queued | JobStatus::Scheduled),
                "claimed a job that was {before}"
            );
            for dep in &record.depends_on {
                assert_eq!(
                    self.get(*dep).await.status,
                    JobStatus::Succeeded,
                    "started before its dependency succeeded"
                );
            }
            let key = (record.priority, self.order[&record.id]);
            if let Some((priority, order)) = previous {
                assert!(
                    priority > key.0 || (priority == key.0 && order < key.1),
                    "claimed out of priority/FIFO order"
                );
            }
            previous = Some(key);
            let expires = ms(self.now) + LEASE.as_millis() as i64;
            if let Some((old, _)) = self.attempts.insert(record.id, (job.lease.token, expires)) {
                assert_ne!(old, job.lease.token, "a new attempt reused a lease token");
            }
        }
        let queued = self.list(Some(JobStatus::Queued)).await;
        if claimed.len() < n {
            // Every job is of the claimed kind: a short claim leaves nothing queued.
            let left: Vec<JobId> = queued.iter().map(|r| r.id).collect();
            assert!(left.is_empty(), "a claim of {n} took {} and left {left:?}", claimed.len());
        }
        if let Some((priority, order)) = previous {
            // Nothing left queued may outrank what was just claimed.
            for record in queued {
                let other = (record.priority, self.order[&record.id]);
                assert!(
                    other.0 < priority || (other.0 == priority && other.1 > order),
                    "a queued job outranks a claimed one"
                );
            }
        }
        claimed
    }

    async fn dequeue(&mut self, n: usize) {
        let claimed = self.claim_checked(n).await;
        self.leases.extend(claimed.iter().map(|c| c.lease));
    }

    /// The outcome a completion reports, and the status it must give a job that was `record`
    /// when the attempt is still the job's: 0 success, 1 failure retried later, 2 failure
    /// retried at once, 3 final failure, 4 cancelled.
    fn outcome(&self, record: &JobRecord, code: u8) -> (Outcome, JobStatus) {
        let attempts_left = record.attempts < record.max_attempts;
        let retry = |delay_ms: i64, later: JobStatus| {
            let retry_at = Some(self.now + chrono::Duration::milliseconds(delay_ms));
            let to = if attempts_left { later } else { JobStatus::Failed };
            (Outcome::Failed { error: "retry me".into(), retry_at }, to)
        };
        let (outcome, to) = match code {
            0 => (Outcome::Succeeded(json_null()), JobStatus::Succeeded),
            1 => retry(100, JobStatus::Scheduled),
            2 => retry(0, JobStatus::Queued),
            3 => (Outcome::Failed { error: "final".into(), retry_at: None }, JobStatus::Failed),
            _ => (Outcome::Cancelled("cancelled".into()), JobStatus::Cancelled),
        };
        // A job whose cancel was requested ends cancelled unless it succeeded.
        let to = if record.cancel_requested && to != JobStatus::Succeeded {
            JobStatus::Cancelled
        } else {
            to
        };
        (outcome, to)
    }

    /// The held leases `picks` name (modulo their number, repeats kept), with the records of
    /// their jobs now.
    async fn pick(&self, picks: &[usize]) -> (Vec<LeaseRef>, HashMap<JobId, JobRecord>) {
        let chosen: Vec<LeaseRef> =
            picks.iter().map(|p| self.leases[p % self.leases.len()]).collect();
        let ids: Vec<JobId> =
            chosen.iter().map(|l| l.id).collect::<HashSet<_>>().into_iter().collect();
        let records = join_all(ids.iter().map(|id| self.get(*id))).await;
        (chosen, ids.into_iter().zip(records).collect())
    }

    /// Checks the jobs of a batch of completions or releases: those in `expected` ended their
    /// attempt as given, the others (stale leases only) did not change.
    async fn check_ended(
        &mut self,
        chosen: &[LeaseRef],
        before: &HashMap<JobId, JobRecord>,
        expected: &HashMap<JobId, (JobStatus, u32)>,
        finished: &[JobId],
    ) {
        let unique: HashSet<&JobId> = finished.iter().collect();
        assert_eq!(unique.len(), finished.len(), "a job reported finished twice: {finished:?}");
        for (id, record) in before {
            let after = self.get(*id).await;
            match expected.get(id) {
                Some(&(status, attempts)) => {
                    assert_eq!((after.status, after.attempts), (status, attempts), "job {id}");
                    if status.is_terminal() {
                        assert!(finished.contains(id), "finished job {id} is not reported");
                    }
                }
                None => assert_eq!(
                    (after.status, after.attempts),
                    (record.status, record.attempts),
                    "a stale lease changed job {id}"
                ),
            }
        }
        self.leases.retain(|l| !chosen.contains(l));
    }

    /// Completes a batch of attempts: each is recorded when its lease is the job's and no
    /// earlier entry of the batch ended that attempt, and refused as stale otherwise.
    async fn complete(&mut self, batch: &[Done]) {
        if self.leases.is_empty() {
            return;
        }
        let picks: Vec<usize> = batch.iter().map(|(pick, _)| *pick).collect();
        let (chosen, before) = self.pick(&picks).await;
        let mut expected = HashMap::new();
        let mut stale = 0;
        let mut done = Vec::new();
        for (lease, (_, code)) in chosen.iter().zip(batch) {
            let record = &before[&lease.id];
            let (outcome, to) = self.outcome(record, *code);
            if self.holds(record, *lease) && !expected.contains_key(&lease.id) {
                expected.insert(lease.id, (to, record.attempts));
            } else {
                stale += 1;
            }
            done.push(Completion { lease: *lease, outcome });
        }
        let changes =
            within("complete", self.queue.complete(done, self.now)).await.expect("complete");
        assert_eq!(changes.stale, stale, "stale completions of {chosen:?}");
        for (id, (to, _)) in &expected {
            if *to != JobStatus::Succeeded {
                *self.unsuccessful.entry(*id).or_default() += 1;
            }
        }
        self.check_ended(&chosen, &before, &expected, &changes.finished).await;
    }

    async fn cancel(&mut self, pick: usize) {
        if self.ids.is_empty() {
            return;
        }
        let id = if pick % 2 == 1 && !self.leases.is_empty() {
            self.leases[pick / 2 % self.leases.len()].id
        } else {
            self.ids[pick / 2 % self.ids.len()]
        };
        let before = self.get(id).await.status;
        match within("cancel", self.queue.cancel(id, self.now)).await {
            Err(QueueError::AlreadyFinished { id: which, status }) => {
                assert!(before.is_terminal(), "cancel conflicted on a job that was {before}");
                assert_eq!((which, status), (id, before));
            }
            Err(err) => panic!("cancel failed: {err}"),
            Ok((CancelOutcome::Requested(record), _)) => {
                assert_eq!(before, JobStatus::Running, "a cancel of a job that was {before}");
                assert_eq!(record.status, JobStatus::Running);
                assert!(record.cancel_requested);
            }
            Ok((CancelOutcome::Cancelled(record), changes)) => {
                assert!(
                    !before.is_terminal() && before != JobStatus::Running,
                    "cancelled at once a job that was {before}"
                );
                assert_eq!(record.status, JobStatus::Cancelled);
                assert!(changes.finished.contains(&id), "a cancelled job is reported");
            }
        }
    }

    /// Makes a job due now: a scheduled one becomes queued, its attempts unchanged; any other
    /// is refused with its state.
    async fn run_now(&mut self, pick: usize) {
        if self.ids.is_empty() {
            return;
        }
        let id = self.ids[pick % self.ids.len()];
        let before = self.get(id).await;
        match within("run_now", self.queue.run_now(id, self.now)).await {
            Ok((record, changes)) => {
                assert_eq!(before.status, JobStatus::Scheduled, "ran now a job that was not");
                assert_eq!(
                    (record.status, record.attempts, record.run_at),
                    (JobStatus::Queued, before.attempts, Some(self.now))
                );
                assert_eq!(changes.ready, 1);
            }
            Err(QueueError::InvalidState { id: which, status, action }) => {
                assert_ne!(before.status, JobStatus::Scheduled, "refused to run a scheduled job");
                assert_eq!((which, status, action), (id, before.status, JobAction::RunNow));
            }
            Err(err) => panic!("run_now failed: {err}"),
        }
    }

    /// Renews every lease held, as a worker pool does.
    async fn renew(&mut self) {
        let leases = self.leases.clone();
        let before = join_all(leases.iter().map(|l| self.get(l.id))).await;
        let states = within("renew", self.queue.renew(leases.clone(), LEASE, self.now))
            .await
            .expect("renew");
        assert_eq!(states.len(), leases.len());
        for ((lease, record), state) in leases.iter().zip(&before).zip(states) {
            let expected = match (self.holds(record, *lease), record.cancel_requested) {
                (false, _) => LeaseState::Lost,
                (true, false) => LeaseState::Active,
                (true, true) => LeaseState::CancelRequested,
            };
            assert_eq!(state, expected, "renewal of a job that was {}", record.status);
            if state != LeaseState::Lost {
                let expires = ms(self.now) + LEASE.as_millis() as i64;
                self.attempts.insert(lease.id, (lease.token, expires));
            }
        }
    }

    /// Hands back a batch of attempts (not counted), or ends those whose cancel was requested.
    async fn release(&mut self, picks: &[usize]) {
        if self.leases.is_empty() {
            return;
        }
        let (chosen, before) = self.pick(picks).await;
        let mut expected = HashMap::new();
        let mut stale = 0;
        for lease in &chosen {
            let record = &before[&lease.id];
            if self.holds(record, *lease) && !expected.contains_key(&lease.id) {
                let ended = if record.cancel_requested {
                    (JobStatus::Cancelled, record.attempts)
                } else {
                    (JobStatus::Queued, record.attempts - 1)
                };
                expected.insert(lease.id, ended);
            } else {
                stale += 1;
            }
        }
        let changes =
            within("release", self.queue.release(chosen.clone(), self.now)).await.expect("release");
        assert_eq!(changes.stale, stale, "stale releases of {chosen:?}");
        for (id, (to, _)) in &expected {
            // Handed back: the attempt did not end (it is not counted either); cancelled: it
            // ended without success.
            if *to == JobStatus::Cancelled {
                *self.unsuccessful.entry(*id).or_default() += 1;
            }
        }
        self.check_ended(&chosen, &before, &expected, &changes.finished).await;
    }

    async fn apply(&mut self, op: &Op) {
        match op {
            Op::Submit(specs) => self.submit(specs).await,
            Op::Dequeue(n) => self.dequeue(*n).await,
            Op::Complete(batch) => self.complete(batch).await,
            Op::Cancel(pick) => self.cancel(*pick).await,
            Op::Renew => self.renew().await,
            Op::Release(picks) => self.release(picks).await,
            Op::RunNow(pick) => self.run_now(*pick).await,
            Op::Advance(ms) => self.now += chrono::Duration::milliseconds(*ms as i64),
            Op::AdvanceToDeadline(pick) => self.advance_to_deadline(*pick),
            Op::Tick => self.tick().await,
        }
        self.check().await;
        match op {
            Op::Tick => {
                self.nothing_due();
                self.no_expired_lease();
            }
            Op::Dequeue(_) => self.nothing_due(),
            _ => {}
        }
    }

    /// Steps the backend to now: the attempts whose lease expired end (without success).
    async fn tick(&mut self) {
        let now = ms(self.now);
        let expired: Vec<JobId> = self
            .last
            .values()
            .filter(|r| r.status == JobStatus::Running && self.attempts[&r.id].1 <= now)
            .map(|r| r.id)
            .collect();
        within("tick", self.queue.tick(self.now, RETENTION)).await.expect("tick");
        for id in expired {
            *self.unsuccessful.entry(id).or_default() += 1;
        }
    }

    fn advance_to_deadline(&mut self, pick: usize) {
        let now = ms(self.now);
        let mut deadlines: Vec<i64> = self
            .last
            .values()
            .filter_map(|r| match r.status {
                JobStatus::Scheduled => r.run_at.map(ms),
                JobStatus::Running => self.attempts.get(&r.id).map(|(_, expires)| *expires),
                _ => None,
            })
            .filter(|at| *at > now)
            .collect();
        deadlines.sort_unstable();
        deadlines.dedup();
        if !deadlines.is_empty() {
            let at = deadlines[pick % deadlines.len()];
            self.now = DateTime::from_timestamp_millis(at).expect("a valid time");
        }
    }

    /// After a claim or a tick: no scheduled job is due.
    fn nothing_due(&self) {
        for record in self.last.values() {
            if record.status == JobStatus::Scheduled {
                let at = record.run_at.expect("a scheduled job has a run_at");
                assert!(at > self.now, "job {} due at {at} is still scheduled", record.id);
            }
        }
    }

    /// After a tick: no job runs under an expired lease.
    fn no_expired_lease(&self) {
        for record in self.last.values() {
            if record.status == JobStatus::Running {
                let (_, expires) = self.attempts[&record.id];
                assert!(expires > ms(self.now), "job {} runs past its lease", record.id);
            }
        }
    }

    /// The invariants that hold after every step.
    async fn check(&mut self) {
        // Listings: every job once, newest first.
        let listed = self.list(None).await;
        assert_eq!(listed.len(), self.ids.len(), "a job was lost or duplicated");
        let newest_first: Vec<JobId> = self.ids.iter().rev().copied().collect();
        let got: Vec<JobId> = listed.iter().map(|r| r.id).collect();
        assert_eq!(got, newest_first, "the listing holds every job once, newest first");
        let records: HashMap<JobId, JobRecord> = listed.into_iter().map(|r| (r.id, r)).collect();
        let fetched = within("get", join_all(self.ids.iter().map(|id| self.queue.get(*id)))).await;
        for (id, record) in self.ids.iter().zip(fetched) {
            let record = record.expect("get").expect("every submitted job is kept");
            let listed = &records[id];
            assert_eq!(
                (record.status, record.attempts, &record.error, &record.history),
                (listed.status, listed.attempts, &listed.error, &listed.history),
                "get and list disagree on {id}"
            );
        }

        let mut counted: HashMap<JobStatus, u64> = HashMap::new();
        for id in &self.ids {
            let record = &records[id];
            let status = record.status;
            *counted.entry(status).or_default() += 1;
            if let Some(before) = self.terminal.get(id) {
                assert_eq!(status, *before, "a terminal job changed state");
            } else if status.is_terminal() {
                self.terminal.insert(*id, status);
            }
            assert_eq!(status.is_terminal(), record.finished_at.is_some(), "finished_at of {id}");
            self.check_history(record);
            if status == JobStatus::Running {
                let held = self.leases.iter().any(|l| self.holds(record, *l));
                assert!(held, "job {id} runs under no lease this model holds");
            }
            // Dependencies: all kept; all succeeded once the job left `waiting` (unless it
            // was cancelled); a waiting job waits on a dependency that may still succeed.
            let deps: Vec<JobStatus> = record
                .depends_on
                .iter()
                .map(|d| records.get(d).expect("dependency kept").status)
                .collect();
            match status {
                JobStatus::Cancelled => {}
                JobStatus::Waiting => {
                    assert!(
                        deps.iter().all(|s| !matches!(s, JobStatus::Failed | JobStatus::Cancelled)),
                        "job {id} waits on a dependency that ended badly: {deps:?}"
                    );
                    assert!(
                        deps.iter().any(|s| *s != JobStatus::Succeeded),
                        "job {id} waits though its dependencies succeeded: {deps:?}"
                    );
                }
                _ => assert!(
                    deps.iter().all(|s| *s == JobStatus::Succeeded),
                    "job {id} is {status} before its dependencies succeeded: {deps:?}"
                ),
            }
        }

        // Counters equal the records.
        let stats = within("stats", self.queue.stats()).await.expect("stats");
        for status in JobStatus::ALL {
            let total: u64 = stats.values().map(|c| c.get(status)).sum();
            assert_eq!(total, counted.get(&status).copied().unwrap_or(0), "counter of {status}");
        }

        // Listings by status: exactly the jobs in that status, newest first.
        for status in JobStatus::ALL {
            let got: Vec<JobId> = self.list(Some(status)).await.iter().map(|r| r.id).collect();
            let expected: Vec<JobId> =
                newest_first.iter().copied().filter(|id| records[id].status == status).collect();
            assert_eq!(got, expected, "the listing of {status} jobs");
        }
        self.last = records;
    }

    /// The history of a job holds exactly the attempts that ended without success, in order;
    /// its error is the final outcome only.
    fn check_history(&self, record: &JobRecord) {
        let id = record.id;
        let status = record.status;
        let history = &record.history;
        let expected = self.unsuccessful.get(&id).copied().unwrap_or(0);
        assert_eq!(history.len(), expected, "history of {id} ({status}): {history:?}");
        // Every counted attempt ended without success but the one running or succeeded.
        let open = u32::from(matches!(status, JobStatus::Running | JobStatus::Succeeded));
        assert_eq!(history.len() as u32 + open, record.attempts, "attempts of {id} ({status})");
        for (n, entry) in history.iter().enumerate() {
            assert_eq!(entry.attempt, n as u32 + 1, "attempt numbers of {id}: {history:?}");
            assert!(entry.at <= record.updated_at, "an attempt of {id} ended after its update");
            assert!(n == 0 || history[n - 1].at <= entry.at, "history of {id} out of order");
        }
        let ended_badly = matches!(status, JobStatus::Failed | JobStatus::Cancelled);
        assert_eq!(record.error.is_some(), ended_badly, "error of {id} ({status})");
        if status == JobStatus::Failed {
            let last = history.last().expect("a failed job's attempts failed");
            assert_eq!(Some(&last.error), record.error.as_ref(), "the last failure is the error");
            assert_eq!(last.at, record.finished_at.expect("finished"));
        }
    }

    /// Runs everything to the end: every job must reach a terminal state.
    async fn drain(&mut self) {
        for _ in 0..(self.ids.len() * 4 + 10) {
            self.now += chrono::Duration::milliseconds(10_000);
            self.tick().await;
            self.check().await;
            self.nothing_due();
            self.no_expired_lease();
            let claimed = self.claim_checked(64).await;
            let done: Vec<Completion> = claimed
                .iter()
                .map(|c| Completion { lease: c.lease, outcome: Outcome::Succeeded(json_null()) })
                .collect();
            let changes =
                within("complete", self.queue.complete(done, self.now)).await.expect("complete");
            assert_eq!(changes.stale, 0, "a fresh attempt's completion was refused");
            for job in &claimed {
                assert!(changes.finished.contains(&job.record.id), "a finished job is reported");
            }
            self.check().await;
            if self.terminal.len() == self.ids.len() {
                return;
            }
        }
        let stuck: Vec<_> = self
            .last
            .values()
            .filter(|r| !r.status.is_terminal())
            .map(|r| (r.id, r.status))
            .collect();
        panic!("jobs never finished: {stuck:?}");
    }
}

/// Runs the model on `cases` random sequences of operations, each on a fresh backend that
/// `backend` builds inside the case's actix system.
fn check_cases<F, Fut>(cases: u32, backend: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn QueueBackend>>,
{
    let config = ProptestConfig { cases, source_file: Some(file!()), ..ProptestConfig::default() };
    let mut runner = TestRunner::new(config);
    let result = runner.run(&ops(), |ops| {
        actix_rt::System::new().block_on(async { run_case(backend().await, &ops).await });
        Ok(())
    });
    if let Err(err) = result {
        panic!("{err}\n{runner}");
    }
}

/// Runs `ops` on `queue`, checking after each, then drains it.
async fn run_case(queue: Arc<dyn QueueBackend>, ops: &[Op]) {
    let mut model = Model::new(queue);
    for op in ops {
        model.apply(op).await;
    }
    model.drain().await;
}

/// A batch of one job without dependencies or delay.
fn one_job(max_attempts: u32) -> Op {
    let spec = NewSpec {
        priority: 0,
        delay_ms: None,
        deps: vec![],
        chain: false,
        max_attempts,
        mail: false,
    };
    Op::Submit(vec![spec])
}

/// Sequences that broke a backend, run on every backend each time (random cases find them
/// only now and then).
fn known_cases() -> Vec<(&'static str, Vec<Op>)> {
    // A job whose first lease expired runs again under a second lease; the model still holds
    // both (the first one stale).
    let reclaimed =
        || vec![one_job(3), Op::Dequeue(1), Op::Advance(6_000), Op::Tick, Op::Dequeue(1)];
    vec![
        (
            "a batch of completions names one lease twice: the second is stale",
            vec![one_job(1), Op::Dequeue(1), Op::Complete(vec![(0, 3), (0, 0)])],
        ),
        (
            "a release names one lease twice: the second is stale",
            vec![one_job(1), Op::Dequeue(1), Op::Release(vec![0, 0])],
        ),
        (
            "a failed attempt whose cancel was requested ends cancelled, after a renewal \
             found an older lease of the job lost",
            [reclaimed(), vec![Op::Renew, Op::Cancel(0), Op::Complete(vec![(1, 3)])]].concat(),
        ),
        (
            "a failed attempt whose cancel was requested ends cancelled, after a completion \
             of an older lease of the job was refused as stale",
            [
                reclaimed(),
                vec![Op::Complete(vec![(0, 0)]), Op::Cancel(0), Op::Complete(vec![(0, 3)])],
            ]
            .concat(),
        ),
    ]
}

/// A Redis queue on `url` under a fresh prefix (`JOBYARD_REDIS_PREFIX`), so that cases sharing
/// a server never see each other's jobs.
async fn redis_queue(url: &str) -> Arc<dyn QueueBackend> {
    let prefix = format!("model{}", fastrand::u64(..));
    let config = Config::from_lookup(|name| match name {
        "REDIS_URL" => Some(url.to_owned()),
        "JOBYARD_REDIS_PREFIX" => Some(prefix.clone()),
        "JOBYARD_REDIS_POOL_SIZE" => Some("2".into()),
        // Generous: two test threads share two cores with the server.
        "JOBYARD_QUEUE_TIMEOUT_MS" => Some("10000".into()),
        _ => None,
    })
    .expect("valid test config");
    let client = RedisClient::new(RedisSettings::for_queue(&config).expect("REDIS_URL is set"))
        .expect("a client for the test redis");
    assert!(client.start().await, "connects to the test redis");
    let queue = RedisQueue::with_client(client, &config.redis_prefix).await;
    Arc::new(queue.expect("queue over the test redis"))
}

#[test]
fn the_memory_queue_keeps_its_promises() {
    check_cases(300, || async { Arc::new(MemoryQueue::new()) as Arc<dyn QueueBackend> });
}

/// Runs every known case on a fresh backend from `backend`, then fails naming those that
/// failed.
fn check_known<F, Fut>(backend: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn QueueBackend>>,
{
    let mut failed = Vec::new();
    for (name, ops) in known_cases() {
        let run = std::panic::catch_unwind(AssertUnwindSafe(|| {
            actix_rt::System::new().block_on(async { run_case(backend().await, &ops).await })
        }));
        if let Err(panic) = run {
            let message = match (panic.downcast_ref::<String>(), panic.downcast_ref::<&str>()) {
                (Some(message), _) => message.clone(),
                (None, Some(message)) => message.to_string(),
                (None, None) => String::new(),
            };
            failed.push(format!("- {name}:\n  {message}\n  ops: {ops:?}"));
        }
    }
    assert!(failed.is_empty(), "known sequences failed:\n{}", failed.join("\n"));
}

#[test]
fn known_sequences_on_the_memory_queue() {
    check_known(|| async { Arc::new(MemoryQueue::new()) as Arc<dyn QueueBackend> });
}

#[test]
fn known_sequences_on_the_redis_queue() {
    let redis = TestRedis::start();
    let url = redis.url();
    check_known(|| redis_queue(&url));
}

#[test]
fn the_redis_queue_keeps_its_promises() {
    // One server for every case (a fresh prefix each); stopped when the test ends.
    let redis = TestRedis::start();
    let url = redis.url();
    check_cases(40, || redis_queue(&url));
    assert!(redis.answers_ping(), "redis still up");
}
