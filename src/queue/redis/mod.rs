//! The Redis queue backend: jobs durable and shared by every instance that uses the same Redis
//! and prefix.
//!
//! Every state transition is one Lua script (`lua/*.lua`, see `scripts.rs`) run atomically by
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

mod attempts;
mod bulk;
mod events;
mod flow;
mod history;
mod instances;
mod jobs;
mod listing;
mod ops;
mod record;
mod reply;
mod schedules;
mod scripts;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ::redis::Value;
use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::flow::{Claims, GroupWeight, Limit, LimitSpec, QueueInfo};
use super::history::{Bucket, Counts};
use super::{
    CancelOutcome, Changes, Claim, Completion, EventSink, FeedSink, InstanceInfo, LeaseRef,
    LeaseState, ListQuery, Page, QueueBackend, QueueError, QueueLimits, QueueStats, Registration,
    Submitted, TakeoverCounts,
};
use crate::config::Config;
use crate::job::{JobId, JobRecord, Json, NewJob};
use crate::redis::{QueueKeys, RedisClient, RedisError, RedisSettings};
use crate::schedule::{Fire, Schedule};
use record::{ms, Attempt};
use reply::redis_error;
use scripts::{Call, Scripts};

pub use super::STEP_LIMIT;
/// Most attempts per claim, completion or renewal script call (larger batches are split).
const BATCH: usize = 500;

/// Why the Redis queue cannot be used.
#[derive(Debug, Clone, thiserror::Error)]
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
    /// Claims in flight. A lost claim's jobs are taken back only by a claim with no other in
    /// flight (jobs another claim was given, its answer on its way, would look lost too), and
    /// claims that start meanwhile wait until that is done (`recovering`).
    claiming: AtomicUsize,
    recovering: tokio::sync::Mutex<()>,
    limits: QueueLimits,
}

/// Counts a claim in flight while it lives (also when its future is dropped).
struct InFlight<'a>(&'a AtomicUsize);

impl<'a> InFlight<'a> {
    /// Counts one more claim; also returns how many are in flight with it.
    fn enter(count: &'a AtomicUsize) -> (Self, usize) {
        let now = count.fetch_add(1, Ordering::AcqRel) + 1;
        (InFlight(count), now)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One attempt this instance runs.
#[derive(Clone)]
struct Held {
    /// The job's record as stored while it runs.
    stored: Vec<u8>,
    /// The attempt's run entry, exactly as stored.
    run: Vec<u8>,
    attempt: Attempt,
    /// What its ending is built from.
    job: HeldJob,
}

/// The fields of a running job's record that decide how its attempt ends.
#[derive(Clone)]
struct HeldJob {
    attempts: u32,
    max_attempts: u32,
    priority: i32,
    queue: Arc<str>,
    kind: Arc<str>,
    /// Its lane when queued again (it names a group or limits).
    lane: Option<Arc<str>>,
    /// The limits it runs under.
    limits: Arc<[Arc<str>]>,
}

impl HeldJob {
    fn of(record: &JobRecord) -> Self {
        let (queue, kind, group) = (&record.queue, &record.kind, record.group.as_deref());
        HeldJob {
            attempts: record.attempts,
            max_attempts: record.max_attempts,
            priority: record.priority,
            queue: record.queue.clone(),
            kind: record.kind.clone(),
            lane: bulk::lane(queue, kind, group, &record.limits, record.cost).map(Arc::from),
            limits: record.limits.clone(),
        }
    }
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
        let queue = Self::with_client(redis, &config.redis_prefix).await?;
        Ok(queue.with_limits(QueueLimits::from_config(config)))
    }

    /// The same queue, keeping `limits`.
    pub fn with_limits(mut self, limits: QueueLimits) -> Self {
        self.limits = limits;
        self
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
            claiming: AtomicUsize::new(0),
            recovering: tokio::sync::Mutex::new(()),
            limits: QueueLimits::default(),
        })
    }

    /// The queue link's figures (round trips, errors, reconnects).
    pub fn link_stats(&self) -> crate::redis::RedisStats {
        self.redis.stats()
    }

    fn invocation<'a>(&self, lua: &'a scripts::Lua) -> Call<'a> {
        Call::new(lua, self.keys.base())
    }

    /// Runs a script, retried after a transient failure only when `retry`.
    async fn run(&self, call: &Call<'_>, retry: bool) -> Result<Value, QueueError> {
        self.run_raw(call, retry).await.map_err(redis_error)
    }

    /// Runs a script and returns its raw error when it failed, so refusals can be read.
    async fn run_raw(&self, call: &Call<'_>, retry: bool) -> Result<Value, RedisError> {
        if let Some(reason) = self.refused.get() {
            return Err(RedisError::Link(reason.clone()));
        }
        self.redis.eval(&call.cmd, &call.lua.source, retry).await
    }

    async fn cmd<T: ::redis::FromRedisValue>(&self, cmd: &::redis::Cmd) -> Result<T, QueueError> {
        self.redis.cmd(cmd, true).await.map_err(redis_error)
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

#[async_trait]
impl QueueBackend for RedisQueue {
    fn name(&self) -> &'static str {
        "redis"
    }

    async fn submit(&self, jobs: Vec<NewJob>, now: DateTime<Utc>) -> Result<Submitted, QueueError> {
        // A batch is at most 1000 jobs (the API's bound): one script call, all or nothing.
        self.submit_chunk(jobs, now).await
    }

    async fn claim(&self, claim: Claim, now: DateTime<Utc>) -> Result<Claims, QueueError> {
        let (_in_flight, claims) = InFlight::enter(&self.claiming);
        if self.lost_claim.load(Ordering::Acquire) {
            let _recovering = self.recovering.lock().await;
            if claims == 1 && self.lost_claim.load(Ordering::Acquire) {
                self.recover(&claim, now).await?;
            }
        }
        let mut claimed = Vec::with_capacity(claim.workers.len());
        let mut retry_at = None;
        for workers in claim.workers.chunks(BATCH) {
            let (got, free_at) = match self.claim_chunk(workers, &claim, now).await {
                Ok(got) => got,
                Err(err) => {
                    // Redis may have run it and the answer be lost.
                    self.lost_claim.store(true, Ordering::Release);
                    return Err(err);
                }
            };
            retry_at = free_at.and_then(DateTime::from_timestamp_millis);
            let short = got.len() < workers.len();
            claimed.extend(got);
            if short {
                break;
            }
        }
        Ok(Claims { jobs: claimed, retry_at })
    }

    async fn complete(
        &self,
        done: Vec<Completion>,
        now: DateTime<Utc>,
    ) -> Result<Changes, QueueError> {
        // An attempt named twice counts once, the first time; the rest is stale (the scripts
        // check every attempt against what is stored before writing any).
        let mut seen = HashSet::new();
        let (done, repeated): (Vec<_>, Vec<_>) =
            done.into_iter().partition(|c| seen.insert(c.lease));
        let mut changes = Changes { stale: repeated.len(), ..Changes::default() };
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
        let mut seen = HashSet::new();
        let (leases, repeated): (Vec<_>, Vec<_>) =
            leases.into_iter().partition(|lease| seen.insert(*lease));
        let mut changes = Changes { stale: repeated.len(), ..Changes::default() };
        for chunk in leases.chunks(BATCH) {
            reply::merge(&mut changes, self.release_chunk(chunk, now).await?);
        }
        Ok(changes)
    }

    async fn report_progress(
        &self,
        lease: LeaseRef,
        progress: Json,
        // The report's time is not stored: readers see the running attempt's.
        _now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        let mut invocation = self.invocation(&self.scripts.progress);
        invocation.arg(lease.id.to_string()).arg(lease.token).arg(progress.get());
        self.run(&invocation, true).await.map(|_| ())
    }

    async fn cancel(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(CancelOutcome, Changes), QueueError> {
        self.cancel_job(id, now).await
    }

    async fn retry(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(JobRecord, Changes), QueueError> {
        self.retry_job(id, now).await
    }

    async fn run_now(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(JobRecord, Changes), QueueError> {
        self.run_job_now(id, now).await
    }

    async fn delete(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(JobRecord, Changes), QueueError> {
        self.delete_job(id, now).await
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
        self.counts().await
    }

    async fn queued_by_kind(&self) -> Result<BTreeMap<String, u64>, QueueError> {
        self.queued_per_kind().await
    }

    async fn dependents(&self, id: JobId, most: usize) -> Result<Vec<JobRecord>, QueueError> {
        self.dependents_of(id, most).await
    }

    async fn limit_jobs(
        &self,
        name: &str,
        most: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<JobRecord>, QueueError> {
        self.held_by_limit(name, most, now).await
    }

    async fn add_finished(&self, counts: &BTreeMap<Bucket, Counts>) -> Result<(), QueueError> {
        self.add_history(counts).await
    }

    async fn finished_history(
        &self,
        from: Bucket,
        to: Bucket,
    ) -> Result<Option<BTreeMap<Bucket, Counts>>, QueueError> {
        self.read_history(from, to).await.map(Some)
    }

    async fn throttled(&self, now: DateTime<Utc>) -> Result<BTreeMap<String, u64>, QueueError> {
        self.throttled_per_queue(now).await
    }

    async fn put_limit(
        &self,
        name: &str,
        spec: LimitSpec,
        now: DateTime<Utc>,
    ) -> Result<(Limit, bool), QueueError> {
        self.store_limit(name, spec, now).await
    }

    async fn get_limit(&self, name: &str, now: DateTime<Utc>) -> Result<Option<Limit>, QueueError> {
        Ok(self.read_limits(&[name.to_owned()], now).await?.pop())
    }

    async fn list_limits(&self, now: DateTime<Utc>) -> Result<Vec<Limit>, QueueError> {
        let mut names: Vec<String> =
            self.cmd(::redis::cmd("SMEMBERS").arg(self.keys.limit_names())).await?;
        names.sort();
        self.read_limits(&names, now).await
    }

    async fn delete_limit(&self, name: &str) -> Result<bool, QueueError> {
        self.remove_limit(name).await
    }

    async fn hold_limit(
        &self,
        name: &str,
        until: DateTime<Utc>,
        _now: DateTime<Utc>,
    ) -> Result<(), QueueError> {
        self.store_hold(name, until).await
    }

    async fn pause_queue(&self, queue: &str, paused: bool) -> Result<(), QueueError> {
        self.store_pause(queue, paused).await
    }

    async fn queues(&self, now: DateTime<Utc>) -> Result<Vec<QueueInfo>, QueueError> {
        self.queue_infos(now).await
    }

    async fn set_group_weight(&self, name: &str, weight: Option<u32>) -> Result<(), QueueError> {
        self.store_weight(name, weight).await
    }

    async fn group_weights(&self) -> Result<Vec<GroupWeight>, QueueError> {
        self.read_weights().await
    }

    async fn ping(&self) -> Result<(), QueueError> {
        if let Some(reason) = self.refused.get() {
            return Err(QueueError::Unavailable(reason.clone()));
        }
        let _: String = self.cmd(&::redis::cmd("PING")).await?;
        Ok(())
    }

    async fn put_schedule(&self, schedule: Schedule) -> Result<bool, QueueError> {
        self.store_schedule(schedule).await
    }

    async fn get_schedule(&self, name: &str) -> Result<Option<Schedule>, QueueError> {
        self.read_schedule(name).await
    }

    async fn list_schedules(&self) -> Result<Vec<Schedule>, QueueError> {
        self.all_schedules().await
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool, QueueError> {
        self.remove_schedule(name).await
    }

    async fn record_fire(&self, name: &str, fire: Fire) -> Result<(), QueueError> {
        self.store_fire(name, fire).await
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

    async fn feed_publish(&self, message: String) -> Result<(), QueueError> {
        self.events.feed_publish(message).await
    }

    async fn feed_readers(&self) -> Result<u64, QueueError> {
        self.events.feed_readers().await
    }

    fn feed_subscribe(
        &self,
        sink: FeedSink,
        on_state: Arc<dyn Fn(bool) + Send + Sync>,
        stop: tokio_util::sync::CancellationToken,
    ) {
        self.events.feed_subscribe(sink, on_state, stop);
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

    async fn heartbeat(
        &self,
        instance: &InstanceInfo,
        displace: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<Registration, QueueError> {
        self.record_heartbeat(instance, displace, now).await
    }

    async fn instances(&self, now: DateTime<Utc>) -> Result<Vec<InstanceInfo>, QueueError> {
        self.live_instances(now).await
    }

    async fn leave(&self, name: &str, run_id: &str) -> Result<(), QueueError> {
        self.leave_registry(name, run_id).await
    }

    async fn take_over(&self, name: &str, now: DateTime<Utc>) -> Result<Changes, QueueError> {
        self.take_over_instance(name, now).await
    }

    async fn takeovers(&self) -> Result<TakeoverCounts, QueueError> {
        self.takeover_counts().await
    }
}
