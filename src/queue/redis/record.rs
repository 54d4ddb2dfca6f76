//! The stored form of a job in Redis: one string per job, which the Lua scripts read and
//! rewrite without parsing JSON.
//!
//! Layout (big-endian), mirrored by `lua/lib.lua`:
//! ```text
//! offset  size  field
//!  0      1     format version (3; 2 is read)
//!  1      1     status (JobStatus::index)
//!  2      1     flags: bit 0 = cancel requested
//!  3      1     reserved (0)
//!  4      2     attempts
//!  6      2     max_attempts
//!  8      2     priority (signed)
//! 10      2     dependencies not yet succeeded
//! 12      4     cost (u32; 0 in version 2 records, read as 1)
//! 16      4     length of the flow section (u32; 0 in version 2 records)
//! 20      8×5   created, updated, started, finished, run_at (f64 ms since the epoch; 0: none)
//! 60      4×9   lengths of the sections below (u32)
//! 96            kind, queue, idempotency key, data, worker, error, result, progress, history,
//!               flow
//! ```
//! `data` is JSON only Rust reads (payload, backoff, timeout, dependencies); the header holds
//! what the scripts need. `flow` is `<group>|<limit>,<limit>...` (empty for a job with neither
//! group nor limits): the scripts file a queued job with a flow in its lane (see
//! `lua/lib.lua`), and release its limits when an attempt ends. Version 3 added cost and flow
//! where version 2 kept a lease token that was always 0, so a version 2 record reads as a job
//! without flow; both are read. A record is a few hundred bytes: numbers are fixed-width, payloads
//! and results stay the JSON text they arrived as.
//!
//! `history` holds the attempts that ended without success as JSON objects separated by commas,
//! without brackets, oldest first: `{"attempt":1,"error":"boom","at":1800000000123},{...}`
//! (`at` in ms since the epoch), so a script appends an entry by concatenation, without parsing
//! JSON. Every entry starts with `{"attempt":`, which cannot occur inside an error text (its
//! quotes are escaped), so entries are counted by that pattern. Version 1 (eight sections, no
//! history) is not read.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::job::spec::no_limits;
use crate::job::trace::TraceContext;
use crate::job::{Backoff, FailedAttempt, JobId, JobRecord, JobStatus, Json, NewJob, SpecDefaults};

const VERSION: u8 = 3;
/// The oldest format version still read (no cost, no flow).
const OLDEST_VERSION: u8 = 2;
const SECTIONS: usize = 9;
const LENGTHS_AT: usize = 60;
const HEADER_LEN: usize = LENGTHS_AT + 4 * SECTIONS;
const FLAG_CANCEL: u8 = 1;
/// The index of the history section.
const HISTORY: usize = 8;
/// How every entry of the history section starts.
const ENTRY_START: &[u8] = b"{\"attempt\":";

/// A stored value that is not a job record of this format.
#[derive(Debug, thiserror::Error)]
#[error("job {id}: unreadable record ({why})")]
pub struct RecordError {
    pub id: JobId,
    pub why: String,
}

/// The data section. The retry policy and the timeout are left out when they are the built-in
/// defaults, as most jobs' are: a third of a small job's record, written and read on every
/// transition. A record without them reads back the defaults, so changing a default needs a
/// new format version.
#[derive(Serialize)]
struct DataOut<'a> {
    payload: &'a RawValue,
    #[serde(skip_serializing_if = "is_default_backoff")]
    backoff: &'a Backoff,
    #[serde(skip_serializing_if = "is_default_timeout")]
    timeout_ms: u64,
    #[serde(skip_serializing_if = "<[JobId]>::is_empty")]
    depends_on: &'a [JobId],
    trace: &'a TraceContext,
}

/// An entry of the history section.
#[derive(Serialize, Deserialize)]
struct StoredAttempt<'a> {
    attempt: u32,
    #[serde(borrow)]
    error: std::borrow::Cow<'a, str>,
    /// Milliseconds since the epoch.
    at: i64,
}

#[derive(Deserialize)]
struct DataIn {
    payload: Box<RawValue>,
    #[serde(default)]
    backoff: Backoff,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
    #[serde(default)]
    depends_on: Vec<JobId>,
    /// Absent in records written before traces were kept.
    #[serde(default)]
    trace: Option<TraceContext>,
}

fn is_default_backoff(backoff: &&Backoff) -> bool {
    **backoff == Backoff::default()
}

fn is_default_timeout(timeout_ms: &u64) -> bool {
    *timeout_ms == default_timeout()
}

fn default_timeout() -> u64 {
    SpecDefaults::default().timeout_ms
}

/// The record of a new job, `queued` or (with a future `run_at`) `scheduled`; the submit script
/// makes it `waiting` when dependencies are pending.
pub fn encode_new(job: &NewJob, now: DateTime<Utc>) -> Vec<u8> {
    let status = new_status(job, now);
    let data = serde_json::to_vec(&DataOut {
        payload: &job.payload,
        backoff: &job.backoff,
        timeout_ms: job.timeout_ms,
        depends_on: &job.depends_on,
        trace: &job.trace,
    })
    .expect("job data serialises");
    let now_ms = ms(now);
    let mut header = [0u8; LENGTHS_AT];
    header[0] = VERSION;
    header[1] = status.index() as u8;
    header[6..8].copy_from_slice(&(job.max_attempts as u16).to_be_bytes());
    header[8..10].copy_from_slice(&(job.priority as i16).to_be_bytes());
    put_f64(&mut header, CREATED, now_ms);
    put_f64(&mut header, UPDATED, now_ms);
    put_f64(&mut header, RUN_AT, job.run_at.filter(|at| *at > now).map_or(0.0, ms));
    header[COST..COST + 4].copy_from_slice(&job.cost.to_be_bytes());
    let flow = flow_text(job.group.as_deref(), &job.limits);
    assemble(
        &header,
        flow.as_bytes(),
        [
            job.kind.as_bytes(),
            job.queue.as_bytes(),
            job.idempotency_key.as_deref().unwrap_or("").as_bytes(),
            &data,
            b"",
            b"",
            b"",
            b"",
            b"",
        ],
    )
}

/// `queued`, or `scheduled` when the job's `run_at` is ahead of `now`.
pub fn new_status(job: &NewJob, now: DateTime<Utc>) -> JobStatus {
    if job.run_at.is_some_and(|at| at > now) {
        JobStatus::Scheduled
    } else {
        JobStatus::Queued
    }
}

/// A running attempt, as its `run` entry (`<token>|<started ms>|<worker>`) describes it.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub token: u64,
    pub started: DateTime<Utc>,
    pub worker: Arc<str>,
}

impl Attempt {
    pub fn parse(run: &[u8]) -> Option<Attempt> {
        let text = std::str::from_utf8(run).ok()?;
        let mut parts = text.splitn(3, '|');
        let token = parts.next()?.parse().ok()?;
        let started = DateTime::from_timestamp_millis(parts.next()?.parse().ok()?)?;
        Some(Attempt { token, started, worker: parts.next()?.into() })
    }
}

/// What readers see of a job: its stored record, with the running attempt (`run` entry, cancel
/// request, latest progress) applied when there is one.
pub fn read(
    id: JobId,
    stored: &[u8],
    run: Option<&[u8]>,
    cancel: bool,
    progress: Option<&[u8]>,
) -> Result<JobRecord, RecordError> {
    let mut record = decode(id, stored)?;
    let Some(run) = run.filter(|r| !r.is_empty()) else { return Ok(record) };
    let attempt = Attempt::parse(run)
        .ok_or_else(|| RecordError { id, why: "unreadable running attempt".into() })?;
    record.status = JobStatus::Running;
    record.attempts += 1;
    record.started_at = Some(attempt.started);
    record.updated_at = record.updated_at.max(attempt.started);
    record.worker = Some(attempt.worker);
    record.cancel_requested = cancel;
    if let Some(progress) = progress.and_then(|p| std::str::from_utf8(p).ok()) {
        record.progress = crate::job::record::json_from_str(progress).ok().or(record.progress);
    }
    Ok(record)
}

/// How an attempt ended, for its final record.
pub struct Ending<'a> {
    pub status: JobStatus,
    pub now: DateTime<Utc>,
    /// When to run again (a retry), replacing the stored `run_at`.
    pub run_at: Option<DateTime<Utc>>,
    /// Why the attempt did not succeed (`None`: it succeeded): entered in the history, and the
    /// job's error when `status` is terminal.
    pub error: Option<&'a str>,
    pub result: Option<&'a str>,
    /// A cancel was requested while the attempt ran (kept on the record, as it was asked).
    pub cancel_requested: bool,
}

/// The record that replaces `stored` (the job's record while `attempt` ran) when the attempt
/// ends: the attempt counted, its start, worker and end, and the outcome (an attempt that did
/// not succeed is appended to the history; the error is kept only when the job is terminal).
pub fn ended(
    id: JobId,
    stored: &[u8],
    attempt: &Attempt,
    ending: Ending<'_>,
) -> Result<Vec<u8>, RecordError> {
    let sections = sections(id, stored)?;
    let mut header: [u8; LENGTHS_AT] = stored[..LENGTHS_AT].try_into().expect("checked length");
    let now = ms(ending.now);
    header[1] = ending.status.index() as u8;
    header[2] = if ending.cancel_requested { FLAG_CANCEL } else { 0 };
    let attempts = u16::from_be_bytes([header[4], header[5]]).saturating_add(1);
    header[4..6].copy_from_slice(&attempts.to_be_bytes());
    header[0] = VERSION;
    put_f64(&mut header, UPDATED, now);
    put_f64(&mut header, STARTED, ms(attempt.started));
    if ending.status.is_terminal() {
        put_f64(&mut header, FINISHED, now);
    }
    if let Some(at) = ending.run_at {
        put_f64(&mut header, RUN_AT, ms(at));
    }
    let error = match ending.error {
        Some(error) if ending.status.is_terminal() => error.as_bytes(),
        _ => b"",
    };
    let result = ending.result.map_or(sections[6], str::as_bytes);
    let appended;
    let history = match ending.error {
        Some(error) => {
            appended = append_history(sections[HISTORY], attempts as u32, error, ending.now);
            &appended[..]
        }
        None => sections[HISTORY],
    };
    Ok(assemble(
        &header,
        flow_section(stored),
        [
            sections[0],
            sections[1],
            sections[2],
            sections[3],
            attempt.worker.as_bytes(),
            error,
            result,
            sections[7],
            history,
        ],
    ))
}

/// The history section `history` with attempt `attempt` appended, ended at `at` for `error`
/// (cut to [`FailedAttempt::MAX_ERROR_BYTES`]); beyond [`JobRecord::MAX_HISTORY`] entries
/// (counted only when the attempt number allows as many) the oldest are dropped, as
/// `lua/lib.lua` does.
fn append_history(history: &[u8], attempt: u32, error: &str, at: DateTime<Utc>) -> Vec<u8> {
    let entry = StoredAttempt {
        attempt,
        error: FailedAttempt::cut(error).into(),
        at: at.timestamp_millis(),
    };
    let mut out = Vec::with_capacity(history.len() + entry.error.len() + 64);
    out.extend_from_slice(history);
    if !out.is_empty() {
        out.push(b',');
    }
    serde_json::to_writer(&mut out, &entry).expect("an entry serialises");
    if attempt as usize > JobRecord::MAX_HISTORY {
        let starts: Vec<usize> = out
            .windows(ENTRY_START.len())
            .enumerate()
            .filter(|(_, w)| *w == ENTRY_START)
            .map(|(at, _)| at)
            .collect();
        if starts.len() > JobRecord::MAX_HISTORY {
            out.drain(..starts[starts.len() - JobRecord::MAX_HISTORY]);
        }
    }
    out
}

/// The entries of a history section.
fn decode_history(id: JobId, history: &[u8]) -> Result<Vec<FailedAttempt>, RecordError> {
    if history.is_empty() {
        return Ok(Vec::new());
    }
    let fail = || RecordError { id, why: "invalid history".to_owned() };
    let text = std::str::from_utf8(history).map_err(|_| fail())?;
    let list = format!("[{text}]");
    let entries: Vec<StoredAttempt<'_>> = serde_json::from_str(&list).map_err(|_| fail())?;
    entries
        .into_iter()
        .map(|e| {
            let at = DateTime::from_timestamp_millis(e.at).ok_or_else(fail)?;
            Ok(FailedAttempt { attempt: e.attempt, error: e.error.into_owned(), at })
        })
        .collect()
}

/// Byte offsets of the header's cost, flow length and time fields.
const COST: usize = 12;
const FLOW_LEN: usize = 16;
const CREATED: usize = 20;
const UPDATED: usize = 28;
const STARTED: usize = 36;
const FINISHED: usize = 44;
const RUN_AT: usize = 52;

fn put_f64(header: &mut [u8; LENGTHS_AT], at: usize, value: f64) {
    header[at..at + 8].copy_from_slice(&value.to_be_bytes());
}

/// The flow section of a job with `group` and `limits`: `<group>|<limit>,<limit>...`, or empty
/// when it has neither. Names hold neither `|` nor `,` (`validate_flow_name`).
pub fn flow_text(group: Option<&str>, limits: &[Arc<str>]) -> String {
    if group.is_none() && limits.is_empty() {
        return String::new();
    }
    let mut text = group.unwrap_or("").to_owned();
    text.push('|');
    for (i, limit) in limits.iter().enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push_str(limit);
    }
    text
}

/// The group and limits of a flow section.
fn parse_flow(flow: &str) -> (Option<Arc<str>>, Arc<[Arc<str>]>) {
    let Some((group, limits)) = flow.split_once('|') else { return (None, no_limits()) };
    let group = (!group.is_empty()).then(|| Arc::from(group));
    if limits.is_empty() {
        return (group, no_limits());
    }
    (group, limits.split(',').map(Arc::from).collect())
}

/// The header (with the flow's length set) followed by the section lengths, the sections and
/// the flow.
fn assemble(header: &[u8; LENGTHS_AT], flow: &[u8], sections: [&[u8]; SECTIONS]) -> Vec<u8> {
    let len = HEADER_LEN + sections.iter().map(|s| s.len()).sum::<usize>() + flow.len();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(header);
    out[FLOW_LEN..FLOW_LEN + 4].copy_from_slice(&(flow.len() as u32).to_be_bytes());
    for section in &sections {
        out.extend_from_slice(&(section.len() as u32).to_be_bytes());
    }
    for section in &sections {
        out.extend_from_slice(section);
    }
    out.extend_from_slice(flow);
    out
}

/// The flow section of a stored record (checked by `sections` before: empty when absent).
fn flow_section(bytes: &[u8]) -> &[u8] {
    let len = u32::from_be_bytes(bytes[FLOW_LEN..FLOW_LEN + 4].try_into().expect("4 bytes"));
    &bytes[bytes.len().saturating_sub(len as usize)..]
}

/// The sections of a stored record.
fn sections(id: JobId, bytes: &[u8]) -> Result<[&[u8]; SECTIONS], RecordError> {
    let fail = |why: &str| RecordError { id, why: why.to_owned() };
    if bytes.len() < HEADER_LEN || !(OLDEST_VERSION..=VERSION).contains(&bytes[0]) {
        return Err(fail("not a job record of a version this build reads"));
    }
    let mut sections = [&bytes[0..0]; SECTIONS];
    let mut at = HEADER_LEN;
    for (i, section) in sections.iter_mut().enumerate() {
        let l = LENGTHS_AT + 4 * i;
        let len = u32::from_be_bytes(bytes[l..l + 4].try_into().expect("4 bytes")) as usize;
        let end = at.checked_add(len).ok_or_else(|| fail("truncated"))?;
        *section = bytes.get(at..end).ok_or_else(|| fail("truncated"))?;
        at = end;
    }
    let flow = u32::from_be_bytes(bytes[FLOW_LEN..FLOW_LEN + 4].try_into().expect("4 bytes"));
    if bytes[0] > OLDEST_VERSION && bytes.len() != at + flow as usize {
        return Err(fail("truncated flow"));
    }
    Ok(sections)
}

/// Reads a stored record back into a [`JobRecord`].
pub fn decode(id: JobId, bytes: &[u8]) -> Result<JobRecord, RecordError> {
    let fail = |why: &str| RecordError { id, why: why.to_owned() };
    let sections = sections(id, bytes)?;
    let u16_at = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
    let f64_at = |at: usize| f64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let status = *JobStatus::ALL.get(bytes[1] as usize).ok_or_else(|| fail("unknown status"))?;
    let text = |i: usize| std::str::from_utf8(sections[i]).map_err(|_| fail("section not UTF-8"));
    let optional = |i: usize| -> Result<Option<&str>, RecordError> {
        Ok(Some(text(i)?).filter(|s| !s.is_empty()))
    };
    let json = |i: usize| -> Result<Option<Json>, RecordError> {
        optional(i)?
            .map(|s| crate::job::record::json_from_str(s).map_err(|_| fail("invalid JSON")))
            .transpose()
    };
    let data: DataIn = serde_json::from_slice(sections[3]).map_err(|_| fail("invalid data"))?;
    let (group, limits, cost) = if bytes[0] > OLDEST_VERSION {
        let flow = std::str::from_utf8(flow_section(bytes)).map_err(|_| fail("flow not UTF-8"))?;
        let (group, limits) = parse_flow(flow);
        let cost = u32::from_be_bytes(bytes[COST..COST + 4].try_into().expect("4 bytes"));
        (group, limits, cost.max(1))
    } else {
        (None, no_limits(), 1)
    };
    Ok(JobRecord {
        id,
        kind: text(0)?.into(),
        payload: Json::from(data.payload),
        queue: text(1)?.into(),
        priority: i16::from_be_bytes([bytes[8], bytes[9]]) as i32,
        status,
        attempts: u16_at(4) as u32,
        max_attempts: u16_at(6) as u32,
        backoff: data.backoff,
        timeout_ms: data.timeout_ms,
        run_at: time(f64_at(RUN_AT)),
        depends_on: data.depends_on,
        idempotency_key: optional(2)?.map(Into::into),
        limits,
        cost,
        group,
        trace: data.trace,
        created_at: time(f64_at(CREATED)).ok_or_else(|| fail("no creation time"))?,
        updated_at: time(f64_at(UPDATED)).ok_or_else(|| fail("no update time"))?,
        started_at: time(f64_at(STARTED)),
        finished_at: time(f64_at(FINISHED)),
        result: json(6)?,
        error: optional(5)?.map(str::to_owned),
        history: decode_history(id, sections[HISTORY])?,
        cancel_requested: bytes[2] & FLAG_CANCEL != 0,
        worker: optional(4)?.map(Into::into),
        progress: json(7)?,
    })
}

/// Milliseconds since the epoch, as the scripts count time.
pub fn ms(at: DateTime<Utc>) -> f64 {
    at.timestamp_millis() as f64
}

fn time(ms: f64) -> Option<DateTime<Utc>> {
    (ms != 0.0).then(|| DateTime::from_timestamp_millis(ms as i64)).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::job::record::json_from_str;

    fn job() -> NewJob {
        NewJob {
            id: JobId::new(),
            kind: Arc::from("send_email"),
            payload: json_from_str(r#"{"to":"a@example.com"}"#).unwrap(),
            queue: Arc::from("mail"),
            priority: -7,
            max_attempts: 5,
            backoff: Backoff::default(),
            timeout_ms: 1234,
            run_at: None,
            depends_on: vec![JobId::new()],
            idempotency_key: Some(Arc::from("k-1")),
            limits: Arc::from(vec![Arc::from("github"), Arc::from("github:acme")]),
            cost: 3,
            group: Some(Arc::from("acme")),
            trace: Default::default(),
        }
    }

    #[test]
    fn a_new_record_reads_back_as_submitted() {
        let job = job();
        let now = DateTime::from_timestamp_millis(1_800_000_000_123).unwrap();
        let record = decode(job.id, &encode_new(&job, now)).unwrap();
        assert_eq!(record.status, JobStatus::Queued);
        assert_eq!((&*record.kind, &*record.queue), ("send_email", "mail"));
        assert_eq!(record.payload.get(), job.payload.get());
        assert_eq!((record.priority, record.max_attempts, record.attempts), (-7, 5, 0));
        assert_eq!(record.timeout_ms, 1234);
        assert_eq!(record.depends_on, job.depends_on);
        assert_eq!(record.idempotency_key.as_deref(), Some("k-1"));
        assert_eq!((record.limits, record.cost, record.group), (job.limits, 3, job.group));
        assert_eq!((record.created_at, record.updated_at), (now, now));
        assert!(record.result.is_none() && record.error.is_none() && record.worker.is_none());
    }

    #[test]
    fn default_options_are_left_out_of_the_record_and_read_back() {
        let mut job = job();
        job.depends_on.clear();
        let with = |job: &NewJob| encode_new(job, at(0));
        let custom = Backoff { initial_ms: 50, max_ms: 60, multiplier: 1.5, jitter: false };
        job.backoff = custom;
        let record = decode(job.id, &with(&job)).unwrap();
        assert_eq!((record.backoff, record.timeout_ms), (custom, 1234));

        job.backoff = Backoff::default();
        job.timeout_ms = SpecDefaults::default().timeout_ms;
        let stored = with(&job);
        let data = String::from_utf8_lossy(&stored);
        assert!(!data.contains("backoff") && !data.contains("timeout_ms"), "{data}");
        let record = decode(job.id, &stored).unwrap();
        assert_eq!((record.backoff, record.timeout_ms), (Backoff::default(), 300_000));
        assert_eq!(record.payload.get(), job.payload.get());
    }
    #[test]
    fn a_future_run_at_makes_it_scheduled() {
        let mut job = job();
        let now = Utc::now();
        job.run_at = Some(now + chrono::Duration::seconds(5));
        let record = decode(job.id, &encode_new(&job, now)).unwrap();
        assert_eq!(record.status, JobStatus::Scheduled);
        assert_eq!(record.run_at.map(|t| t.timestamp_millis()), Some(ms(now) as i64 + 5_000));
    }

    #[test]
    fn a_running_attempt_shows_and_its_end_is_recorded() {
        let job = job();
        let now = DateTime::from_timestamp_millis(1_800_000_000_000).unwrap();
        let stored = encode_new(&job, now);
        let started = now + chrono::Duration::seconds(2);
        let run = format!("42|{}|host-1/w3", started.timestamp_millis());
        let running =
            read(job.id, &stored, Some(run.as_bytes()), true, Some(b"{\"done\":1}")).unwrap();
        assert_eq!((running.status, running.attempts), (JobStatus::Running, 1));
        assert_eq!((running.started_at, running.updated_at), (Some(started), started));
        assert_eq!(running.worker.as_deref(), Some("host-1/w3"));
        assert!(running.cancel_requested);
        assert_eq!(running.progress.unwrap().get(), r#"{"done":1}"#);

        let attempt = Attempt::parse(run.as_bytes()).unwrap();
        assert_eq!(attempt.token, 42);
        let end = started + chrono::Duration::seconds(1);
        let ending = Ending {
            status: JobStatus::Succeeded,
            now: end,
            run_at: None,
            error: None,
            result: Some(r#"{"sent":1}"#),
            cancel_requested: false,
        };
        let done = decode(job.id, &ended(job.id, &stored, &attempt, ending).unwrap()).unwrap();
        assert_eq!((done.status, done.attempts), (JobStatus::Succeeded, 1));
        assert_eq!((done.started_at, done.finished_at), (Some(started), Some(end)));
        assert_eq!(done.result.unwrap().get(), r#"{"sent":1}"#);
        assert_eq!(done.worker.as_deref(), Some("host-1/w3"));
        assert_eq!(done.payload.get(), job.payload.get());
        assert_eq!(done.idempotency_key.as_deref(), Some("k-1"));
    }

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_800_000_000_000 + ms).unwrap()
    }

    /// Ends the attempt running on `stored` (its job's record) at `at(ms)` as `status`, with
    /// `error` (`None`: success).
    fn end(id: JobId, stored: &[u8], ms: i64, status: JobStatus, error: Option<&str>) -> Vec<u8> {
        let run = format!("7|{}|host/w0", at(ms - 1).timestamp_millis());
        let attempt = Attempt::parse(run.as_bytes()).unwrap();
        let result = (status == JobStatus::Succeeded).then_some("1");
        let ending =
            Ending { status, now: at(ms), run_at: None, error, result, cancel_requested: false };
        ended(id, stored, &attempt, ending).unwrap()
    }

    #[test]
    fn failed_attempts_enter_the_history_and_the_error_is_the_final_outcome() {
        let job = job();
        let new = encode_new(&job, at(0));
        assert!(decode(job.id, &new).unwrap().history.is_empty());
        let tricky = r#"boom, {"attempt":9,"error":"x"} "quoted" \ é"#;
        let retried = end(job.id, &new, 10, JobStatus::Queued, Some(tricky));
        let record = decode(job.id, &retried).unwrap();
        assert_eq!((record.status, record.error.as_deref()), (JobStatus::Queued, None));
        assert_eq!(record.history, vec![FailedAttempt::new(1, tricky, at(10))]);
        let failed = end(job.id, &retried, 20, JobStatus::Failed, Some("again"));
        let record = decode(job.id, &failed).unwrap();
        assert_eq!((record.status, record.error.as_deref()), (JobStatus::Failed, Some("again")));
        let expected =
            vec![FailedAttempt::new(1, tricky, at(10)), FailedAttempt::new(2, "again", at(20))];
        assert_eq!(record.history, expected);
        // A success after the retry: no error, the failure stays in the history.
        let succeeded = end(job.id, &retried, 30, JobStatus::Succeeded, None);
        let record = decode(job.id, &succeeded).unwrap();
        assert_eq!((record.status, record.error.as_deref()), (JobStatus::Succeeded, None));
        assert_eq!(record.history, vec![FailedAttempt::new(1, tricky, at(10))]);
        assert_eq!(record.result.unwrap().get(), "1");
    }

    #[test]
    fn the_history_keeps_the_latest_entries_and_cuts_long_errors() {
        let mut job = job();
        job.max_attempts = 200;
        let mut stored = encode_new(&job, at(0));
        let long = "€".repeat(FailedAttempt::MAX_ERROR_BYTES);
        for n in 1..=JobRecord::MAX_HISTORY as i64 + 3 {
            stored = end(job.id, &stored, n, JobStatus::Queued, Some(&long));
        }
        let record = decode(job.id, &stored).unwrap();
        assert_eq!(record.attempts, JobRecord::MAX_HISTORY as u32 + 3);
        assert_eq!(record.history.len(), JobRecord::MAX_HISTORY);
        assert_eq!(record.history[0].attempt, 4);
        assert_eq!(record.history[0].at, at(4));
        let last = record.history.last().unwrap();
        assert_eq!(last.attempt, JobRecord::MAX_HISTORY as u32 + 3);
        assert_eq!(last.error, "€".repeat(FailedAttempt::MAX_ERROR_BYTES / 3), "cut on a char");
    }

    #[test]
    fn the_history_section_is_the_text_the_scripts_append_to() {
        let job = job();
        let stored = end(job.id, &encode_new(&job, at(0)), 123, JobStatus::Queued, Some("a\"b"));
        let stored = end(job.id, &stored, 456, JobStatus::Failed, Some("lease expired"));
        let history = sections(job.id, &stored).unwrap()[HISTORY];
        assert_eq!(
            std::str::from_utf8(history).unwrap(),
            r#"{"attempt":1,"error":"a\"b","at":1800000000123},{"attempt":2,"error":"lease expired","at":1800000000456}"#
        );
    }

    #[test]
    fn foreign_or_truncated_bytes_are_an_error_not_a_panic() {
        let id = JobId::new();
        assert!(decode(id, b"").is_err());
        assert!(decode(id, b"hello").is_err());
        let mut bytes = encode_new(&job(), Utc::now());
        bytes.truncate(bytes.len() - 3);
        assert!(decode(id, &bytes).is_err());
        bytes[1] = 42;
        assert!(decode(id, &bytes).is_err());

        // A job without flow, whose history ends the record.
        let plain = NewJob { limits: no_limits(), group: None, ..job() };
        let id = plain.id;
        let good = end(id, &encode_new(&plain, at(0)), 5, JobStatus::Queued, Some("boom"));
        assert_eq!(decode(id, &good).unwrap().history.len(), 1);
        for len in 0..good.len() {
            assert!(decode(id, &good[..len]).is_err(), "cut to {len} bytes");
        }
        // A record of the first version (eight sections, no history).
        let mut old = good.clone();
        old[0] = 1;
        assert!(decode(id, &old).is_err());
        // Lengths past the end, and a history that is not the entries' JSON.
        for section in 0..SECTIONS {
            let mut huge = good.clone();
            let l = LENGTHS_AT + 4 * section;
            huge[l..l + 4].copy_from_slice(&u32::MAX.to_be_bytes());
            assert!(decode(id, &huge).is_err(), "section {section}");
        }
        let mut bad = good.clone();
        *bad.last_mut().unwrap() = b']';
        assert!(decode(id, &bad).is_err());
        let mut bad = good.clone();
        bad.extend_from_slice(b",{}");
        let l = LENGTHS_AT + 4 * HISTORY;
        let len = u32::from_be_bytes(bad[l..l + 4].try_into().unwrap()) + 3;
        bad[l..l + 4].copy_from_slice(&len.to_be_bytes());
        assert!(decode(id, &bad).is_err());
        // A flow longer than what follows the sections.
        let mut bad = encode_new(&job(), at(0));
        bad[FLOW_LEN..FLOW_LEN + 4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(decode(id, &bad).is_err());
    }

    #[test]
    fn a_version_2_record_reads_as_a_job_without_flow() {
        let job = NewJob { limits: no_limits(), group: None, cost: 1, ..job() };
        let mut stored = encode_new(&job, at(0));
        // Version 2 kept a lease token, always 0, where cost and flow length are now.
        stored[0] = 2;
        stored[COST..FLOW_LEN + 4].copy_from_slice(&0f64.to_be_bytes());
        let record = decode(job.id, &stored).unwrap();
        assert_eq!((record.limits.len(), record.cost, record.group), (0, 1, None));
        assert_eq!(record.idempotency_key.as_deref(), Some("k-1"));
        // Its attempt's end is written in the current version, flow still empty.
        let ended = end(job.id, &stored, 7, JobStatus::Succeeded, None);
        assert_eq!(ended[0], VERSION);
        assert_eq!(decode(job.id, &ended).unwrap().limits.len(), 0);
    }
}
