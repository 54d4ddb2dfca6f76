//! The job record: ids, states, backoff policy and the record itself.
//!
//! These are plain data types shared by every layer (backends, actors, HTTP); the rules that
//! move a job between states live in the queue backends, not here.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use uuid::Uuid;

/// A JSON document kept as its text: payloads, results and progress are stored and handed on
/// without being parsed into a tree, which keeps a queued job small and cheap to clone.
pub type Json = Arc<RawValue>;

/// Parses `text` as a [`Json`] document.
pub fn json_from_str(text: &str) -> Result<Json, serde_json::Error> {
    RawValue::from_string(text.to_owned()).map(Arc::from)
}

/// Serialises `value` into a [`Json`] document.
pub fn to_json<T: Serialize + ?Sized>(value: &T) -> Result<Json, serde_json::Error> {
    serde_json::value::to_raw_value(value).map(Arc::from)
}

/// The JSON `null`, the payload of a job submitted without one.
pub fn json_null() -> Json {
    json_from_str("null").expect("null is valid JSON")
}

/// A job's id: a UUID v7, so ids sort in submit order.
///
/// ```
/// use jobyard::JobId;
///
/// let first = JobId::new();
/// let second = JobId::new();
/// assert!(first < second); // ids sort in submit order
///
/// // As text (in a URL, a database column) and back:
/// let text = first.to_string();
/// assert_eq!(text.parse::<JobId>()?, first);
/// assert!("not-a-job-id".parse::<JobId>().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema), schema(value_type = String, format = "uuid"))]
#[serde(transparent)]
pub struct JobId(pub Uuid);

impl JobId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        JobId(Uuid::now_v7())
    }
}

impl Default for JobId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({})", self.0)
    }
}

impl FromStr for JobId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(JobId)
    }
}

/// The states of a job: `waiting` (on dependencies), `scheduled` (not due yet), `queued`,
/// `running`, and the terminal `succeeded`, `failed` and `cancelled`.
///
/// ```
/// use jobyard::JobStatus;
///
/// let status: JobStatus = "running".parse()?;
/// assert_eq!(status, JobStatus::Running);
/// assert_eq!((status.as_str(), status.to_string()), ("running", "running".to_string()));
/// assert!(!status.is_terminal() && JobStatus::Failed.is_terminal());
/// assert_eq!(JobStatus::ALL[status.index()], status);
/// // In JSON, lowercase too:
/// assert_eq!(serde_json::to_string(&JobStatus::Succeeded)?, r#""succeeded""#);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum JobStatus {
    /// Waits for every job in its `depends_on` to succeed.
    Waiting,
    /// Waits for its `run_at`: a delayed job, or a retry waiting out its backoff.
    Scheduled,
    /// Ready to run: the next free worker slot that handles its kind claims it.
    Queued,
    /// An attempt is running, under a lease.
    Running,
    /// Terminal: an attempt returned a result.
    Succeeded,
    /// Terminal: an attempt failed and no retry is left (the attempts ran out, or the failure was
    /// fatal).
    Failed,
    /// Terminal: cancelled on request, or because a job it depends on failed or was cancelled.
    Cancelled,
}

impl JobStatus {
    /// Every state, in lifecycle order (the order of counters in stats).
    pub const ALL: [JobStatus; 7] = [
        JobStatus::Waiting,
        JobStatus::Scheduled,
        JobStatus::Queued,
        JobStatus::Running,
        JobStatus::Succeeded,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];

    /// A terminal job never changes state again.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobStatus::Succeeded | JobStatus::Failed | JobStatus::Cancelled)
    }

    /// The position of this state in [`JobStatus::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The lowercase name used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Waiting => "waiting",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Queued => "queued",
            JobStatus::Running => "running",
            JobStatus::Succeeded => "succeeded",
            JobStatus::Failed => "failed",
            JobStatus::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobStatus {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        JobStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == s)
            .ok_or_else(|| format!("unknown status '{s}'"))
    }
}

/// How long to wait before retrying a failed attempt.
///
/// ```
/// use jobyard::Backoff;
///
/// // 0.5 s, then 1.5 s, 4.5 s, at most 10 s; without jitter, to show the exact delays.
/// let backoff = Backoff { initial_ms: 500, max_ms: 10_000, multiplier: 3.0, jitter: false };
/// let delays: Vec<u64> = (1..=5).map(|attempt| backoff.delay_ms(attempt)).collect();
/// assert_eq!(delays, [500, 1_500, 4_500, 10_000, 10_000]);
///
/// // With jitter (the default), a delay is drawn from 0 up to the computed one.
/// let jittered = Backoff { jitter: true, ..backoff };
/// assert!(jittered.delay_ms(2) <= 1_500);
///
/// // In JSON, the fields left out take their defaults.
/// let backoff: Backoff = serde_json::from_str(r#"{"initial_ms": 200}"#)?;
/// assert_eq!(backoff, Backoff { initial_ms: 200, ..Backoff::default() });
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    /// Delay before the first retry, in milliseconds (default 1000; 1 up to one day).
    pub initial_ms: u64,
    /// Longest delay before a retry, in milliseconds (default 300000; from `initial_ms` up to one
    /// year).
    pub max_ms: u64,
    /// Factor the delay grows by with each further failed attempt (default 2.0; 1 to 100).
    pub multiplier: f64,
    /// Full jitter: the delay is drawn uniformly from `[0, computed delay]`, so that many jobs
    /// failing together do not retry together.
    pub jitter: bool,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { initial_ms: 1_000, max_ms: 300_000, multiplier: 2.0, jitter: true }
    }
}

impl Backoff {
    /// The delay before the retry that follows failed attempt number `attempt` (1-based):
    /// `min(max_ms, initial_ms * multiplier^(attempt-1))`, jittered when `jitter`.
    pub fn delay_ms(&self, attempt: u32) -> u64 {
        let exponent = attempt.saturating_sub(1).min(1_000) as i32;
        let raw = self.initial_ms as f64 * self.multiplier.powi(exponent);
        let capped = if raw.is_finite() { raw.min(self.max_ms as f64) as u64 } else { self.max_ms };
        if self.jitter {
            fastrand::u64(0..=capped)
        } else {
            capped
        }
    }
}

/// The record of one job, as the HTTP API returns it.
///
/// ```
/// use jobyard::{JobRecord, JobStatus};
///
/// // A record as the HTTP API returns it:
/// let record: JobRecord = serde_json::from_str(
///     r#"{
///         "id": "0190b6a2-4f3c-7d4e-9a1b-2c3d4e5f6a7b", "kind": "noop", "payload": {"n": 1},
///         "queue": "default", "priority": 0, "status": "succeeded", "attempts": 2,
///         "max_attempts": 3,
///         "backoff": {"initial_ms": 1000, "max_ms": 300000, "multiplier": 2.0, "jitter": true},
///         "timeout_ms": 300000, "run_at": "2026-01-01T00:00:01Z", "depends_on": [],
///         "idempotency_key": null, "created_at": "2026-01-01T00:00:00Z",
///         "updated_at": "2026-01-01T00:00:01.2Z", "started_at": "2026-01-01T00:00:01.1Z",
///         "finished_at": "2026-01-01T00:00:01.2Z", "result": {"n": 1}, "error": null,
///         "history": [{"attempt": 1, "error": "boom", "at": "2026-01-01T00:00:00.1Z"}],
///         "cancel_requested": false, "worker": "web-1-4242/w0", "progress": null
///     }"#,
/// )?;
/// assert_eq!(record.status, JobStatus::Succeeded);
/// assert!(record.status.is_terminal());
/// assert_eq!(record.history[0].error, "boom");
/// let result: Option<serde_json::Value> = record.result()?;
/// assert_eq!(result, Some(serde_json::json!({"n": 1})));
/// # Ok::<(), serde_json::Error>(())
/// ```
///
/// ```
/// use jobyard::JobRecord;
/// use serde::Deserialize;
///
/// #[derive(Deserialize)]
/// struct Progress { done: u32, total: u32 }
///
/// fn show(record: &JobRecord) -> Result<(), serde_json::Error> {
///     if let Some(progress) = record.progress::<Progress>()? {
///         println!("{}: {} of {}", record.id, progress.done, progress.total);
///     }
///     for failed in &record.history {
///         println!("attempt {} failed at {}: {}", failed.attempt, failed.at, failed.error);
///     }
///     Ok(())
/// }
///
/// // How a queue backend records a failed attempt:
/// fn fail_attempt(record: &mut JobRecord, error: &str) {
///     record.push_failure(error, chrono::Utc::now());
/// }
/// ```
#[derive(Clone, Debug, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct JobRecord {
    /// The job's id, assigned at submit.
    pub id: JobId,
    /// The kind whose handler runs it (e.g. `http`).
    #[cfg_attr(feature = "server", schema(value_type = String))]
    pub kind: Arc<str>,
    /// The handler's input; JSON `null` when none was given.
    #[cfg_attr(feature = "server", schema(value_type = Value))]
    pub payload: Json,
    /// The queue it belongs to (`default` when none was given).
    #[cfg_attr(feature = "server", schema(value_type = String))]
    pub queue: Arc<str>,
    /// From -1000 to 1000: higher runs first; submit order breaks ties.
    pub priority: i32,
    /// Where the job is in its lifecycle.
    pub status: JobStatus,
    /// Attempts started so far, the running one included.
    pub attempts: u32,
    /// Most attempts it gets (1 to 100) before it fails for good.
    pub max_attempts: u32,
    /// How long to wait between a failed attempt and its retry.
    pub backoff: Backoff,
    /// Longest an attempt may run, in milliseconds; exceeding it fails the attempt.
    pub timeout_ms: u64,
    /// When the job is due: the requested start of a delayed job, then the time of its latest
    /// retry; `None` when it was due at once.
    pub run_at: Option<DateTime<Utc>>,
    /// Jobs that must all succeed before this one runs; if one of them fails or is cancelled, this
    /// job is cancelled.
    pub depends_on: Vec<JobId>,
    /// The key given at submit: a later submit with the same key gets this job back instead of
    /// creating one.
    #[cfg_attr(feature = "server", schema(value_type = Option<String>))]
    pub idempotency_key: Option<Arc<str>>,
    /// The limits it runs under: it starts only when every one of them allows it.
    #[serde(default = "crate::job::spec::no_limits")]
    #[cfg_attr(feature = "server", schema(value_type = Vec<String>))]
    pub limits: Arc<[Arc<str>]>,
    /// Tokens it takes from each rate limit it names.
    #[serde(default = "one")]
    pub cost: u32,
    /// Its group, for fair share within its queue and priority.
    #[serde(default)]
    #[cfg_attr(feature = "server", schema(value_type = Option<String>))]
    pub group: Option<Arc<str>>,
    /// The trace it belongs to and the span of its submit (`None` for jobs stored before
    /// traces were kept).
    #[serde(default)]
    pub trace: Option<crate::job::trace::TraceContext>,
    /// When the job was submitted.
    pub created_at: DateTime<Utc>,
    /// When its record last changed.
    pub updated_at: DateTime<Utc>,
    /// When its latest attempt started; `None` before the first.
    pub started_at: Option<DateTime<Utc>>,
    /// When it reached a terminal state; `None` until then.
    pub finished_at: Option<DateTime<Utc>>,
    /// The handler's output, as JSON, once the job succeeded (at most `JOBYARD_MAX_RESULT_BYTES`);
    /// `None` until then.
    #[cfg_attr(feature = "server", schema(value_type = Value))]
    pub result: Option<Json>,
    /// Why the job ended `failed` or `cancelled`; `None` while it is not terminal (a retry
    /// clears it: the failure is in [`JobRecord::history`]) and when it succeeded.
    pub error: Option<String>,
    /// Every attempt that ended without success, in order (oldest first): failed, timed out,
    /// panicked, lost its lease or was cancelled while running. At most
    /// [`JobRecord::MAX_HISTORY`], the latest.
    pub history: Vec<FailedAttempt>,
    /// A cancel was requested while the job ran: its worker is told to stop it, and it ends
    /// `cancelled`.
    pub cancel_requested: bool,
    /// The instance and worker slot (`<host>-<pid>/w<slot>`) that took its latest attempt; `None`
    /// before the first.
    #[cfg_attr(feature = "server", schema(value_type = Option<String>))]
    pub worker: Option<Arc<str>>,
    /// The latest progress report of its handler, as JSON; `None` when none was made.
    #[cfg_attr(feature = "server", schema(value_type = Value))]
    pub progress: Option<Json>,
}

fn one() -> u32 {
    1
}

impl JobRecord {
    /// The most entries [`JobRecord::history`] keeps (the latest).
    pub const MAX_HISTORY: usize = 100;

    /// The result decoded as `T`; `Ok(None)` while the job has none (it has not succeeded).
    ///
    /// ```
    /// # fn demo(record: jobyard::JobRecord) -> Result<(), serde_json::Error> {
    /// if let Some(count) = record.result::<u32>()? {
    ///     println!("fetched {count} items");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn result<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        self.result.as_ref().map(|json| serde_json::from_str(json.get())).transpose()
    }

    /// The output of a succeeded job decoded as `T`, or why there is none: what both a
    /// [`JobHandle`](crate::JobHandle)'s wait and a handler's
    /// [`result_of`](crate::JobContext::result_of) read, each mapped to its own errors.
    pub fn output<T: DeserializeOwned>(&self) -> Result<T, NoOutput> {
        match self.status {
            JobStatus::Succeeded => match self.result::<T>() {
                Ok(Some(output)) => Ok(output),
                Ok(None) => Err(NoOutput::Missing),
                Err(err) => Err(NoOutput::Decode(err.to_string())),
            },
            status => Err(NoOutput::NotSucceeded(status)),
        }
    }

    /// The latest progress report decoded as `T`; `Ok(None)` when none was made.
    pub fn progress<T: DeserializeOwned>(&self) -> Result<Option<T>, serde_json::Error> {
        self.progress.as_ref().map(|json| serde_json::from_str(json.get())).transpose()
    }

    /// Records that the current attempt (number [`JobRecord::attempts`]) ended at `at` without
    /// success, for `error`; the oldest entries go beyond [`JobRecord::MAX_HISTORY`].
    pub fn push_failure(&mut self, error: &str, at: DateTime<Utc>) {
        self.history.push(FailedAttempt::new(self.attempts, error, at));
        if self.history.len() > Self::MAX_HISTORY {
            let excess = self.history.len() - Self::MAX_HISTORY;
            self.history.drain(..excess);
        }
    }
}

/// Why [`JobRecord::output`] has no output to give.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoOutput {
    /// The job has not succeeded (yet, when its status is not terminal).
    NotSucceeded(JobStatus),
    /// The job succeeded without a stored result.
    Missing,
    /// The stored result does not decode as the type asked for.
    Decode(String),
}

/// One attempt that ended without success: its number (1-based), why, and when it ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
pub struct FailedAttempt {
    /// The attempt's number, from 1.
    pub attempt: u32,
    /// At most [`FailedAttempt::MAX_ERROR_BYTES`].
    pub error: String,
    /// When the attempt ended.
    pub at: DateTime<Utc>,
}

impl FailedAttempt {
    /// The longest error text an entry keeps, in bytes (cut on a character boundary).
    pub const MAX_ERROR_BYTES: usize = 1024;

    /// The entry of attempt `attempt`, its error cut to [`FailedAttempt::MAX_ERROR_BYTES`].
    pub fn new(attempt: u32, error: &str, at: DateTime<Utc>) -> Self {
        FailedAttempt { attempt, error: Self::cut(error).to_owned(), at }
    }

    /// The longest prefix of `error` of at most [`FailedAttempt::MAX_ERROR_BYTES`] that ends on
    /// a character boundary.
    pub fn cut(error: &str) -> &str {
        let mut end = error.len().min(Self::MAX_ERROR_BYTES);
        while !error.is_char_boundary(end) {
            end -= 1;
        }
        &error[..end]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_exponentially_up_to_the_cap() {
        let backoff = Backoff { initial_ms: 100, max_ms: 1_000, multiplier: 2.0, jitter: false };
        let delays: Vec<u64> = (1..=6).map(|a| backoff.delay_ms(a)).collect();
        assert_eq!(delays, vec![100, 200, 400, 800, 1_000, 1_000]);
    }

    #[test]
    fn jitter_stays_within_the_computed_delay() {
        let backoff = Backoff { initial_ms: 100, max_ms: 1_000, multiplier: 3.0, jitter: true };
        for attempt in 1..10 {
            let cap = Backoff { jitter: false, ..backoff }.delay_ms(attempt);
            assert!(backoff.delay_ms(attempt) <= cap);
        }
    }

    #[test]
    fn huge_attempt_numbers_do_not_overflow() {
        let backoff = Backoff { jitter: false, ..Backoff::default() };
        assert_eq!(backoff.delay_ms(u32::MAX), backoff.max_ms);
    }

    #[test]
    fn history_entries_are_bounded_in_number_and_size() {
        let at = DateTime::from_timestamp_millis(1_800_000_000_123).unwrap();
        let long = format!("{}é and more", "x".repeat(FailedAttempt::MAX_ERROR_BYTES - 1));
        let entry = FailedAttempt::new(1, &long, at);
        assert_eq!(entry.error, "x".repeat(FailedAttempt::MAX_ERROR_BYTES - 1), "cut before 'é'");
        assert_eq!(FailedAttempt::new(2, "short", at).error, "short");
        let json = serde_json::to_value(&entry).unwrap();
        assert_eq!(json["attempt"], 1);
        assert_eq!(json["at"], "2027-01-15T08:00:00.123Z");

        let mut record: JobRecord = serde_json::from_value(serde_json::json!({
            "id": JobId::new(), "kind": "k", "payload": null, "queue": "q", "priority": 0,
            "status": "queued", "attempts": 0, "max_attempts": 200, "backoff": Backoff::default(),
            "timeout_ms": 1, "run_at": null, "depends_on": [], "idempotency_key": null,
            "created_at": at, "updated_at": at, "started_at": null, "finished_at": null,
            "result": null, "error": null, "history": [], "cancel_requested": false,
            "worker": null, "progress": null,
        }))
        .unwrap();
        for _ in 0..JobRecord::MAX_HISTORY + 5 {
            record.attempts += 1;
            record.push_failure("boom", at);
        }
        assert_eq!(record.history.len(), JobRecord::MAX_HISTORY, "the latest are kept");
        assert_eq!(record.history[0].attempt, 6);
        assert_eq!(record.history.last().unwrap().attempt, JobRecord::MAX_HISTORY as u32 + 5);
    }

    #[test]
    fn status_round_trips_through_its_name() {
        for status in JobStatus::ALL {
            assert_eq!(status.as_str().parse::<JobStatus>(), Ok(status));
        }
        assert!("bogus".parse::<JobStatus>().is_err());
    }
}
