//! `noop`: returns its payload. Useful to measure the runtime itself.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::job::{Job, JobContext, JobError};

/// Any JSON; kept as text, so the round trip costs a copy, not a parse into a tree.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
pub struct Noop(pub Box<RawValue>);

impl Job for Noop {
    const KIND: &'static str = "noop";
    type Output = Box<RawValue>;

    async fn run(self, _ctx: JobContext) -> Result<Box<RawValue>, JobError> {
        Ok(self.0)
    }
}
