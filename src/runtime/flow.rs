//! The client's flow control: limits, paused queues and group weights (see
//! [`crate::queue::flow`] for what they do).

use chrono::{DateTime, Utc};

use super::{Client, RuntimeError};
use crate::actors::flow::{
    DeleteLimit, GetLimit, GetLimitJobs, HoldLimit, ListGroupWeights, ListLimits, ListQueues,
    PauseQueue, PutLimit, SetGroupWeight,
};
use crate::job::spec::{validate_flow_name, validate_queue};
use crate::job::JobRecord;
use crate::queue::flow::{
    validate_limit_name, validate_weight, GroupWeight, Limit, LimitSpec, QueueInfo,
};
use crate::queue::{QueueError, MOST_LISTED};

impl Client {
    /// Creates or replaces limit `name`; answers it with its state, and whether it was
    /// created. A replaced limit keeps what it counted (tokens taken, jobs running, a hold).
    ///
    /// ```no_run
    /// # async fn demo(client: &jobyard::Client) -> Result<(), jobyard::RuntimeError> {
    /// use jobyard::queue::flow::{LimitSpec, Rate};
    ///
    /// // GitHub allows 5 000 requests an hour per token; keep 4 calls in flight at most.
    /// let spec = LimitSpec {
    ///     rate: Some(Rate { tokens: 5_000, per_ms: 3_600_000 }),
    ///     concurrency: Some(4),
    /// };
    /// let (limit, created) = client.put_limit("github", spec).await?;
    /// println!("created: {created}; {:?} tokens left", limit.state.tokens_left);
    /// # Ok(()) }
    /// ```
    pub async fn put_limit(
        &self,
        name: &str,
        spec: LimitSpec,
    ) -> Result<(Limit, bool), RuntimeError> {
        validate_limit_name(name)?;
        spec.validate()?;
        Ok(self.call(PutLimit { name: name.to_owned(), spec }).await??)
    }

    /// Limit `name` with its state.
    pub async fn limit(&self, name: &str) -> Result<Limit, RuntimeError> {
        self.call(GetLimit(name.to_owned()))
            .await??
            .ok_or_else(|| RuntimeError::Queue(QueueError::LimitNotFound(name.to_owned())))
    }

    /// Every limit with its state, by name.
    pub async fn limits(&self) -> Result<Vec<Limit>, RuntimeError> {
        Ok(self.call(ListLimits).await??)
    }

    /// The queued jobs naming limit `name` that it holds back now, at most `most` (capped at
    /// [`MOST_LISTED`]), highest priority first, then oldest.
    ///
    /// ```no_run
    /// # async fn demo(client: &jobyard::Client) -> Result<(), jobyard::RuntimeError> {
    /// for job in client.limit_jobs("github", 10).await? {
    ///     println!("{} ({}) waits for the github limit", job.id, job.kind);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn limit_jobs(
        &self,
        name: &str,
        most: usize,
    ) -> Result<Vec<JobRecord>, RuntimeError> {
        let most = most.min(MOST_LISTED);
        Ok(self.call(GetLimitJobs { name: name.to_owned(), most }).await??)
    }

    /// Removes limit `name`: the jobs that name it run as if it did not exist, and new jobs
    /// may no longer name it.
    pub async fn delete_limit(&self, name: &str) -> Result<(), RuntimeError> {
        match self.call(DeleteLimit(name.to_owned())).await?? {
            true => Ok(()),
            false => Err(RuntimeError::Queue(QueueError::LimitNotFound(name.to_owned()))),
        }
    }

    /// Holds every job under limit `name` until `until`, on every instance (what a handler's
    /// [`JobContext::limit_exhausted`](crate::JobContext::limit_exhausted) does when an upstream
    /// says no more calls before then). A hold is never shortened by a later one.
    pub async fn hold_limit(&self, name: &str, until: DateTime<Utc>) -> Result<(), RuntimeError> {
        Ok(self.call(HoldLimit { name: name.to_owned(), until }).await??)
    }

    /// Pauses queue `name`: it keeps accepting jobs, and no instance starts one until it is
    /// resumed. Running jobs finish.
    pub async fn pause_queue(&self, name: &str) -> Result<(), RuntimeError> {
        let queue = validate_queue(Some(name))?.to_string();
        Ok(self.call(PauseQueue { queue, paused: true }).await??)
    }

    /// Resumes queue `name`.
    pub async fn resume_queue(&self, name: &str) -> Result<(), RuntimeError> {
        let queue = validate_queue(Some(name))?.to_string();
        Ok(self.call(PauseQueue { queue, paused: false }).await??)
    }

    /// Every queue that holds jobs or is paused, by name, with its counts (`throttled`: the
    /// queued jobs limits hold back now) and whether it is paused.
    pub async fn queues(&self) -> Result<Vec<QueueInfo>, RuntimeError> {
        Ok(self.call(ListQueues).await??)
    }

    /// Sets the weight of group `name` (1 to 1 000; every group weighs 1 until set): where
    /// groups take turns, it is served `weight` times as often as a group of weight 1.
    pub async fn set_group_weight(&self, name: &str, weight: u32) -> Result<(), RuntimeError> {
        validate_flow_name("group", name)?;
        validate_weight(weight)?;
        let weight = Some(weight);
        Ok(self.call(SetGroupWeight { group: name.to_owned(), weight }).await??)
    }

    /// Sets the weight of group `name` back to 1.
    pub async fn reset_group_weight(&self, name: &str) -> Result<(), RuntimeError> {
        validate_flow_name("group", name)?;
        Ok(self.call(SetGroupWeight { group: name.to_owned(), weight: None }).await??)
    }

    /// The groups whose weight is not 1, by name.
    pub async fn group_weights(&self) -> Result<Vec<GroupWeight>, RuntimeError> {
        Ok(self.call(ListGroupWeights).await??)
    }
}
