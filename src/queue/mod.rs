//! The job store: the [`QueueBackend`] trait every backend implements, the types that cross it,
//! and [`QueueError`].
//!
//! The trait is shaped for a backend whose every call is a network round trip: calls are async
//! and fallible, and the hot ones (submit, dequeue, complete, renew) take batches. Every state
//! transition of a job happens inside the backend, atomically, so the actors above it
//! never hold job state of their own. Time is always passed in (`now`), which makes a backend a
//! pure function of its calls and lets tests step time.

pub mod flow;
pub mod history;
pub mod instances;
#[doc(hidden)]
pub mod memory;
#[cfg(feature = "redis")]
#[doc(hidden)]
pub mod redis;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::job::{JobId, JobRecord, JobStatus, Json, NewJob};
use crate::schedule::{Fire, Schedule};
use flow::{Claims, GroupWeight, Limit, LimitSpec, QueueInfo};

pub use instances::{
    InstanceInfo, InstanceWorkers, Registration, Takeover, TakeoverCause, TakeoverCounts,
};
pub use memory::MemoryQueue;
#[cfg(feature = "redis")]
pub use redis::{RedisQueue, RedisQueueError};

/// An operator's action on one job that applies only in some states (see
/// [`QueueError::InvalidState`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobAction {
    /// [`QueueBackend::retry`]: a `failed` or `cancelled` job.
    Retry,
    /// [`QueueBackend::run_now`]: a `scheduled` job.
    RunNow,
    /// [`QueueBackend::delete`]: a terminal job.
    Delete,
}

impl JobAction {
    /// Its name in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            JobAction::Retry => "retry",
            JobAction::RunNow => "run now",
            JobAction::Delete => "delete",
        }
    }

    /// The states it applies to, as a message says them.
    pub fn applies_to(self) -> &'static str {
        match self {
            JobAction::Retry => "failed or cancelled",
            JobAction::RunNow => "scheduled",
            JobAction::Delete => "finished (succeeded, failed or cancelled)",
        }
    }

    /// Whether it applies to a job in `status`.
    pub fn applies(self, status: JobStatus) -> bool {
        match self {
            JobAction::Retry => matches!(status, JobStatus::Failed | JobStatus::Cancelled),
            JobAction::RunNow => status == JobStatus::Scheduled,
            JobAction::Delete => status.is_terminal(),
        }
    }
}

/// Errors of the queue layer.
///
/// ```
/// use chrono::Utc;
/// use jobyard::queue::{MemoryQueue, QueueBackend, QueueError};
/// use jobyard::{JobId, ListQuery};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let backend = MemoryQueue::new();
/// let id = JobId::new();
/// let cancel = backend.cancel(id, Utc::now()).await;
/// assert!(matches!(cancel, Err(QueueError::NotFound(missing)) if missing == id));
/// let query = ListQuery { cursor: Some("made-up".into()), ..ListQuery::default() };
/// assert!(matches!(backend.list(&query).await, Err(QueueError::InvalidCursor(_))));
///
/// // The errors worth retrying later: the store is down, or the queue is full.
/// let retry_later = |err: &QueueError| {
///     matches!(err, QueueError::Unavailable(_) | QueueError::QueueFull { .. })
/// };
/// assert!(!retry_later(&QueueError::NotFound(id)));
/// # }
/// ```
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueueError {
    /// No job has this id (it never existed, or retention removed it).
    #[error("job {0} not found")]
    NotFound(JobId),
    /// The job is terminal, so it cannot be cancelled.
    #[error("job {id} already finished ({status})")]
    AlreadyFinished {
        /// The job.
        id: JobId,
        /// The terminal state it is in.
        status: JobStatus,
    },
    /// The job is not in a state `action` applies to (a retry of a running job, running a
    /// queued job now, deleting a job that has not ended).
    #[error("job {id} is {status}; {} applies only to a {} job", action.as_str(), action.applies_to())]
    InvalidState {
        /// The job.
        id: JobId,
        /// The state it is in.
        status: JobStatus,
        /// What was asked of it.
        action: JobAction,
    },
    /// A retry would make the job wait for a dependency that no longer exists (removed by
    /// retention or deleted): it could never run, so it stays as it is.
    #[error("job {id} depends on job {dependency}, which no longer exists: it cannot be retried")]
    DependencyGone {
        /// The job asked to be retried.
        id: JobId,
        /// Its dependency that is gone.
        dependency: JobId,
    },
    /// A `depends_on` entry names a job that does not exist; the submit is refused whole.
    #[error("depends_on names job {0}, which does not exist")]
    UnknownDependency(JobId),
    /// A listing's cursor is not one a listing returned.
    #[error("cursor '{0}' is not one this listing returned")]
    InvalidCursor(String),
    /// No schedule has this name.
    #[error("schedule '{0}' not found")]
    ScheduleNotFound(String),
    /// The backend failed on this call for a reason of its own (a bug); details are logged.
    #[error("internal error: {0}")]
    Internal(String),
    /// The backend cannot be reached right now; the call may succeed later.
    #[error("queue backend unavailable: {0}")]
    Unavailable(String),
    /// A job names a limit that does not exist; the submit is refused whole.
    #[error("limits names '{0}', which does not exist")]
    UnknownLimit(String),
    /// A job costs more tokens than a rate it names ever allows: it could never run.
    #[error("cost {cost} is more than the {tokens} tokens limit '{limit}' allows per window")]
    CostOverLimit {
        /// The limit.
        limit: String,
        /// The job's cost.
        cost: u32,
        /// The tokens the limit's rate allows per window.
        tokens: u64,
    },
    /// No limit has this name.
    #[error("limit '{0}' not found")]
    LimitNotFound(String),
    /// The queue holds as many jobs waiting to run as it may: the submit is refused whole.
    #[error("queue '{queue}' is full ({max} jobs waiting to run); retry later")]
    QueueFull {
        /// The full queue.
        queue: String,
        /// Its bound on jobs waiting to run (`JOBYARD_MAX_QUEUED`).
        max: u64,
    },
}

/// The bounds a backend keeps: memory and Redis stay bounded under
/// steady load, and a producer faster than the workers is told to slow down.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct QueueLimits {
    /// The most jobs waiting to run (waiting, scheduled or queued) per queue.
    pub max_queued: u64,
    /// The most terminal jobs kept per queue; the oldest finished go first.
    pub retention_max_jobs: u64,
}

impl QueueLimits {
    /// The limits `config` names (`JOBYARD_MAX_QUEUED`, `JOBYARD_RETENTION_MAX_JOBS`).
    pub fn from_config(config: &crate::config::Config) -> Self {
        QueueLimits { max_queued: config.max_queued, retention_max_jobs: config.retention_max_jobs }
    }
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_queued: crate::config::DEFAULT_MAX_QUEUED,
            retention_max_jobs: crate::config::DEFAULT_RETENTION_MAX_JOBS,
        }
    }
}

/// Most jobs one periodic step (promotion, lease expiry, retention) handles per call, in every
/// backend: no call holds the store long whatever the backlog; one that stops there says so
/// ([`Changes::more`]) and is called again at once.
pub const STEP_LIMIT: usize = 250;

/// Most dependents one call settles (released after their dependency succeeded, cancelled
/// after it did not), in every backend: a job with more dependents than this has the rest
/// settled by the following periodic steps, this many per step, which say so
/// ([`Changes::more`]).
pub const SETTLE_LIMIT: usize = 1_000;

/// Most jobs one listing call reads while filtering, in every backend: a page whose filter
/// matches few jobs stops there and comes back short (even empty) with a cursor to go on from.
pub const LIST_EXAMINE: usize = 5_000;

/// Most jobs one read of a job's dependents, or of the jobs a limit holds back, answers: a
/// dashboard shows a sample, and the call stays one bounded round trip.
pub const MOST_LISTED: usize = 1_000;

/// Which worker slots ask for jobs: one job is claimed per name, so `workers.len()` is the
/// most this call returns. Only jobs of `kinds` (those this instance has handlers for) are
/// claimed: a job is never handed to an instance that cannot run it.
#[derive(Clone, Debug)]
pub struct Claim {
    /// The names of the free worker slots asking; each gets at most one job.
    pub workers: Vec<Arc<str>>,
    /// How long the claimed jobs' leases last unless renewed; an attempt whose lease expires is
    /// taken as lost.
    pub lease: Duration,
    /// The kinds this instance has handlers for: only their jobs are claimed.
    pub kinds: Arc<[Arc<str>]>,
}

/// The fencing pair of a running attempt: a completion, renewal or progress report is accepted
/// only while the job still runs under this token, so an attempt whose lease expired (and whose
/// job was handed to another worker) cannot overwrite the newer attempt's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LeaseRef {
    /// The running job.
    pub id: JobId,
    /// The token handed out with the claim that started this attempt.
    pub token: u64,
}

/// A job handed to a worker: its record as of the claim, and the lease it runs under.
#[derive(Clone, Debug)]
pub struct Claimed {
    /// The job's record as of the claim, its new attempt counted.
    pub record: JobRecord,
    /// The lease the attempt runs under: its completion, renewals and progress reports carry it.
    pub lease: LeaseRef,
}

/// How an attempt ended, as the worker reports it.
#[derive(Clone, Debug)]
pub enum Outcome {
    /// The handler returned this result.
    Succeeded(Json),
    /// `retry_at` is when to try again, or `None` when the job must not be retried.
    Failed {
        /// Why the attempt failed.
        error: String,
        /// When to try again; `None` when the job must not be retried.
        retry_at: Option<DateTime<Utc>>,
    },
    /// The attempt stopped because the job was cancelled (its handler returned a cancel, or was
    /// aborted after the cancel grace period); holds the reason.
    Cancelled(String),
}

/// One finished attempt.
#[derive(Clone, Debug)]
pub struct Completion {
    /// The lease the attempt ran under.
    pub lease: LeaseRef,
    /// How the attempt ended.
    pub outcome: Outcome,
}

/// What a lease renewal found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LeaseState {
    /// Still ours, renewed.
    Active,
    /// Still ours, renewed, and a cancel was requested: fire the token.
    CancelRequested,
    /// No longer ours (expired and reclaimed, or the job ended): stop the attempt.
    Lost,
}

/// What a call changed that the actors must react to.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Changes {
    /// Jobs that reached a terminal state (waiters are told).
    pub finished: Vec<JobId>,
    /// How many jobs became `queued` (idle workers are woken).
    pub ready: usize,
    /// The earliest `run_at` of any `scheduled` job, when this call scheduled one or is a tick
    /// (the scheduler wakes then).
    pub next_due: Option<DateTime<Utc>>,
    /// Completions, renewals or releases refused because the lease was no longer theirs.
    pub stale: usize,
    /// A periodic step stopped at its bound on work per call: call it again at once.
    pub more: bool,
    /// Running attempts this call took from workers that are gone (leases that expired, an
    /// instance restarted under its name): each is logged.
    pub taken_over: Vec<Takeover>,
}

impl Changes {
    /// Lowers `next_due` to `at` when that is earlier.
    pub fn note_due(&mut self, at: Option<DateTime<Utc>>) {
        self.next_due = match (self.next_due, at) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
}

/// The answer to a submit, in request order.
#[derive(Clone, Debug)]
pub struct Submitted {
    /// One entry per submitted job, in request order.
    pub jobs: Vec<SubmitResult>,
    /// What the submit changed that the actors must react to.
    pub changes: Changes,
}

/// One submitted job: `created` is false when its idempotency key returned an earlier job.
#[derive(Clone, Debug)]
pub struct SubmitResult {
    /// The job as stored: the earlier job when its idempotency key was seen.
    pub record: JobRecord,
    /// False when the idempotency key returned an earlier job instead of creating one.
    pub created: bool,
}

/// The answer to a cancel.
///
/// ```
/// use jobyard::CancelOutcome;
///
/// // What an API might answer to a cancel.
/// fn describe(outcome: &CancelOutcome) -> String {
///     let job = outcome.record();
///     match outcome {
///         CancelOutcome::Cancelled(_) => format!("job {} cancelled", job.id),
///         CancelOutcome::Requested(_) => format!("job {} is stopping", job.id),
///     }
/// }
/// ```
#[derive(Clone, Debug)]
pub enum CancelOutcome {
    /// The job was waiting, scheduled or queued and is now `cancelled`.
    Cancelled(JobRecord),
    /// The job is running: `cancel_requested` is set and its worker must stop it.
    Requested(JobRecord),
}

impl CancelOutcome {
    /// The job's record, whichever the outcome.
    pub fn record(&self) -> &JobRecord {
        match self {
            CancelOutcome::Cancelled(r) | CancelOutcome::Requested(r) => r,
        }
    }
}

/// Filters and paging of a job listing (newest first). The default lists the newest
/// [`ListQuery::DEFAULT_LIMIT`] jobs of every state, kind and queue.
///
/// ```
/// use jobyard::{JobStatus, ListQuery};
///
/// // The 20 newest `http` jobs that failed, in any queue.
/// let query = ListQuery {
///     status: Some(JobStatus::Failed),
///     kind: Some("http".into()),
///     limit: 20,
///     ..ListQuery::default()
/// };
/// assert_eq!(query.queue, None);
/// assert_eq!(ListQuery::default().limit, ListQuery::DEFAULT_LIMIT);
/// ```
#[derive(Clone, Debug)]
pub struct ListQuery {
    /// Only jobs in this state (`None`: any state).
    pub status: Option<JobStatus>,
    /// Only jobs of this kind (`None`: any kind).
    pub kind: Option<String>,
    /// Only jobs of this queue (`None`: any queue).
    pub queue: Option<String>,
    /// Only jobs of this group (`None`: any group, or none).
    pub group: Option<String>,
    /// Most jobs on the page (0 is taken as 1).
    pub limit: usize,
    /// Opaque: the `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

impl ListQuery {
    /// The page size of a listing that names none (the HTTP API's too).
    pub const DEFAULT_LIMIT: usize = 100;
}

impl Default for ListQuery {
    fn default() -> Self {
        ListQuery {
            status: None,
            kind: None,
            queue: None,
            group: None,
            limit: Self::DEFAULT_LIMIT,
            cursor: None,
        }
    }
}

/// One page of a listing.
///
/// ```
/// use jobyard::queue::{MemoryQueue, QueueBackend, QueueError};
/// use jobyard::{JobRecord, ListQuery};
///
/// // Every job `query` selects: page after page until no cursor is left (a page may come
/// // back short, even empty, with a cursor).
/// async fn all(
///     backend: &dyn QueueBackend,
///     mut query: ListQuery,
/// ) -> Result<Vec<JobRecord>, QueueError> {
///     let mut jobs = Vec::new();
///     loop {
///         let page = backend.list(&query).await?;
///         jobs.extend(page.jobs);
///         match page.next_cursor {
///             Some(cursor) => query.cursor = Some(cursor),
///             None => return Ok(jobs),
///         }
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), QueueError> {
/// assert!(all(&MemoryQueue::new(), ListQuery::default()).await?.is_empty());
/// # Ok(()) }
/// ```
#[derive(Clone, Debug, Serialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct Page {
    /// The jobs of this page, newest first.
    pub jobs: Vec<JobRecord>,
    /// Where the next page starts (pass it as [`ListQuery::cursor`]); `None` on the last page. A
    /// page may come back short, even empty, with a cursor: read on until there is none.
    pub next_cursor: Option<String>,
}

/// Jobs per state in one queue.
///
/// ```
/// use jobyard::queue::StateCounts;
/// use jobyard::JobStatus;
///
/// // In the order of `JobStatus::ALL`: waiting, scheduled, queued, running, succeeded...
/// let counts = StateCounts::from_array([0, 2, 10, 4, 120, 3, 1]);
/// assert_eq!(counts.queued, 10);
/// assert_eq!(counts.get(JobStatus::Failed), 3);
/// let total: u64 = JobStatus::ALL.into_iter().map(|status| counts.get(status)).sum();
/// assert_eq!(total, 140);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct StateCounts {
    /// Jobs waiting for their dependencies.
    pub waiting: u64,
    /// Jobs waiting for their `run_at` (delayed, or waiting for a retry).
    pub scheduled: u64,
    /// Jobs ready to run.
    pub queued: u64,
    /// Jobs running.
    pub running: u64,
    /// Jobs that succeeded (and are still retained).
    pub succeeded: u64,
    /// Jobs that failed (and are still retained).
    pub failed: u64,
    /// Jobs cancelled (and still retained).
    pub cancelled: u64,
    /// Of the queued jobs, those a limit holds back now (exhausted, full or held).
    #[serde(default)]
    pub throttled: u64,
}

impl StateCounts {
    /// Builds the counts from an array indexed by [`JobStatus::index`].
    pub fn from_array(counts: [u64; 7]) -> Self {
        let [waiting, scheduled, queued, running, succeeded, failed, cancelled] = counts;
        StateCounts {
            waiting,
            scheduled,
            queued,
            running,
            succeeded,
            failed,
            cancelled,
            throttled: 0,
        }
    }

    /// The count of jobs in `status`.
    pub fn get(&self, status: JobStatus) -> u64 {
        match status {
            JobStatus::Waiting => self.waiting,
            JobStatus::Scheduled => self.scheduled,
            JobStatus::Queued => self.queued,
            JobStatus::Running => self.running,
            JobStatus::Succeeded => self.succeeded,
            JobStatus::Failed => self.failed,
            JobStatus::Cancelled => self.cancelled,
        }
    }
}

/// Counts per queue name.
///
/// ```
/// use jobyard::queue::{QueueStats, StateCounts};
///
/// // As `QueueBackend::stats` returns it, and the `queues` of `Client::stats`:
/// let mut stats = QueueStats::new();
/// stats.insert("default".into(), StateCounts { queued: 7, running: 2, ..StateCounts::default() });
/// stats.insert("emails".into(), StateCounts { queued: 3, failed: 1, ..StateCounts::default() });
/// let queued: u64 = stats.values().map(|counts| counts.queued).sum();
/// assert_eq!(queued, 10);
/// let failing: Vec<&String> = stats.iter().filter(|(_, c)| c.failed > 0).map(|(q, _)| q).collect();
/// assert_eq!(failing, ["emails"]);
/// ```
pub type QueueStats = BTreeMap<String, StateCounts>;

/// What other instances sharing a backend did that this one must react to.
#[derive(Clone, Debug, PartialEq)]
pub enum BackendEvent {
    /// A cancel was requested for a running job (its worker, wherever it is, must stop it).
    CancelRequested(JobId),
    /// These jobs reached a terminal state (long-poll waiters are told).
    Finished(Vec<JobId>),
    /// Events may have been missed (the link was lost): re-read what is waited on.
    Resync,
}

/// Where a backend delivers [`BackendEvent`]s.
pub type EventSink = Arc<dyn Fn(BackendEvent) + Send + Sync>;

/// Where a backend delivers the messages of the event feed other instances publish.
pub type FeedSink = Arc<dyn Fn(&[u8]) + Send + Sync>;

/// The job store. See the module doc for the shape of the calls.
///
/// ```no_run
/// use std::sync::Arc;
/// use jobyard::queue::{ListQuery, MemoryQueue, QueueBackend, QueueError};
/// use jobyard::{JobStatus, Runtime};
///
/// // Prints each queue's failed count and the newest failed jobs, whatever the backend.
/// async fn report(backend: &dyn QueueBackend) -> Result<(), QueueError> {
///     for (queue, counts) in backend.stats().await? {
///         println!("{queue}: {} failed", counts.get(JobStatus::Failed));
///     }
///     let failed = ListQuery { status: Some(JobStatus::Failed), ..ListQuery::default() };
///     for job in backend.list(&failed).await?.jobs {
///         println!("{} ({}): {}", job.id, job.kind, job.error.unwrap_or_default());
///     }
///     Ok(())
/// }
///
/// #[actix::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     // A runtime stores its jobs in the backend it is given.
///     let backend: Arc<dyn QueueBackend> = Arc::new(MemoryQueue::new());
///     let runtime =
///         Runtime::builder().queue_backend(backend.clone()).with_builtin_kinds().start()?;
///     report(&*backend).await?;
///     runtime.shutdown().await;
///     Ok(())
/// }
/// ```
#[async_trait]
pub trait QueueBackend: Send + Sync + 'static {
    /// `"memory"` or `"redis"`, for stats and logs.
    fn name(&self) -> &'static str;

    /// Inserts a batch, all or nothing. Every `depends_on` id must exist (in the store or in the
    /// batch); a job whose idempotency key was seen returns the earlier job instead.
    async fn submit(&self, jobs: Vec<NewJob>, now: DateTime<Utc>) -> Result<Submitted, QueueError>;

    /// Claims up to `claim.workers.len()` queued jobs in claim order (see [`flow`]: highest
    /// priority first, groups of a queue in turn, then oldest first), after promoting
    /// `scheduled` jobs that are due. Jobs of paused queues, and jobs a limit holds back, are
    /// passed over without holding up the rest; [`Claims::retry_at`] says when a rate or hold
    /// that held some back frees next.
    async fn claim(&self, claim: Claim, now: DateTime<Utc>) -> Result<Claims, QueueError>;

    /// [`QueueBackend::claim`], keeping only the jobs.
    async fn dequeue(&self, claim: Claim, now: DateTime<Utc>) -> Result<Vec<Claimed>, QueueError> {
        Ok(self.claim(claim, now).await?.jobs)
    }

    /// Records finished attempts; stale leases are counted in [`Changes::stale`] and ignored.
    async fn complete(
        &self,
        done: Vec<Completion>,
        now: DateTime<Utc>,
    ) -> Result<Changes, QueueError>;

    /// Extends the leases to `now + lease`, reporting what became of each.
    async fn renew(
        &self,
        leases: Vec<LeaseRef>,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<LeaseState>, QueueError>;

    /// Hands running jobs back to `queued` without counting their attempt (graceful shutdown).
    async fn release(
        &self,
        leases: Vec<LeaseRef>,
        now: DateTime<Utc>,
    ) -> Result<Changes, QueueError>;

    /// Stores the latest progress report of a running attempt.
    async fn report_progress(
        &self,
        lease: LeaseRef,
        progress: Json,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError>;

    /// Cancels a job: at once unless it runs, else by request to its worker.
    async fn cancel(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(CancelOutcome, Changes), QueueError>;

    /// Puts a `failed` or `cancelled` job back to run, with a fresh set of attempts: `attempts`
    /// goes back to 0; `error`, `result`, `finished_at`, `cancel_requested`, `worker` and
    /// `progress` are cleared; `run_at` becomes `now`; the `history` is kept, so the earlier
    /// attempts' errors stay visible. The job becomes `queued` (and waits for its limits and
    /// paused queue like any other), or `waiting` when some of its dependencies have not
    /// succeeded (it runs once they all have; a dependency that failed must be retried first).
    /// Jobs that were cancelled because this one failed are not revived: retry them too. Not
    /// refused by [`QueueLimits::max_queued`]: the job is already stored.
    ///
    /// Errors: [`QueueError::NotFound`]; [`QueueError::InvalidState`] in any other state;
    /// [`QueueError::DependencyGone`] when a dependency it would wait for no longer exists.
    async fn retry(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(JobRecord, Changes), QueueError>;

    /// Makes a `scheduled` job (delayed, or waiting for its next retry) due now: its `run_at`
    /// becomes `now` and it is `queued` (its limits and paused queue still apply).
    ///
    /// Errors: [`QueueError::NotFound`]; [`QueueError::InvalidState`] in any other state.
    async fn run_now(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(JobRecord, Changes), QueueError>;

    /// Removes a terminal job at once, as retention would: from every index and count, with
    /// its idempotency key (a later submit with it creates a new job). Answers the removed
    /// record. Jobs that a retry made wait for it are cancelled (it can never succeed now).
    /// The cached result is the caller's to remove.
    ///
    /// Errors: [`QueueError::NotFound`]; [`QueueError::InvalidState`] when it has not ended.
    async fn delete(
        &self,
        id: JobId,
        now: DateTime<Utc>,
    ) -> Result<(JobRecord, Changes), QueueError>;

    /// The job `id` as it is now; `None` when there is no such job.
    async fn get(&self, id: JobId) -> Result<Option<JobRecord>, QueueError>;

    /// A page of the jobs `query` selects, newest first. At most [`LIST_EXAMINE`] jobs are read per
    /// call, so a page may come back short with a cursor to go on from.
    async fn list(&self, query: &ListQuery) -> Result<Page, QueueError>;

    /// The periodic step: promotes due jobs, expires leases, removes terminal jobs older than
    /// `retention` or beyond the count the limits keep; at most [`STEP_LIMIT`] of each per call.
    async fn tick(&self, now: DateTime<Utc>, retention: Duration) -> Result<Changes, QueueError>;

    /// Jobs per state in every queue (`throttled` left at 0: see [`QueueBackend::throttled`]).
    async fn stats(&self) -> Result<QueueStats, QueueError>;

    /// Queued jobs a limit holds back now, per queue (queues with none left out).
    async fn throttled(&self, now: DateTime<Utc>) -> Result<BTreeMap<String, u64>, QueueError>;

    /// Queued jobs per kind (a kind no running instance handles shows here, waiting).
    async fn queued_by_kind(&self) -> Result<BTreeMap<String, u64>, QueueError>;

    /// Cheap round trip for readiness checks.
    async fn ping(&self) -> Result<(), QueueError>;

    /// Creates or replaces a schedule; true when it was created.
    async fn put_schedule(&self, schedule: Schedule) -> Result<bool, QueueError>;

    /// The schedule `name`; `None` when there is none.
    async fn get_schedule(&self, name: &str) -> Result<Option<Schedule>, QueueError>;

    /// Every schedule, in name order.
    async fn list_schedules(&self) -> Result<Vec<Schedule>, QueueError>;

    /// Removes a schedule; true when it existed.
    async fn delete_schedule(&self, name: &str) -> Result<bool, QueueError>;

    /// Records that a schedule fired (or skipped ahead to `fire.next_run_at`).
    async fn record_fire(&self, name: &str, fire: Fire) -> Result<(), QueueError>;

    /// Creates or replaces limit `name` (validated by the caller); true when it was created.
    /// A replaced limit keeps its state (tokens taken, jobs running, hold).
    async fn put_limit(
        &self,
        name: &str,
        spec: LimitSpec,
        now: DateTime<Utc>,
    ) -> Result<(Limit, bool), QueueError>;

    /// Limit `name` with its state; `None` when there is none.
    async fn get_limit(&self, name: &str, now: DateTime<Utc>) -> Result<Option<Limit>, QueueError>;

    /// Every limit with its state, in name order.
    async fn list_limits(&self, now: DateTime<Utc>) -> Result<Vec<Limit>, QueueError>;

    /// Removes limit `name`; true when it existed. Jobs that name it run as if it did not.
    async fn delete_limit(&self, name: &str) -> Result<bool, QueueError>;

    /// Holds every job under limit `name` until `until` (an upstream said no more calls before
    /// then); a later hold never shortens an earlier one. `LimitNotFound` when there is none.
    async fn hold_limit(
        &self,
        name: &str,
        until: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), QueueError>;

    /// Pauses (`paused`) or resumes a queue: a paused queue keeps its jobs and accepts submits,
    /// and claims take none of its jobs until it is resumed.
    async fn pause_queue(&self, queue: &str, paused: bool) -> Result<(), QueueError>;

    /// Every queue that holds jobs or is paused, in name order, with its counts.
    async fn queues(&self, now: DateTime<Utc>) -> Result<Vec<QueueInfo>, QueueError>;

    /// Sets the weight of group `name` (`None`: back to 1).
    async fn set_group_weight(&self, name: &str, weight: Option<u32>) -> Result<(), QueueError>;

    /// The groups whose weight is not 1, in name order.
    async fn group_weights(&self) -> Result<Vec<GroupWeight>, QueueError>;

    // What dashboards read beside the jobs themselves.

    /// The jobs still waiting on job `id`, at most `most` (read from the index that releases
    /// them when it succeeds, in no particular order): once `id` ended and its dependents were
    /// settled, none. `NotFound` when there is no such job.
    async fn dependents(&self, id: JobId, most: usize) -> Result<Vec<JobRecord>, QueueError>;

    /// The queued jobs naming limit `name` that it holds back now, at most `most`, in claim
    /// order (highest priority first, then oldest). `LimitNotFound` when there is no such limit.
    async fn limit_jobs(
        &self,
        name: &str,
        most: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<JobRecord>, QueueError>;

    /// Adds an instance's counts of finished jobs per bucket to the history every instance of
    /// a shared store keeps (see [`history`]); a backend of one process keeps none.
    async fn add_finished(
        &self,
        _counts: &BTreeMap<history::Bucket, history::Counts>,
    ) -> Result<(), QueueError> {
        Ok(())
    }

    /// The shared history's counts of buckets `from..=to`; `None` from a backend of one
    /// process, whose instance's own counts are the whole history.
    async fn finished_history(
        &self,
        _from: history::Bucket,
        _to: history::Bucket,
    ) -> Result<Option<BTreeMap<history::Bucket, history::Counts>>, QueueError> {
        Ok(None)
    }

    /// Whether other processes share this store. Their changes reach this instance only through
    /// [`QueueBackend::listen`] and [`QueueBackend::wait_for_work`]; a backend of one process
    /// reports every change in the [`Changes`] of its calls.
    fn shared(&self) -> bool {
        false
    }

    /// Starts delivering what other instances change (cancels, finished jobs) to `sink`.
    fn listen(&self, _sink: EventSink) {}

    /// Waits until work may have become ready anywhere, or `timeout` passed; true when woken.
    /// Only an idle instance of a shared store calls it.
    async fn wait_for_work(&self, timeout: Duration) -> Result<bool, QueueError> {
        tokio::time::sleep(timeout).await;
        Ok(false)
    }

    /// Sends `message` (this instance's job changes, for the event stream) to the instances
    /// sharing this store whose readers want them ([`QueueBackend::feed_subscribe`]).
    async fn feed_publish(&self, _message: String) -> Result<(), QueueError> {
        Ok(())
    }

    /// How many instances subscribe to the feed now (this one included when it does): while
    /// none does, nobody publishes.
    async fn feed_readers(&self) -> Result<u64, QueueError> {
        Ok(0)
    }

    /// Delivers what other instances publish on the feed to `sink` until `stop` is cancelled;
    /// `on_state(true)` each time the subscription is made again after a loss (messages may
    /// have been missed meanwhile).
    fn feed_subscribe(
        &self,
        _sink: FeedSink,
        _on_state: Arc<dyn Fn(bool) + Send + Sync>,
        _stop: tokio_util::sync::CancellationToken,
    ) {
    }

    /// Asks to hear (through [`QueueBackend::listen`]) when job `id` ends, until `until`.
    async fn watch(&self, _id: JobId, _until: DateTime<Utc>) -> Result<(), QueueError> {
        Ok(())
    }

    // The instance registry and takeovers (see [`instances`]). The defaults are a backend
    // without a registry: every name is free, no instance is listed, nothing is taken over.

    /// Records a heartbeat: `instance`'s entry under its name, with `now` as its last sighting,
    /// unless another run holds the name and was seen within [`instances::GONE_AFTER`]
    /// ([`Registration::Held`]); `displace` names a run that may be replaced all the same (one
    /// found dead by watching it). Entries gone for [`instances::PRUNE_AFTER`] are removed.
    async fn heartbeat(
        &self,
        _instance: &InstanceInfo,
        _displace: Option<&str>,
        _now: DateTime<Utc>,
    ) -> Result<Registration, QueueError> {
        Ok(Registration::Recorded { replaced: None })
    }

    /// The instances seen within [`instances::GONE_AFTER`] of `now`, by name.
    async fn instances(&self, _now: DateTime<Utc>) -> Result<Vec<InstanceInfo>, QueueError> {
        Ok(Vec::new())
    }

    /// Removes the entry of instance `name` if run `run_id` still holds it (a clean shutdown).
    async fn leave(&self, _name: &str, _run_id: &str) -> Result<(), QueueError> {
        Ok(())
    }

    /// Takes back the running attempts of the workers of instance `name` (`<name>/...`), left by
    /// a run of it that died: each counts as a failed attempt with error
    /// [`instances::restarted_error`], as after an expired lease, and is reported in
    /// [`Changes::taken_over`]. At most [`STEP_LIMIT`] per call ([`Changes::more`] when more are
    /// left). The caller must not have claimed anything under that name yet.
    async fn take_over(&self, _name: &str, _now: DateTime<Utc>) -> Result<Changes, QueueError> {
        Ok(Changes::default())
    }

    /// Attempts taken over since the backend's data began, per cause.
    async fn takeovers(&self) -> Result<TakeoverCounts, QueueError> {
        Ok(TakeoverCounts::default())
    }
}
