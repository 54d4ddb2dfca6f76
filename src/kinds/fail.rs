//! `fail`: `{"message": "...", "times": N, "retryable": true}` fails its first N attempts
//! (every attempt when `times` is absent), then succeeds; with `"retryable": false` the
//! failure is final.

use serde::{Deserialize, Serialize};

use crate::job::{Job, JobContext, JobError};

/// The payload of the `fail` kind: a job that fails on purpose, for tests and demonstrations.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fail {
    /// The error text of each failure (default `failed on purpose`).
    #[serde(default = "default_message")]
    pub message: String,
    /// How many attempts fail before one succeeds; absent, every attempt fails.
    #[serde(default)]
    pub times: Option<u32>,
    /// Whether a failure may be retried (default true); false fails the job at once, whatever
    /// attempts are left.
    #[serde(default = "yes")]
    pub retryable: bool,
}

fn default_message() -> String {
    "failed on purpose".into()
}

fn yes() -> bool {
    true
}

/// The result of `fail` once an attempt succeeds.
#[derive(Serialize, Deserialize)]
pub struct Recovered {
    /// The attempt that succeeded.
    pub attempt: u32,
}

impl Job for Fail {
    const KIND: &'static str = "fail";
    type Output = Recovered;

    async fn run(self, ctx: JobContext) -> Result<Recovered, JobError> {
        let fails = self.times.is_none_or(|times| ctx.attempt() <= times);
        match (fails, self.retryable) {
            (false, _) => Ok(Recovered { attempt: ctx.attempt() }),
            (true, true) => Err(JobError::retryable(self.message)),
            (true, false) => Err(JobError::fatal(self.message)),
        }
    }
}
