//! What the queue actor tells the event hub: each change its calls made to a job, built only
//! while someone reads the stream ([`EventHub::active`]).
//!
//! Most changes are known from the call itself (a claim's records, a completion's outcome); a
//! job claimed before anyone listened, or changed as a consequence (a dependent cancelled, a
//! lease taken over), is read back from the store first.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::clock::Clock;
use crate::events::{EventHub, JobChange, Reached};
use crate::job::{JobId, JobRecord, JobStatus, Json};
use crate::queue::flow::Claims;
use crate::queue::{
    CancelOutcome, Changes, Completion, LeaseRef, Outcome, QueueBackend, Submitted,
};

/// Most running jobs remembered (an attempt whose completion never comes, its lease lost, would
/// otherwise stay); past it the memory is dropped and later changes are read back instead.
const REMEMBERED: usize = 100_000;
/// Most jobs read back for one call's changes; more are left to the next stats snapshot.
const READ_BACK: usize = 1_000;

/// The running jobs' kind, queue and attempt, as their claim said.
struct Seen {
    kind: Arc<str>,
    queue: Arc<str>,
    attempt: u32,
}

/// What an operator did to one job.
#[derive(Clone, Copy)]
pub(super) enum Action {
    Retried,
    RanNow,
    Deleted,
}

/// A batch of completions' announced outcomes, until the store accepted them.
pub(super) struct Completing(Vec<(JobId, Reached)>);

pub(super) struct Announcer {
    hub: EventHub,
    backend: Arc<dyn QueueBackend>,
    clock: Clock,
    running: HashMap<JobId, Seen>,
}

impl Announcer {
    pub fn new(hub: EventHub, backend: Arc<dyn QueueBackend>, clock: Clock) -> Self {
        Announcer { hub, backend, clock, running: HashMap::new() }
    }

    fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    pub fn submitted(&self, submitted: &Submitted) {
        if !self.hub.active() {
            return;
        }
        let now = self.now();
        let created = submitted.jobs.iter().filter(|job| job.created);
        self.hub.jobs(created.map(|job| JobChange::of(&job.record, None, now)));
    }

    pub fn claimed(&mut self, claims: &Claims) {
        if !self.hub.active() {
            return;
        }
        if self.running.len() + claims.jobs.len() > REMEMBERED {
            self.running.clear();
        }
        let now = self.now();
        for claimed in &claims.jobs {
            let record = &claimed.record;
            let seen = Seen {
                kind: record.kind.clone(),
                queue: record.queue.clone(),
                attempt: record.attempts,
            };
            self.running.insert(record.id, seen);
        }
        let changes =
            claims.jobs.iter().map(|c| JobChange::of(&c.record, Some(JobStatus::Queued), now));
        self.hub.jobs(changes);
    }

    /// Before the store records `done`: where each job goes, if someone listens.
    pub fn completing(&mut self, done: &[Completion]) -> Option<Completing> {
        if !self.hub.active() {
            // Forgotten either way: a job remembered while someone listened ends here.
            if !self.running.is_empty() {
                for completion in done {
                    self.running.remove(&completion.lease.id);
                }
            }
            return None;
        }
        let outcomes = done.iter().map(|completion| {
            let to = match &completion.outcome {
                Outcome::Succeeded(_) => JobStatus::Succeeded,
                Outcome::Failed { retry_at: Some(_), .. } => JobStatus::Scheduled,
                Outcome::Failed { retry_at: None, .. } => JobStatus::Failed,
                Outcome::Cancelled(_) => JobStatus::Cancelled,
            };
            (completion.lease.id, Reached::Status(to))
        });
        Some(Completing(outcomes.collect()))
    }

    /// After the store recorded a batch of completions with `changes`.
    pub fn completed(&mut self, completing: Option<Completing>, changes: &Changes) {
        let Some(Completing(outcomes)) = completing else { return };
        let finished: HashSet<JobId> = changes.finished.iter().copied().collect();
        let now = self.now();
        let mut unknown = Vec::new();
        let mut announced = Vec::with_capacity(outcomes.len());
        for (id, to) in &outcomes {
            let seen = self.running.remove(id);
            // A stale completion changed nothing: only those the store took are announced
            // (when some were refused, a retry cannot be told apart, and is left out).
            let accepted = finished.contains(id) || (changes.stale == 0 && !to.is_final());
            if !accepted {
                continue;
            }
            match seen {
                Some(seen) => announced.push(JobChange {
                    id: *id,
                    kind: seen.kind,
                    queue: seen.queue,
                    from: Some(JobStatus::Running),
                    to: *to,
                    attempt: seen.attempt,
                    progress: None,
                    at: now,
                }),
                None => unknown.push(*id),
            }
        }
        self.hub.jobs(announced);
        self.read_back(unknown, Some(JobStatus::Running));
        // Jobs that ended because of these (dependents cancelled or failed with them).
        let done: HashSet<JobId> = outcomes.iter().map(|(id, _)| *id).collect();
        let others = changes.finished.iter().filter(|id| !done.contains(id)).copied().collect();
        self.read_back(others, None);
    }

    pub fn progress(&self, lease: LeaseRef, progress: &Json) {
        if !self.hub.active() {
            return;
        }
        let Some(seen) = self.running.get(&lease.id) else {
            return self.read_back(vec![lease.id], Some(JobStatus::Running));
        };
        self.hub.jobs([JobChange {
            id: lease.id,
            kind: seen.kind.clone(),
            queue: seen.queue.clone(),
            from: Some(JobStatus::Running),
            to: Reached::Status(JobStatus::Running),
            attempt: seen.attempt,
            progress: Some(progress.clone()),
            at: self.now(),
        }]);
    }

    /// A cancel: the job itself, and the dependents it took with it.
    pub fn cancelled(&self, outcome: &CancelOutcome, changes: &Changes) {
        if !self.hub.active() {
            return;
        }
        let record = outcome.record();
        if let CancelOutcome::Cancelled(record) = outcome {
            self.hub.jobs([JobChange::of(record, None, self.now())]);
        }
        let others = changes.finished.iter().filter(|id| **id != record.id).copied().collect();
        self.read_back(others, None);
    }

    /// A job an operator retried, ran now or deleted (`record` as it now is, or as it was
    /// when deleted), and the jobs that ended with it.
    pub fn acted_on(&self, record: &JobRecord, action: Action, changes: &Changes) {
        if !self.hub.active() {
            return;
        }
        let now = self.now();
        let change = match action {
            // Failed or cancelled before: which one is not kept.
            Action::Retried => JobChange::of(record, None, now),
            Action::RanNow => JobChange::of(record, Some(JobStatus::Scheduled), now),
            Action::Deleted => JobChange {
                to: Reached::Deleted,
                ..JobChange::of(record, Some(record.status), now)
            },
        };
        self.hub.jobs([change]);
        let others = changes.finished.iter().filter(|id| **id != record.id).copied().collect();
        self.read_back(others, None);
    }

    /// Jobs handed back, and whatever a periodic step or a release ended or took over.
    pub fn changed(&mut self, changes: &Changes, released: &[LeaseRef]) {
        if !self.running.is_empty() {
            for lease in released {
                self.running.remove(&lease.id);
            }
        }
        if !self.hub.active() {
            return;
        }
        let mut ids: Vec<JobId> = released.iter().map(|l| l.id).collect();
        ids.extend(&changes.finished);
        ids.extend(changes.taken_over.iter().map(|t| t.id));
        self.read_back(ids, None);
    }

    /// Announces `ids` as the store now holds them.
    fn read_back(&self, mut ids: Vec<JobId>, from: Option<JobStatus>) {
        if ids.is_empty() || !self.hub.active() {
            return;
        }
        ids.truncate(READ_BACK);
        let (hub, backend, clock) = (self.hub.clone(), self.backend.clone(), self.clock.clone());
        actix_rt::spawn(async move {
            for id in ids {
                match backend.get(id).await {
                    Ok(Some(record)) => hub.jobs([JobChange::of(&record, from, clock.now())]),
                    Ok(None) => {}
                    Err(err) => {
                        tracing::debug!(job_id = %id, "change not announced: {err}");
                        return;
                    }
                }
            }
        });
    }
}
