//! `sleep`: `{"ms": N}` waits N milliseconds, stopping early when cancelled, and reports its
//! progress as it goes (`{"percent": P}`), so a dashboard has a running job to show.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::job::{Job, JobContext, JobError};

/// The shortest time between two progress reports.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);

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
        let total = Duration::from_millis(self.ms);
        let start = tokio::time::Instant::now();
        // A tenth of the wait at a time, and no report more often than every quarter second.
        let step = (total / 10).max(PROGRESS_EVERY);
        loop {
            let left = total.saturating_sub(start.elapsed());
            if left.is_zero() {
                return Ok(Slept { slept_ms: self.ms });
            }
            tokio::select! {
                _ = tokio::time::sleep(left.min(step)) => {}
                _ = ctx.cancelled() => return Err(JobError::Cancelled),
            }
            if start.elapsed() < total {
                let percent = start.elapsed().as_millis() * 100 / total.as_millis().max(1);
                ctx.progress(&serde_json::json!({ "percent": percent }));
            }
        }
    }
}
