//! The embedding API: [`Runtime::builder`] configures and starts the actors; [`Client`] (which
//! a [`Runtime`] derefs to, and which the HTTP layer uses too) submits, reads, waits for and
//! cancels jobs, retries, runs now and deletes them (`ops`), and manages schedules.
//!
//! ```no_run
//! # use jobyard::{Job, JobContext, JobError, Runtime};
//! # #[derive(serde::Serialize, serde::Deserialize)] struct SendEmail { to: String }
//! # impl Job for SendEmail {
//! #     const KIND: &'static str = "send_email";
//! #     type Output = ();
//! #     async fn run(self, _: JobContext) -> Result<(), JobError> { Ok(()) }
//! # }
//! # async fn demo() -> Result<(), jobyard::RuntimeError> {
//! let runtime = Runtime::builder().register::<SendEmail>().start()?;
//! let job = runtime.submit(SendEmail { to: "a@example.com".into() }).priority(5).await?;
//! job.wait().await?;
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::ops::Deref;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, Utc};

use crate::clock::Clock;
use serde::Serialize;

use crate::actors::presence::NameState;
use crate::actors::queue::{
    Cancel, DeleteSchedule, GetJob, GetQueuedByKind, GetSchedule, GetStats, GetTakeovers,
    ListInstances, ListJobs, ListSchedules, Ping, PutSchedule, QueueActor, Submit, WaitFor,
};
use crate::actors::supervisor::{RuntimeParts, RuntimeSupervisor, Shutdown};
use crate::actors::worker::{GetPoolStats, WorkerPool};
use crate::cache::{Cache, CacheHealth, CacheStats, MemoryCache};
use crate::config::{CacheBackendKind, Config, QueueBackendKind};
use crate::instance::{ClusterKinds, NameError};
use crate::job::spec::{plan, SpecErrorKind};
use crate::job::{
    Extensions, Job, JobId, JobRecord, JobSpec, JobStatus, Registry, SpecDefaults, SpecError,
};
use crate::queue::{
    CancelOutcome, InstanceInfo, ListQuery, MemoryQueue, Page, QueueBackend, QueueError,
    QueueStats, SubmitResult, TakeoverCounts,
};
#[cfg(feature = "redis")]
use crate::queue::{RedisQueue, RedisQueueError};
#[cfg(feature = "redis")]
use crate::redis::{RedisClient, RedisError, RedisSettings};
use crate::schedule::{validate_name, CronExpr, Schedule, ScheduleSpec};

mod dashboard;
mod flow;
mod kinds;
mod ops;
pub(crate) mod results;
mod typed;

use kinds::SubmitKinds;

pub use ops::{RetryFilter, RETRY_BATCH};
pub use typed::{
    Batch, Dependency, JobHandle, JobOptions, Planned, ScheduleBuilder, SubmitBuilder,
    SubmittedBatch,
};

/// How busy an instance's worker slots and handler threads are (`workers` in the stats).
pub use crate::actors::worker::PoolStats;

/// Errors of the embedding API.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RuntimeError {
    /// The job or schedule as given is not acceptable.
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The job store refused the call, or cannot be reached.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The job failed: its attempts ran out, or one failed fatally.
    #[error("job {id} failed: {}", error.as_deref().unwrap_or("no error recorded"))]
    JobFailed {
        /// The job.
        id: JobId,
        /// Its recorded error, when it has one.
        error: Option<String>,
    },
    /// The job was cancelled before it succeeded.
    #[error("job {id} was cancelled")]
    Cancelled {
        /// The job.
        id: JobId,
    },
    /// The job had not ended when the wait gave up.
    #[error("job {id} still {status} after waiting {waited:?}")]
    WaitTimeout {
        /// The job waited on.
        id: JobId,
        /// Its state when the wait gave up.
        status: JobStatus,
        /// How long the wait lasted.
        waited: Duration,
    },
    /// The stored result does not decode as the job's output type.
    #[error("result of job {id} is not a {expected}: {message}")]
    Decode {
        /// The job.
        id: JobId,
        /// The name of the output type asked for.
        expected: &'static str,
        /// The decoder's error.
        message: String,
    },
    /// The runtime could not be started.
    #[error("cannot start: {0}")]
    Start(String),
    /// The instance could not take a name (`JOBYARD_INSTANCE` names a live instance).
    #[error(transparent)]
    Instance(#[from] NameError),
    /// Redis, which the configuration names, could not be used.
    #[cfg(feature = "redis")]
    #[error(transparent)]
    Redis(#[from] RedisError),
    /// The Redis queue cannot run on this Redis.
    #[cfg(feature = "redis")]
    #[error("the Redis queue cannot be used: {0}")]
    RedisQueue(#[from] RedisQueueError),
}

/// What `/v1/stats` shows.
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Stats {
    /// Jobs per queue and state.
    #[cfg_attr(feature = "server", schema(value_type = BTreeMap<String, crate::queue::StateCounts>))]
    pub queues: QueueStats,
    /// Per kind: queued jobs, and whether this instance runs it (a job of a kind no instance
    /// runs waits, and shows here).
    pub kinds: BTreeMap<String, KindStats>,
    /// This instance's worker slots: busy and total, handler threads, and the kinds seen holding
    /// their thread.
    pub workers: PoolStats,
    /// Cache figures: hits, misses, entries, latencies, and each layer's own figures (see the
    /// HTTP API's documentation).
    #[cfg_attr(feature = "server", schema(value_type = Object))]
    pub cache: CacheStats,
    /// Which backends are in use, and how the Redis link is.
    pub backends: Backends,
    /// The bounds the runtime keeps, and the queues that reached theirs (their submits are
    /// refused until jobs start).
    pub limits: Limits,
    /// The queues holding `max_queued` jobs waiting to run, or more.
    pub full_queues: Vec<String>,
    /// Running attempts taken from their workers, per cause, by every instance sharing the
    /// backend: leases that expired, and instances that restarted under their name.
    pub takeovers: TakeoverCounts,
}

/// The bounds a runtime keeps on its jobs.
#[derive(Clone, Copy, Debug, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "server", schema(as = StatsLimits))]
pub struct Limits {
    /// Jobs waiting to run per queue.
    pub max_queued: u64,
    /// Terminal jobs kept per queue.
    pub retention_max_jobs: u64,
    /// Bytes of a job's result or progress report.
    pub max_result_bytes: usize,
}

impl From<&Config> for Limits {
    fn from(config: &Config) -> Self {
        Limits {
            max_queued: config.max_queued,
            retention_max_jobs: config.retention_max_jobs,
            max_result_bytes: config.max_result_bytes,
        }
    }
}

/// One kind in stats.
#[derive(Clone, Copy, Debug, Default, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct KindStats {
    /// Queued jobs of this kind, in every queue.
    pub queued: u64,
    /// This instance has a handler for it (so claims it).
    pub handled_here: bool,
}

/// Which backends are in use, and how the Redis link is.
#[derive(Clone, Copy, Debug, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Backends {
    /// The queue backend: `memory` or `redis`.
    pub queue: &'static str,
    /// The cache backend: `memory`, `redis` or `hybrid`.
    pub cache: &'static str,
    /// `up`, `down` or `disabled` (no `REDIS_URL`).
    #[serde(skip_deserializing)]
    pub redis: &'static str,
    /// The round trip of the latest PING to Redis, in milliseconds: the link's own health
    /// check measures it twice a second, so reading it costs nothing. `null` without Redis or
    /// while it is down.
    pub redis_rtt_ms: Option<f64>,
}

/// What `/ready` reports.
#[derive(Clone, Debug)]
pub struct Readiness {
    /// The queue backend answered, or why not.
    pub queue: Result<(), String>,
    /// The cache's health; a degraded cache still counts as ready.
    pub cache: CacheHealth,
}

/// A handle on a running system: submit, read, wait, cancel, schedule. Cheap to clone and
/// usable from any thread.
///
/// ```no_run
/// # use jobyard::{Job, JobContext, JobError};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct Resize { image: String }
/// # impl Job for Resize {
/// #     const KIND: &'static str = "resize";
/// #     type Output = String;
/// #     async fn run(self, _: JobContext) -> Result<String, JobError> { Ok(self.image) }
/// # }
/// # async fn demo(runtime: jobyard::Runtime) -> Result<(), Box<dyn std::error::Error>> {
/// use std::time::Duration;
/// use jobyard::{CacheExt, Client};
///
/// // One per request handler, task or thread: a clone is cheap.
/// let client: Client = runtime.client().clone();
/// let job = client.submit(Resize { image: "cat.png".into() }).await?;
///
/// // A job by its id: read it, wait for it (up to a timeout), cancel it.
/// let id = job.id();
/// println!("{}", client.status(id).await?.status);
/// if !client.wait(id, Duration::from_secs(5)).await?.status.is_terminal() {
///     client.cancel(id).await?;
/// }
///
/// // Health and figures, for a service's own readiness probe and dashboards.
/// client.ping().await?;
/// let ready = client.readiness().await;
/// println!("queue: {:?}, cache: {:?}", ready.queue, ready.cache);
/// let backends = client.backends();
/// println!("queue in {}, cache in {}, Redis {}", backends.queue, backends.cache, backends.redis);
/// let workers = client.workers().await?;
/// println!("{} of {} worker slots busy", workers.busy, workers.total);
///
/// // The runtime's cache, typed.
/// client.cache().set_json("last-resize", &id, Duration::from_secs(60), vec![]).await?;
///
/// // Schedules, by name.
/// for schedule in client.schedules().await? {
///     println!("{}: next run at {:?}", schedule.name, schedule.next_run_at);
/// }
/// let nightly = client.get_schedule("nightly").await?;
/// client.delete_schedule(&nightly.name).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Client {
    queue: Addr<QueueActor>,
    pool: Addr<WorkerPool>,
    cache: Arc<dyn Cache>,
    #[cfg(feature = "redis")]
    redis: Option<RedisClient>,
    registry: Arc<Registry>,
    /// What submits accept: `registry`'s kinds, the live instances', the configured ones.
    kinds: Arc<SubmitKinds>,
    defaults: Arc<SpecDefaults>,
    backends: (&'static str, &'static str),
    limits: Limits,
    clock: Clock,
    name_state: tokio::sync::watch::Receiver<NameState>,
    /// Set once the runtime starts shutting down (shared by every clone).
    draining: Arc<AtomicBool>,
    tools: crate::tools::Tools,
    events: crate::events::EventHub,
}

/// What a [`Client`] is made of besides the actors' addresses.
pub(crate) struct ClientParts {
    pub cache: Arc<dyn Cache>,
    #[cfg(feature = "redis")]
    pub redis: Option<RedisClient>,
    pub registry: Arc<Registry>,
    pub backends: (&'static str, &'static str),
    pub limits: Limits,
    pub clock: Clock,
    /// The kinds the live instances handle, kept by the presence actor.
    pub cluster: ClusterKinds,
    /// `JOBYARD_ACCEPT_KINDS`.
    pub accept_kinds: Vec<String>,
    /// Where the presence actor tells how the instance stands with its name.
    pub name_state: tokio::sync::watch::Receiver<NameState>,
    /// The tools service (its documents in Redis when configured).
    pub tools: crate::tools::Tools,
    /// `JOBYARD_HTTP_ALLOWED_HOSTS`, checked on `http` jobs at submit.
    pub allowed_hosts: Option<crate::kinds::upstream::AllowedHosts>,
    /// The instance's event stream.
    pub events: crate::events::EventHub,
}

impl Client {
    pub(crate) fn new(queue: Addr<QueueActor>, pool: Addr<WorkerPool>, parts: ClientParts) -> Self {
        let defaults = Arc::new(SpecDefaults::default());
        let kinds = SubmitKinds::new(parts.registry.clone(), parts.cluster, &parts.accept_kinds)
            .allowed_hosts(parts.allowed_hosts);
        Client {
            queue,
            pool,
            cache: parts.cache,
            #[cfg(feature = "redis")]
            redis: parts.redis,
            registry: parts.registry,
            kinds: Arc::new(kinds),
            defaults,
            backends: parts.backends,
            limits: parts.limits,
            clock: parts.clock,
            name_state: parts.name_state,
            draining: Arc::default(),
            tools: parts.tools,
            events: parts.events,
        }
    }

    /// The instance's event stream: job changes (of every instance sharing the backend), tool
    /// refreshes and a stats snapshot a second.
    ///
    /// ```no_run
    /// # async fn demo(client: &jobyard::Client) {
    /// use jobyard::events::{Filter, Received};
    ///
    /// // Every change of the jobs of queue `emails`, as JSON.
    /// let filter = Filter { queue: Some("emails".into()), ..Filter::default() };
    /// let mut changes = client.events().subscribe(filter, None);
    /// while let Some(received) = changes.next().await {
    ///     match received {
    ///         Received::Event(event) => println!("{}: {}", event.name, event.data()),
    ///         Received::Reset(why) => println!("missed some ({why}): read the jobs again"),
    ///     }
    /// }
    /// # }
    /// ```
    pub fn events(&self) -> &crate::events::EventHub {
        &self.events
    }

    /// Whether the runtime is shutting down: it runs no new attempts, and the HTTP API takes
    /// no new jobs (`/ready` and submits answer 503 `draining`).
    pub fn draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }

    /// This instance's name, once it holds one (its workers are `<name>/w<N>`); `None` while
    /// it claims it, or when it could not take one.
    pub fn instance(&self) -> Option<String> {
        match &*self.name_state.borrow() {
            NameState::Named(name) => Some(name.to_string()),
            _ => None,
        }
    }

    /// Waits until the instance holds its name, could not take one (the error), or its
    /// registry does not answer (then it claims the name in the background, running no job
    /// until it holds it).
    pub(crate) async fn name_settled(&self) -> Result<(), NameError> {
        let mut state = self.name_state.clone();
        let settled = state.wait_for(|state| *state != NameState::Claiming).await;
        match settled.as_deref() {
            Ok(NameState::Refused(err)) => Err(err.clone()),
            _ => Ok(()),
        }
    }

    /// Every live instance sharing this backend, this one included, by name: what each one's
    /// latest heartbeat said. An instance unseen for 3 heartbeats (3 s) is gone.
    ///
    /// ```no_run
    /// # async fn demo(client: &jobyard::Client) -> Result<(), jobyard::RuntimeError> {
    /// for instance in client.instances().await? {
    ///     println!(
    ///         "{} ({}): {}/{} workers busy, kinds {:?}",
    ///         instance.name, instance.version, instance.workers.busy, instance.workers.total,
    ///         instance.kinds
    ///     );
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn instances(&self) -> Result<Vec<InstanceInfo>, RuntimeError> {
        Ok(self.call(ListInstances).await??)
    }

    /// The runtime's now (see [`crate::testing::TestClock`]).
    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// The user metadata documents (see [`Runtime::metadata`]).
    pub fn metadata(&self) -> crate::documents::Metadata {
        crate::documents::Metadata::new(self.tools.documents().clone())
    }

    /// The tools service: upstream data kept fresh in the cache (see [`crate::tools`]).
    pub fn tools(&self) -> &crate::tools::Tools {
        &self.tools
    }

    /// The runtime's cache (thread-safe: read and write it from anywhere).
    pub fn cache(&self) -> &Arc<dyn Cache> {
        &self.cache
    }

    /// Which backends are in use, and how the Redis link is.
    pub fn backends(&self) -> Backends {
        #[cfg(feature = "redis")]
        let (redis, redis_rtt_ms) = match &self.redis {
            None => ("disabled", None),
            Some(redis) if redis.is_up() => ("up", Some(redis.stats().rtt_us as f64 / 1000.0)),
            Some(_) => ("down", None),
        };
        #[cfg(not(feature = "redis"))]
        let (redis, redis_rtt_ms) = ("disabled", None);
        Backends { queue: self.backends.0, cache: self.backends.1, redis, redis_rtt_ms }
    }

    /// Whether the backends answer: the queue must; a cache that fell back to memory is
    /// degraded but ready.
    pub async fn readiness(&self) -> Readiness {
        Readiness {
            queue: self.ping().await.map_err(|err| err.to_string()),
            cache: self.cache.health(),
        }
    }

    /// Sends a message to the queue actor, mapping a dead mailbox to `Unavailable`.
    pub(crate) async fn call<M>(&self, msg: M) -> Result<M::Result, QueueError>
    where
        M: Message + Send + 'static,
        M::Result: Send,
        QueueActor: Handler<M>,
    {
        self.queue
            .send(msg)
            .await
            .map_err(|err| QueueError::Unavailable(format!("queue actor: {err}")))
    }

    /// Starts building a typed submit of `job`; `.await` it to submit.
    ///
    /// ```no_run
    /// # use jobyard::{Job, JobContext, JobError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Resize { image: String }
    /// # impl Job for Resize {
    /// #     const KIND: &'static str = "resize";
    /// #     type Output = String;
    /// #     async fn run(self, _: JobContext) -> Result<String, JobError> { Ok(self.image) }
    /// # }
    /// # async fn demo(client: &jobyard::Client) -> Result<(), jobyard::RuntimeError> {
    /// let job = client.submit(Resize { image: "cat.png".into() }).priority(10).await?;
    /// let thumbnail: String = job.wait().await?;
    /// # Ok(()) }
    /// ```
    pub fn submit<J: Job>(&self, job: J) -> SubmitBuilder<'_, J> {
        SubmitBuilder::new(self, job)
    }

    /// Starts a typed batch: jobs submitted together, all or nothing, which may depend on
    /// each other.
    pub fn batch(&self) -> Batch<'_> {
        Batch::new(self)
    }

    /// Starts building the schedule `name` of a typed job; `.await` it to create or replace
    /// the schedule.
    pub fn schedule<J: Job>(&self, name: impl Into<String>) -> ScheduleBuilder<'_, J> {
        ScheduleBuilder::new(self, name.into())
    }

    /// Submits one job described as a spec.
    ///
    /// ```no_run
    /// # async fn demo(client: &jobyard::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// use jobyard::job::record::to_json;
    /// use jobyard::JobSpec;
    ///
    /// let spec = JobSpec {
    ///     payload: Some(to_json(&serde_json::json!({"ms": 500}))?),
    ///     priority: Some(5),
    ///     idempotency_key: Some("warm-up:2026-01-01".into()),
    ///     ..JobSpec::new("sleep")
    /// };
    /// let submitted = client.submit_spec(spec).await?;
    /// if !submitted.created {
    ///     println!("job {} already holds this key", submitted.record.id);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn submit_spec(&self, spec: JobSpec) -> Result<SubmitResult, RuntimeError> {
        let mut jobs = self.submit_specs(vec![spec], false).await?;
        Ok(jobs.remove(0))
    }

    /// Submits a batch, all or nothing; `depends_on` may name `ref`s of the batch.
    ///
    /// ```no_run
    /// # async fn demo(client: &jobyard::Client) -> Result<(), jobyard::RuntimeError> {
    /// use jobyard::JobSpec;
    ///
    /// // `second` runs once `first` succeeded; neither is stored unless both are valid.
    /// let first = JobSpec { reference: Some("first".into()), ..JobSpec::new("noop") };
    /// let second = JobSpec { depends_on: Some(vec!["first".into()]), ..JobSpec::new("noop") };
    /// let jobs = client.submit_batch(vec![first, second]).await?;
    /// assert_eq!(jobs[1].record.depends_on, [jobs[0].record.id]);
    /// # Ok(()) }
    /// ```
    pub async fn submit_batch(
        &self,
        specs: Vec<JobSpec>,
    ) -> Result<Vec<SubmitResult>, RuntimeError> {
        self.submit_specs(specs, true).await
    }

    async fn submit_specs(
        &self,
        specs: Vec<JobSpec>,
        batch: bool,
    ) -> Result<Vec<SubmitResult>, RuntimeError> {
        let jobs = plan(specs, batch, &*self.kinds, &self.defaults, self.now())?;
        let submitted = self.call(Submit(jobs)).await??.jobs;
        for job in submitted.iter().filter(|job| job.created) {
            crate::telemetry::jobs::submitted(&job.record.kind, &job.record.queue);
        }
        Ok(submitted)
    }

    /// The job as it is now.
    pub async fn status(&self, id: JobId) -> Result<JobRecord, RuntimeError> {
        self.call(GetJob(id)).await??.ok_or(RuntimeError::Queue(QueueError::NotFound(id)))
    }

    /// Waits until the job is terminal or `timeout` passed; returns the job as it then is.
    pub async fn wait(&self, id: JobId, timeout: Duration) -> Result<JobRecord, RuntimeError> {
        self.call(WaitFor { id, timeout })
            .await??
            .ok_or(RuntimeError::Queue(QueueError::NotFound(id)))
    }

    /// Cancels a job: at once unless it runs; a running job by request to its worker.
    ///
    /// ```no_run
    /// # async fn demo(client: &jobyard::Client, id: jobyard::JobId) -> Result<(), jobyard::RuntimeError> {
    /// use jobyard::queue::QueueError;
    /// use jobyard::{CancelOutcome, RuntimeError};
    ///
    /// match client.cancel(id).await {
    ///     Ok(CancelOutcome::Cancelled(_)) => println!("cancelled before it ran"),
    ///     Ok(CancelOutcome::Requested(_)) => println!("running: its handler is told to stop"),
    ///     Err(RuntimeError::Queue(QueueError::AlreadyFinished { status, .. })) => {
    ///         println!("too late: it already ended {status}")
    ///     }
    ///     Err(err) => return Err(err),
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn cancel(&self, id: JobId) -> Result<CancelOutcome, RuntimeError> {
        let outcome = self.call(Cancel(id)).await??;
        if let CancelOutcome::Cancelled(job) = &outcome {
            crate::telemetry::jobs::cancelled_before_running(&job.kind, &job.queue);
        }
        Ok(outcome)
    }

    /// Lists jobs, newest first.
    ///
    /// ```no_run
    /// # async fn demo(client: &jobyard::Client) -> Result<(), jobyard::RuntimeError> {
    /// use jobyard::queue::ListQuery;
    /// use jobyard::JobStatus;
    ///
    /// // Every failed job of the `emails` queue, page by page.
    /// let mut query = ListQuery {
    ///     status: Some(JobStatus::Failed),
    ///     queue: Some("emails".into()),
    ///     ..ListQuery::default()
    /// };
    /// loop {
    ///     let page = client.list(query.clone()).await?;
    ///     for job in &page.jobs {
    ///         println!("{}: {}", job.id, job.error.as_deref().unwrap_or("no error recorded"));
    ///     }
    ///     match page.next_cursor {
    ///         Some(cursor) => query.cursor = Some(cursor),
    ///         None => break,
    ///     }
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list(&self, query: ListQuery) -> Result<Page, RuntimeError> {
        Ok(self.call(ListJobs(query)).await??)
    }

    /// Creates or replaces the schedule `name`; true when it was created.
    ///
    /// ```no_run
    /// # async fn demo(client: &jobyard::Client) -> Result<(), jobyard::RuntimeError> {
    /// use jobyard::{JobSpec, ScheduleSpec};
    ///
    /// let spec = ScheduleSpec {
    ///     cron: "0 30 2 * * *".into(), // every day at 02:30:00
    ///     timezone: Some("Europe/Paris".into()),
    ///     job: JobSpec { queue: Some("maintenance".into()), ..JobSpec::new("noop") },
    ///     catch_up: false,
    /// };
    /// let (schedule, created) = client.put_schedule("nightly-cleanup", spec).await?;
    /// println!("created: {created}; first run at {:?}", schedule.next_run_at);
    /// # Ok(()) }
    /// ```
    pub async fn put_schedule(
        &self,
        name: &str,
        spec: ScheduleSpec,
    ) -> Result<(Schedule, bool), RuntimeError> {
        validate_name(name)?;
        let timezone = spec.timezone.unwrap_or_else(|| "UTC".into());
        let expr = CronExpr::parse(&spec.cron, Some(&timezone))?;
        let now = self.now();
        let next_run_at = expr.next_after(now).ok_or_else(|| {
            SpecError::invalid("cron", format!("cron expression '{}' never fires", spec.cron))
        })?;
        // The template must be submittable: checked now rather than failing at every tick.
        let planned = plan(vec![spec.job.clone()], false, &*self.kinds, &self.defaults, now)
            .map_err(|err| prefix_field(err, "job"))?;
        for &dep in planned.iter().flat_map(|job| &job.depends_on) {
            match self.status(dep).await {
                Err(RuntimeError::Queue(QueueError::NotFound(_))) => {
                    return Err(SpecError {
                        kind: SpecErrorKind::UnknownDependency,
                        message: format!(
                            "depends_on names job {dep}, which does not exist: \
                             the schedule could never submit its job"
                        ),
                        field: Some("job.depends_on".into()),
                    }
                    .into())
                }
                other => {
                    other?;
                }
            }
        }
        let schedule = Schedule {
            name: name.to_owned(),
            cron: spec.cron,
            timezone,
            job: spec.job,
            catch_up: spec.catch_up,
            created_at: now,
            updated_at: now,
            next_run_at: Some(next_run_at),
            last_run_at: None,
            last_job_id: None,
        };
        let created = self.call(PutSchedule(schedule)).await??;
        let stored = self.get_schedule(name).await?;
        Ok((stored, created))
    }

    /// One schedule.
    pub async fn get_schedule(&self, name: &str) -> Result<Schedule, RuntimeError> {
        self.call(GetSchedule(name.to_owned()))
            .await??
            .ok_or_else(|| RuntimeError::Queue(QueueError::ScheduleNotFound(name.to_owned())))
    }

    /// Every schedule, by name.
    pub async fn schedules(&self) -> Result<Vec<Schedule>, RuntimeError> {
        Ok(self.call(ListSchedules).await??)
    }

    /// Removes a schedule.
    pub async fn delete_schedule(&self, name: &str) -> Result<(), RuntimeError> {
        match self.call(DeleteSchedule(name.to_owned())).await?? {
            true => Ok(()),
            false => Err(RuntimeError::Queue(QueueError::ScheduleNotFound(name.to_owned()))),
        }
    }

    /// Counts per queue and state, worker and cache figures.
    ///
    /// ```no_run
    /// # async fn demo(client: &jobyard::Client) -> Result<(), jobyard::RuntimeError> {
    /// let stats = client.stats().await?;
    /// for (queue, counts) in &stats.queues {
    ///     println!("{queue}: {} queued, {} running", counts.queued, counts.running);
    /// }
    /// println!("{} of {} worker slots busy", stats.workers.busy, stats.workers.total);
    /// println!("cache hit ratio: {:.2}", stats.cache.hit_ratio);
    /// # Ok(()) }
    /// ```
    pub async fn stats(&self) -> Result<Stats, RuntimeError> {
        let queues = self.call(GetStats).await??;
        let workers = self.workers().await?;
        let mut kinds: BTreeMap<String, KindStats> = BTreeMap::new();
        // An instance without workers (`JOBYARD_CONCURRENCY=0`) runs none of its kinds.
        for kind in self.registry.kinds().iter().filter(|_| workers.total > 0) {
            kinds.entry(kind.to_string()).or_default().handled_here = true;
        }
        for (kind, queued) in self.call(GetQueuedByKind).await?? {
            kinds.entry(kind).or_default().queued = queued;
        }
        let takeovers = self.call(GetTakeovers).await??;
        let (cache, backends, limits) = (self.cache.stats(), self.backends(), self.limits);
        let full_queues = queues
            .iter()
            .filter(|(_, c)| c.waiting + c.scheduled + c.queued >= limits.max_queued)
            .map(|(name, _)| name.clone())
            .collect();
        Ok(Stats { queues, kinds, workers, cache, backends, limits, full_queues, takeovers })
    }

    /// How busy this instance's worker slots are (answered without the queue backend).
    pub async fn workers(&self) -> Result<PoolStats, RuntimeError> {
        let unavailable = QueueError::Unavailable("worker pool actor not answering".into());
        Ok(self.pool.send(GetPoolStats).await.map_err(|_| unavailable)?)
    }

    /// Whether the queue backend answers.
    pub async fn ping(&self) -> Result<(), RuntimeError> {
        Ok(self.call(Ping).await??)
    }
}

fn prefix_field(mut err: SpecError, prefix: &str) -> SpecError {
    err.field = Some(match err.field {
        Some(field) => format!("{prefix}.{field}"),
        None => prefix.to_owned(),
    });
    err
}

/// Configures and starts a [`Runtime`].
///
/// ```no_run
/// # use jobyard::{Job, JobContext, JobError};
/// # #[derive(serde::Serialize, serde::Deserialize)] struct SendEmail { to: String }
/// # impl Job for SendEmail {
/// #     const KIND: &'static str = "send_email";
/// #     type Output = ();
/// #     async fn run(self, _: JobContext) -> Result<(), JobError> { Ok(()) }
/// # }
/// use std::sync::Arc;
/// use jobyard::cache::MemoryCache;
/// use jobyard::queue::MemoryQueue;
/// use jobyard::{Config, Runtime};
///
/// struct SmtpHost(String);
///
/// #[actix::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let runtime = Runtime::builder()
///         .config(Config::builder().concurrency(4).build()?)
///         .register::<SendEmail>()
///         .with_builtin_kinds()
///         .queue_backend(Arc::new(MemoryQueue::new()))
///         .cache(Arc::new(MemoryCache::new(16 << 20)))
///         .extension(SmtpHost("mail.example.com".into()))
///         .start()?;
///     // ... submit and wait ...
///     runtime.shutdown().await;
///     Ok(())
/// }
/// ```
pub struct RuntimeBuilder {
    config: Config,
    registry: Registry,
    queue_backend: Option<Arc<dyn QueueBackend>>,
    cache: Option<Arc<dyn Cache>>,
    #[cfg(feature = "redis")]
    redis: Option<RedisClient>,
    extensions: Extensions,
    clock: Clock,
}

impl RuntimeBuilder {
    /// Uses `config` instead of the defaults.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Runs the runtime on `clock`, which the test moves forward (see [`crate::testing`]).
    pub fn clock(mut self, clock: &crate::testing::TestClock) -> Self {
        self.clock = clock.clock();
        self
    }

    /// Registers a job kind.
    pub fn register<J: Job>(mut self) -> Self {
        self.registry.register::<J>();
        self
    }

    /// Registers the built-in kinds: `noop`, `sleep`, `fail` and `http`.
    pub fn with_builtin_kinds(mut self) -> Self {
        crate::kinds::register_builtins(&mut self.registry);
        self
    }

    /// Uses this queue backend instead of the one the configuration names.
    pub fn queue_backend(mut self, backend: Arc<dyn QueueBackend>) -> Self {
        self.queue_backend = Some(backend);
        self
    }

    /// Uses this cache (see [`crate::cache::build`]) instead of a memory cache.
    pub fn cache(mut self, cache: Arc<dyn Cache>) -> Self {
        self.cache = Some(cache);
        self
    }

    /// The Redis link the cache uses, for stats and readiness.
    #[cfg(feature = "redis")]
    pub fn redis(mut self, redis: Option<RedisClient>) -> Self {
        self.redis = redis;
        self
    }

    /// A shared value handlers read with `ctx.extension::<T>()` (a database pool, a client).
    ///
    /// ```no_run
    /// use jobyard::{Job, JobContext, JobError, Runtime};
    /// use serde::{Deserialize, Serialize};
    ///
    /// // Shared by every handler: a connection pool, an API client, settings.
    /// struct Greeting(String);
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Greet { name: String }
    ///
    /// impl Job for Greet {
    ///     const KIND: &'static str = "greet";
    ///     type Output = String;
    ///     async fn run(self, ctx: JobContext) -> Result<String, JobError> {
    ///         let greeting = ctx.extension::<Greeting>().ok_or_else(|| JobError::fatal("no greeting"))?;
    ///         Ok(format!("{}, {}", greeting.0, self.name))
    ///     }
    /// }
    ///
    /// # async fn demo() -> Result<(), jobyard::RuntimeError> {
    /// let runtime =
    ///     Runtime::builder().extension(Greeting("hello".into())).register::<Greet>().start()?;
    /// # Ok(()) }
    /// ```
    pub fn extension<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extensions.insert(value);
        self
    }

    /// Connects what the configuration names (the Redis queue, the Redis or hybrid cache and
    /// its link), exactly as `jobyard serve` does, then starts the runtime on the current
    /// actix system (`#[actix_web::main]`, `#[actix::main]`, `#[actix::test]`). A queue
    /// backend or cache given to the builder is used instead of the configured one. A Redis
    /// that is down at start is not fatal for the cache (it serves from memory and
    /// reconnects), but is for the Redis queue.
    ///
    /// From plain tokio (`#[tokio::main]`, axum, tonic), use [`RuntimeBuilder::spawn`].
    ///
    /// ```no_run
    /// use jobyard::{Config, Runtime};
    ///
    /// #[actix::main]
    /// async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     // With REDIS_URL set, the Redis queue and the hybrid cache, connected here.
    ///     let config = Config::from_env()?;
    ///     let runtime = Runtime::from_config(config).with_builtin_kinds().connect().await?;
    ///     // ... serve ...
    ///     runtime.shutdown().await;
    ///     Ok(())
    /// }
    /// ```
    // Without Redis support there is nothing to connect, and so nothing to change here.
    #[cfg_attr(not(feature = "redis"), allow(unused_mut))]
    pub async fn connect(mut self) -> Result<Runtime, RuntimeError> {
        in_actix_system()?;
        #[cfg(feature = "redis")]
        {
            let wants_queue = self.config.queue_backend == QueueBackendKind::Redis;
            if wants_queue && self.queue_backend.is_none() {
                let queue = RedisQueue::connect(&self.config).await?;
                self.queue_backend = Some(Arc::new(queue));
            }
            if self.cache.is_none() {
                if self.redis.is_none() {
                    if let Some(settings) = RedisSettings::from_config(&self.config) {
                        let redis = RedisClient::new(settings)?;
                        redis.start().await;
                        self.redis = Some(redis);
                    }
                }
                self.cache = Some(crate::cache::build(&self.config, self.redis.as_ref()));
            }
        }
        #[cfg(not(feature = "redis"))]
        {
            let wants_queue = self.config.queue_backend == QueueBackendKind::Redis;
            let wants_cache = self.config.cache_backend != CacheBackendKind::Memory;
            if (wants_queue && self.queue_backend.is_none())
                || (wants_cache && self.cache.is_none())
            {
                return Err(RuntimeError::Start(
                    "the configuration names Redis, but this build of jobyard has no Redis \
                     support: enable its `redis` feature"
                        .into(),
                ));
            }
        }
        let explicit_name = self.config.instance.is_some();
        let runtime = self.start()?;
        // An explicit name another live instance holds stops the start here, as a bad setting
        // would. The default name is never refused (another name is taken when it is held),
        // so the start does not wait for it: a restart after a crash serves at once while the
        // name's previous run is watched, and runs jobs once the name is settled.
        if explicit_name {
            if let Err(err) = runtime.client.name_settled().await {
                runtime.shutdown().await;
                return Err(err.into());
            }
        }
        Ok(runtime)
    }

    /// Starts the runtime on a thread of its own, with its own actix system, and returns
    /// once it runs: the way to embed it in a service on plain tokio (`#[tokio::main]`),
    /// where actix actors cannot start. Everything is connected as [`RuntimeBuilder::connect`]
    /// does. The returned [`Runtime`] (and its [`Client`]) may be used from any thread and
    /// its futures are `Send`; [`Runtime::shutdown`] stops the thread too.
    ///
    /// ```no_run
    /// # use jobyard::{Config, Runtime};
    /// #[tokio::main]
    /// async fn main() -> Result<(), Box<dyn std::error::Error>> {
    ///     let runtime = Runtime::from_config(Config::from_env()?).with_builtin_kinds().spawn().await?;
    ///     // ... serve requests that submit and wait on jobs ...
    ///     runtime.shutdown().await;
    ///     Ok(())
    /// }
    /// ```
    pub async fn spawn(self) -> Result<Runtime, RuntimeError> {
        let (started, ready) = tokio::sync::oneshot::channel();
        let (ended_tx, ended) = tokio::sync::watch::channel(false);
        std::thread::Builder::new()
            .name("jobyard-runtime".into())
            .spawn(move || {
                let system = actix_rt::System::new();
                let runtime = system.block_on(self.connect());
                let failed = runtime.is_err();
                let runtime = runtime.map(|mut runtime| {
                    let system = actix_rt::System::current();
                    runtime.owned_system = Some(OwnedSystem { system, ended });
                    runtime
                });
                if started.send(runtime).is_ok() && !failed {
                    // Until `Runtime::shutdown` stops the system.
                    if let Err(err) = system.run() {
                        tracing::error!("the runtime's actix system ended with an error: {err}");
                    }
                } else {
                    drop(system);
                }
                let _ = ended_tx.send(true);
            })
            .map_err(|err| {
                RuntimeError::Start(format!("cannot start the runtime thread: {err}"))
            })?;
        ready
            .await
            .map_err(|_| RuntimeError::Start("the runtime thread ended while starting".into()))?
    }

    /// Starts the actors on the current actix system with the queue backend and cache given
    /// to the builder (or the memory ones). It connects nothing: a configuration that names
    /// Redis is refused here; use [`RuntimeBuilder::connect`] for it.
    ///
    /// The instance claims its name in the background (its pool runs no job before it holds
    /// it): a name another live instance holds is logged, and the runtime then runs no jobs.
    /// [`RuntimeBuilder::connect`] waits for the claim and fails instead.
    pub fn start(self) -> Result<Runtime, RuntimeError> {
        in_actix_system()?;
        let backend = match (self.queue_backend, self.config.queue_backend) {
            (Some(backend), _) => backend,
            (None, QueueBackendKind::Memory) => {
                let limits = crate::queue::QueueLimits::from_config(&self.config);
                Arc::new(MemoryQueue::with_limits(limits)) as Arc<dyn QueueBackend>
            }
            (None, QueueBackendKind::Redis) => {
                return Err(RuntimeError::Start(
                    "the configuration names the Redis queue, which `start` does not connect: \
                     use `.connect().await` (or `.spawn().await` outside an actix system)"
                        .into(),
                ))
            }
        };
        let cache = match self.cache {
            Some(cache) => cache,
            None if self.config.cache_backend == CacheBackendKind::Memory => {
                Arc::new(MemoryCache::new(self.config.cache_max_bytes))
            }
            None => {
                return Err(RuntimeError::Start(format!(
                    "the configuration names the {} cache, which `start` does not connect: \
                     use `.connect().await` (or `.spawn().await` outside an actix system)",
                    self.config.cache_backend.as_str()
                )))
            }
        };
        let mut extensions = self.extensions;
        // The `http` kind reads it: with allowed hosts, it follows no redirect (one could
        // lead to any host).
        if let Some(hosts) = &self.config.http_allowed_hosts {
            extensions.insert(hosts.clone());
        }
        let parts = RuntimeParts {
            registry: Arc::new(self.registry),
            backend,
            cache,
            #[cfg(feature = "redis")]
            redis: self.redis,
            extensions,
            clock: self.clock,
        };
        let (supervisor, client) = RuntimeSupervisor::start(&self.config, parts);
        Ok(Runtime { client, supervisor, config: Arc::new(self.config), owned_system: None })
    }
}

/// Actors start only on a thread that runs an actix system; anywhere else actix panics.
fn in_actix_system() -> Result<(), RuntimeError> {
    match actix_rt::System::try_current() {
        Some(_) => Ok(()),
        None => Err(RuntimeError::Start(
            "not inside an actix system: start the runtime under `#[actix_web::main]` or \
             `#[actix::main]`, or use `.spawn().await`, which runs it on a thread of its own \
             (the way from plain tokio)"
                .into(),
        )),
    }
}

/// A started runtime. Derefs to its [`Client`].
///
/// ```no_run
/// use std::time::Duration;
/// use jobyard::{JobSpec, JobStatus, Runtime};
///
/// #[actix::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let runtime = Runtime::builder().with_builtin_kinds().start()?;
///     let id = runtime.submit_spec(JobSpec::new("noop")).await?.record.id;
///     let job = runtime.wait(id, Duration::from_secs(10)).await?;
///     assert_eq!(job.status, JobStatus::Succeeded);
///     runtime.shutdown().await;
///     Ok(())
/// }
/// ```
///
/// ```no_run
/// # async fn demo(runtime: jobyard::Runtime) -> Result<(), Box<dyn std::error::Error>> {
/// // What it was started with, a client for another task, its metadata store.
/// println!("{} jobs at once", runtime.config().concurrency);
/// let client = runtime.client().clone();
/// tokio::spawn(async move { client.ping().await });
/// runtime.metadata().save("last-start", &chrono::Utc::now()).await?;
///
/// // At the end: running attempts get the grace period, the rest go back to the queue.
/// let handed_back = runtime.shutdown().await;
/// println!("{handed_back} jobs handed back");
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Runtime {
    client: Client,
    supervisor: Addr<RuntimeSupervisor>,
    config: Arc<Config>,
    /// The actix system of a runtime started by [`RuntimeBuilder::spawn`], stopped with it.
    owned_system: Option<OwnedSystem>,
}

/// The actix system a spawned runtime runs on, and word of its thread's end.
#[derive(Clone)]
struct OwnedSystem {
    system: actix_rt::System,
    ended: tokio::sync::watch::Receiver<bool>,
}

impl Runtime {
    /// A builder with the default configuration (the memory backends).
    pub fn builder() -> RuntimeBuilder {
        RuntimeBuilder {
            config: Config::default(),
            registry: Registry::new(),
            queue_backend: None,
            cache: None,
            #[cfg(feature = "redis")]
            redis: None,
            extensions: Extensions::default(),
            clock: Clock::default(),
        }
    }

    /// A builder with `config` (for example [`Config::from_env`], as `jobyard serve` reads
    /// it); [`RuntimeBuilder::connect`] or [`RuntimeBuilder::spawn`] wire the backends it names.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use jobyard::{Config, Runtime};
    ///
    /// let config = Config::builder().with_env().concurrency(8).build()?;
    /// let runtime = Runtime::from_config(config).with_builtin_kinds().spawn().await?;
    /// # Ok(()) }
    /// ```
    pub fn from_config(config: Config) -> RuntimeBuilder {
        Runtime::builder().config(config)
    }

    /// The client: submit, read, wait, cancel (what the runtime derefs to).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The configuration the runtime was started with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The user metadata documents (preferences, dashboard layouts): those
    /// `/v1/metadata/{name}` serves, in Redis when it is configured (shared by every instance),
    /// in files under `JOBYARD_DATA_DIR` otherwise.
    pub fn metadata(&self) -> crate::documents::Metadata {
        self.client.metadata()
    }

    /// Stops taking jobs, lets running attempts finish within the configured shutdown grace
    /// period and hands the rest back to `queued`. Returns how many were handed back. A runtime
    /// started by [`RuntimeBuilder::spawn`] then stops its thread, and this returns once it
    /// ended.
    pub async fn shutdown(&self) -> usize {
        self.stop_within(self.config.shutdown_grace).await
    }

    /// Stops at once: running attempts are stopped and handed back to `queued` without a grace
    /// period (what a second Ctrl-C asks for). Safe while a [`shutdown`](Self::shutdown) is
    /// under way: each job is handed back once.
    pub async fn shutdown_now(&self) -> usize {
        self.stop_within(Duration::ZERO).await
    }

    async fn stop_within(&self, grace: Duration) -> usize {
        self.client.draining.store(true, Ordering::Relaxed);
        let handed_back = self.supervisor.send(Shutdown { grace }).await.unwrap_or(0);
        if let Some(OwnedSystem { system, ended }) = &self.owned_system {
            system.stop();
            // Its actors are gone once the thread ends: later calls fail as `Unavailable`.
            let _ = ended.clone().wait_for(|ended| *ended).await;
        }
        handed_back
    }
}

impl Deref for Runtime {
    type Target = Client;
    fn deref(&self) -> &Client {
        &self.client
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::actors::testing::{Panic, Stop};
    use crate::job::JobSpec;

    /// A panic inside any actor's own handler restarts that actor behind the same address: a
    /// running attempt still reports its end, delayed jobs are still promoted by the scheduler,
    /// results still reach the cache.
    #[actix::test]
    async fn actors_that_panic_are_restarted_and_keep_working() {
        let runtime = Runtime::builder().with_builtin_kinds().start().unwrap();
        let sleep = JobSpec {
            payload: Some(crate::job::record::json_from_str("{\"ms\": 300}").unwrap()),
            ..JobSpec::new("sleep")
        };
        let running = runtime.submit_spec(sleep).await.unwrap().record.id;
        while runtime.status(running).await.unwrap().status != JobStatus::Running {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(runtime.client.queue.send(Panic).await.is_err(), "the panicking call fails");
        assert!(runtime.client.pool.send(Panic).await.is_err());
        runtime.supervisor.send(Panic).await.unwrap();
        let record = runtime.wait(running, Duration::from_secs(10)).await.unwrap();
        assert_eq!(record.status, JobStatus::Succeeded, "the attempt running at the panic ends");
        let delayed = JobSpec { delay_ms: Some(50), ..JobSpec::new("noop") };
        let delayed = runtime.submit_spec(delayed).await.unwrap().record.id;
        let record = runtime.wait(delayed, Duration::from_secs(10)).await.unwrap();
        assert_eq!(record.status, JobStatus::Succeeded, "the scheduler promotes delayed jobs");
        let key = crate::cache::result_key(delayed);
        let cached = runtime.cache().get(&key).await;
        assert!(cached.is_some(), "its result is read through the cache");
        // Every worker slot is usable again: as many sleeps as slots run at once.
        let slots = runtime.workers().await.unwrap().total;
        let long = JobSpec {
            payload: Some(crate::job::record::json_from_str("{\"ms\": 60000}").unwrap()),
            ..JobSpec::new("sleep")
        };
        runtime.submit_batch(vec![long; slots]).await.unwrap();
        let mut busy = 0;
        for _ in 0..1000 {
            busy = runtime.workers().await.unwrap().busy;
            if busy == slots {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(busy, slots, "every slot takes a job after the restart");
        // The presence keeps its name (no second claim, no takeover of its own jobs) and its
        // heartbeats.
        let name = runtime.instance().expect("named");
        let listed = runtime.instances().await.unwrap();
        assert_eq!(listed.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(), [name.as_str()]);
        assert_eq!(runtime.stats().await.unwrap().takeovers.instance_restarted, 0);
    }

    #[actix::test]
    async fn stopped_actors_are_restarted_with_the_same_address_and_keep_working() {
        let runtime = Runtime::builder().with_builtin_kinds().start().unwrap();
        let first = runtime.submit_spec(JobSpec::new("noop")).await.unwrap().record.id;
        assert_eq!(
            runtime.wait(first, Duration::from_secs(10)).await.unwrap().status,
            JobStatus::Succeeded
        );
        runtime.client.queue.send(Stop).await.unwrap();
        runtime.client.pool.send(Stop).await.unwrap();
        // The same addresses answer again: the supervisors restarted both actors.
        let second = runtime.submit_spec(JobSpec::new("noop")).await.unwrap().record.id;
        let record = runtime.wait(second, Duration::from_secs(10)).await.unwrap();
        assert_eq!(record.status, JobStatus::Succeeded, "a restarted pool runs jobs");
        assert!(runtime.stats().await.is_ok());
    }
}
