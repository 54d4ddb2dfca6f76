//! The actors of a runtime, one per file: [`supervisor`] starts the others; [`queue`] is the
//! gateway to the job store; [`scheduler`] wakes for due jobs, leases, retention and cron;
//! [`worker`] runs attempts; [`cache`] owns the cache.

pub mod cache;
pub mod queue;
pub mod scheduler;
pub mod supervisor;
pub mod worker;
