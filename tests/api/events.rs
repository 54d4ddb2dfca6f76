//! The event stream: `/v1/events` and `/v1/jobs/{id}/events` read as server-sent events by a
//! real client, on both backends, across two instances sharing a Redis, with a reader that
//! resumes and one that stops reading.

use std::pin::Pin;
use std::time::Duration;

use actix_web::web::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::{json, Value};

use crate::helpers::{poll, within, On, TestApp, DEADLINE};

type Body = Pin<Box<dyn Stream<Item = Result<Bytes, awc::error::PayloadError>>>>;

/// One event of the stream.
#[derive(Debug)]
struct Frame {
    id: Option<String>,
    event: String,
    data: Value,
}

/// A server-sent event reader over a real connection.
struct Sse {
    body: Body,
    buffer: String,
    /// The stream ended (the server closed it).
    ended: bool,
}

impl Sse {
    async fn open(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> Sse {
        let mut request = app.http.get(format!("{}{path}", app.base));
        for (name, value) in headers {
            request = request.insert_header((*name, *value));
        }
        let response = request.send().await.expect("stream opens");
        assert_eq!(response.status().as_u16(), 200, "{path}");
        let content_type = response.headers().get("content-type").unwrap().to_str().unwrap();
        assert_eq!(content_type, "text/event-stream", "{path}");
        Sse { body: Box::pin(response), buffer: String::new(), ended: false }
    }

    /// The next event (comments skipped); `None` once the server ended the stream.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (None, None, String::new());
                for line in block.lines() {
                    match line.split_once(": ") {
                        Some(("id", value)) => id = Some(value.to_owned()),
                        Some(("event", value)) => event = Some(value.to_owned()),
                        Some(("data", value)) => data.push_str(value),
                        _ => {}
                    }
                }
                if let Some(event) = event {
                    let data = serde_json::from_str(&data).expect("event data is JSON");
                    return Some(Frame { id, event, data });
                }
                continue;
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self.buffer.push_str(std::str::from_utf8(&bytes).unwrap()),
                Some(Err(err)) => panic!("stream broke: {err}"),
                None => {
                    self.ended = true;
                    return None;
                }
            }
        }
    }

    /// Reads until an event satisfies `pred`, failing after the deadline.
    async fn until(&mut self, what: &str, pred: impl Fn(&Frame) -> bool) -> Frame {
        let found = within(DEADLINE, async {
            while let Some(frame) = self.next().await {
                if pred(&frame) {
                    return Some(frame);
                }
            }
            None
        })
        .await;
        found.flatten().unwrap_or_else(|| panic!("no {what} within {DEADLINE:?}"))
    }
}

fn is_job(frame: &Frame, id: &str, to: &str) -> bool {
    frame.event == "job" && frame.data["id"] == id && frame.data["to"] == to
}

/// A job's changes reach a reader in order, with a stats snapshot between them; filters keep
/// out other queues' jobs.
async fn a_reader_sees_a_jobs_changes_and_stats(on: &On) {
    let app = on.spawn(|_| {}).await;
    let mut all = Sse::open(&app, "/v1/events", &[]).await;
    let mut emails = Sse::open(&app, "/v1/events?queue=emails", &[]).await;
    let other = app.submit(json!({"kind": "noop"})).await;
    let job = app.submit(json!({"kind": "sleep", "payload": {"ms": 50}, "queue": "emails"})).await;
    let id = job["id"].as_str().unwrap();
    let queued = all.until("queued event", |f| is_job(f, id, "queued")).await;
    assert_eq!(queued.data["kind"], "sleep");
    assert_eq!(queued.data["queue"], "emails");
    assert!(queued.id.is_some(), "job events can be resumed from");
    let running = all.until("running event", |f| is_job(f, id, "running")).await;
    assert_eq!(running.data["from"], "queued");
    assert_eq!(running.data["attempt"], 1);
    let done = all.until("succeeded event", |f| is_job(f, id, "succeeded")).await;
    assert_eq!(done.data["from"], "running");
    let stats = all.until("stats snapshot", |f| f.event == "stats").await;
    assert!(stats.data["queues"].is_object(), "the /v1/stats body: {}", stats.data);
    assert!(stats.id.is_none());

    // The filtered reader saw only the `emails` job, up to its end.
    let mut seen = Vec::new();
    loop {
        let frame = emails.until("emails event", |f| f.event == "job").await;
        assert_eq!(frame.data["queue"], "emails", "{frame:?}");
        assert_ne!(frame.data["id"], other["id"]);
        seen.push(frame.data["to"].as_str().unwrap().to_owned());
        if frame.data["to"] == "succeeded" {
            break;
        }
    }
    assert_eq!(seen, ["queued", "running", "succeeded"]);
}

/// A cancel and a failure are announced, as is progress.
async fn cancels_failures_and_progress_are_announced(on: &On) {
    let app = on.spawn(|_| {}).await;
    let mut all = Sse::open(&app, "/v1/events", &[]).await;
    let sleeping = app.submit(json!({"kind": "sleep", "payload": {"ms": 30000}})).await;
    let id = sleeping["id"].as_str().unwrap();
    all.until("running", |f| is_job(f, id, "running")).await;
    assert_eq!(app.post_empty(&format!("/v1/jobs/{id}/cancel")).await.status, 200);
    let cancelled = all.until("cancelled", |f| is_job(f, id, "cancelled")).await;
    assert_eq!(cancelled.data["kind"], "sleep");

    let failing = app.submit(json!({"kind": "fail", "payload": {}, "max_attempts": 1})).await;
    let id = failing["id"].as_str().unwrap();
    all.until("failed", |f| is_job(f, id, "failed")).await;

    let slow = app.submit(json!({"kind": "sleep", "payload": {"ms": 1000}})).await;
    let id = slow["id"].as_str().unwrap();
    let progress =
        all.until("progress", |f| is_job(f, id, "running") && f.data["from"] == "running").await;
    assert!(progress.data["progress"]["percent"].as_u64().is_some(), "{progress:?}");

    let delayed = app.submit(json!({"kind": "noop", "delay_ms": 60000})).await;
    let id = delayed["id"].as_str().unwrap();
    all.until("scheduled", |f| is_job(f, id, "scheduled")).await;
}

/// A reader that reconnects with `Last-Event-ID` gets what it missed; one whose id the server
/// no longer knows is told to reload.
async fn a_reader_resumes_after_its_last_event(on: &On) {
    let app = on.spawn(|_| {}).await;
    let mut first = Sse::open(&app, "/v1/events", &[]).await;
    let one = app.submit(json!({"kind": "noop"})).await;
    let one_id = one["id"].as_str().unwrap();
    let last = first.until("first job's end", |f| is_job(f, one_id, "succeeded")).await;
    drop(first);
    let two = app.submit(json!({"kind": "noop"})).await;
    let two_id = two["id"].as_str().unwrap();
    app.wait_terminal(two_id).await;
    let last_id = last.id.expect("job events have ids");
    let mut again = Sse::open(&app, "/v1/events", &[("Last-Event-ID", &last_id)]).await;
    let first_again = again.until("a missed event", |f| f.event == "job").await;
    assert!(is_job(&first_again, two_id, "queued"), "resumes right after: {first_again:?}");
    again.until("the missed end", |f| is_job(f, two_id, "succeeded")).await;

    let mut stale = Sse::open(&app, "/v1/events", &[("Last-Event-ID", "0badc0de-7")]).await;
    let reset = stale.next().await.expect("a frame");
    assert_eq!(reset.event, "reset", "{reset:?}");
}

/// The stream of one job starts with its state, follows it and ends after its end.
async fn a_jobs_own_stream_follows_it_to_its_end(on: &On) {
    let app = on.spawn(|_| {}).await;
    let job = app.submit(json!({"kind": "sleep", "payload": {"ms": 300}})).await;
    let id = job["id"].as_str().unwrap();
    let mut stream = Sse::open(&app, &format!("/v1/jobs/{id}/events"), &[]).await;
    let first = stream.next().await.expect("the job as it is");
    assert_eq!(first.event, "job");
    assert_eq!(first.data["id"], id);
    let end = stream.until("its end", |f| is_job(f, id, "succeeded")).await;
    assert_eq!(end.data["from"], "running");
    let after = within(DEADLINE, stream.next()).await.expect("the stream ends");
    assert!(after.is_none() && stream.ended, "nothing after the end: {after:?}");

    // A finished job's stream is its state, then the end.
    let mut done = Sse::open(&app, &format!("/v1/jobs/{id}/events"), &[]).await;
    assert!(is_job(&done.next().await.unwrap(), id, "succeeded"));
    assert!(done.next().await.is_none());

    let missing = app.get(&format!("/v1/jobs/{}/events", uuid::Uuid::now_v7())).await;
    assert_eq!((missing.status, missing.code()), (404, "not_found"));
    let bad = app.get("/v1/jobs/nope/events").await;
    assert_eq!(bad.status, 400);
    let bad_filter = app.get("/v1/events?job=nope").await;
    assert_eq!(bad_filter.status, 400);
}

on_both_backends!(
    a_reader_sees_a_jobs_changes_and_stats,
    cancels_failures_and_progress_are_announced,
    a_reader_resumes_after_its_last_event,
    a_jobs_own_stream_follows_it_to_its_end,
);

/// On Redis, a reader of one instance sees the jobs another instance runs.
#[actix_web::test]
async fn a_reader_sees_what_other_instances_do() {
    let on = On::redis();
    let prefix = format!("ev{}", fastrand::u32(..));
    // `front` runs nothing: every running and succeeded event comes from `worker`.
    let front = on.spawn_shared(&prefix, |c| c.concurrency = 0).await;
    let worker = on.spawn_shared(&prefix, |_| {}).await;
    let mut stream = Sse::open(&front, "/v1/events", &[]).await;
    // `worker` publishes once it learnt (within a second) that someone reads: until then a
    // job's changes may not reach `front`, so jobs are submitted until one's do.
    let seen = within(DEADLINE, async {
        loop {
            let job = front.submit(json!({"kind": "noop"})).await;
            let id = job["id"].as_str().unwrap().to_owned();
            let heard = within(Duration::from_secs(2), async {
                while let Some(frame) = stream.next().await {
                    if is_job(&frame, &id, "succeeded") {
                        return Some(frame);
                    }
                }
                None
            })
            .await;
            if let Some(Some(frame)) = heard {
                return frame;
            }
        }
    })
    .await
    .expect("another instance's changes reach this instance's readers");
    assert_eq!(seen.data["from"], "running");
    drop(stream);
    drop(worker);
}

/// A reader that stops reading neither holds the job pipeline back nor is waited for: the
/// jobs all finish, and when it reads again it is told it was skipped ahead.
#[actix_web::test]
async fn a_reader_that_stops_reading_is_skipped_ahead() {
    let app = On::Memory.spawn(|_| {}).await;
    let mut stalled = Sse::open(&app, "/v1/events", &[]).await;
    // Three changes per job: well past what the hub holds for one reader.
    let batches = 20;
    for _ in 0..batches {
        let jobs: Vec<Value> = (0..1000).map(|_| json!({"kind": "noop"})).collect();
        app.submit_batch(json!(jobs)).await;
    }
    let finished = poll(|| async {
        let stats = app.get("/v1/stats").await.body;
        let succeeded = stats["queues"]["default"]["succeeded"].as_u64().unwrap_or(0);
        (succeeded == batches * 1000).then_some(())
    })
    .await;
    assert!(finished.is_some(), "every job finished while a reader did not read");
    let reset = stalled.until("a reset", |f| f.event == "reset").await;
    assert!(reset.data["reason"].as_str().unwrap().contains("behind"), "{reset:?}");
}

/// A reader sent thousands of changes at once gets each job's changes within a write merged
/// into one event: fewer events than changes, every job's end, and per job a chain of states
/// (each `from` the previous `to`) in the order of the ids.
#[actix_web::test]
async fn a_busy_reader_gets_each_jobs_changes_merged_into_a_chain() {
    let app = On::Memory.spawn(|_| {}).await;
    let mut reader = Sse::open(&app, "/v1/events", &[]).await;
    let mut ids = std::collections::HashSet::new();
    for _ in 0..3 {
        let jobs: Vec<Value> = (0..1000).map(|_| json!({"kind": "noop"})).collect();
        for job in app.submit_batch(json!(jobs)).await {
            ids.insert(job["id"].as_str().unwrap().to_owned());
        }
    }
    let mut last: std::collections::HashMap<String, Value> = Default::default();
    let (mut events, mut merged, mut ended, mut previous_seq) = (0, 0, 0, 0u64);
    let all_ended = within(DEADLINE, async {
        while ended < ids.len() {
            let frame = reader.next().await.expect("the stream goes on");
            assert_ne!(frame.event, "reset", "a reader that keeps up is not skipped ahead");
            if frame.event != "job" {
                continue;
            }
            let seq: u64 =
                frame.id.as_deref().unwrap().rsplit('-').next().unwrap().parse().unwrap();
            assert!(seq > previous_seq, "ids go up: {seq} after {previous_seq}");
            previous_seq = seq;
            let (id, from, to) =
                (frame.data["id"].as_str().unwrap(), &frame.data["from"], &frame.data["to"]);
            assert!(ids.contains(id), "{frame:?}");
            events += 1;
            let before = last.get(id).cloned().unwrap_or(Value::Null);
            assert_eq!(from, &before, "job {id}'s events form a chain: {frame:?}");
            // One event standing for two changes or more: it skips the state between.
            let skipped = matches!(
                (from.as_str(), to.as_str()),
                (None | Some("queued"), Some("succeeded")) | (None, Some("running"))
            );
            merged += usize::from(skipped);
            ended += usize::from(to == "succeeded");
            last.insert(id.to_owned(), to.clone());
        }
    })
    .await;
    assert!(all_ended.is_some(), "{ended} of {} jobs' ends seen within {DEADLINE:?}", ids.len());
    assert!(merged > 0, "some job's changes were merged ({events} events)");
    assert!(events < 3 * ids.len(), "{events} events for {} jobs", ids.len());
}

/// `JobHandle::changes` follows the stream: progress and the end are seen without polling.
#[actix_web::test]
async fn a_handle_follows_its_job_through_the_stream() {
    let app = On::Memory.spawn(|_| {}).await;
    let job = app.submit(json!({"kind": "sleep", "payload": {"ms": 1000}})).await;
    let id: jobyard::JobId = job["id"].as_str().unwrap().parse().unwrap();
    let handle =
        jobyard::JobHandle::<jobyard::kinds::sleep::Sleep>::from_id(app.runtime.client(), id);
    let seen: Vec<_> = within(DEADLINE, handle.changes().map(|r| r.unwrap().status).collect())
        .await
        .expect("the stream ends with the job");
    assert_eq!(seen.last(), Some(&jobyard::JobStatus::Succeeded), "{seen:?}");
    assert!(
        seen.contains(&jobyard::JobStatus::Running),
        "progress is seen while it runs: {seen:?}"
    );
}
