//! The supervisor: starts the other actors from the configuration, wires who tells whom, keeps
//! them running, and runs the graceful shutdown of rule 10 of `semantics.md`.
//!
//! Each child runs under `actix::Supervisor`, which restarts an actor that stops while its
//! address is still held, with the same address: nobody has to be rewired after a restart.
//! Job handlers cannot take a child down: their panics are caught in the worker pool.

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::cache::MemoryCache;
use crate::config::Config;
use crate::job::Registry;
use crate::queue::QueueBackend;
use crate::runtime::{Backends, Client};

use super::cache::CacheActor;
use super::queue::{QueueActor, Subscribe};
use super::scheduler::{Scheduler, StopScheduling};
use super::worker::{Drain, PoolSettings, WorkerPool};

/// Stop taking jobs, let running attempts finish for up to `grace`, hand the rest back.
/// Answers how many running jobs were handed back to `queued`.
#[derive(Message)]
#[rtype(result = "usize")]
pub struct Shutdown {
    pub grace: Duration,
}

/// The supervisor actor; see the module doc.
pub struct RuntimeSupervisor {
    pool: Addr<WorkerPool>,
    scheduler: Addr<Scheduler>,
}

impl RuntimeSupervisor {
    /// Starts every actor of a runtime on the current arbiter and returns the supervisor with a
    /// client of the whole. Must run inside an actix `System`.
    pub fn start(
        config: &Config,
        registry: Arc<Registry>,
        backend: Arc<dyn QueueBackend>,
    ) -> (Addr<Self>, Client) {
        let backend_name = backend.name();
        let queue = actix::Supervisor::start(move |_| QueueActor::new(backend));
        let memory = Arc::new(MemoryCache::new(config.cache_max_bytes));
        let retention = config.retention;
        let cache = actix::Supervisor::start(move |_| CacheActor::new(memory, retention));
        let settings = PoolSettings {
            instance: instance_name(),
            concurrency: config.concurrency,
            lease: config.lease,
            cancel_grace: config.cancel_grace,
        };
        let (pool_queue, pool_registry) = (queue.clone(), registry.clone());
        let pool =
            actix::Supervisor::start(move |_| WorkerPool::new(pool_queue, pool_registry, settings));
        let backends = Backends {
            queue: backend_name,
            cache: config.cache_backend.as_str(),
            redis: if config.redis_url.is_some() { "down" } else { "disabled" },
        };
        let client = Client::new(queue.clone(), pool.clone(), cache.clone(), registry, backends);
        let scheduler_client = client.clone();
        let scheduler =
            actix::Supervisor::start(move |_| Scheduler::new(scheduler_client, retention));
        queue.do_send(Subscribe::Workers(pool.clone().recipient(), pool.clone().recipient()));
        queue.do_send(Subscribe::Scheduler(scheduler.clone().recipient()));
        queue.do_send(Subscribe::Results(cache.recipient()));
        let supervisor = RuntimeSupervisor { pool, scheduler }.start();
        (supervisor, client)
    }
}

/// `host-pid`, naming this instance in each job's `worker` field.
pub fn instance_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "jobyard".into());
    format!("{host}-{}", std::process::id())
}

impl Actor for RuntimeSupervisor {
    type Context = Context<Self>;
}

impl Handler<Shutdown> for RuntimeSupervisor {
    type Result = ResponseFuture<usize>;
    fn handle(&mut self, Shutdown { grace }: Shutdown, _: &mut Context<Self>) -> Self::Result {
        let (pool, scheduler) = (self.pool.clone(), self.scheduler.clone());
        Box::pin(async move {
            scheduler.do_send(StopScheduling);
            let handed_back = pool.send(Drain { grace }).await.unwrap_or(0);
            tracing::info!(handed_back, "runtime stopped");
            handed_back
        })
    }
}
