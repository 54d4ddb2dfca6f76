//! `sleep`: `{"ms": N}` waits N milliseconds, stopping early when cancelled.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::job::{Job, JobContext, JobError};

/// The payload of the `sleep` kind: waits, then succeeds; a cancel ends the wait early, and the job
/// `cancelled`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Sleep {
    /// How long to wait, in milliseconds.
    pub ms: u64,
}

/// The result of `sleep`.
#[derive(Serialize, Deserialize)]
pub struct Slept {
    /// How long it waited, in milliseconds.
    pub slept_ms: u64,
}

impl Job for Sleep {
    const KIND: &'static str = "sleep";
    type Output = Slept;

    async fn run(self, ctx: JobContext) -> Result<Slept, JobError> {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(self.ms)) => Ok(Slept { slept_ms: self.ms }),
            _ = ctx.cancelled() => Err(JobError::Cancelled),
        }
    }
}
