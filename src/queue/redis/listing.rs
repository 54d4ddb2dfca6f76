//! `/v1/jobs` listings from the indexes, newest first (ids are time-ordered UUIDv7s, so newest
//! first is the ids' descending order), never by scanning every job:
//! - `waiting`, `scheduled`, `failed`, `cancelled`: each has an index per queue;
//! - `running`: the lease index (as large as the jobs running everywhere);
//! - no status, `queued`, `succeeded`: the index of every job per queue, read one time slice
//!   at a time (newest slice first, its ids sorted) and filtered. A page examines at most
//!   [`EXAMINE`] jobs; when it stops there, `next_cursor` says where to continue, so a page may
//!   hold fewer jobs than asked for. The same bound holds for a `kind` filter.

use ::redis::Value;

use super::bulk::slice_of;
use super::{reply, RedisQueue};
use crate::job::{JobId, JobRecord, JobStatus};
use crate::queue::{ListQuery, Page, QueueError, LIST_EXAMINE as EXAMINE};
/// Ids read from the indexes per round trip.
const CHUNK: usize = 500;
/// The length of a job id as text (a hyphenated UUID).
const ID_LEN: usize = 36;

/// Where a listing reads its candidates from.
enum Source {
    /// Sorted sets ordered by id (all scores 0), merged.
    Indexes(Vec<String>),
    /// The ids of running jobs, already sorted newest first.
    Running(Vec<String>),
    /// The index of every job of these queues, in time slices; `slice` holds the ids of the
    /// slice being read that were not handed out yet, newest first.
    Slices { queues: Vec<String>, slice: Vec<String> },
}

pub(super) async fn list(queue: &RedisQueue, query: &ListQuery) -> Result<Page, QueueError> {
    if let Some(cursor) = &query.cursor {
        if cursor.parse::<JobId>().is_err() {
            return Err(QueueError::InvalidCursor(cursor.clone()));
        }
    }
    let limit = query.limit.max(1);
    let queues: Vec<String> = match &query.queue {
        Some(name) => vec![name.clone()],
        None => queue.cmd(::redis::cmd("SMEMBERS").arg(queue.keys.queues())).await?,
    };
    let mut source = match query.status {
        Some(
            status @ (JobStatus::Waiting
            | JobStatus::Scheduled
            | JobStatus::Failed
            | JobStatus::Cancelled),
        ) => {
            Source::Indexes(queues.iter().map(|q| queue.keys.listing(q, status.as_str())).collect())
        }
        Some(JobStatus::Running) => {
            let mut ids: Vec<String> =
                queue.cmd(::redis::cmd("HKEYS").arg(queue.keys.run())).await?;
            // The run hash holds one field that is no job (see `lua/lib.lua`).
            ids.retain(|id| id.parse::<JobId>().is_ok());
            ids.sort_unstable_by(|a, b| b.cmp(a));
            Source::Running(ids)
        }
        _ => Source::Slices { queues, slice: Vec::new() },
    };
    let matches = |record: &JobRecord| {
        query.status.is_none_or(|s| s == record.status)
            && query.kind.as_deref().is_none_or(|k| k == &*record.kind)
            && query.queue.as_deref().is_none_or(|q| q == &*record.queue)
    };
    let mut below = query.cursor.clone();
    let mut jobs = Vec::with_capacity(limit.min(1024));
    let mut examined = 0;
    loop {
        // Never more than the page may still examine.
        let most = CHUNK.min(EXAMINE - examined);
        let ids = next_ids(queue, &mut source, below.as_deref(), most).await?;
        if ids.is_empty() {
            return Ok(Page { jobs, next_cursor: None });
        }
        let parsed: Vec<JobId> = ids
            .iter()
            .map(|id| id.parse().map_err(|_| reply::malformed("an indexed id")))
            .collect::<Result<_, _>>()?;
        let records = queue.read_jobs(&parsed).await?;
        for (id, record) in ids.iter().zip(records) {
            examined += 1;
            // A job removed since it was indexed (a time slice keeps the ids of its removed
            // jobs until its last one goes) is passed over like one that does not match.
            let Some(record) = record.filter(matches) else {
                below = Some(id.clone());
                continue;
            };
            if jobs.len() == limit {
                let last: &JobRecord = jobs.last().expect("limit is at least 1");
                return Ok(Page { next_cursor: Some(last.id.to_string()), jobs });
            }
            jobs.push(record);
            below = Some(id.clone());
        }
        if examined >= EXAMINE {
            return Ok(Page { jobs, next_cursor: below });
        }
    }
}

/// The next ids below `below` (exclusive), newest first, at most `most`.
async fn next_ids(
    queue: &RedisQueue,
    source: &mut Source,
    below: Option<&str>,
    most: usize,
) -> Result<Vec<String>, QueueError> {
    match source {
        Source::Slices { queues, slice } => {
            if slice.is_empty() {
                *slice = slice_below(queue, queues, below).await?;
            }
            let take = slice.len().min(most);
            Ok(slice.drain(..take).collect())
        }
        Source::Running(ids) => {
            let start = below.map_or(0, |b| ids.partition_point(|id| id.as_str() >= b));
            Ok(ids[start..].iter().take(most).cloned().collect())
        }
        Source::Indexes(keys) if keys.is_empty() => Ok(Vec::new()),
        Source::Indexes(keys) => {
            let max = below.map_or("+".to_owned(), |b| format!("({b}"));
            let mut pipe = ::redis::pipe();
            for key in keys {
                pipe.cmd("ZREVRANGEBYLEX")
                    .arg(key)
                    .arg(&max)
                    .arg("-")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(most);
            }
            let replies: Vec<Value> =
                queue.redis.pipe(&pipe, true).await.map_err(reply::redis_error)?;
            let mut ids = Vec::new();
            for value in &replies {
                for id in reply::array(value)? {
                    ids.push(reply::text(id)?.to_owned());
                }
            }
            ids.sort_unstable_by(|a, b| b.cmp(a));
            ids.dedup();
            ids.truncate(most);
            Ok(ids)
        }
    }
}

/// The ids of the newest time slice (over `queues`) that holds ids below `below`: those ids,
/// newest first.
async fn slice_below(
    queue: &RedisQueue,
    queues: &[String],
    below: Option<&str>,
) -> Result<Vec<String>, QueueError> {
    if queues.is_empty() {
        return Ok(Vec::new());
    }
    let mut upper = match below {
        Some(id) => {
            let id: JobId = id.parse().map_err(|_| reply::malformed("an indexed id"))?;
            slice_of(id).to_string()
        }
        None => "+inf".to_owned(),
    };
    loop {
        // Each queue's newest slice at or below `upper`, then the newest of them.
        let mut pipe = ::redis::pipe();
        for name in queues {
            pipe.cmd("ZREVRANGEBYSCORE")
                .arg(queue.keys.slices(name))
                .arg(&upper)
                .arg("-inf")
                .arg("LIMIT")
                .arg(0)
                .arg(1);
        }
        let replies: Vec<Value> =
            queue.redis.pipe(&pipe, true).await.map_err(reply::redis_error)?;
        let mut newest: Option<u64> = None;
        for value in &replies {
            for slice in reply::array(value)? {
                let slice: u64 =
                    reply::text(slice)?.parse().map_err(|_| reply::malformed("a time slice"))?;
                newest = newest.max(Some(slice));
            }
        }
        let Some(newest) = newest else { return Ok(Vec::new()) };
        let mut pipe = ::redis::pipe();
        for name in queues {
            pipe.cmd("GET").arg(queue.keys.slice(name, newest));
        }
        let replies: Vec<Option<Vec<u8>>> =
            queue.redis.pipe(&pipe, true).await.map_err(reply::redis_error)?;
        let mut ids = Vec::new();
        for value in replies.iter().flatten() {
            // The slice's ids end to end, 36 bytes each.
            for id in value.chunks(ID_LEN) {
                let id = std::str::from_utf8(id)
                    .ok()
                    .filter(|id| id.len() == ID_LEN)
                    .ok_or_else(|| reply::malformed("a time slice's ids"))?;
                if below.is_none_or(|b| id < b) {
                    ids.push(id.to_owned());
                }
            }
        }
        if !ids.is_empty() {
            ids.sort_unstable_by(|a, b| b.cmp(a));
            ids.dedup();
            return Ok(ids);
        }
        // Only the slice of `below` itself can hold nothing below it.
        match newest.checked_sub(1) {
            Some(lower) => upper = lower.to_string(),
            None => return Ok(Vec::new()),
        }
    }
}
