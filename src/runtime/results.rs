//! Job results read through the cache: `jobs:<id>:result` is answered from the job's record,
//! never from a copy.
//!
//! A result is stored once, in its job's record, by the same write that ends the job. The
//! cache key of a result reads that record: storing a second copy cost every job a cache
//! write (on Redis, a second write of the same bytes with its own expiry), and the two could
//! disagree (a result invalidated while its job stays, a deleted job whose copy lives on).
//! Served from the record, the key lives exactly as long as the job (its retention, or until
//! `DELETE /v1/jobs/{id}`), and costs nothing until someone reads it.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::cache::{Cache, CacheHealth, CacheStats, Entry};
use crate::job::JobId;
use crate::queue::QueueBackend;

/// A cache whose result keys are read from the queue's records; every other key, and every
/// write, goes to the cache it wraps.
pub(crate) struct JobResults {
    cache: Arc<dyn Cache>,
    queue: Arc<dyn QueueBackend>,
    retention: Duration,
}

impl JobResults {
    pub fn new(cache: Arc<dyn Cache>, queue: Arc<dyn QueueBackend>, retention: Duration) -> Self {
        JobResults { cache, queue, retention }
    }

    /// The result of the job `key` names, as an entry; `None` when `key` is not a job's
    /// result key, or the job is unknown or has no result.
    async fn result(&self, key: &str) -> Option<Arc<Entry>> {
        let id: JobId = key.strip_prefix("jobs:")?.strip_suffix(":result")?.parse().ok()?;
        let record = match self.queue.get(id).await {
            Ok(record) => record?,
            Err(err) => {
                tracing::debug!(job_id = %id, "result not read: {err}");
                return None;
            }
        };
        let (result, finished) = (record.result?, record.finished_at?);
        let mut entry =
            Entry::new(result.get().as_bytes(), "application/json", self.retention, vec![]);
        // It was made when the job ended, and goes with the job.
        entry.stored_at = finished;
        entry.expires_at =
            finished + chrono::Duration::from_std(self.retention).unwrap_or(chrono::Duration::MAX);
        Some(Arc::new(entry))
    }
}

#[async_trait]
impl Cache for JobResults {
    fn backend(&self) -> &'static str {
        self.cache.backend()
    }

    async fn get(&self, key: &str) -> Option<Arc<Entry>> {
        // Otherwise the key is an ordinary one (a key someone wrote under a result's name is
        // still read when no job's result answers it).
        match self.result(key).await {
            Some(entry) => Some(entry),
            None => self.cache.get(key).await,
        }
    }

    async fn set(&self, key: &str, entry: Entry) {
        self.cache.set(key, entry).await
    }

    async fn insert_new(&self, key: &str, entry: Entry) {
        self.cache.insert_new(key, entry).await
    }

    async fn insert_new_many(&self, entries: Vec<(String, Entry)>) {
        self.cache.insert_new_many(entries).await
    }

    async fn delete(&self, key: &str) -> bool {
        self.cache.delete(key).await
    }

    async fn invalidate_prefix(&self, prefix: &str) -> u64 {
        self.cache.invalidate_prefix(prefix).await
    }

    async fn invalidate_tags(&self, tags: &[String]) -> u64 {
        self.cache.invalidate_tags(tags).await
    }

    async fn clear(&self) {
        self.cache.clear().await
    }

    fn drop_local(&self, key: &str) {
        self.cache.drop_local(key)
    }

    async fn preload(&self, keys: &[String]) -> usize {
        self.cache.preload(keys).await
    }

    fn hot_keys(&self, limit: usize) -> Vec<(String, u64)> {
        self.cache.hot_keys(limit)
    }

    fn stats(&self) -> CacheStats {
        self.cache.stats()
    }

    fn health(&self) -> CacheHealth {
        self.cache.health()
    }
}
