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
    let status = if job.run_at.is_some_and(|at| at > now) {
        JobStatus::Scheduled
    } else {
        JobStatus::Queued
    };
    let data = serde_json::to_vec(&DataOut {
        payload: &job.payload,
        backoff: &job.backoff,
        timeout_ms: job.timeout_ms,
        depends_on: &job.depends_on,
    })
    .expect("job data serialises");
    let now_ms = ms(now);
    let sections: [&[u8]; 8] = [
        job.kind.as_bytes(),
        job.queue.as_bytes(),
        job.idempotency_key.as_deref().unwrap_or("").as_bytes(),
        &data,
        b"",
        b"",
        b"",
        b"",
    ];
    let mut out = Vec::with_capacity(HEADER_LEN + sections.iter().map(|s| s.len()).sum::<usize>());
    out.extend_from_slice(&[VERSION, status.index() as u8, 0, 0]);
    out.extend_from_slice(&0u16.to_be_bytes());
    out.extend_from_slice(&(job.max_attempts as u16).to_be_bytes());
    out.extend_from_slice(&(job.priority as i16).to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes());
    for value in [0.0, now_ms, now_ms, 0.0, 0.0, job.run_at.map_or(0.0, ms)] {
        out.extend_from_slice(&value.to_be_bytes());
    }
    for section in &sections {
        out.extend_from_slice(&(section.len() as u32).to_be_bytes());
    }
    for section in &sections {
        out.extend_from_slice(section);
    }
    out
}

/// Reads a stored record back into a [`JobRecord`].
pub fn decode(id: JobId, bytes: &[u8]) -> Result<JobRecord, RecordError> {
    let fail = |why: &str| RecordError { id, why: why.to_owned() };
    if bytes.len() < HEADER_LEN || bytes[0] != VERSION {
        return Err(fail("not a job record of this version"));
    }
    let u16_at = |at: usize| u16::from_be_bytes([bytes[at], bytes[at + 1]]);
    let f64_at = |at: usize| f64::from_be_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let status = *JobStatus::ALL.get(bytes[1] as usize).ok_or_else(|| fail("unknown status"))?;
    let mut sections = [&bytes[0..0]; 8];
    let mut at = HEADER_LEN;
    for (i, section) in sections.iter_mut().enumerate() {
        let l = LENGTHS_AT + 4 * i;
        let len = u32::from_be_bytes(bytes[l..l + 4].try_into().expect("4 bytes")) as usize;
        *section = bytes.get(at..at + len).ok_or_else(|| fail("truncated"))?;
        at += len;
    }
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
        run_at: time(f64_at(52)),
        depends_on: data.depends_on,
        idempotency_key: optional(2)?.map(Into::into),
        created_at: time(f64_at(20)).ok_or_else(|| fail("no creation time"))?,
        updated_at: time(f64_at(28)).ok_or_else(|| fail("no update time"))?,
        started_at: time(f64_at(36)),
        finished_at: time(f64_at(44)),
        result: json(6)?,
        error: optional(5)?.map(str::to_owned),
        cancel_requested: bytes[2] & FLAG_CANCEL != 0,
        worker: optional(4)?.map(Into::into),
        progress: json(7)?,
    })
}

/// The lease token of a running record, as the scripts store it.
pub fn token(bytes: &[u8]) -> Option<u64> {
    let raw = bytes.get(12..20)?;
    Some(f64::from_be_bytes(raw.try_into().ok()?) as u64)
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
    use std::sync::Arc;

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
