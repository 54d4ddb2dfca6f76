//! `jobyard check`: what `serve` would refuse, found without serving. The variables were read
//! already (a bad value stopped the command with one line); this checks what depends on the
//! machine and on Redis: the listen address is free, Redis answers and may not evict job
//! records, and an explicit instance name is not held by a live instance.

use std::process::ExitCode;

use crate::config::Config;
#[cfg(feature = "redis")]
use crate::queue::redis::{evicts_job_records, RedisQueueError};
#[cfg(feature = "redis")]
use crate::redis::{RedisClient, RedisSettings};

use super::fail;

pub async fn check(config: &Config) -> ExitCode {
    println!("configuration: ok");
    println!("  listen address: {}", config.addr);
    println!("  instance:       {}", config.instance.as_deref().unwrap_or("(the host name)"));
    println!("  queue backend:  {}", config.queue_backend_name());
    println!("  cache backend:  {}", config.cache_backend.as_str());
    println!("  concurrency:    {}", config.concurrency);
    if let Err(source) = std::net::TcpListener::bind(&config.addr) {
        let addr = config.addr.clone();
        return fail(1, crate::startup::StartupError::Bind { addr, source });
    }
    check_redis(config).await
}

#[cfg(not(feature = "redis"))]
async fn check_redis(config: &Config) -> ExitCode {
    if config.redis_url.is_none() {
        println!("  redis:          not configured");
        return ExitCode::SUCCESS;
    }
    fail(1, "REDIS_URL is set, but this build of jobyard has no Redis support")
}

/// Probes the configured Redis: reachable, fit for the queue if the queue uses it, and not
/// already used by a live instance under an explicit `JOBYARD_INSTANCE`.
#[cfg(feature = "redis")]
async fn check_redis(config: &Config) -> ExitCode {
    let Some(settings) = RedisSettings::from_config(config) else {
        println!("  redis:          not configured");
        return ExitCode::SUCCESS;
    };
    let url = settings.url.redacted();
    let probe = match RedisClient::probe(&settings).await {
        Ok(probe) => probe,
        Err(err) => return fail(1, format!("cannot use redis at {url}: {err}")),
    };
    println!(
        "  redis:          {url} (version {}, round trip {} µs, maxmemory-policy {})",
        probe.version,
        probe.rtt.as_micros(),
        probe.maxmemory_policy
    );
    if config.queue_backend != crate::config::QueueBackendKind::Redis {
        return ExitCode::SUCCESS;
    }
    if evicts_job_records(&probe.maxmemory_policy) {
        let err = RedisQueueError::EvictingPolicy(probe.maxmemory_policy);
        return fail(1, format!("the Redis queue cannot use {url}: {err}"));
    }
    match config.instance.as_deref() {
        Some(name) => check_name(config, name).await,
        None => ExitCode::SUCCESS,
    }
}

/// Fails when a live instance holds `name` in the queue's registry (`serve` would refuse it).
#[cfg(feature = "redis")]
async fn check_name(config: &Config, name: &str) -> ExitCode {
    use crate::queue::{QueueBackend, RedisQueue};
    let queue = match RedisQueue::connect(config).await {
        Ok(queue) => queue,
        Err(err) => return fail(1, format!("the Redis queue cannot start: {err}")),
    };
    match queue.instances(chrono::Utc::now()).await {
        Ok(live) => match live.iter().find(|instance| instance.name == name) {
            Some(holder) => fail(
                1,
                format!(
                    "JOBYARD_INSTANCE={name} is held by a live instance (last seen {}): stop it, \
                     or give this one another name",
                    holder.last_seen.to_rfc3339()
                ),
            ),
            None => ExitCode::SUCCESS,
        },
        Err(err) => fail(1, format!("cannot read the instances sharing the queue: {err}")),
    }
}
