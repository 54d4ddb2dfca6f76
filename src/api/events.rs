//! `/v1/events` and `/v1/jobs/{id}/events`: the event stream as server-sent events.
//!
//! Each frame is one event of the instance's hub, serialised once for every reader; a reader
//! that stops reading is skipped ahead by the hub (and told with a `reset`), so it holds no
//! more than the hub's bounded channel. `Last-Event-ID` resumes where the hub still has the
//! events.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::stream::{self, Stream};
use serde::Deserialize;

use super::error::ErrorBody;
use super::jobs::parse_id;
use super::sse::{self, Burst};
use super::ApiError;
use crate::events::{EventHub, Filter, JobChange, Reached, Received, Stamped, Subscription};
use crate::job::{JobId, JobRecord, JobStatus};
use crate::runtime::Client;

/// A comment sent when nothing else was, so that proxies and readers see the stream alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);
/// How often a one-job stream reads its job even without news: a change no event announced
/// (one made by a periodic step, or missed while the link between instances was down) is
/// still seen.
const RECHECK: Duration = Duration::from_secs(2);

/// The stream's filters.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this job's changes.
    #[param(value_type = Option<String>, format = "uuid")]
    pub job: Option<String>,
    /// Only changes of jobs of this queue.
    pub queue: Option<String>,
    /// Only changes of jobs of this kind.
    pub kind: Option<String>,
}

#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "events",
    tag = "jobs",
    params(EventsQuery, ("Last-Event-ID" = Option<String>, Header, description = "The id of the last event read: the stream resumes after it")),
    responses(
        (status = 200, description = "Server-sent events: `job` (a job's change of state or progress), `tool` (a refresh ended), `stats` (the `/v1/stats` body, every second), `reset` (events were missed: reload)", content_type = "text/event-stream", body = String),
        (status = 400, description = "A filter is invalid", body = ErrorBody),
    )
)]
pub async fn stream_all(
    req: HttpRequest,
    client: web::Data<Client>,
    query: web::Query<EventsQuery>,
) -> Result<HttpResponse, ApiError> {
    let EventsQuery { job, queue, kind } = query.into_inner();
    let job = job.filter(|j| !j.is_empty()).map(|j| parse_id(&j)).transpose()?;
    let empty_none = |s: Option<String>| s.filter(|s| !s.is_empty());
    let filter = Filter { job, queue: empty_none(queue), kind: empty_none(kind), overview: true };
    let last_id = req.headers().get("Last-Event-ID").and_then(|v| v.to_str().ok());
    let hub = client.events().clone();
    let reader = hub.subscribe(filter, last_id);
    Ok(event_stream(Frames::new(hub, reader, None)))
}

#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/events",
    operation_id = "job_events",
    tag = "jobs",
    params(("id" = String, Path, format = "uuid", description = "The job's id")),
    responses(
        (status = 200, description = "Server-sent `job` events: the job as it is, then each change; the stream ends after its terminal state", content_type = "text/event-stream", body = String),
        (status = 400, description = "The id is not a UUID", body = ErrorBody),
        (status = 404, description = "No such job", body = ErrorBody),
    )
)]
pub async fn stream_job(
    client: web::Data<Client>,
    id: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_id(&id)?;
    let hub = client.events().clone();
    // Reading after subscribing: a change between the two is not missed.
    let reader = hub.subscribe(Filter { job: Some(id), ..Filter::default() }, None);
    let record = client.status(id).await?;
    let follow = Follow { client: client.into_inner(), id, last: Seen::of(&record) };
    let mut frames = Frames::new(hub, reader, Some(follow));
    frames.pending.push_back(job_frame(&record));
    frames.ended = record.status.is_terminal();
    Ok(event_stream(frames))
}

fn event_stream(frames: Frames) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/event-stream")
        .insert_header(("Cache-Control", "no-cache"))
        // Proxies that buffer answers (nginx) pass this one through as it comes.
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(frames.into_stream())
}

/// What a one-job stream last sent of its job.
#[derive(PartialEq)]
struct Seen(JobStatus, u32, Option<String>);

impl Seen {
    fn of(record: &JobRecord) -> Self {
        Seen(record.status, record.attempts, record.progress.as_ref().map(|p| p.get().to_owned()))
    }
}

/// A one-job stream's own reads of its job.
struct Follow {
    client: Arc<Client>,
    id: JobId,
    last: Seen,
}

/// One reader's frames, as they are written.
struct Frames {
    hub: EventHub,
    reader: Subscription,
    follow: Option<Follow>,
    /// Frames to send before reading on.
    pending: VecDeque<Bytes>,
    /// The stream ends once `pending` is sent.
    ended: bool,
    /// When the last burst was written, if it made this reader busy: the next one waits
    /// out the throttle and merges each job's changes.
    busy_since: Option<tokio::time::Instant>,
}

impl Frames {
    fn new(hub: EventHub, reader: Subscription, follow: Option<Follow>) -> Self {
        // Sent at once: the reader sees the stream open before the first event, and is told
        // how soon to reconnect after a drop.
        let hello = Bytes::from_static(b"retry: 2000\n: connected\n\n");
        Frames {
            hub,
            reader,
            follow,
            pending: VecDeque::from([hello]),
            ended: false,
            busy_since: None,
        }
    }

    fn into_stream(self) -> impl Stream<Item = Result<Bytes, Infallible>> {
        stream::unfold(self, |mut frames| async move {
            loop {
                if let Some(frame) = frames.pending.pop_front() {
                    return Some((Ok(frame), frames));
                }
                if frames.ended {
                    return None;
                }
                frames.next_frames().await;
            }
        })
    }

    /// Waits for what comes next and queues its frames.
    async fn next_frames(&mut self) {
        let wait = if self.follow.is_some() { RECHECK } else { KEEP_ALIVE };
        let received = tokio::time::timeout(wait, self.reader.next()).await;
        match received {
            Ok(Some(Received::Event(event))) if self.follow.is_none() => self.burst(event).await,
            Ok(Some(Received::Event(event))) => {
                let mut frame = Vec::new();
                sse::write_frame(&self.hub, &mut frame, &event, None);
                self.pending.push_back(Bytes::from(frame));
                if let Some(follow) = &mut self.follow {
                    if event.job().is_some_and(|change| change.to.is_final()) {
                        self.ended = true;
                    } else if let Some(change) = event.job() {
                        let progress = change.progress.as_ref().map(|p| p.get().to_owned());
                        if let Reached::Status(status) = change.to {
                            follow.last = Seen(status, change.attempt, progress);
                        }
                    }
                }
            }
            Ok(Some(Received::Reset(reason))) => {
                self.pending.push_back(reset_frame(reason));
                // A one-job stream reads its job again rather than leave its reader to.
                self.recheck().await;
            }
            Ok(None) => self.ended = true,
            Err(_) if self.follow.is_some() => self.recheck().await,
            Err(_) => self.pending.push_back(Bytes::from_static(b": keep-alive\n\n")),
        }
    }

    /// A one-job stream reads its job, and sends it when it changed since the last frame.
    async fn recheck(&mut self) {
        let Some(follow) = &mut self.follow else { return };
        match follow.client.status(follow.id).await {
            Ok(record) => {
                let seen = Seen::of(&record);
                if seen != follow.last {
                    follow.last = seen;
                    self.pending.push_back(job_frame(&record));
                }
                self.ended = record.status.is_terminal();
            }
            // Removed: the stream ends; a store that is down is tried again at the next turn.
            Err(crate::RuntimeError::Queue(crate::queue::QueueError::NotFound(_))) => {
                self.ended = true
            }
            Err(err) => tracing::debug!(job_id = %follow.id, "job not read for its stream: {err}"),
        }
    }

    /// Writes `first` and what else has come already: one write for a burst rather than one
    /// per event. A reader whose last burst was large waits out the throttle first, and is
    /// sent each job's changes merged.
    async fn burst(&mut self, first: Arc<Stamped>) {
        let merge = self.busy_since.is_some();
        if let Some(since) = self.busy_since {
            tokio::time::sleep_until(since + sse::THROTTLE).await;
        }
        let mut burst = Burst::new(merge);
        burst.push(first);
        let mut reset = None;
        while burst.len() < sse::MOST {
            match self.reader.try_next() {
                Some(Received::Event(event)) => burst.push(event),
                Some(Received::Reset(reason)) => {
                    reset = Some(reason);
                    break;
                }
                None => break,
            }
        }
        self.busy_since = (burst.len() >= sse::BUSY).then(tokio::time::Instant::now);
        self.pending.extend(burst.write(&self.hub));
        if let Some(reason) = reset {
            self.pending.push_back(reset_frame(reason));
        }
    }
}

fn reset_frame(reason: &str) -> Bytes {
    let mut frame = Vec::new();
    sse::write_reset(&mut frame, reason);
    Bytes::from(frame)
}

/// A `job` frame of `record` as it is (no id: it is not part of the resumable stream).
fn job_frame(record: &JobRecord) -> Bytes {
    let change = JobChange::of(record, None, chrono::Utc::now());
    let data = serde_json::to_string(&change).unwrap_or_else(|_| "null".into());
    Bytes::from(format!("event: job\ndata: {data}\n\n"))
}
