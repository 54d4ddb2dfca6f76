//! The cache actor: owns the instance's cache beyond single reads and writes (which callers
//! make directly on the thread-safe [`Cache`], so a cache hit never crosses threads): it records
//! the hottest keys in the metadata store for the next start's warming job.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::cache::Cache;
use crate::metadata::MetadataStore;

pub use crate::metadata::WARMING_DOC;
/// How many of the hottest keys are recorded.
pub const WARM_KEYS: usize = 1_000;

/// The cache-warming metadata.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct WarmingDoc {
    pub saved_at: Option<DateTime<Utc>>,
    pub keys: Vec<HotKey>,
}

/// One recorded key and its estimated reads.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HotKey {
    pub key: String,
    pub reads: u64,
}

/// Record the hottest keys now; answers how many were recorded.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct PersistHotKeys;

/// The cache actor.
pub struct CacheActor {
    cache: Arc<dyn Cache>,
    metadata: MetadataStore,
    /// How often the hottest keys are recorded (only for backends warming can reload from).
    persist_every: Duration,
}

impl CacheActor {
    pub fn new(cache: Arc<dyn Cache>, metadata: MetadataStore, persist_every: Duration) -> Self {
        CacheActor { cache, metadata, persist_every }
    }

    /// Whether warming can reload anything on the next start: only from a shared layer.
    fn warmable(&self) -> bool {
        self.cache.backend() != "memory"
    }
}

impl Actor for CacheActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        if self.warmable() {
            ctx.run_interval(self.persist_every, |_, ctx| ctx.notify(PersistHotKeys));
        }
    }
}

impl Supervised for CacheActor {}

impl Handler<PersistHotKeys> for CacheActor {
    type Result = ResponseFuture<usize>;
    fn handle(&mut self, _: PersistHotKeys, _: &mut Context<Self>) -> Self::Result {
        let hot = if self.warmable() { self.cache.hot_keys(WARM_KEYS) } else { Vec::new() };
        let metadata = self.metadata.clone();
        Box::pin(async move {
            if hot.is_empty() {
                return 0;
            }
            let doc = WarmingDoc {
                saved_at: Some(Utc::now()),
                keys: hot.into_iter().map(|(key, reads)| HotKey { key, reads }).collect(),
            };
            let count = doc.keys.len();
            let saved = tokio::task::spawn_blocking(move || metadata.save(WARMING_DOC, &doc)).await;
            match saved {
                Ok(Ok(())) => count,
                Ok(Err(err)) => {
                    tracing::warn!("hot keys not recorded: {err}");
                    0
                }
                Err(err) => {
                    tracing::warn!("hot keys not recorded: {err}");
                    0
                }
            }
        })
    }
}
