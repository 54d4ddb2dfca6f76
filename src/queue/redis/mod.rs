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

mod events;
mod listing;
pub mod record;
mod reply;
mod scripts;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
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
use record::ms;
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
        Ok(RedisQueue { redis, keys, scripts: Scripts::new(), events, refused })
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
        invocation.arg(ms(now) as i64);
        for job in &jobs {
            invocation
                .arg(job.id.to_string())
                .arg(&*job.kind)
                .arg(&*job.queue)
                .arg(job.priority)
                .arg(job.run_at.filter(|at| *at > now).map_or(0, |at| ms(at) as i64))
                .arg(job.idempotency_key.as_deref().unwrap_or(""))
                .arg(job.depends_on.len());
            for dep in &job.depends_on {
                invocation.arg(dep.to_string());
            }
            invocation.arg(record::encode_new(job, now));
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
        let changes = reply::changes(changes)?;
        let mut out = Vec::with_capacity(jobs.len());
        for (job, result) in jobs.iter().zip(array(results)?) {
            let [created, id, stored] = array(result)? else { return Err(malformed("result")) };
            let id = reply::id(id)?;
            let stored = bytes(stored)?;
            let record = if stored.is_empty() {
                new_record(job, now)
            } else {
                record::decode(id, stored).map_err(|err| QueueError::Internal(err.to_string()))?
            };
            out.push(SubmitResult { record, created: int(created)? == 1 });
        }
        Ok(Submitted { jobs: out, changes })
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
        let mut claimed = Vec::new();
        for item in array(&reply)? {
            let [id, stored, token] = array(item)? else { return Err(malformed("claim")) };
            let id = reply::id(id)?;
            let record = record::decode(id, bytes(stored)?)
                .map_err(|err| QueueError::Internal(err.to_string()))?;
            claimed.push(Claimed { record, lease: LeaseRef { id, token: int(token)? as u64 } });
        }
        Ok(claimed)
    }

    async fn complete_chunk(
        &self,
        done: &[Completion],
        now: DateTime<Utc>,
    ) -> Result<Changes, QueueError> {
        let mut invocation = self.invocation(&self.scripts.complete);
        invocation.arg(ms(now) as i64);
        for completion in done {
            invocation.arg(completion.lease.id.to_string()).arg(completion.lease.token);
            match &completion.outcome {
                Outcome::Succeeded(result) => invocation.arg("s").arg(result.get()),
                Outcome::Failed { error, retry_at } => invocation
                    .arg("f")
                    .arg(error.as_str())
                    .arg(retry_at.map_or(0, |at| (ms(at) as i64).max(1))),
                Outcome::Cancelled(reason) => invocation.arg("c").arg(reason.as_str()),
            };
        }
        let reply = self.run(&invocation, true).await?;
        stale_and_changes(&reply)
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
        stale_and_changes(&reply)
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
        text(&reply)?
            .bytes()
            .map(|state| match state {
                b'A' => Ok(LeaseState::Active),
                b'C' => Ok(LeaseState::CancelRequested),
                b'L' => Ok(LeaseState::Lost),
                _ => Err(malformed("a lease state")),
            })
            .collect()
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

    async fn read_schedule(&self, name: &str) -> Result<Option<Schedule>, QueueError> {
        let fields: BTreeMap<String, String> =
            self.cmd(::redis::cmd("HGETALL").arg(self.keys.schedule(name))).await?;
        stored_schedule(name, &fields)
    }
}

/// Checks that Redis cannot evict job records. A Redis that refuses `CONFIG` (a managed
/// service) is trusted, with a warning.
async fn check_policy(redis: &RedisClient) -> Result<(), RedisQueueError> {
    let policy: Result<Vec<String>, _> =
        redis.cmd(::redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy"), true).await;
    match policy {
        Ok(pair) => match pair.get(1) {
            Some(policy) if policy.starts_with("allkeys-") => {
                Err(RedisQueueError::EvictingPolicy(policy.clone()))
            }
            _ => Ok(()),
        },
        Err(err) => {
            tracing::warn!("cannot read Redis's maxmemory-policy ({err}); make sure it is noeviction or volatile-*, or Redis may evict job records");
            Ok(())
        }
    }
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
        let mut claimed = Vec::with_capacity(claim.workers.len());
        for workers in claim.workers.chunks(BATCH) {
            let got = self.claim_chunk(workers, &claim, now).await?;
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
        let mut invocation = self.invocation(&self.scripts.progress);
        invocation
            .arg(ms(now) as i64)
            .arg(lease.id.to_string())
            .arg(lease.token)
            .arg(progress.get());
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
        let [outcome, stored, changes] = array(&reply)? else { return Err(malformed("cancel")) };
        let record = record::decode(id, bytes(stored)?)
            .map_err(|err| QueueError::Internal(err.to_string()))?;
        let changes = reply::changes(changes)?;
        match text(outcome)? {
            "requested" => Ok((CancelOutcome::Requested(record), changes)),
            _ => Ok((CancelOutcome::Cancelled(record), changes)),
        }
    }

    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, QueueError> {
        let stored: Option<Vec<u8>> =
            self.cmd(::redis::cmd("GET").arg(self.keys.job(&id.to_string()))).await?;
        stored
            .map(|bytes| {
                record::decode(id, &bytes).map_err(|err| QueueError::Internal(err.to_string()))
            })
            .transpose()
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
