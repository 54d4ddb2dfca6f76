//! The change feed between instances sharing a Redis queue, so that none of them polls:
//! - new work: an idle instance blocks on the wake marker list (`BLPOP` on a connection of its
//!   own, bounded by a watchdog so a silently dead connection is replaced);
//! - cancels and finished jobs: the events channel (`c <id>`, `f <id> <id>...`), heard by
//!   every instance and handed to the queue actor.

use std::time::Duration;

use ::redis::aio::MultiplexedConnection;
use tokio::sync::Mutex;

use crate::job::JobId;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::reply::redis_error;
use crate::queue::{BackendEvent, EventSink, FeedSink, QueueError};
use crate::redis::{QueueKeys, RedisClient};

/// How much longer than its own timeout a blocking wait may take before its connection is
/// taken for dead.
const WATCHDOG_MARGIN: Duration = Duration::from_secs(2);

pub(super) struct Events {
    redis: RedisClient,
    wake: String,
    channel: String,
    /// The event stream's channel between instances (see `QueueBackend::feed_publish`).
    feed: String,
    /// The blocking connection, opened on first use and dropped after any failure.
    blocking: Mutex<Option<MultiplexedConnection>>,
}

impl Events {
    pub fn new(redis: RedisClient, keys: &QueueKeys) -> Self {
        Events {
            redis,
            wake: keys.wake(),
            channel: keys.events(),
            feed: keys.feed(),
            blocking: Mutex::new(None),
        }
    }

    /// Delivers the events channel to `sink` for as long as the client lives, resubscribing
    /// after a lost link (then `Resync`, since messages may have been missed).
    pub fn listen(&self, sink: EventSink) {
        let on_state = sink.clone();
        self.redis.subscribe(
            self.channel.clone(),
            move |payload| {
                if let Some(event) = parse(payload) {
                    sink(event);
                }
            },
            move |live| {
                if live {
                    on_state(BackendEvent::Resync);
                }
            },
        );
    }

    /// Publishes one message of job changes on the feed.
    pub async fn feed_publish(&self, message: String) -> Result<(), QueueError> {
        let cmd = ::redis::cmd("PUBLISH").arg(&self.feed).arg(message).to_owned();
        let _: i64 = self.redis.cmd(&cmd, false).await.map_err(redis_error)?;
        Ok(())
    }

    /// How many connections subscribe to the feed (one per instance whose readers want it).
    pub async fn feed_readers(&self) -> Result<u64, QueueError> {
        let cmd = ::redis::cmd("PUBSUB").arg("NUMSUB").arg(&self.feed).to_owned();
        let (_, count): (String, u64) = self.redis.cmd(&cmd, true).await.map_err(redis_error)?;
        Ok(count)
    }

    /// Delivers the feed's messages to `sink` until `stop`.
    pub fn feed_subscribe(
        &self,
        sink: FeedSink,
        on_state: Arc<dyn Fn(bool) + Send + Sync>,
        stop: CancellationToken,
    ) {
        self.redis.subscribe_until(
            self.feed.clone(),
            move |payload| sink(payload),
            move |live| on_state(live),
            stop,
        );
    }

    /// Blocks until the wake marker is popped (true) or `timeout` passed (false).
    pub async fn wait_for_work(&self, timeout: Duration) -> Result<bool, QueueError> {
        if !self.redis.is_up() {
            return Err(QueueError::Unavailable("redis is unreachable".into()));
        }
        let mut slot = self.blocking.lock().await;
        let mut conn = match slot.take() {
            Some(conn) => conn,
            None => self
                .redis
                .dedicated(timeout + WATCHDOG_MARGIN)
                .await
                .map_err(|err| QueueError::Unavailable(err.to_string()))?,
        };
        let pop = ::redis::cmd("BLPOP").arg(&self.wake).arg(timeout.as_secs_f64()).to_owned();
        let popped: Result<Option<(String, String)>, _> =
            match tokio::time::timeout(timeout + WATCHDOG_MARGIN, pop.query_async(&mut conn)).await
            {
                Ok(result) => result.map_err(|err| err.to_string()),
                Err(_) => Err("blocking wait got no answer in time".to_owned()),
            };
        match popped {
            Ok(popped) => {
                *slot = Some(conn);
                Ok(popped.is_some())
            }
            // The connection is dropped: the next wait opens a new one.
            Err(err) => Err(QueueError::Unavailable(format!("waiting for work: {err}"))),
        }
    }
}

/// Reads one message of the events channel.
fn parse(payload: &[u8]) -> Option<BackendEvent> {
    let text = std::str::from_utf8(payload).ok()?;
    let (kind, rest) = text.split_once(' ')?;
    let ids = || rest.split(' ').filter_map(|id| id.parse::<JobId>().ok());
    match kind {
        "c" => ids().next().map(BackendEvent::CancelRequested),
        "f" => Some(BackendEvent::Finished(ids().collect())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_read_and_foreign_messages_ignored() {
        let (a, b) = (JobId::new(), JobId::new());
        assert_eq!(parse(format!("c {a}").as_bytes()), Some(BackendEvent::CancelRequested(a)));
        assert_eq!(
            parse(format!("f {a} {b}").as_bytes()),
            Some(BackendEvent::Finished(vec![a, b]))
        );
        assert_eq!(parse(b"x y"), None);
        assert_eq!(parse(b"c not-an-id"), None);
        assert_eq!(parse(&[0xff, 0xfe]), None);
    }
}
