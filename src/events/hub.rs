//! The instance's event hub: every change announced here reaches each reader once, in order,
//! through one bounded broadcast channel; a ring of the newest events lets a reader that
//! reconnects resume where it left off.
//!
//! Nothing is built while nobody listens: [`EventHub::active`] is one atomic load on that path,
//! and the callers build their events only when it is true. A reader that falls behind by more
//! than the channel holds is skipped ahead to the newest event and told to reload (a `reset`),
//! so a slow reader costs a bounded amount of memory and never slows what announces.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::{broadcast, mpsc};

use super::change::{Event, JobChange, ToolRefresh};
use crate::job::JobId;

/// Events a reader may fall behind by before it is skipped ahead.
const CHANNEL: usize = 16_384;
/// Newest events kept for readers that reconnect with `Last-Event-ID`.
const RECENT: usize = 16_384;
/// Why a reader that fell behind was skipped ahead (both ways of reading say the same).
const FELL_BEHIND: &str = "this reader fell behind and was skipped ahead";
/// How long after the last reader left events are still kept, so that a page that reloads (or
/// a reader whose connection dropped) can resume instead of starting over.
const GRACE: Duration = Duration::from_secs(15);

/// One event as readers get it: serialised once, by the first reader that sends it (not by
/// whoever announced it: the job pipeline does not pay for the JSON), whatever the number of
/// readers.
#[derive(Debug)]
pub struct Stamped {
    /// Its place in this instance's stream; 0 for events that cannot be resumed from (stats
    /// snapshots, resets).
    pub seq: u64,
    /// The SSE event name: `job`, `tool`, `stats` or `reset`.
    pub name: &'static str,
    body: Body,
}

#[derive(Debug)]
enum Body {
    Text(Arc<str>),
    Event(Event, OnceLock<String>),
}

impl Stamped {
    /// The event's JSON.
    pub fn data(&self) -> &str {
        match &self.body {
            Body::Text(text) => text,
            Body::Event(event, text) => text.get_or_init(|| {
                // Sized for a job change, so that writing it rarely grows the buffer.
                let mut out = Vec::with_capacity(256);
                let written = match event {
                    Event::Job(change) => serde_json::to_writer(&mut out, change),
                    Event::Tool(refresh) => serde_json::to_writer(&mut out, refresh),
                };
                match written.map(|()| String::from_utf8(out)) {
                    Ok(Ok(text)) => text,
                    _ => "null".into(),
                }
            }),
        }
    }

    /// The job change it is, if it is one (what filters read).
    pub fn job(&self) -> Option<&JobChange> {
        match self.event() {
            Some(Event::Job(change)) => Some(change),
            _ => None,
        }
    }

    /// The event itself (`None` for stats snapshots and resets).
    pub fn event(&self) -> Option<&Event> {
        match &self.body {
            Body::Text(_) => None,
            Body::Event(event, _) => Some(event),
        }
    }
}

/// Which events a reader wants.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Only this job's events.
    pub job: Option<JobId>,
    /// Only jobs of this queue.
    pub queue: Option<String>,
    /// Only jobs of this kind.
    pub kind: Option<String>,
    /// The stats snapshot every second, and tool refreshes.
    pub overview: bool,
}

impl Filter {
    /// Whether `event` passes.
    pub fn admits(&self, event: &Stamped) -> bool {
        match event.job() {
            Some(job) => {
                self.job.is_none_or(|id| id == job.id)
                    && self.queue.as_deref().is_none_or(|q| q == &*job.queue)
                    && self.kind.as_deref().is_none_or(|k| k == &*job.kind)
            }
            // A reset concerns every reader.
            None if event.name == "reset" => true,
            None => self.overview,
        }
    }
}

/// What a reader gets next.
#[derive(Debug)]
pub enum Received {
    /// An event that passed its filter.
    Event(Arc<Stamped>),
    /// Events were missed (the reader fell behind, or resumed from an event no longer kept):
    /// the reader must reload what it shows. Holds why.
    Reset(&'static str),
}

/// The hub (cheap to clone: every clone is the same hub).
#[derive(Clone)]
pub struct EventHub {
    inner: Arc<Inner>,
}

struct Inner {
    sender: broadcast::Sender<Arc<Stamped>>,
    /// The newest resumable events; emitting holds it, so that the sequence, the ring and the
    /// channel agree on the order.
    recent: Mutex<Recent>,
    /// Names this run's ids: an id of another run (or instance) cannot be resumed from.
    epoch: u32,
    /// Readers of this instance.
    readers: AtomicUsize,
    /// Until when (ms since `born`) events are kept although no reader is left; 0 for never.
    grace_until: AtomicU64,
    born: Instant,
    /// Readers on other instances sharing the backend want this instance's changes.
    remote_readers: AtomicBool,
    /// Where changes bound for other instances go (set when the backend is shared).
    outbox: OnceLock<mpsc::Sender<Event>>,
    /// Events for other instances dropped because the relay fell behind.
    dropped: AtomicU64,
}

struct Recent {
    next: u64,
    events: VecDeque<Arc<Stamped>>,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    /// A hub with no reader.
    pub fn new() -> Self {
        let (sender, _) = broadcast::channel(CHANNEL);
        EventHub {
            inner: Arc::new(Inner {
                sender,
                recent: Mutex::new(Recent { next: 1, events: VecDeque::with_capacity(64) }),
                epoch: fastrand::u32(..),
                readers: AtomicUsize::new(0),
                grace_until: AtomicU64::new(0),
                born: Instant::now(),
                remote_readers: AtomicBool::new(false),
                outbox: OnceLock::new(),
                dropped: AtomicU64::new(0),
            }),
        }
    }

    /// Whether anyone may want events now: the callers build them only then.
    pub fn active(&self) -> bool {
        let inner = &self.inner;
        inner.readers.load(Ordering::Relaxed) > 0
            || inner.remote_readers.load(Ordering::Relaxed)
            || inner.in_grace()
    }

    /// Readers of this instance now.
    pub fn readers(&self) -> usize {
        self.inner.readers.load(Ordering::Relaxed)
    }

    /// Whether this instance's readers, or those that left within the grace period, still
    /// want events from other instances.
    pub fn wants_remote(&self) -> bool {
        self.readers() > 0 || self.inner.in_grace()
    }

    /// Announces job changes made on this instance.
    pub fn jobs(&self, changes: impl IntoIterator<Item = JobChange>) {
        self.local(changes.into_iter().map(Event::Job));
    }

    /// Announces a tool refresh that ended on this instance.
    pub fn tool(&self, refresh: ToolRefresh) {
        if self.active() {
            self.local([Event::Tool(refresh)]);
        }
    }

    /// Sends a stats snapshot (the `GET /v1/stats` body) to this instance's readers.
    pub fn stats(&self, body: String) {
        let stamped = Stamped { seq: 0, name: "stats", body: Body::Text(body.into()) };
        let _ = self.inner.sender.send(Arc::new(stamped));
    }

    /// Tells every reader that events may have been missed.
    pub fn reset(&self, reason: &'static str) {
        let data = serde_json::json!({ "reason": reason }).to_string();
        let stamped = Stamped { seq: 0, name: "reset", body: Body::Text(data.into()) };
        let _ = self.inner.sender.send(Arc::new(stamped));
    }

    /// Announces changes another instance made (heard through the shared backend).
    pub fn heard(&self, events: Vec<Event>) {
        let mut recent = self.inner.lock_recent();
        for event in events {
            self.inner.stamp_locked(&mut recent, event);
        }
    }

    /// Where this instance's changes are sent for other instances, and whether anyone there
    /// listens (set by the relay).
    pub(crate) fn relay_to(&self, outbox: mpsc::Sender<Event>) {
        let _ = self.inner.outbox.set(outbox);
    }

    pub(crate) fn set_remote_readers(&self, present: bool) {
        self.inner.remote_readers.store(present, Ordering::Relaxed);
    }

    /// Events for other instances dropped because the relay fell behind.
    pub fn dropped(&self) -> u64 {
        self.inner.dropped.load(Ordering::Relaxed)
    }

    /// Announces events made on this instance: to its readers, and to other instances' when
    /// some listen. One lock for the whole batch (a claim or a completion announces hundreds).
    fn local(&self, events: impl IntoIterator<Item = Event>) {
        let inner = &self.inner;
        let outbox = inner.remote_readers.load(Ordering::Relaxed).then(|| inner.outbox.get());
        let mut recent = inner.lock_recent();
        for event in events {
            if let Some(Some(outbox)) = outbox {
                if outbox.try_send(event.clone()).is_err() {
                    inner.dropped.fetch_add(1, Ordering::Relaxed);
                }
            }
            inner.stamp_locked(&mut recent, event);
        }
    }

    /// A reader of the events `filter` admits, resuming after `last_id` (a `Last-Event-ID`)
    /// when the hub still holds what followed it.
    pub fn subscribe(&self, filter: Filter, last_id: Option<&str>) -> Subscription {
        let inner = &self.inner;
        inner.readers.fetch_add(1, Ordering::Relaxed);
        // Under the ring's lock: no event can be sent between the snapshot and the receiver.
        let recent = inner.recent.lock().unwrap_or_else(|e| e.into_inner());
        let receiver = inner.sender.subscribe();
        let mut backlog = VecDeque::new();
        let mut reset = None;
        if let Some(last_id) = last_id {
            match inner.parse_id(last_id) {
                Some(seq) if seq + 1 >= recent.oldest() && seq < recent.next => {
                    backlog.extend(recent.events.iter().filter(|e| e.seq > seq).cloned());
                }
                _ => reset = Some("the events after Last-Event-ID are no longer kept"),
            }
        }
        drop(recent);
        Subscription { hub: self.inner.clone(), receiver, backlog, filter, reset }
    }

    /// The id a reader sends back to resume after `event`.
    pub fn id_of(&self, event: &Stamped) -> Option<String> {
        let mut id = Vec::new();
        self.write_id(event, &mut id).then(|| String::from_utf8_lossy(&id).into_owned())
    }

    /// Appends the id of `event` to `out` (no allocation of its own: a burst writes
    /// thousands); false for an event that cannot be resumed from.
    pub fn write_id(&self, event: &Stamped, out: &mut Vec<u8>) -> bool {
        use std::io::Write;
        event.seq > 0 && write!(out, "{:08x}-{}", self.inner.epoch, event.seq).is_ok()
    }
}

impl Inner {
    fn in_grace(&self) -> bool {
        let until = self.grace_until.load(Ordering::Relaxed);
        until != 0 && (self.born.elapsed().as_millis() as u64) < until
    }

    fn lock_recent(&self) -> std::sync::MutexGuard<'_, Recent> {
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Numbers `event`, keeps it among the recent ones and sends it, the ring's lock held (so
    /// that the sequence, the ring and the channel agree on the order).
    fn stamp_locked(&self, recent: &mut Recent, event: Event) {
        let (seq, name) = (recent.next, event.name());
        let stamped = Arc::new(Stamped { seq, name, body: Body::Event(event, OnceLock::new()) });
        recent.next += 1;
        if recent.events.len() == RECENT {
            recent.events.pop_front();
        }
        recent.events.push_back(stamped.clone());
        let _ = self.sender.send(stamped);
    }

    fn parse_id(&self, id: &str) -> Option<u64> {
        let (epoch, seq) = id.trim().split_once('-')?;
        (u32::from_str_radix(epoch, 16).ok()? == self.epoch).then_some(())?;
        seq.parse().ok()
    }
}

impl Recent {
    fn oldest(&self) -> u64 {
        self.events.front().map_or(self.next, |e| e.seq)
    }
}

/// One reader's place in the stream. Dropping it ends the reader.
pub struct Subscription {
    hub: Arc<Inner>,
    receiver: broadcast::Receiver<Arc<Stamped>>,
    backlog: VecDeque<Arc<Stamped>>,
    filter: Filter,
    reset: Option<&'static str>,
}

impl Subscription {
    /// The next event for this reader; `None` once the hub is gone.
    pub async fn next(&mut self) -> Option<Received> {
        if let Some(first) = self.pending() {
            return Some(first);
        }
        loop {
            match self.receiver.recv().await {
                Ok(event) => {
                    if self.filter.admits(&event) {
                        return Some(Received::Event(event));
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    return Some(Received::Reset(FELL_BEHIND))
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

impl Subscription {
    /// What comes before the channel: the reset a resume from a lost id owes, then the
    /// backlog the filter admits. (The receiver was made under the ring's lock: it holds only
    /// what followed the backlog, so nothing comes twice.)
    fn pending(&mut self) -> Option<Received> {
        if let Some(reason) = self.reset.take() {
            return Some(Received::Reset(reason));
        }
        while let Some(event) = self.backlog.pop_front() {
            if self.filter.admits(&event) {
                return Some(Received::Event(event));
            }
        }
        None
    }

    /// The next event for this reader if one is there already, without waiting.
    pub fn try_next(&mut self) -> Option<Received> {
        if let Some(first) = self.pending() {
            return Some(first);
        }
        loop {
            match self.receiver.try_recv() {
                Ok(event) if self.filter.admits(&event) => return Some(Received::Event(event)),
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(_)) => {
                    return Some(Received::Reset(FELL_BEHIND))
                }
                Err(_) => return None,
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        let hub = &self.hub;
        let until = (hub.born.elapsed() + GRACE).as_millis() as u64;
        hub.grace_until.store(until, Ordering::Relaxed);
        hub.readers.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;

    use super::*;
    use crate::events::Reached;
    use crate::job::JobStatus;

    fn change(id: JobId, queue: &str, to: JobStatus) -> JobChange {
        JobChange {
            id,
            kind: "noop".into(),
            queue: queue.into(),
            from: None,
            to: Reached::Status(to),
            attempt: 0,
            progress: None,
            at: Utc::now(),
        }
    }

    async fn next_job(sub: &mut Subscription) -> serde_json::Value {
        match sub.next().await {
            Some(Received::Event(event)) => serde_json::from_str(event.data()).unwrap(),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn idle_until_a_reader_comes_and_for_a_grace_after_it_leaves() {
        let hub = EventHub::new();
        assert!(!hub.active(), "a hub nobody reads builds no events");
        let sub = hub.subscribe(Filter::default(), None);
        assert!(hub.active());
        drop(sub);
        assert_eq!(hub.readers(), 0);
        assert!(hub.active(), "kept for a reader that reconnects");
    }

    #[tokio::test]
    async fn readers_get_what_their_filter_admits_in_order() {
        let hub = EventHub::new();
        let (a, b) = (JobId::new(), JobId::new());
        let mut emails =
            hub.subscribe(Filter { queue: Some("emails".into()), ..Filter::default() }, None);
        let mut one = hub.subscribe(Filter { job: Some(b), ..Filter::default() }, None);
        hub.jobs([change(a, "emails", JobStatus::Queued), change(b, "default", JobStatus::Queued)]);
        hub.jobs([change(a, "emails", JobStatus::Running)]);
        hub.stats("{}".into());
        assert_eq!(next_job(&mut emails).await["to"], "queued");
        assert_eq!(next_job(&mut emails).await["to"], "running");
        assert_eq!(next_job(&mut one).await["id"], b.to_string());
    }

    #[tokio::test]
    async fn a_reader_resumes_after_its_last_id_or_is_told_to_reload() {
        let hub = EventHub::new();
        let id = JobId::new();
        let mut first = hub.subscribe(Filter::default(), None);
        hub.jobs([change(id, "q", JobStatus::Queued)]);
        let Some(Received::Event(seen)) = first.next().await else { panic!("no event") };
        let last = hub.id_of(&seen).unwrap();
        drop(first);
        hub.jobs([change(id, "q", JobStatus::Running), change(id, "q", JobStatus::Succeeded)]);
        let mut again = hub.subscribe(Filter::default(), Some(&last));
        assert_eq!(next_job(&mut again).await["to"], "running");
        assert_eq!(next_job(&mut again).await["to"], "succeeded");
        // An id of another run, or garbage: reload.
        for stale in ["00000000-1", "nonsense"] {
            let mut other = EventHub::new().subscribe(Filter::default(), Some(stale));
            assert!(matches!(other.next().await, Some(Received::Reset(_))), "{stale}");
        }
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_is_skipped_ahead_not_waited_for() {
        let hub = EventHub::new();
        let mut slow = hub.subscribe(Filter::default(), None);
        let id = JobId::new();
        for _ in 0..CHANNEL + 10 {
            hub.jobs([change(id, "q", JobStatus::Running)]);
        }
        assert!(matches!(slow.next().await, Some(Received::Reset(_))));
        // Then it goes on from what the channel still holds.
        assert_eq!(next_job(&mut slow).await["to"], "running");
    }
}
