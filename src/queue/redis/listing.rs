//! `/v1/jobs` listings from the indexes, newest first (ids are time-ordered UUIDv7s, so newest
//! first is the ids' descending order), never by scanning every job:
//! - `waiting`, `scheduled`, `failed`, `cancelled`: each has an index per queue;
//! - `running`: the lease index (as large as the jobs running everywhere);
//! - no status, `queued`, `succeeded`: the index of every job per queue, read one time slice
//!   at a time (newest slice first, its ids sorted) and filtered. A page examines at most
//!   [`EXAMINE`] jobs; when it stops there, `next_cursor` says where to continue, so a page may
//!   hold fewer jobs than asked for. The same bound holds for a `kind` or `group` filter.

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
    /// The index of every job of these queues, in time slices, read newest first: `ids` holds
    /// the ids read and not handed out yet, newest first; `next` is the newest slice not read.
    Slices { queues: Vec<String>, ids: Vec<String>, next: Next },
}

/// The newest time slice a listing has not read yet.
#[derive(Clone, Copy)]
enum Next {
    /// None read yet: the slice of the cursor, or the newest.
    Start,
    /// This slice and older ones.
    AtOrBelow(u64),
    /// Every slice was read.
    Done,
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
        _ => Source::Slices { queues, ids: Vec::new(), next: Next::Start },
    };
    let matches = |record: &JobRecord| {
        query.status.is_none_or(|s| s == record.status)
            && query.kind.as_deref().is_none_or(|k| k == &*record.kind)
            && query.queue.as_deref().is_none_or(|q| q == &*record.queue)
            && query.group.as_deref().is_none_or(|g| record.group.as_deref() == Some(g))
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
        Source::Slices { queues, ids, next } => {
            if ids.is_empty() {
                *ids = read_slices(queue, queues, below, next).await?;
            }
            let take = ids.len().min(most);
            Ok(ids.drain(..take).collect())
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

/// Slices read per round trip, at most (fewer when they hold many ids).
const SLICES_PER_READ: usize = 16;

/// Reads the newest time slices from `next` on (over `queues`) until some hold ids below
/// `below`: those ids, newest first. Several slices are read per round trip when they are
/// small (a quiet queue has a slice per job), one when it holds many.
async fn read_slices(
    queue: &RedisQueue,
    queues: &[String],
    below: Option<&str>,
    next: &mut Next,
) -> Result<Vec<String>, QueueError> {
    if queues.is_empty() {
        return Ok(Vec::new());
    }
    loop {
        let upper = match *next {
            Next::Done => return Ok(Vec::new()),
            Next::AtOrBelow(slice) => slice.to_string(),
            Next::Start => match below {
                Some(id) => {
                    let id: JobId = id.parse().map_err(|_| reply::malformed("an indexed id"))?;
                    slice_of(id).to_string()
                }
                None => "+inf".to_owned(),
            },
        };
        let pairs = newest_slices(queue, queues, &upper).await?;
        if pairs.is_empty() {
            *next = Next::Done;
            return Ok(Vec::new());
        }
        // Their sizes, then the newest slices that hold a chunk's worth of ids (at least one
        // slice, and every queue's part of each slice taken).
        let mut pipe = ::redis::pipe();
        for (slice, name) in &pairs {
            pipe.cmd("STRLEN").arg(queue.keys.slice(name, *slice));
        }
        let sizes: Vec<u64> = queue.redis.pipe(&pipe, true).await.map_err(reply::redis_error)?;
        let mut read = 0;
        let mut bytes = 0;
        while read < pairs.len() {
            let slice = pairs[read].0;
            if bytes >= (CHUNK * ID_LEN) as u64 {
                break;
            }
            while read < pairs.len() && pairs[read].0 == slice {
                bytes += sizes[read];
                read += 1;
            }
        }
        let oldest_read = pairs[read - 1].0;
        let mut pipe = ::redis::pipe();
        for (slice, name) in &pairs[..read] {
            pipe.cmd("GET").arg(queue.keys.slice(name, *slice));
        }
        let values: Vec<Option<Vec<u8>>> =
            queue.redis.pipe(&pipe, true).await.map_err(reply::redis_error)?;
        *next = match oldest_read.checked_sub(1) {
            Some(lower) => Next::AtOrBelow(lower),
            None => Next::Done,
        };
        let ids = ids_below(&values, below)?;
        if !ids.is_empty() {
            return Ok(ids);
        }
    }
}

/// The newest slices at or below `upper` over `queues`, newest first, as (slice, queue) pairs:
/// at most [`SLICES_PER_READ`] per queue, and only those no older than the oldest of a queue
/// that gave that many (it may hold slices in between that it did not give).
async fn newest_slices<'q>(
    queue: &RedisQueue,
    queues: &'q [String],
    upper: &str,
) -> Result<Vec<(u64, &'q str)>, QueueError> {
    let mut pipe = ::redis::pipe();
    for name in queues {
        pipe.cmd("ZREVRANGEBYSCORE")
            .arg(queue.keys.slices(name))
            .arg(upper)
            .arg("-inf")
            .arg("LIMIT")
            .arg(0)
            .arg(SLICES_PER_READ);
    }
    let replies: Vec<Value> = queue.redis.pipe(&pipe, true).await.map_err(reply::redis_error)?;
    let mut pairs: Vec<(u64, &str)> = Vec::new();
    let mut floor = 0;
    for (name, value) in queues.iter().zip(&replies) {
        let slices = reply::array(value)?;
        for slice in slices {
            let slice = reply::text(slice)?;
            pairs.push((slice.parse().map_err(|_| reply::malformed("a time slice"))?, name));
        }
        if slices.len() == SLICES_PER_READ {
            floor = floor.max(pairs.last().map_or(0, |p| p.0));
        }
    }
    pairs.retain(|(slice, _)| *slice >= floor);
    pairs.sort_unstable_by_key(|pair| std::cmp::Reverse(pair.0));
    Ok(pairs)
}

/// The ids below `below` in slices' values (each its ids end to end, 36 bytes each), newest
/// first.
fn ids_below(values: &[Option<Vec<u8>>], below: Option<&str>) -> Result<Vec<String>, QueueError> {
    let mut ids = Vec::new();
    for value in values.iter().flatten() {
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
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids.dedup();
    Ok(ids)
}
