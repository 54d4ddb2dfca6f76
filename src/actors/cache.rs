//! The cache actor: owns the instance's cache. For now it stores job results (so a finished
//! job's output can be read from the cache) and answers lookups and stats.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::cache::{result_key, CacheStats, Entry, MemoryCache};
use crate::job::{JobId, Json};

/// Cache these job results (ids with their JSON output) for the retention period.
#[derive(Message)]
#[rtype(result = "()")]
pub struct StoreResults(pub Vec<(JobId, Json)>);

/// Look up one key.
#[derive(Message)]
#[rtype(result = "Option<Arc<Entry>>")]
pub struct CacheGet(pub String);

/// The cache's counters.
#[derive(Message)]
#[rtype(result = "CacheStats")]
pub struct GetCacheStats;

/// The cache actor.
pub struct CacheActor {
    cache: Arc<MemoryCache>,
    /// Results live as long as the jobs they belong to.
    result_ttl: Duration,
}

impl CacheActor {
    pub fn new(cache: Arc<MemoryCache>, result_ttl: Duration) -> Self {
        CacheActor { cache, result_ttl }
    }
}

impl Actor for CacheActor {
    type Context = Context<Self>;
}

impl Supervised for CacheActor {}

impl Handler<StoreResults> for CacheActor {
    type Result = ();
    fn handle(&mut self, StoreResults(results): StoreResults, _: &mut Context<Self>) {
        for (id, result) in results {
            let bytes: Arc<[u8]> = Arc::from(result.get().as_bytes());
            let entry = Entry::new(bytes, "application/json", self.result_ttl, vec!["jobs".into()]);
            self.cache.set(result_key(id), entry);
        }
    }
}

impl Handler<CacheGet> for CacheActor {
    type Result = Option<Arc<Entry>>;
    fn handle(&mut self, CacheGet(key): CacheGet, _: &mut Context<Self>) -> Self::Result {
        self.cache.get(&key)
    }
}

impl Handler<GetCacheStats> for CacheActor {
    type Result = MessageResult<GetCacheStats>;
    fn handle(&mut self, _: GetCacheStats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.cache.stats())
    }
}
