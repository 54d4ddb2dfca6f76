//! The in-memory queue backend: the default, needing nothing else. State lives in the process
//! and is gone when it exits.
//!
//! A `std` mutex guards the [`Store`]: every call holds it for a few microseconds at most and
//! never across an await, so an async mutex would only add cost.

mod flow;
mod index;
mod instances;
mod store;

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

pub use store::Store;

use super::flow::{Claims, GroupWeight, Limit, LimitSpec, QueueInfo};
use super::{
    CancelOutcome, Changes, Claim, Completion, InstanceInfo, LeaseRef, LeaseState, ListQuery, Page,
    QueueBackend, QueueError, QueueLimits, QueueStats, Registration, Submitted, TakeoverCounts,
};
use crate::job::{JobId, JobRecord, Json, NewJob};
use crate::schedule::{Fire, Schedule};
use instances::InstanceTable;

/// The in-memory [`QueueBackend`].
///
/// ```
/// use std::sync::Arc;
/// use jobyard::queue::{MemoryQueue, QueueBackend, QueueLimits};
/// use jobyard::Runtime;
///
/// // At most 10 000 jobs waiting to run per queue: past it, submits are refused (`QueueFull`).
/// let limits = QueueLimits { max_queued: 10_000, ..QueueLimits::default() };
/// let queue = MemoryQueue::with_limits(limits);
/// assert_eq!(queue.name(), "memory");
/// // A runtime given none makes its own, with the limits of its configuration.
/// let builder = Runtime::builder().queue_backend(Arc::new(queue));
/// let with_default_limits = MemoryQueue::new();
/// ```
#[derive(Default)]
pub struct MemoryQueue {
    store: Mutex<Store>,
    /// The instance registry, apart from the jobs: a heartbeat never waits on a job call.
    instances: Mutex<InstanceTable>,
}

impl MemoryQueue {
    /// An empty memory queue keeping the default limits ([`QueueLimits::default`]).
    pub fn new() -> Self {
        Self::default()
    }

    /// A memory queue keeping `limits`.
    pub fn with_limits(limits: QueueLimits) -> Self {
        MemoryQueue { store: Mutex::new(Store::with_limits(limits)), ..Self::default() }
    }

    fn store(&self) -> MutexGuard<'_, Store> {
        // A panic while holding the lock cannot leave a half-applied transition visible to
        // callers that matter more than the panic itself; keep serving.
        self.store.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn instance_table(&self) -> MutexGuard<'_, InstanceTable> {
        self.instances.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[async_trait]
impl QueueBackend for MemoryQueue {
    fn name(&self) -> &'static str {
        "memory"
    }

    async fn submit(&self, jobs: Vec<NewJob>, now: DateTime<Utc>) -> Result<Submitted, QueueError> {
        self.store().submit(jobs, now)
    }

    async fn claim(&self, claim: Claim, now: DateTime<Utc>) -> Result<Claims, QueueError> {
        Ok(self.store().claim(&claim, now))
    }

    async fn complete(
        &self,
        done: Vec<Completion>,
        now: DateTime<Utc>,
    ) -> Result<Changes, QueueError> {
        Ok(self.store().complete(done, now))
    }

    async fn renew(
        &self,
        leases: Vec<LeaseRef>,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<LeaseState>, QueueError> {
        Ok(self.store().renew(&leases, lease, now))
    }

    async fn release(
        &self,
        leases: Vec<LeaseRef>,
        now: DateTime<Utc>,
    ) -> Result<Changes, QueueError> {
        Ok(self.store().release(&leases, now))
    }

    async fn report_progress(
        &self,
        lease: LeaseRef,
        progress: Json,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        self.store().report_progress(&lease, progress, now);
        Ok(())
    }

    async fn cancel(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(CancelOutcome, Changes), QueueError> {
        self.store().cancel(id, now)
    }

    async fn retry(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(JobRecord, Changes), QueueError> {
        self.store().retry(id, now)
    }

    async fn run_now(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(JobRecord, Changes), QueueError> {
        self.store().run_now(id, now)
    }

    async fn delete(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(JobRecord, Changes), QueueError> {
        self.store().delete(id, now)
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, QueueError> {
        Ok(self.store().get(id))
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, QueueError> {
        self.store().list(query)
    }

    async fn tick(&self, now: DateTime<Utc>, retention: Duration) -> Result<Changes, QueueError> {
        Ok(self.store().tick(now, retention))
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
        Ok(self.store().stats())
    }

    async fn throttled(&self, now: DateTime<Utc>) -> Result<BTreeMap<String, u64>, QueueError> {
        Ok(self.store().throttled(now))
    }

    async fn put_limit(
        &self,
        name: &str,
        spec: LimitSpec,
        now: DateTime<Utc>,
    ) -> Result<(Limit, bool), QueueError> {
        Ok(self.store().put_limit(name, spec, now))
    }

    async fn get_limit(&self, name: &str, now: DateTime<Utc>) -> Result<Option<Limit>, QueueError> {
        Ok(self.store().get_limit(name, now))
    }

    async fn list_limits(&self, now: DateTime<Utc>) -> Result<Vec<Limit>, QueueError> {
        Ok(self.store().list_limits(now))
    }

    async fn delete_limit(&self, name: &str) -> Result<bool, QueueError> {
        Ok(self.store().delete_limit(name))
    }

    async fn hold_limit(
        &self,
        name: &str,
        until: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        self.store().hold_limit(name, until)
    }

    async fn pause_queue(&self, queue: &str, paused: bool) -> Result<(), QueueError> {
        self.store().pause_queue(queue, paused);
        Ok(())
    }

    async fn queues(&self, now: DateTime<Utc>) -> Result<Vec<QueueInfo>, QueueError> {
        Ok(self.store().queues(now))
    }

    async fn set_group_weight(&self, name: &str, weight: Option<u32>) -> Result<(), QueueError> {
        self.store().set_group_weight(name, weight);
        Ok(())
    }

    async fn group_weights(&self) -> Result<Vec<GroupWeight>, QueueError> {
        Ok(self.store().group_weights())
    }

    async fn dependents(&self, id: JobId, most: usize) -> Result<Vec<JobRecord>, QueueError> {
        self.store().dependents(id, most).ok_or(QueueError::NotFound(id))
    }

    async fn limit_jobs(
        &self,
        name: &str,
        most: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<JobRecord>, QueueError> {
        let jobs = self.store().limit_jobs(name, most, now);
        jobs.ok_or_else(|| QueueError::LimitNotFound(name.to_owned()))
    }

    async fn queued_by_kind(&self) -> Result<BTreeMap<String, u64>, QueueError> {
        Ok(self.store().queued_by_kind())
    }

    async fn ping(&self) -> Result<(), QueueError> {
        Ok(())
    }

    async fn put_schedule(&self, schedule: Schedule) -> Result<bool, QueueError> {
        Ok(self.store().put_schedule(schedule))
    }

    async fn get_schedule(&self, name: &str) -> Result<Option<Schedule>, QueueError> {
        Ok(self.store().get_schedule(name))
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>, QueueError> {
        Ok(self.store().list_schedules())
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool, QueueError> {
        Ok(self.store().delete_schedule(name))
    }

    async fn record_fire(&self, name: &str, fire: Fire) -> Result<(), QueueError> {
        self.store().record_fire(name, fire)
    }

    async fn heartbeat(
        &self,
        instance: &InstanceInfo,
        displace: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Registration, QueueError> {
        Ok(self.instance_table().heartbeat(instance, displace, now))
    }

    async fn instances(&self, now: DateTime<Utc>) -> Result<Vec<InstanceInfo>, QueueError> {
        Ok(self.instance_table().live(now))
    }

    async fn leave(&self, name: &str, run_id: &str) -> Result<(), QueueError> {
        self.instance_table().leave(name, run_id);
        Ok(())
    }

    async fn take_over(&self, name: &str, now: DateTime<Utc>) -> Result<Changes, QueueError> {
        Ok(self.store().take_over(name, now))
    }

    async fn takeovers(&self) -> Result<TakeoverCounts, QueueError> {
        Ok(self.store().takeovers())
    }
}
