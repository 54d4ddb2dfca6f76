//! The supervisor: starts the other actors from the configuration, wires who tells whom, keeps
//! them running, and runs the graceful shutdown (running attempts get the grace period, the
//! rest go back to `queued`).
//!
//! Each child runs under `actix::Supervisor`, which restarts an actor that stops while its
//! address is still held, with the same address: nobody has to be rewired after a restart.
//! Job handlers cannot take a child down: their panics are caught in the worker pool.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;
use tokio_util::sync::CancellationToken;

use crate::cache::{Cache, CacheHandle};
use crate::clock::Clock;
use crate::config::Config;
use crate::documents::Documents;
use crate::events::EventHub;
use crate::job::handler::RecordLookup;
use crate::job::{Extensions, JobError, Registry};
use crate::metadata::MetadataStore;
use crate::queue::QueueBackend;
#[cfg(feature = "redis")]
use crate::redis::RedisClient;
use crate::runtime::results::JobResults;
use crate::runtime::{Client, ClientParts};
use crate::tools::Tools;

use super::cache::{CacheActor, PersistHotKeys, WarmingDoc, WARMING_DOC};
use super::presence::{Leave, NameState, Presence, PresenceSettings};
use super::queue::{QueueActor, Subscribe, WakeAt};
use super::resilient;
use super::scheduler::{Scheduler, StopScheduling};
use super::worker::{Drain, PoolSettings, WorkerPool};
use crate::instance::{new_run_id, ClusterKinds, Naming};

/// Stop taking jobs, let running attempts finish for up to `grace`, hand the rest back.
/// Answers how many running jobs were handed back to `queued`.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Shutdown {
    pub grace: Duration,
}

/// What a runtime is made of, prepared by the runtime builder.
pub struct RuntimeParts {
    pub registry: Arc<Registry>,
    pub backend: Arc<dyn QueueBackend>,
    pub cache: Arc<dyn Cache>,
    #[cfg(feature = "redis")]
    pub redis: Option<RedisClient>,
    pub extensions: Extensions,
    pub(crate) clock: Clock,
}

/// The supervisor actor; see the module doc.
pub struct RuntimeSupervisor {
    pool: Addr<WorkerPool>,
    scheduler: Addr<Scheduler>,
    cache: Addr<CacheActor>,
    presence: Addr<Presence>,
    /// Ends the event stream's tasks (the stats snapshots, the relay between instances).
    stop: CancellationToken,
}

impl RuntimeSupervisor {
    /// Starts every actor of a runtime on the current arbiter and returns the supervisor with a
    /// client of the whole. Must run inside an actix `System`.
    pub fn start(config: &Config, parts: RuntimeParts) -> (Addr<Self>, Client) {
        let RuntimeParts { registry, backend, cache, mut extensions, clock, .. } = parts;
        // Results are read from their job's record, never copied into the cache.
        let cache: Arc<dyn Cache> =
            Arc::new(JobResults::new(cache, backend.clone(), config.retention));
        #[cfg(feature = "redis")]
        let redis = parts.redis;
        let backends = (backend.name(), cache.backend());
        let backend_shared = backend.shared();
        let records = record_lookup(backend.clone());
        let queue_clock = clock.clone();
        let events = EventHub::new();
        let stop = CancellationToken::new();
        if backend_shared {
            crate::events::relay::start(events.clone(), backend.clone(), stop.clone());
        }
        let queue_events = events.clone();
        let queue = resilient::start(move |_| {
            QueueActor::new(backend.clone(), queue_clock.clone(), queue_events.clone())
        });
        let metadata = MetadataStore::new(&config.data_dir);
        let (actor_cache, retention) = (cache.clone(), config.retention);
        let cache_actor =
            resilient::start(move |_| CacheActor::new(actor_cache, metadata, HOT_KEYS_EVERY));
        extensions.insert(CacheHandle::new(cache.clone()));
        #[cfg(feature = "redis")]
        let documents = match &redis {
            Some(redis) => Documents::redis(redis.clone(), &config.redis_prefix),
            None => Documents::files(&config.data_dir),
        };
        #[cfg(not(feature = "redis"))]
        let documents = Documents::files(&config.data_dir);
        let tools = Tools::new(documents, config);
        extensions.insert(tools.clone());
        // Tool refreshes announce their end on the event stream.
        extensions.insert(events.clone());
        let settings = PoolSettings {
            // Named by the presence actor once the instance holds its name.
            instance: String::new(),
            concurrency: config.concurrency,
            lease: config.lease,
            cancel_grace: config.cancel_grace,
            extensions,
            records,
            clock: clock.clone(),
            shared: backend_shared,
            max_result_bytes: config.max_result_bytes,
            threads: config.worker_threads,
            blocking_threshold: config.blocking_threshold,
        };
        let (pool_queue, pool_registry) = (queue.clone(), registry.clone());
        let pool = resilient::start(move |_| WorkerPool::new(pool_queue, pool_registry, settings));
        let (presence, name_state, cluster) =
            start_presence(config, &registry, &queue, &pool, &clock);
        let limits = crate::runtime::Limits::from(config);
        let parts = ClientParts {
            cache,
            #[cfg(feature = "redis")]
            redis,
            registry,
            backends,
            limits,
            clock: clock.clone(),
            cluster,
            accept_kinds: config.accept_kinds.clone(),
            name_state,
            tools: tools.clone(),
            allowed_hosts: config.http_allowed_hosts.clone(),
            events: events.clone(),
        };
        let client = Client::new(queue.clone(), pool.clone(), parts);
        let scheduler_client = client.clone();
        let scheduler = resilient::start(move |_| Scheduler::new(scheduler_client, retention));
        queue.do_send(Subscribe::Workers(pool.clone().recipient(), pool.clone().recipient()));
        queue.do_send(Subscribe::Scheduler(scheduler.clone().recipient()));
        // After a test skipped time, the scheduler steps at once rather than at its next turn.
        let wake = scheduler.clone();
        clock.on_advance(move || wake.do_send(WakeAt(chrono::DateTime::<chrono::Utc>::MIN_UTC)));
        actix_rt::spawn(warm(client.cache().clone(), MetadataStore::new(&config.data_dir)));
        let metadata = MetadataStore::new(&config.data_dir);
        actix_rt::spawn(start_tools(tools, client.clone(), metadata));
        actix_rt::spawn(snapshots(client.clone(), events, stop.clone()));
        let supervisor =
            RuntimeSupervisor { pool, scheduler, cache: cache_actor, presence, stop }.start();
        (supervisor, client)
    }
}

/// Starts the presence actor (see [`super::presence`]): it claims the instance's name, then
/// names the pool. Answers its address, where its state with its name is told, and the kinds
/// the live instances handle, which it keeps.
fn start_presence(
    config: &Config,
    registry: &Registry,
    queue: &Addr<QueueActor>,
    pool: &Addr<WorkerPool>,
    clock: &Clock,
) -> (Addr<Presence>, tokio::sync::watch::Receiver<NameState>, ClusterKinds) {
    // An instance that runs no jobs handles no kind, whatever it has handlers for.
    let kinds = match config.concurrency {
        0 => Vec::new(),
        _ => registry.kinds().iter().map(|k| k.to_string()).collect(),
    };
    let entry = Presence::entry(new_run_id(), kinds, config.concurrency, clock);
    let (state, name_state) = tokio::sync::watch::channel(NameState::Claiming);
    let cluster = ClusterKinds::default();
    let settings = PresenceSettings {
        naming: Naming::from_config(config.instance.as_deref()),
        entry,
        cluster: cluster.clone(),
        state,
    };
    let (queue, pool) = (queue.clone(), pool.clone());
    let presence = resilient::start(move |_| Presence::new(queue, pool, settings));
    (presence, name_state, cluster)
}

/// Handlers read other jobs' results straight from the backend, on their own threads: no
/// actor of the runtime waits on these reads.
fn record_lookup(backend: Arc<dyn QueueBackend>) -> RecordLookup {
    RecordLookup::new(move |id| {
        let backend = backend.clone();
        Box::pin(async move {
            backend
                .get(id)
                .await
                .map_err(|err| JobError::retryable(format!("reading job {id}: {err}")))
        })
    })
}

/// How often the hottest cache keys are recorded for the next start.
const HOT_KEYS_EVERY: Duration = Duration::from_secs(60);

/// Loads the hottest keys of the previous run from the shared cache layer into this
/// instance's memory layer. It runs here rather than as a job: each
/// instance warms its own memory, which a job claimed by any instance could not do.
async fn warm(cache: Arc<dyn Cache>, metadata: MetadataStore) {
    if cache.backend() == "memory" {
        return;
    }
    let doc = tokio::task::spawn_blocking(move || metadata.load::<WarmingDoc>(WARMING_DOC)).await;
    let keys: Vec<String> = match doc {
        Ok(Ok(Some(doc))) => doc.keys.into_iter().map(|k| k.key).collect(),
        Ok(Ok(None)) => return,
        Ok(Err(err)) => return tracing::warn!("cache warming skipped: {err}"),
        Err(err) => return tracing::warn!("cache warming skipped: {err}"),
    };
    if keys.is_empty() {
        return;
    }
    let loaded = cache.preload(&keys).await;
    tracing::info!(asked = keys.len(), loaded, "cache warmed");
}

/// At start, every tool's limit and schedule, and a refresh of every tool with nothing cached,
/// so that a fresh deployment shows data at once; data already in Redis is served as it is.
/// Every instance does it, and the refreshes' idempotency keys make one job of them.
async fn start_tools(tools: Tools, client: Client, metadata: MetadataStore) {
    // The keys the warming records as hottest: those tools are refreshed first.
    let doc = tokio::task::spawn_blocking(move || metadata.load::<WarmingDoc>(WARMING_DOC)).await;
    let hot: Vec<String> = match doc {
        Ok(Ok(Some(doc))) => doc.keys.into_iter().map(|k| k.key).collect(),
        _ => Vec::new(),
    };
    // Jobs wait for the instance's name; the submit does not.
    match tools.start(&client, &hot).await {
        Ok(0) => {}
        Ok(triggered) => tracing::info!(triggered, "refreshes of tools with no data submitted"),
        Err(err) => tracing::warn!("tools with no data could not be refreshed at start: {err}"),
    }
}

/// How often readers of the event stream get a stats snapshot.
const SNAPSHOT_EVERY: Duration = Duration::from_secs(1);

/// Sends a stats snapshot to the event stream's readers every second while there are any
/// (one read of the stats per instance, whatever the number of readers).
async fn snapshots(client: Client, events: EventHub, stop: CancellationToken) {
    let mut tick = tokio::time::interval(SNAPSHOT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if events.readers() == 0 {
            continue;
        }
        match client.stats().await.map(|stats| serde_json::to_string(&stats)) {
            Ok(Ok(body)) => events.stats(body),
            Ok(Err(err)) => tracing::debug!("stats snapshot not serialised: {err}"),
            Err(err) => tracing::debug!("stats snapshot not read: {err}"),
        }
    }
}

impl Actor for RuntimeSupervisor {
    type Context = Context<Self>;
}

impl Handler<Shutdown> for RuntimeSupervisor {
    type Result = ResponseFuture<usize>;
    fn handle(&mut self, Shutdown { grace }: Shutdown, _: &mut Context<Self>) -> Self::Result {
        let (pool, scheduler) = (self.pool.clone(), self.scheduler.clone());
        let (cache, presence) = (self.cache.clone(), self.presence.clone());
        self.stop.cancel();
        Box::pin(async move {
            scheduler.do_send(StopScheduling);
            let handed_back = pool.send(Drain { grace }).await.unwrap_or(0);
            let _ = cache.send(PersistHotKeys).await;
            // Last: until now its heartbeats said it was draining.
            let _ = presence.send(Leave).await;
            tracing::info!(handed_back, "runtime stopped");
            handed_back
        })
    }
}

/// Tests cannot address the scheduler, the cache actor and the presence: a `Panic` sent here
/// goes to all three.
#[cfg(test)]
impl Handler<super::testing::Panic> for RuntimeSupervisor {
    type Result = ();
    fn handle(&mut self, _: super::testing::Panic, _: &mut Context<Self>) {
        self.scheduler.do_send(super::testing::Panic);
        self.cache.do_send(super::testing::Panic);
        self.presence.do_send(super::testing::Panic);
    }
}
