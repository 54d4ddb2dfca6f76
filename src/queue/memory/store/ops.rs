//! The memory store's operator actions on one job (see `QueueBackend::retry`, `run_now` and
//! `delete` for what each means): each checks the job's state, then changes it through
//! [`Store::transition`] like any other transition, so indexes and counts stay in step.

use chrono::{DateTime, Utc};

use super::Store;
use crate::job::{JobId, JobRecord, JobStatus};
use crate::queue::{Changes, JobAction, QueueError};

impl Store {
    /// The status of job `id`, when `action` applies to it.
    fn status_for(&self, id: JobId, action: JobAction) -> Result<JobStatus, QueueError> {
        let status = self.jobs.get(&id).ok_or(QueueError::NotFound(id))?.record.status;
        if !action.applies(status) {
            return Err(QueueError::InvalidState { id, status, action });
        }
        Ok(status)
    }

    pub fn retry(
        &mut self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(JobRecord, Changes), QueueError> {
        self.status_for(id, JobAction::Retry)?;
        let mut unmet = Vec::new();
        for dep in &self.jobs[&id].record.depends_on {
            match self.jobs.get(dep).map(|e| e.record.status) {
                None => return Err(QueueError::DependencyGone { id, dependency: *dep }),
                Some(JobStatus::Succeeded) => {}
                Some(_) => unmet.push(*dep),
            }
        }
        // Waits for them as a new job would; a dependency that already ended badly settles
        // this job only once it ends again (after its own retry).
        for dep in &unmet {
            let waiting = self.dependents.entry(*dep).or_default();
            if !waiting.contains(&id) {
                waiting.push(id);
            }
        }
        let to = if unmet.is_empty() { JobStatus::Queued } else { JobStatus::Waiting };
        let pending = unmet.len() as u32;
        let mut changes = Changes::default();
        self.transition(id, to, now, &mut changes, |e| {
            e.pending_deps = pending;
            let record = &mut e.record;
            record.attempts = 0;
            record.error = None;
            record.result = None;
            record.finished_at = None;
            record.cancel_requested = false;
            record.worker = None;
            record.progress = None;
            record.run_at = Some(now);
        });
        Ok((self.jobs[&id].record.clone(), changes))
    }

    pub fn run_now(
        &mut self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(JobRecord, Changes), QueueError> {
        self.status_for(id, JobAction::RunNow)?;
        let mut changes = Changes::default();
        self.transition(id, JobStatus::Queued, now, &mut changes, |e| e.record.run_at = Some(now));
        Ok((self.jobs[&id].record.clone(), changes))
    }

    pub fn delete(
        &mut self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(JobRecord, Changes), QueueError> {
        self.status_for(id, JobAction::Delete)?;
        let record = self.jobs[&id].record.clone();
        self.remove_all(vec![id]);
        let mut changes = Changes::default();
        // Jobs a retry made wait for it are cancelled (see `remove_all`).
        self.settle(0, now, &mut changes);
        Ok((record, changes))
    }
}
