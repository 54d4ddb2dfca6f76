//! What the client reads for dashboards beside jobs, schedules and limits: the history of
//! finished jobs, and the jobs waiting on a job.

use super::{Client, RuntimeError};
use crate::actors::queue::{GetDependents, GetHistory};
use crate::job::{JobId, JobRecord};
use crate::queue::history::History;
use crate::queue::MOST_LISTED;

impl Client {
    /// The jobs that reached `succeeded` or `failed` per 10-second bucket over the last hour,
    /// oldest first: on a shared backend, those of every instance (each hands its counts over
    /// every couple of seconds; this instance's are counted at once). See
    /// [`crate::queue::history`] for what is counted.
    ///
    /// ```no_run
    /// # async fn demo(client: &jobyard::Client) -> Result<(), jobyard::RuntimeError> {
    /// let history = client.history().await?;
    /// let failed: u64 = history.points.iter().map(|p| p.failed).sum();
    /// println!("{failed} jobs failed in the last hour");
    /// # Ok(()) }
    /// ```
    pub async fn history(&self) -> Result<History, RuntimeError> {
        Ok(self.call(GetHistory).await??)
    }

    /// The jobs waiting on job `id` (at most [`MOST_LISTED`], oldest first among those read):
    /// what the store keeps to release them once `id` succeeds, so a job that ended and whose
    /// dependents were settled has none left.
    pub async fn dependents(&self, id: JobId) -> Result<Vec<JobRecord>, RuntimeError> {
        let mut jobs = self.call(GetDependents { id, most: MOST_LISTED }).await??;
        // Ids are UUIDv7s: in creation order.
        jobs.sort_by_key(|job| job.id);
        Ok(jobs)
    }
}
