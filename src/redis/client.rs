//! The one owner of Redis connections: a pool of multiplexed connections for commands, a
//! separate connection per pub/sub subscription, connect and command timeouts, a health
//! monitor (periodic PING, round-trip time, up/down transitions logged once each) and
//! reconnection with capped exponential backoff.
//!
//! While Redis is down, every command fails at once with [`RedisError::Down`] instead of
//! waiting: callers (the cache) fall back to memory, and no request waits on a dead Redis
//! longer than the command timeout it took to notice.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, Weak};
use std::time::{Duration, Instant};

use ::redis::aio::MultiplexedConnection;
use ::redis::{AsyncConnectionConfig, Client, Cmd, FromRedisValue, Pipeline};
use futures_util::future::join_all;
use futures_util::StreamExt;
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::{Config, RedisUrl};

/// Errors of the Redis layer.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RedisError {
    /// Redis is known to be unreachable; the call was not attempted.
    #[error("redis is unreachable")]
    Down,
    /// The call did not finish within this time.
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
    /// The connection failed during the call (worth a retry on another connection).
    #[error("redis connection: {0}")]
    Link(String),
    /// Redis answered with an error (the command was wrong, not the link).
    #[error("redis: {0}")]
    Command(String),
    /// The URL cannot be used (the message never holds the password).
    #[error("REDIS_URL cannot be used: {0}")]
    Url(String),
}

/// How to reach Redis and how patient to be with it.
#[derive(Clone, Debug)]
pub struct RedisSettings {
    /// The Redis to connect to (`REDIS_URL`).
    pub url: RedisUrl,
    /// Multiplexed connections kept open for commands (`JOBYARD_REDIS_POOL_SIZE`); at least one.
    pub pool_size: usize,
    /// How long one connection attempt may take (1 s by default).
    pub connect_timeout: Duration,
    /// The longest any command may wait (a short timeout, 250 ms by default).
    pub command_timeout: Duration,
    /// Time between health PINGs while the link is up (500 ms by default).
    pub ping_interval: Duration,
    /// First delay between reconnection attempts while Redis is down (100 ms by default); it
    /// doubles at each failed attempt, up to `backoff_max`.
    pub backoff_initial: Duration,
    /// Longest delay between reconnection attempts (5 s by default).
    pub backoff_max: Duration,
    /// Whether a command that times out marks the link down (so that the calls after it fail
    /// fast). The cache wants that; the job queue, which has its own link and a longer timeout,
    /// does not: a slow script is not a dead Redis.
    pub mark_down_on_timeout: bool,
    /// What the link's user does while Redis is away, as the log says it ("the cache serves
    /// from memory").
    pub while_down: &'static str,
}

impl RedisSettings {
    /// The settings of `config`, or `None` when no `REDIS_URL` is set.
    pub fn from_config(config: &Config) -> Option<Self> {
        Some(RedisSettings {
            url: config.redis_url.clone()?,
            pool_size: config.redis_pool_size,
            connect_timeout: Duration::from_secs(1),
            command_timeout: Duration::from_millis(250),
            ping_interval: Duration::from_millis(500),
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(5),
            mark_down_on_timeout: true,
            while_down: "the cache serves from memory",
        })
    }

    /// The settings of the job queue's own link: its own command timeout
    /// (`JOBYARD_QUEUE_TIMEOUT_MS`), and timeouts do not mark it down.
    pub fn for_queue(config: &Config) -> Option<Self> {
        let mut settings = Self::from_config(config)?;
        settings.command_timeout = config.queue_timeout;
        settings.mark_down_on_timeout = false;
        settings.while_down = "the queue answers submits and reads 503 and runs no new jobs";
        Some(settings)
    }
}

/// Counters of the Redis link, for stats.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct RedisStats {
    /// Whether the link is up now.
    pub up: bool,
    /// Round-trip time of the last health PING, in microseconds.
    pub rtt_us: u64,
    /// Calls that failed on the link (timeouts and connection errors; Redis's own error answers are
    /// not counted).
    pub errors: u64,
    /// Times the link was made again after it had been up.
    pub reconnects: u64,
    /// Round trips made (a command, a pipeline or a script call each count one).
    pub round_trips: u64,
}

/// What `jobyard check` reports.
#[derive(Clone, Debug)]
pub struct Probe {
    /// The server's version (`redis_version`).
    pub version: String,
    /// Round-trip time of one PING.
    pub rtt: Duration,
    /// Redis's `maxmemory-policy` (from `INFO memory`).
    pub maxmemory_policy: String,
}

/// A handle on the Redis link; cheap to clone.
#[derive(Clone)]
pub struct RedisClient {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    settings: RedisSettings,
    /// Empty while Redis is down.
    pool: RwLock<Arc<[MultiplexedConnection]>>,
    next: AtomicUsize,
    up: AtomicBool,
    /// True once the link was up at least once (a later connection is a reconnect).
    was_up: AtomicBool,
    rtt_us: AtomicU64,
    errors: AtomicU64,
    reconnects: AtomicU64,
    round_trips: AtomicU64,
    /// Bumped at every (re)connection: what was cached while the link was down, or what
    /// invalidations were missed meanwhile, must not be trusted.
    generation: watch::Sender<u64>,
    /// Asks the monitor for an immediate health check (a command just failed).
    kick: Notify,
}

impl RedisClient {
    /// A client for `settings`; nothing is connected until [`RedisClient::start`].
    pub fn new(settings: RedisSettings) -> Result<Self, RedisError> {
        let client = Client::open(settings.url.expose()).map_err(|err| {
            RedisError::Url(format!("{} ({:?})", settings.url.redacted(), err.kind()))
        })?;
        Ok(RedisClient {
            inner: Arc::new(Inner {
                client,
                settings,
                pool: RwLock::new(Arc::from(Vec::new())),
                next: AtomicUsize::new(0),
                up: AtomicBool::new(false),
                was_up: AtomicBool::new(false),
                rtt_us: AtomicU64::new(0),
                errors: AtomicU64::new(0),
                reconnects: AtomicU64::new(0),
                round_trips: AtomicU64::new(0),
                generation: watch::channel(0).0,
                kick: Notify::new(),
            }),
        })
    }

    /// Tries to connect once (so a Redis that is up is used from the first request), then
    /// starts the health monitor. A Redis that is down is not an error: the monitor keeps
    /// trying. Must run inside an actix system.
    pub async fn start(&self) -> bool {
        let connected = match self.inner.connect().await {
            Ok(()) => true,
            Err(err) => {
                let (redis, does) =
                    (self.inner.settings.url.redacted(), self.inner.settings.while_down);
                tracing::warn!(%redis, "redis unreachable at start ({err}); {does}, retrying in the background");
                false
            }
        };
        actix_rt::spawn(monitor(Arc::downgrade(&self.inner)));
        connected
    }

    /// Connects once, reads the server version and times a PING (`jobyard check`).
    pub async fn probe(settings: &RedisSettings) -> Result<Probe, RedisError> {
        let client = RedisClient::new(settings.clone())?;
        let mut conn = client.inner.open().await?;
        let info: String = timed(
            settings.command_timeout,
            ::redis::cmd("INFO").arg("server").arg("memory").query_async(&mut conn),
        )
        .await?;
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .unwrap_or("unknown")
                .trim()
                .to_owned()
        };
        let (version, maxmemory_policy) = (field("redis_version"), field("maxmemory_policy"));
        let started = Instant::now();
        let _: String =
            timed(settings.command_timeout, ::redis::cmd("PING").query_async(&mut conn)).await?;
        Ok(Probe { version, rtt: started.elapsed(), maxmemory_policy })
    }

    /// Whether the link is up; while it is down, every command fails at once with
    /// [`RedisError::Down`].
    pub fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    /// The link's counters, for stats.
    pub fn stats(&self) -> RedisStats {
        let inner = &self.inner;
        RedisStats {
            up: self.is_up(),
            rtt_us: inner.rtt_us.load(Ordering::Relaxed),
            errors: inner.errors.load(Ordering::Relaxed),
            reconnects: inner.reconnects.load(Ordering::Relaxed),
            round_trips: inner.round_trips.load(Ordering::Relaxed),
        }
    }

    /// Changes at every (re)connection.
    pub fn generation(&self) -> watch::Receiver<u64> {
        self.inner.generation.subscribe()
    }

    /// Runs one command; `idempotent` ones are retried once on a transient failure.
    pub async fn cmd<T: FromRedisValue>(
        &self,
        cmd: &Cmd,
        idempotent: bool,
    ) -> Result<T, RedisError> {
        self.run(idempotent, |mut conn| async move { cmd.query_async(&mut conn).await }).await
    }

    /// Runs a pipeline; `idempotent` ones are retried once on a transient failure.
    pub async fn pipe<T: FromRedisValue>(
        &self,
        pipe: &Pipeline,
        idempotent: bool,
    ) -> Result<T, RedisError> {
        self.run(idempotent, |mut conn| async move { pipe.query_async(&mut conn).await }).await
    }

    /// Runs a Lua script (EVALSHA, loading it on first use); retried once when transient, so
    /// scripts given here must be idempotent.
    pub async fn script<T: FromRedisValue>(
        &self,
        invocation: &::redis::ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        self.script_with(invocation, true).await
    }

    /// Runs a Lua script, retried once on a transient failure only when `retry` (a script that
    /// changes state must be safe to run twice to be retried).
    pub async fn script_with<T: FromRedisValue>(
        &self,
        invocation: &::redis::ScriptInvocation<'_>,
        retry: bool,
    ) -> Result<T, RedisError> {
        self.run(retry, |mut conn| async move { invocation.invoke_async(&mut conn).await }).await
    }

    /// Runs `call`, an `EVALSHA` of the script whose source is `source`; when Redis does not
    /// know the script (first use, or after a restart) it is loaded and the call made again.
    /// Retried once on a transient failure only when `retry`.
    pub async fn eval<T: FromRedisValue>(
        &self,
        call: &Cmd,
        source: &str,
        retry: bool,
    ) -> Result<T, RedisError> {
        self.run(retry, |mut conn| async move {
            match call.query_async(&mut conn).await {
                Err(err)
                    if err.kind()
                        == ::redis::ErrorKind::Server(::redis::ServerErrorKind::NoScript) =>
                {
                    let _: String = ::redis::cmd("SCRIPT")
                        .arg("LOAD")
                        .arg(source)
                        .query_async(&mut conn)
                        .await?;
                    call.query_async(&mut conn).await
                }
                other => other,
            }
        })
        .await
    }

    /// A connection of its own, outside the pool, for a caller that blocks on it (`BLPOP`):
    /// commands sent to it wait up to `response_timeout`.
    pub async fn dedicated(
        &self,
        response_timeout: Duration,
    ) -> Result<MultiplexedConnection, RedisError> {
        let settings = &self.inner.settings;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(response_timeout));
        let connect = self.inner.client.get_multiplexed_async_connection_with_config(&config);
        timed(settings.connect_timeout * 2, connect).await
    }

    /// The longest any command waits.
    pub fn command_timeout(&self) -> Duration {
        self.inner.settings.command_timeout
    }

    /// Runs `call` within one command timeout in all: an idempotent call that failed fast
    /// (a dropped connection) is retried on another connection while time is left, but no
    /// caller ever waits on Redis longer than the timeout. A call that timed
    /// out, or failed on every connection it tried, marks the link down at once, so that the
    /// calls after it fail fast instead of waiting too; the monitor then reconnects.
    async fn run<T, F, Fut>(&self, idempotent: bool, call: F) -> Result<T, RedisError>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: std::future::Future<Output = ::redis::RedisResult<T>>,
    {
        let deadline = Instant::now() + self.inner.settings.command_timeout;
        let attempts = if idempotent { 2 } else { 1 };
        let mut last = RedisError::Down;
        for _ in 0..attempts {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let conn = self.inner.connection()?;
            self.inner.round_trips.fetch_add(1, Ordering::Relaxed);
            match timed(left, call(conn)).await {
                Ok(value) => return Ok(value),
                Err(err @ RedisError::Command(_)) => return Err(err),
                Err(err) => {
                    self.inner.errors.fetch_add(1, Ordering::Relaxed);
                    let timed_out = matches!(err, RedisError::Timeout(_));
                    last = err;
                    if timed_out {
                        if !self.inner.settings.mark_down_on_timeout {
                            self.inner.kick.notify_one();
                            return Err(last);
                        }
                        break;
                    }
                }
            }
        }
        self.inner.mark_down(&last);
        self.inner.kick.notify_one();
        Err(last)
    }

    /// Listens on `channel` on a connection of its own, for as long as this client lives.
    /// `on_message` gets each payload; `on_state(true)` runs each time a subscription is
    /// (re)made (messages may have been missed before it), `on_state(false)` when one is lost.
    pub fn subscribe(
        &self,
        channel: String,
        on_message: impl Fn(&[u8]) + 'static,
        on_state: impl Fn(bool) + 'static,
    ) {
        self.subscribe_until(channel, on_message, on_state, CancellationToken::new());
    }

    /// As [`RedisClient::subscribe`], until `stop` is cancelled (then the subscription's
    /// connection is closed, and Redis counts one subscriber fewer on `channel`).
    pub fn subscribe_until(
        &self,
        channel: String,
        on_message: impl Fn(&[u8]) + 'static,
        on_state: impl Fn(bool) + 'static,
        stop: CancellationToken,
    ) {
        let weak = Arc::downgrade(&self.inner);
        let mut generation = self.generation();
        actix_rt::spawn(async move {
            let mut backoff = Backoff::new();
            loop {
                if stop.is_cancelled() {
                    return;
                }
                let Some(inner) = weak.upgrade() else { return };
                let (client, timeout) = (inner.client.clone(), inner.settings.connect_timeout);
                let (initial, max) = (inner.settings.backoff_initial, inner.settings.backoff_max);
                let up = inner.up.load(Ordering::Acquire);
                drop(inner);
                if !up {
                    tokio::time::sleep(initial).await;
                    continue;
                }
                generation.borrow_and_update();
                let pubsub = async {
                    let mut pubsub = client.get_async_pubsub().await?;
                    pubsub.subscribe(&channel).await?;
                    Ok::<_, ::redis::RedisError>(pubsub)
                };
                let Ok(Ok(pubsub)) = tokio::time::timeout(timeout, pubsub).await else {
                    tokio::time::sleep(backoff.next(initial, max)).await;
                    continue;
                };
                // Whatever was learnt before this subscription existed may have missed messages.
                on_state(true);
                let subscribed = Instant::now();
                let mut messages = pubsub.into_on_message();
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        message = messages.next() => match message {
                            Some(message) => on_message(message.get_payload_bytes()),
                            None => break,
                        },
                        // The command link was lost and re-established: this subscription may
                        // sit on a dead socket (a partition sends no reset), so make a new one.
                        changed = generation.changed() => {
                            if changed.is_err() {
                                return;
                            }
                            break;
                        }
                    }
                }
                on_state(false);
                tracing::debug!(%channel, "subscription ended; resubscribing");
                // A subscription that dies at once is not retried at once.
                if subscribed.elapsed() > max {
                    backoff = Backoff::new();
                }
                tokio::time::sleep(backoff.next(initial, max)).await;
            }
        });
    }
}

impl Inner {
    /// Opens one connection with the configured timeouts.
    async fn open(&self) -> Result<MultiplexedConnection, RedisError> {
        // The caller's deadline (`run`) governs; the connection's own response timeout is only
        // a backstop for calls made without one.
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.settings.connect_timeout))
            .set_response_timeout(Some(self.settings.command_timeout * 4));
        let connect = self.client.get_multiplexed_async_connection_with_config(&config);
        // The connection timeout covers the TCP connect; this one covers the handshake too.
        timed(self.settings.connect_timeout * 2, connect).await
    }

    /// Opens the whole pool and marks the link up.
    async fn connect(&self) -> Result<(), RedisError> {
        let opened = join_all((0..self.settings.pool_size.max(1)).map(|_| self.open())).await;
        let pool: Vec<MultiplexedConnection> = opened.into_iter().collect::<Result<_, _>>()?;
        let rtt = ping(&pool[0], self.settings.command_timeout).await?;
        *self.pool.write().unwrap_or_else(|e| e.into_inner()) = Arc::from(pool);
        self.rtt_us.store(rtt.as_micros() as u64, Ordering::Relaxed);
        self.up.store(true, Ordering::Release);
        if self.was_up.swap(true, Ordering::AcqRel) {
            self.reconnects.fetch_add(1, Ordering::Relaxed);
        }
        self.generation.send_modify(|g| *g += 1);
        tracing::info!(redis = %self.settings.url.redacted(), rtt_us = rtt.as_micros() as u64, "redis up");
        crate::telemetry::repeated::settle();
        Ok(())
    }

    fn mark_down(&self, why: &RedisError) {
        *self.pool.write().unwrap_or_else(|e| e.into_inner()) = Arc::from(Vec::new());
        if self.up.swap(false, Ordering::AcqRel) {
            let (redis, does) = (self.settings.url.redacted(), self.settings.while_down);
            tracing::warn!(%redis, "redis down ({why}); {does} until it returns");
        }
    }

    fn connection(&self) -> Result<MultiplexedConnection, RedisError> {
        if !self.up.load(Ordering::Acquire) {
            return Err(RedisError::Down);
        }
        let pool = self.pool.read().unwrap_or_else(|e| e.into_inner()).clone();
        if pool.is_empty() {
            return Err(RedisError::Down);
        }
        let at = self.next.fetch_add(1, Ordering::Relaxed) % pool.len();
        Ok(pool[at].clone())
    }
}

/// Keeps the link healthy: PINGs while up, reconnects with capped backoff while down.
async fn monitor(weak: Weak<Inner>) {
    let mut backoff = Backoff::new();
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.up.load(Ordering::Acquire) {
            tokio::select! {
                _ = tokio::time::sleep(inner.settings.ping_interval) => {}
                _ = inner.kick.notified() => {}
            }
            let conn = inner.connection();
            let checked = match conn {
                Ok(conn) => ping(&conn, inner.settings.command_timeout).await,
                Err(err) => Err(err),
            };
            match checked {
                Ok(rtt) => inner.rtt_us.store(rtt.as_micros() as u64, Ordering::Relaxed),
                Err(err) => inner.mark_down(&err),
            }
            backoff = Backoff::new();
        } else {
            match inner.connect().await {
                Ok(()) => backoff = Backoff::new(),
                Err(err) => {
                    tracing::debug!("redis reconnect failed: {err}");
                    let delay =
                        backoff.next(inner.settings.backoff_initial, inner.settings.backoff_max);
                    drop(inner);
                    tokio::time::sleep(delay).await;
                }
            }
        }
    }
}

async fn ping(conn: &MultiplexedConnection, timeout: Duration) -> Result<Duration, RedisError> {
    let mut conn = conn.clone();
    let started = Instant::now();
    let _: String = timed(timeout, ::redis::cmd("PING").query_async(&mut conn)).await?;
    Ok(started.elapsed())
}

/// Bounds a Redis future by `limit`, mapping its errors.
async fn timed<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = ::redis::RedisResult<T>>,
) -> Result<T, RedisError> {
    match tokio::time::timeout(limit, fut).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(classify(&err)),
        Err(_) => Err(RedisError::Timeout(limit)),
    }
}

/// Error replies that say the server cannot serve us right now (a replica after a failover,
/// out of memory, loading, misconfigured persistence, lost authentication): link trouble, not
/// a wrong command.
const LINK_CODES: [&str; 7] =
    ["READONLY", "LOADING", "MASTERDOWN", "OOM", "MISCONF", "NOAUTH", "BUSY"];

/// Whether an error says more about the link than about the command.
fn classify(err: &::redis::RedisError) -> RedisError {
    let link = err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || err.code().is_some_and(|code| LINK_CODES.contains(&code));
    if link {
        RedisError::Link(err.to_string())
    } else {
        RedisError::Command(err.to_string())
    }
}

/// Capped exponential backoff with jitter.
struct Backoff {
    attempt: u32,
}

impl Backoff {
    fn new() -> Self {
        Backoff { attempt: 0 }
    }

    fn next(&mut self, initial: Duration, max: Duration) -> Duration {
        let exp = initial.saturating_mul(1u32 << self.attempt.min(16));
        self.attempt += 1;
        let capped = exp.min(max);
        // Up to a quarter less, so many instances do not reconnect in step.
        capped - capped.mul_f64(fastrand::f64() / 4.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    #[test]
    fn link_failures_and_command_errors_are_told_apart() {
        let refused =
            ::redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(classify(&refused), RedisError::Link(_)));
        let loading: ::redis::RedisError =
            (::redis::ErrorKind::Server(::redis::ServerErrorKind::BusyLoading), "LOADING").into();
        assert!(matches!(classify(&loading), RedisError::Link(_)));
        let wrong: ::redis::RedisError =
            (::redis::ErrorKind::Server(::redis::ServerErrorKind::ResponseError), "WRONGTYPE")
                .into();
        assert!(matches!(classify(&wrong), RedisError::Command(_)));
    }

    #[test]
    fn an_unusable_url_is_refused_without_its_password() {
        let config = Config::from_lookup(|name| {
            (name == "REDIS_URL").then(|| "redis://:pw@host:99999".into())
        })
        .unwrap();
        let err = RedisClient::new(RedisSettings::from_config(&config).unwrap()).err().unwrap();
        assert!(matches!(err, RedisError::Url(_)));
        assert!(!err.to_string().contains("pw@"), "{err}");
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let mut backoff = Backoff::new();
        let (initial, max) = (Duration::from_millis(100), Duration::from_secs(5));
        let delays: Vec<Duration> = (0..10).map(|_| backoff.next(initial, max)).collect();
        assert!(delays[0] <= initial && delays[0] >= initial.mul_f64(0.75));
        assert!(delays[3] >= Duration::from_millis(600) && delays[3] <= Duration::from_millis(800));
        assert!(delays.iter().all(|d| *d <= max));
        assert!(delays[9] >= max.mul_f64(0.75));
    }
}
