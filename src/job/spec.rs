//! `JobSpec`, what a client asks for, and its validation into [`NewJob`], what a backend stores.
//!
//! Every submit path (HTTP, the embedding API, cron) goes through [`plan`], so the limits of
//! the HTTP API and the batch rules (local refs, cycle detection) hold the same everywhere.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use super::non_null;
use super::record::{json_null, Backoff, JobId, JobRecord, JobStatus, Json};
use super::trace::TraceContext;

/// Longest accepted `kind`, in bytes.
pub const MAX_KIND_BYTES: usize = 128;
/// Most `depends_on` entries of one job, and most jobs in one batch.
pub const MAX_LIST_LEN: usize = 1_000;
/// Longest accepted `idempotency_key`, in bytes.
pub const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;
/// Longest accepted queue name.
pub const MAX_QUEUE_NAME: usize = 64;
/// Longest accepted `timeout_ms`: one day.
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// Furthest accepted `delay_ms`, and furthest `run_at` from now: one year.
pub const MAX_DELAY_MS: u64 = 365 * 86_400_000;
/// The queue of a job submitted without one.
pub const DEFAULT_QUEUE: &str = "default";
/// Most limits one job may name.
pub const MAX_JOB_LIMITS: usize = 8;
/// Largest accepted `cost`.
pub const MAX_COST: u32 = 1_000_000;
/// Longest name of a limit or a group, in bytes.
pub const MAX_FLOW_NAME: usize = 128;

/// A job as a client describes it. Unknown fields are rejected, and so is `null` for any field
/// but `payload` (where it is a value like any other JSON).
///
/// ```
/// use jobyard::JobSpec;
///
/// // As the HTTP API receives it:
/// let spec: JobSpec = serde_json::from_str(
///     r#"{"kind": "http", "payload": {"url": "https://example.com"}, "priority": 5}"#,
/// )?;
/// assert_eq!((spec.kind.as_str(), spec.priority), ("http", Some(5)));
///
/// // Unknown fields, and `null` anywhere but in `payload`, are refused:
/// assert!(serde_json::from_str::<JobSpec>(r#"{"kind": "noop", "prio": 5}"#).is_err());
/// assert!(serde_json::from_str::<JobSpec>(r#"{"kind": "noop", "queue": null}"#).is_err());
///
/// // In code: every field but `kind` is optional.
/// let spec = JobSpec {
///     queue: Some("emails".into()),
///     delay_ms: Some(60_000),
///     ..JobSpec::new("noop")
/// };
/// assert!(spec.payload.is_none());
/// # Ok::<(), serde_json::Error>(())
/// ```
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "server", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    /// The registered kind whose handler runs the job (required; 1 to 128 bytes).
    pub kind: String,
    /// The handler's input, any JSON (JSON `null` when left out); checked against the kind's
    /// payload type at submit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "server", schema(value_type = Value))]
    pub payload: Option<Json>,
    /// The queue to put the job in (`default` when left out): 1 to 64 ASCII letters, digits, `_`,
    /// `.` or `-`.
    #[serde(
        default,
        deserialize_with = "non_null::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "server", schema(nullable = false))]
    pub queue: Option<String>,
    /// From -1000 to 1000, higher runs first; submit order breaks ties (0 when left out).
    #[serde(
        default,
        deserialize_with = "non_null::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "server", schema(nullable = false, minimum = -1000, maximum = 1000))]
    pub priority: Option<i32>,
    /// Most attempts, from 1 to 100 (3 when left out).
    #[serde(
        default,
        deserialize_with = "non_null::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "server", schema(nullable = false, minimum = 1, maximum = 100))]
    pub max_attempts: Option<u32>,
    /// Delay policy between a failed attempt and its retry (when left out: 1 s, doubling up to 5
    /// minutes, jittered).
    #[serde(
        default,
        deserialize_with = "non_null::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "server", schema(nullable = false))]
    pub backoff: Option<Backoff>,
    /// Longest an attempt may run, in milliseconds: 1 up to one day (5 minutes when left out).
    #[serde(
        default,
        deserialize_with = "non_null::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "server", schema(nullable = false, minimum = 1, maximum = 86_400_000))]
    pub timeout_ms: Option<u64>,
    /// Run no earlier than this many milliseconds after submit, up to one year (0 runs at once).
    /// Give `delay_ms` or `run_at`, not both.
    #[serde(
        default,
        deserialize_with = "non_null::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "server", schema(nullable = false, maximum = 31_536_000_000_u64))]
    pub delay_ms: Option<u64>,
    /// Run no earlier than this time, up to one year ahead (a time already past runs at once). Give
    /// `delay_ms` or `run_at`, not both.
    #[serde(
        default,
        deserialize_with = "non_null::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "server", schema(nullable = false))]
    pub run_at: Option<DateTime<Utc>>,
    /// Job ids, or in a batch also the `ref` of another entry of the same batch.
    #[serde(
        default,
        deserialize_with = "non_null::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "server", schema(nullable = false))]
    pub depends_on: Option<Vec<String>>,
    /// 1 to 256 bytes: while a job holding this key exists, a submit with the same key gets that
    /// job back instead of creating another. Keys must differ within one batch.
    #[serde(
        default,
        deserialize_with = "non_null::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "server", schema(nullable = false))]
    pub idempotency_key: Option<String>,
    /// Names of the limits the job runs under (each must exist, at most 8): it starts only when
    /// every one of them allows it.
    #[serde(
        default,
        deserialize_with = "non_null::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "server", schema(nullable = false))]
    pub limits: Option<Vec<String>>,
    /// Tokens the job takes from each rate limit it names, 1 to 1 000 000 (1 when left out): a
    /// job making three upstream calls costs 3.
    #[serde(
        default,
        deserialize_with = "non_null::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "server", schema(nullable = false, minimum = 1, maximum = 1_000_000))]
    pub cost: Option<u32>,
    /// The group (a tenant, a user, a tool) the job belongs to: within one queue and priority,
    /// claims take turns between the groups that have jobs ready.
    #[serde(
        default,
        deserialize_with = "non_null::deserialize",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "server", schema(nullable = false))]
    pub group: Option<String>,
    /// A name other entries of the same batch use in `depends_on`; only valid in a batch.
    #[serde(
        default,
        deserialize_with = "non_null::deserialize",
        rename = "ref",
        skip_serializing_if = "Option::is_none"
    )]
    #[cfg_attr(feature = "server", schema(nullable = false))]
    pub reference: Option<String>,
    /// The trace the job joins (from a submit's `traceparent` header): not part of the JSON
    /// spec. A job submitted without one starts a trace of its own.
    #[serde(skip)]
    pub trace: Option<TraceContext>,
}

impl JobSpec {
    /// A spec of `kind` with every other field at its default.
    pub fn new(kind: impl Into<String>) -> Self {
        JobSpec { kind: kind.into(), ..JobSpec::default() }
    }
}

/// A validated job, ready for a backend: ids assigned, refs resolved, defaults applied.
#[derive(Clone, Debug)]
pub struct NewJob {
    /// The id assigned to the job.
    pub id: JobId,
    /// The registered kind (the registry's shared name).
    pub kind: Arc<str>,
    /// The handler's input (JSON `null` when none was given).
    pub payload: Json,
    /// The queue, `default` when none was given.
    pub queue: Arc<str>,
    /// From -1000 to 1000, higher runs first.
    pub priority: i32,
    /// Most attempts, from 1 to 100.
    pub max_attempts: u32,
    /// Delay policy between a failed attempt and its retry.
    pub backoff: Backoff,
    /// Longest an attempt may run, in milliseconds.
    pub timeout_ms: u64,
    /// When the job becomes due; `None` to run at once.
    pub run_at: Option<DateTime<Utc>>,
    /// The jobs it depends on, batch refs resolved to ids, without repeats.
    pub depends_on: Vec<JobId>,
    /// Its idempotency key, if any.
    pub idempotency_key: Option<Arc<str>>,
    /// The limits it runs under, without repeats, in the order given.
    pub limits: Arc<[Arc<str>]>,
    /// Tokens it takes from each rate limit it names (at least 1).
    pub cost: u32,
    /// Its group, for fair share within its queue and priority.
    pub group: Option<Arc<str>>,
    /// Its trace, and the span of the submit that created it.
    pub trace: TraceContext,
}

impl NewJob {
    /// The record of this job as just stored, in `status`, before any attempt.
    pub fn to_record(&self, status: JobStatus, now: DateTime<Utc>) -> JobRecord {
        self.clone().into_record(status, now)
    }

    /// [`NewJob::to_record`], taking the job: its fields move into the record uncopied.
    pub fn into_record(self, status: JobStatus, now: DateTime<Utc>) -> JobRecord {
        JobRecord {
            id: self.id,
            kind: self.kind,
            payload: self.payload,
            queue: self.queue,
            priority: self.priority,
            status,
            attempts: 0,
            max_attempts: self.max_attempts,
            backoff: self.backoff,
            timeout_ms: self.timeout_ms,
            run_at: self.run_at,
            depends_on: self.depends_on,
            idempotency_key: self.idempotency_key,
            limits: self.limits,
            cost: self.cost,
            group: self.group,
            trace: Some(self.trace),
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
            result: None,
            error: None,
            history: Vec::new(),
            cancel_requested: false,
            worker: None,
            progress: None,
        }
    }
}

/// What is wrong with a spec. The HTTP layer maps `kind` to its error code.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SpecError {
    /// The class of error (the HTTP API picks its error code from it).
    pub kind: SpecErrorKind,
    /// What is wrong, for people.
    pub message: String,
    /// The field at fault, when one is.
    pub field: Option<String>,
}

/// The classes of [`SpecError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecErrorKind {
    /// A field is missing, malformed or out of bounds (HTTP code `invalid_request`).
    Invalid,
    /// No handler is registered for the kind (HTTP code `unknown_kind`).
    UnknownKind,
    /// `depends_on` names neither a job id nor a ref of the batch, or a job that does not exist
    /// (HTTP code `unknown_dependency`).
    UnknownDependency,
    /// Entries of a batch depend on each other in a cycle, named in the message (HTTP code
    /// `dependency_cycle`).
    DependencyCycle,
}

impl SpecError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl fmt::Display) -> Self {
        SpecError {
            kind: SpecErrorKind::Invalid,
            message: message.to_string(),
            field: Some(field.into()),
        }
    }

    fn at(mut self, index: Option<usize>) -> Self {
        if let (Some(i), Some(field)) = (index, self.field.as_mut()) {
            *field = format!("jobs[{i}].{field}");
        }
        self
    }
}

/// Defaults a deployment applies to specs that leave a field out.
#[derive(Clone, Debug)]
pub struct SpecDefaults {
    /// Attempts of a job that names none (default 3).
    pub max_attempts: u32,
    /// Attempt timeout of a job that names none, in milliseconds (default 300000, five minutes).
    pub timeout_ms: u64,
    /// Backoff of a job that names none (default [`Backoff::default`]).
    pub backoff: Backoff,
}

impl Default for SpecDefaults {
    fn default() -> Self {
        SpecDefaults { max_attempts: 3, timeout_ms: 300_000, backoff: Backoff::default() }
    }
}

/// Looks up a registered kind, returning the shared name so that every job of a kind points to
/// one allocation.
pub trait KindLookup {
    /// The shared name of `kind` when a handler is registered for it; `None` when none is.
    fn lookup(&self, kind: &str) -> Option<Arc<str>>;

    /// Checks that `payload` is what `kind` expects, so a malformed payload is refused at
    /// submit rather than failing every attempt later.
    fn check_payload(&self, _kind: &str, _payload: &Json) -> Result<(), String> {
        Ok(())
    }

    /// Every kind it accepts, sorted (for the error naming an unknown kind).
    fn names(&self) -> Vec<Arc<str>> {
        Vec::new()
    }
}

/// The message of a kind no instance handles, listing those that are.
fn unknown_kind(kind: &str, known: &[Arc<str>]) -> String {
    let known: Vec<&str> = known.iter().map(|k| &**k).collect();
    match known.is_empty() {
        true => format!("no handler is registered for kind '{kind}'"),
        false => format!(
            "no handler is registered for kind '{kind}'; the kinds accepted are {}",
            known.join(", ")
        ),
    }
}

/// Validates one spec or a whole batch and resolves it into [`NewJob`]s, in request order.
///
/// `depends_on` entries that name a `ref` of the batch become the id assigned to that entry; a
/// cycle among them is rejected with the cycle named. Whether external ids exist is the
/// backend's to check, atomically with the insert.
pub fn plan(
    specs: Vec<JobSpec>,
    batch: bool,
    kinds: &dyn KindLookup,
    defaults: &SpecDefaults,
    now: DateTime<Utc>,
) -> Result<Vec<NewJob>, SpecError> {
    if batch && specs.is_empty() {
        return Err(SpecError::invalid("jobs", "a batch needs at least one job"));
    }
    if specs.len() > MAX_LIST_LEN {
        return Err(SpecError::invalid(
            "jobs",
            format!("a batch holds at most {MAX_LIST_LEN} jobs"),
        ));
    }
    let index = |i| batch.then_some(i);
    let ids: Vec<JobId> = specs.iter().map(|_| JobId::new()).collect();
    let refs = collect_refs(&specs, batch)?;
    reject_repeated_keys(&specs)?;
    let mut local_edges: Vec<Vec<usize>> = vec![Vec::new(); specs.len()];
    let mut jobs = Vec::with_capacity(specs.len());
    for (i, spec) in specs.into_iter().enumerate() {
        let deps =
            resolve_deps(&spec, &refs, &ids, &mut local_edges[i]).map_err(|e| e.at(index(i)))?;
        let job = validate(spec, ids[i], deps, kinds, defaults, now).map_err(|e| e.at(index(i)))?;
        jobs.push(job);
    }
    if let Some(cycle) = find_cycle(&local_edges) {
        let names: Vec<&str> = cycle.iter().map(|&i| ref_name(&refs, i)).collect();
        return Err(SpecError {
            kind: SpecErrorKind::DependencyCycle,
            message: format!("dependency cycle: {}", names.join(" -> ")),
            field: Some("depends_on".into()),
        });
    }
    Ok(jobs)
}

fn collect_refs(specs: &[JobSpec], batch: bool) -> Result<HashMap<String, usize>, SpecError> {
    let mut refs = HashMap::new();
    for (i, spec) in specs.iter().enumerate() {
        let Some(name) = &spec.reference else {
            continue;
        };
        if !batch {
            return Err(SpecError::invalid("ref", "ref is only allowed in a batch"));
        }
        if name.is_empty() || name.len() > MAX_KIND_BYTES {
            return Err(SpecError::invalid(
                format!("jobs[{i}].ref"),
                format!("ref must be 1 to {MAX_KIND_BYTES} bytes"),
            ));
        }
        if refs.insert(name.clone(), i).is_some() {
            return Err(SpecError::invalid(
                format!("jobs[{i}].ref"),
                format!("ref '{name}' is used twice in this batch"),
            ));
        }
    }
    Ok(refs)
}

/// A key repeated within one batch would make two entries one job, which can turn a valid
/// graph into a cycle; refused rather than guessed at.
fn reject_repeated_keys(specs: &[JobSpec]) -> Result<(), SpecError> {
    let mut seen = HashMap::new();
    for (i, spec) in specs.iter().enumerate() {
        let Some(key) = &spec.idempotency_key else { continue };
        if let Some(first) = seen.insert(key.as_str(), i) {
            return Err(SpecError::invalid(
                format!("jobs[{i}].idempotency_key"),
                format!("idempotency_key '{key}' is also used by jobs[{first}] of this batch"),
            ));
        }
    }
    Ok(())
}

fn ref_name(refs: &HashMap<String, usize>, index: usize) -> &str {
    refs.iter().find(|(_, &i)| i == index).map(|(name, _)| name.as_str()).unwrap_or("?")
}

fn resolve_deps(
    spec: &JobSpec,
    refs: &HashMap<String, usize>,
    ids: &[JobId],
    local: &mut Vec<usize>,
) -> Result<Vec<JobId>, SpecError> {
    let Some(names) = &spec.depends_on else {
        return Ok(Vec::new());
    };
    if names.len() > MAX_LIST_LEN {
        return Err(SpecError::invalid(
            "depends_on",
            format!("depends_on holds at most {MAX_LIST_LEN} ids"),
        ));
    }
    let mut deps = Vec::with_capacity(names.len());
    for name in names {
        let id = if let Some(&i) = refs.get(name) {
            local.push(i);
            ids[i]
        } else if let Ok(id) = name.parse::<JobId>() {
            id
        } else {
            return Err(SpecError {
                kind: SpecErrorKind::UnknownDependency,
                message: format!(
                    "depends_on names '{name}', which is neither a job id nor a ref of this batch"
                ),
                field: Some("depends_on".into()),
            });
        };
        if !deps.contains(&id) {
            deps.push(id);
        }
    }
    Ok(deps)
}

fn validate(
    spec: JobSpec,
    id: JobId,
    depends_on: Vec<JobId>,
    kinds: &dyn KindLookup,
    defaults: &SpecDefaults,
    now: DateTime<Utc>,
) -> Result<NewJob, SpecError> {
    if spec.kind.is_empty() || spec.kind.len() > MAX_KIND_BYTES {
        return Err(SpecError::invalid(
            "kind",
            format!("kind must be 1 to {MAX_KIND_BYTES} bytes"),
        ));
    }
    let kind = kinds.lookup(&spec.kind).ok_or_else(|| SpecError {
        kind: SpecErrorKind::UnknownKind,
        message: unknown_kind(&spec.kind, &kinds.names()),
        field: Some("kind".into()),
    })?;
    let queue = validate_queue(spec.queue.as_deref())?;
    let priority = spec.priority.unwrap_or(0);
    if !(-1000..=1000).contains(&priority) {
        return Err(SpecError::invalid("priority", "priority must be between -1000 and 1000"));
    }
    let max_attempts = spec.max_attempts.unwrap_or(defaults.max_attempts);
    if !(1..=100).contains(&max_attempts) {
        return Err(SpecError::invalid("max_attempts", "max_attempts must be between 1 and 100"));
    }
    let backoff = spec.backoff.unwrap_or(defaults.backoff);
    validate_backoff(&backoff)?;
    let timeout_ms = spec.timeout_ms.unwrap_or(defaults.timeout_ms);
    if !(1..=MAX_TIMEOUT_MS).contains(&timeout_ms) {
        return Err(SpecError::invalid(
            "timeout_ms",
            format!("timeout_ms must be between 1 and {MAX_TIMEOUT_MS}"),
        ));
    }
    let run_at = match (spec.delay_ms, spec.run_at) {
        (Some(_), Some(_)) => {
            return Err(SpecError::invalid("delay_ms", "give delay_ms or run_at, not both"))
        }
        (Some(delay), None) if delay > MAX_DELAY_MS => {
            return Err(SpecError::invalid(
                "delay_ms",
                format!("delay_ms must be at most {MAX_DELAY_MS}"),
            ))
        }
        (Some(0), None) => None,
        (Some(delay), None) => Some(now + Duration::milliseconds(delay as i64)),
        (None, Some(at)) if at > now + Duration::milliseconds(MAX_DELAY_MS as i64) => {
            return Err(SpecError::invalid(
                "run_at",
                format!("run_at must be at most {MAX_DELAY_MS} ms from now (one year)"),
            ))
        }
        (None, run_at) => run_at.filter(|at| *at > now),
    };
    let idempotency_key = match spec.idempotency_key {
        Some(key) if key.is_empty() || key.len() > MAX_IDEMPOTENCY_KEY_BYTES => {
            return Err(SpecError::invalid(
                "idempotency_key",
                format!("idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_BYTES} bytes"),
            ))
        }
        key => key.map(Arc::from),
    };
    let limits = validate_limits(spec.limits)?;
    let cost = spec.cost.unwrap_or(1);
    if !(1..=MAX_COST).contains(&cost) {
        return Err(SpecError::invalid("cost", format!("cost must be between 1 and {MAX_COST}")));
    }
    let group = spec.group.map(|g| validate_flow_name("group", &g).map(|()| Arc::from(g)));
    let group = group.transpose()?;
    let payload = spec.payload.unwrap_or_else(json_null);
    kinds
        .check_payload(&kind, &payload)
        .map_err(|why| SpecError::invalid("payload", crate::wording::payload_error(&kind, &why)))?;
    Ok(NewJob {
        id,
        kind,
        payload,
        queue,
        priority,
        max_attempts,
        backoff,
        timeout_ms,
        run_at,
        depends_on,
        idempotency_key,
        limits,
        cost,
        group,
        trace: spec.trace.unwrap_or_default(),
    })
}

/// Checks the name of a limit or a group: 1 to [`MAX_FLOW_NAME`] bytes of ASCII letters,
/// digits and `_ . : @ / -` (so `github:acme` names a limit per tenant).
pub fn validate_flow_name(field: &str, name: &str) -> Result<(), SpecError> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'/' | b'-'));
    if name.is_empty() || name.len() > MAX_FLOW_NAME || !valid_chars {
        return Err(SpecError::invalid(
            field,
            format!(
                "{field} names must match [A-Za-z0-9_.:@/-]{{1,{MAX_FLOW_NAME}}}, not '{name}'"
            ),
        ));
    }
    Ok(())
}

/// The limits of a job that names none, shared (no allocation per job).
pub fn no_limits() -> Arc<[Arc<str>]> {
    static NONE: std::sync::OnceLock<Arc<[Arc<str>]>> = std::sync::OnceLock::new();
    NONE.get_or_init(|| Arc::from(Vec::new())).clone()
}

fn validate_limits(limits: Option<Vec<String>>) -> Result<Arc<[Arc<str>]>, SpecError> {
    let Some(names) = limits.filter(|names| !names.is_empty()) else { return Ok(no_limits()) };
    if names.len() > MAX_JOB_LIMITS {
        return Err(SpecError::invalid(
            "limits",
            format!("a job names at most {MAX_JOB_LIMITS} limits"),
        ));
    }
    let mut limits: Vec<Arc<str>> = Vec::with_capacity(names.len());
    for name in names {
        validate_flow_name("limits", &name)?;
        if !limits.iter().any(|l| **l == *name) {
            limits.push(Arc::from(name));
        }
    }
    Ok(limits.into())
}

/// Checks a queue name (`default` when none is given).
pub fn validate_queue(queue: Option<&str>) -> Result<Arc<str>, SpecError> {
    let Some(name) = queue else {
        return Ok(Arc::from(DEFAULT_QUEUE));
    };
    let valid_chars =
        name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
    if name.is_empty() || name.len() > MAX_QUEUE_NAME || !valid_chars {
        return Err(SpecError::invalid(
            "queue",
            format!("queue must match [A-Za-z0-9_.-]{{1,{MAX_QUEUE_NAME}}}"),
        ));
    }
    Ok(Arc::from(name))
}

fn validate_backoff(backoff: &Backoff) -> Result<(), SpecError> {
    if backoff.initial_ms == 0 || backoff.initial_ms > MAX_TIMEOUT_MS {
        return Err(SpecError::invalid(
            "backoff.initial_ms",
            format!("backoff.initial_ms must be between 1 and {MAX_TIMEOUT_MS}"),
        ));
    }
    if backoff.max_ms < backoff.initial_ms || backoff.max_ms > MAX_DELAY_MS {
        return Err(SpecError::invalid(
            "backoff.max_ms",
            format!("backoff.max_ms must be between initial_ms and {MAX_DELAY_MS}"),
        ));
    }
    if !backoff.multiplier.is_finite() || !(1.0..=100.0).contains(&backoff.multiplier) {
        return Err(SpecError::invalid(
            "backoff.multiplier",
            "backoff.multiplier must be between 1 and 100",
        ));
    }
    Ok(())
}

/// Finds a cycle among batch-local dependency edges (`edges[i]` = entries `i` depends on),
/// returned as the entries along it with the first repeated at the end.
fn find_cycle(edges: &[Vec<usize>]) -> Option<Vec<usize>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        New,
        OnPath,
        Done,
    }
    let mut marks = vec![Mark::New; edges.len()];
    for start in 0..edges.len() {
        if marks[start] != Mark::New {
            continue;
        }
        // Iterative depth-first search: (node, next edge to follow); the stack is the path.
        let mut stack = vec![(start, 0usize)];
        marks[start] = Mark::OnPath;
        while let Some(&mut (node, ref mut next)) = stack.last_mut() {
            if let Some(&dep) = edges[node].get(*next) {
                *next += 1;
                match marks[dep] {
                    Mark::New => {
                        marks[dep] = Mark::OnPath;
                        stack.push((dep, 0));
                    }
                    Mark::OnPath => {
                        let from = stack.iter().position(|&(n, _)| n == dep).unwrap_or(0);
                        let mut cycle: Vec<usize> = stack[from..].iter().map(|&(n, _)| n).collect();
                        cycle.push(dep);
                        return Some(cycle);
                    }
                    Mark::Done => {}
                }
            } else {
                marks[node] = Mark::Done;
                stack.pop();
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    struct AnyKind;
    impl KindLookup for AnyKind {
        fn lookup(&self, kind: &str) -> Option<Arc<str>> {
            (kind != "unknown").then(|| Arc::from(kind))
        }
    }

    fn plan_one(spec: JobSpec) -> Result<NewJob, SpecError> {
        plan(vec![spec], false, &AnyKind, &SpecDefaults::default(), Utc::now())
            .map(|mut jobs| jobs.remove(0))
    }

    fn batch_entry(reference: &str, deps: &[&str]) -> JobSpec {
        JobSpec {
            reference: Some(reference.into()),
            depends_on: Some(deps.iter().map(|d| d.to_string()).collect()),
            ..JobSpec::new("noop")
        }
    }

    #[test]
    fn defaults_are_applied() {
        let job = plan_one(JobSpec::new("noop")).unwrap();
        assert_eq!(&*job.queue, DEFAULT_QUEUE);
        assert_eq!(job.priority, 0);
        assert_eq!(job.max_attempts, 3);
        assert_eq!(job.timeout_ms, 300_000);
        assert_eq!(job.payload.get(), "null");
        assert!(job.run_at.is_none());
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let cases = [
            (JobSpec { priority: Some(1001), ..JobSpec::new("noop") }, "priority"),
            (JobSpec { max_attempts: Some(0), ..JobSpec::new("noop") }, "max_attempts"),
            (JobSpec { timeout_ms: Some(0), ..JobSpec::new("noop") }, "timeout_ms"),
            (JobSpec { queue: Some("bad queue".into()), ..JobSpec::new("noop") }, "queue"),
            (
                JobSpec { idempotency_key: Some("k".repeat(257)), ..JobSpec::new("noop") },
                "idempotency_key",
            ),
            (JobSpec::new("k".repeat(129)), "kind"),
            (
                JobSpec { delay_ms: Some(5), run_at: Some(Utc::now()), ..JobSpec::new("noop") },
                "delay_ms",
            ),
            (JobSpec { delay_ms: Some(MAX_DELAY_MS + 1), ..JobSpec::new("noop") }, "delay_ms"),
            (
                JobSpec { run_at: Some(Utc::now() + Duration::days(400)), ..JobSpec::new("noop") },
                "run_at",
            ),
        ];
        for (spec, field) in cases {
            let err = plan_one(spec).unwrap_err();
            assert_eq!(err.kind, SpecErrorKind::Invalid);
            assert_eq!(err.field.as_deref(), Some(field));
        }
    }

    #[test]
    fn unknown_kind_is_its_own_error() {
        let err = plan_one(JobSpec::new("unknown")).unwrap_err();
        assert_eq!(err.kind, SpecErrorKind::UnknownKind);
    }

    #[test]
    fn delay_becomes_run_at() {
        let now = Utc::now();
        let spec = JobSpec { delay_ms: Some(1500), ..JobSpec::new("noop") };
        let job = plan(vec![spec], false, &AnyKind, &SpecDefaults::default(), now).unwrap();
        assert_eq!(job[0].run_at, Some(now + Duration::milliseconds(1500)));
    }

    #[test]
    fn batch_refs_resolve_to_assigned_ids() {
        let specs = vec![batch_entry("a", &[]), batch_entry("b", &["a"])];
        let jobs = plan(specs, true, &AnyKind, &SpecDefaults::default(), Utc::now()).unwrap();
        assert_eq!(jobs[1].depends_on, vec![jobs[0].id]);
    }

    #[test]
    fn a_cycle_is_rejected_and_named() {
        let specs =
            vec![batch_entry("a", &["c"]), batch_entry("b", &["a"]), batch_entry("c", &["b"])];
        let err = plan(specs, true, &AnyKind, &SpecDefaults::default(), Utc::now()).unwrap_err();
        assert_eq!(err.kind, SpecErrorKind::DependencyCycle);
        assert_eq!(err.message, "dependency cycle: a -> c -> b -> a");
    }

    #[test]
    fn a_self_dependency_is_a_cycle() {
        let err = plan(
            vec![batch_entry("a", &["a"])],
            true,
            &AnyKind,
            &SpecDefaults::default(),
            Utc::now(),
        )
        .unwrap_err();
        assert_eq!(err.kind, SpecErrorKind::DependencyCycle);
    }

    #[test]
    fn a_name_that_is_neither_ref_nor_id_is_an_unknown_dependency() {
        let err = plan(
            vec![batch_entry("a", &["zzz"])],
            true,
            &AnyKind,
            &SpecDefaults::default(),
            Utc::now(),
        )
        .unwrap_err();
        assert_eq!(err.kind, SpecErrorKind::UnknownDependency);
        assert_eq!(err.field.as_deref(), Some("jobs[0].depends_on"));
    }

    #[test]
    fn a_key_repeated_in_a_batch_is_rejected() {
        let mut a = batch_entry("a", &["b"]);
        let mut b = batch_entry("b", &[]);
        a.idempotency_key = Some("k".into());
        b.idempotency_key = Some("k".into());
        let err =
            plan(vec![a, b], true, &AnyKind, &SpecDefaults::default(), Utc::now()).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("jobs[1].idempotency_key"));
    }

    #[test]
    fn ref_outside_a_batch_is_rejected() {
        let err = plan_one(batch_entry("a", &[])).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("ref"));
    }
}
