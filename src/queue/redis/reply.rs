//! Reading the scripts' answers (Redis values) into the queue's types.

use ::redis::Value;
use chrono::{DateTime, Utc};

use crate::job::{JobId, JobStatus};
use crate::queue::{Changes, QueueError, Takeover, TakeoverCause};
use crate::redis::RedisError;

/// An answer that does not have the shape the script promises: a bug, not bad luck.
pub(super) fn malformed(what: &str) -> QueueError {
    QueueError::Internal(format!("unexpected answer from the queue script: {what}"))
}

pub(super) fn array(value: &Value) -> Result<&[Value], QueueError> {
    match value {
        Value::Array(items) => Ok(items),
        Value::Nil => Ok(&[]),
        _ => Err(malformed("expected an array")),
    }
}

pub(super) fn int(value: &Value) -> Result<i64, QueueError> {
    match value {
        Value::Int(n) => Ok(*n),
        Value::BulkString(b) => {
            std::str::from_utf8(b).ok().and_then(|s| s.parse().ok()).ok_or(malformed("a number"))
        }
        _ => Err(malformed("expected a number")),
    }
}

pub(super) fn bytes(value: &Value) -> Result<&[u8], QueueError> {
    match value {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.as_bytes()),
        _ => Err(malformed("expected a string")),
    }
}

pub(super) fn text(value: &Value) -> Result<&str, QueueError> {
    std::str::from_utf8(bytes(value)?).map_err(|_| malformed("a string that is not UTF-8"))
}

pub(super) fn id(value: &Value) -> Result<JobId, QueueError> {
    text(value)?.parse().map_err(|_| malformed("a job id"))
}

/// A time in the scripts' milliseconds; 0 means none.
pub(super) fn time(ms: i64) -> Option<DateTime<Utc>> {
    (ms != 0).then(|| DateTime::from_timestamp_millis(ms)).flatten()
}

/// `{ready count, earliest due (0: none), finished ids...}`.
pub(super) fn changes(value: &Value) -> Result<Changes, QueueError> {
    let items = array(value)?;
    let (ready, due) = match items {
        [ready, due, ..] => (int(ready)?, int(due)?),
        _ => return Err(malformed("changes")),
    };
    Ok(Changes {
        finished: items[2..].iter().map(id).collect::<Result<_, _>>()?,
        ready: ready.max(0) as usize,
        next_due: time(due),
        ..Changes::default()
    })
}

/// The attempts a script took from workers that are gone, `{id, kind, worker, ...}`, all for
/// `cause`.
pub(super) fn taken(value: &Value, cause: TakeoverCause) -> Result<Vec<Takeover>, QueueError> {
    let items = array(value)?;
    if items.len() % 3 != 0 {
        return Err(malformed("taken attempts"));
    }
    items
        .chunks_exact(3)
        .map(|t| {
            let (kind, worker) = (text(&t[1])?, text(&t[2])?);
            Ok(Takeover { id: id(&t[0])?, kind: kind.into(), worker: worker.to_owned(), cause })
        })
        .collect()
}

/// Adds what another call changed to `into`.
pub(super) fn merge(into: &mut Changes, more: Changes) {
    into.finished.extend(more.finished);
    into.ready += more.ready;
    into.note_due(more.next_due);
    into.stale += more.stale;
    into.more |= more.more;
    into.taken_over.extend(more.taken_over);
}

/// The queue's view of a failed Redis call: the link's troubles make the backend unavailable
/// (the caller may retry later); the scripts' own refusals are read by the caller first.
pub(super) fn redis_error(err: RedisError) -> QueueError {
    match err {
        RedisError::Command(message) => QueueError::Internal(format!("redis: {message}")),
        other => QueueError::Unavailable(other.to_string()),
    }
}

/// The word after `code` in a script's error reply (`unknown_dependency <id>`), when the error
/// is that one.
pub(super) fn refusal<'a>(err: &'a RedisError, code: &str) -> Option<&'a str> {
    let RedisError::Command(message) = err else { return None };
    let at = message.find(code)?;
    Some(
        message[at + code.len()..]
            .trim_start_matches(['"', ':', ' '])
            .split_whitespace()
            .next()
            .unwrap_or(""),
    )
}

/// A status by its wire name.
pub(super) fn status(name: &str) -> Result<JobStatus, QueueError> {
    name.parse().map_err(|_| malformed("a status"))
}
