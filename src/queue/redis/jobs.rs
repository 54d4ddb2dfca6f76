//! Jobs in Redis outside an attempt: submitting them, reading them as readers see them (the
//! stored record with its running attempt applied), cancelling, counting, and the periodic
//! steps (promotion, reaping, purging).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::record::{self, ms};
use super::reply::{self, array, bytes, int, malformed, redis_error, refusal, text};
use super::{bulk, RedisQueue, STEP_LIMIT};
use crate::job::{JobId, JobRecord, JobStatus, NewJob};
use crate::queue::{
    CancelOutcome, Changes, QueueError, QueueStats, StateCounts, SubmitResult, Submitted,
    TakeoverCause,
};

impl RedisQueue {
    pub(super) async fn submit_chunk(
        &self,
        jobs: Vec<NewJob>,
        now: DateTime<Utc>,
    ) -> Result<Submitted, QueueError> {
        let mut invocation = self.invocation(&self.scripts.submit);
        let bulk = jobs.iter().all(|j| j.idempotency_key.is_none() && j.depends_on.is_empty());
        if bulk {
            bulk::submit(&mut invocation, &self.keys, &jobs, now, self.limits.max_queued);
        } else {
            invocation.arg(ms(now) as i64).arg("J").arg(self.limits.max_queued);
            bulk::limit_checks(&mut invocation, &jobs);
            for job in &jobs {
                let status = record::new_status(job, now);
                invocation
                    .arg(job.id.to_string())
                    .arg(&*job.kind)
                    .arg(&*job.queue)
                    .arg(status.index())
                    .arg(bulk::new_score(job, status))
                    .arg(job.idempotency_key.as_deref().unwrap_or(""))
                    .arg(bulk::lane_of(job).unwrap_or_default())
                    .arg(job.depends_on.len());
                for dep in &job.depends_on {
                    invocation.arg(dep.to_string());
                }
                invocation.arg(record::encode_new(job, now));
            }
        }
        // Safe to retry: a second run finds the batch stored and answers it.
        let reply = match self.run_raw(&invocation, true).await {
            Ok(reply) => reply,
            Err(err) => {
                if let Some(queue) = refusal(&err, "queue_full") {
                    let max = self.limits.max_queued;
                    return Err(QueueError::QueueFull { queue: queue.to_owned(), max });
                }
                if let Some(limit) = refusal(&err, "unknown_limit") {
                    return Err(QueueError::UnknownLimit(limit.to_owned()));
                }
                if let Some(why) = refusal(&err, "cost_over_limit") {
                    let mut parts = why.split(',');
                    let (Some(limit), Some(cost), Some(tokens)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        return Err(malformed("cost_over_limit"));
                    };
                    return Err(QueueError::CostOverLimit {
                        limit: limit.to_owned(),
                        cost: cost.parse().map_err(|_| malformed("a cost"))?,
                        tokens: tokens.parse().map_err(|_| malformed("tokens"))?,
                    });
                }
                return Err(match refusal(&err, "unknown_dependency") {
                    Some(id) => {
                        QueueError::UnknownDependency(id.parse().map_err(|_| malformed("an id"))?)
                    }
                    None => redis_error(err),
                });
            }
        };
        let [changes, results] = array(&reply)? else { return Err(malformed("submit")) };
        if text(changes).ok() == Some("stored") {
            // A retried call whose first run did store the batch: read it back.
            let ids: Vec<JobId> = jobs.iter().map(|j| j.id).collect();
            let stored = self.read_jobs(&ids).await?;
            let jobs = stored
                .into_iter()
                .zip(&jobs)
                .map(|(record, job)| SubmitResult {
                    record: record.unwrap_or_else(|| new_record(job, now)),
                    created: true,
                })
                .collect();
            return Ok(Submitted { jobs, changes: Changes::default() });
        }
        let changes = reply::changes(changes)?;
        let mut answered = HashMap::new();
        for result in array(results)? {
            let [asked, created, id, stored, run] = array(result)? else {
                return Err(malformed("result"));
            };
            let id = reply::id(id)?;
            let stored = bytes(stored)?;
            let record = if stored.is_empty() {
                None
            } else {
                Some(read(id, stored, Some(bytes(run)?), false, None)?)
            };
            answered.insert(reply::id(asked)?, (record, int(created)? == 1));
        }
        let jobs = jobs
            .iter()
            .map(|job| match answered.remove(&job.id) {
                Some((Some(record), created)) => SubmitResult { record, created },
                Some((None, created)) => SubmitResult { record: new_record(job, now), created },
                None => SubmitResult { record: new_record(job, now), created: true },
            })
            .collect();
        Ok(Submitted { jobs, changes })
    }

    /// Cancels one job (see `lua/cancel.lua`).
    pub(super) async fn cancel_job(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(CancelOutcome, Changes), QueueError> {
        let mut invocation = self.invocation(&self.scripts.cancel);
        invocation.arg(ms(now) as i64).arg(id.to_string());
        let reply = match self.run_raw(&invocation, false).await {
            Ok(reply) => reply,
            Err(err) => {
                if refusal(&err, "not_found").is_some() {
                    return Err(QueueError::NotFound(id));
                }
                if let Some(status) = refusal(&err, "already_finished") {
                    return Err(QueueError::AlreadyFinished { id, status: reply::status(status)? });
                }
                return Err(redis_error(err));
            }
        };
        let [outcome, stored, run, changes] = array(&reply)? else {
            return Err(malformed("cancel"));
        };
        let requested = text(outcome)? == "requested";
        let record = read(id, bytes(stored)?, Some(bytes(run)?), requested, None)?;
        let changes = reply::changes(changes)?;
        if requested {
            Ok((CancelOutcome::Requested(record), changes))
        } else {
            Ok((CancelOutcome::Cancelled(record), changes))
        }
    }

    /// Jobs per queue and state, from the counters the scripts keep.
    pub(super) async fn counts(&self) -> Result<QueueStats, QueueError> {
        let counts: BTreeMap<String, i64> =
            self.cmd(::redis::cmd("HGETALL").arg(self.keys.counts())).await?;
        let mut stats = QueueStats::new();
        for (field, count) in counts {
            let Some((queue, status)) = field.rsplit_once(':') else { continue };
            let Ok(status) = status.parse::<JobStatus>() else { continue };
            let mut array = [0u64; 7];
            let entry = stats.entry(queue.to_owned()).or_default();
            array[status.index()] = count.max(0) as u64;
            *entry = add_counts(*entry, array);
        }
        Ok(stats)
    }

    /// Queued jobs per kind, from the sizes of the ready sets.
    pub(super) async fn queued_per_kind(&self) -> Result<BTreeMap<String, u64>, QueueError> {
        let mut pipe = ::redis::pipe();
        pipe.cmd("SMEMBERS").arg(self.keys.ready_sets());
        pipe.cmd("SMEMBERS").arg(self.keys.fresh_lists());
        pipe.cmd("SMEMBERS").arg(self.keys.lanes());
        pipe.cmd("SMEMBERS").arg(self.keys.fresh_lanes());
        type Names = Vec<String>;
        let (sets, lists, lanes, fresh_lanes): (Names, Names, Names, Names) =
            self.redis.pipe(&pipe, true).await.map_err(redis_error)?;
        if sets.is_empty() && lists.is_empty() && lanes.is_empty() && fresh_lanes.is_empty() {
            return Ok(BTreeMap::new());
        }
        // The jobs of each ready set and lane (ZCARD), then of each fresh list: its length less
        // the ids cancelled there (LLEN, SCARD of its skips).
        let mut pipe = ::redis::pipe();
        let mut set_kinds: Vec<&str> = Vec::with_capacity(sets.len() + lanes.len());
        for set in &sets {
            let (queue, kind) = set.split_once(':').unwrap_or(("", set));
            pipe.cmd("ZCARD").arg(self.keys.ready(queue, kind));
            set_kinds.push(kind);
        }
        for lane in &lanes {
            pipe.cmd("ZCARD").arg(self.keys.lane(lane));
            // `<queue>|<group>|<limits>|<cost>|<kind>`: the kind is what follows the fourth `|`.
            set_kinds.push(lane.splitn(5, '|').nth(4).unwrap_or(""));
        }
        let mut list_kinds: Vec<&str> = (lists.iter().filter_map(|list| fresh_list_name(list)))
            .map(|(queue, kind, priority)| {
                pipe.cmd("LLEN").arg(self.keys.fresh(queue, kind, priority));
                pipe.cmd("SCARD").arg(self.keys.skips(queue, kind, priority));
                kind
            })
            .collect();
        // Fresh lanes, `<priority>|<lane>`: the same, their kind ending the lane's name.
        for entry in &fresh_lanes {
            let Some((priority, lane)) = entry.split_once('|') else { continue };
            let Ok(priority) = priority.parse::<i32>() else { continue };
            pipe.cmd("LLEN").arg(self.keys.fresh_lane(priority, lane));
            pipe.cmd("SCARD").arg(self.keys.fresh_lane_skips(priority, lane));
            list_kinds.push(lane.splitn(5, '|').nth(4).unwrap_or(""));
        }
        let sizes: Vec<i64> = self.redis.pipe(&pipe, true).await.map_err(redis_error)?;
        let (in_sets, in_lists) = sizes.split_at(set_kinds.len().min(sizes.len()));
        let counted = (set_kinds.into_iter().zip(in_sets.iter().copied()))
            .chain(list_kinds.into_iter().zip(in_lists.chunks_exact(2).map(|n| n[0] - n[1])));
        let mut by_kind = BTreeMap::new();
        for (kind, queued) in counted {
            if queued > 0 {
                *by_kind.entry(kind.to_owned()).or_default() += queued as u64;
            }
        }
        Ok(by_kind)
    }

    /// One periodic script (promote or reap): `{more, changes}`, and from reap the attempts it
    /// took (`{id, kind, worker, ...}`).
    pub(super) async fn step(
        &self,
        script: &super::scripts::Lua,
        now: DateTime<Utc>,
    ) -> Result<Changes, QueueError> {
        let mut invocation = self.invocation(script);
        invocation.arg(ms(now) as i64).arg(STEP_LIMIT);
        let reply = self.run(&invocation, true).await?;
        let (more, changes, taken) = match array(&reply)? {
            [more, changes] => (more, changes, None),
            [more, changes, taken] => (more, changes, Some(taken)),
            _ => return Err(malformed("step")),
        };
        let mut changes = reply::changes(changes)?;
        changes.more = int(more)? == 1;
        if let Some(taken) = taken {
            changes.taken_over = reply::taken(taken, TakeoverCause::LeaseExpired)?;
        }
        Ok(changes)
    }

    pub(super) async fn purge(
        &self,
        now: DateTime<Utc>,
        retention: Duration,
    ) -> Result<bool, QueueError> {
        let cutoff = now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let mut invocation = self.invocation(&self.scripts.purge);
        invocation.arg(ms(now) as i64).arg(ms(cutoff) as i64);
        invocation.arg(self.limits.retention_max_jobs).arg(STEP_LIMIT);
        let reply = self.run(&invocation, true).await?;
        let [more, _removed] = array(&reply)? else { return Err(malformed("purge")) };
        Ok(int(more)? == 1)
    }

    /// The jobs in the index of `id`'s dependents (`deps:<id>`: waiting on it, or not settled
    /// yet since it ended), at most `most`: scanned rather than read whole, so a job with a
    /// huge fan-out costs a bounded read.
    pub(super) async fn dependents_of(
        &self,
        id: JobId,
        most: usize,
    ) -> Result<Vec<JobRecord>, QueueError> {
        let key = self.keys.dependents(&id.to_string());
        let mut found: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let scan = ::redis::cmd("SSCAN").arg(&key).arg(cursor).arg("COUNT").arg(most).clone();
            let (next, ids): (u64, Vec<String>) = self.cmd(&scan).await?;
            found.extend(ids);
            cursor = next;
            if cursor == 0 || found.len() >= most {
                break;
            }
        }
        // A scan may answer a member twice.
        found.sort_unstable();
        found.dedup();
        found.truncate(most);
        let mut ids = vec![id];
        for dependent in &found {
            ids.push(dependent.parse().map_err(|_| malformed("a dependent's id"))?);
        }
        let mut records = self.read_jobs(&ids).await?.into_iter();
        if records.next().flatten().is_none() {
            return Err(QueueError::NotFound(id));
        }
        Ok(records.flatten().collect())
    }

    /// Reads jobs as readers see them (stored records with their running attempts applied), in
    /// one round trip; `None` for a job that does not exist.
    pub(super) async fn read_jobs(
        &self,
        ids: &[JobId],
    ) -> Result<Vec<Option<JobRecord>>, QueueError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let names: Vec<String> = ids.iter().map(|id| id.to_string()).collect();
        let keys: Vec<String> = names.iter().map(|id| self.keys.job(id)).collect();
        let mut pipe = ::redis::pipe();
        pipe.cmd("MGET").arg(&keys);
        pipe.cmd("HMGET").arg(self.keys.run()).arg(&names);
        pipe.cmd("SMISMEMBER").arg(self.keys.cancels()).arg(&names);
        pipe.cmd("HMGET").arg(self.keys.progress()).arg(&names);
        type Replies = (Vec<Option<Vec<u8>>>, Vec<Option<Vec<u8>>>, Vec<i64>, Vec<Option<Vec<u8>>>);
        let (stored, runs, cancels, progress): Replies =
            self.redis.pipe(&pipe, true).await.map_err(redis_error)?;
        let mut out = Vec::with_capacity(ids.len());
        for (i, id) in ids.iter().enumerate() {
            let Some(bytes) = stored.get(i).cloned().flatten() else {
                out.push(None);
                continue;
            };
            let run = runs.get(i).and_then(|r| r.as_deref());
            let cancel = cancels.get(i) == Some(&1);
            let progress = progress.get(i).and_then(|p| p.as_deref());
            out.push(Some(read(*id, &bytes, run, cancel, progress)?));
        }
        Ok(out)
    }
}

/// Decodes a record for readers, with its running attempt applied.
pub(super) fn read(
    id: JobId,
    stored: &[u8],
    run: Option<&[u8]>,
    cancel: bool,
    progress: Option<&[u8]>,
) -> Result<JobRecord, QueueError> {
    record::read(id, stored, run, cancel, progress)
        .map_err(|err| QueueError::Internal(err.to_string()))
}

/// The record of a job stored exactly as submitted, without reading it back.
fn new_record(job: &NewJob, now: DateTime<Utc>) -> JobRecord {
    let now = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
    let run_at = job.run_at.filter(|at| *at > now);
    let status = if run_at.is_some() { JobStatus::Scheduled } else { JobStatus::Queued };
    JobRecord {
        run_at: run_at.and_then(|at| DateTime::from_timestamp_millis(at.timestamp_millis())),
        ..job.to_record(status, now)
    }
}

fn add_counts(counts: StateCounts, more: [u64; 7]) -> StateCounts {
    let mut sum = [0u64; 7];
    for (i, status) in JobStatus::ALL.into_iter().enumerate() {
        sum[i] = counts.get(status) + more[i];
    }
    StateCounts::from_array(sum)
}

/// The queue, kind and priority of a fresh list's name in the registry
/// (`<queue>:<kind>:<priority>`; a queue holds no `:`).
fn fresh_list_name(name: &str) -> Option<(&str, &str, i32)> {
    let (queue, rest) = name.split_once(':')?;
    let (kind, priority) = rest.rsplit_once(':')?;
    Some((queue, kind, priority.parse().ok()?))
}
