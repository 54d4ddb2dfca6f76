//! The in-memory job store: every state transition of a job, as plain synchronous
//! code over one struct. [`super::MemoryQueue`] wraps it in a mutex behind the async trait;
//! the property tests drive it directly.
//!
//! Every change of a job's status goes through [`Store::transition`], which keeps the indexes
//! and counters in step; consequences for dependents are settled afterwards by
//! [`Store::settle`] from a work list, so a long dependency chain never recurses.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::job::{JobId, JobRecord, JobStatus, Json, NewJob};
use crate::queue::flow::{GroupWeight, Limit, LimitSpec, QueueInfo};
use crate::queue::instances::{restarted_error, worker_prefix};
use crate::queue::{
    CancelOutcome, Changes, Claim, Claimed, Completion, LeaseRef, LeaseState, ListQuery, Outcome,
    Page, QueueError, QueueLimits, QueueStats, StateCounts, SubmitResult, Submitted, Takeover,
    TakeoverCause, TakeoverCounts, LIST_EXAMINE, SETTLE_LIMIT, STEP_LIMIT,
};
use crate::schedule::{Fire, Schedule};

use super::flow::Flow;
use super::index::Indexes;

mod claim;
mod ops;

/// The lease of a running attempt.
#[derive(Clone, Copy, Debug)]
pub(super) struct Lease {
    token: u64,
    expires_ms: i64,
}

/// One job and the bookkeeping the store keeps beside its record.
pub(super) struct Entry {
    pub record: JobRecord,
    /// Submit order, the FIFO tie-breaker within a priority and the listing order.
    pub seq: u64,
    /// Dependencies that have not succeeded yet; the job leaves `waiting` at zero.
    pending_deps: u32,
    lease: Option<Lease>,
}

impl Entry {
    pub fn lease_expiry(&self) -> i64 {
        self.lease.map_or(0, |l| l.expires_ms)
    }

    fn holds(&self, lease: &LeaseRef) -> bool {
        self.record.status == JobStatus::Running
            && self.lease.is_some_and(|l| l.token == lease.token)
    }
}

/// The dependents of an ended job still to settle.
struct Unsettled {
    job: JobId,
    status: JobStatus,
    dependents: Vec<JobId>,
}

/// All jobs and schedules of one in-memory backend.
#[derive(Default)]
pub struct Store {
    limits: QueueLimits,
    /// Boxed so that growing or rehashing the table (which happens in one call, with the lock
    /// held) moves pointers rather than whole records: with a quarter of a million jobs kept,
    /// moving the records inline stalled every caller for hundreds of milliseconds.
    jobs: HashMap<JobId, Box<Entry>>,
    /// Submit sequence → id, for listings newest first.
    order: BTreeMap<u64, JobId>,
    idx: Indexes,
    /// Job → the jobs waiting on it. Removed once the job is terminal.
    dependents: HashMap<JobId, Vec<JobId>>,
    /// Jobs that ended with dependents not settled yet (more than one call settles), oldest
    /// first, with how they ended (they may be purged before their dependents are settled).
    unsettled: VecDeque<Unsettled>,
    idempotency: HashMap<Arc<str>, JobId>,
    schedules: BTreeMap<String, Schedule>,
    next_seq: u64,
    flow: Flow,
    /// Attempts taken from workers that are gone, per cause.
    takeovers: TakeoverCounts,
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    /// A store keeping `limits`.
    pub fn with_limits(limits: QueueLimits) -> Self {
        Store { limits, ..Self::default() }
    }

    /// Number of jobs held (all states), for tests and memory figures.
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    pub fn submit(
        &mut self,
        jobs: Vec<NewJob>,
        now: DateTime<Utc>,
    ) -> Result<Submitted, QueueError> {
        let alias = self.idempotent_aliases(&jobs);
        let fresh: HashSet<JobId> =
            jobs.iter().map(|j| j.id).filter(|id| !alias.contains_key(id)).collect();
        let resolve = |id: &JobId| *alias.get(id).unwrap_or(id);
        for job in jobs.iter().filter(|j| fresh.contains(&j.id)) {
            if let Some(dep) = job
                .depends_on
                .iter()
                .map(resolve)
                .find(|dep| !self.jobs.contains_key(dep) && !fresh.contains(dep))
            {
                return Err(QueueError::UnknownDependency(dep));
            }
        }
        self.check_room(jobs.iter().filter(|j| fresh.contains(&j.id)))?;
        // Every job of the batch, as the Redis backend checks them (a resubmit whose key
        // answers with an earlier job is refused too when it names a limit that is gone).
        for job in jobs.iter().filter(|j| !j.limits.is_empty()) {
            self.flow.check(job)?;
        }
        // Validated: from here on nothing fails, so the batch goes in whole.
        let mut doomed = Vec::new();
        let order: Vec<(JobId, bool)> =
            jobs.iter().map(|j| (resolve(&j.id), !alias.contains_key(&j.id))).collect();
        for mut job in jobs.into_iter().filter(|j| fresh.contains(&j.id)) {
            job.depends_on = job.depends_on.iter().map(resolve).collect();
            if let Some(failed) = self.insert(job, &fresh, now) {
                doomed.push(failed);
            }
        }
        let mut changes = Changes::default();
        let mark = changes.finished.len();
        for (id, created) in &order {
            if !created || self.jobs[id].record.status != JobStatus::Waiting {
                continue;
            }
            if let Some((_, (dep, status))) = doomed.iter().find(|(job, _)| job == id) {
                let error = format!("dependency {dep} {status}");
                self.transition(*id, JobStatus::Cancelled, now, &mut changes, |e| {
                    e.record.error = Some(error)
                });
            } else if self.jobs[id].pending_deps == 0 {
                self.make_runnable(*id, now, &mut changes);
            }
        }
        self.settle(mark, now, &mut changes);
        let jobs = order
            .into_iter()
            .map(|(id, created)| SubmitResult { record: self.jobs[&id].record.clone(), created })
            .collect();
        Ok(Submitted { jobs, changes })
    }

    /// Refuses a batch that would put more jobs waiting to run in a queue than the limit.
    fn check_room<'a>(&self, jobs: impl Iterator<Item = &'a NewJob>) -> Result<(), QueueError> {
        let mut adding: HashMap<&Arc<str>, u64> = HashMap::new();
        for job in jobs {
            *adding.entry(&job.queue).or_default() += 1;
        }
        let max = self.limits.max_queued;
        for (queue, added) in adding {
            let counts = self.idx.counts.get(queue).copied().unwrap_or_default();
            let waiting: u64 = [JobStatus::Waiting, JobStatus::Scheduled, JobStatus::Queued]
                .iter()
                .map(|s| counts[s.index()])
                .sum();
            if waiting + added > max {
                return Err(QueueError::QueueFull { queue: queue.to_string(), max });
            }
        }
        Ok(())
    }

    /// Maps each job whose idempotency key was seen (in the store, or earlier in the batch) to
    /// the job that key belongs to.
    fn idempotent_aliases(&self, jobs: &[NewJob]) -> HashMap<JobId, JobId> {
        let mut alias = HashMap::new();
        let mut in_batch: HashMap<&Arc<str>, JobId> = HashMap::new();
        for job in jobs {
            let Some(key) = &job.idempotency_key else {
                continue;
            };
            match self.idempotency.get(key).or_else(|| in_batch.get(key)) {
                Some(&existing) => {
                    alias.insert(job.id, existing);
                }
                None => {
                    in_batch.insert(key, job.id);
                }
            }
        }
        alias
    }

    /// Inserts a validated job as `waiting`, wiring it to its dependencies. Returns the job
    /// with the dependency that already ended badly, if one did.
    fn insert(
        &mut self,
        job: NewJob,
        fresh: &HashSet<JobId>,
        now: DateTime<Utc>,
    ) -> Option<(JobId, (JobId, JobStatus))> {
        let id = job.id;
        let mut pending = 0;
        let mut doomed = None;
        for dep in &job.depends_on {
            let status = (!fresh.contains(dep)).then(|| self.jobs[dep].record.status);
            match status {
                Some(JobStatus::Succeeded) => {}
                Some(s @ (JobStatus::Failed | JobStatus::Cancelled)) => {
                    doomed = doomed.or(Some((*dep, s)))
                }
                _ => {
                    pending += 1;
                    self.dependents.entry(*dep).or_default().push(id);
                }
            }
        }
        if let Some(key) = &job.idempotency_key {
            self.idempotency.insert(key.clone(), id);
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        // The queue's name is shared with every job of that queue (`intern_queue`).
        let queue = self.idx.intern_queue(&job.queue);
        let entry = Entry {
            record: JobRecord { queue, ..job.into_record(JobStatus::Waiting, now) },
            seq,
            pending_deps: pending,
            lease: None,
        };
        self.idx.add(&entry);
        self.order.insert(seq, id);
        self.jobs.insert(id, Box::new(entry));
        doomed.map(|d| (id, d))
    }

    pub fn dequeue(&mut self, claim: &Claim, now: DateTime<Utc>) -> Vec<Claimed> {
        self.claim(claim, now).jobs
    }

    pub fn complete(&mut self, done: Vec<Completion>, now: DateTime<Utc>) -> Changes {
        let mut changes = Changes::default();
        for Completion { lease, outcome } in done {
            let Some(entry) = self.jobs.get(&lease.id).filter(|e| e.holds(&lease)) else {
                changes.stale += 1;
                continue;
            };
            let record = &entry.record;
            let attempts_left = record.attempts < record.max_attempts;
            // (new status, result, why the attempt did not succeed, retry time)
            let (to, result, error, retry_at) = match outcome {
                Outcome::Succeeded(result) => (JobStatus::Succeeded, Some(result), None, None),
                Outcome::Failed { .. } | Outcome::Cancelled(_) if record.cancel_requested => {
                    (JobStatus::Cancelled, None, Some("cancelled".to_owned()), None)
                }
                Outcome::Failed { error, retry_at: Some(at) } if attempts_left => {
                    let to = if at > now { JobStatus::Scheduled } else { JobStatus::Queued };
                    (to, None, Some(error), Some(at))
                }
                Outcome::Failed { error, .. } => (JobStatus::Failed, None, Some(error), None),
                Outcome::Cancelled(reason) => (JobStatus::Cancelled, None, Some(reason), None),
            };
            self.transition(lease.id, to, now, &mut changes, |e| {
                e.record.result = result.or(e.record.result.take());
                e.record.run_at = retry_at.or(e.record.run_at);
                e.record.error = None;
                if let Some(error) = error {
                    e.record.push_failure(&error, now);
                    // Kept as the job's error only when it is the final outcome.
                    e.record.error = to.is_terminal().then_some(error);
                }
            });
        }
        self.settle(0, now, &mut changes);
        changes
    }

    pub fn renew(
        &mut self,
        leases: &[LeaseRef],
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Vec<LeaseState> {
        let expires_ms = now.timestamp_millis() + lease.as_millis() as i64;
        leases
            .iter()
            .map(|l| {
                if !self.jobs.get(&l.id).is_some_and(|e| e.holds(l)) {
                    return LeaseState::Lost;
                }
                let cancel = self.update(l.id, |e| {
                    e.lease = Some(Lease { token: l.token, expires_ms });
                    e.record.cancel_requested
                });
                if cancel == Some(true) {
                    LeaseState::CancelRequested
                } else {
                    LeaseState::Active
                }
            })
            .collect()
    }

    pub fn release(&mut self, leases: &[LeaseRef], now: DateTime<Utc>) -> Changes {
        let mut changes = Changes::default();
        for lease in leases {
            if !self.jobs.get(&lease.id).is_some_and(|e| e.holds(lease)) {
                changes.stale += 1;
                continue;
            }
            if self.jobs[&lease.id].record.cancel_requested {
                // Its cancel was asked for: handing it back would only run it again. The
                // attempt ends (counted) cancelled.
                self.transition(lease.id, JobStatus::Cancelled, now, &mut changes, |e| {
                    e.record.push_failure("cancelled", now);
                    e.record.error = Some("cancelled".into());
                });
            } else {
                self.transition(lease.id, JobStatus::Queued, now, &mut changes, |e| {
                    e.record.attempts = e.record.attempts.saturating_sub(1);
                });
            }
        }
        self.settle(0, now, &mut changes);
        changes
    }

    pub fn report_progress(&mut self, lease: &LeaseRef, progress: Json, now: DateTime<Utc>) {
        if let Some(entry) = self.jobs.get_mut(&lease.id).filter(|e| e.holds(lease)) {
            entry.record.progress = Some(progress);
            entry.record.updated_at = now;
        }
    }

    pub fn cancel(
        &mut self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(CancelOutcome, Changes), QueueError> {
        let status = self.jobs.get(&id).ok_or(QueueError::NotFound(id))?.record.status;
        let mut changes = Changes::default();
        match status {
            s if s.is_terminal() => Err(QueueError::AlreadyFinished { id, status: s }),
            JobStatus::Running => {
                if let Some(entry) = self.jobs.get_mut(&id) {
                    entry.record.cancel_requested = true;
                    entry.record.updated_at = now;
                }
                Ok((CancelOutcome::Requested(self.jobs[&id].record.clone()), changes))
            }
            _ => {
                self.transition(id, JobStatus::Cancelled, now, &mut changes, |e| {
                    e.record.error = Some("cancelled".into())
                });
                self.settle(0, now, &mut changes);
                Ok((CancelOutcome::Cancelled(self.jobs[&id].record.clone()), changes))
            }
        }
    }

    pub fn get(&self, id: JobId) -> Option<JobRecord> {
        self.jobs.get(&id).map(|e| e.record.clone())
    }

    /// The jobs in the index of `id`'s dependents (waiting on it, or not settled yet since it
    /// ended), at most `most`; `None` when there is no such job.
    pub fn dependents(&self, id: JobId, most: usize) -> Option<Vec<JobRecord>> {
        self.jobs.get(&id)?;
        let waiting = self.dependents.get(&id).into_iter().flatten();
        let unsettled = self.unsettled.iter().filter(|u| u.job == id).flat_map(|u| &u.dependents);
        let records = waiting.chain(unsettled).filter_map(|d| self.jobs.get(d));
        Some(records.take(most).map(|e| e.record.clone()).collect())
    }

    pub fn list(&self, query: &ListQuery) -> Result<Page, QueueError> {
        let before = match &query.cursor {
            None => u64::MAX,
            Some(c) => c.parse::<u64>().map_err(|_| QueueError::InvalidCursor(c.clone()))?,
        };
        let limit = query.limit.max(1);
        let mut jobs = Vec::with_capacity(limit.min(1024));
        let mut next_cursor = None;
        for (examined, (&seq, id)) in self.order.range(..before).rev().enumerate() {
            if examined == LIST_EXAMINE {
                // Bounded, however few jobs match: the next page starts at this job.
                next_cursor = Some((seq + 1).to_string());
                break;
            }
            let record = &self.jobs[id].record;
            let matches = query.status.is_none_or(|s| s == record.status)
                && query.kind.as_deref().is_none_or(|k| k == &*record.kind)
                && query.queue.as_deref().is_none_or(|q| q == &*record.queue)
                && query.group.as_deref().is_none_or(|g| record.group.as_deref() == Some(g));
            if !matches {
                continue;
            }
            if jobs.len() == limit {
                next_cursor = Some((seq + 1).to_string());
                break;
            }
            jobs.push(record.clone());
        }
        Ok(Page { jobs, next_cursor })
    }

    pub fn tick(&mut self, now: DateTime<Utc>, retention: Duration) -> Changes {
        let mut changes = Changes::default();
        self.idx.prune();
        self.flow.turns.prune();
        self.promote_due(now, &mut changes);
        self.expire_leases(now, &mut changes);
        changes.more |= self.purge_finished(now, retention);
        // Dependents earlier calls left unsettled.
        self.settle(changes.finished.len(), now, &mut changes);
        changes.next_due = self.next_due();
        changes
    }

    pub fn stats(&self) -> QueueStats {
        self.idx
            .counts
            .iter()
            .map(|(queue, counts)| (queue.to_string(), StateCounts::from_array(*counts)))
            .collect()
    }

    /// Every queue with jobs or paused, with its counts.
    pub fn queues(&mut self, now: DateTime<Utc>) -> Vec<QueueInfo> {
        let mut stats = self.stats();
        for (queue, throttled) in self.throttled(now) {
            stats.entry(queue).or_default().throttled = throttled;
        }
        for queue in self.flow.paused() {
            stats.entry(queue.to_string()).or_default();
        }
        let paused: HashSet<String> = self.flow.paused().map(|q| q.to_string()).collect();
        stats
            .into_iter()
            .map(|(name, counts)| QueueInfo { paused: paused.contains(&name), name, counts })
            .collect()
    }

    /// Queued jobs per kind.
    pub fn queued_by_kind(&self) -> BTreeMap<String, u64> {
        self.idx
            .ready
            .iter()
            .map(|(kind, lanes)| (kind.to_string(), lanes.values().map(|r| r.len() as u64).sum()))
            .filter(|(_, queued)| *queued > 0)
            .collect()
    }

    pub fn put_limit(&mut self, name: &str, spec: LimitSpec, now: DateTime<Utc>) -> (Limit, bool) {
        self.flow.put(name, spec, now)
    }

    pub fn get_limit(&mut self, name: &str, now: DateTime<Utc>) -> Option<Limit> {
        self.flow.get(name, now)
    }

    pub fn list_limits(&mut self, now: DateTime<Utc>) -> Vec<Limit> {
        self.flow.list(now)
    }

    pub fn delete_limit(&mut self, name: &str) -> bool {
        self.flow.delete(name)
    }

    pub fn hold_limit(&mut self, name: &str, until: DateTime<Utc>) -> Result<(), QueueError> {
        self.flow.hold(name, until)
    }

    pub fn pause_queue(&mut self, queue: &str, paused: bool) {
        self.flow.pause(queue, paused);
    }

    pub fn set_group_weight(&mut self, group: &str, weight: Option<u32>) {
        self.flow.set_weight(group, weight);
    }

    pub fn group_weights(&self) -> Vec<GroupWeight> {
        self.flow.weights()
    }

    pub fn put_schedule(&mut self, mut schedule: Schedule) -> bool {
        match self.schedules.get(&schedule.name) {
            Some(old) => {
                schedule.created_at = old.created_at;
                schedule.last_run_at = old.last_run_at;
                schedule.last_job_id = old.last_job_id;
                self.schedules.insert(schedule.name.clone(), schedule);
                false
            }
            None => {
                self.schedules.insert(schedule.name.clone(), schedule);
                true
            }
        }
    }

    pub fn get_schedule(&self, name: &str) -> Option<Schedule> {
        self.schedules.get(name).cloned()
    }

    pub fn list_schedules(&self) -> Vec<Schedule> {
        self.schedules.values().cloned().collect()
    }

    pub fn delete_schedule(&mut self, name: &str) -> bool {
        self.schedules.remove(name).is_some()
    }

    pub fn record_fire(&mut self, name: &str, fire: Fire) -> Result<(), QueueError> {
        let schedule = self
            .schedules
            .get_mut(name)
            .ok_or_else(|| QueueError::ScheduleNotFound(name.to_owned()))?;
        schedule.next_run_at = fire.next_run_at;
        if let Some((tick, job)) = fire.fired {
            schedule.last_run_at = Some(tick);
            schedule.last_job_id = Some(job);
        }
        Ok(())
    }

    /// Applies `edit` to a job, keeping its index entries in step.
    fn update<R>(&mut self, id: JobId, edit: impl FnOnce(&mut Entry) -> R) -> Option<R> {
        let entry = self.jobs.get_mut(&id)?;
        self.idx.remove(entry);
        let result = edit(entry);
        self.idx.add(entry);
        Some(result)
    }

    /// The one place a job changes state. Dependents of a job that became terminal are settled
    /// later by [`Store::settle`].
    fn transition(
        &mut self,
        id: JobId,
        to: JobStatus,
        now: DateTime<Utc>,
        changes: &mut Changes,
        edit: impl FnOnce(&mut Entry),
    ) {
        let from = self.jobs.get(&id).map(|e| e.record.status);
        if from == Some(JobStatus::Running) && to != JobStatus::Running {
            // A concurrency limit may have freed a place: the pool that ran the attempt claims
            // once it has recorded its end.
            let limits = self.jobs[&id].record.limits.clone();
            if !limits.is_empty() {
                self.flow.ended(&limits);
            }
        }
        let run_at = self.update(id, |e| {
            e.record.status = to;
            e.record.updated_at = now;
            if to != JobStatus::Running {
                e.lease = None;
            }
            if to.is_terminal() {
                e.record.finished_at = Some(now);
            }
            edit(e);
            e.record.run_at
        });
        match to {
            JobStatus::Queued => changes.ready += 1,
            JobStatus::Scheduled => changes.note_due(run_at.flatten()),
            s if s.is_terminal() => changes.finished.push(id),
            _ => {}
        }
    }

    /// Moves a job whose dependencies are all met to `scheduled` or `queued`.
    fn make_runnable(&mut self, id: JobId, now: DateTime<Utc>, changes: &mut Changes) {
        let due = self.jobs[&id].record.run_at.is_some_and(|at| at > now);
        let to = if due { JobStatus::Scheduled } else { JobStatus::Queued };
        self.transition(id, to, now, changes, |_| {});
    }

    /// Settles the dependents of every job in `changes.finished[from..]`, including jobs that
    /// this settling itself cancels, after those earlier calls left unsettled: releases them on
    /// success, cancels them otherwise. At most [`SETTLE_LIMIT`] per call; the rest wait for
    /// the next call (a periodic step settles them even when nothing else happens).
    fn settle(&mut self, from: usize, now: DateTime<Utc>, changes: &mut Changes) {
        let mut next = from;
        let mut budget = SETTLE_LIMIT;
        loop {
            while let Some(&id) = changes.finished.get(next) {
                next += 1;
                if let Some(mut dependents) = self.dependents.remove(&id) {
                    let status = self.jobs[&id].record.status;
                    dependents.reverse(); // taken from the end: in the order they were added
                    self.unsettled.push_back(Unsettled { job: id, status, dependents });
                }
            }
            let Some(head) = self.unsettled.front_mut() else { break };
            if head.dependents.is_empty() {
                self.unsettled.pop_front();
                continue;
            }
            if budget == 0 {
                changes.more = true;
                break;
            }
            let Some(dependent) = head.dependents.pop() else { continue };
            budget -= 1;
            let (id, status) = (head.job, head.status);
            if self.jobs.get(&dependent).map(|e| e.record.status) != Some(JobStatus::Waiting) {
                continue;
            }
            if status == JobStatus::Succeeded {
                let remaining = self.update(dependent, |e| {
                    e.pending_deps -= 1;
                    e.pending_deps
                });
                if remaining == Some(0) {
                    self.make_runnable(dependent, now, changes);
                }
            } else {
                let error = format!("dependency {id} {status}");
                self.transition(dependent, JobStatus::Cancelled, now, changes, |e| {
                    e.record.error = Some(error)
                });
            }
        }
    }

    /// Moves due `scheduled` jobs to `queued`, at most [`STEP_LIMIT`]; notes when more are due.
    fn promote_due(&mut self, now: DateTime<Utc>, changes: &mut Changes) {
        let now_ms = now.timestamp_millis();
        for _ in 0..STEP_LIMIT {
            match self.idx.scheduled.first() {
                Some(&(at, _, id)) if at <= now_ms => {
                    self.transition(id, JobStatus::Queued, now, changes, |_| {})
                }
                _ => return,
            }
        }
        changes.more |= self.idx.scheduled.first().is_some_and(|&(at, _, _)| at <= now_ms);
    }

    /// Ends attempts whose lease expired, at most [`STEP_LIMIT`]; notes when more are.
    fn expire_leases(&mut self, now: DateTime<Utc>, changes: &mut Changes) {
        let now_ms = now.timestamp_millis();
        let mark = changes.finished.len();
        for _ in 0..STEP_LIMIT {
            let Some(&(expires, id)) = self.idx.leases.first() else { break };
            if expires > now_ms {
                break;
            }
            self.lose_attempt(id, "lease expired", TakeoverCause::LeaseExpired, now, changes);
        }
        changes.more |= self.idx.leases.first().is_some_and(|&(expires, _)| expires <= now_ms);
        self.settle(mark, now, changes);
    }

    /// Takes back the running attempts of instance `name`'s workers, at most [`STEP_LIMIT`]
    /// (see [`crate::queue::QueueBackend::take_over`]).
    pub fn take_over(&mut self, name: &str, now: DateTime<Utc>) -> Changes {
        let prefix = worker_prefix(name);
        let mut changes = Changes::default();
        let mut left: Vec<JobId> = (self.idx.leases.iter())
            .map(|&(_, id)| id)
            .filter(|id| {
                let worker = self.jobs[id].record.worker.as_deref();
                worker.is_some_and(|w| w.starts_with(&prefix))
            })
            .collect();
        changes.more = left.len() > STEP_LIMIT;
        left.truncate(STEP_LIMIT);
        let reason = restarted_error(name);
        for id in left {
            self.lose_attempt(id, &reason, TakeoverCause::InstanceRestarted, now, &mut changes);
        }
        self.settle(0, now, &mut changes);
        changes
    }

    /// Ends the attempt of running job `id`, whose worker is gone: the attempt counts and enters
    /// the history; the job goes back to `queued` with attempts left, else ends `failed` with
    /// `reason`, or `cancelled` when its cancel was requested. Reported and counted as a
    /// takeover for `cause`.
    fn lose_attempt(
        &mut self,
        id: JobId,
        reason: &str,
        cause: TakeoverCause,
        now: DateTime<Utc>,
        changes: &mut Changes,
    ) {
        let record = &self.jobs[&id].record;
        let taken = Takeover {
            id,
            kind: record.kind.clone(),
            worker: record.worker.as_deref().unwrap_or_default().to_owned(),
            cause,
        };
        let (to, error) = if record.cancel_requested {
            (JobStatus::Cancelled, format!("cancelled ({reason})"))
        } else if record.attempts < record.max_attempts {
            (JobStatus::Queued, reason.to_owned())
        } else {
            (JobStatus::Failed, reason.to_owned())
        };
        self.transition(id, to, now, changes, |e| {
            e.record.push_failure(&error, now);
            e.record.error = to.is_terminal().then_some(error);
        });
        changes.taken_over.push(taken);
        self.takeovers.add(cause, 1);
    }

    /// Attempts taken over so far, per cause.
    pub fn takeovers(&self) -> TakeoverCounts {
        self.takeovers
    }

    /// Removes terminal jobs finished before the retention period or beyond the count kept
    /// per queue, oldest first, at most [`STEP_LIMIT`]; true when more are due to go.
    fn purge_finished(&mut self, now: DateTime<Utc>, retention: Duration) -> bool {
        let cutoff = now.timestamp_millis().saturating_sub(retention.as_millis() as i64);
        let keep = self.limits.retention_max_jobs;
        let mut budget = STEP_LIMIT;
        let mut doomed = Vec::new();
        for finished in self.idx.finished.values() {
            let excess = (finished.len() as u64).saturating_sub(keep) as usize;
            for (n, &(at, id)) in finished.iter().enumerate() {
                if budget == 0 {
                    self.remove_all(doomed);
                    return true;
                }
                if at > cutoff && n >= excess {
                    break;
                }
                doomed.push(id);
                budget -= 1;
            }
        }
        self.remove_all(doomed);
        false
    }

    /// Removes terminal jobs with what points to them.
    fn remove_all(&mut self, ids: Vec<JobId>) {
        for id in ids {
            let Some(entry) = self.jobs.remove(&id) else {
                continue;
            };
            self.idx.remove(&entry);
            self.order.remove(&entry.seq);
            if let Some(mut dependents) = self.dependents.remove(&id) {
                // Only a retry makes jobs wait for a job that already ended (see `ops`): they
                // can never run now, so the next settling cancels them.
                dependents.reverse();
                let status = entry.record.status;
                self.unsettled.push_back(Unsettled { job: id, status, dependents });
            }
            if let Some(key) = &entry.record.idempotency_key {
                if self.idempotency.get(key) == Some(&id) {
                    self.idempotency.remove(key);
                }
            }
        }
    }

    fn next_due(&self) -> Option<DateTime<Utc>> {
        let &(at, _, _) = self.idx.scheduled.first()?;
        DateTime::from_timestamp_millis(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::spec::{plan, KindLookup, SpecDefaults};
    use crate::job::{FailedAttempt, JobSpec};

    struct Kinds;
    impl KindLookup for Kinds {
        fn lookup(&self, kind: &str) -> Option<Arc<str>> {
            Some(Arc::from(kind))
        }
    }

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    fn submit(store: &mut Store, spec: JobSpec, now: DateTime<Utc>) -> JobId {
        let jobs = plan(vec![spec], false, &Kinds, &SpecDefaults::default(), now).unwrap();
        store.submit(jobs, now).unwrap().jobs[0].record.id
    }

    fn claim(n: usize, lease_ms: u64) -> Claim {
        Claim {
            workers: (0..n).map(|i| Arc::from(format!("test/w{i}"))).collect(),
            lease: Duration::from_millis(lease_ms),
            kinds: Arc::from(vec![Arc::from("noop")]),
        }
    }

    #[test]
    fn an_expired_lease_requeues_the_job_and_counts_the_attempt() {
        let mut store = Store::new();
        let id =
            submit(&mut store, JobSpec { max_attempts: Some(2), ..JobSpec::new("noop") }, t(0));
        let first = store.dequeue(&claim(1, 1_000), t(0));
        assert_eq!(first[0].lease.id, id);
        store.tick(t(2_000), Duration::from_secs(3600));
        let record = store.get(id).unwrap();
        assert_eq!((record.status, record.attempts), (JobStatus::Queued, 1));
        assert_eq!(record.error, None, "not terminal: the failure is in the history");
        assert_eq!(record.history, vec![FailedAttempt::new(1, "lease expired", t(2_000))]);
        // The first worker's late completion is refused: the job is no longer its.
        let late = store.complete(
            vec![Completion {
                lease: first[0].lease,
                outcome: Outcome::Succeeded(crate::job::record::json_null()),
            }],
            t(2_001),
        );
        assert_eq!(late.stale, 1);
        let second = store.dequeue(&claim(1, 1_000), t(2_002));
        assert_eq!(second[0].record.attempts, 2);
        store.tick(t(4_000), Duration::from_secs(3600));
        let record = store.get(id).unwrap();
        assert_eq!(
            (record.status, record.error.as_deref()),
            (JobStatus::Failed, Some("lease expired"))
        );
        let attempts: Vec<(u32, DateTime<Utc>)> =
            record.history.iter().map(|h| (h.attempt, h.at)).collect();
        assert_eq!(attempts, vec![(1, t(2_000)), (2, t(4_000))]);
    }

    fn fail(lease: LeaseRef, error: &str, retry_at: Option<DateTime<Utc>>) -> Completion {
        Completion { lease, outcome: Outcome::Failed { error: error.into(), retry_at } }
    }

    #[test]
    fn a_success_after_failures_keeps_them_in_the_history_not_the_error() {
        let mut store = Store::new();
        let id =
            submit(&mut store, JobSpec { max_attempts: Some(3), ..JobSpec::new("noop") }, t(0));
        let lease = store.dequeue(&claim(1, 1_000), t(0))[0].lease;
        store.complete(vec![fail(lease, "boom", Some(t(100)))], t(10));
        let record = store.get(id).unwrap();
        assert_eq!((record.status, record.error.as_deref()), (JobStatus::Scheduled, None));
        assert_eq!(record.history, vec![FailedAttempt::new(1, "boom", t(10))]);
        let lease = store.dequeue(&claim(1, 1_000), t(100))[0].lease;
        let long = "é".repeat(FailedAttempt::MAX_ERROR_BYTES);
        store.complete(vec![fail(lease, &long, Some(t(100)))], t(110));
        let lease = store.dequeue(&claim(1, 1_000), t(120))[0].lease;
        let ok = Outcome::Succeeded(crate::job::record::json_null());
        store.complete(vec![Completion { lease, outcome: ok }], t(130));
        let record = store.get(id).unwrap();
        assert_eq!((record.status, record.attempts), (JobStatus::Succeeded, 3));
        assert_eq!(record.error, None, "the earlier failures are not the outcome");
        assert_eq!(record.history.len(), 2);
        assert_eq!(record.history[1].attempt, 2);
        assert_eq!(record.history[1].error.len(), FailedAttempt::MAX_ERROR_BYTES, "cut");
    }

    #[test]
    fn only_attempts_that_ended_enter_the_history() {
        let mut store = Store::new();
        // Refunded at release: no attempt ended.
        let kept = submit(&mut store, JobSpec::new("noop"), t(0));
        let lease = store.dequeue(&claim(1, 1_000), t(0))[0].lease;
        store.release(&[lease], t(1));
        assert!(store.get(kept).unwrap().history.is_empty());
        // Released after its cancel was requested: the attempt ended cancelled.
        let lease = store.dequeue(&claim(1, 1_000), t(2))[0].lease;
        store.cancel(kept, t(3)).unwrap();
        store.release(&[lease], t(4));
        let record = store.get(kept).unwrap();
        assert_eq!(record.error.as_deref(), Some("cancelled"));
        assert_eq!(record.history, vec![FailedAttempt::new(1, "cancelled", t(4))]);
        // Cancelled while queued, after a failed attempt: only that attempt is in the history.
        let queued =
            submit(&mut store, JobSpec { max_attempts: Some(2), ..JobSpec::new("noop") }, t(5));
        let lease = store.dequeue(&claim(1, 1_000), t(5))[0].lease;
        store.complete(vec![fail(lease, "boom", Some(t(5)))], t(6));
        store.cancel(queued, t(7)).unwrap();
        let record = store.get(queued).unwrap();
        assert_eq!(record.error.as_deref(), Some("cancelled"));
        assert_eq!(record.history, vec![FailedAttempt::new(1, "boom", t(6))]);
    }

    #[test]
    fn renewal_keeps_a_lease_alive_and_reports_cancel_requests() {
        let mut store = Store::new();
        let id = submit(&mut store, JobSpec::new("noop"), t(0));
        let lease = store.dequeue(&claim(1, 1_000), t(0))[0].lease;
        assert_eq!(
            store.renew(&[lease], Duration::from_millis(1_000), t(900)),
            vec![LeaseState::Active]
        );
        store.tick(t(1_500), Duration::from_secs(3600));
        assert_eq!(store.get(id).unwrap().status, JobStatus::Running);
        store.cancel(id, t(1_600)).unwrap();
        assert_eq!(
            store.renew(&[lease], Duration::from_millis(1_000), t(1_700)),
            vec![LeaseState::CancelRequested]
        );
        // A cancelled job whose worker vanished ends cancelled, not requeued.
        store.tick(t(5_000), Duration::from_secs(3600));
        assert_eq!(store.get(id).unwrap().status, JobStatus::Cancelled);
        assert_eq!(
            store.renew(&[lease], Duration::from_millis(1_000), t(5_001)),
            vec![LeaseState::Lost]
        );
    }

    #[test]
    fn release_hands_a_job_back_without_counting_the_attempt() {
        let mut store = Store::new();
        let id = submit(&mut store, JobSpec::new("noop"), t(0));
        let lease = store.dequeue(&claim(1, 1_000), t(0))[0].lease;
        let changes = store.release(&[lease], t(10));
        assert_eq!(changes.ready, 1);
        let record = store.get(id).unwrap();
        assert_eq!((record.status, record.attempts), (JobStatus::Queued, 0));
    }

    #[test]
    fn release_of_a_job_whose_cancel_was_requested_ends_it_cancelled() {
        let mut store = Store::new();
        let id = submit(&mut store, JobSpec::new("noop"), t(0));
        let lease = store.dequeue(&claim(1, 1_000), t(0))[0].lease;
        store.cancel(id, t(5)).unwrap();
        let changes = store.release(&[lease], t(10));
        assert_eq!(changes.finished, vec![id]);
        assert_eq!(store.get(id).unwrap().status, JobStatus::Cancelled);
    }

    #[test]
    fn retention_removes_terminal_jobs_and_frees_their_idempotency_keys() {
        let mut store = Store::new();
        let spec = JobSpec { idempotency_key: Some("k".into()), ..JobSpec::new("noop") };
        let id = submit(&mut store, spec.clone(), t(0));
        let lease = store.dequeue(&claim(1, 1_000), t(0))[0].lease;
        store.complete(
            vec![Completion {
                lease,
                outcome: Outcome::Succeeded(crate::job::record::json_null()),
            }],
            t(5),
        );
        store.tick(t(500), Duration::from_secs(1));
        assert!(store.get(id).is_some(), "kept within retention");
        store.tick(t(1_005), Duration::from_secs(1));
        assert!(store.get(id).is_none(), "removed after retention");
        assert!(store.is_empty());
        assert!(store.stats().values().all(|c| c.succeeded == 0));
        assert_ne!(submit(&mut store, spec, t(1_010)), id);
    }

    #[test]
    fn a_dependency_that_already_failed_cancels_the_new_job_at_once() {
        let mut store = Store::new();
        let dep =
            submit(&mut store, JobSpec { max_attempts: Some(1), ..JobSpec::new("noop") }, t(0));
        let lease = store.dequeue(&claim(1, 1_000), t(0))[0].lease;
        store.complete(
            vec![Completion {
                lease,
                outcome: Outcome::Failed { error: "boom".into(), retry_at: None },
            }],
            t(1),
        );
        let spec = JobSpec { depends_on: Some(vec![dep.to_string()]), ..JobSpec::new("noop") };
        let id = submit(&mut store, spec, t(2));
        let record = store.get(id).unwrap();
        assert_eq!(record.status, JobStatus::Cancelled);
        assert_eq!(record.error, Some(format!("dependency {dep} failed")));
        assert!(record.history.is_empty(), "it never ran");
        assert_eq!(store.get(dep).unwrap().history, vec![FailedAttempt::new(1, "boom", t(1))]);
    }

    #[test]
    fn an_unknown_dependency_rejects_the_whole_batch() {
        let mut store = Store::new();
        let missing = JobId::new();
        let specs = vec![
            JobSpec::new("noop"),
            JobSpec { depends_on: Some(vec![missing.to_string()]), ..JobSpec::new("noop") },
        ];
        let jobs = plan(specs, true, &Kinds, &SpecDefaults::default(), t(0)).unwrap();
        assert_eq!(store.submit(jobs, t(0)).unwrap_err(), QueueError::UnknownDependency(missing));
        assert!(store.is_empty());
    }
}
