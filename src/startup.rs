//! Builds a whole server (runtime + HTTP API) from a [`Config`] and runs it until a signal or
//! a [`ShutdownTrigger`] stops it, gracefully: running attempts get the shutdown grace period
//! while the API still answers (`/ready` and submits say `draining`), unfinished ones go back
//! to `queued`, then the listener closes. A second signal stops at once.

use std::io;
use std::net::TcpListener;
use std::sync::Arc;

use tokio::sync::Notify;

use crate::api::{self, ApiSettings};
use crate::config::Config;
use crate::runtime::{Runtime, RuntimeBuilder, RuntimeError};

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The HTTP listener cannot be bound or set up.
    #[error("cannot listen on {addr} ({source}); set JOBYARD_ADDR to a free address (port 0 takes any free port)")]
    Bind {
        /// The address asked for (`JOBYARD_ADDR`).
        addr: String,
        /// The I/O error.
        source: io::Error,
    },
    /// The runtime cannot start (for example, the Redis queue cannot be connected).
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

/// Stops a running server as a signal would.
///
/// ```no_run
/// # async fn demo(config: jobyard::Config) -> Result<(), Box<dyn std::error::Error>> {
/// let server = jobyard::startup::Server::build(config).await?;
/// let trigger = server.shutdown_trigger(); // clones stop the same server
/// // From an admin route, a supervisor task, a test; a trigger sent early is kept:
/// trigger.trigger();
/// server.run_until_stopped().await?; // shuts down gracefully at once
/// # Ok(()) }
/// ```
#[derive(Clone, Default)]
pub struct ShutdownTrigger(Arc<Notify>);

impl ShutdownTrigger {
    /// Asks the server to shut down gracefully; a trigger sent before the server runs is kept until
    /// it does.
    pub fn trigger(&self) {
        self.0.notify_one();
    }
}

/// A built server, listening but not yet serving.
///
/// ```no_run
/// use std::time::Duration;
/// use jobyard::startup::Server;
/// use jobyard::{Config, JobSpec};
///
/// #[actix_web::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let config = Config::builder().with_env().addr("127.0.0.1:0").build()?;
///     let server = Server::build(config).await?;
///     println!("listening on port {}", server.port());
///     // The program submits through the server's runtime, and may stop it as SIGTERM would.
///     server.runtime().submit_spec(JobSpec::new("noop")).await?;
///     let stop = server.shutdown_trigger();
///     tokio::spawn(async move {
///         tokio::time::sleep(Duration::from_secs(3_600)).await;
///         stop.trigger();
///     });
///     server.run_until_stopped().await?;
///     Ok(())
/// }
/// ```
pub struct Server {
    runtime: Runtime,
    http: actix_web::dev::Server,
    port: u16,
    trigger: ShutdownTrigger,
}

impl Server {
    /// Connects to Redis when configured (a Redis that is down is not fatal: the cache runs
    /// degraded and reconnects), starts the runtime and binds the HTTP listener. Must run inside
    /// an actix `System`.
    pub async fn build(config: Config) -> Result<Server, StartupError> {
        let runtime = Runtime::builder().config(config.clone()).with_builtin_kinds();
        Self::build_with(config, runtime).await
    }

    /// Like [`Server::build`], with a runtime builder the caller prepared (extra kinds, another
    /// queue backend). The builder's configuration, cache and Redis link are set from `config`,
    /// and so is its queue backend unless it was given one.
    ///
    /// ```no_run
    /// # use jobyard::{Job, JobContext, JobError};
    /// # #[derive(serde::Serialize, serde::Deserialize)] struct Resize { image: String }
    /// # impl Job for Resize {
    /// #     const KIND: &'static str = "resize";
    /// #     type Output = String;
    /// #     async fn run(self, _: JobContext) -> Result<String, JobError> { Ok(self.image) }
    /// # }
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// use jobyard::startup::Server;
    /// use jobyard::{Config, Runtime};
    ///
    /// // The built-in kinds and one of this service's own, submitted over HTTP like any other.
    /// let runtime = Runtime::builder().with_builtin_kinds().register::<Resize>();
    /// Server::build_with(Config::from_env()?, runtime).await?.run_until_stopped().await?;
    /// # Ok(()) }
    /// ```
    pub async fn build_with(
        config: Config,
        runtime: RuntimeBuilder,
    ) -> Result<Server, StartupError> {
        Self::build_with_routes(config, runtime, |_| {}).await
    }

    /// Like [`Server::build_with`], serving `routes` (the embedder's own, registered on
    /// every HTTP worker) beside the API. The API's paths (`/health`, `/ready`, `/v1/...`)
    /// and its 404 for unknown paths stay as they are.
    ///
    /// ```no_run
    /// # use actix_web::{web, HttpResponse};
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let config = jobyard::Config::from_env()?;
    /// let runtime = jobyard::Runtime::from_config(config.clone()).with_builtin_kinds();
    /// let server = jobyard::startup::Server::build_with_routes(config, runtime, |cfg| {
    ///     cfg.route("/hello", web::get().to(|| async { HttpResponse::Ok().body("hello") }));
    /// })
    /// .await?;
    /// server.run_until_stopped().await?;
    /// # Ok(()) }
    /// ```
    pub async fn build_with_routes(
        config: Config,
        runtime: RuntimeBuilder,
        routes: impl Fn(&mut actix_web::web::ServiceConfig) + Send + Sync + 'static,
    ) -> Result<Server, StartupError> {
        // Bound first: a port in use is reported before anything connects.
        let listener = TcpListener::bind(&config.addr)
            .map_err(|source| StartupError::Bind { addr: config.addr.clone(), source })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr: config.addr.clone(), source })?
            .port();
        // Before the runtime starts, so that the metrics it registers go to this recorder.
        crate::telemetry::prometheus::install();
        if let Some(url) = &config.otlp_traces_endpoint {
            crate::telemetry::otlp::start(url.clone(), config.service_name.clone());
        }
        let runtime = runtime.config(config.clone()).connect().await?;
        let client = runtime.client().clone();
        let settings = ApiSettings::from(&config);
        // actix-web's HttpServer, plus the connection limits of `api::limits` (see `api::conn`).
        let shutdown_timeout = config.shutdown_grace.as_secs().max(1);
        let http = api::conn::serve(listener, client, settings, shutdown_timeout, Arc::new(routes))
            .map_err(|source| StartupError::Bind { addr: config.addr.clone(), source })?;
        tracing::info!(
            port,
            queue = config.queue_backend_name(),
            cache = config.cache_backend.as_str(),
            concurrency = config.concurrency,
            "jobyard listening on {}",
            config
                .addr
                .rsplit_once(':')
                .map_or(config.addr.clone(), |(host, _)| format!("{host}:{port}"))
        );
        Ok(Server { runtime, http, port, trigger: ShutdownTrigger::default() })
    }

    /// The bound port (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The runtime the server runs, for the embedding program to submit jobs to.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// A handle that stops the server as SIGTERM would.
    pub fn shutdown_trigger(&self) -> ShutdownTrigger {
        self.trigger.clone()
    }

    /// Serves until SIGTERM, SIGINT or the trigger; then shuts down gracefully.
    pub async fn run_until_stopped(self) -> io::Result<()> {
        let handle = self.http.handle();
        let serving = actix_rt::spawn(self.http);
        tokio::select! {
            signal = shutdown_signal() => tracing::info!("{signal} received; shutting down"),
            _ = self.trigger.0.notified() => tracing::info!("shutdown requested"),
        }
        // The API keeps answering while running jobs finish, so the drain can be watched:
        // `/ready` and submits answer 503 `draining`. It stops once the runtime has.
        let graceful = async {
            let handed_back = self.runtime.shutdown().await;
            handle.stop(true).await;
            handed_back
        };
        let handed_back = tokio::select! {
            handed_back = graceful => handed_back,
            // A second signal while running jobs finish: the person wants out now. The jobs
            // still running are handed back to the queue, not lost.
            signal = shutdown_signal() => {
                tracing::warn!("{signal} received again; stopping at once, running jobs handed back");
                let (_, handed_back) = tokio::join!(handle.stop(false), self.runtime.shutdown_now());
                handed_back
            }
        };
        tracing::info!(handed_back, "shutdown complete");
        match serving.await {
            Ok(result) => result,
            Err(err) => Err(io::Error::other(err)),
        }
    }
}

async fn shutdown_signal() -> &'static str {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = tokio::signal::ctrl_c() => "SIGINT",
            },
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                "SIGINT"
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        "ctrl-c"
    }
}
