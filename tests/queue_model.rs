//! Property tests of the queue state machine (the in-memory store): for random sequences of
//! submit, dequeue, complete, fail, cancel, renew and time steps, no job is lost or duplicated,
//! terminal states never change, priority order holds, dependents never start before their
//! dependencies succeed, counters match the records, and draining ends every job.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use jobyard::job::record::json_null;
use jobyard::job::spec::{plan, KindLookup, SpecDefaults};
use jobyard::job::{JobId, JobSpec, JobStatus};
use jobyard::queue::memory::Store;
use jobyard::queue::{Claim, Completion, LeaseRef, ListQuery, Outcome};
use proptest::prelude::*;

const LEASE: Duration = Duration::from_millis(5_000);
const RETENTION: Duration = Duration::from_secs(86_400);

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
}

#[derive(Debug, Clone)]
enum Op {
    Submit(Vec<NewSpec>),
    Dequeue(usize),
    Complete { pick: usize, outcome: u8 },
    Cancel(usize),
    Renew,
    Advance(u64),
    Tick,
}

fn new_spec() -> impl Strategy<Value = NewSpec> {
    (
        -3i32..=3,
        prop::option::weighted(0.3, 1u64..3_000),
        prop::collection::vec(any::<usize>(), 0..3),
        any::<bool>(),
        1u32..=3,
    )
        .prop_map(|(priority, delay_ms, deps, chain, max_attempts)| NewSpec {
            priority,
            delay_ms,
            deps,
            chain,
            max_attempts,
        })
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop::collection::vec(new_spec(), 1..4).prop_map(Op::Submit),
        3 => (1usize..5).prop_map(Op::Dequeue),
        3 => (any::<usize>(), 0u8..4).prop_map(|(pick, outcome)| Op::Complete { pick, outcome }),
        1 => any::<usize>().prop_map(Op::Cancel),
        1 => Just(Op::Renew),
        2 => (0u64..8_000).prop_map(Op::Advance),
        1 => Just(Op::Tick),
    ]
}

/// What the test knows besides the store.
struct Model {
    store: Store,
    now: DateTime<Utc>,
    /// Every job submitted, in submit order (the FIFO order within a priority).
    ids: Vec<JobId>,
    order: HashMap<JobId, usize>,
    /// Leases handed out (some may be stale by now).
    leases: Vec<LeaseRef>,
    /// Terminal states seen, which must never change.
    terminal: HashMap<JobId, JobStatus>,
}

impl Model {
    fn new() -> Self {
        Model {
            store: Store::new(),
            now: DateTime::from_timestamp_millis(1_800_000_000_000).unwrap(),
            ids: Vec::new(),
            order: HashMap::new(),
            leases: Vec::new(),
            terminal: HashMap::new(),
        }
    }

    fn claim(n: usize) -> Claim {
        Claim {
            workers: (0..n).map(|i| Arc::from(format!("model/w{i}"))).collect(),
            lease: LEASE,
            kinds: Arc::from(vec![Arc::from("noop")]),
        }
    }

    fn submit(&mut self, specs: &[NewSpec]) {
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
                    ..JobSpec::new("noop")
                }
            })
            .collect();
        let jobs =
            plan(batch, true, &Kinds, &SpecDefaults::default(), self.now).expect("valid batch");
        let submitted = self.store.submit(jobs, self.now).expect("dependencies exist");
        assert_eq!(submitted.jobs.len(), specs.len());
        for job in submitted.jobs {
            assert!(job.created, "no idempotency keys here, so every job is new");
            self.order.insert(job.record.id, self.ids.len());
            self.ids.push(job.record.id);
        }
    }

    fn dequeue(&mut self, n: usize) {
        let claimed = self.store.dequeue(&Self::claim(n), self.now);
        assert!(claimed.len() <= n);
        let mut previous: Option<(i32, usize)> = None;
        for job in &claimed {
            let record = &job.record;
            assert_eq!(record.status, JobStatus::Running);
            for dep in &record.depends_on {
                let dep = self.store.get(*dep).expect("dependency kept");
                assert_eq!(
                    dep.status,
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
            self.leases.push(job.lease);
        }
        if let Some((priority, order)) = previous {
            // Nothing left queued may outrank what was just claimed.
            let queued = self.list(JobStatus::Queued);
            for record in queued {
                let other = (record.priority, self.order[&record.id]);
                assert!(
                    other.0 < priority || (other.0 == priority && other.1 > order),
                    "a queued job outranks a claimed one"
                );
            }
        }
    }

    fn complete(&mut self, pick: usize, outcome: u8) {
        if self.leases.is_empty() {
            return;
        }
        let lease = self.leases.swap_remove(pick % self.leases.len());
        let outcome = match outcome {
            0 => Outcome::Succeeded(json_null()),
            1 => Outcome::Failed {
                error: "retry me".into(),
                retry_at: Some(self.now + chrono::Duration::milliseconds(100)),
            },
            2 => Outcome::Failed { error: "final".into(), retry_at: None },
            _ => Outcome::Cancelled("cancelled".into()),
        };
        self.store.complete(vec![Completion { lease, outcome }], self.now);
    }

    fn cancel(&mut self, pick: usize) {
        if self.ids.is_empty() {
            return;
        }
        let id = self.ids[pick % self.ids.len()];
        let before = self.store.get(id).unwrap().status;
        let result = self.store.cancel(id, self.now);
        assert_eq!(
            result.is_err(),
            before.is_terminal(),
            "cancel conflicts exactly on terminal jobs"
        );
    }

    fn list(&self, status: JobStatus) -> Vec<jobyard::JobRecord> {
        let query = ListQuery { status: Some(status), limit: 100_000, ..ListQuery::default() };
        self.store.list(&query).unwrap().jobs
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Submit(specs) => self.submit(specs),
            Op::Dequeue(n) => self.dequeue(*n),
            Op::Complete { pick, outcome } => self.complete(*pick, *outcome),
            Op::Cancel(pick) => self.cancel(*pick),
            Op::Renew => {
                self.store.renew(&self.leases, LEASE, self.now);
            }
            Op::Advance(ms) => self.now += chrono::Duration::milliseconds(*ms as i64),
            Op::Tick => {
                self.store.tick(self.now, RETENTION);
            }
        }
        self.check();
    }

    /// The invariants that hold after every step.
    fn check(&mut self) {
        assert_eq!(self.store.len(), self.ids.len(), "a job was lost or duplicated");
        let mut counted: HashMap<JobStatus, u64> = HashMap::new();
        for id in &self.ids {
            let record = self.store.get(*id).expect("every submitted job is kept");
            *counted.entry(record.status).or_default() += 1;
            if let Some(status) = self.terminal.get(id) {
                assert_eq!(record.status, *status, "a terminal job changed state");
            } else if record.status.is_terminal() {
                self.terminal.insert(*id, record.status);
            }
            if record.status == JobStatus::Waiting || record.status == JobStatus::Queued {
                assert!(record.depends_on.iter().all(|d| self.store.get(*d).is_some()));
            }
        }
        let stats = self.store.stats();
        for status in JobStatus::ALL {
            let total: u64 = stats.values().map(|c| c.get(status)).sum();
            assert_eq!(total, counted.get(&status).copied().unwrap_or(0), "counter of {status}");
        }
        let listed =
            self.store.list(&ListQuery { limit: 100_000, ..ListQuery::default() }).unwrap();
        assert_eq!(listed.jobs.len(), self.ids.len());
    }

    /// Runs everything to the end: every job must reach a terminal state.
    fn drain(&mut self) {
        for _ in 0..(self.ids.len() * 4 + 10) {
            self.now += chrono::Duration::milliseconds(10_000);
            self.store.tick(self.now, RETENTION);
            let claimed = self.store.dequeue(&Self::claim(64), self.now);
            let done = claimed
                .into_iter()
                .map(|c| Completion { lease: c.lease, outcome: Outcome::Succeeded(json_null()) })
                .collect();
            self.store.complete(done, self.now);
            self.check();
            if self.terminal.len() == self.ids.len() {
                return;
            }
        }
        let stuck: Vec<_> = self
            .ids
            .iter()
            .filter_map(|id| self.store.get(*id))
            .filter(|r| !r.status.is_terminal())
            .map(|r| (r.id, r.status))
            .collect();
        panic!("jobs never finished: {stuck:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn the_queue_state_machine_keeps_its_promises(ops in prop::collection::vec(op(), 1..60)) {
        let mut model = Model::new();
        for op in &ops {
            model.apply(op);
        }
        model.drain();
    }
}
