//! [`ConfigBuilder`]: a configuration built in code goes through the same parsing, checks and
//! derived defaults as one read from the environment (a `REDIS_URL` makes Redis the queue and
//! the hybrid cache the default, unless a backend is named), which a struct literal would skip.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::{Config, ConfigError};

/// Builds a [`Config`] from settings given in code, optionally over the environment.
///
/// ```
/// use std::time::Duration;
/// use jobyard::Config;
///
/// let config = Config::builder()
///     .redis_url("redis://127.0.0.1:6379")
///     .concurrency(32)
///     .lease(Duration::from_secs(60))
///     .build()?;
/// // Derived as for `REDIS_URL` in the environment: jobs and cache go to Redis.
/// assert_eq!(config.queue_backend_name(), "redis");
/// assert_eq!(config.cache_backend.as_str(), "hybrid");
/// # Ok::<(), jobyard::config::ConfigError>(())
/// ```
///
/// ```
/// use std::time::Duration;
/// use jobyard::Config;
///
/// let dir = std::env::temp_dir().join("jobyard-data");
/// let config = Config::builder()
///     .queue_backend("memory")
///     .cache_backend("memory")
///     .redis_prefix("shop")
///     .addr("127.0.0.1:0")
///     .worker_threads(2)
///     .shutdown_grace(Duration::from_secs(10))
///     .cancel_grace(Duration::from_secs(2))
///     .retention(Duration::from_secs(7 * 86_400))
///     .max_queued(50_000)
///     .api_token("s3cret")
///     .data_dir(&dir)
///     .var("JOBYARD_LOG_FORMAT", "json") // any variable, by its name
///     .build()?;
/// assert_eq!((config.worker_threads, config.max_queued), (2, 50_000));
/// assert_eq!(config.data_dir, dir);
///
/// // Values are checked as the variables are:
/// let err = Config::builder().var("JOBYARD_CONCURRENCY", "lots").build().unwrap_err();
/// assert_eq!(err.var, "JOBYARD_CONCURRENCY");
/// # Ok::<(), jobyard::config::ConfigError>(())
/// ```
#[derive(Clone, Debug, Default)]
#[must_use = "a builder does nothing until built"]
pub struct ConfigBuilder {
    vars: HashMap<String, String>,
    env: bool,
}

impl ConfigBuilder {
    /// Reads the process environment (and `.env.local`) under the settings given here, as
    /// [`Config::from_env`] does: a setting given in code wins over the environment.
    ///
    /// ```
    /// use jobyard::Config;
    ///
    /// // The environment decides the rest; this service always runs 8 jobs at once.
    /// let config = Config::builder().with_env().concurrency(8).build()?;
    /// assert_eq!(config.concurrency, 8);
    /// # Ok::<(), jobyard::config::ConfigError>(())
    /// ```
    pub fn with_env(mut self) -> Self {
        self.env = true;
        self
    }

    /// Sets any variable by its environment name (`JOBYARD_CONCURRENCY`, `REDIS_URL`, ...);
    /// it is checked as that variable is.
    pub fn var(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.vars.insert(name.into(), value.into());
        self
    }

    /// `REDIS_URL`: the Redis to use (for the queue and the cache unless told otherwise).
    pub fn redis_url(self, url: impl Into<String>) -> Self {
        self.var("REDIS_URL", url)
    }

    /// `JOBYARD_QUEUE_BACKEND`: `memory` or `redis`.
    pub fn queue_backend(self, backend: &str) -> Self {
        self.var("JOBYARD_QUEUE_BACKEND", backend)
    }

    /// `JOBYARD_CACHE_BACKEND`: `memory`, `redis` or `hybrid`.
    pub fn cache_backend(self, backend: &str) -> Self {
        self.var("JOBYARD_CACHE_BACKEND", backend)
    }

    /// `JOBYARD_REDIS_PREFIX`: the namespace of every Redis key.
    pub fn redis_prefix(self, prefix: impl Into<String>) -> Self {
        self.var("JOBYARD_REDIS_PREFIX", prefix)
    }

    /// `JOBYARD_ADDR`: the HTTP listen address (port 0 picks a free one).
    pub fn addr(self, addr: impl Into<String>) -> Self {
        self.var("JOBYARD_ADDR", addr)
    }

    /// `JOBYARD_CONCURRENCY`: jobs this instance runs at once.
    pub fn concurrency(self, jobs: usize) -> Self {
        self.var("JOBYARD_CONCURRENCY", jobs.to_string())
    }

    /// `JOBYARD_INSTANCE`: this instance's name (default: the host name).
    pub fn instance(self, name: impl Into<String>) -> Self {
        self.var("JOBYARD_INSTANCE", name)
    }

    /// `JOBYARD_ACCEPT_KINDS`: kinds accepted at submit though no live instance handles them.
    pub fn accept_kinds<K: AsRef<str>>(self, kinds: impl IntoIterator<Item = K>) -> Self {
        let kinds: Vec<String> = kinds.into_iter().map(|k| k.as_ref().to_owned()).collect();
        self.var("JOBYARD_ACCEPT_KINDS", kinds.join(","))
    }

    /// `JOBYARD_WORKER_THREADS`: threads that run handlers.
    pub fn worker_threads(self, threads: usize) -> Self {
        self.var("JOBYARD_WORKER_THREADS", threads.to_string())
    }

    /// `JOBYARD_LEASE_MS`: the lease of a running job.
    pub fn lease(self, lease: Duration) -> Self {
        self.var("JOBYARD_LEASE_MS", millis(lease))
    }

    /// `JOBYARD_SHUTDOWN_GRACE_MS`: how long shutdown waits for running attempts.
    pub fn shutdown_grace(self, grace: Duration) -> Self {
        self.var("JOBYARD_SHUTDOWN_GRACE_MS", millis(grace))
    }

    /// `JOBYARD_CANCEL_GRACE_MS`: how long a cancelled handler may take to return.
    pub fn cancel_grace(self, grace: Duration) -> Self {
        self.var("JOBYARD_CANCEL_GRACE_MS", millis(grace))
    }

    /// `JOBYARD_RETENTION_SECS`: how long terminal jobs are kept (whole seconds).
    pub fn retention(self, retention: Duration) -> Self {
        self.var("JOBYARD_RETENTION_SECS", retention.as_secs().to_string())
    }

    /// `JOBYARD_MAX_QUEUED`: the most jobs waiting to run per queue.
    pub fn max_queued(self, jobs: u64) -> Self {
        self.var("JOBYARD_MAX_QUEUED", jobs.to_string())
    }

    /// `JOBYARD_API_TOKEN`: the bearer token `/v1/...` requires.
    pub fn api_token(self, token: impl Into<String>) -> Self {
        self.var("JOBYARD_API_TOKEN", token)
    }

    /// `JOBYARD_DATA_DIR`: where the metadata store keeps its documents.
    pub fn data_dir(self, dir: impl AsRef<Path>) -> Self {
        self.var("JOBYARD_DATA_DIR", dir.as_ref().to_string_lossy())
    }

    /// The configuration, with every setting checked and the derived defaults applied.
    pub fn build(self) -> Result<Config, ConfigError> {
        let given = |name: &str| self.vars.get(name).cloned();
        if self.env {
            let env = super::EnvVars::read()?;
            Config::from_lookup(|name| given(name).or_else(|| env.get(name)))
        } else {
            Config::from_lookup(given)
        }
    }
}

/// Whole milliseconds, saturating (a value too large is then refused as out of range).
fn millis(duration: Duration) -> String {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{CacheBackendKind, QueueBackendKind};

    #[test]
    fn settings_given_in_code_derive_defaults_as_variables_do() {
        let config = Config::builder().redis_url("redis://127.0.0.1:1").build().unwrap();
        assert_eq!(config.queue_backend, QueueBackendKind::Redis);
        assert_eq!(config.cache_backend, CacheBackendKind::Hybrid);
        let memory = Config::builder()
            .redis_url("redis://127.0.0.1:1")
            .queue_backend("memory")
            .concurrency(3)
            .lease(Duration::from_secs(2))
            .build()
            .unwrap();
        assert_eq!(memory.queue_backend, QueueBackendKind::Memory);
        assert_eq!((memory.concurrency, memory.lease), (3, Duration::from_secs(2)));
        let named = Config::builder().instance("w-1").accept_kinds(["mail", "sms"]).build();
        let named = named.unwrap();
        assert_eq!((named.instance.as_deref(), named.accept_kinds.len()), (Some("w-1"), 2));
    }

    #[test]
    fn settings_given_in_code_are_checked_as_variables_are() {
        let err = Config::builder().concurrency(100_001).build().unwrap_err();
        assert_eq!(err.var, "JOBYARD_CONCURRENCY");
        let err = Config::builder().instance("a b").build().unwrap_err();
        assert_eq!(err.var, "JOBYARD_INSTANCE");
        let err = Config::builder().queue_backend("redis").build().unwrap_err();
        assert_eq!(err.var, "JOBYARD_QUEUE_BACKEND");
        let err = Config::builder().lease(Duration::MAX).build().unwrap_err();
        assert_eq!(err.var, "JOBYARD_LEASE_MS");
    }
}
