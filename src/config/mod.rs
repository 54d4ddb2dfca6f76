//! One typed [`Config`], read once from the environment and `.env.local` (`.env.local.sample` lists every variable) and
//! validated as a whole, so a bad value stops start-up with one line naming the variable.
//! Secrets are redacted wherever the config is printed.

use std::fmt;
use std::net::ToSocketAddrs;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

mod builder;
mod env;

pub use builder::ConfigBuilder;
pub(crate) use env::EnvVars;
pub use env::{unknown_variables, VARIABLES};

/// A bad configuration value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{var}={value} is invalid: {allowed}")]
pub struct ConfigError {
    /// The variable at fault (e.g. `JOBYARD_CONCURRENCY`), or `.env.local` when that file cannot be
    /// read.
    pub var: String,
    /// The offending value (already redacted when the variable is a secret).
    pub value: String,
    /// What the variable accepts, e.g. `expected an integer from 1 to 100000`.
    pub allowed: String,
}

/// A value that must never be printed: its `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A Redis URL whose password is redacted when printed.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(Secret);

impl RedisUrl {
    /// Validates `url` as `REDIS_URL` does.
    pub fn parse(url: &str) -> Result<Self, ConfigError> {
        parse_redis_url(url)
    }

    /// The whole URL, password included, for the one place that connects.
    pub fn expose(&self) -> &str {
        self.0.expose()
    }

    /// The URL with any password replaced by `***`.
    pub fn redacted(&self) -> String {
        let url = self.0.expose();
        let Some((scheme, rest)) = url.split_once("://") else {
            return "***".into();
        };
        // The password may itself hold '@': the host starts after the last one.
        match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let user = userinfo.split_once(':').map_or("", |(user, _)| user);
                format!("{scheme}://{user}:***@{host}")
            }
            None => url.to_owned(),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

/// Where jobs are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QueueBackendKind {
    /// In the process's memory (`JOBYARD_QUEUE_BACKEND=memory`): fast, but lost at exit and not
    /// shared with other instances.
    Memory,
    /// In Redis (`JOBYARD_QUEUE_BACKEND=redis`, which needs `REDIS_URL`): durable, and shared by
    /// every instance using the same key prefix.
    Redis,
}

/// Where cache entries live.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheBackendKind {
    /// In the process only (`JOBYARD_CACHE_BACKEND=memory`), bounded by `JOBYARD_CACHE_MAX_BYTES`.
    Memory,
    /// In Redis (`JOBYARD_CACHE_BACKEND=redis`, which needs `REDIS_URL`), with a memory layer used
    /// only while Redis is unreachable.
    Redis,
    /// In Redis behind a bounded memory layer kept coherent across instances
    /// (`JOBYARD_CACHE_BACKEND=hybrid`, which needs `REDIS_URL`; the default when it is set).
    Hybrid,
}

impl CacheBackendKind {
    /// The name `JOBYARD_CACHE_BACKEND` takes for this backend: `memory`, `redis` or `hybrid`.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheBackendKind::Memory => "memory",
            CacheBackendKind::Redis => "redis",
            CacheBackendKind::Hybrid => "hybrid",
        }
    }
}

/// What the dashboard at `/ui/` may do (`JOBYARD_UI`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UiMode {
    /// Not served: `/ui/...` answers 404 (`JOBYARD_UI=off`).
    Off,
    /// Served without its buttons, and the server refuses the dashboard's writes
    /// (`JOBYARD_UI=read-only`). This holds back the dashboard, not a token holder: the same
    /// token still writes through the API with any other client.
    ReadOnly,
    /// Served with its buttons (`JOBYARD_UI=on`, the default).
    #[default]
    On,
}

impl UiMode {
    /// The name `JOBYARD_UI` takes for this mode: `off`, `read-only` or `on`.
    pub fn as_str(self) -> &'static str {
        match self {
            UiMode::Off => "off",
            UiMode::ReadOnly => "read-only",
            UiMode::On => "on",
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (`JOBYARD_LOG_FORMAT=text`, the default).
    Text,
    /// One JSON object per line (`JOBYARD_LOG_FORMAT=json`).
    Json,
}

/// The whole configuration of one instance: every variable is described in
/// `.env.local.sample`. Build it with [`Config::from_env`] or [`Config::builder`]; both apply
/// the derived defaults (a `REDIS_URL` makes Redis the queue and the hybrid cache the
/// default), which a struct literal over [`Config::default`] would skip. Fields may be
/// adjusted afterwards.
///
/// ```
/// use std::collections::HashMap;
/// use std::time::Duration;
/// use jobyard::Config;
///
/// // The defaults: memory backends, 16 jobs at once.
/// let config = Config::default();
/// assert_eq!((config.queue_backend_name(), config.concurrency), ("memory", 16));
///
/// // From any source of variables, checked as the environment is (here a map, in a test):
/// let vars = HashMap::from([("JOBYARD_CONCURRENCY", "4"), ("JOBYARD_RETENTION_SECS", "3600")]);
/// let mut config = Config::from_lookup(|name| vars.get(name).map(|v| v.to_string()))?;
/// assert_eq!((config.concurrency, config.retention), (4, Duration::from_secs(3_600)));
/// config.concurrency = 2; // fields may be adjusted afterwards
/// # Ok::<(), jobyard::config::ConfigError>(())
/// ```
#[derive(Clone, Debug)]
pub struct Config {
    /// HTTP listen address; port 0 picks a free port.
    pub addr: String,
    /// Where the client subcommands send requests.
    pub url: String,
    /// The Redis to use (`REDIS_URL`: `redis://[:password@]host:port[/db]` or `rediss://...`);
    /// `None` runs without Redis. When set, Redis becomes the default queue backend and `hybrid`
    /// the default cache backend.
    pub redis_url: Option<RedisUrl>,
    /// Where jobs are stored (`JOBYARD_QUEUE_BACKEND`: `memory` or `redis`; default `redis` when
    /// `REDIS_URL` is set, else `memory`).
    pub queue_backend: QueueBackendKind,
    /// Where cache entries live (`JOBYARD_CACHE_BACKEND`: `memory`, `redis` or `hybrid`; default
    /// `hybrid` when `REDIS_URL` is set, else `memory`).
    pub cache_backend: CacheBackendKind,
    /// Namespace of every Redis key.
    pub redis_prefix: String,
    /// Multiplexed connections each Redis link (the cache's, the job queue's) keeps open
    /// (`JOBYARD_REDIS_POOL_SIZE`, 1 to 256, default 8).
    pub redis_pool_size: usize,
    /// The longest a call of the Redis job queue waits before it fails (the submit then answers
    /// 503); the cache has its own, shorter timeout.
    pub queue_timeout: Duration,
    /// This instance's name among those sharing the backend (`JOBYARD_INSTANCE`: 1 to 128
    /// characters of `[A-Za-z0-9_.:@-]`); `None`: the host name, or `<host>-<pid>` while
    /// another live instance holds it. Workers are named `<instance>/w<N>`; restarted under its
    /// name after a crash, an instance takes the jobs it left running back at once.
    pub instance: Option<String>,
    /// Kinds this instance accepts at submit although neither it nor any live instance handles
    /// them (`JOBYARD_ACCEPT_KINDS`, comma-separated): their jobs wait until an instance that
    /// handles them runs.
    pub accept_kinds: Vec<String>,
    /// Jobs this instance runs at once; 0: it serves the API and submits but runs no jobs.
    pub concurrency: usize,
    /// Threads that run handlers (the runtime's own work runs apart from them).
    pub worker_threads: usize,
    /// A handler polled for longer than this at once holds its thread: logged and counted.
    pub blocking_threshold: Duration,
    /// Lease of a running job; renewed every third of it.
    pub lease: Duration,
    /// How long shutdown waits for running attempts before handing them back.
    pub shutdown_grace: Duration,
    /// How long a cancelled running handler may take to return before it is aborted.
    pub cancel_grace: Duration,
    /// How long terminal jobs are kept.
    pub retention: Duration,
    /// The most terminal jobs kept per queue (oldest removed first), so that memory and Redis
    /// stay bounded under steady load whatever the retention period.
    pub retention_max_jobs: u64,
    /// The most jobs waiting to run per queue (waiting, scheduled or queued); past it, submits
    /// to that queue are refused (429 `queue_full`).
    pub max_queued: u64,
    /// The largest result (or progress report) a job may store, in bytes; a larger result
    /// fails the attempt.
    pub max_result_bytes: usize,
    /// The bearer token every `/v1/...` request must carry (`JOBYARD_API_TOKEN`); `None` (unset)
    /// turns authentication off. A blank token is refused.
    pub api_token: Option<Secret>,
    /// Largest HTTP request body accepted, in bytes (`JOBYARD_MAX_BODY_BYTES`, 1 KiB to 1 GiB,
    /// default 1 MiB); a larger one is answered 413.
    pub max_body_bytes: usize,
    /// Connections one peer (IP address) may hold open at once; more are closed on accept.
    pub max_connections_per_peer: usize,
    /// Bound of the memory cache, or of a Redis backend's memory layer, in bytes
    /// (`JOBYARD_CACHE_MAX_BYTES`, up to 1 TiB, default 256 MiB). One entry may take up to
    /// about a quarter of it; a larger one is not kept in memory (a Redis backend still
    /// stores it in Redis).
    pub cache_max_bytes: u64,
    /// TTL of a cache entry stored through the HTTP API without `ttl_secs`
    /// (`JOBYARD_CACHE_TTL_SECS`, 1 s to one year, default 300 s).
    pub cache_ttl: Duration,
    /// Values of at least this many bytes are stored LZ4-compressed in Redis, when that makes them
    /// smaller (`JOBYARD_CACHE_COMPRESS_MIN_BYTES`, default 1024; 0 tries every value).
    pub cache_compress_min_bytes: usize,
    /// Directory of the metadata store (`JOBYARD_DATA_DIR`, default `./data`); created on the first
    /// write.
    pub data_dir: PathBuf,
    /// How log lines are written (`JOBYARD_LOG_FORMAT`: `text` or `json`, default `text`).
    pub log_format: LogFormat,
    /// The dashboard at `/ui/` (`JOBYARD_UI`: `off`, `read-only` or `on`, default `on`).
    pub ui: UiMode,
    /// Where the server exports trace spans (OTLP/HTTP JSON): the standard
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`;
    /// `None` exports nothing.
    pub otlp_traces_endpoint: Option<String>,
    /// The `service.name` of exported spans (`OTEL_SERVICE_NAME`, default `jobyard`).
    pub service_name: String,
    /// The environment variables a tool's headers may reference as `${NAME}`
    /// (`JOBYARD_TOOL_SECRETS`, comma-separated); no other variable is ever resolved, so API
    /// access cannot send `${REDIS_URL}` to a URL of one's choosing.
    pub tool_secrets: Vec<String>,
    /// The hosts the `http` kind and tools may call (`JOBYARD_HTTP_ALLOWED_HOSTS`,
    /// comma-separated); `None` (unset): any host.
    pub http_allowed_hosts: Option<crate::kinds::upstream::AllowedHosts>,
}

/// The cores this process may use: the default number of handler threads.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

impl Default for Config {
    fn default() -> Self {
        Config::from_lookup(|_| None).expect("the defaults are valid")
    }
}

impl Config {
    /// `"memory"` or `"redis"`.
    pub fn queue_backend_name(&self) -> &'static str {
        match self.queue_backend {
            QueueBackendKind::Memory => "memory",
            QueueBackendKind::Redis => "redis",
        }
    }

    /// Reads the process environment, with `.env.local` in the working directory underneath it.
    ///
    /// ```no_run
    /// use jobyard::Config;
    ///
    /// # fn main() -> Result<(), jobyard::config::ConfigError> {
    /// // With, say, JOBYARD_CONCURRENCY=32 and REDIS_URL=redis://127.0.0.1:6379/0 set:
    /// let mut config = Config::from_env()?;
    /// println!("{} jobs at once, {} queue", config.concurrency, config.queue_backend_name());
    /// config.concurrency = 4; // fields may be adjusted afterwards
    /// # Ok(()) }
    /// ```
    pub fn from_env() -> Result<Self, ConfigError> {
        let env = EnvVars::read()?;
        Self::from_lookup(|name| env.get(name))
    }

    /// A builder: settings given in code, checked and derived as variables are.
    pub fn builder() -> ConfigBuilder {
        ConfigBuilder::default()
    }

    /// Builds a config from any source of variables (tests pass a map, never the process env).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let var = |name: &'static str| get(name).filter(|v| !v.trim().is_empty());
        let redis_url = var("REDIS_URL").map(|url| parse_redis_url(&url)).transpose()?;
        let has_redis = redis_url.is_some();
        let queue_backend = match var("JOBYARD_QUEUE_BACKEND").as_deref() {
            None if has_redis => QueueBackendKind::Redis,
            None | Some("memory") => QueueBackendKind::Memory,
            Some("redis") => QueueBackendKind::Redis,
            Some(other) => {
                return Err(invalid("JOBYARD_QUEUE_BACKEND", other, "expected memory or redis"))
            }
        };
        let cache_backend = match var("JOBYARD_CACHE_BACKEND").as_deref() {
            None if has_redis => CacheBackendKind::Hybrid,
            None | Some("memory") => CacheBackendKind::Memory,
            Some("redis") => CacheBackendKind::Redis,
            Some("hybrid") => CacheBackendKind::Hybrid,
            Some(other) => {
                return Err(invalid(
                    "JOBYARD_CACHE_BACKEND",
                    other,
                    "expected memory, redis or hybrid",
                ))
            }
        };
        if !has_redis
            && (queue_backend == QueueBackendKind::Redis
                || cache_backend != CacheBackendKind::Memory)
        {
            let (name, value) = if queue_backend == QueueBackendKind::Redis {
                ("JOBYARD_QUEUE_BACKEND", "redis")
            } else {
                ("JOBYARD_CACHE_BACKEND", cache_backend.as_str())
            };
            return Err(invalid(name, value, "this backend needs REDIS_URL to be set"));
        }
        let addr = var("JOBYARD_ADDR").unwrap_or_else(|| "127.0.0.1:8080".into());
        if addr.to_socket_addrs().map_or(true, |mut a| a.next().is_none()) {
            return Err(invalid("JOBYARD_ADDR", &addr, "expected host:port, e.g. 127.0.0.1:8080"));
        }
        let url = var("JOBYARD_URL").unwrap_or_else(|| DEFAULT_URL.into());
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid("JOBYARD_URL", &url, "expected an http:// or https:// URL"));
        }
        let redis_prefix = var("JOBYARD_REDIS_PREFIX").unwrap_or_else(|| "jobyard".into());
        if redis_prefix.is_empty()
            || redis_prefix.len() > 64
            || redis_prefix.contains(char::is_whitespace)
        {
            return Err(invalid(
                "JOBYARD_REDIS_PREFIX",
                &redis_prefix,
                "expected 1 to 64 characters, no spaces",
            ));
        }
        let log_format = match var("JOBYARD_LOG_FORMAT").as_deref() {
            None | Some("text") => LogFormat::Text,
            Some("json") => LogFormat::Json,
            Some(other) => {
                return Err(invalid("JOBYARD_LOG_FORMAT", other, "expected text or json"))
            }
        };
        let ui = match var("JOBYARD_UI").as_deref().map(str::trim) {
            None | Some("on") => UiMode::On,
            Some("read-only") => UiMode::ReadOnly,
            Some("off") => UiMode::Off,
            Some(other) => {
                return Err(invalid("JOBYARD_UI", other, "expected off, read-only or on"))
            }
        };
        let lease =
            Duration::from_millis(number(&var, "JOBYARD_LEASE_MS", 30_000, 1_000..=3_600_000)?);
        Ok(Config {
            addr,
            url,
            redis_url,
            queue_backend,
            cache_backend,
            redis_prefix,
            redis_pool_size: number(&var, "JOBYARD_REDIS_POOL_SIZE", 8, 1..=256)? as usize,
            queue_timeout: Duration::from_millis(number(
                &var,
                "JOBYARD_QUEUE_TIMEOUT_MS",
                500,
                50..=60_000,
            )?),
            instance: instance(&var)?,
            accept_kinds: accept_kinds(&var)?,
            concurrency: number(&var, "JOBYARD_CONCURRENCY", 16, 0..=100_000)? as usize,
            worker_threads: number(&var, "JOBYARD_WORKER_THREADS", cores() as u64, 1..=1_024)?
                as usize,
            blocking_threshold: Duration::from_millis(number(
                &var,
                "JOBYARD_BLOCKING_THRESHOLD_MS",
                100,
                1..=3_600_000,
            )?),
            lease,
            shutdown_grace: Duration::from_millis(number(
                &var,
                "JOBYARD_SHUTDOWN_GRACE_MS",
                30_000,
                0..=3_600_000,
            )?),
            cancel_grace: Duration::from_millis(number(
                &var,
                "JOBYARD_CANCEL_GRACE_MS",
                5_000,
                0..=3_600_000,
            )?),
            retention: Duration::from_secs(number(
                &var,
                "JOBYARD_RETENTION_SECS",
                86_400,
                0..=31_536_000,
            )?),
            retention_max_jobs: number(
                &var,
                "JOBYARD_RETENTION_MAX_JOBS",
                DEFAULT_RETENTION_MAX_JOBS,
                1..=1_000_000_000,
            )?,
            max_queued: number(&var, "JOBYARD_MAX_QUEUED", DEFAULT_MAX_QUEUED, 1..=1_000_000_000)?,
            max_result_bytes: number(&var, "JOBYARD_MAX_RESULT_BYTES", 1_048_576, 1..=536_870_912)?
                as usize,
            api_token: api_token(&get)?,
            max_connections_per_peer: number(
                &var,
                "JOBYARD_MAX_CONNECTIONS_PER_PEER",
                DEFAULT_MAX_CONNECTIONS_PER_PEER as u64,
                1..=1_000_000,
            )? as usize,
            max_body_bytes: number(
                &var,
                "JOBYARD_MAX_BODY_BYTES",
                1_048_576,
                1_024..=1_073_741_824,
            )? as usize,
            cache_max_bytes: number(&var, "JOBYARD_CACHE_MAX_BYTES", 268_435_456, 0..=1 << 40)?,
            cache_ttl: Duration::from_secs(number(
                &var,
                "JOBYARD_CACHE_TTL_SECS",
                300,
                1..=31_536_000,
            )?),
            cache_compress_min_bytes: number(
                &var,
                "JOBYARD_CACHE_COMPRESS_MIN_BYTES",
                1_024,
                0..=1 << 30,
            )? as usize,
            data_dir: PathBuf::from(var("JOBYARD_DATA_DIR").unwrap_or_else(|| "./data".into())),
            log_format,
            ui,
            otlp_traces_endpoint: otlp_endpoint(
                var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
                var("OTEL_EXPORTER_OTLP_ENDPOINT"),
            )?,
            service_name: var("OTEL_SERVICE_NAME").unwrap_or_else(|| "jobyard".into()),
            tool_secrets: tool_secrets(var("JOBYARD_TOOL_SECRETS"))?,
            http_allowed_hosts: allowed_hosts(var("JOBYARD_HTTP_ALLOWED_HOSTS"))?,
        })
    }
}

/// Where the client commands find the server when `JOBYARD_URL` does not say (where `serve`
/// listens by default).
pub const DEFAULT_URL: &str = "http://127.0.0.1:8080";

/// `JOBYARD_HTTP_ALLOWED_HOSTS`: bare host names or addresses, comma-separated.
fn allowed_hosts(
    raw: Option<String>,
) -> Result<Option<crate::kinds::upstream::AllowedHosts>, ConfigError> {
    let Some(raw) = raw else { return Ok(None) };
    let hosts = crate::kinds::upstream::AllowedHosts::parse(&raw);
    if let Some(entry) = hosts.not_a_host() {
        let allowed = format!(
            "comma-separated host names or addresses, without scheme, port or path ('{entry}' \
             is not one: write api.github.com, not https://api.github.com:443)"
        );
        return Err(invalid("JOBYARD_HTTP_ALLOWED_HOSTS", &raw, allowed));
    }
    Ok(Some(hosts))
}

/// `JOBYARD_TOOL_SECRETS`: the variables tool headers may reference, never the server's own
/// secrets (anyone with API access could send them to a URL of their choosing).
fn tool_secrets(raw: Option<String>) -> Result<Vec<String>, ConfigError> {
    let Some(raw) = raw else { return Ok(Vec::new()) };
    let names: Vec<String> =
        raw.split(',').map(str::trim).filter(|n| !n.is_empty()).map(str::to_owned).collect();
    if let Some(own) = names.iter().find(|n| *n == "REDIS_URL" || n.starts_with("JOBYARD_")) {
        let allowed = format!(
            "the variables tools may send upstream, not jobyard's own settings ('{own}' holds \
             this server's secrets or settings)"
        );
        return Err(invalid("JOBYARD_TOOL_SECRETS", &raw, allowed));
    }
    Ok(names)
}

/// The OTLP traces URL from the two standard variables (the traces one is a whole URL, the
/// other a base to which `/v1/traces` is appended).
fn otlp_endpoint(
    traces: Option<String>,
    base: Option<String>,
) -> Result<Option<String>, ConfigError> {
    let (var, url) = match (traces, base) {
        (Some(url), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url),
        (None, Some(base)) => {
            ("OTEL_EXPORTER_OTLP_ENDPOINT", format!("{}/v1/traces", base.trim_end_matches('/')))
        }
        (None, None) => return Ok(None),
    };
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(invalid(var, &url, "expected an http:// or https:// URL"));
    }
    Ok(Some(url))
}

/// Connections one peer (IP address) may hold open at once by default
/// (`JOBYARD_MAX_CONNECTIONS_PER_PEER`); connections beyond it are closed as soon as they are
/// accepted, before anything is read from them. Behind a reverse proxy every connection comes
/// from the proxy's address: raise it there.
pub const DEFAULT_MAX_CONNECTIONS_PER_PEER: usize = 128;

/// Terminal jobs kept per queue by default: at about 1 KB each in memory (record and indexes)
/// and about 650 bytes in Redis, a queue at full speed stays near 250 MB of jobs, well inside a
/// 2 GiB process.
pub const DEFAULT_RETENTION_MAX_JOBS: u64 = 250_000;
/// Jobs waiting to run per queue by default: a million queued jobs take about 1 GB in memory.
pub const DEFAULT_MAX_QUEUED: u64 = 1_000_000;

/// `JOBYARD_API_TOKEN`: unset means no authentication; set but blank is refused, since it
/// would silently mean the same.
fn api_token(get: &impl Fn(&str) -> Option<String>) -> Result<Option<Secret>, ConfigError> {
    match get("JOBYARD_API_TOKEN") {
        None => Ok(None),
        Some(token) if token.trim().is_empty() => Err(invalid(
            "JOBYARD_API_TOKEN",
            "(blank)",
            "a token, or leave the variable unset to turn authentication off",
        )),
        Some(token) => Ok(Some(Secret::new(token))),
    }
}

/// `JOBYARD_INSTANCE`: unset means the host name (decided at start, see [`crate::instance`]).
fn instance(var: &impl Fn(&'static str) -> Option<String>) -> Result<Option<String>, ConfigError> {
    match var("JOBYARD_INSTANCE").map(|name| name.trim().to_owned()) {
        Some(name) if !crate::instance::valid_name(&name) => {
            Err(invalid("JOBYARD_INSTANCE", &name, crate::instance::NAME_RULE))
        }
        name => Ok(name),
    }
}

/// `JOBYARD_ACCEPT_KINDS`: comma-separated kinds, blanks around them and empty entries ignored.
fn accept_kinds(var: &impl Fn(&'static str) -> Option<String>) -> Result<Vec<String>, ConfigError> {
    let Some(raw) = var("JOBYARD_ACCEPT_KINDS") else { return Ok(Vec::new()) };
    let mut kinds: Vec<String> =
        raw.split(',').map(str::trim).filter(|k| !k.is_empty()).map(str::to_owned).collect();
    let max = crate::job::spec::MAX_KIND_BYTES;
    if let Some(long) = kinds.iter().find(|k| k.len() > max) {
        return Err(invalid(
            "JOBYARD_ACCEPT_KINDS",
            &raw,
            format!("expected comma-separated kinds of at most {max} bytes ('{long}' is longer)"),
        ));
    }
    kinds.sort();
    kinds.dedup();
    Ok(kinds)
}

fn invalid(var: &str, value: &str, allowed: impl Into<String>) -> ConfigError {
    ConfigError { var: var.to_owned(), value: value.to_owned(), allowed: allowed.into() }
}

fn number(
    var: &impl Fn(&'static str) -> Option<String>,
    name: &'static str,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let Some(raw) = var(name) else {
        return Ok(default);
    };
    match u64::from_str(raw.trim()) {
        Ok(n) if range.contains(&n) => Ok(n),
        _ => Err(invalid(
            name,
            &raw,
            format!("expected an integer from {} to {}", range.start(), range.end()),
        )),
    }
}

fn parse_redis_url(url: &str) -> Result<RedisUrl, ConfigError> {
    let secret = RedisUrl(Secret::new(url));
    let valid = (url.starts_with("redis://") || url.starts_with("rediss://"))
        && url.split_once("://").is_some_and(|(_, rest)| !rest.is_empty());
    if valid {
        Ok(secret)
    } else {
        Err(ConfigError {
            var: "REDIS_URL".into(),
            value: secret.redacted(),
            allowed: "expected redis://[:password@]host:port[/db] or rediss://...".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_need_nothing() {
        let c = config(&[]).unwrap();
        assert_eq!(c.addr, "127.0.0.1:8080");
        assert_eq!(c.queue_backend, QueueBackendKind::Memory);
        assert_eq!(c.cache_backend, CacheBackendKind::Memory);
        assert_eq!(c.concurrency, 16);
        assert_eq!(c.worker_threads, cores());
        assert_eq!(c.blocking_threshold, Duration::from_millis(100));
        assert_eq!(c.lease, Duration::from_secs(30));
        assert_eq!(c.retention, Duration::from_secs(86_400));
        assert_eq!(c.queue_timeout, Duration::from_millis(500));
    }

    #[test]
    fn redis_url_switches_the_default_backends() {
        let c = config(&[("REDIS_URL", "redis://127.0.0.1:6379")]).unwrap();
        assert_eq!(c.queue_backend, QueueBackendKind::Redis);
        assert_eq!(c.cache_backend, CacheBackendKind::Hybrid);
    }

    #[test]
    fn a_bad_value_names_the_variable_value_and_what_is_allowed() {
        let err = config(&[("JOBYARD_CONCURRENCY", "lots")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "JOBYARD_CONCURRENCY=lots is invalid: expected an integer from 0 to 100000"
        );
        let err = config(&[("JOBYARD_QUEUE_BACKEND", "postgres")]).unwrap_err();
        assert_eq!(err.var, "JOBYARD_QUEUE_BACKEND");
    }

    #[test]
    fn instance_names_and_accepted_kinds_are_checked() {
        let c = config(&[]).unwrap();
        assert_eq!((c.instance, c.accept_kinds.len()), (None, 0), "the host name; none");
        let c = config(&[
            ("JOBYARD_INSTANCE", " worker-0 "),
            ("JOBYARD_ACCEPT_KINDS", "b, a,,a ,"),
            ("JOBYARD_CONCURRENCY", "0"),
        ])
        .unwrap();
        assert_eq!(c.instance.as_deref(), Some("worker-0"));
        assert_eq!(c.accept_kinds, ["a", "b"]);
        assert_eq!(c.concurrency, 0, "an instance that runs no jobs");
        let err = config(&[("JOBYARD_INSTANCE", "pod/1")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "JOBYARD_INSTANCE=pod/1 is invalid: expected 1 to 128 characters of A-Z a-z 0-9 _ . : @ -"
        );
        let long = "k".repeat(129);
        let err = config(&[("JOBYARD_ACCEPT_KINDS", &long)]).unwrap_err();
        assert_eq!(err.var, "JOBYARD_ACCEPT_KINDS");
    }

    #[test]
    fn a_blank_api_token_is_refused_not_read_as_none() {
        let err = config(&[("JOBYARD_API_TOKEN", "  ")]).unwrap_err();
        assert_eq!(err.var, "JOBYARD_API_TOKEN");
        assert!(!err.to_string().contains("  "), "{err}");
        assert!(config(&[]).unwrap().api_token.is_none(), "unset: no authentication");
    }

    #[test]
    fn bounds_have_defaults_and_ranges() {
        let c = config(&[]).unwrap();
        assert_eq!((c.retention_max_jobs, c.max_queued), (250_000, 1_000_000));
        assert_eq!(c.max_result_bytes, 1_048_576);
        assert_eq!(c.max_connections_per_peer, 128);
        let c =
            config(&[("JOBYARD_MAX_QUEUED", "100"), ("JOBYARD_RETENTION_MAX_JOBS", "5")]).unwrap();
        assert_eq!((c.max_queued, c.retention_max_jobs), (100, 5));
        assert_eq!(config(&[("JOBYARD_MAX_QUEUED", "0")]).unwrap_err().var, "JOBYARD_MAX_QUEUED");
    }

    #[test]
    fn the_dashboard_is_on_unless_turned_off_or_read_only() {
        assert_eq!(config(&[]).unwrap().ui, UiMode::On);
        assert_eq!(config(&[("JOBYARD_UI", "read-only")]).unwrap().ui, UiMode::ReadOnly);
        assert_eq!(config(&[("JOBYARD_UI", "off")]).unwrap().ui, UiMode::Off);
        let err = config(&[("JOBYARD_UI", "readonly")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "JOBYARD_UI=readonly is invalid: expected off, read-only or on"
        );
    }

    #[test]
    fn redis_backends_without_redis_url_are_refused() {
        let err = config(&[("JOBYARD_CACHE_BACKEND", "hybrid")]).unwrap_err();
        assert!(err.allowed.contains("REDIS_URL"));
    }

    #[test]
    fn secrets_are_never_printed() {
        let c = config(&[
            ("REDIS_URL", "redis://:hunter2@127.0.0.1:6379/0"),
            ("JOBYARD_API_TOKEN", "tok-123"),
        ])
        .unwrap();
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("tok-123"), "{shown}");
        assert!(shown.contains("redis://:***@127.0.0.1:6379/0"));
        let err = config(&[("REDIS_URL", "http://:hunter2@x")]).unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        let c = config(&[("REDIS_URL", "redis://:p@ss@host:6379")]).unwrap();
        assert_eq!(c.redis_url.unwrap().redacted(), "redis://:***@host:6379");
    }
}
