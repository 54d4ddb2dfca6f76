//! The operator's actions on jobs that already exist: retry (one job, or every job a filter
//! selects, in bounded batches), run a scheduled job now, delete a finished job.

use crate::actors::queue::{Delete, Retry, RunNow};
use crate::cache::result_key;
use crate::job::{JobId, JobRecord, JobStatus};
use crate::queue::{ListQuery, QueueError};

use super::{Client, RuntimeError};

/// Which jobs [`Client::retry_matching`] retries: every `failed` or `cancelled` job that matches
/// each filter given.
///
/// ```
/// use jobyard::{JobStatus, RetryFilter};
///
/// // Every failed `http` job, in any queue.
/// let filter = RetryFilter {
///     status: Some(JobStatus::Failed),
///     kind: Some("http".into()),
///     ..RetryFilter::default()
/// };
/// assert!(filter.queue.is_none());
/// // Every failed or cancelled job.
/// let everything = RetryFilter::default();
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RetryFilter {
    /// `failed` or `cancelled` (`None`: both). Any other state selects nothing.
    pub status: Option<JobStatus>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// Only jobs of this queue.
    pub queue: Option<String>,
}

/// Jobs read, and then retried, per batch of [`Client::retry_matching`]: each batch is one
/// listing and this many retries at most, so a large retry never holds the store long.
pub const RETRY_BATCH: usize = 500;

impl Client {
    /// Puts a `failed` or `cancelled` job back to run with a fresh set of attempts; answers its
    /// new record (`queued`, or `waiting` when some of its dependencies have not succeeded).
    /// Its history keeps the earlier attempts; jobs cancelled because it failed are not
    /// revived. See [`QueueBackend::retry`](crate::queue::QueueBackend::retry).
    ///
    /// ```no_run
    /// # async fn demo(client: &jobyard::Client, id: jobyard::JobId) -> Result<(), jobyard::RuntimeError> {
    /// use jobyard::queue::QueueError;
    /// use jobyard::RuntimeError;
    ///
    /// match client.retry(id).await {
    ///     Ok(job) => println!("job {} is {} again", job.id, job.status),
    ///     Err(RuntimeError::Queue(QueueError::InvalidState { status, .. })) => {
    ///         println!("nothing to retry: the job is {status}")
    ///     }
    ///     Err(err) => return Err(err),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn retry(&self, id: JobId) -> Result<JobRecord, RuntimeError> {
        Ok(self.call(Retry(id)).await??)
    }

    /// Retries every `failed` or `cancelled` job `filter` selects, [`RETRY_BATCH`] at a time;
    /// answers how many were retried. Jobs that changed meanwhile (retried or removed by
    /// someone else) or that could not run (a dependency gone) are passed over, not counted.
    ///
    /// ```no_run
    /// # async fn demo(client: &jobyard::Client) -> Result<(), jobyard::RuntimeError> {
    /// use jobyard::{JobStatus, RetryFilter};
    ///
    /// let filter = RetryFilter {
    ///     status: Some(JobStatus::Failed),
    ///     queue: Some("emails".into()),
    ///     ..RetryFilter::default()
    /// };
    /// let retried = client.retry_matching(filter).await?;
    /// println!("{retried} jobs retried");
    /// # Ok(()) }
    /// ```
    pub async fn retry_matching(&self, filter: RetryFilter) -> Result<u64, RuntimeError> {
        let statuses = match filter.status {
            None => vec![JobStatus::Failed, JobStatus::Cancelled],
            Some(status @ (JobStatus::Failed | JobStatus::Cancelled)) => vec![status],
            Some(_) => Vec::new(),
        };
        let mut retried = 0;
        for status in statuses {
            let mut query = ListQuery {
                status: Some(status),
                kind: filter.kind.clone(),
                queue: filter.queue.clone(),
                limit: RETRY_BATCH,
                ..ListQuery::default()
            };
            loop {
                let page = self.list(query.clone()).await?;
                for job in page.jobs {
                    retried += self.retry_if_still_due(job.id).await? as u64;
                }
                match page.next_cursor {
                    Some(cursor) => query.cursor = Some(cursor),
                    None => break,
                }
            }
        }
        Ok(retried)
    }

    /// Retries one listed job; false when it changed since it was listed, or cannot run.
    async fn retry_if_still_due(&self, id: JobId) -> Result<bool, RuntimeError> {
        match self.call(Retry(id)).await? {
            Ok(_) => Ok(true),
            Err(
                QueueError::NotFound(_)
                | QueueError::InvalidState { .. }
                | QueueError::DependencyGone { .. },
            ) => Ok(false),
            Err(err) => Err(err.into()),
        }
    }

    /// Makes a `scheduled` job (delayed, or waiting for its next retry) due now; answers its new
    /// record (`queued`: its limits and paused queue still apply).
    ///
    /// ```no_run
    /// # async fn demo(client: &jobyard::Client, id: jobyard::JobId) -> Result<(), jobyard::RuntimeError> {
    /// let job = client.run_now(id).await?;
    /// assert_eq!(job.status, jobyard::JobStatus::Queued);
    /// # Ok(()) }
    /// ```
    pub async fn run_now(&self, id: JobId) -> Result<JobRecord, RuntimeError> {
        Ok(self.call(RunNow(id)).await??)
    }

    /// Removes a finished job at once, with its cached result and its idempotency key; answers
    /// the record removed. A job that has not ended is refused
    /// ([`QueueError::InvalidState`]): cancel it first.
    ///
    /// ```no_run
    /// # async fn demo(client: &jobyard::Client, id: jobyard::JobId) -> Result<(), jobyard::RuntimeError> {
    /// let removed = client.delete(id).await?;
    /// println!("removed {} job {} of queue {}", removed.status, removed.id, removed.queue);
    /// assert!(client.status(id).await.is_err(), "gone");
    /// # Ok(()) }
    /// ```
    pub async fn delete(&self, id: JobId) -> Result<JobRecord, RuntimeError> {
        let removed = self.call(Delete(id)).await??;
        if removed.status == JobStatus::Succeeded {
            self.cache.delete(&result_key(id)).await;
        }
        Ok(removed)
    }
}
