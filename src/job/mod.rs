//! Jobs: the record and states ([`record`]), what clients submit and how it is validated
//! ([`spec`]), and the embedder's typed handlers ([`handler`]).

pub mod handler;
pub(crate) mod non_null;
pub mod record;
pub mod spec;
pub mod trace;

pub use handler::{Extensions, Job, JobContext, JobError, Registry};
pub use record::{Backoff, FailedAttempt, JobId, JobRecord, JobStatus, Json, NoOutput};
pub use spec::{JobSpec, NewJob, SpecDefaults, SpecError, SpecErrorKind};
