//! The operator actions on one job in Redis: retry (`lua/retry.lua`), run now
//! (`lua/run_now.lua`) and delete (`lua/delete.lua`). Each is one script call that checks the
//! job's state and changes it atomically; none is retried after a transient failure, since a
//! second run would answer that the first one already did it.

use chrono::{DateTime, Utc};

use super::jobs::read;
use super::record::ms;
use super::reply::{self, array, bytes, malformed, redis_error, refusal};
use super::scripts::Lua;
use super::RedisQueue;
use crate::job::{JobId, JobRecord};
use crate::queue::{Changes, JobAction, QueueError};

impl RedisQueue {
    pub(super) async fn retry_job(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(JobRecord, Changes), QueueError> {
        // The dependencies are in the part of the record only Rust reads; they never change, so
        // reading them first is safe.
        let record = self.read_jobs(&[id]).await?.pop().flatten();
        let record = record.ok_or(QueueError::NotFound(id))?;
        let deps: Vec<String> = record.depends_on.iter().map(JobId::to_string).collect();
        self.act(&self.scripts.retry, id, JobAction::Retry, &deps, now).await
    }

    pub(super) async fn run_job_now(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(JobRecord, Changes), QueueError> {
        self.act(&self.scripts.run_now, id, JobAction::RunNow, &[], now).await
    }

    pub(super) async fn delete_job(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(JobRecord, Changes), QueueError> {
        self.act(&self.scripts.delete, id, JobAction::Delete, &[], now).await
    }

    /// Runs the script of `action` on job `id` (then `extra` arguments): `{record, changes}`.
    async fn act(
        &self,
        script: &Lua,
        id: JobId,
        action: JobAction,
        extra: &[String],
        now: DateTime<Utc>,
    ) -> Result<(JobRecord, Changes), QueueError> {
        let mut invocation = self.invocation(script);
        invocation.arg(ms(now) as i64).arg(id.to_string());
        for arg in extra {
            invocation.arg(arg);
        }
        let reply = match self.run_raw(&invocation, false).await {
            Ok(reply) => reply,
            Err(err) => return Err(refused(id, action, err)?),
        };
        let [stored, changes] = array(&reply)? else { return Err(malformed(action.as_str())) };
        let record = read(id, bytes(stored)?, None, false, None)?;
        Ok((record, reply::changes(changes)?))
    }
}

/// The error a refusal of `action`'s script stands for.
fn refused(
    id: JobId,
    action: JobAction,
    err: crate::redis::RedisError,
) -> Result<QueueError, QueueError> {
    if refusal(&err, "not_found").is_some() {
        return Ok(QueueError::NotFound(id));
    }
    if let Some(status) = refusal(&err, "invalid_state") {
        return Ok(QueueError::InvalidState { id, status: reply::status(status)?, action });
    }
    if let Some(dependency) = refusal(&err, "dependency_gone") {
        let dependency = dependency.parse().map_err(|_| malformed("an id"))?;
        return Ok(QueueError::DependencyGone { id, dependency });
    }
    Ok(redis_error(err))
}
