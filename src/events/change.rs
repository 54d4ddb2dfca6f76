//! What the event stream carries: a job's change of state, a tool's refresh, a stats snapshot.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::job::{JobId, JobStatus, Json};

/// Where a job went: a state, or out of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reached {
    /// The job is now in this state.
    Status(JobStatus),
    /// The job was removed (`DELETE /v1/jobs/{id}`).
    Deleted,
}

impl Reached {
    /// Whether nothing more will happen to the job: a terminal state, or removed.
    pub fn is_final(self) -> bool {
        match self {
            Reached::Status(status) => status.is_terminal(),
            Reached::Deleted => true,
        }
    }
}

impl Serialize for Reached {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Reached::Status(status) => status.serialize(serializer),
            Reached::Deleted => serializer.serialize_str("deleted"),
        }
    }
}

impl<'de> Deserialize<'de> for Reached {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == "deleted" {
            return Ok(Reached::Deleted);
        }
        let status = serde_json::from_value(serde_json::Value::String(text))
            .map_err(serde::de::Error::custom)?;
        Ok(Reached::Status(status))
    }
}

/// One job's change: of state, or of progress while it runs (`from` and `to` both `running`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobChange {
    /// The job.
    pub id: JobId,
    /// Its kind.
    pub kind: Arc<str>,
    /// Its queue.
    pub queue: Arc<str>,
    /// The state it left, when known (`None` on a job's first sighting, or when the change
    /// was seen only as its result).
    pub from: Option<JobStatus>,
    /// Where it went.
    pub to: Reached,
    /// Attempts started so far.
    pub attempt: u32,
    /// The progress its handler last reported.
    pub progress: Option<Json>,
    /// When the change was seen.
    #[serde(serialize_with = "rfc3339")]
    pub at: DateTime<Utc>,
}

/// `at` as chrono writes it (RFC 3339, `Z`), formatted before it is escaped: serde_json
/// escapes a formatted value one character at a time, and a busy stream writes thousands.
fn rfc3339<S: Serializer>(at: &DateTime<Utc>, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&at.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
}

impl JobChange {
    /// The change a job's record shows, its previous state `from`.
    pub fn of(record: &crate::JobRecord, from: Option<JobStatus>, at: DateTime<Utc>) -> Self {
        JobChange {
            id: record.id,
            kind: record.kind.clone(),
            queue: record.queue.clone(),
            from,
            to: Reached::Status(record.status),
            attempt: record.attempts,
            progress: record.progress.clone(),
            at,
        }
    }
}

/// How a tool's refresh ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefreshOutcome {
    /// The upstream sent new data; the cache holds it.
    Refreshed,
    /// The upstream said the cached data is still current (304).
    NotModified,
    /// The refresh failed; the cached data, if any, is kept.
    Failed,
}

/// A tool's refresh ended.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ToolRefresh {
    /// The tool.
    pub name: String,
    /// How the refresh ended.
    pub outcome: RefreshOutcome,
    /// Why it failed.
    pub error: Option<String>,
    /// When it ended.
    pub at: DateTime<Utc>,
}

/// Something the event stream announces: what instances exchange through a shared backend.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "event", content = "data", rename_all = "snake_case")]
pub enum Event {
    /// A job changed.
    Job(JobChange),
    /// A tool's refresh ended.
    Tool(ToolRefresh),
}

impl Event {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Job(_) => "job",
            Event::Tool(_) => "tool",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reached_reads_and_writes_a_state_or_deleted() {
        for (reached, text) in [
            (Reached::Status(JobStatus::Running), "\"running\""),
            (Reached::Status(JobStatus::Failed), "\"failed\""),
            (Reached::Deleted, "\"deleted\""),
        ] {
            assert_eq!(serde_json::to_string(&reached).unwrap(), text);
            assert_eq!(serde_json::from_str::<Reached>(text).unwrap(), reached);
        }
        assert!(serde_json::from_str::<Reached>("\"gone\"").is_err());
        assert!(Reached::Deleted.is_final());
    }

    #[test]
    fn a_change_writes_its_time_as_chrono_does() {
        let at = Utc::now();
        let change = JobChange {
            id: JobId::new(),
            kind: "noop".into(),
            queue: "default".into(),
            from: None,
            to: Reached::Status(JobStatus::Queued),
            attempt: 0,
            progress: None,
            at,
        };
        let written: serde_json::Value = serde_json::to_value(&change).unwrap();
        assert_eq!(written["at"], serde_json::to_value(at).unwrap());
        let read: JobChange = serde_json::from_value(written).unwrap();
        assert_eq!(read.at, at);
        assert!(!Reached::Status(JobStatus::Queued).is_final());
    }

    #[test]
    fn events_cross_instances_as_tagged_json() {
        let event = Event::Tool(ToolRefresh {
            name: "github".into(),
            outcome: RefreshOutcome::NotModified,
            error: None,
            at: Utc::now(),
        });
        let text = serde_json::to_string(&event).unwrap();
        assert!(text.starts_with("{\"event\":\"tool\""), "{text}");
        assert!(text.contains("\"not_modified\""), "{text}");
        let Event::Tool(read) = serde_json::from_str::<Event>(&text).unwrap() else {
            panic!("not a tool event: {text}")
        };
        assert_eq!(Event::Tool(read.clone()).name(), "tool");
        assert_eq!(read, ToolRefresh { name: "github".into(), ..read.clone() });
        assert_eq!(read.outcome, RefreshOutcome::NotModified);
    }
}
