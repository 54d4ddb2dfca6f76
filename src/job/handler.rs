//! The embedder's side of a job: the typed [`Job`] trait, the [`JobContext`] a handler runs
//! with, the [`JobError`] it may return, and the [`Registry`] that turns a kind name back into
//! a typed handler.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use std::time::Duration;

use futures_util::future::{try_join_all, BoxFuture, LocalBoxFuture};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::record::{to_json, JobId, JobRecord, Json, NoOutput};
use super::spec::KindLookup;

/// A kind of job, with a typed payload (the implementing type) and a typed output.
///
/// ```
/// use jobyard::{Job, JobContext, JobError};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct Greet { name: String }
///
/// impl Job for Greet {
///     const KIND: &'static str = "greet";
///     type Output = String;
///     async fn run(self, _ctx: JobContext) -> Result<String, JobError> {
///         Ok(format!("hello, {}", self.name))
///     }
/// }
/// ```
pub trait Job: Serialize + DeserializeOwned + 'static {
    /// The name clients submit this kind under.
    const KIND: &'static str;
    /// What a successful run returns; stored as the job's `result`.
    type Output: Serialize + DeserializeOwned + 'static;

    /// Runs one attempt. The future is built and polled on one of the runtime's handler
    /// threads and need not be `Send`. Other attempts share that thread: CPU-heavy work and
    /// blocking calls belong in `tokio::task::spawn_blocking` (a handler that holds its thread
    /// too long is logged and counted in the stats).
    fn run(self, ctx: JobContext) -> impl Future<Output = Result<Self::Output, JobError>>;
}

/// Why an attempt did not succeed.
///
/// Any error type converts into it with `?`, as a retryable failure carrying the error's
/// message (and its causes); say `.map_err(JobError::fatal)` when no retry can help.
///
/// ```
/// use jobyard::JobError;
///
/// fn parse(text: &str) -> Result<u32, JobError> {
///     // A parse error is retryable by `?`; this one never gets better, so it is fatal.
///     let number: u32 = text.parse().map_err(JobError::fatal)?;
///     let _ = std::fs::metadata("/")?; // an I/O error: retried with the job's backoff
///     Ok(number)
/// }
/// assert!(matches!(parse("x"), Err(JobError::Fatal(_))));
/// ```
///
/// It deliberately does not implement [`std::error::Error`] itself: that is what lets every
/// error convert into it (as `anyhow::Error` does).
///
/// ```
/// use std::time::Duration;
/// use jobyard::JobError;
///
/// // How a handler might sort an upstream's HTTP answers.
/// fn check(status: u16, retry_after_secs: Option<u64>) -> Result<(), JobError> {
///     match (status, retry_after_secs) {
///         (200..=299, _) => Ok(()),
///         (429 | 503, Some(secs)) => {
///             Err(JobError::retry_after(format!("upstream: {status}"), Duration::from_secs(secs)))
///         }
///         (400..=499, _) => Err(JobError::fatal(format!("upstream refused it: {status}"))),
///         _ => Err(JobError::retryable(format!("upstream: {status}"))),
///     }
/// }
/// let slow_down = JobError::Retryable {
///     message: "upstream: 429".into(),
///     retry_after: Some(Duration::from_secs(30)),
/// };
/// assert_eq!(check(429, Some(30)), Err(slow_down));
/// assert_eq!(check(502, None), Err(JobError::retryable("upstream: 502")));
/// assert!(matches!(check(404, None), Err(JobError::Fatal(_))));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum JobError {
    /// The attempt failed; the job is retried while attempts are left.
    Retryable {
        /// What went wrong (recorded in the job's `history`, and as its `error` at the end).
        message: String,
        /// Wait at least this long before the next attempt (e.g. an HTTP `Retry-After`),
        /// instead of the backoff policy's delay.
        retry_after: Option<Duration>,
    },
    /// The job can never succeed (bad input, a 4xx answer): it fails at once, without retry.
    Fatal(String),
    /// An upstream allows no more calls under limit `limit` until `until` (a 429 with
    /// `Retry-After`, an exhausted `X-RateLimit-Remaining`): every job under the limit is held
    /// until then, on every instance, and this attempt fails and is retried then (while
    /// attempts are left).
    LimitExhausted {
        /// The limit the upstream call ran under.
        limit: String,
        /// When the upstream allows calls again.
        until: DateTime<Utc>,
    },
    /// The handler stopped because its cancellation token fired.
    Cancelled,
}

impl JobError {
    /// A failure worth retrying.
    pub fn retryable(message: impl fmt::Display) -> Self {
        JobError::Retryable { message: message.to_string(), retry_after: None }
    }

    /// A failure worth retrying, not before `after`.
    pub fn retry_after(message: impl fmt::Display, after: Duration) -> Self {
        JobError::Retryable { message: message.to_string(), retry_after: Some(after) }
    }

    /// A failure that no retry can fix; takes a message or an error
    /// (`.map_err(JobError::fatal)`).
    pub fn fatal(message: impl fmt::Display) -> Self {
        JobError::Fatal(message.to_string())
    }

    /// An upstream allows no more calls under `limit` until `until`: see
    /// [`JobError::LimitExhausted`].
    pub fn limit_exhausted(limit: impl Into<String>, until: DateTime<Utc>) -> Self {
        JobError::LimitExhausted { limit: limit.into(), until }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            JobError::Retryable { message, .. } | JobError::Fatal(message) => f.write_str(message),
            JobError::LimitExhausted { limit, until } => {
                write!(f, "limit '{limit}' exhausted until {}", until.to_rfc3339())
            }
            JobError::Cancelled => f.write_str("cancelled"),
        }
    }
}

/// Any error is a retryable failure, described by its message and the chain of its causes.
impl<E: std::error::Error + Send + Sync + 'static> From<E> for JobError {
    fn from(err: E) -> Self {
        let mut message = err.to_string();
        let mut cause = err.source();
        while let Some(inner) = cause {
            let text = inner.to_string();
            // Wrappers often repeat their cause's message (`#[error(transparent)]`).
            if !message.ends_with(&text) {
                message.push_str(": ");
                message.push_str(&text);
            }
            cause = inner.source();
        }
        JobError::Retryable { message, retry_after: None }
    }
}

/// Sends a progress report of a running job to where it is stored.
pub type ProgressSink = Arc<dyn Fn(Json) + Send + Sync>;

/// Holds every job under a limit until a time, on every instance (see
/// [`JobContext::limit_exhausted`]); told which job asked. One per worker pool, shared by its
/// attempts.
pub type HoldSink = Arc<dyn Fn(JobId, &str, DateTime<Utc>) + Send + Sync>;

/// What an attempt knows of the flow control it runs under: the limits its job names, and
/// where holds go.
#[derive(Clone)]
pub struct Flow {
    /// The limits the job names.
    pub limits: Arc<[Arc<str>]>,
    /// Where [`JobContext::limit_exhausted`] sends its holds.
    pub hold: HoldSink,
}

/// Shared values handlers may use (a database pool, an HTTP client, the runtime's cache), by
/// type. Set on the runtime builder with `.extension(value)`; read with
/// [`JobContext::extension`].
///
/// ```
/// use jobyard::Extensions;
///
/// struct ApiKey(&'static str);
///
/// let mut extensions = Extensions::default();
/// extensions.insert(ApiKey("k-123"));
/// extensions.insert(ApiKey("k-456")); // replaces the value of the same type
/// assert_eq!(extensions.get::<ApiKey>().map(|key| key.0), Some("k-456"));
/// assert!(extensions.get::<String>().is_none());
/// ```
#[derive(Clone, Default)]
pub struct Extensions {
    values: Arc<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Extensions({} values)", self.values.len())
    }
}

impl Extensions {
    /// Adds `value`, replacing an earlier value of the same type.
    pub fn insert<T: Send + Sync + 'static>(&mut self, value: T) {
        Arc::make_mut(&mut self.values).insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value of type `T`, when one was inserted.
    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.values.get(&TypeId::of::<T>()).and_then(|v| v.downcast_ref::<T>())
    }
}

/// Reads a job's stored record: how a handler sees other jobs' results. The runtime reads its
/// queue backend (durable, kept as long as the job is retained); the testing kit a fixed set.
#[derive(Clone)]
pub(crate) struct RecordLookup(Arc<ReadRecord>);

type ReadRecord =
    dyn Fn(JobId) -> BoxFuture<'static, Result<Option<JobRecord>, JobError>> + Send + Sync;

impl RecordLookup {
    pub(crate) fn new(
        read: impl Fn(JobId) -> BoxFuture<'static, Result<Option<JobRecord>, JobError>>
            + Send
            + Sync
            + 'static,
    ) -> Self {
        RecordLookup(Arc::new(read))
    }

    async fn read(&self, id: JobId) -> Result<Option<JobRecord>, JobError> {
        (self.0)(id).await
    }
}

impl fmt::Debug for RecordLookup {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RecordLookup")
    }
}

/// What a handler gets besides its payload: which job and attempt it runs, the results of the
/// jobs it depended on, the cancellation token it should observe, a way to report progress,
/// and the runtime's shared values.
///
/// ```
/// use jobyard::testing::TestContext;
/// use jobyard::{CancellationToken, Job, JobContext, JobError};
/// use serde::{Deserialize, Serialize};
///
/// struct Mailer { from: String } // given to the runtime with `.extension(..)`
///
/// #[derive(Serialize, Deserialize)]
/// struct SendReport { to: String }
///
/// impl Job for SendReport {
///     const KIND: &'static str = "send_report";
///     type Output = String;
///     async fn run(self, ctx: JobContext) -> Result<String, JobError> {
///         let mailer = ctx.extension::<Mailer>().ok_or_else(|| JobError::fatal("no Mailer"))?;
///         // The last attempt sends plain text, in case the HTML was the trouble.
///         let plain = ctx.attempt() == ctx.max_attempts();
///         ctx.progress(&serde_json::json!({ "attempt": ctx.attempt(), "plain": plain }));
///         if ctx.is_cancelled() {
///             return Err(JobError::Cancelled);
///         }
///         // The mail client takes the token, to stop if the job is cancelled.
///         send(&mailer.from, &self.to, plain, ctx.cancellation_token()).await?;
///         Ok(format!("<{}@reports>", ctx.job_id())) // a message id that retries keep
///     }
/// }
/// # async fn send(_: &str, _: &str, _: bool, _: &CancellationToken) -> Result<(), JobError> { Ok(()) }
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let mailer = Mailer { from: "reports@example.com".into() };
/// let ctx = TestContext::new().attempt(3, 3).extension(mailer);
/// let message_id = ctx.run(SendReport { to: "ops@example.com".into() }).await;
/// assert_eq!(message_id, Ok(format!("<{}@reports>", ctx.job_id())));
/// assert_eq!(ctx.progress(), [serde_json::json!({ "attempt": 3, "plain": true })]);
/// # }
/// ```
#[derive(Clone)]
pub struct JobContext {
    id: JobId,
    attempt: u32,
    max_attempts: u32,
    depends_on: Arc<[JobId]>,
    records: RecordLookup,
    cancel: CancellationToken,
    progress: ProgressSink,
    extensions: Extensions,
    flow: Flow,
}

impl JobContext {
    /// A context for one attempt (built by the worker pool, and by [`crate::testing`]).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: JobId,
        (attempt, max_attempts): (u32, u32),
        depends_on: Arc<[JobId]>,
        records: RecordLookup,
        cancel: CancellationToken,
        progress: ProgressSink,
        extensions: Extensions,
        flow: Flow,
    ) -> Self {
        JobContext {
            id,
            attempt,
            max_attempts,
            depends_on,
            records,
            cancel,
            progress,
            extensions,
            flow,
        }
    }

    /// The limits the job runs under (as it named them at submit).
    pub fn limits(&self) -> &[Arc<str>] {
        &self.flow.limits
    }

    /// Says that an upstream allows no more calls under limit `limit` until `until` (its
    /// `Retry-After`, its `X-RateLimit-Reset`): every job under the limit is held until then,
    /// on every instance, so none of them spends an attempt on a call bound to be refused.
    /// The handler goes on as it sees fit; returning [`JobError::limit_exhausted`] does the
    /// same and retries this job then. A hold is never shortened by a later one; a limit that
    /// does not exist is not held (logged).
    ///
    /// ```
    /// use jobyard::testing::TestContext;
    /// use jobyard::{Job, JobContext, JobError};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct SyncIssues { remaining: u32, reset_at: i64 }
    ///
    /// impl Job for SyncIssues {
    ///     const KIND: &'static str = "sync_issues";
    ///     type Output = ();
    ///     async fn run(self, ctx: JobContext) -> Result<(), JobError> {
    ///         // ... the upstream call answered; its headers said how much is left:
    ///         if self.remaining == 0 {
    ///             let reset = chrono::DateTime::from_timestamp(self.reset_at, 0).unwrap();
    ///             ctx.limit_exhausted("github", reset); // this call succeeded; the next would not
    ///         }
    ///         Ok(())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let ctx = TestContext::new();
    /// ctx.run(SyncIssues { remaining: 0, reset_at: 1_900_000_000 }).await.unwrap();
    /// let (limit, until) = &ctx.holds()[0];
    /// assert_eq!((limit.as_str(), until.timestamp()), ("github", 1_900_000_000));
    /// # }
    /// ```
    pub fn limit_exhausted(&self, limit: &str, until: DateTime<Utc>) {
        (self.flow.hold)(self.id, limit, until)
    }

    /// A shared value of type `T` the runtime was given (see [`Extensions`]).
    pub fn extension<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.extensions.get::<T>()
    }

    /// The job this attempt runs.
    pub fn job_id(&self) -> JobId {
        self.id
    }

    /// The number of this attempt, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// The most attempts the job gets.
    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// The jobs this one depended on, in the order they were named. All of them succeeded:
    /// a job runs only then.
    pub fn dependencies(&self) -> &[JobId] {
        &self.depends_on
    }

    /// The typed output of job `job` (a dependency's, usually), read from the job store, where
    /// it is kept as long as the job is retained.
    ///
    /// Fails fatally when the job does not exist (any more), is of another kind than `J`,
    /// ended without success or its result does not decode; retryably when the job has not
    /// ended yet or the store cannot be reached.
    ///
    /// ```
    /// # use jobyard::{Job, JobContext, JobError};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct FetchStars { repo: String }
    /// # impl Job for FetchStars {
    /// #     const KIND: &'static str = "fetch_stars";
    /// #     type Output = u64;
    /// #     async fn run(self, _: JobContext) -> Result<u64, JobError> { Ok(1) }
    /// # }
    /// #[derive(Serialize, Deserialize)]
    /// struct TotalStars;
    ///
    /// impl Job for TotalStars {
    ///     const KIND: &'static str = "total_stars";
    ///     type Output = u64;
    ///     async fn run(self, ctx: JobContext) -> Result<u64, JobError> {
    ///         let mut total = 0;
    ///         for &dep in ctx.dependencies() {
    ///             total += ctx.result_of::<FetchStars>(dep).await?;
    ///         }
    ///         Ok(total)
    ///     }
    /// }
    /// ```
    pub async fn result_of<J: Job>(&self, job: impl Into<JobId>) -> Result<J::Output, JobError> {
        let id = job.into();
        let record = self.records.read(id).await?.ok_or_else(|| {
            JobError::fatal(format!("job {id} does not exist (or was removed after retention)"))
        })?;
        if &*record.kind != J::KIND {
            return Err(JobError::fatal(format!(
                "job {id} is a '{}' job, not a '{}' one",
                record.kind,
                J::KIND
            )));
        }
        record.output::<J::Output>().map_err(|why| match why {
            NoOutput::Missing => JobError::fatal(format!("job {id} succeeded without a result")),
            NoOutput::Decode(err) => JobError::fatal(format!(
                "the result of job {id} is not a {}: {err}",
                std::any::type_name::<J::Output>()
            )),
            NoOutput::NotSucceeded(status) if status.is_terminal() => {
                JobError::fatal(format!("job {id} ended {status}, without a result"))
            }
            NoOutput::NotSucceeded(status) => {
                JobError::retryable(format!("job {id} has not ended yet ({status})"))
            }
        })
    }

    /// The typed outputs of every dependency, in the order they were named: the fan-in of
    /// jobs of one kind. See [`JobContext::result_of`] for what fails.
    ///
    /// ```
    /// use jobyard::testing::TestContext;
    /// use jobyard::{Job, JobContext, JobError};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct CountLines { file: String }
    /// # impl Job for CountLines {
    /// #     const KIND: &'static str = "count_lines";
    /// #     type Output = u64;
    /// #     async fn run(self, _: JobContext) -> Result<u64, JobError> { Ok(0) }
    /// # }
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct SumLines;
    ///
    /// impl Job for SumLines {
    ///     const KIND: &'static str = "sum_lines";
    ///     type Output = u64;
    ///     async fn run(self, ctx: JobContext) -> Result<u64, JobError> {
    ///         Ok(ctx.dependency_results::<CountLines>().await?.into_iter().sum())
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let mut ctx = TestContext::new();
    /// ctx.dependency::<CountLines>(&120);
    /// ctx.dependency::<CountLines>(&80);
    /// assert_eq!(ctx.run(SumLines).await, Ok(200));
    /// # }
    /// ```
    pub async fn dependency_results<J: Job>(&self) -> Result<Vec<J::Output>, JobError> {
        // Read all at once: on Redis the reads share one round trip's wait instead of one each.
        try_join_all(self.depends_on.iter().map(|&dep| self.result_of::<J>(dep))).await
    }

    /// True once the job was cancelled (or the instance is shutting down past its grace).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the job is cancelled; `select!` on it to stop early.
    ///
    /// ```
    /// use std::time::Duration;
    /// use jobyard::testing::TestContext;
    /// use jobyard::{Job, JobContext, JobError};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// struct Poll { every_ms: u64 }
    ///
    /// impl Job for Poll {
    ///     const KIND: &'static str = "poll";
    ///     type Output = ();
    ///     async fn run(self, ctx: JobContext) -> Result<(), JobError> {
    ///         loop {
    ///             tokio::select! {
    ///                 _ = ctx.cancelled() => return Err(JobError::Cancelled),
    ///                 _ = tokio::time::sleep(Duration::from_millis(self.every_ms)) => {} // poll
    ///             }
    ///         }
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let ctx = TestContext::new();
    /// ctx.cancel();
    /// assert_eq!(ctx.run(Poll { every_ms: 1_000 }).await, Err(JobError::Cancelled));
    /// # }
    /// ```
    pub async fn cancelled(&self) {
        self.cancel.cancelled().await
    }

    /// The token itself, to hand to libraries that take one.
    pub fn cancellation_token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Records `progress` on the job (e.g. `{"done": 40, "total": 100}`); the latest wins.
    pub fn progress<T: Serialize>(&self, progress: &T) {
        match to_json(progress) {
            Ok(json) => (self.progress)(json),
            Err(err) => tracing::warn!(job_id = %self.id, "progress is not JSON: {err}"),
        }
    }
}

type RunFn =
    dyn Fn(Json, JobContext) -> LocalBoxFuture<'static, Result<Json, JobError>> + Send + Sync;
type CheckFn = dyn Fn(&Json) -> Result<(), String> + Send + Sync;

/// One registered kind, with its payload type erased.
struct Handler {
    name: Arc<str>,
    run: Arc<RunFn>,
    check: Arc<CheckFn>,
}

/// The kinds a runtime can run, by name.
#[derive(Default)]
pub struct Registry {
    handlers: HashMap<Arc<str>, Handler>,
}

impl Registry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers `J` under `J::KIND`, replacing an earlier handler of that name.
    pub fn register<J: Job>(&mut self) {
        let run =
            |payload: Json, ctx: JobContext| -> LocalBoxFuture<'static, Result<Json, JobError>> {
                Box::pin(async move {
                    let job: J = serde_json::from_str(payload.get())
                        .map_err(|err| JobError::fatal(format!("invalid payload: {err}")))?;
                    let output = job.run(ctx).await?;
                    to_json(&output)
                        .map_err(|err| JobError::fatal(format!("result is not JSON: {err}")))
                })
            };
        let check = |payload: &Json| -> Result<(), String> {
            serde_json::from_str::<J>(payload.get()).map(drop).map_err(|err| err.to_string())
        };
        let name: Arc<str> = Arc::from(J::KIND);
        self.handlers
            .insert(name.clone(), Handler { name, run: Arc::new(run), check: Arc::new(check) });
    }

    /// Every registered kind, sorted: what this instance's claims ask for.
    pub fn kinds(&self) -> Arc<[Arc<str>]> {
        let mut kinds: Vec<Arc<str>> = self.handlers.keys().cloned().collect();
        kinds.sort();
        kinds.into()
    }

    /// Starts one attempt of `kind`; `None` when the kind is not registered here.
    pub fn start(
        &self,
        kind: &str,
        payload: Json,
        ctx: JobContext,
    ) -> Option<LocalBoxFuture<'static, Result<Json, JobError>>> {
        self.handlers.get(kind).map(|h| (h.run)(payload, ctx))
    }
}

impl KindLookup for Registry {
    fn lookup(&self, kind: &str) -> Option<Arc<str>> {
        self.handlers.get(kind).map(|h| h.name.clone())
    }

    fn check_payload(&self, kind: &str, payload: &Json) -> Result<(), String> {
        match self.handlers.get(kind) {
            Some(handler) => (handler.check)(payload),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("fetching the repository failed")]
    struct Fetch(#[source] std::io::Error);

    #[test]
    fn any_error_is_retryable_with_its_causes_in_the_message() {
        let err = JobError::from(Fetch(std::io::Error::other("connection reset")));
        assert_eq!(err, JobError::retryable("fetching the repository failed: connection reset"));
        let parse = || -> Result<u32, JobError> { Ok("x".parse::<u32>()?) };
        assert!(matches!(parse(), Err(JobError::Retryable { retry_after: None, .. })));
    }

    #[test]
    fn fatal_takes_an_error_or_a_message() {
        let parse = || -> Result<u32, JobError> { "x".parse::<u32>().map_err(JobError::fatal) };
        assert_eq!(parse(), Err(JobError::Fatal("invalid digit found in string".into())));
        assert_eq!(JobError::fatal("bad input").to_string(), "bad input");
        assert_eq!(JobError::Cancelled.to_string(), "cancelled");
    }
}
