//! The stored form of a job in Redis: one string per job, which the Lua scripts read and
//! rewrite without parsing JSON.
//!
//! Layout (big-endian), mirrored by `lua/lib.lua`:
//! ```text
//! offset  size  field
//!  0      1     format version (1)
//!  1      1     status (JobStatus::index)
//!  2      1     flags: bit 0 = cancel requested
//!  3      1     reserved (0)
//!  4      2     attempts
//!  6      2     max_attempts
//!  8      2     priority (signed)
//! 10      2     dependencies not yet succeeded
//! 12      8     lease token (f64; 0 when not running)
//! 20      8×5   created, updated, started, finished, run_at (f64 ms since the epoch; 0: none)
//! 60      4×8   lengths of the sections below (u32)
//! 92            kind, queue, idempotency key, data, worker, error, result, progress
//! ```
//! `data` is JSON only Rust reads (payload, backoff, timeout, dependencies); the header holds
//! what the scripts need. A record is a few hundred bytes: numbers are fixed-width, payloads
//! and results stay the JSON text they arrived as.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::job::{Backoff, JobId, JobRecord, JobStatus, Json, NewJob};

const VERSION: u8 = 1;
const HEADER_LEN: usize = 92;
const LENGTHS_AT: usize = 60;
const FLAG_CANCEL: u8 = 1;

/// A stored value that is not a job record of this format.
#[derive(Debug, thiserror::Error)]
#[error("job {id}: unreadable record ({why})")]
pub struct RecordError {
    pub id: JobId,
    pub why: String,
}

#[derive(Serialize)]
struct DataOut<'a> {
    payload: &'a RawValue,
    backoff: &'a Backoff,
    timeout_ms: u64,
    #[serde(skip_serializing_if = "<[JobId]>::is_empty")]
    depends_on: &'a [JobId],
}

#[derive(Deserialize)]
struct DataIn {
    payload: Box<RawValue>,
    backoff: Backoff,
    timeout_ms: u64,
    #[serde(default)]
    depends_on: Vec<JobId>,
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
    assemble(
        &header,
        [
            job.kind.as_bytes(),
            job.queue.as_bytes(),
            job.idempotency_key.as_deref().unwrap_or("").as_bytes(),
            &data,
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
    pub error: Option<&'a str>,
    pub result: Option<&'a str>,
    /// A cancel was requested while the attempt ran (kept on the record, as it was asked).
    pub cancel_requested: bool,
}

/// The record that replaces `stored` (the job's record while `attempt` ran) when the attempt
/// ends: the attempt counted, its start, worker and end, and the outcome.
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
    put_f64(&mut header, TOKEN, 0.0);
    put_f64(&mut header, UPDATED, now);
    put_f64(&mut header, STARTED, ms(attempt.started));
    if ending.status.is_terminal() {
        put_f64(&mut header, FINISHED, now);
    }
    if let Some(at) = ending.run_at {
        put_f64(&mut header, RUN_AT, ms(at));
    }
    let error = ending.error.map_or(sections[5], str::as_bytes);
    let result = ending.result.map_or(sections[6], str::as_bytes);
    Ok(assemble(
        &header,
        [
            sections[0],
            sections[1],
            sections[2],
            sections[3],
            attempt.worker.as_bytes(),
            error,
            result,
            sections[7],
        ],
    ))
}

/// Byte offsets of the header's time fields.
const TOKEN: usize = 12;
const CREATED: usize = 20;
const UPDATED: usize = 28;
const STARTED: usize = 36;
const FINISHED: usize = 44;
const RUN_AT: usize = 52;

fn put_f64(header: &mut [u8; LENGTHS_AT], at: usize, value: f64) {
    header[at..at + 8].copy_from_slice(&value.to_be_bytes());
}

/// The header followed by the section lengths and the sections.
fn assemble(header: &[u8; LENGTHS_AT], sections: [&[u8]; 8]) -> Vec<u8> {
    let len = HEADER_LEN + sections.iter().map(|s| s.len()).sum::<usize>();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(header);
    for section in &sections {
        out.extend_from_slice(&(section.len() as u32).to_be_bytes());
    }
    for section in &sections {
        out.extend_from_slice(section);
    }
    out
}

/// The eight sections of a stored record.
fn sections(id: JobId, bytes: &[u8]) -> Result<[&[u8]; 8], RecordError> {
    let fail = |why: &str| RecordError { id, why: why.to_owned() };
    if bytes.len() < HEADER_LEN || bytes[0] != VERSION {
        return Err(fail("not a job record of this version"));
    }
    let mut sections = [&bytes[0..0]; 8];
    let mut at = HEADER_LEN;
    for (i, section) in sections.iter_mut().enumerate() {
        let l = LENGTHS_AT + 4 * i;
        let len = u32::from_be_bytes(bytes[l..l + 4].try_into().expect("4 bytes")) as usize;
        *section = bytes.get(at..at + len).ok_or_else(|| fail("truncated"))?;
        at += len;
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
        created_at: time(f64_at(CREATED)).ok_or_else(|| fail("no creation time"))?,
        updated_at: time(f64_at(UPDATED)).ok_or_else(|| fail("no update time"))?,
        started_at: time(f64_at(STARTED)),
        finished_at: time(f64_at(FINISHED)),
        result: json(6)?,
        error: optional(5)?.map(str::to_owned),
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
        assert_eq!((record.created_at, record.updated_at), (now, now));
        assert!(record.result.is_none() && record.error.is_none() && record.worker.is_none());
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
    }
}
