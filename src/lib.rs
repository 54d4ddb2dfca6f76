#![warn(missing_docs)]
//! jobyard: an actor-based background job runtime with a Redis-backed cache.
//!
//! # Layout
//! - [`job`]: the job record and states, the `JobSpec` clients send and its validation, and the
//!   typed [`Job`] trait embedders implement.
//! - [`queue`]: the [`queue::QueueBackend`] trait (every state transition, atomically) and the
//!   in-memory backend.
//! - [`schedule`]: cron schedules and their tick arithmetic.
//! - [`actors`]: the supervisor, queue, scheduler, worker pool and cache actors.
//! - [`runtime`]: the embedding API: [`Runtime::builder`], [`Client`], typed submits and waits.
//! - [`cache`]: the `Cache` trait and its memory, redis and hybrid backends (job results are
//!   cached there); [`redis`]: the Redis connection layer and every key; [`metadata`]: the
//!   file-based metadata store.
//! - [`kinds`]: the built-in kinds `noop`, `sleep`, `fail` and `http`.
//! - [`api`]: the HTTP API (actix-web).
//! - [`config`]: the typed configuration; [`startup`]: building and running the server;
//!   [`cli`]: the `jobyard` binary's subcommands; [`telemetry`]: logging.

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

pub use config::Config;
pub use job::{Backoff, Job, JobContext, JobError, JobId, JobRecord, JobSpec, JobStatus};
pub use runtime::{
    Batch, Client, Dependency, JobHandle, JobOptions, Planned, Runtime, RuntimeError,
    ScheduleBuilder, SubmitBuilder, SubmittedBatch,
};
