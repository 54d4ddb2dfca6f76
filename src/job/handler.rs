//! The embedder's side of a job: the typed [`Job`] trait, the [`JobContext`] a handler runs
//! with, the [`JobError`] it may return, and the [`Registry`] that turns a kind name back into
//! a typed handler.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::record::{to_json, JobId, Json};
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
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum JobError {
    /// The attempt failed; the job is retried while attempts are left.
    #[error("{message}")]
    Retryable {
        message: String,
        /// Wait at least this long before the next attempt (e.g. an HTTP `Retry-After`),
        /// instead of the backoff policy's delay.
        retry_after: Option<Duration>,
    },
    /// The job can never succeed (bad input, a 4xx answer): it fails at once, without retry.
    #[error("{0}")]
    Fatal(String),
    /// The handler stopped because its cancellation token fired.
    #[error("cancelled")]
    Cancelled,
}

impl JobError {
    /// A failure worth retrying.
    pub fn retryable(message: impl Into<String>) -> Self {
        JobError::Retryable { message: message.into(), retry_after: None }
    }

    /// A failure worth retrying, not before `after`.
    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        JobError::Retryable { message: message.into(), retry_after: Some(after) }
    }

    /// A failure that no retry can fix.
    pub fn fatal(message: impl Into<String>) -> Self {
        JobError::Fatal(message.into())
    }
}

impl From<serde_json::Error> for JobError {
    fn from(err: serde_json::Error) -> Self {
        JobError::fatal(err.to_string())
    }
}

impl From<std::io::Error> for JobError {
    fn from(err: std::io::Error) -> Self {
        JobError::retryable(err.to_string())
    }
}

/// Sends a progress report of a running job to where it is stored.
pub type ProgressSink = Arc<dyn Fn(Json) + Send + Sync>;

/// Shared values handlers may use (a database pool, an HTTP client, the runtime's cache), by
/// type. Set on the runtime builder with `.extension(value)`; read with
/// [`JobContext::extension`].
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

    pub fn get<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.values.get(&TypeId::of::<T>()).and_then(|v| v.downcast_ref::<T>())
    }
}

/// What a handler gets besides its payload: which job and attempt it runs, the cancellation
/// token it should observe, and a way to report progress.
#[derive(Clone)]
pub struct JobContext {
    id: JobId,
    attempt: u32,
    max_attempts: u32,
    cancel: CancellationToken,
    progress: ProgressSink,
    extensions: Extensions,
}

impl JobContext {
    /// A context for one attempt (the worker pool builds these; tests of handlers may too).
    pub fn new(
        id: JobId,
        attempt: u32,
        max_attempts: u32,
        cancel: CancellationToken,
        progress: ProgressSink,
    ) -> Self {
        JobContext {
            id,
            attempt,
            max_attempts,
            cancel,
            progress,
            extensions: Extensions::default(),
        }
    }

    /// The same context with these extensions.
    pub fn with_extensions(mut self, extensions: Extensions) -> Self {
        self.extensions = extensions;
        self
    }

    /// A shared value of type `T` the runtime was given (see [`Extensions`]).
    pub fn extension<T: Send + Sync + 'static>(&self) -> Option<&T> {
        self.extensions.get::<T>()
    }

    /// A context that is never cancelled and drops progress reports.
    pub fn detached(id: JobId) -> Self {
        Self::new(id, 1, 1, CancellationToken::new(), Arc::new(|_| {}))
    }

    pub fn job_id(&self) -> JobId {
        self.id
    }

    /// The number of this attempt, from 1.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    pub fn max_attempts(&self) -> u32 {
        self.max_attempts
    }

    /// True once the job was cancelled (or the instance is shutting down past its grace).
    pub fn is_cancelled(&self) -> bool {
        self.cancel.is_cancelled()
    }

    /// Completes when the job is cancelled; `select!` on it to stop early.
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
