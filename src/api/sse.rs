//! A burst of events on its way to one reader, written as server-sent event frames; under
//! load, the changes of one job within the burst leave as one event.
//!
//! A reader that keeps up gets every change as it happens. One that is sent thousands of
//! changes a second (a dashboard while the pipeline runs flat out) is written to at most
//! every [`THROTTLE`], and a job that went `queued → running → succeeded` within that time
//! is told once, `queued → succeeded`: the page shows the same, and the server serialises,
//! sends and the browser parses a third of it. Merged or not, a job's events form a chain
//! (each one's `from` is the previous one's `to`), arrive in order, and each frame's id
//! resumes after everything merged into it.

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;

use crate::events::{EventHub, Stamped};
use crate::job::{JobId, JobStatus};

/// Bytes of frames gathered into one write.
pub(super) const CHUNK: usize = 16 * 1024;
/// How long a busy reader's bursts are apart at least (about 40 writes a second).
pub(super) const THROTTLE: Duration = Duration::from_millis(25);
/// Events in one burst that make its reader busy: its next burst waits out [`THROTTLE`] and
/// merges each job's changes.
pub(super) const BUSY: usize = 256;
/// Most events gathered in one burst (the hub's channel holds as many).
pub(super) const MOST: usize = 16_384;

/// One event of the burst, and the state its job left before the first change merged into
/// it (when there was one).
struct Item {
    event: Arc<Stamped>,
    from: Option<Option<JobStatus>>,
    superseded: bool,
}

/// Events gathered for one write.
pub(super) struct Burst {
    items: Vec<Item>,
    /// Where each job's latest event is in `items` (only while merging).
    latest: HashMap<JobId, usize>,
    merge: bool,
}

impl Burst {
    /// An empty burst; `merge`: one event per job.
    pub(super) fn new(merge: bool) -> Self {
        Burst { items: Vec::new(), latest: HashMap::new(), merge }
    }

    /// Events gathered (before merging).
    pub(super) fn len(&self) -> usize {
        self.items.len()
    }

    /// Adds the next event.
    pub(super) fn push(&mut self, event: Arc<Stamped>) {
        let mut from = None;
        if let (true, Some(job)) = (self.merge, event.job()) {
            let at = self.items.len();
            if let Some(earlier) = self.latest.insert(job.id, at) {
                let earlier = &mut self.items[earlier];
                earlier.superseded = true;
                from = Some(earlier.from.unwrap_or_else(|| from_of(&earlier.event)));
            }
        }
        self.items.push(Item { event, from, superseded: false });
    }

    /// The frames, in chunks of about [`CHUNK`] bytes.
    pub(super) fn write(self, hub: &EventHub) -> Vec<Bytes> {
        let mut chunks = Vec::new();
        let mut chunk = Vec::with_capacity(4096);
        for item in self.items.iter().filter(|item| !item.superseded) {
            write_frame(hub, &mut chunk, &item.event, item.from);
            if chunk.len() >= CHUNK {
                chunks.push(Bytes::from(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))));
            }
        }
        if !chunk.is_empty() {
            chunks.push(Bytes::from(chunk));
        }
        chunks
    }
}

/// The state a job event says its job left.
fn from_of(event: &Stamped) -> Option<JobStatus> {
    event.job().and_then(|change| change.from)
}

/// Appends one frame: `event`, its job's `from` replaced when changes were merged into it.
pub(super) fn write_frame(
    hub: &EventHub,
    out: &mut Vec<u8>,
    event: &Stamped,
    from: Option<Option<JobStatus>>,
) {
    let before = out.len();
    out.extend_from_slice(b"id: ");
    if hub.write_id(event, out) {
        out.push(b'\n');
    } else {
        out.truncate(before);
    }
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.name.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    match (from, event.job()) {
        (Some(from), Some(change)) => {
            let mut merged = change.clone();
            merged.from = from;
            if serde_json::to_writer(&mut *out, &merged).is_err() {
                out.extend_from_slice(b"null");
            }
        }
        _ => out.extend_from_slice(event.data().as_bytes()),
    }
    out.extend_from_slice(b"\n\n");
}

/// Appends a `reset` frame saying why.
pub(super) fn write_reset(out: &mut Vec<u8>, reason: &str) {
    let data = serde_json::json!({ "reason": reason });
    let _ = write!(out, "event: reset\ndata: {data}\n\n");
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::events::{JobChange, Reached};

    fn change(id: JobId, from: Option<JobStatus>, to: JobStatus) -> JobChange {
        JobChange {
            id,
            kind: "noop".into(),
            queue: "default".into(),
            from,
            to: Reached::Status(to),
            attempt: 1,
            progress: None,
            at: Utc::now(),
        }
    }

    /// The frames' events, as (id, from, to, frame id).
    fn frames(chunks: &[Bytes]) -> Vec<(String, serde_json::Value, String, String)> {
        let text: String = chunks.iter().map(|c| std::str::from_utf8(c).unwrap()).collect();
        text.split("\n\n")
            .filter(|frame| !frame.is_empty())
            .map(|frame| {
                let line = |name: &str| {
                    frame.lines().find_map(|l| l.strip_prefix(name)).unwrap_or("").to_owned()
                };
                let data: serde_json::Value = serde_json::from_str(&line("data: ")).unwrap();
                let id = data["id"].as_str().unwrap().to_owned();
                (id, data["from"].clone(), data["to"].as_str().unwrap().to_owned(), line("id: "))
            })
            .collect()
    }

    fn gathered(hub: &EventHub, merge: bool, changes: Vec<JobChange>) -> Vec<Bytes> {
        let mut reader = hub.subscribe(crate::events::Filter::default(), None);
        hub.jobs(changes);
        let mut burst = Burst::new(merge);
        while let Some(crate::events::Received::Event(event)) = reader.try_next() {
            burst.push(event);
        }
        burst.write(hub)
    }

    #[test]
    fn a_busy_burst_tells_each_job_once_from_its_first_state_to_its_last() {
        let hub = EventHub::new();
        let (a, b) = (JobId::new(), JobId::new());
        let changes = vec![
            change(a, None, JobStatus::Queued),
            change(b, None, JobStatus::Queued),
            change(a, Some(JobStatus::Queued), JobStatus::Running),
            change(a, Some(JobStatus::Running), JobStatus::Succeeded),
        ];
        let written = frames(&gathered(&hub, true, changes));
        let seen: Vec<_> =
            written.iter().map(|(id, from, to, _)| (id, from, to.as_str())).collect();
        assert_eq!(
            seen,
            [
                (&b.to_string(), &serde_json::Value::Null, "queued"),
                (&a.to_string(), &serde_json::Value::Null, "succeeded"),
            ]
        );
        // The merged frame resumes after all it holds: its id is its last change's.
        let ids: Vec<u64> = written
            .iter()
            .map(|(.., id)| id.rsplit('-').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(ids, [2, 4]);
    }

    #[test]
    fn a_burst_that_does_not_merge_tells_every_change() {
        let hub = EventHub::new();
        let a = JobId::new();
        let changes = vec![
            change(a, None, JobStatus::Queued),
            change(a, Some(JobStatus::Queued), JobStatus::Running),
        ];
        let written = frames(&gathered(&hub, false, changes));
        let seen: Vec<_> =
            written.iter().map(|(_, from, to, _)| (from.clone(), to.clone())).collect();
        assert_eq!(
            seen,
            [
                (serde_json::Value::Null, "queued".to_owned()),
                (serde_json::json!("queued"), "running".to_owned()),
            ]
        );
    }

    #[test]
    fn a_large_burst_leaves_in_chunks_of_bounded_size() {
        let hub = EventHub::new();
        let changes: Vec<_> =
            (0..2_000).map(|_| change(JobId::new(), None, JobStatus::Queued)).collect();
        let chunks = gathered(&hub, true, changes);
        assert!(chunks.len() > 1, "{} chunks", chunks.len());
        assert!(chunks.iter().all(|c| c.len() < CHUNK + 1024));
        assert_eq!(frames(&chunks).len(), 2_000);
    }
}
