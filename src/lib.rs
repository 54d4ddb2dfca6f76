#![warn(missing_docs)]
//! jobyard: an actor-based background job runtime with a Redis-backed cache.
//!
//! Define a kind of job as a type implementing [`Job`], register it on a [`Runtime`], submit
//! jobs with options, wait for their typed outputs:
//!
//! ```no_run
//! use jobyard::{Job, JobContext, JobError, JobOptions, Runtime};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct FetchStars { repo: String }
//!
//! impl Job for FetchStars {
//!     const KIND: &'static str = "github.stars";
//!     type Output = u64;
//!     async fn run(self, ctx: JobContext) -> Result<u64, JobError> {
//!         Ok(42) // call the upstream API here; `?` turns any error into a retryable failure
//!     }
//! }
//!
//! #[derive(Serialize, Deserialize)]
//! struct TotalStars;
//!
//! impl Job for TotalStars {
//!     const KIND: &'static str = "github.total_stars";
//!     type Output = u64;
//!     async fn run(self, ctx: JobContext) -> Result<u64, JobError> {
//!         Ok(ctx.dependency_results::<FetchStars>().await?.into_iter().sum())
//!     }
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // On its own thread: works from any tokio service (under actix, `.connect().await`).
//!     let runtime = Runtime::from_config(jobyard::Config::from_env()?)
//!         .register::<FetchStars>()
//!         .register::<TotalStars>()
//!         .spawn()
//!         .await?;
//!     let mut batch = runtime.batch();
//!     let repos = ["a/b", "c/d"].map(|repo| batch.add(FetchStars { repo: repo.into() }, JobOptions::new()));
//!     let total = batch.add(TotalStars, JobOptions::new().depends_on_all(repos));
//!     let total = batch.submit().await?.handle(total);
//!     println!("{} stars", total.wait().await?);
//!     runtime.shutdown().await;
//!     Ok(())
//! }
//! ```
//!
//! # Where things are
//! - The embedding API at the root: [`Runtime`] (built with [`Runtime::builder`] or
//!   [`Runtime::from_config`]), its [`Client`], typed submits ([`SubmitBuilder`],
//!   [`JobOptions`], [`Batch`], [`ScheduleBuilder`]) and [`JobHandle`]s; [`Job`],
//!   [`JobContext`] and [`JobError`] for handlers.
//! - [`job`]: the job record and states, and the [`JobSpec`] the HTTP API takes too.
//! - [`queue`]: the [`QueueBackend`](queue::QueueBackend) trait every job store implements,
//!   and the memory and Redis backends.
//! - [`cache`]: the [`Cache`] trait and its memory, Redis and hybrid backends; a handler gets
//!   the runtime's as a [`CacheHandle`] extension. [`metadata`]: a small file-based store.
//! - [`schedule`]: cron schedules; [`config`]: the configuration and its builder.
//! - [`tools`]: upstream APIs kept fresh in the cache by `tool.refresh` jobs within their rate
//!   limits; [`documents`]: small JSON documents (tools, user metadata) shared by every
//!   instance through Redis when it is configured.
//! - [`instance`]: what names an instance among those sharing a backend (its name, run id,
//!   fallbacks); the registry itself is part of [`queue`], and [`Client::instances`] lists it.
//! - [`testing`]: run one handler in a test, or a whole runtime on a clock the test moves.
//! - With the `server` feature: [`api`] (mount the HTTP API in an actix-web app) and
//!   [`startup`] (the whole server, with room for routes of one's own).
//!
//! # Cargo features
//! - `server` (default): the HTTP API, the `jobyard` binary and its client subcommands.
//! - `redis` (default): the Redis job queue and the Redis and hybrid caches.
//! - `http-kind` (default): the built-in `http` kind, which calls URLs.
//!
//! A service that embeds the runtime with the memory backends needs none of them:
//! `jobyard = { version = "0.1", default-features = false }` builds about 80 crates instead of
//! about 210.

#[doc(hidden)]
pub mod actors;
#[cfg(feature = "server")]
pub mod api;
pub mod cache;
#[cfg(feature = "server")]
#[doc(hidden)]
pub mod cli;
mod clock;
pub mod config;
pub mod documents;
pub mod events;
pub mod instance;
pub mod job;
pub mod kinds;
pub mod metadata;
pub mod queue;
#[cfg(feature = "redis")]
pub mod redis;
pub mod runtime;
pub mod schedule;
#[cfg(feature = "server")]
pub mod startup;
#[doc(hidden)]
pub mod telemetry;
pub mod testing;
pub mod tools;
mod wording;

pub use cache::{Cache, CacheExt, CacheHandle};
pub use config::{Config, ConfigBuilder};
pub use job::{
    Backoff, Extensions, Job, JobContext, JobError, JobId, JobRecord, JobSpec, JobStatus,
};
pub use queue::{CancelOutcome, ListQuery, Page};
pub use runtime::{
    Batch, Client, Dependency, JobHandle, JobOptions, Planned, RetryFilter, Runtime,
    RuntimeBuilder, RuntimeError, ScheduleBuilder, SubmitBuilder, SubmittedBatch,
};
pub use schedule::{Schedule, ScheduleSpec};
/// The token a handler observes to learn its job was cancelled (tokio-util's).
pub use tokio_util::sync::CancellationToken;
