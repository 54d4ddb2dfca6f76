//! The Redis queue backend: jobs durable and shared by every instance that uses the same Redis
//! and prefix.
//!
//! Every state transition is one Lua script (`lua/*.lua`, see [`scripts`]) run atomically by
//! Redis over the keys of `crate::redis::keys::QueueKeys`; nothing is popped on the client and
//! pushed back later, so no crash of an instance can lose a job. Hot calls take batches (a
//! submit, a claim, a batch of completions is one script call, one round trip). Time is the
//! caller's clock, passed to each script: instances must agree on the time to well within a
//! lease (see `docs/architecture.md`).
//!
//! The queue has a Redis link of its own ([`RedisClient`] with `RedisSettings::for_queue`): its
//! command timeout is its own setting, and a slow call does not mark the cache's link down.
//! Scripts that change state are retried after a transient failure only when a second run is
//! harmless (fenced by lease tokens, or keyed by job ids); claims and cancels are not retried.

mod bulk;
mod events;
mod listing;
pub mod record;
mod reply;
mod scripts;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ::redis::{ScriptInvocation, Value};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{
    CancelOutcome, Changes, Claim, Claimed, Completion, EventSink, LeaseRef, LeaseState, ListQuery,
    Outcome, Page, QueueBackend, QueueError, QueueStats, StateCounts, SubmitResult, Submitted,
};
use crate::config::Config;
use crate::job::{JobId, JobRecord, JobSpec, JobStatus, Json, NewJob};
use crate::redis::{QueueKeys, RedisClient, RedisError, RedisSettings};
use crate::schedule::{Fire, Schedule};
use record::{ms, Attempt, Ending};
use reply::{array, bytes, int, malformed, redis_error, refusal, text};
use scripts::Scripts;

/// Most jobs a periodic script (promote, reap, purge) handles per call, so that no call holds
/// Redis for long whatever the backlog; a call that reached it says so and is called again.
pub const STEP_LIMIT: usize = 1_000;
/// Most attempts per claim, completion or renewal script call (larger batches are split).
const BATCH: usize = 500;

/// Why the Redis queue cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RedisQueueError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// Redis may evict any key under memory pressure: job records could vanish.
    #[error(
        "Redis's maxmemory-policy is {0}: under memory pressure it may evict any key, job \
         records included. The Redis queue needs noeviction, or a volatile-* policy (which \
         evicts only keys with a TTL: cache entries, never jobs). Set it with \
         `CONFIG SET maxmemory-policy volatile-lru` or in redis.conf"
    )]
    EvictingPolicy(String),
}

/// The Redis [`QueueBackend`]; see the module doc.
pub struct RedisQueue {
    redis: RedisClient,
    keys: QueueKeys,
    scripts: Scripts,
    events: events::Events,
    /// Set when Redis turned out to evict any key (checked when first reached): every call is
    /// then refused with this reason rather than risk losing jobs.
    refused: Arc<OnceLock<String>>,
    /// The attempts this instance runs, by job: the record as claimed and the attempt, so a
    /// completion sends the job's final record without reading it back. Entries leave when the
    /// attempt is recorded, handed back or found lost.
    held: Mutex<HashMap<JobId, Held>>,
    /// A claim failed after it may have run in Redis: before the next claim, take back what a
    /// lost answer gave this instance.
    lost_claim: AtomicBool,
}

/// One attempt this instance runs.
#[derive(Clone)]
struct Held {
    /// The job's record as stored while it runs.
    stored: Vec<u8>,
    /// The attempt's run entry, exactly as stored.
    run: Vec<u8>,
    attempt: Attempt,
    record: JobRecord,
}

impl RedisQueue {
    /// Connects the queue's own Redis link from `config` (`REDIS_URL`, the prefix,
    /// `JOBYARD_QUEUE_TIMEOUT_MS`) and checks Redis's eviction policy. A Redis that is down is
    /// not an error: calls fail with `Unavailable` until it returns, and the policy is checked
    /// then. Must run inside an actix system.
    pub async fn connect(config: &Config) -> Result<Self, RedisQueueError> {
        let settings = RedisSettings::for_queue(config).ok_or_else(|| {
            RedisError::Url("REDIS_URL is not set; the Redis queue needs it".into())
        })?;
        let redis = RedisClient::new(settings)?;
        redis.start().await;
        Self::with_client(redis, &config.redis_prefix).await
    }

    /// A queue over an already started client (tests, or a caller that manages its links).
    pub async fn with_client(redis: RedisClient, prefix: &str) -> Result<Self, RedisQueueError> {
        let refused = Arc::new(OnceLock::new());
        if redis.is_up() {
            check_policy(&redis).await?;
        } else {
            // Checked as soon as Redis is first reached.
            let (redis, refused) = (redis.clone(), refused.clone());
            actix_rt::spawn(async move {
                let mut generation = redis.generation();
                while generation.changed().await.is_ok() {
                    if !redis.is_up() {
                        continue;
                    }
                    if let Err(err) = check_policy(&redis).await {
                        tracing::error!("{err}");
                        let _ = refused.set(err.to_string());
                    }
                    return;
                }
            });
        }
        let keys = QueueKeys::new(prefix);
        let events = events::Events::new(redis.clone(), &keys);
        Ok(RedisQueue {
            redis,
            keys,
            scripts: Scripts::new(),
            events,
            refused,
            held: Mutex::new(HashMap::new()),
            lost_claim: AtomicBool::new(false),
        })
    }

    /// The queue link's figures (round trips, errors, reconnects).
    pub fn link_stats(&self) -> crate::redis::RedisStats {
        self.redis.stats()
    }

    fn invocation<'a>(&self, script: &'a ::redis::Script) -> ScriptInvocation<'a> {
        let mut invocation = script.prepare_invoke();
        invocation.key(self.keys.base());
        invocation
    }

    /// Runs a script, retried after a transient failure only when `retry`.
    async fn run(
        &self,
        invocation: &ScriptInvocation<'_>,
        retry: bool,
    ) -> Result<Value, QueueError> {
        if let Some(reason) = self.refused.get() {
            return Err(QueueError::Unavailable(reason.clone()));
        }
        self.redis.script_with(invocation, retry).await.map_err(redis_error)
    }

    /// Runs a script and returns its raw error when it failed, so refusals can be read.
    async fn run_raw(
        &self,
        invocation: &ScriptInvocation<'_>,
        retry: bool,
    ) -> Result<Value, RedisError> {
        if let Some(reason) = self.refused.get() {
            return Err(RedisError::Link(reason.clone()));
        }
        self.redis.script_with(invocation, retry).await
    }

    async fn cmd<T: ::redis::FromRedisValue>(&self, cmd: &::redis::Cmd) -> Result<T, QueueError> {
        self.redis.cmd(cmd, true).await.map_err(redis_error)
    }

    async fn submit_chunk(
        &self,
        jobs: Vec<NewJob>,
        now: DateTime<Utc>,
    ) -> Result<Submitted, QueueError> {
        let mut invocation = self.invocation(&self.scripts.submit);
        let bulk = jobs.iter().all(|j| j.idempotency_key.is_none() && j.depends_on.is_empty());
        if bulk {
            bulk::submit(&mut invocation, &self.keys, &jobs, now);
        } else {
            invocation.arg(ms(now) as i64).arg("J");
            for job in &jobs {
                let status = record::new_status(job, now);
                invocation
                    .arg(job.id.to_string())
                    .arg(&*job.kind)
                    .arg(&*job.queue)
                    .arg(status.index())
                    .arg(bulk::new_score(job, status))
                    .arg(job.idempotency_key.as_deref().unwrap_or(""))
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
                return Err(match refusal(&err, "unknown_dependency") {
                    Some(id) => {
                        QueueError::UnknownDependency(id.parse().map_err(|_| malformed("an id"))?)
                    }
                    None => redis_error(err),
                })
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

    async fn claim_chunk(
        &self,
        workers: &[Arc<str>],
        claim: &Claim,
        now: DateTime<Utc>,
    ) -> Result<Vec<Claimed>, QueueError> {
        let mut invocation = self.invocation(&self.scripts.claim);
        invocation.arg(ms(now) as i64).arg(claim.lease.as_millis() as u64).arg(workers.len());
        for worker in workers {
            invocation.arg(&**worker);
        }
        for kind in claim.kinds.iter() {
            invocation.arg(&**kind);
        }
        // Not retried: the jobs of a lost answer run again after their lease.
        let reply = self.run(&invocation, false).await?;
        let items = array(&reply)?;
        let mut claimed = Vec::with_capacity(items.len() / 3);
        let mut held = Vec::with_capacity(items.len() / 3);
        for triple in items.get(1..).unwrap_or_default().chunks_exact(3) {
            let id = reply::id(&triple[0])?;
            let stored = bytes(&triple[1])?;
            let run = bytes(&triple[2])?;
            let attempt = Attempt::parse(run).ok_or_else(|| malformed("a running attempt"))?;
            let record = read(id, stored, Some(run), false, None)?;
            let lease = LeaseRef { id, token: attempt.token };
            claimed.push(Claimed { record: record.clone(), lease });
            let held_attempt = Held { stored: stored.to_vec(), run: run.to_vec(), attempt, record };
            held.push((id, held_attempt));
        }
        self.held().extend(held);
        Ok(claimed)
    }

    async fn complete_chunk(
        &self,
        done: &[Completion],
        now: DateTime<Utc>,
    ) -> Result<Changes, QueueError> {
        let mut ends = Vec::with_capacity(done.len());
        let mut missing = Vec::new();
        {
            let held = self.held();
            for completion in done {
                let lease = completion.lease;
                match held.get(&lease.id).filter(|h| h.attempt.token == lease.token) {
                    Some(held) => ends.push(ending(lease, held, &completion.outcome, now, false)?),
                    None => missing.push(completion),
                }
            }
        }
        // Attempts this instance no longer holds (a retried call after a lost answer, say):
        // read the job back to build its ending; the script refuses a stale one.
        let mut changes = Changes::default();
        for completion in missing {
            let lease = completion.lease;
            match self.read_held(lease).await? {
                Some(held) => ends.push(ending(lease, &held, &completion.outcome, now, false)?),
                None => changes.stale += 1,
            }
        }
        // The script refuses a batch holding stale attempts, or jobs whose cancel was
        // requested meanwhile: those are dropped or made cancelled, and the rest sent again.
        while !ends.is_empty() {
            let mut invocation = self.invocation(&self.scripts.complete);
            bulk::complete(&mut invocation, &self.keys, &ends, now);
            let reply = self.run(&invocation, true).await?;
            let items = array(&reply)?;
            match items {
                [outcome, recorded] if text(outcome)? == "done" => {
                    reply::merge(&mut changes, reply::changes(recorded)?);
                    break;
                }
                [_, stale, cancelled] => {
                    let positions = |v: &Value| -> Result<Vec<usize>, QueueError> {
                        array(v)?.iter().map(|p| Ok(int(p)? as usize - 1)).collect()
                    };
                    for at in positions(cancelled)? {
                        // A cancel was requested meanwhile: the job ends cancelled unless it
                        // succeeded, with the request on its record either way.
                        let lease = LeaseRef { id: ends[at].id, token: ends[at].token };
                        let outcome = match done.iter().find(|c| c.lease == lease) {
                            Some(c) if matches!(c.outcome, Outcome::Succeeded(_)) => {
                                c.outcome.clone()
                            }
                            _ => Outcome::Cancelled("cancelled".into()),
                        };
                        let held = self.held().get(&lease.id).cloned();
                        let held = match held {
                            Some(held) => held,
                            None => match self.read_held(lease).await? {
                                Some(held) => held,
                                None => continue,
                            },
                        };
                        ends[at] = ending(lease, &held, &outcome, now, true)?;
                    }
                    let stale = positions(stale)?;
                    changes.stale += stale.len();
                    let mut at = 0;
                    ends.retain(|_| {
                        at += 1;
                        !stale.contains(&(at - 1))
                    });
                }
                _ => return Err(malformed("complete")),
            }
        }
        let mut held = self.held();
        for completion in done {
            held.remove(&completion.lease.id);
        }
        Ok(changes)
    }

    /// Takes back the jobs a claim whose answer was lost gave this instance (see
    /// `lua/recover.lua`): those whose attempt names one of its slots under a token it does not
    /// hold.
    async fn recover(&self, claim: &Claim, now: DateTime<Utc>) -> Result<(), QueueError> {
        let Some(prefix) = claim.workers.first().and_then(|w| w.rsplit_once('/')) else {
            return Ok(());
        };
        let tokens: BTreeSet<u64> = self.held().values().map(|h| h.attempt.token).collect();
        let mut invocation = self.invocation(&self.scripts.recover);
        invocation.arg(ms(now) as i64).arg(format!("{}/", prefix.0));
        for token in tokens {
            invocation.arg(token);
        }
        let reply = self.run(&invocation, true).await?;
        let [recovered, _] = array(&reply)? else { return Err(malformed("recover")) };
        let recovered = int(recovered)?;
        if recovered > 0 {
            tracing::warn!(recovered, "claimed jobs whose answer was lost went back to queued");
        }
        self.lost_claim.store(false, Ordering::Release);
        Ok(())
    }

    /// The attempt `lease` as stored in Redis, when its job still runs under it.
    async fn read_held(&self, lease: LeaseRef) -> Result<Option<Held>, QueueError> {
        let id = lease.id.to_string();
        let mut pipe = ::redis::pipe();
        pipe.cmd("GET").arg(self.keys.job(&id)).cmd("HGET").arg(self.keys.run()).arg(&id);
        let (stored, run): (Option<Vec<u8>>, Option<Vec<u8>>) =
            self.redis.pipe(&pipe, true).await.map_err(redis_error)?;
        let (Some(stored), Some(run)) = (stored, run) else { return Ok(None) };
        let Some(attempt) = Attempt::parse(&run).filter(|a| a.token == lease.token) else {
            return Ok(None);
        };
        let record = read(lease.id, &stored, Some(&run), false, None)?;
        Ok(Some(Held { stored, run, attempt, record }))
    }

    fn held(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Held>> {
        self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    async fn release_chunk(
        &self,
        leases: &[LeaseRef],
        now: DateTime<Utc>,
    ) -> Result<Changes, QueueError> {
        let mut invocation = self.invocation(&self.scripts.release);
        invocation.arg(ms(now) as i64);
        for lease in leases {
            invocation.arg(lease.id.to_string()).arg(lease.token);
        }
        let reply = self.run(&invocation, true).await?;
        let changes = stale_and_changes(&reply)?;
        let mut held = self.held();
        for lease in leases {
            held.remove(&lease.id);
        }
        Ok(changes)
    }

    async fn renew_chunk(
        &self,
        leases: &[LeaseRef],
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<LeaseState>, QueueError> {
        let mut invocation = self.invocation(&self.scripts.renew);
        invocation.arg(ms(now) as i64).arg(lease.as_millis() as u64);
        for lease in leases {
            invocation.arg(lease.id.to_string()).arg(lease.token);
        }
        let reply = self.run(&invocation, true).await?;
        let states = text(&reply)?
            .bytes()
            .map(|state| match state {
                b'A' => Ok(LeaseState::Active),
                b'C' => Ok(LeaseState::CancelRequested),
                b'L' => Ok(LeaseState::Lost),
                _ => Err(malformed("a lease state")),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut held = self.held();
        for (lease, state) in leases.iter().zip(&states) {
            if *state == LeaseState::Lost {
                held.remove(&lease.id);
            }
        }
        Ok(states)
    }

    /// One periodic script (promote or reap): `{more, changes}`.
    async fn step(
        &self,
        script: &::redis::Script,
        now: DateTime<Utc>,
    ) -> Result<Changes, QueueError> {
        let mut invocation = self.invocation(script);
        invocation.arg(ms(now) as i64).arg(STEP_LIMIT);
        let reply = self.run(&invocation, true).await?;
        let [more, changes] = array(&reply)? else { return Err(malformed("step")) };
        let mut changes = reply::changes(changes)?;
        changes.more = int(more)? == 1;
        Ok(changes)
    }

    async fn purge(&self, now: DateTime<Utc>, retention: Duration) -> Result<bool, QueueError> {
        let cutoff = now - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let mut invocation = self.invocation(&self.scripts.purge);
        invocation.arg(ms(now) as i64).arg(ms(cutoff) as i64).arg(0).arg(STEP_LIMIT);
        let reply = self.run(&invocation, true).await?;
        let [more, _removed] = array(&reply)? else { return Err(malformed("purge")) };
        Ok(int(more)? == 1)
    }

    /// Reads jobs as readers see them (stored records with their running attempts applied), in
    /// one round trip; `None` for a job that does not exist.
    async fn read_jobs(&self, ids: &[JobId]) -> Result<Vec<Option<JobRecord>>, QueueError> {
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

    async fn read_schedule(&self, name: &str) -> Result<Option<Schedule>, QueueError> {
        let fields: BTreeMap<String, String> =
            self.cmd(::redis::cmd("HGETALL").arg(self.keys.schedule(name))).await?;
        stored_schedule(name, &fields)
    }
}

/// Checks that Redis cannot evict job records (its `maxmemory-policy`, read from `INFO memory`,
/// which managed services that refuse `CONFIG` still answer).
async fn check_policy(redis: &RedisClient) -> Result<(), RedisQueueError> {
    let info: Result<String, _> = redis.cmd(::redis::cmd("INFO").arg("memory"), true).await;
    match info {
        Ok(info) => {
            let policy = info.lines().find_map(|l| l.strip_prefix("maxmemory_policy:"));
            match policy.map(str::trim).filter(|p| evicts_job_records(p)) {
                Some(policy) => Err(RedisQueueError::EvictingPolicy(policy.to_owned())),
                None => Ok(()),
            }
        }
        Err(err) => {
            tracing::warn!("cannot read Redis's maxmemory-policy ({err}); make sure it is noeviction or volatile-*, or Redis may evict job records");
            Ok(())
        }
    }
}

/// Whether a `maxmemory-policy` may evict keys without a TTL, job records among them.
pub fn evicts_job_records(policy: &str) -> bool {
    policy.starts_with("allkeys-")
}

/// The ending of the attempt `held` with `outcome`: its new status and final record.
fn ending(
    lease: LeaseRef,
    held: &Held,
    outcome: &Outcome,
    now: DateTime<Utc>,
    cancel_requested: bool,
) -> Result<bulk::End, QueueError> {
    let record = &held.record;
    let (status, run_at, error, result) = match outcome {
        Outcome::Succeeded(result) => (JobStatus::Succeeded, None, None, Some(result.get())),
        Outcome::Failed { error, retry_at: Some(at) } if record.attempts < record.max_attempts => {
            let status = if *at > now { JobStatus::Scheduled } else { JobStatus::Queued };
            (status, Some(*at), Some(error.as_str()), None)
        }
        Outcome::Failed { error, .. } => (JobStatus::Failed, None, Some(error.as_str()), None),
        Outcome::Cancelled(reason) => (JobStatus::Cancelled, None, Some(reason.as_str()), None),
    };
    let score = match status {
        JobStatus::Scheduled => run_at.map_or(0, |at| ms(at) as u64),
        JobStatus::Queued => bulk::ready_score(lease.id, record.priority),
        _ => 0,
    };
    let end = Ending { status, now, run_at, error, result, cancel_requested };
    let blob = record::ended(lease.id, &held.stored, &held.attempt, end)
        .map_err(|err| QueueError::Internal(err.to_string()))?;
    Ok(bulk::End {
        id: lease.id,
        token: lease.token,
        run: held.run.clone(),
        queue: record.queue.clone(),
        kind: record.kind.clone(),
        status,
        score,
        record: blob,
    })
}

/// Decodes a record for readers, with its running attempt applied.
fn read(
    id: JobId,
    stored: &[u8],
    run: Option<&[u8]>,
    cancel: bool,
    progress: Option<&[u8]>,
) -> Result<JobRecord, QueueError> {
    record::read(id, stored, run, cancel, progress)
        .map_err(|err| QueueError::Internal(err.to_string()))
}

/// `{stale count, changes}`.
fn stale_and_changes(reply: &Value) -> Result<Changes, QueueError> {
    let [stale, changes] = array(reply)? else { return Err(malformed("changes")) };
    let mut changes = reply::changes(changes)?;
    changes.stale = int(stale)?.max(0) as usize;
    Ok(changes)
}

/// The record of a job stored exactly as submitted, without reading it back.
fn new_record(job: &NewJob, now: DateTime<Utc>) -> JobRecord {
    let now = DateTime::from_timestamp_millis(now.timestamp_millis()).unwrap_or(now);
    let run_at = job.run_at.filter(|at| *at > now);
    JobRecord {
        id: job.id,
        kind: job.kind.clone(),
        payload: job.payload.clone(),
        queue: job.queue.clone(),
        priority: job.priority,
        status: if run_at.is_some() { JobStatus::Scheduled } else { JobStatus::Queued },
        attempts: 0,
        max_attempts: job.max_attempts,
        backoff: job.backoff,
        timeout_ms: job.timeout_ms,
        run_at: run_at.and_then(|at| DateTime::from_timestamp_millis(at.timestamp_millis())),
        depends_on: job.depends_on.clone(),
        idempotency_key: job.idempotency_key.clone(),
        created_at: now,
        updated_at: now,
        started_at: None,
        finished_at: None,
        result: None,
        error: None,
        cancel_requested: false,
        worker: None,
        progress: None,
    }
}

/// The parts of a schedule stored as one JSON document (the rest are fields of its hash).
#[derive(Serialize, Deserialize)]
struct ScheduleDoc {
    cron: String,
    timezone: String,
    job: JobSpec,
    catch_up: bool,
    updated_at: DateTime<Utc>,
}

fn stored_schedule(
    name: &str,
    fields: &BTreeMap<String, String>,
) -> Result<Option<Schedule>, QueueError> {
    let Some(spec) = fields.get("spec") else { return Ok(None) };
    let doc: ScheduleDoc = serde_json::from_str(spec)
        .map_err(|err| QueueError::Internal(format!("schedule '{name}' unreadable: {err}")))?;
    let time = |field: &str| {
        fields
            .get(field)
            .and_then(|v| v.parse::<i64>().ok())
            .and_then(DateTime::from_timestamp_millis)
    };
    Ok(Some(Schedule {
        name: name.to_owned(),
        cron: doc.cron,
        timezone: doc.timezone,
        job: doc.job,
        catch_up: doc.catch_up,
        created_at: time("created").unwrap_or(doc.updated_at),
        updated_at: doc.updated_at,
        next_run_at: time("next"),
        last_run_at: time("last"),
        last_job_id: fields.get("last_job").and_then(|id| id.parse().ok()),
    }))
}

#[async_trait]
impl QueueBackend for RedisQueue {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn submit(&self, jobs: Vec<NewJob>, now: DateTime<Utc>) -> Result<Submitted, QueueError> {
        // A batch is at most 1000 jobs (the API's bound): one script call, all or nothing.
        self.submit_chunk(jobs, now).await
    }

    async fn dequeue(&self, claim: Claim, now: DateTime<Utc>) -> Result<Vec<Claimed>, QueueError> {
        if self.lost_claim.load(Ordering::Acquire) {
            self.recover(&claim, now).await?;
        }
        let mut claimed = Vec::with_capacity(claim.workers.len());
        for workers in claim.workers.chunks(BATCH) {
            let got = match self.claim_chunk(workers, &claim, now).await {
                Ok(got) => got,
                Err(err) => {
                    // Redis may have run it and the answer be lost.
                    self.lost_claim.store(true, Ordering::Release);
                    return Err(err);
                }
            };
            let short = got.len() < workers.len();
            claimed.extend(got);
            if short {
                break;
            }
        }
        Ok(claimed)
    }

    async fn complete(
        &self,
        done: Vec<Completion>,
        now: DateTime<Utc>,
    ) -> Result<Changes, QueueError> {
        let mut changes = Changes::default();
        for chunk in done.chunks(BATCH) {
            reply::merge(&mut changes, self.complete_chunk(chunk, now).await?);
        }
        Ok(changes)
    }

    async fn renew(
        &self,
        leases: Vec<LeaseRef>,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<LeaseState>, QueueError> {
        let mut states = Vec::with_capacity(leases.len());
        for chunk in leases.chunks(BATCH) {
            states.extend(self.renew_chunk(chunk, lease, now).await?);
        }
        Ok(states)
    }

    async fn release(
        &self,
        leases: Vec<LeaseRef>,
        now: DateTime<Utc>,
    ) -> Result<Changes, QueueError> {
        let mut changes = Changes::default();
        for chunk in leases.chunks(BATCH) {
            reply::merge(&mut changes, self.release_chunk(chunk, now).await?);
        }
        Ok(changes)
    }

    async fn report_progress(
        &self,
        lease: LeaseRef,
        progress: Json,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        let _ = now;
        let mut invocation = self.invocation(&self.scripts.progress);
        invocation.arg(lease.id.to_string()).arg(lease.token).arg(progress.get());
        self.run(&invocation, true).await.map(|_| ())
    }

    async fn cancel(
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

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, QueueError> {
        Ok(self.read_jobs(&[id]).await?.pop().flatten())
    }

    async fn list(&self, query: &ListQuery) -> Result<Page, QueueError> {
        listing::list(self, query).await
    }

    async fn tick(&self, now: DateTime<Utc>, retention: Duration) -> Result<Changes, QueueError> {
        // Sent together, so they share a round trip on the multiplexed connection.
        let (promoted, reaped, purged) = tokio::join!(
            self.step(&self.scripts.promote, now),
            self.step(&self.scripts.reap, now),
            self.purge(now, retention)
        );
        let mut changes = promoted?;
        reply::merge(&mut changes, reaped?);
        changes.more |= purged?;
        Ok(changes)
    }

    async fn stats(&self) -> Result<QueueStats, QueueError> {
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

    async fn queued_by_kind(&self) -> Result<BTreeMap<String, u64>, QueueError> {
        let sets: Vec<String> =
            self.cmd(::redis::cmd("SMEMBERS").arg(self.keys.ready_sets())).await?;
        if sets.is_empty() {
            return Ok(BTreeMap::new());
        }
        let mut pipe = ::redis::pipe();
        for set in &sets {
            let (queue, kind) = set.split_once(':').unwrap_or(("", set));
            pipe.cmd("ZCARD").arg(self.keys.ready(queue, kind));
        }
        let sizes: Vec<u64> = self.redis.pipe(&pipe, true).await.map_err(redis_error)?;
        let mut by_kind = BTreeMap::new();
        for (set, size) in sets.iter().zip(sizes) {
            let kind = set.split_once(':').map_or(set.as_str(), |(_, kind)| kind);
            if size > 0 {
                *by_kind.entry(kind.to_owned()).or_default() += size;
            }
        }
        Ok(by_kind)
    }

    async fn ping(&self) -> Result<(), QueueError> {
        if let Some(reason) = self.refused.get() {
            return Err(QueueError::Unavailable(reason.clone()));
        }
        let _: String = self.cmd(&::redis::cmd("PING")).await?;
        Ok(())
    }

    async fn put_schedule(&self, schedule: Schedule) -> Result<bool, QueueError> {
        let doc = ScheduleDoc {
            cron: schedule.cron,
            timezone: schedule.timezone,
            job: schedule.job,
            catch_up: schedule.catch_up,
            updated_at: schedule.updated_at,
        };
        let doc =
            serde_json::to_string(&doc).map_err(|err| QueueError::Internal(err.to_string()))?;
        let mut invocation = self.invocation(&self.scripts.schedule_put);
        invocation
            .arg(&schedule.name)
            .arg(doc)
            .arg(schedule.created_at.timestamp_millis())
            .arg(schedule.next_run_at.map_or(String::new(), |t| t.timestamp_millis().to_string()));
        let created = self.run(&invocation, true).await?;
        Ok(int(&created)? == 1)
    }

    async fn get_schedule(&self, name: &str) -> Result<Option<Schedule>, QueueError> {
        self.read_schedule(name).await
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>, QueueError> {
        let mut names: Vec<String> =
            self.cmd(::redis::cmd("SMEMBERS").arg(self.keys.schedules())).await?;
        names.sort();
        let mut schedules = Vec::with_capacity(names.len());
        for name in names {
            if let Some(schedule) = self.read_schedule(&name).await? {
                schedules.push(schedule);
            }
        }
        Ok(schedules)
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool, QueueError> {
        let mut pipe = ::redis::pipe();
        pipe.atomic()
            .cmd("DEL")
            .arg(self.keys.schedule(name))
            .cmd("SREM")
            .arg(self.keys.schedules())
            .arg(name);
        let (deleted, _): (i64, i64) = self.redis.pipe(&pipe, true).await.map_err(redis_error)?;
        Ok(deleted == 1)
    }

    async fn record_fire(&self, name: &str, fire: Fire) -> Result<(), QueueError> {
        let millis = |t: Option<DateTime<Utc>>| {
            t.map_or(String::new(), |t| t.timestamp_millis().to_string())
        };
        let mut invocation = self.invocation(&self.scripts.schedule_fire);
        invocation
            .arg(name)
            .arg(millis(fire.next_run_at))
            .arg(millis(fire.fired.map(|(tick, _)| tick)))
            .arg(fire.fired.map_or(String::new(), |(_, job)| job.to_string()));
        match self.run_raw(&invocation, true).await {
            Ok(_) => Ok(()),
            Err(err) if refusal(&err, "not_found").is_some() => {
                Err(QueueError::ScheduleNotFound(name.to_owned()))
            }
            Err(err) => Err(redis_error(err)),
        }
    }

    fn shared(&self) -> bool {
        true
    }

    fn listen(&self, sink: EventSink) {
        self.events.listen(sink);
    }

    async fn wait_for_work(&self, timeout: Duration) -> Result<bool, QueueError> {
        self.events.wait_for_work(timeout).await
    }

    async fn watch(&self, id: JobId, until: DateTime<Utc>) -> Result<(), QueueError> {
        let cmd = ::redis::cmd("ZADD")
            .arg(self.keys.watch())
            .arg(ms(until) as i64)
            .arg(id.to_string())
            .to_owned();
        let _: i64 = self.cmd(&cmd).await?;
        Ok(())
    }
}

fn add_counts(counts: StateCounts, more: [u64; 7]) -> StateCounts {
    let mut sum = [0u64; 7];
    for (i, status) in JobStatus::ALL.into_iter().enumerate() {
        sum[i] = counts.get(status) + more[i];
    }
    StateCounts::from_array(sum)
}
