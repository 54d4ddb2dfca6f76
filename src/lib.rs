//! jobyard: an actor-based background job runtime with a Redis-backed cache.
pub mod job;
pub mod queue;
pub mod schedule;

pub use job::{Job, JobContext, JobError};
