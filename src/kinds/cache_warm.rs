//! `cache.warm`: `{"keys": [...]}` loads the keys from the shared cache layer into this
//! instance's memory layer. The runtime submits one at start with the hottest keys of the
//! previous run (cache.md rule 8).

use serde::{Deserialize, Serialize};

use crate::cache::CacheHandle;
use crate::job::{Job, JobContext, JobError};

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheWarm {
    pub keys: Vec<String>,
}

#[derive(Serialize, Deserialize)]
pub struct Warmed {
    pub asked: usize,
    pub loaded: usize,
}

impl Job for CacheWarm {
    const KIND: &'static str = "cache.warm";
    type Output = Warmed;

    async fn run(self, ctx: JobContext) -> Result<Warmed, JobError> {
        let cache = ctx
            .extension::<CacheHandle>()
            .ok_or_else(|| JobError::fatal("this runtime has no cache"))?;
        let loaded = cache.0.preload(&self.keys).await;
        tracing::info!(job_id = %ctx.job_id(), asked = self.keys.len(), loaded, "cache warmed");
        Ok(Warmed { asked: self.keys.len(), loaded })
    }
}
