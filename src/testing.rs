//! A testing kit for code that uses jobyard.
//!
//! - [`TestContext`] runs one handler, as the runtime would, without a runtime: give it
//!   extensions and its dependencies' results, cancel it mid-run, read the progress it
//!   reported.
//! - [`TestClock`] runs a whole runtime on a clock the test moves forward: retries, delays,
//!   leases and cron ticks come due at once instead of after a sleep.
//!
//! ```
//! use jobyard::testing::TestContext;
//! use jobyard::{Job, JobContext, JobError};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct Double(u32);
//!
//! impl Job for Double {
//!     const KIND: &'static str = "double";
//!     type Output = u32;
//!     async fn run(self, ctx: JobContext) -> Result<u32, JobError> {
//!         ctx.progress(&"halfway");
//!         Ok(self.0 * 2)
//!     }
//! }
//!
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let ctx = TestContext::new();
//! assert_eq!(ctx.run(Double(21)).await, Ok(42));
//! assert_eq!(ctx.progress(), [serde_json::json!("halfway")]);
//! # }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::job::handler::{Flow, RecordLookup};
use crate::job::record::to_json;
use crate::job::{Extensions, Job, JobContext, JobError, JobId, JobRecord, JobStatus, NewJob};

/// The context one handler runs with in a test: a job id, an attempt number, extensions,
/// dependencies with their results, a cancellation token and a record of progress reports.
///
/// [`TestContext::run`] runs a job as the runtime does: its payload and its output make the
/// round trip through JSON, so a type that does not serialise as expected fails here too.
///
/// ```
/// use jobyard::testing::TestContext;
/// use jobyard::{JobContext, JobError};
///
/// struct Quota(u32);
///
/// // A helper that handlers share, tested with the context they would pass it.
/// fn batch_size(ctx: &JobContext) -> Result<u32, JobError> {
///     let quota = ctx.extension::<Quota>().ok_or_else(|| JobError::fatal("no Quota"))?;
///     Ok(quota.0 >> (ctx.attempt() - 1)) // halved on each retry
/// }
///
/// let ctx = TestContext::new().attempt(3, 5).extension(Quota(100));
/// assert_eq!(batch_size(&ctx.context()), Ok(25));
/// assert_eq!(ctx.context().job_id(), ctx.job_id());
/// assert_eq!(batch_size(&TestContext::new().context()), Err(JobError::fatal("no Quota")));
/// ```
#[derive(Clone)]
pub struct TestContext {
    id: JobId,
    attempt: (u32, u32),
    depends_on: Vec<JobId>,
    records: HashMap<JobId, JobRecord>,
    extensions: Extensions,
    cancel: CancellationToken,
    progress: Arc<Mutex<Vec<serde_json::Value>>>,
    limits: Vec<Arc<str>>,
    holds: Arc<Mutex<Vec<Hold>>>,
}

/// A hold a handler asked for: the limit, and until when.
pub type Hold = (String, DateTime<Utc>);

impl Default for TestContext {
    fn default() -> Self {
        Self::new()
    }
}

impl TestContext {
    /// A first attempt (of 3) of a fresh job id, with no extensions and no dependencies.
    pub fn new() -> Self {
        TestContext {
            id: JobId::new(),
            attempt: (1, 3),
            depends_on: Vec::new(),
            records: HashMap::new(),
            extensions: Extensions::default(),
            cancel: CancellationToken::new(),
            progress: Arc::default(),
            limits: Vec::new(),
            holds: Arc::default(),
        }
    }

    /// Names a limit the job runs under (what [`JobContext::limits`] returns).
    pub fn limit(mut self, name: &str) -> Self {
        self.limits.push(Arc::from(name));
        self
    }

    /// Every hold the handler asked for ([`JobContext::limit_exhausted`]), oldest first.
    pub fn holds(&self) -> Vec<Hold> {
        self.holds.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Runs as attempt `attempt` of `max_attempts`.
    pub fn attempt(mut self, attempt: u32, max_attempts: u32) -> Self {
        self.attempt = (attempt, max_attempts);
        self
    }

    /// Gives the handler a shared value (read with [`JobContext::extension`]).
    pub fn extension<T: Send + Sync + 'static>(mut self, value: T) -> Self {
        self.extensions.insert(value);
        self
    }

    /// Adds a dependency: a job of kind `J` that succeeded with `output`, which the handler
    /// reads with [`JobContext::result_of`] or [`JobContext::dependency_results`]. Returns its
    /// id.
    ///
    /// ```
    /// use jobyard::testing::TestContext;
    /// use jobyard::{Job, JobContext, JobError};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Fetch { url: String }
    /// # impl Job for Fetch {
    /// #     const KIND: &'static str = "fetch";
    /// #     type Output = String;
    /// #     async fn run(self, _: JobContext) -> Result<String, JobError> { Ok(String::new()) }
    /// # }
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct WordCount;
    ///
    /// impl Job for WordCount {
    ///     const KIND: &'static str = "word_count";
    ///     type Output = usize;
    ///     async fn run(self, ctx: JobContext) -> Result<usize, JobError> {
    ///         let page = ctx.result_of::<Fetch>(ctx.dependencies()[0]).await?;
    ///         Ok(page.split_whitespace().count())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut ctx = TestContext::new();
    /// let fetch = ctx.dependency::<Fetch>(&"to be or not to be".to_string());
    /// assert_eq!(ctx.context().dependencies(), [fetch]);
    /// assert_eq!(ctx.run(WordCount).await, Ok(6));
    /// # }
    /// ```
    pub fn dependency<J: Job>(&mut self, output: &J::Output) -> JobId {
        let id = JobId::new();
        let mut record = new_record(id, J::KIND);
        record.status = JobStatus::Succeeded;
        record.result = Some(to_json(output).expect("a dependency's output serialises to JSON"));
        self.records.insert(id, record);
        self.depends_on.push(id);
        id
    }

    /// Makes any job record readable by the handler (a dependency that failed, a job still
    /// running), without making it a dependency.
    ///
    /// ```
    /// use jobyard::testing::TestContext;
    /// use jobyard::{Job, JobContext, JobError, JobId, JobRecord};
    /// use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct Fetch;
    /// # impl Job for Fetch {
    /// #     const KIND: &'static str = "fetch";
    /// #     type Output = String;
    /// #     async fn run(self, _: JobContext) -> Result<String, JobError> { Ok(String::new()) }
    /// # }
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct WordCount { fetch: JobId }
    ///
    /// impl Job for WordCount {
    ///     const KIND: &'static str = "word_count";
    ///     type Output = usize;
    ///     async fn run(self, ctx: JobContext) -> Result<usize, JobError> {
    ///         Ok(ctx.result_of::<Fetch>(self.fetch).await?.split_whitespace().count())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), serde_json::Error> {
    /// // A `fetch` job that failed: reading its result is a fatal error.
    /// let now = chrono::Utc::now();
    /// let failed: JobRecord = serde_json::from_str(&serde_json::json!({
    ///     "id": JobId::new(), "kind": "fetch", "payload": null, "queue": "default",
    ///     "priority": 0, "status": "failed", "attempts": 3, "max_attempts": 3,
    ///     "backoff": jobyard::Backoff::default(), "timeout_ms": 30_000, "depends_on": [],
    ///     "created_at": now, "updated_at": now, "error": "HTTP 404", "history": [],
    ///     "cancel_requested": false,
    /// }).to_string())?;
    /// let job = WordCount { fetch: failed.id };
    /// let ctx = TestContext::new().record(failed);
    /// assert!(matches!(ctx.run(job).await, Err(JobError::Fatal(_))));
    /// # Ok(()) }
    /// ```
    pub fn record(mut self, record: JobRecord) -> Self {
        self.records.insert(record.id, record);
        self
    }

    /// The job id the handler sees.
    pub fn job_id(&self) -> JobId {
        self.id
    }

    /// Cancels the job: the handler's token fires, now or while it runs.
    ///
    /// ```
    /// use std::time::Duration;
    /// use jobyard::testing::TestContext;
    /// use jobyard::{Job, JobContext, JobError};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Export { rows: u32 }
    ///
    /// impl Job for Export {
    ///     const KIND: &'static str = "export";
    ///     type Output = u32;
    ///     async fn run(self, ctx: JobContext) -> Result<u32, JobError> {
    ///         for row in 0..self.rows {
    ///             if ctx.is_cancelled() {
    ///                 return Err(JobError::Cancelled);
    ///             }
    ///             ctx.progress(&row);
    ///             tokio::time::sleep(Duration::from_millis(1)).await;
    ///         }
    ///         Ok(self.rows)
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// // Cancelled before it starts:
    /// let ctx = TestContext::new();
    /// ctx.cancel();
    /// assert_eq!(ctx.run(Export { rows: 10 }).await, Err(JobError::Cancelled));
    ///
    /// // Cancelled while it runs, from another task:
    /// let ctx = TestContext::new();
    /// let token = ctx.cancellation_token();
    /// tokio::spawn(async move {
    ///     tokio::time::sleep(Duration::from_millis(20)).await;
    ///     token.cancel();
    /// });
    /// assert_eq!(ctx.run(Export { rows: 1_000_000 }).await, Err(JobError::Cancelled));
    /// assert!(!ctx.progress().is_empty());
    /// # }
    /// ```
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// The token the handler observes (to cancel it from another task at a chosen moment).
    pub fn cancellation_token(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// Every progress report made so far, oldest first.
    pub fn progress(&self) -> Vec<serde_json::Value> {
        self.progress.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The context a handler gets.
    pub fn context(&self) -> JobContext {
        let records = Arc::new(self.records.clone());
        let lookup = RecordLookup::new(move |id| {
            let record = records.get(&id).cloned();
            Box::pin(async move { Ok(record) })
        });
        let reports = self.progress.clone();
        let sink = Arc::new(move |progress: crate::job::Json| {
            let value = serde_json::from_str(progress.get()).unwrap_or(serde_json::Value::Null);
            reports.lock().unwrap_or_else(PoisonError::into_inner).push(value);
        });
        let holds = self.holds.clone();
        let hold = Arc::new(move |_: JobId, limit: &str, until: DateTime<Utc>| {
            holds.lock().unwrap_or_else(PoisonError::into_inner).push((limit.to_owned(), until));
        });
        JobContext::new(
            self.id,
            self.attempt,
            self.depends_on.clone().into(),
            lookup,
            self.cancel.clone(),
            sink,
            self.extensions.clone(),
            Flow { limits: self.limits.clone().into(), hold },
        )
    }

    /// Runs `job` once with this context, its payload and output through JSON as in the
    /// runtime. Needs a tokio runtime (`#[tokio::test]` will do; no actix system is needed).
    pub async fn run<J: Job>(&self, job: J) -> Result<J::Output, JobError> {
        let payload = serde_json::to_string(&job).map_err(JobError::fatal)?;
        let job: J = serde_json::from_str(&payload)
            .map_err(|err| JobError::fatal(format!("invalid payload: {err}")))?;
        let output = job.run(self.context()).await?;
        let json = serde_json::to_string(&output).map_err(JobError::fatal)?;
        serde_json::from_str(&json).map_err(|err| JobError::fatal(format!("output: {err}")))
    }
}

fn new_record(id: JobId, kind: &str) -> JobRecord {
    let job = NewJob {
        id,
        kind: Arc::from(kind),
        payload: crate::job::record::json_null(),
        queue: Arc::from("default"),
        priority: 0,
        max_attempts: 1,
        backoff: Default::default(),
        timeout_ms: 0,
        run_at: None,
        depends_on: Vec::new(),
        idempotency_key: None,
        limits: crate::job::spec::no_limits(),
        cost: 1,
        group: None,
        trace: Default::default(),
    };
    job.into_record(JobStatus::Queued, Utc::now())
}

/// A clock a test moves forward, for a whole runtime: give it to
/// [`RuntimeBuilder::clock`](crate::runtime::RuntimeBuilder::clock), then
/// [`TestClock::advance`] past a retry's backoff, a delay, a lease or a cron tick, and what
/// was due happens within the scheduler's next step (at once, not after the time skipped).
///
/// The runtime's time is the system clock plus what was skipped: time still flows, so tests
/// keep waiting for outcomes by polling with a deadline. Handlers' own timers (their
/// `timeout`, their sleeps) run on real time.
///
/// ```no_run
/// # use std::time::Duration;
/// # use jobyard::testing::TestClock;
/// # use jobyard::Runtime;
/// # #[actix::main] async fn main() {
/// let clock = TestClock::new();
/// let runtime = Runtime::builder().with_builtin_kinds().clock(&clock).start().unwrap();
/// let spec = jobyard::JobSpec { delay_ms: Some(3_600_000), ..jobyard::JobSpec::new("noop") };
/// let job = runtime.submit_spec(spec).await.unwrap().record.id;
/// clock.advance(Duration::from_secs(3_600));
/// let done = runtime.wait(job, Duration::from_secs(5)).await.unwrap();
/// assert_eq!(done.status, jobyard::JobStatus::Succeeded);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct TestClock {
    clock: Clock,
}

impl Default for TestClock {
    fn default() -> Self {
        Self::new()
    }
}

impl TestClock {
    /// A clock at the system's time, until moved.
    pub fn new() -> Self {
        TestClock { clock: Clock::manual() }
    }

    /// Moves the clock `by` forward and wakes the runtime's scheduler.
    pub fn advance(&self, by: Duration) {
        self.clock.advance(by);
    }

    /// What the runtime takes the time to be.
    ///
    /// ```
    /// use std::time::Duration;
    /// use jobyard::testing::TestClock;
    ///
    /// let clock = TestClock::new();
    /// let start = clock.now();
    /// clock.advance(Duration::from_secs(3_600));
    /// assert!(clock.now() - start >= chrono::Duration::hours(1));
    /// ```
    pub fn now(&self) -> chrono::DateTime<Utc> {
        self.clock.now()
    }

    pub(crate) fn clock(&self) -> Clock {
        self.clock.clone()
    }
}
