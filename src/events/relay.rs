//! Between instances sharing a backend: each instance's changes reach the readers of every
//! other instance, and cost nothing while nobody reads anywhere.
//!
//! An instance whose readers want events subscribes to the backend's feed; every instance
//! asks once a second how many subscribe (Redis: `PUBSUB NUMSUB`), and publishes its own
//! changes, batched, only while another instance does. So with no dashboard open anywhere, the
//! job pipeline pays one atomic load per change and one small query a second per instance.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::change::Event;
use super::hub::EventHub;
use crate::queue::QueueBackend;

/// How often an instance checks whether anyone subscribes, and whether it should.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Changes waiting to be published; past this, changes are dropped (and counted) rather than
/// held: readers elsewhere see the next snapshot.
const OUTBOX: usize = 65_536;
/// Most changes in one published message.
const BATCH: usize = 512;

/// One published message: an instance's changes, in order.
#[derive(Serialize, Deserialize)]
struct Message {
    /// The publishing run, so that it ignores its own messages.
    origin: String,
    events: Vec<Event>,
}

/// Starts relaying `hub`'s changes through `backend` (a shared one) until `stop`.
pub(crate) fn start(hub: EventHub, backend: Arc<dyn QueueBackend>, stop: CancellationToken) {
    let origin = format!("{:016x}", fastrand::u64(..));
    let (outbox, changes) = mpsc::channel(OUTBOX);
    hub.relay_to(outbox);
    actix_rt::spawn(publish(changes, backend.clone(), origin.clone(), stop.clone()));
    actix_rt::spawn(watch(hub, backend, origin, stop));
}

/// Publishes what the hub hands over, in batches: one message per batch, sent as soon as the
/// previous one was.
async fn publish(
    mut changes: mpsc::Receiver<Event>,
    backend: Arc<dyn QueueBackend>,
    origin: String,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            first = changes.recv() => match first {
                Some(first) => first,
                None => return,
            },
        };
        let mut events = vec![first];
        while events.len() < BATCH {
            match changes.try_recv() {
                Ok(event) => events.push(event),
                Err(_) => break,
            }
        }
        let message = Message { origin: origin.clone(), events };
        let Ok(text) = serde_json::to_string(&message) else { continue };
        if let Err(err) = backend.feed_publish(text).await {
            tracing::debug!("job changes not sent to other instances: {err}");
        }
    }
}

/// Keeps the subscription while this instance's readers want it, and tells the hub whether
/// other instances' readers want this one's changes.
async fn watch(
    hub: EventHub,
    backend: Arc<dyn QueueBackend>,
    origin: String,
    stop: CancellationToken,
) {
    let mut subscribed: Option<CancellationToken> = None;
    let mut tick = tokio::time::interval(CHECK_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        match (hub.wants_remote(), &subscribed) {
            (true, None) => subscribed = Some(subscribe(&hub, &*backend, &origin, &stop)),
            (false, Some(token)) => {
                token.cancel();
                subscribed = None;
            }
            _ => {}
        }
        match backend.feed_readers().await {
            // The count includes this instance's own subscription.
            Ok(count) => hub.set_remote_readers(count > u64::from(subscribed.is_some())),
            Err(err) => tracing::debug!("could not count the feed's readers: {err}"),
        }
    }
    if let Some(token) = subscribed {
        token.cancel();
    }
    hub.set_remote_readers(false);
}

fn subscribe(
    hub: &EventHub,
    backend: &dyn QueueBackend,
    origin: &str,
    stop: &CancellationToken,
) -> CancellationToken {
    let token = stop.child_token();
    let (sink_hub, origin) = (hub.clone(), origin.to_owned());
    let sink = Arc::new(move |payload: &[u8]| match serde_json::from_slice::<Message>(payload) {
        Ok(message) if message.origin != origin => sink_hub.heard(message.events),
        Ok(_) => {}
        Err(err) => tracing::debug!("unreadable message on the job changes feed: {err}"),
    });
    let state_hub = hub.clone();
    let first = std::sync::atomic::AtomicBool::new(true);
    let on_state = Arc::new(move |live: bool| {
        // A subscription made again may have missed changes: readers reload.
        if live && !first.swap(false, std::sync::atomic::Ordering::Relaxed) {
            state_hub
                .reset("the link to the other instances was lost; changes may have been missed");
        }
    });
    backend.feed_subscribe(sink, on_state, token.clone());
    token
}
